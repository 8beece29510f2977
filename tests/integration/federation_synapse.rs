//! Interop with the reference homeserver, Synapse, on loopback over TLS.
//!
//! Opt-in: these tests run when `ROOST_TEST_SYNAPSE_PYTHON` names a Python interpreter that has
//! Synapse installed (`python3 -m venv venv && venv/bin/pip install matrix-synapse`, then
//! `ROOST_TEST_SYNAPSE_PYTHON=$PWD/venv/bin/python`); without it they say so and pass. Each test
//! starts its own Synapse on a fresh loopback address with a certificate from the test's
//! throwaway CA, beside a Roost server trusting the same CA (docs/federation.md, "Interop with
//! Synapse").
//!
//! Covered: rooms of every stable version (1–12) created on Synapse and joined from Roost by
//! invite and by alias, Roost rooms (10–12) joined from Synapse, messages both ways, history
//! backfilled by a late joiner, typing, receipts, profiles, media both ways, room directories
//! and a space read across, leaves, rejections, knocks, restricted joins, redactions, power
//! levels, a kick, and end-to-end encryption between matrix-sdk clients on the two servers.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use matrix_sdk::ruma::OwnedUserId;
use serde_json::{Value, json};

use crate::chat_common::enc;
use crate::child::Api;
use crate::common::User;
use crate::federation_common::{FederatedServer, MAX_SYNCS, TestCa, fresh_loopback_ip, sync_api};
use crate::federation_e2ee::{encrypted_room_across, receive, sdk_sync, send};
use crate::sdk::sdk_user_at;

/// The variable naming the Python interpreter with Synapse.
const PYTHON_VAR: &str = "ROOST_TEST_SYNAPSE_PYTHON";

/// The Python interpreter to run Synapse with, or `None` (the test is skipped) when unset.
fn synapse_python() -> Option<String> {
    let python = std::env::var(PYTHON_VAR).ok().filter(|p| !p.is_empty());
    if python.is_none() {
        eprintln!("skipped: set {PYTHON_VAR} to a Python with matrix-synapse installed");
    }
    python
}

/// A Synapse process serving federation (TLS) on `<ip>:8448` and the client API (plain HTTP)
/// on `<ip>:8008`, with its files in a temporary directory. Dropping it kills the process.
struct Synapse {
    ip: Ipv4Addr,
    api: Api,
    child: Child,
    dir: tempfile::TempDir,
}

impl Synapse {
    async fn start(python: &str, ca: &TestCa) -> Self {
        let ip = fresh_loopback_ip();
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let (cert, key) = ca.issue(ip.into());
        std::fs::write(d.join("cert.pem"), cert).expect("certificate");
        std::fs::write(d.join("key.pem"), key).expect("key");
        std::fs::write(d.join("ca.pem"), ca.pem()).expect("CA");
        std::fs::write(d.join("log.yaml"), log_config(d)).expect("log config");
        std::fs::write(d.join("homeserver.yaml"), homeserver_config(ip, d)).expect("config");
        let config = d.join("homeserver.yaml");
        // Generates the signing key, then exits.
        let status = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--generate-keys", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run Synapse to generate its keys");
        assert!(status.success(), "Synapse could not generate its keys");
        let out = std::fs::File::create(d.join("stdout.log")).expect("stdout file");
        let child = Command::new(python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config)
            .stdout(out.try_clone().expect("stdout file"))
            .stderr(out)
            .spawn()
            .expect("start Synapse");
        let mut synapse = Self {
            ip,
            api: Api::new(&format!("http://{ip}:8008")),
            child,
            dir,
        };
        synapse.wait_until_up().await;
        synapse
    }

    /// Waits (at most a minute: the first start creates its database) for the client API.
    async fn wait_until_up(&mut self) {
        for _ in 0..240 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Synapse exited at start ({status})");
            }
            let up = self
                .api
                .try_call(reqwest::Method::GET, "/_matrix/client/versions", None, None)
                .await;
            if matches!(up, Ok((200, _))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("Synapse did not start within a minute");
    }

    fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.ip)
    }

    async fn user(&self, name: &str) -> User {
        let (token, id) = self.api.register(name).await;
        User { token, id }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- Synapse log (last lines, newest first) ---");
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Synapse's configuration: TLS federation listener with the test certificate, trusting the
/// test CA, loopback destinations allowed, open registration, rate limits out of the way.
fn homeserver_config(ip: Ipv4Addr, dir: &Path) -> String {
    let d = dir.display();
    let unlimited = "{per_second: 1000, burst_count: 1000}";
    format!(
        r#"server_name: "{ip}"
pid_file: {d}/homeserver.pid
report_stats: false
listeners:
  - port: 8448
    bind_addresses: ['{ip}']
    type: http
    tls: true
    resources: [{{names: [client, federation, media]}}]
  - port: 8008
    bind_addresses: ['{ip}']
    type: http
    tls: false
    resources: [{{names: [client, media]}}]
tls_certificate_path: {d}/cert.pem
tls_private_key_path: {d}/key.pem
federation_verify_certificates: true
federation_custom_ca_list: [{d}/ca.pem]
ip_range_blacklist: []
ip_range_whitelist: ['127.0.0.0/8']
database:
  name: sqlite3
  args:
    database: {d}/homeserver.db
log_config: {d}/log.yaml
media_store_path: {d}/media
signing_key_path: {d}/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: "interop-registration"
macaroon_secret_key: "interop-macaroon"
form_secret: "interop-form"
rc_message: {unlimited}
rc_room_creation: {unlimited}
rc_registration: {unlimited}
rc_joins: {{local: {unlimited}, remote: {unlimited}}}
rc_login: {{address: {unlimited}, account: {unlimited}, failed_attempts: {unlimited}}}
rc_invites: {{per_room: {unlimited}, per_user: {unlimited}, per_issuer: {unlimited}}}
allow_public_rooms_over_federation: true
room_list_publication_rules: [{{action: allow}}]
"#
    )
}

fn log_config(dir: &Path) -> String {
    format!(
        r#"version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: {}/homeserver.log
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#,
        dir.display()
    )
}

// --- client API helpers working against either server --------------------------------------

async fn create_room(api: &Api, u: &User, body: Value) -> String {
    let (status, resp) = api
        .post("/_matrix/client/v3/createRoom", Some(&u.token), body)
        .await;
    assert_eq!(status, 200, "createRoom on {}: {resp}", api.base);
    resp["room_id"].as_str().expect("room_id").to_owned()
}

/// Joins a room by ID or alias (with a `?via=` query if given); answers the room ID.
async fn join(api: &Api, u: &User, room: &str) -> String {
    let (target, query) = room.split_once('?').unwrap_or((room, ""));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    let (status, resp) = api
        .post(
            &format!("/_matrix/client/v3/join/{}{query}", enc(target)),
            Some(&u.token),
            json!({}),
        )
        .await;
    assert_eq!(
        status, 200,
        "{} joining {room} on {}: {resp}",
        u.id, api.base
    );
    resp["room_id"].as_str().expect("room_id").to_owned()
}

/// Leaves a room, or rejects an invitation to it.
async fn leave(api: &Api, u: &User, room: &str) {
    let (status, body) = api
        .post(
            &format!("/_matrix/client/v3/rooms/{}/leave", enc(room)),
            Some(&u.token),
            json!({}),
        )
        .await;
    assert_eq!(
        status, 200,
        "{} leaving {room} on {}: {body}",
        u.id, api.base
    );
}

async fn send_text(api: &Api, u: &User, room: &str, text: &str) -> String {
    let txn = format!("t{}", rand_suffix());
    let (status, resp) = api
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
                enc(room)
            ),
            Some(&u.token),
            json!({ "msgtype": "m.text", "body": text }),
        )
        .await;
    assert_eq!(status, 200, "send on {}: {resp}", api.base);
    resp["event_id"].as_str().expect("event_id").to_owned()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn joined<'a>(sync: &'a Value, room: &str) -> &'a Value {
    &sync["rooms"]["join"][room]
}

fn timeline_has(sync: &Value, room: &str, text: &str) -> bool {
    joined(sync, room)["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == text))
}

/// Waits until `u` sees `text` in `room`'s timeline.
async fn wait_for_text(api: &Api, u: &User, room: &str, text: &str) {
    sync_api(api, u, None, |sync| timeline_has(sync, room, text)).await;
}

/// Waits until `u` is invited to `room`.
async fn wait_for_invite(api: &Api, u: &User, room: &str) {
    sync_api(api, u, None, |sync| {
        !sync["rooms"]["invite"][room].is_null()
    })
    .await;
}

/// A message each way, each seen by the other side.
async fn talk(roost: (&Api, &User), synapse: (&Api, &User), room: &str, tag: &str) {
    let to_synapse = format!("{tag}: from Roost");
    send_text(roost.0, roost.1, room, &to_synapse).await;
    wait_for_text(synapse.0, synapse.1, room, &to_synapse).await;
    let to_roost = format!("{tag}: from Synapse");
    send_text(synapse.0, synapse.1, room, &to_roost).await;
    wait_for_text(roost.0, roost.1, room, &to_roost).await;
}

async fn start_both(python: &str) -> (TestCa, FederatedServer, Synapse) {
    let ca = TestCa::new();
    let roost = FederatedServer::start(&ca).await;
    let synapse = Synapse::start(python, &ca).await;
    (ca, roost, synapse)
}

// --- the tests ------------------------------------------------------------------------------

#[tokio::test]
async fn rooms_of_every_version_across_roost_and_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let (_ca, roost, synapse) = start_both(&python).await;
    let r = roost.api();
    let s = &synapse.api;
    let alice = crate::common::user(&roost, "alice").await;
    let bob = synapse.user("bob").await;

    // Rooms created on Roost, joined from Synapse by invite.
    for version in ["10", "11", "12"] {
        let room = create_room(
            &r,
            &alice,
            json!({ "preset": "private_chat", "room_version": version, "invite": [bob.id] }),
        )
        .await;
        wait_for_invite(s, &bob, &room).await;
        join(s, &bob, &room).await;
        talk((&r, &alice), (s, &bob), &room, &format!("Roost v{version}")).await;
    }

    // Rooms created on Synapse: odd versions joined from Roost by invite, even ones by alias.
    for version in 1..=12 {
        let alias = format!("v{version}");
        let invite: Vec<&str> = if version % 2 == 1 {
            vec![&alice.id]
        } else {
            vec![]
        };
        let room = create_room(
            s,
            &bob,
            json!({
                "preset": "public_chat",
                "room_version": version.to_string(),
                "room_alias_name": alias,
                "invite": invite,
            }),
        )
        .await;
        let joined = if version % 2 == 1 {
            wait_for_invite(&r, &alice, &room).await;
            join(&r, &alice, &room).await
        } else {
            join(&r, &alice, &format!("#{alias}:{}", synapse.ip)).await
        };
        assert_eq!(joined, room);
        talk(
            (&r, &alice),
            (s, &bob),
            &room,
            &format!("Synapse v{version}"),
        )
        .await;
    }
}

#[tokio::test]
async fn history_typing_receipts_profiles_media_and_kicks_with_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let (_ca, roost, synapse) = start_both(&python).await;
    let r = roost.api();
    let s = &synapse.api;
    let alice = crate::common::user(&roost, "alice").await;
    let bob = synapse.user("bob").await;

    // History written on Synapse before anyone from Roost is in the room: Alice's /messages
    // backfills it from Synapse.
    let room = create_room(
        s,
        &bob,
        json!({ "preset": "public_chat", "room_alias_name": "lobby", "visibility": "public" }),
    )
    .await;
    for i in 0..30 {
        send_text(s, &bob, &room, &format!("early {i}")).await;
    }
    join(&r, &alice, &format!("#lobby:{}", synapse.ip)).await;
    let mut seen = Vec::new();
    let mut from = String::new();
    for _ in 0..20 {
        let (status, page) = r
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=10{from}",
                    enc(&room)
                ),
                Some(&alice.token),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        for event in page["chunk"].as_array().expect("chunk") {
            if let Some(body) = event["content"]["body"].as_str() {
                seen.push(body.to_owned());
            }
        }
        match page["end"].as_str() {
            Some(end) => from = format!("&from={end}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..30).rev().map(|i| format!("early {i}")).collect();
    assert_eq!(
        seen, expected,
        "Alice reads the whole history, newest first"
    );
    talk((&r, &alice), (s, &bob), &room, "lobby").await;

    // Typing, both ways.
    let typing = |api: &Api, u: &User, on: bool| {
        let api = api.clone();
        let (token, id) = (u.token.clone(), u.id.clone());
        let room = room.clone();
        async move {
            let (status, body) = api
                .put(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/typing/{}",
                        enc(&room),
                        enc(&id)
                    ),
                    Some(&token),
                    json!({ "typing": on, "timeout": 30000 }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let typing_users = |sync: &Value, room: &str| -> Vec<String> {
        joined(sync, room)["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.typing")
            .flat_map(|e| {
                e["content"]["user_ids"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect()
    };
    typing(s, &bob, true).await;
    sync_api(&r, &alice, None, |sync| {
        typing_users(sync, &room).contains(&bob.id)
    })
    .await;
    typing(&r, &alice, true).await;
    sync_api(s, &bob, None, |sync| {
        typing_users(sync, &room).contains(&alice.id)
    })
    .await;

    // A read receipt from Alice reaches Bob.
    let last = send_text(s, &bob, &room, "read me").await;
    wait_for_text(&r, &alice, &room, "read me").await;
    let (status, body) = r
        .post(
            &format!(
                "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
                enc(&room),
                enc(&last)
            ),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_api(s, &bob, None, |sync| {
        joined(sync, &room)["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| {
                events.iter().any(|e| {
                    e["type"] == "m.receipt" && !e["content"][&last]["m.read"][&alice.id].is_null()
                })
            })
    })
    .await;

    // Profiles, looked up across.
    let set_name = |api: &Api, u: &User, name: &str| {
        let (api, token, id, name) = (api.clone(), u.token.clone(), u.id.clone(), name.to_owned());
        async move {
            let (status, body) = api
                .put(
                    &format!("/_matrix/client/v3/profile/{}/displayname", enc(&id)),
                    Some(&token),
                    json!({ "displayname": name }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    };
    set_name(s, &bob, "Bob on Synapse").await;
    set_name(&r, &alice, "Alice on Roost").await;
    let (status, profile) = r
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&bob.id)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        (status, &profile["displayname"]),
        (200, &json!("Bob on Synapse"))
    );
    let (status, profile) = s
        .get(
            &format!("/_matrix/client/v3/profile/{}", enc(&alice.id)),
            Some(&bob.token),
        )
        .await;
    assert_eq!(
        (status, &profile["displayname"]),
        (200, &json!("Alice on Roost"))
    );

    // Media uploaded on each server and downloaded through the other.
    let upload = |api: &Api, u: &User, bytes: &'static [u8]| {
        let (api, token) = (api.clone(), u.token.clone());
        async move {
            let resp = api
                .http
                .post(format!(
                    "{}/_matrix/media/v3/upload?filename=f.bin",
                    api.base
                ))
                .bearer_auth(token)
                .header("content-type", "application/octet-stream")
                .body(bytes)
                .send()
                .await
                .expect("upload");
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.expect("upload answer");
            body["content_uri"]
                .as_str()
                .expect("content_uri")
                .to_owned()
        }
    };
    let download = |api: &Api, u: &User, uri: String| {
        let (api, token) = (api.clone(), u.token.clone());
        async move {
            let path = uri.strip_prefix("mxc://").expect("an mxc URI");
            let resp = api
                .http
                .get(format!(
                    "{}/_matrix/client/v1/media/download/{path}",
                    api.base
                ))
                .bearer_auth(token)
                .send()
                .await
                .expect("download");
            assert_eq!(resp.status(), 200, "download {uri} from {}", api.base);
            resp.bytes().await.expect("media bytes").to_vec()
        }
    };
    let from_synapse = upload(s, &bob, b"bytes stored on Synapse").await;
    assert_eq!(
        download(&r, &alice, from_synapse).await,
        b"bytes stored on Synapse"
    );
    let from_roost = upload(&r, &alice, b"bytes stored on Roost").await;
    assert_eq!(
        download(s, &bob, from_roost).await,
        b"bytes stored on Roost"
    );

    // Each server's room directory, read through the other.
    let listed = |api: &Api, u: &User, server: String, room: String| {
        let (api, token) = (api.clone(), u.token.clone());
        async move {
            let (status, body) = api
                .get(
                    &format!("/_matrix/client/v3/publicRooms?server={server}"),
                    Some(&token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["chunk"]
                .as_array()
                .is_some_and(|rooms| rooms.iter().any(|r| r["room_id"] == room.as_str()))
        }
    };
    assert!(listed(&r, &alice, synapse.ip.to_string(), room.clone()).await);

    // A space on Synapse with a child room Alice is not in: her server asks Synapse for it.
    let garden = create_room(
        s,
        &bob,
        json!({ "preset": "public_chat", "name": "Garden" }),
    )
    .await;
    let space = create_room(
        s,
        &bob,
        json!({
            "preset": "public_chat",
            "name": "Estate",
            "creation_content": { "type": "m.space" },
            "initial_state": [{
                "type": "m.space.child",
                "state_key": garden,
                "content": { "via": [synapse.ip.to_string()] },
            }],
        }),
    )
    .await;
    join(&r, &alice, &format!("{space}?via={}", synapse.ip)).await;
    let (status, body) = r
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", enc(&space)),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["Estate", "Garden"], "{body}");

    // A Roost room joined from Synapse by alias; Alice kicks Bob out of it.
    let roost_room = create_room(
        &r,
        &alice,
        json!({ "preset": "public_chat", "room_alias_name": "square", "visibility": "public" }),
    )
    .await;
    let joined_room = join(s, &bob, &format!("#square:{}", roost.server_name())).await;
    assert_eq!(joined_room, roost_room);
    talk((&r, &alice), (s, &bob), &roost_room, "square").await;
    assert!(listed(s, &bob, roost.server_name().to_string(), roost_room.clone()).await);
    let (status, body) = r
        .post(
            &format!("/_matrix/client/v3/rooms/{}/kick", enc(&roost_room)),
            Some(&alice.token),
            json!({ "user_id": bob.id, "reason": "testing" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_api(s, &bob, None, |sync| {
        !sync["rooms"]["leave"][&roost_room].is_null()
    })
    .await;
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/after-kick",
                enc(&roost_room)
            ),
            Some(&bob.token),
            json!({ "msgtype": "m.text", "body": "still here?" }),
        )
        .await;
    assert_eq!(status, 403, "Synapse knows Bob is out: {body}");
}

/// A state event of `room` as `u` sees it on `api` (`Null` when there is none).
async fn state_of(api: &Api, u: &User, room: &str, kind: &str, key: &str) -> Value {
    let (status, body) = api
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/{kind}/{}",
                enc(room),
                enc(key)
            ),
            Some(&u.token),
        )
        .await;
    if status == 200 { body } else { Value::Null }
}

/// Waits until `check` holds for a state event as `u` sees it, long-polling `/sync` between
/// looks (so it wakes when something arrives), at most [`MAX_SYNCS`] times.
async fn wait_for_state(
    api: &Api,
    u: &User,
    room: &str,
    (kind, key): (&str, &str),
    check: impl Fn(&Value) -> bool,
) {
    let mut since = None;
    for _ in 0..MAX_SYNCS {
        if check(&state_of(api, u, room, kind, key).await) {
            return;
        }
        since = next_sync(api, u, since).await;
    }
    panic!(
        "{kind}/{key} in {room} never changed as expected on {}",
        api.base
    );
}

/// One sync (a long poll when `since` is given); answers its `next_batch`.
async fn next_sync(api: &Api, u: &User, since: Option<String>) -> Option<String> {
    let body = sync_api(api, u, since, |_| true).await;
    body["next_batch"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn leaves_rejections_knocks_restricted_joins_redactions_and_power_with_synapse() {
    let Some(python) = synapse_python() else {
        return;
    };
    let (_ca, roost, synapse) = start_both(&python).await;
    let r = roost.api();
    let s = &synapse.api;
    let alice = crate::common::user(&roost, "alice").await;
    let bob = synapse.user("bob").await;
    let via = format!("?via={}", synapse.ip);
    let is = |membership: &'static str| move |event: &Value| event["membership"] == membership;

    // Alice leaves a Synapse room, and rejects an invitation to another.
    let open = create_room(s, &bob, json!({ "preset": "public_chat" })).await;
    join(&r, &alice, &format!("{open}{via}")).await;
    leave(&r, &alice, &open).await;
    wait_for_state(s, &bob, &open, ("m.room.member", &alice.id), is("leave")).await;
    let private = create_room(
        s,
        &bob,
        json!({ "preset": "private_chat", "invite": [alice.id] }),
    )
    .await;
    wait_for_invite(&r, &alice, &private).await;
    leave(&r, &alice, &private).await;
    wait_for_state(s, &bob, &private, ("m.room.member", &alice.id), is("leave")).await;

    // A knock from Roost, answered by an invite from Synapse.
    let knockable = create_room(
        s,
        &bob,
        json!({
            "preset": "private_chat",
            "initial_state": [{ "type": "m.room.join_rules", "state_key": "", "content": { "join_rule": "knock" } }],
        }),
    )
    .await;
    let (status, body) = r
        .post(
            &format!("/_matrix/client/v3/knock/{}{via}", enc(&knockable)),
            Some(&alice.token),
            json!({ "reason": "let me in" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_state(
        s,
        &bob,
        &knockable,
        ("m.room.member", &alice.id),
        is("knock"),
    )
    .await;
    let (status, body) = s
        .post(
            &format!("/_matrix/client/v3/rooms/{}/invite", enc(&knockable)),
            Some(&bob.token),
            json!({ "user_id": alice.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_invite(&r, &alice, &knockable).await;
    join(&r, &alice, &knockable).await;

    // A restricted room: refused until Alice is in the room its rule names, then joined with
    // Synapse authorising the join.
    let club = create_room(s, &bob, json!({ "preset": "public_chat" })).await;
    let annex = create_room(
        s,
        &bob,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.join_rules",
                "state_key": "",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": club }] },
            }],
        }),
    )
    .await;
    let (status, body) = r
        .post(
            &format!("/_matrix/client/v3/join/{}{via}", enc(&annex)),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    join(&r, &alice, &format!("{club}{via}")).await;
    join(&r, &alice, &format!("{annex}{via}")).await;

    // Redactions both ways.
    let from_bob = send_text(s, &bob, &annex, "secret from Synapse").await;
    let from_alice = send_text(&r, &alice, &annex, "secret from Roost").await;
    wait_for_text(&r, &alice, &annex, "secret from Synapse").await;
    wait_for_text(s, &bob, &annex, "secret from Roost").await;
    for (api, u, event) in [(s, &bob, &from_bob), (&r, &alice, &from_alice)] {
        let (status, body) = api
            .put(
                &format!(
                    "/_matrix/client/v3/rooms/{}/redact/{}/r{}",
                    enc(&annex),
                    enc(event),
                    rand_suffix()
                ),
                Some(&u.token),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (api, u, event) in [(&r, &alice, &from_bob), (s, &bob, &from_alice)] {
        let mut redacted = false;
        let mut since = None;
        for _ in 0..MAX_SYNCS {
            let (status, body) = api
                .get(
                    &format!(
                        "/_matrix/client/v3/rooms/{}/event/{}",
                        enc(&annex),
                        enc(event)
                    ),
                    Some(&u.token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            if body["content"] == json!({}) {
                redacted = true;
                break;
            }
            since = next_sync(api, u, since).await;
        }
        assert!(redacted, "{event} is never shown redacted on {}", api.base);
    }

    // Power across: Alice raises Bob in her room, and his topic from Synapse reaches Roost.
    let hall = create_room(&r, &alice, json!({ "preset": "public_chat" })).await;
    join(s, &bob, &format!("{hall}?via={}", roost.server_name())).await;
    let mut levels = state_of(&r, &alice, &hall, "m.room.power_levels", "").await;
    levels["users"][&bob.id] = json!(100);
    let (status, body) = r
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.power_levels/",
                enc(&hall)
            ),
            Some(&alice.token),
            levels,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_state(s, &bob, &hall, ("m.room.power_levels", ""), |l| {
        l["users"][&bob.id] == 100
    })
    .await;
    let (status, body) = s
        .put(
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.topic/",
                enc(&hall)
            ),
            Some(&bob.token),
            json!({ "topic": "set on Synapse" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_for_state(&r, &alice, &hall, ("m.room.topic", ""), |t| {
        t["topic"] == "set on Synapse"
    })
    .await;
}

#[tokio::test]
async fn encrypted_chat_between_roost_and_synapse_with_matrix_sdk() {
    let Some(python) = synapse_python() else {
        return;
    };
    let (_ca, roost, synapse) = start_both(&python).await;
    let alice = sdk_user_at(&roost.base, "alice").await;
    let bob = sdk_user_at(&synapse.api.base, "bob").await;
    sdk_sync(&alice).await;
    sdk_sync(&bob).await;
    let bob_id = OwnedUserId::try_from(synapse.user_id("bob")).expect("user ID");
    let alice_id = OwnedUserId::try_from(roost.user_id("alice")).expect("user ID");

    // Alice (Roost) opens the encrypted room; then Bob (Synapse) opens one.
    let room = encrypted_room_across(&alice, &bob, &bob_id).await;
    send(&alice, &room, "hello from Roost").await;
    receive(&bob, &room, "hello from Roost").await;
    send(&bob, &room, "hello from Synapse").await;
    receive(&alice, &room, "hello from Synapse").await;

    let other = encrypted_room_across(&bob, &alice, &alice_id).await;
    send(&bob, &other, "Synapse's room").await;
    receive(&alice, &other, "Synapse's room").await;
    send(&alice, &other, "answered from Roost").await;
    receive(&bob, &other, "answered from Roost").await;
}
