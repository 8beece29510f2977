//! Typing notifications, receipts (read, private, delivered), read markers and unread counts,
//! as `/sync` shows them.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{
    TestServer, User, create_room, errcode, join, send_receipt, send_text, set_typing,
    spawn_long_poll, user,
};

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn sync(server: &TestServer, u: &User, query: &str) -> (u16, Value) {
    server
        .get(&format!("/_matrix/client/v3/sync?{query}"), Some(&u.token))
        .await
}

/// Syncs after `since` (initially when `None`); returns the body and its `next_batch`.
async fn sync_since(server: &TestServer, u: &User, since: Option<&str>) -> (Value, String) {
    let query = since.map(|s| format!("since={s}")).unwrap_or_default();
    let (status, body) = sync(server, u, &query).await;
    assert_eq!(status, 200, "{body}");
    let next = body["next_batch"].as_str().expect("next_batch").to_owned();
    (body, next)
}

/// The room's ephemeral event of type `kind`, if the sync has one.
fn ephemeral(body: &Value, room: &str, kind: &str) -> Option<Value> {
    body["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .find(|e| e["type"] == kind)
        .cloned()
}

fn typers(body: &Value, room: &str) -> Option<Vec<String>> {
    let event = ephemeral(body, room, "m.typing")?;
    Some(
        event["content"]["user_ids"]
            .as_array()
            .expect("user_ids")
            .iter()
            .map(|u| u.as_str().expect("a user ID").to_owned())
            .collect(),
    )
}

/// The receipt of `user` of type `kind` on `event` in the sync's `m.receipt`, if any.
fn receipt(body: &Value, room: &str, event: &str, kind: &str, user: &str) -> Option<Value> {
    let receipts = ephemeral(body, room, "m.receipt")?;
    let found = &receipts["content"][event][kind][user];
    (!found.is_null()).then(|| found.clone())
}

fn unread(body: &Value, room: &str) -> (u64, u64) {
    let counts = &body["rooms"]["join"][room]["unread_notifications"];
    (
        counts["notification_count"]
            .as_u64()
            .expect("notification_count"),
        counts["highlight_count"].as_u64().expect("highlight_count"),
    )
}

async fn send(server: &TestServer, u: &User, room: &str, txn: &str, text: &str) -> String {
    let (status, body) = send_text(server, u, room, txn, text).await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

/// Alice's public room with Bob in it.
async fn two_members(server: &TestServer) -> (User, User, String) {
    let alice = user(server, "alice").await;
    let bob = user(server, "bob").await;
    let room = create_room(server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(server, &bob, &room).await.0, 200);
    (alice, bob, room)
}

/// A long poll of `u` after `since`, running in the background: (time taken, body).
fn long_poll(
    server: &TestServer,
    u: &User,
    since: &str,
    timeout_ms: u64,
) -> tokio::task::JoinHandle<(Duration, Value)> {
    spawn_long_poll(
        server,
        &u.token,
        &format!("since={since}&timeout={timeout_ms}"),
    )
}

#[tokio::test]
async fn receipts_typing_reaches_the_other_member_and_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let (_, since) = sync_since(&server, &bob, None).await;

    // Bob waits; Alice starts typing; the poll wakes long before its timeout.
    let poll = long_poll(&server, &bob, &since, 20_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        set_typing(&server, &alice, &room, true, Some(30_000))
            .await
            .0,
        200
    );
    let (elapsed, body) = poll.await.expect("poll");
    assert!(elapsed < Duration::from_secs(15), "woken by typing");
    assert_eq!(typers(&body, &room), Some(vec![alice.id.clone()]));
    let since = body["next_batch"].as_str().expect("next_batch").to_owned();

    // An initial sync shows the current typers too; a filter can leave typing out.
    let (initial, _) = sync_since(&server, &bob, None).await;
    assert_eq!(typers(&initial, &room), Some(vec![alice.id.clone()]));
    let filter =
        encode(&json!({ "room": { "ephemeral": { "not_types": ["m.typing"] } } }).to_string());
    let (_, filtered) = sync(&server, &bob, &format!("filter={filter}")).await;
    assert_eq!(typers(&filtered, &room), None);

    // Renewing changes nothing others need to hear about.
    set_typing(&server, &alice, &room, true, Some(30_000)).await;
    let (body, _) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(typers(&body, &room), None, "{body}");

    // Stopping shows the empty list.
    assert_eq!(set_typing(&server, &alice, &room, false, None).await.0, 200);
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(typers(&body, &room), Some(vec![]));
    let (body, _) = sync_since(&server, &bob, Some(&since)).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
}

#[tokio::test]
async fn receipts_typing_expires_by_itself() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let (_, since) = sync_since(&server, &bob, None).await;
    assert_eq!(
        set_typing(&server, &alice, &room, true, Some(300)).await.0,
        200
    );
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(typers(&body, &room), Some(vec![alice.id.clone()]));

    // Nothing else happens: the expiry itself wakes the poll with the empty list.
    let (elapsed, body) = long_poll(&server, &bob, &since, 10_000)
        .await
        .expect("poll");
    assert!(elapsed < Duration::from_secs(8), "woken by the expiry");
    assert_eq!(typers(&body, &room), Some(vec![]));
}

#[tokio::test]
async fn receipts_read_and_private_receipts() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let first = send(&server, &alice, &room, "a1", "one").await;
    let second = send(&server, &alice, &room, "a2", "two").await;
    let (_, alice_since) = sync_since(&server, &alice, None).await;
    let (_, bob_since) = sync_since(&server, &bob, None).await;

    // A public receipt reaches Alice, with its timestamp; a threaded one names its thread.
    let (status, body) = send_receipt(&server, &bob, &room, "m.read", &first, json!({})).await;
    assert_eq!((status, &body), (200, &json!({})));
    let (body, alice_since) = sync_since(&server, &alice, Some(&alice_since)).await;
    let read = receipt(&body, &room, &first, "m.read", &bob.id).expect("bob's receipt");
    assert!(read["ts"].as_u64().is_some() && read.get("thread_id").is_none());
    let (status, _) = send_receipt(
        &server,
        &bob,
        &room,
        "m.read",
        &first,
        json!({ "thread_id": "main" }),
    )
    .await;
    assert_eq!(status, 200);
    let (body, alice_since) = sync_since(&server, &alice, Some(&alice_since)).await;
    let threaded = receipt(&body, &room, &first, "m.read", &bob.id).expect("threaded");
    assert_eq!(threaded["thread_id"], "main");

    // A private receipt reaches only Bob.
    let (status, _) =
        send_receipt(&server, &bob, &room, "m.read.private", &second, json!({})).await;
    assert_eq!(status, 200);
    let (body, _) = sync_since(&server, &alice, Some(&alice_since)).await;
    assert!(
        receipt(&body, &room, &second, "m.read.private", &bob.id).is_none(),
        "{body}"
    );
    let (initial, _) = sync_since(&server, &alice, None).await;
    assert!(receipt(&initial, &room, &second, "m.read.private", &bob.id).is_none());
    assert!(receipt(&initial, &room, &first, "m.read", &bob.id).is_some());
    let (body, _) = sync_since(&server, &bob, Some(&bob_since)).await;
    assert!(receipt(&body, &room, &second, "m.read.private", &bob.id).is_some());

    // A receipt that would move backwards changes nothing.
    let (_, alice_since) = sync_since(&server, &alice, None).await;
    send_receipt(&server, &bob, &room, "m.read", &second, json!({})).await;
    let (_, alice_since2) = sync_since(&server, &alice, Some(&alice_since)).await;
    let (status, _) = send_receipt(&server, &bob, &room, "m.read", &first, json!({})).await;
    assert_eq!(status, 200);
    let (body, _) = sync_since(&server, &alice, Some(&alice_since2)).await;
    assert!(receipt(&body, &room, &first, "m.read", &bob.id).is_none());
}

#[tokio::test]
async fn receipts_read_markers_set_fully_read_and_receipts() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let first = send(&server, &alice, &room, "a1", "one").await;
    let second = send(&server, &alice, &room, "a2", "two").await;
    let (_, bob_since) = sync_since(&server, &bob, None).await;
    let (_, alice_since) = sync_since(&server, &alice, None).await;
    let markers = format!("/_matrix/client/v3/rooms/{room}/read_markers");
    let (status, _) = server
        .post(
            &markers,
            Some(&bob.token),
            json!({ "m.fully_read": second, "m.read": second }),
        )
        .await;
    assert_eq!(status, 200);

    // Bob's room account data holds the marker, and his sync carries it.
    let data = format!(
        "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read",
        bob.id
    );
    let (status, marker) = server.get(&data, Some(&bob.token)).await;
    assert_eq!((status, &marker["event_id"]), (200, &json!(second)));
    let (body, _) = sync_since(&server, &bob, Some(&bob_since)).await;
    let room_data = body["rooms"]["join"][&room]["account_data"]["events"]
        .as_array()
        .expect("room account data");
    assert!(
        room_data
            .iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == second.as_str())
    );
    // Alice sees the read receipt, never the marker.
    let (body, _) = sync_since(&server, &alice, Some(&alice_since)).await;
    assert!(receipt(&body, &room, &second, "m.read", &bob.id).is_some());
    assert!(
        body["rooms"]["join"][&room]["account_data"]["events"]
            .as_array()
            .is_none_or(|events| events.is_empty())
    );

    // The marker only moves forwards; clients cannot write it as account data.
    let (status, _) = server
        .post(&markers, Some(&bob.token), json!({ "m.fully_read": first }))
        .await;
    assert_eq!(status, 200);
    let (_, marker) = server.get(&data, Some(&bob.token)).await;
    assert_eq!(marker["event_id"], second.as_str());
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &data,
            Some(&bob.token),
            Some(json!({ "event_id": first })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (405, "M_BAD_JSON"));
    // m.fully_read through the receipt endpoint works too.
    let third = send(&server, &alice, &room, "a3", "three").await;
    let (status, _) = send_receipt(&server, &bob, &room, "m.fully_read", &third, json!({})).await;
    assert_eq!(status, 200);
    let (_, marker) = server.get(&data, Some(&bob.token)).await;
    assert_eq!(marker["event_id"], third.as_str());
}

#[tokio::test]
async fn receipts_delivered_then_read() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let (_, alice_since) = sync_since(&server, &alice, None).await;
    let (_, bob_since) = sync_since(&server, &bob, None).await;
    let hello = send(&server, &alice, &room, "a1", "hello").await;
    // Sent, not yet delivered.
    let (body, alice_since) = sync_since(&server, &alice, Some(&alice_since)).await;
    assert!(receipt(&body, &room, &hello, "org.roost.delivered", &bob.id).is_none());

    // Alice waits; Bob's sync hands him the message, which wakes Alice with "delivered".
    let poll = long_poll(&server, &alice, &alice_since, 20_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (body, bob_since) = sync_since(&server, &bob, Some(&bob_since)).await;
    assert!(
        body["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["event_id"] == hello.as_str())
    );
    let (elapsed, body) = poll.await.expect("poll");
    assert!(elapsed < Duration::from_secs(15), "woken by the delivery");
    let delivered =
        receipt(&body, &room, &hello, "org.roost.delivered", &bob.id).expect("delivered");
    assert!(delivered["ts"].as_u64().is_some());
    let alice_since = body["next_batch"].as_str().expect("next_batch").to_owned();

    // Bob never hears about his own delivered receipt: his next poll times out empty.
    let (body, _) = sync_since(&server, &bob, Some(&format!("{bob_since}&timeout=300"))).await;
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let (initial, _) = sync_since(&server, &bob, None).await;
    assert!(receipt(&initial, &room, &hello, "org.roost.delivered", &bob.id).is_none());

    // Then read.
    send_receipt(&server, &bob, &room, "m.read", &hello, json!({})).await;
    let (body, _) = sync_since(&server, &alice, Some(&alice_since)).await;
    assert!(receipt(&body, &room, &hello, "m.read", &bob.id).is_some());
    // Alice's own messages get no delivered receipt from her own syncs.
    let (initial, _) = sync_since(&server, &bob, None).await;
    assert!(receipt(&initial, &room, &hello, "org.roost.delivered", &alice.id).is_none());
}

#[tokio::test]
async fn receipts_delivered_reach_only_the_sender_in_a_group() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let carol = user(&server, "carol").await;
    assert_eq!(join(&server, &carol, &room).await.0, 200);
    let (_, mut alice_since) = sync_since(&server, &alice, None).await;
    let (_, bob_since) = sync_since(&server, &bob, None).await;
    let (_, carol_since) = sync_since(&server, &carol, None).await;
    let hello = send(&server, &alice, &room, "g1", "hello all").await;

    // Carol gets the message; Alice sees Carol's delivery (long polls until it is there).
    let (_, carol_since) = sync_since(&server, &carol, Some(&carol_since)).await;
    let mut seen = false;
    for _ in 0..10 {
        let (_, body) = long_poll(&server, &alice, &alice_since, 10_000)
            .await
            .expect("alice's poll");
        alice_since = body["next_batch"].as_str().expect("next_batch").to_owned();
        if receipt(&body, &room, &hello, "org.roost.delivered", &carol.id).is_some() {
            seen = true;
            break;
        }
    }
    assert!(seen, "Alice sees Carol's delivery");

    // Bob's sync hands him the message: Alice is woken with his delivered receipt, Carol is
    // not woken by it and never sees it.
    let alice_poll = long_poll(&server, &alice, &alice_since, 20_000);
    let carol_poll = long_poll(&server, &carol, &carol_since, 1_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sync_since(&server, &bob, Some(&bob_since)).await;
    let (elapsed, body) = alice_poll.await.expect("alice's poll");
    assert!(elapsed < Duration::from_secs(15), "woken by the delivery");
    assert!(receipt(&body, &room, &hello, "org.roost.delivered", &bob.id).is_some());
    let (elapsed, body) = carol_poll.await.expect("carol's poll");
    assert!(elapsed >= Duration::from_millis(900), "{body}");
    assert!(body["rooms"]["join"].get(&room).is_none(), "{body}");
    let (initial, _) = sync_since(&server, &carol, None).await;
    assert!(receipt(&initial, &room, &hello, "org.roost.delivered", &bob.id).is_none());
    // Alice, in an initial sync, sees both deliveries of her message.
    let (initial, _) = sync_since(&server, &alice, None).await;
    assert!(receipt(&initial, &room, &hello, "org.roost.delivered", &bob.id).is_some());
    assert!(receipt(&initial, &room, &hello, "org.roost.delivered", &carol.id).is_some());
}

#[tokio::test]
async fn receipts_unread_counts_rise_and_clear() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let (body, since) = sync_since(&server, &bob, None).await;
    assert_eq!(unread(&body, &room), (0, 0));

    send(&server, &alice, &room, "a1", "hello").await;
    let mention = send(&server, &alice, &room, "a2", &format!("hey {}", bob.id)).await;
    send(&server, &bob, &room, "b1", "my own message does not count").await;
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (2, 1));

    // A thread: counted apart when the filter asks for it.
    let reply = server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/a3"),
            Some(&alice.token),
            Some(json!({
                "msgtype": "m.text",
                "body": "in the thread",
                "m.relates_to": { "rel_type": "m.thread", "event_id": mention },
            })),
        )
        .await;
    assert_eq!(reply.0, 200);
    let reply = reply.1["event_id"].as_str().expect("event_id").to_owned();
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (3, 1));
    assert!(
        body["rooms"]["join"][&room]
            .get("unread_thread_notifications")
            .is_none()
    );
    let filter = encode(
        &json!({ "room": { "timeline": { "unread_thread_notifications": true } } }).to_string(),
    );
    let (_, threaded) = sync(&server, &bob, &format!("filter={filter}")).await;
    assert_eq!(unread(&threaded, &room), (2, 1));
    assert_eq!(
        threaded["rooms"]["join"][&room]["unread_thread_notifications"][&mention],
        json!({ "notification_count": 1, "highlight_count": 0 })
    );

    // A threaded receipt clears the thread only; an unthreaded one clears everything.
    let (status, _) = send_receipt(
        &server,
        &bob,
        &room,
        "m.read",
        &reply,
        json!({ "thread_id": mention }),
    )
    .await;
    assert_eq!(status, 200);
    let (_, threaded) = sync(&server, &bob, &format!("filter={filter}")).await;
    assert_eq!(unread(&threaded, &room), (2, 1));
    assert!(
        threaded["rooms"]["join"][&room]
            .get("unread_thread_notifications")
            .is_none()
    );
    let (status, _) = send_receipt(&server, &bob, &room, "m.read.private", &reply, json!({})).await;
    assert_eq!(status, 200);
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (0, 0));

    // Counts carry on from sync to sync, and a redaction takes a counted event back.
    let first = send(&server, &alice, &room, "a4", "one").await;
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (1, 0));
    send(&server, &alice, &room, "a5", &format!("two, {}", bob.id)).await;
    let (body, since) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (2, 1));
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/redact/{first}/r1"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    let (body, _) = sync_since(&server, &bob, Some(&since)).await;
    assert_eq!(unread(&body, &room), (1, 1));
}

#[tokio::test]
async fn receipts_and_typing_refuse_bad_requests() {
    let server = TestServer::start().await;
    let (alice, bob, room) = two_members(&server).await;
    let carol = user(&server, "carol").await;
    let event = send(&server, &alice, &room, "a1", "hello").await;

    // Typing: only for oneself, only when joined, with a body that says whether.
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", alice.id),
            Some(&bob.token),
            Some(json!({ "typing": true })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = set_typing(&server, &carol, &room, true, None).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/typing/{}", bob.id),
            Some(&bob.token),
            Some(json!({ "timeout": 1000 })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));

    // Receipts: a known type, a visible event of the room, a joined user, a sound thread.
    let (status, body) = send_receipt(&server, &bob, &room, "m.seen", &event, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = send_receipt(
        &server,
        &bob,
        &room,
        "org.roost.delivered",
        &event,
        json!({}),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) =
        send_receipt(&server, &bob, &room, "m.read", "$nosuchevent", json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = send_receipt(&server, &bob, &room, "m.read", "nonsense", json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = send_receipt(&server, &carol, &room, "m.read", &event, json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    for thread in [json!(""), json!(5), json!("$elsewhere")] {
        let (status, body) = send_receipt(
            &server,
            &bob,
            &room,
            "m.read",
            &event,
            json!({ "thread_id": thread }),
        )
        .await;
        assert_eq!(
            (status, errcode(&body)),
            (400, "M_INVALID_PARAM"),
            "{thread}"
        );
    }

    // A read-marker request with one bad event changes nothing.
    let (_, alice_since) = sync_since(&server, &alice, None).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/read_markers"),
            Some(&bob.token),
            json!({ "m.read": event, "m.fully_read": "$nosuchevent" }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (body, _) = sync_since(&server, &alice, Some(&alice_since)).await;
    assert!(receipt(&body, &room, &event, "m.read", &bob.id).is_none());
    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/user/{}/rooms/{room}/account_data/m.fully_read",
                bob.id
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 404);
}
