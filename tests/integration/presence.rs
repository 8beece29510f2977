//! Presence: `GET`/`PUT /presence/{userId}/status`, the `presence` section of `/sync`,
//! `set_presence`, the automatic idle and offline transitions and disabled presence.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, spawn_long_poll, user};

fn status_path(user: &User) -> String {
    format!("/_matrix/client/v3/presence/{}/status", user.id)
}

async fn sync(server: &TestServer, u: &User, query: &str) -> (u16, Value) {
    server
        .get(&format!("/_matrix/client/v3/sync?{query}"), Some(&u.token))
        .await
}

async fn put_presence(server: &TestServer, u: &User, target: &User, body: Value) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &status_path(target),
            Some(&u.token),
            Some(body),
        )
        .await
}

async fn get_presence(server: &TestServer, u: &User, target: &User) -> (u16, Value) {
    server.get(&status_path(target), Some(&u.token)).await
}

/// The `m.presence` events of `sender` in a sync response.
fn presence_of(body: &Value, sender: &User) -> Vec<Value> {
    body["presence"]["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter(|e| e["sender"] == sender.id.as_str())
                .inspect(|e| assert_eq!(e["type"], "m.presence"))
                .map(|e| e["content"].clone())
                .collect()
        })
        .unwrap_or_default()
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// Alice and Bob share a room; Carol shares none with them.
async fn three_users(server: &TestServer) -> (User, User, User) {
    let alice = user(server, "alice").await;
    let bob = user(server, "bob").await;
    let carol = user(server, "carol").await;
    let room = create_room(server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(server, &bob, &room).await.0, 200);
    (alice, bob, carol)
}

/// Polls Bob's view of Alice's presence until it is `want` (bounded).
async fn wait_for_presence(server: &TestServer, bob: &User, alice: &User, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get_presence(server, bob, alice).await;
        assert_eq!(status, 200, "{body}");
        if body["presence"] == want {
            return body;
        }
        assert!(Instant::now() < deadline, "still {body}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn presence_set_get_and_who_may_see_it() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = three_users(&server).await;

    let (status, body) = put_presence(
        &server,
        &alice,
        &alice,
        json!({ "presence": "online", "status_msg": "here" }),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    for viewer in [&alice, &bob] {
        let (status, body) = get_presence(&server, viewer, &alice).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["presence"], "online");
        assert_eq!(body["status_msg"], "here");
        assert_eq!(body["currently_active"], true);
        assert!(body["last_active_ago"].as_u64().unwrap() < 60_000);
    }
    // Carol shares no room with Alice.
    let (status, body) = get_presence(&server, &carol, &alice).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    // Nobody sets someone else's presence.
    let (status, body) =
        put_presence(&server, &bob, &alice, json!({ "presence": "offline" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    // Bad requests change nothing.
    for (body, code) in [
        (json!({ "presence": "dancing" }), "M_INVALID_PARAM"),
        (
            json!({ "presence": "offline", "status_msg": "x".repeat(1025) }),
            "M_INVALID_PARAM",
        ),
        (
            json!({ "presence": "offline", "status_msg": 5 }),
            "M_BAD_JSON",
        ),
        (json!({ "status_msg": "no state" }), "M_BAD_JSON"),
    ] {
        let (status, answer) = put_presence(&server, &alice, &alice, body).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{answer}");
    }
    let (_, body) = get_presence(&server, &bob, &alice).await;
    assert_eq!(
        (&body["presence"], &body["status_msg"]),
        (&json!("online"), &json!("here"))
    );
    let (status, body) = server
        .get(
            "/_matrix/client/v3/presence/nonsense/status",
            Some(&alice.token),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    // A status message of exactly 1024 characters is fine; leaving it out clears it.
    let long = "é".repeat(1024);
    let (status, _) = put_presence(
        &server,
        &alice,
        &alice,
        json!({ "presence": "unavailable", "status_msg": long }),
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = get_presence(&server, &bob, &alice).await;
    assert_eq!(
        (&body["presence"], &body["currently_active"]),
        (&json!("unavailable"), &json!(false))
    );
    assert_eq!(body["status_msg"], long.as_str());
    let (status, _) = put_presence(&server, &alice, &alice, json!({ "presence": "offline" })).await;
    assert_eq!(status, 200);
    let (_, body) = get_presence(&server, &bob, &alice).await;
    assert_eq!(body["presence"], "offline");
    assert!(body.get("status_msg").is_none(), "{body}");

    // Bob never set anything: he is offline.
    let (status, body) = get_presence(&server, &alice, &bob).await;
    assert_eq!((status, &body["presence"]), (200, &json!("offline")));
}

#[tokio::test]
async fn presence_reaches_room_mates_in_sync_and_never_strangers() {
    let server = TestServer::start().await;
    let (alice, bob, carol) = three_users(&server).await;
    // Bob and Carol only watch: set_presence=offline keeps their own presence out of it.
    let (_, first) = sync(&server, &bob, "set_presence=offline").await;
    let bob_since = next_batch(&first);
    let (_, first) = sync(&server, &carol, "set_presence=offline").await;
    let carol_since = next_batch(&first);

    put_presence(
        &server,
        &alice,
        &alice,
        json!({ "presence": "unavailable", "status_msg": "lunch" }),
    )
    .await;
    let (status, body) = sync(
        &server,
        &bob,
        &format!("since={bob_since}&set_presence=offline"),
    )
    .await;
    assert_eq!(status, 200);
    let seen = presence_of(&body, &alice);
    assert_eq!(seen.len(), 1, "{body}");
    assert_eq!(seen[0]["presence"], "unavailable");
    assert_eq!(seen[0]["status_msg"], "lunch");
    assert_eq!(seen[0]["currently_active"], false);
    let bob_since = next_batch(&body);
    // Carol sees nothing of it, incrementally or in a full sync.
    let (_, body) = sync(
        &server,
        &carol,
        &format!("since={carol_since}&set_presence=offline&timeout=200"),
    )
    .await;
    assert!(presence_of(&body, &alice).is_empty(), "{body}");
    let (_, body) = sync(&server, &carol, "set_presence=offline").await;
    assert!(presence_of(&body, &alice).is_empty(), "{body}");
    // An initial sync of Bob's shows Alice (she is not offline).
    let (_, body) = sync(&server, &bob, "set_presence=offline").await;
    assert_eq!(presence_of(&body, &alice)[0]["status_msg"], "lunch");

    // The presence filter: by sender and by type.
    for filter in [
        json!({ "presence": { "not_senders": [alice.id] } }),
        json!({ "presence": { "types": ["m.nothing"] } }),
        json!({ "presence": { "limit": 0 } }),
    ] {
        let encoded: String =
            url::form_urlencoded::byte_serialize(filter.to_string().as_bytes()).collect();
        let (status, body) = sync(
            &server,
            &bob,
            &format!("set_presence=offline&filter={encoded}"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(presence_of(&body, &alice).is_empty(), "{filter}: {body}");
    }

    // A presence change wakes Bob's long poll.
    let poll = spawn_long_poll(
        &server,
        &bob.token,
        &format!("since={bob_since}&set_presence=offline&timeout=20000"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    put_presence(&server, &alice, &alice, json!({ "presence": "online" })).await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(elapsed < Duration::from_secs(15), "woken by the change");
    let seen = presence_of(&body, &alice);
    assert_eq!(seen.len(), 1, "{body}");
    assert_eq!(seen[0]["presence"], "online");
    assert!(seen[0].get("status_msg").is_none());
}

#[tokio::test]
async fn presence_set_by_sync_and_activity() {
    let server = TestServer::start().await;
    let (alice, bob, _) = three_users(&server).await;

    // Syncing without set_presence marks Alice online; her own presence is in her sync.
    let (_, body) = sync(&server, &alice, "").await;
    assert_eq!(presence_of(&body, &alice)[0]["presence"], "online");
    let since = next_batch(&body);
    wait_for_presence(&server, &bob, &alice, "online").await;
    // Nothing changed since: the next sync waits and reports no presence.
    let (_, body) = sync(&server, &alice, &format!("since={since}&timeout=200")).await;
    assert!(presence_of(&body, &alice).is_empty(), "{body}");

    let (_, _) = sync(&server, &alice, "set_presence=unavailable&timeout=0").await;
    wait_for_presence(&server, &bob, &alice, "unavailable").await;
    // set_presence=offline changes nothing.
    let (_, _) = sync(&server, &alice, "set_presence=offline").await;
    wait_for_presence(&server, &bob, &alice, "unavailable").await;
    // Any other request is activity: an unavailable user is online again.
    let (status, _) = server
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    wait_for_presence(&server, &bob, &alice, "online").await;
    // An explicit offline is not undone by activity, only by syncing online.
    put_presence(&server, &alice, &alice, json!({ "presence": "offline" })).await;
    server
        .get("/_matrix/client/v3/account/whoami", Some(&alice.token))
        .await;
    wait_for_presence(&server, &bob, &alice, "offline").await;
    let (_, _) = sync(&server, &alice, "set_presence=online").await;
    wait_for_presence(&server, &bob, &alice, "online").await;
    // An invalid set_presence changes nothing.
    put_presence(
        &server,
        &alice,
        &alice,
        json!({ "presence": "unavailable" }),
    )
    .await;
    let (status, body) = sync(&server, &alice, "set_presence=dancing").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    wait_for_presence(&server, &bob, &alice, "unavailable").await;
}

#[tokio::test]
async fn presence_goes_idle_then_offline_on_its_own() {
    let server = TestServer::start_with(|c| {
        c.presence.idle_after_secs = 1;
        c.presence.offline_after_secs = 2;
    })
    .await;
    let (alice, bob, _) = three_users(&server).await;
    let (_, body) = sync(&server, &bob, "set_presence=offline").await;
    let mut since = next_batch(&body);
    let started = Instant::now();
    sync(&server, &alice, "").await;

    // Bob's long polls see Alice online, then unavailable, then offline, without her doing
    // anything more.
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("offline") {
        assert!(started.elapsed() < Duration::from_secs(20), "{states:?}");
        let (status, body) = sync(
            &server,
            &bob,
            &format!("since={since}&set_presence=offline&timeout=10000"),
        )
        .await;
        assert_eq!(status, 200);
        since = next_batch(&body);
        for content in presence_of(&body, &alice) {
            states.push(content["presence"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(states, vec!["online", "unavailable", "offline"]);
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "idle 1 s + offline 2 s"
    );
    let (_, body) = get_presence(&server, &bob, &alice).await;
    assert!(body["last_active_ago"].as_u64().unwrap() >= 3_000, "{body}");
    assert_eq!(body["currently_active"], false);
}

#[tokio::test]
async fn presence_timers_survive_a_restart() {
    let mut server = TestServer::start_with(|c| c.presence.idle_after_secs = 3).await;
    let (alice, bob, _) = three_users(&server).await;
    sync(&server, &alice, "").await;
    wait_for_presence(&server, &bob, &alice, "online").await;
    // Stopping releases the store although Alice's timer is pending.
    server.stop().await;
    let mut config = crate::common::test_config(server.data.path().to_path_buf());
    config.presence.idle_after_secs = 3;
    let again = roost::start(config)
        .await
        .expect("restart on the same data");
    let restarted = TestServer {
        base: again.base_url(),
        server: Some(again),
        http: reqwest::Client::new(),
        data: tempfile::tempdir().unwrap(),
    };
    wait_for_presence(&restarted, &bob, &alice, "unavailable").await;
}

#[tokio::test]
async fn presence_disabled() {
    let server = TestServer::start_with(|c| c.presence.enabled = false).await;
    let (alice, bob, _) = three_users(&server).await;
    let (status, body) =
        put_presence(&server, &alice, &alice, json!({ "presence": "online" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = get_presence(&server, &bob, &alice).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (_, body) = sync(&server, &bob, "").await;
    assert_eq!(body["presence"]["events"], json!([]));
    let (_, body) = sync(&server, &alice, "set_presence=online").await;
    let since = next_batch(&body);
    assert_eq!(body["presence"]["events"], json!([]));
    // Alice syncing again is no change for her long poll.
    let started = Instant::now();
    let (_, body) = sync(&server, &alice, &format!("since={since}&timeout=300")).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{body}");
    assert_eq!(body["presence"]["events"], json!([]));
}
