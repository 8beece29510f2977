//! Push rules, unread counts, `/notifications` and pushers, against a push gateway the test
//! runs on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_receipt, user};

const V3: &str = "/_matrix/client/v3";

/// Sends a message with the given content; returns the event ID.
async fn send(server: &TestServer, u: &User, room: &str, txn: &str, content: Value) -> String {
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/send/m.room.message/{txn}"),
            Some(&u.token),
            Some(content),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// (notification_count, highlight_count) of a room in an initial sync.
async fn counts(server: &TestServer, u: &User, room: &str) -> (u64, u64) {
    let (status, body) = server.get(&format!("{V3}/sync"), Some(&u.token)).await;
    assert_eq!(status, 200, "{body}");
    let c = &body["rooms"]["join"][room]["unread_notifications"];
    (
        c["notification_count"]
            .as_u64()
            .expect("notification_count"),
        c["highlight_count"].as_u64().expect("highlight_count"),
    )
}

/// A direct chat between two users (two members).
async fn dm(server: &TestServer, a: &User, b: &User) -> String {
    let room = create_room(
        server,
        a,
        json!({ "is_direct": true, "preset": "trusted_private_chat", "invite": [b.id] }),
    )
    .await;
    assert_eq!(join(server, b, &room).await.0, 200);
    room
}

/// A group room of `a` with the others joined.
async fn group(server: &TestServer, a: &User, others: &[&User]) -> String {
    let room = create_room(
        server,
        a,
        json!({ "preset": "public_chat", "name": "Group" }),
    )
    .await;
    for u in others {
        assert_eq!(join(server, u, &room).await.0, 200);
    }
    room
}

async fn notifications(server: &TestServer, u: &User, query: &str) -> Value {
    let (status, body) = server
        .get(&format!("{V3}/notifications?{query}"), Some(&u.token))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn has_tweak(actions: &Value, tweak: &str) -> bool {
    actions
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["set_tweak"] == tweak)
}

#[tokio::test]
async fn push_dm_notifies_group_needs_a_mention() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let direct = dm(&server, &alice, &bob).await;
    let room = group(&server, &alice, &[&bob, &carol]).await;

    // A direct message notifies loudly (`.m.rule.room_one_to_one`: sound).
    send(&server, &alice, &direct, "d1", text("hi there")).await;
    assert_eq!(counts(&server, &bob, &direct).await, (1, 0));
    let list = notifications(&server, &bob, "").await;
    let first = &list["notifications"][0];
    assert_eq!(first["room_id"], direct.as_str());
    assert!(has_tweak(&first["actions"], "sound"), "{first}");
    assert!(!has_tweak(&first["actions"], "highlight"), "{first}");

    // In the group, a plain message counts quietly (the specification's `.m.rule.message`):
    // no sound, no highlight.
    send(&server, &alice, &room, "g1", text("morning all")).await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
    let list = notifications(&server, &bob, "").await;
    assert_eq!(list["notifications"][0]["room_id"], room.as_str());
    assert_eq!(list["notifications"][0]["actions"], json!(["notify"]));

    // Bob keeps group messages to mentions only (what clients do: `.m.rule.message` with no
    // actions); a plain group message no longer notifies, a direct one still does.
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/underride/.m.rule.message/actions"),
            Some(&bob.token),
            Some(json!({ "actions": [] })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    send(&server, &alice, &room, "g2", text("lunch?")).await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
    send(&server, &alice, &direct, "d2", text("ping")).await;
    assert_eq!(counts(&server, &bob, &direct).await, (2, 0));

    // An intentional mention notifies and highlights; Carol, not mentioned, just counts it.
    send(
        &server,
        &alice,
        &room,
        "g3",
        json!({ "msgtype": "m.text", "body": "Bob: see this", "m.mentions": { "user_ids": [bob.id] } }),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));
    assert_eq!(counts(&server, &carol, &room).await, (3, 0));

    // A reply notifies the user replied to: clients mention them in `m.mentions`.
    let bobs = send(&server, &bob, &room, "b1", text("question from bob")).await;
    send(
        &server,
        &carol,
        &room,
        "c1",
        json!({
            "msgtype": "m.text", "body": "> question\n\nanswer",
            "m.relates_to": { "m.in_reply_to": { "event_id": bobs } },
            "m.mentions": { "user_ids": [bob.id] },
        }),
    )
    .await;
    // Bob's own message moved his read position? No: sending does not read. Counts go on.
    assert_eq!(counts(&server, &bob, &room).await, (3, 2));

    // The legacy display-name rule still works for events without `m.mentions`.
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/profile/{}/displayname", bob.id),
            Some(&bob.token),
            Some(json!({ "displayname": "Bobby Tables" })),
        )
        .await;
    assert_eq!(status, 200);
    send(&server, &carol, &room, "c2", text("ask bobby tables")).await;
    assert_eq!(counts(&server, &bob, &room).await, (4, 3));
    // ...and stands down when the event carries `m.mentions` without him.
    send(
        &server,
        &carol,
        &room,
        "c3",
        json!({ "msgtype": "m.text", "body": "Bobby Tables again", "m.mentions": {} }),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (4, 3));
}

#[tokio::test]
async fn push_room_mentions_need_power_and_receipts_reset_counts() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let room = group(&server, &alice, &[&bob, &carol]).await;
    let room_mention =
        |body: &str| json!({ "msgtype": "m.text", "body": body, "m.mentions": { "room": true } });
    // Carol has power 0; `@room` needs the `room` notification level (50).
    send(&server, &carol, &room, "c1", room_mention("@room hello")).await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
    // Alice, the creator, has it.
    let last = send(
        &server,
        &alice,
        &room,
        "a1",
        room_mention("@room meeting now"),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (2, 1));
    let highlights = notifications(&server, &bob, "only=highlight").await;
    assert_eq!(
        highlights["notifications"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        highlights["notifications"][0]["event"]["event_id"],
        last.as_str()
    );
    assert_eq!(highlights["notifications"][0]["read"], false);

    // A read receipt on the latest event clears both counts, and marks notifications read.
    let (status, _) = send_receipt(&server, &bob, &room, "m.read", &last, json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
    let list = notifications(&server, &bob, "").await;
    assert!(
        list["notifications"]
            .as_array()
            .expect("list")
            .iter()
            .all(|n| n["read"] == true),
        "{list}"
    );

    // A redaction takes a counted notification back.
    let counted = send(&server, &alice, &room, "a2", room_mention("@room oops")).await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 1));
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/redact/{counted}/r1"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(counts(&server, &bob, &room).await, (0, 0));
}

#[tokio::test]
async fn push_notifications_list_invites_and_pages() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    // An invite notifies the invitee (`.m.rule.invite_for_me`): a "friend request".
    let room = create_room(
        &server,
        &alice,
        json!({ "is_direct": true, "preset": "trusted_private_chat", "invite": [bob.id] }),
    )
    .await;
    let list = notifications(&server, &bob, "").await;
    assert_eq!(list["notifications"][0]["event"]["type"], "m.room.member");
    assert_eq!(
        list["notifications"][0]["event"]["content"]["membership"],
        "invite"
    );
    assert_eq!(list["notifications"][0]["room_id"], room.as_str());
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            send(
                &server,
                &alice,
                &room,
                &format!("t{i}"),
                text(&format!("m{i}")),
            )
            .await,
        );
    }
    // Pages of two, newest first, ending with the invite.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..10 {
        let query = match &from {
            Some(f) => format!("limit=2&from={f}"),
            None => "limit=2".to_owned(),
        };
        let page = notifications(&server, &bob, &query).await;
        let items = page["notifications"].as_array().expect("list").clone();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|n| n["event"]["event_id"].as_str().unwrap_or("").to_owned()),
        );
        match page["next_token"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let expected: Vec<String> = sent.iter().rev().cloned().collect();
    assert_eq!(seen[..5], expected[..]);

    // Bad parameters.
    for query in [
        "limit=-1",
        "from=nope",
        "only=everything",
        "limit=99999999999999999999999",
    ] {
        let (status, body) = server
            .get(&format!("{V3}/notifications?{query}"), Some(&bob.token))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(errcode(&body), "M_INVALID_PARAM", "{query}");
    }
    let (status, body) = server.get(&format!("{V3}/notifications"), None).await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
}

#[tokio::test]
async fn push_rules_api_reads_changes_and_refuses() {
    let server = TestServer::start().await;
    let bob = user(&server, "bob").await;
    let token = Some(bob.token.as_str());
    let (status, all) = server.get(&format!("{V3}/pushrules/"), token).await;
    assert_eq!(status, 200);
    let ids = |kind: &str, rules: &Value| -> Vec<String> {
        rules[kind]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["rule_id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let overrides = ids("override", &all["global"]);
    for id in [
        ".m.rule.master",
        ".m.rule.suppress_notices",
        ".m.rule.invite_for_me",
        ".m.rule.member_event",
        ".m.rule.is_user_mention",
        ".m.rule.contains_display_name",
        ".m.rule.is_room_mention",
        ".m.rule.tombstone",
        ".m.rule.reaction",
    ] {
        assert!(overrides.iter().any(|i| i == id), "{id} in {overrides:?}");
    }
    // (Builds with ruma's unstable poll rules add those after the stable ones.)
    assert_eq!(
        ids("underride", &all["global"])[..5],
        [
            ".m.rule.call",
            ".m.rule.encrypted_room_one_to_one",
            ".m.rule.room_one_to_one",
            ".m.rule.message",
            ".m.rule.encrypted"
        ]
    );
    // The initial sync carries them as account data.
    let (_, sync) = server.get(&format!("{V3}/sync"), token).await;
    let data = sync["account_data"]["events"]
        .as_array()
        .expect("account data");
    assert!(data.iter().any(|e| e["type"] == "m.push_rules"));

    // Add three content rules and order them.
    let put = |id: &str, query: &str, body: Value| {
        let path = format!("{V3}/pushrules/global/content/{id}{query}");
        let server = &server;
        async move {
            server
                .call(reqwest::Method::PUT, &path, token, Some(body))
                .await
        }
    };
    let rule = |pattern: &str| json!({ "pattern": pattern, "actions": ["notify"] });
    assert_eq!(put("cake", "", rule("cake*")).await.0, 200);
    assert_eq!(put("pie", "", rule("pie")).await.0, 200);
    assert_eq!(put("tart", "?after=cake", rule("tart")).await.0, 200);
    assert_eq!(put("scone", "?before=pie", rule("scone")).await.0, 200);
    let (_, global) = server.get(&format!("{V3}/pushrules/global/"), token).await;
    let content = ids("content", &global);
    let user_ids: Vec<_> = content
        .iter()
        .filter(|i| !i.starts_with('.'))
        .cloned()
        .collect();
    assert_eq!(user_ids, ["scone", "pie", "cake", "tart"]);
    let (status, one) = server
        .get(&format!("{V3}/pushrules/global/content/cake"), token)
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["pattern"], "cake*");
    assert_eq!(one["enabled"], true);
    assert_eq!(one["default"], false);

    // enabled and actions, on user and default rules.
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/override/.m.rule.master/enabled"),
            token,
            Some(json!({ "enabled": true })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, enabled) = server
        .get(
            &format!("{V3}/pushrules/global/override/.m.rule.master/enabled"),
            token,
        )
        .await;
    assert_eq!(enabled, json!({ "enabled": true }));
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/content/cake/actions"),
            token,
            Some(json!({ "actions": ["notify", { "set_tweak": "highlight" }] })),
        )
        .await;
    assert_eq!(status, 200);
    let (_, actions) = server
        .get(
            &format!("{V3}/pushrules/global/content/cake/actions"),
            token,
        )
        .await;
    assert_eq!(actions["actions"][1]["set_tweak"], "highlight");
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("{V3}/pushrules/global/content/pie"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .get(&format!("{V3}/pushrules/global/content/pie"), token)
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // Refusals.
    let (status, body) = put(".m.rule.mine", "", rule("x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put("late", "?before=nonexistent", rule("x")).await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"));
    let (status, body) = put("rel", "?after=.m.rule.contains_user_name", rule("x")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = put("nopattern", "", json!({ "actions": ["notify"] })).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"));
    let (status, body) = put(
        "badaction",
        "",
        json!({ "pattern": "x", "actions": ["explode"] }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put("noactions", "", json!({ "pattern": "x" })).await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"));
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/sideways/x"),
            token,
            Some(json!({ "actions": [] })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/room/not-a-room"),
            token,
            Some(json!({ "actions": [] })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .call(
            reqwest::Method::DELETE,
            &format!("{V3}/pushrules/global/override/.m.rule.master"),
            token,
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/pushrules/global/override/.m.rule.nothing/enabled"),
            token,
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/user/{}/account_data/m.push_rules", bob.id),
            token,
            Some(json!({ "global": {} })),
        )
        .await;
    assert_eq!(status, 405, "{body}");
    // Nothing of that changed the rules.
    let (_, after) = server.get(&format!("{V3}/pushrules/global/"), token).await;
    assert_eq!(after, {
        let (_, again) = server.get(&format!("{V3}/pushrules/global/"), token).await;
        again
    });
    assert_eq!(
        ids("content", &after)
            .iter()
            .filter(|i| !i.starts_with('.'))
            .count(),
        3
    );

    // Concurrent changes all take effect.
    let mut changes = Vec::new();
    for i in 0..8 {
        let path = format!("{V3}/pushrules/global/content/parallel{i}");
        let http = server.http.clone();
        let url = server.url(&path);
        let token = bob.token.clone();
        changes.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(token)
                .json(&json!({ "pattern": format!("word{i}"), "actions": ["notify"] }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for change in changes {
        assert_eq!(change.await.expect("task").expect("sent"), 200);
    }
    let (_, after) = server.get(&format!("{V3}/pushrules/global/"), token).await;
    let content = ids("content", &after);
    for i in 0..8 {
        assert!(content.contains(&format!("parallel{i}")), "{content:?}");
    }
    // Patterns are bounded.
    let (status, body) = put("long", "", rule(&"a?".repeat(200))).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn push_empty_body_does_not_highlight_users_without_a_display_name() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let (status, _) = server
        .call(
            reqwest::Method::DELETE,
            &format!("{V3}/profile/{}/displayname", bob.id),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let room = group(&server, &alice, &[&bob, &carol]).await;
    send(
        &server,
        &alice,
        &room,
        "e1",
        json!({ "msgtype": "m.text", "body": "" }),
    )
    .await;
    assert_eq!(counts(&server, &bob, &room).await, (1, 0));
}

/// What the test push gateway received, and how it answers.
#[derive(Default)]
struct Gateway {
    received: Mutex<Vec<Value>>,
    /// Answers 500 to this many requests first.
    fail_first: Mutex<usize>,
    /// Pushkeys to answer as `rejected`.
    reject: Mutex<Vec<String>>,
    arrived: tokio::sync::Notify,
}

async fn notify(
    State(gateway): State<Arc<Gateway>>,
    body: axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    gateway.received.lock().expect("lock").push(body.0.clone());
    gateway.arrived.notify_waiters();
    let mut fail = gateway.fail_first.lock().expect("lock");
    if *fail > 0 {
        *fail -= 1;
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({})),
        );
    }
    let rejected = gateway.reject.lock().expect("lock").clone();
    (
        axum::http::StatusCode::OK,
        axum::Json(json!({ "rejected": rejected })),
    )
}

/// Starts a push gateway on loopback; returns it and its notify URL.
async fn start_gateway() -> (Arc<Gateway>, String) {
    let gateway = Arc::new(Gateway::default());
    let app = axum::Router::new()
        .route("/_matrix/push/v1/notify", post(notify))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (gateway, format!("http://{addr}/_matrix/push/v1/notify"))
}

impl Gateway {
    /// Waits (at most 20 s) until `done` holds for what arrived.
    async fn wait_until(&self, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let arrived = self.arrived.notified();
            {
                let received = self.received.lock().expect("lock");
                if done(&received) {
                    return received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let received = self.received.lock().expect("lock");
                panic!("the gateway did not receive what was expected: {received:?}");
            }
        }
    }
}

fn pusher(pushkey: &str, url: &str, format: Option<&str>) -> Value {
    let mut data = json!({ "url": url });
    if let Some(format) = format {
        data["format"] = json!(format);
    }
    json!({
        "pushkey": pushkey, "kind": "http", "app_id": "org.example.app",
        "app_display_name": "Example", "device_display_name": "Phone", "lang": "en",
        "data": data,
    })
}

fn pushes_for<'a>(received: &'a [Value], event: &str) -> Vec<&'a Value> {
    received
        .iter()
        .filter(|r| r["notification"]["event_id"] == event)
        .collect()
}

#[tokio::test]
async fn push_pusher_gets_one_push_per_notifying_event_and_retries() {
    let server = TestServer::start_with(|c| {
        c.push.allow_private_addresses = true;
        c.push.retry_initial_ms = 100;
    })
    .await;
    let (gateway, url) = start_gateway().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = dm(&server, &alice, &bob).await;
    let (status, body) = server
        .post(
            &format!("{V3}/pushers/set"),
            Some(&bob.token),
            pusher("full-key", &url, None),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
    assert_eq!(list["pushers"][0]["pushkey"], "full-key");
    assert_eq!(list["pushers"][0]["data"]["url"], url.as_str());

    // The gateway fails the first call: the push is retried.
    *gateway.fail_first.lock().expect("lock") = 1;
    let first = send(&server, &alice, &room, "p1", text("first")).await;
    let received = gateway
        .wait_until(|r| pushes_for(r, &first).len() == 2)
        .await;
    let push = &pushes_for(&received, &first)[1]["notification"];
    assert_eq!(push["room_id"], room.as_str());
    assert_eq!(push["type"], "m.room.message");
    assert_eq!(push["sender"], alice.id.as_str());
    assert_eq!(push["content"]["body"], "first");
    assert_eq!(push["prio"], "high");
    assert_eq!(push["counts"]["unread"], 1);
    assert_eq!(push["devices"][0]["pushkey"], "full-key");
    assert_eq!(push["devices"][0]["app_id"], "org.example.app");
    assert_eq!(push["devices"][0]["tweaks"]["sound"], "default");
    assert!(push["devices"][0]["data"].get("url").is_none());

    // A second pusher wants event IDs only.
    let (status, _) = server
        .post(
            &format!("{V3}/pushers/set"),
            Some(&bob.token),
            pusher("id-key", &url, Some("event_id_only")),
        )
        .await;
    assert_eq!(status, 200);
    // A topic change notifies nobody; two messages do.
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("{V3}/rooms/{room}/state/m.room.topic"),
            Some(&alice.token),
            Some(json!({ "topic": "quiet" })),
        )
        .await;
    assert_eq!(status, 200);
    let second = send(&server, &alice, &room, "p2", text("second")).await;
    let third = send(&server, &alice, &room, "p3", text("third")).await;
    let received = gateway
        .wait_until(|r| pushes_for(r, &third).len() == 2 && pushes_for(r, &second).len() == 2)
        .await;
    // Exactly one push per pusher per event; nothing for the topic.
    assert_eq!(received.len(), 2 + 4, "{received:?}");
    for event in [&second, &third] {
        let pushes = pushes_for(&received, event);
        let keys: Vec<_> = pushes
            .iter()
            .map(|p| {
                p["notification"]["devices"][0]["pushkey"]
                    .as_str()
                    .unwrap_or("")
            })
            .collect();
        assert!(
            keys.contains(&"full-key") && keys.contains(&"id-key"),
            "{keys:?}"
        );
        let short = pushes
            .iter()
            .find(|p| p["notification"]["devices"][0]["pushkey"] == "id-key")
            .expect("event_id_only push");
        assert!(short["notification"].get("content").is_none(), "{short}");
        assert!(short["notification"].get("sender").is_none(), "{short}");
        assert!(short["notification"]["counts"]["unread"].as_u64().is_some());
    }

    // The gateway rejects a pushkey: that pusher goes away.
    *gateway.reject.lock().expect("lock") = vec!["id-key".into()];
    let fourth = send(&server, &alice, &room, "p4", text("fourth")).await;
    gateway
        .wait_until(|r| pushes_for(r, &fourth).len() == 2)
        .await;
    let mut remaining = Vec::new();
    for _ in 0..50 {
        let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
        remaining = list["pushers"].as_array().cloned().unwrap_or_default();
        if remaining.len() == 1 {
            break;
        }
        // Removal follows the gateway's answer, which the test saw a moment before.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    assert_eq!(remaining[0]["pushkey"], "full-key");

    // Deleting with `kind: null`.
    let mut delete = pusher("full-key", &url, None);
    delete["kind"] = Value::Null;
    let (status, _) = server
        .post(&format!("{V3}/pushers/set"), Some(&bob.token), delete)
        .await;
    assert_eq!(status, 200);
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
    assert_eq!(list["pushers"], json!([]));
}

#[tokio::test]
async fn push_pushers_set_refuses_bad_requests() {
    let server = TestServer::start().await;
    let (_gateway, url) = start_gateway().await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let set = |u: &User, body: Value| {
        let server = &server;
        let token = u.token.clone();
        async move {
            server
                .post(&format!("{V3}/pushers/set"), Some(&token), body)
                .await
        }
    };
    // Loopback gateways are refused unless the configuration allows them.
    let (status, body) = set(&bob, pusher("k", &url, None)).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let public = "https://push.example.org/_matrix/push/v1/notify";
    let cases = [
        (json!({ "kind": "http" }), "M_MISSING_PARAM"),
        (
            {
                let mut p = pusher("k", public, None);
                p["kind"] = json!("email");
                p
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                let mut p = pusher("k", public, None);
                p["kind"] = json!(5);
                p
            },
            "M_BAD_JSON",
        ),
        (
            pusher("k", "https://push.example.org/elsewhere", None),
            "M_INVALID_PARAM",
        ),
        (pusher("k", "not a url", None), "M_INVALID_PARAM"),
        (pusher("k", public, Some("full")), "M_INVALID_PARAM"),
        (pusher(&"k".repeat(513), public, None), "M_INVALID_PARAM"),
        (
            {
                let mut p = pusher("k", public, None);
                p["app_id"] = json!("a".repeat(65));
                p
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                let mut p = pusher("k", public, None);
                p["data"] = json!([]);
                p
            },
            "M_BAD_JSON",
        ),
        (
            {
                let mut p = pusher("k", public, None);
                p["append"] = json!("yes");
                p
            },
            "M_BAD_JSON",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = set(&bob, body.clone()).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{body}: {answer}");
    }
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
    assert_eq!(list["pushers"], json!([]));

    // The same app and pushkey for another user replaces Bob's unless `append` is set.
    assert_eq!(set(&bob, pusher("shared", public, None)).await.0, 200);
    let mut appended = pusher("shared", public, None);
    appended["append"] = json!(true);
    assert_eq!(set(&carol, appended).await.0, 200);
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
    assert_eq!(list["pushers"].as_array().map(Vec::len), Some(1));
    assert_eq!(set(&carol, pusher("shared", public, None)).await.0, 200);
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&bob.token)).await;
    assert_eq!(list["pushers"], json!([]));

    // Logging out removes the device's pushers.
    let (_, list) = server
        .get(&format!("{V3}/pushers"), Some(&carol.token))
        .await;
    assert_eq!(list["pushers"].as_array().map(Vec::len), Some(1));
    let (status, _) = server
        .post(&format!("{V3}/logout"), Some(&carol.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, login) = server.login("carol", crate::common::PASSWORD).await;
    assert_eq!(status, 200);
    let token = crate::common::token(&login);
    let (_, list) = server.get(&format!("{V3}/pushers"), Some(&token)).await;
    assert_eq!(list["pushers"], json!([]));
}
