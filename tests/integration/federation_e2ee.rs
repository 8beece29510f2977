//! End-to-end encryption between users of two servers.
//!
//! matrix-sdk clients with their crypto machinery, one on each server, decrypt each other's
//! messages in an encrypted room (Olm sessions set up through remote key claims, room keys
//! carried by to-device messages over federation), and a new device of one is seen by the
//! other (device-list updates). Over raw HTTP: remote device lists cached and kept current by
//! updates (display name, new and deleted devices), claims, to-device messages both ways and
//! once, unreachable servers under `failures`; the served endpoints refusing what they must; and
//! EDUs that speak for another server's users ignored.

use std::time::Duration;

use axum::http::Method;
use base64::Engine;
use matrix_sdk::Client;
use matrix_sdk::config::SyncSettings;
use matrix_sdk::deserialized_responses::TimelineEventKind;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::events::InitialStateEvent;
use matrix_sdk::ruma::events::room::encryption::RoomEncryptionEventContent;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use ruma::signatures::Ed25519KeyPair;
use ruma::{CanonicalJsonObject, UserId};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, User, create_room, errcode, join, user};
use crate::e2ee::login as sdk_login;
use crate::federation_common::{FederatedPair, FederatedServer, MAX_SYNCS, sync_from};
use crate::federation_forge::{Origin, services, signed_request, unpublished_key};
use crate::keys::{device_keys, device_of};
use crate::sdk::sdk_user;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

// --- matrix-sdk clients -------------------------------------------------------------------

/// One sync that waits up to a second for news.
pub(crate) async fn sdk_sync(client: &Client) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(SyncSettings::default().timeout(Duration::from_secs(1)))
        .await
        .unwrap()
}

/// Syncs until `body` arrives decrypted in `room`; panics naming what arrived instead.
pub(crate) async fn receive(client: &Client, room: &RoomId, body: &str) {
    let mut seen = Vec::new();
    for _ in 0..MAX_SYNCS {
        let response = sdk_sync(client).await;
        let Some(update) = response.rooms.joined.get(room) else {
            continue;
        };
        for event in &update.timeline.events {
            match &event.kind {
                TimelineEventKind::Decrypted(_) => {
                    let value: Value = event.raw().deserialize_as().unwrap();
                    if value["content"]["body"] == body {
                        return;
                    }
                    seen.push(format!("decrypted {}", value["content"]["body"]));
                }
                TimelineEventKind::UnableToDecrypt { utd_info, .. } => {
                    seen.push(format!("undecryptable: {:?}", utd_info.reason));
                }
                TimelineEventKind::PlainText { .. } => {}
            }
        }
    }
    panic!("{body:?} never arrived decrypted; saw {seen:?}");
}

pub(crate) async fn send(client: &Client, room: &RoomId, body: &str) {
    client
        .get_room(room)
        .expect("room known")
        .send(RoomMessageEventContent::text_plain(body))
        .await
        .unwrap();
}

/// `creator` makes an encrypted room and invites `invitee` (of the other server), who joins
/// over federation; both then see each other joined.
pub(crate) async fn encrypted_room_across(
    creator: &Client,
    invitee: &Client,
    invitee_id: &OwnedUserId,
) -> OwnedRoomId {
    let mut request = create_room::v3::Request::new();
    request.invite = vec![invitee_id.clone()];
    request.is_direct = true;
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    request.initial_state = vec![
        InitialStateEvent::with_empty_state_key(
            RoomEncryptionEventContent::with_recommended_defaults(),
        )
        .to_raw_any(),
    ];
    let room_id = creator.send(request).await.unwrap().room_id;
    let mut invited = false;
    for _ in 0..MAX_SYNCS {
        sdk_sync(invitee).await;
        if invitee.get_room(&room_id).is_some() {
            invited = true;
            break;
        }
    }
    assert!(invited, "the invite never reached the other server");
    invitee.join_room_by_id(&room_id).await.unwrap();
    for client in [creator, invitee] {
        let mut both = false;
        for _ in 0..MAX_SYNCS {
            sdk_sync(client).await;
            // From the member events the client holds: not every server sends a room summary
            // (the reference homeserver leaves `m.joined_member_count` out of this sync).
            let members = match client.get_room(&room_id) {
                Some(room) => room
                    .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
                    .await
                    .unwrap()
                    .len(),
                None => 0,
            };
            if members == 2 {
                both = true;
                break;
            }
        }
        assert!(both, "both members are never seen joined");
    }
    room_id
}

fn cached_devices(server: &FederatedServer, user: &str) -> Vec<String> {
    let user = UserId::parse(user).unwrap();
    services(server)
        .cached_device_list(&user)
        .unwrap()
        .map(|list| list.devices.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn encrypted_chat_across_servers_with_matrix_sdk() {
    let pair = FederatedPair::start().await;
    let alice = sdk_user(&pair.a, "alice").await;
    let bob = sdk_user(&pair.b, "bob").await;
    sdk_sync(&alice).await;
    sdk_sync(&bob).await;
    let bob_id = OwnedUserId::try_from(pair.b.user_id("bob")).unwrap();

    let room = encrypted_room_across(&alice, &bob, &bob_id).await;
    // Alice's client queries Bob's keys through her server, claims a one-time key of his
    // device from his server and sends him the room key as an Olm-encrypted to-device message.
    send(&alice, &room, "hello bob").await;
    receive(&bob, &room, "hello bob").await;
    send(&bob, &room, "hello alice").await;
    receive(&alice, &room, "hello alice").await;
    assert_eq!(
        cached_devices(&pair.a, bob_id.as_str()).len(),
        1,
        "Alice's server caches Bob's device list"
    );

    // Bob's new device: his server sends a device-list update, Alice's server takes it in (it
    // follows an update it never had, so it fetches Bob's list again) and tells her client.
    let laptop = sdk_login(&pair.b, "bob", "laptop").await;
    sdk_sync(&laptop).await;
    let laptop_id = laptop.device_id().expect("logged in").to_string();
    let mut known = false;
    for _ in 0..MAX_SYNCS {
        sdk_sync(&alice).await;
        if cached_devices(&pair.a, bob_id.as_str()).contains(&laptop_id) {
            known = true;
            break;
        }
    }
    assert!(known, "Alice's server never heard of Bob's new device");
    sdk_sync(&alice).await;
    send(&alice, &room, "to both of your devices").await;
    receive(&laptop, &room, "to both of your devices").await;
    receive(&bob, &room, "to both of your devices").await;
    send(&laptop, &room, "from the laptop").await;
    receive(&alice, &room, "from the laptop").await;
}

// --- raw HTTP -----------------------------------------------------------------------------

async fn next_batch(server: &TestServer, u: &User) -> String {
    let body = sync_from(server, u, None, |_| true).await;
    body["next_batch"].as_str().unwrap().to_owned()
}

/// Waits until `u`'s sync lists `whose` under `device_lists.changed` after `since`.
async fn until_changed(server: &TestServer, u: &User, since: String, whose: &str) {
    sync_from(server, u, Some(since), |sync| {
        sync["device_lists"]["changed"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == whose))
    })
    .await;
}

async fn upload_keys(server: &TestServer, u: &User, device: &str, otk_prefix: &str) {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/upload",
            Some(&u.token),
            json!({
                "device_keys": device_keys(&u.id, device),
                "one_time_keys": {
                    format!("signed_curve25519:{otk_prefix}0"): { "key": format!("{otk_prefix}-0") },
                    format!("signed_curve25519:{otk_prefix}1"): { "key": format!("{otk_prefix}-1") },
                },
                "fallback_keys": {
                    format!("signed_curve25519:{otk_prefix}f"): { "key": format!("{otk_prefix}-f"), "fallback": true },
                },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn query(server: &TestServer, viewer: &User, of: &str, timeout: Option<u64>) -> Value {
    let mut body = json!({ "device_keys": { of: [] } });
    if let Some(timeout) = timeout {
        body["timeout"] = json!(timeout);
    }
    let (status, answer) = server
        .post("/_matrix/client/v3/keys/query", Some(&viewer.token), body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn claim(server: &TestServer, viewer: &User, of: &str, device: &str) -> Value {
    let (status, answer) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            Some(&viewer.token),
            json!({ "one_time_keys": { of: { device: "signed_curve25519" } }, "timeout": 5000 }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Alice (of A) makes a room and invites Bob (of B), who joins over federation.
async fn shared_room(pair: &FederatedPair, alice: &User, bob: &User) -> String {
    let room = create_room(&pair.a, alice, json!({ "invite": [bob.id] })).await;
    sync_from(&pair.b, bob, None, |sync| {
        sync["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    let (status, body) = join(&pair.b, bob, &room).await;
    assert_eq!(status, 200, "{body}");
    room
}

/// The to-device events `u` receives from `since` until one satisfies `last`.
async fn to_device_until(
    server: &TestServer,
    u: &User,
    since: String,
    mut last: impl FnMut(&Value) -> bool,
) -> Vec<Value> {
    let mut events = Vec::new();
    sync_from(server, u, Some(since), |sync| {
        let batch = sync["to_device"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let done = batch.iter().any(&mut last);
        events.extend(batch);
        done
    })
    .await;
    events
}

#[tokio::test]
async fn remote_keys_are_cached_claimed_and_kept_current() {
    let mut pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let bob_device = device_of(&pair.b, &bob).await;
    upload_keys(&pair.b, &bob, &bob_device, "b").await;
    shared_room(&pair, &alice, &bob).await;

    // The first query goes to Bob's server; the list is then cached.
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert_eq!(answer["failures"], json!({}), "{answer}");
    let keys = &answer["device_keys"][&bob.id][&bob_device];
    assert_eq!(keys["device_id"], bob_device.as_str(), "{answer}");
    assert!(keys["signatures"][&bob.id].is_object(), "{answer}");
    assert_eq!(cached_devices(&pair.a, &bob.id), [bob_device.as_str()]);

    // A new display name reaches Alice's server as an update; her client hears of it.
    let since = next_batch(&pair.a, &alice).await;
    let (status, body) = pair
        .b
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/devices/{bob_device}"),
            Some(&bob.token),
            Some(json!({ "display_name": "Bob's phone" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until_changed(&pair.a, &alice, since, &bob.id).await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert_eq!(
        answer["device_keys"][&bob.id][&bob_device]["unsigned"]["device_display_name"],
        "Bob's phone",
        "{answer}"
    );

    // Claims: each one-time key once, then the fallback key.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let answer = claim(&pair.a, &alice, &bob.id, &bob_device).await;
        assert_eq!(answer["failures"], json!({}), "{answer}");
        let keys = answer["one_time_keys"][&bob.id][&bob_device]
            .as_object()
            .unwrap_or_else(|| panic!("a key: {answer}"))
            .clone();
        claimed.extend(keys.keys().cloned());
    }
    claimed.sort();
    assert_eq!(
        claimed,
        [
            "signed_curve25519:b0",
            "signed_curve25519:b1",
            "signed_curve25519:bf"
        ]
    );

    // To-device messages both ways, each delivered once though the request is repeated.
    let bob_since = next_batch(&pair.b, &bob).await;
    for (txn, n) in [("t1", 1), ("t1", 1), ("t2", 2)] {
        let (status, body) = pair
            .a
            .call(
                reqwest::Method::PUT,
                &format!("/_matrix/client/v3/sendToDevice/m.test/{txn}"),
                Some(&alice.token),
                Some(json!({ "messages": { &bob.id: { "*": { "n": n } } } })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let events = to_device_until(&pair.b, &bob, bob_since, |e| e["content"]["n"] == 2).await;
    let firsts: Vec<_> = events.iter().filter(|e| e["content"]["n"] == 1).collect();
    assert_eq!(firsts.len(), 1, "{events:?}");
    assert_eq!(firsts[0]["sender"], alice.id.as_str());
    assert_eq!(firsts[0]["type"], "m.test");
    let alice_since = next_batch(&pair.a, &alice).await;
    let alice_device = device_of(&pair.a, &alice).await;
    let (status, body) = pair
        .b
        .call(
            reqwest::Method::PUT,
            "/_matrix/client/v3/sendToDevice/m.reply/r1",
            Some(&bob.token),
            Some(json!({ "messages": { &alice.id: { &alice_device: { "ok": true } } } })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let events = to_device_until(&pair.a, &alice, alice_since, |e| e["type"] == "m.reply").await;
    assert_eq!(events.last().unwrap()["sender"], bob.id.as_str());

    // A new device of Bob, then its removal: Alice's server follows both.
    let since = next_batch(&pair.a, &alice).await;
    let (status, login) = pair.b.login("bob", PASSWORD).await;
    assert_eq!(status, 200, "{login}");
    let laptop = User {
        token: login["access_token"].as_str().unwrap().to_owned(),
        id: bob.id.clone(),
    };
    let laptop_device = login["device_id"].as_str().unwrap().to_owned();
    upload_keys(&pair.b, &laptop, &laptop_device, "l").await;
    until_changed(&pair.a, &alice, since, &bob.id).await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    let devices = answer["device_keys"][&bob.id].as_object().unwrap();
    assert!(devices.contains_key(&laptop_device), "{answer}");
    assert_eq!(devices.len(), 2, "{answer}");

    let since = next_batch(&pair.a, &alice).await;
    let (status, body) = pair
        .b
        .post("/_matrix/client/v3/logout", Some(&laptop.token), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    until_changed(&pair.a, &alice, since, &bob.id).await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    let devices = answer["device_keys"][&bob.id].as_object().unwrap();
    assert_eq!(
        devices.keys().collect::<Vec<_>>(),
        [&bob_device],
        "{answer}"
    );

    // With Bob's server down, the cached list still answers; what is not cached fails.
    pair.b.stop().await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert_eq!(answer["failures"], json!({}), "{answer}");
    assert!(answer["device_keys"][&bob.id][&bob_device].is_object());
    let carol = format!("@carol:{}", pair.b.name);
    let answer = query(&pair.a, &alice, &carol, Some(2_000)).await;
    assert!(
        answer["failures"][pair.b.name.as_str()].is_object(),
        "{answer}"
    );
    assert!(answer["device_keys"].get(&carol).is_none(), "{answer}");
    let answer = claim(&pair.a, &alice, &bob.id, &bob_device).await;
    assert!(
        answer["failures"][pair.b.name.as_str()].is_object(),
        "{answer}"
    );
}

#[tokio::test]
async fn served_endpoints_answer_for_local_users_only() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let alice_device = device_of(&pair.a, &alice).await;
    upload_keys(&pair.a, &alice, &alice_device, "a").await;
    let b = Origin::new(&pair.b);
    let get = |path: String| {
        let b = &b;
        let pair = &pair;
        async move { signed_request(&pair.a, b.name(), b.key(), None, Method::GET, &path, None).await }
    };
    let post = |path: &'static str, body: Value| {
        let b = &b;
        let pair = &pair;
        async move {
            signed_request(
                &pair.a,
                b.name(),
                b.key(),
                None,
                Method::POST,
                path,
                Some(&body),
            )
            .await
        }
    };

    // What another server may ask about our user.
    let (status, devices) = get(format!("/_matrix/federation/v1/user/devices/{}", alice.id)).await;
    assert_eq!(status, 200, "{devices}");
    assert_eq!(devices["user_id"], alice.id.as_str());
    assert!(devices["stream_id"].is_u64(), "{devices}");
    assert_eq!(devices["devices"][0]["device_id"], alice_device.as_str());
    assert_eq!(
        devices["devices"][0]["keys"]["device_id"],
        alice_device.as_str()
    );
    let (status, keys) = post(
        "/_matrix/federation/v1/user/keys/query",
        json!({ "device_keys": { &alice.id: [] } }),
    )
    .await;
    assert_eq!(status, 200, "{keys}");
    assert!(keys["device_keys"][&alice.id][&alice_device].is_object());
    let (status, claimed) = post(
        "/_matrix/federation/v1/user/keys/claim",
        json!({ "one_time_keys": { &alice.id: { &alice_device: "signed_curve25519" } } }),
    )
    .await;
    assert_eq!(status, 200, "{claimed}");
    assert_eq!(
        claimed["one_time_keys"][&alice.id][&alice_device]
            .as_object()
            .map(|keys| keys.len()),
        Some(1),
        "{claimed}"
    );
    // A device without keys, or an unknown user of ours: nothing, and no error.
    let (status, claimed) = post(
        "/_matrix/federation/v1/user/keys/claim",
        json!({ "one_time_keys": { &alice.id: { "NOPE": "signed_curve25519" } } }),
    )
    .await;
    assert_eq!((status, &claimed), (200, &json!({ "one_time_keys": {} })));
    let (status, devices) = get(format!(
        "/_matrix/federation/v1/user/devices/@nobody:{}",
        pair.a.name
    ))
    .await;
    assert_eq!(status, 200, "{devices}");
    assert_eq!(devices["devices"], json!([]));

    // Users of other servers are not ours to answer for.
    let remote = format!("@bob:{}", pair.b.name);
    let (status, body) = get(format!("/_matrix/federation/v1/user/devices/{remote}")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = post(
        "/_matrix/federation/v1/user/keys/query",
        json!({ "device_keys": { &alice.id: [], &remote: [] } }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = post(
        "/_matrix/federation/v1/user/keys/claim",
        json!({ "one_time_keys": { &remote: { "D": "signed_curve25519" } } }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (status, body) = get("/_matrix/federation/v1/user/devices/not-a-user".into()).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // Malformed bodies.
    for (path, body) in [
        (
            "/_matrix/federation/v1/user/keys/query",
            json!({ "device_keys": { "not a user": [] } }),
        ),
        ("/_matrix/federation/v1/user/keys/query", json!({})),
        (
            "/_matrix/federation/v1/user/keys/claim",
            json!({ "one_time_keys": { &alice.id: { &alice_device: 5 } } }),
        ),
    ] {
        let (status, answer) = post(path, body).await;
        assert_eq!((status, errcode(&answer)), (400, "M_BAD_JSON"), "{answer}");
    }
    let (status, answer) = post(
        "/_matrix/federation/v1/user/keys/claim",
        json!({ "one_time_keys": { &alice.id: { &alice_device: "bad:algorithm" } } }),
    )
    .await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    let response = pair
        .a
        .http
        .post(pair.a.url("/_matrix/federation/v1/user/keys/query"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "unsigned before anything else");

    // Unsigned, or signed with a key the origin never published.
    let path = format!("/_matrix/federation/v1/user/devices/{}", alice.id);
    let (status, body) = pair.a.get(&path, None).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");
    let forged = unpublished_key();
    let (status, body) =
        signed_request(&pair.a, b.name(), &forged, None, Method::GET, &path, None).await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");
}

#[tokio::test]
async fn edus_speaking_for_other_servers_users_are_ignored() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let alice_device = device_of(&pair.a, &alice).await;
    let bob_device = device_of(&pair.b, &bob).await;
    upload_keys(&pair.b, &bob, &bob_device, "b").await;
    shared_room(&pair, &alice, &bob).await;
    query(&pair.a, &alice, &bob.id, None).await;
    assert_eq!(cached_devices(&pair.a, &bob.id), [bob_device.as_str()]);
    let b = Origin::new(&pair.b);
    let since = next_batch(&pair.a, &alice).await;

    // Server B speaks for a user of A (to-device and device lists), and sends Bob's device
    // keys that his device did not sign: all ignored. Then one genuine message.
    let carol_of_a = format!("@carol:{}", pair.a.name);
    let forged_keys = {
        let mut keys = device_keys(&bob.id, "FORGED");
        keys["keys"]["curve25519:FORGED"] = json!("changed after signing");
        keys
    };
    let edus = vec![
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": carol_of_a, "type": "m.forged", "message_id": "f1",
            "messages": { &alice.id: { "*": { "forged": true } } },
        } }),
        json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": &alice.id, "device_id": "EVIL", "stream_id": 99, "prev_id": [],
            "keys": device_keys(&alice.id, "EVIL"),
        } }),
        json!({ "edu_type": "m.device_list_update", "content": {
            "user_id": &bob.id, "device_id": "FORGED", "stream_id": 1000, "prev_id": [],
            "keys": forged_keys,
        } }),
        json!({ "edu_type": "m.direct_to_device", "content": "not an object" }),
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": &bob.id, "type": "m.genuine", "message_id": "g1",
            "messages": {
                &alice.id: { &alice_device: { "n": 1 } },
                format!("@someone:{}", pair.b.name): { "*": { "relayed": true } },
            },
        } }),
        // The same message again: delivered once.
        json!({ "edu_type": "m.direct_to_device", "content": {
            "sender": &bob.id, "type": "m.genuine", "message_id": "g1",
            "messages": { &alice.id: { &alice_device: { "n": 1 } } },
        } }),
    ];
    let (status, answer) = b.send(&pair.a, "e2ee-forged-1", &[], edus).await;
    assert_eq!(status, 200, "{answer}");
    let events = to_device_until(&pair.a, &alice, since, |e| e["type"] == "m.genuine").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["sender"], bob.id.as_str());
    assert!(
        services(&pair.a)
            .keys
            .device_keys(&UserId::parse(&alice.id).unwrap(), "EVIL")
            .unwrap()
            .is_none()
    );
    assert_eq!(cached_devices(&pair.a, &bob.id), [bob_device.as_str()]);

    // An update that follows one Alice's server missed makes it fetch Bob's list again, and
    // the list it fetches is what counts: the device named in the update is not in it.
    let (status, answer) = b
        .send(
            &pair.a,
            "e2ee-gap-1",
            &[],
            vec![json!({ "edu_type": "m.device_list_update", "content": {
                "user_id": &bob.id, "device_id": "GHOST", "stream_id": 500, "prev_id": [499],
                "keys": device_keys(&bob.id, "GHOST"),
            } })],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let list = services(&pair.a)
        .cached_device_list(&UserId::parse(&bob.id).unwrap())
        .unwrap()
        .expect("still cached");
    assert_eq!(list.devices.keys().collect::<Vec<_>>(), [&bob_device]);
    assert!(list.stream_id > 0, "resynced: {list:?}");
}

/// An ed25519 key pair whose key ID is its own public key (as cross-signing keys are named).
fn cross_signing_pair() -> (Ed25519KeyPair, String) {
    let der = Ed25519KeyPair::generate();
    let public = B64.encode(
        Ed25519KeyPair::from_der(&der, "x".into())
            .unwrap()
            .public_key(),
    );
    (
        Ed25519KeyPair::from_der(&der, public.clone()).unwrap(),
        public,
    )
}

/// A cross-signing key object of `user`, signed by `signer` when given.
fn cross_signing_key(
    user: &str,
    usage: &str,
    public: &str,
    signer: Option<&Ed25519KeyPair>,
) -> Value {
    let key = json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } });
    let Some(signer) = signer else {
        return key;
    };
    let mut object: CanonicalJsonObject = serde_json::from_value(key).unwrap();
    ruma::signatures::sign_json(user, signer, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

#[tokio::test]
async fn remote_members_and_their_cross_signing_keys_reach_device_lists() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let bob_device = device_of(&pair.b, &bob).await;
    upload_keys(&pair.b, &bob, &bob_device, "b").await;

    // Bob joining Alice's room puts him in her device-list changes.
    let since = next_batch(&pair.a, &alice).await;
    let room = shared_room(&pair, &alice, &bob).await;
    until_changed(&pair.a, &alice, since, &bob.id).await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert!(answer["master_keys"].get(&bob.id).is_none(), "{answer}");

    // Bob's new cross-signing keys come as an `m.signing_key_update`.
    let since = next_batch(&pair.a, &alice).await;
    let (master, master_public) = cross_signing_pair();
    let (_, ssk_public) = cross_signing_pair();
    let master_key = cross_signing_key(&bob.id, "master", &master_public, None);
    let ssk = cross_signing_key(&bob.id, "self_signing", &ssk_public, Some(&master));
    let (status, body) = pair
        .b
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&bob.token),
            json!({ "master_key": master_key, "self_signing_key": ssk }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    until_changed(&pair.a, &alice, since, &bob.id).await;
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert_eq!(answer["master_keys"][&bob.id]["keys"], master_key["keys"]);
    assert_eq!(answer["self_signing_keys"][&bob.id], ssk, "{answer}");
    assert!(answer["device_keys"][&bob.id][&bob_device].is_object());

    // Alice signs Bob's master key with her user-signing key; she sees her signature on it.
    let (alice_master, alice_master_public) = cross_signing_pair();
    let (alice_usk, alice_usk_public) = cross_signing_pair();
    let (status, body) = pair
        .a
        .post(
            "/_matrix/client/v3/keys/device_signing/upload",
            Some(&alice.token),
            json!({
                "master_key": cross_signing_key(&alice.id, "master", &alice_master_public, None),
                "user_signing_key": cross_signing_key(
                    &alice.id, "user_signing", &alice_usk_public, Some(&alice_master),
                ),
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut signed: CanonicalJsonObject = serde_json::from_value(master_key.clone()).unwrap();
    ruma::signatures::sign_json(&alice.id, &alice_usk, &mut signed).unwrap();
    let (status, body) = pair
        .a
        .post(
            "/_matrix/client/v3/keys/signatures/upload",
            Some(&alice.token),
            json!({ &bob.id: { &master_public: signed } }),
        )
        .await;
    assert_eq!((status, &body["failures"]), (200, &json!({})), "{body}");
    let answer = query(&pair.a, &alice, &bob.id, None).await;
    assert!(
        answer["master_keys"][&bob.id]["signatures"][&alice.id]
            [format!("ed25519:{alice_usk_public}")]
        .is_string(),
        "{answer}"
    );

    // Bob leaves: he is in Alice's `left`, and his list is no longer kept (no more updates
    // would come).
    let since = next_batch(&pair.a, &alice).await;
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_from(&pair.a, &alice, Some(since), |sync| {
        sync["device_lists"]["left"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == bob.id.as_str()))
    })
    .await;
    assert!(cached_devices(&pair.a, &bob.id).is_empty());
    assert!(
        services(&pair.a)
            .cached_device_list(&UserId::parse(&bob.id).unwrap())
            .unwrap()
            .is_none()
    );
}
