//! Rooms over raw HTTP: creation, membership, sending, reading, power levels, redaction.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, user};

async fn messages(server: &TestServer, u: &User, room: &str, query: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?{query}"),
            Some(&u.token),
        )
        .await
}

async fn kick(server: &TestServer, room: &str, by: &User, target: &User) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&by.token),
            json!({ "user_id": target.id, "reason": "bye" }),
        )
        .await
}

async fn redact(server: &TestServer, room: &str, event: &str, u: &User, txn: &str) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/redact/{event}/{txn}"),
            Some(&u.token),
            Some(json!({ "reason": "oops" })),
        )
        .await
}

fn bodies(chunk: &Value) -> Vec<String> {
    chunk["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[tokio::test]
async fn create_send_and_paginate() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    for version in ["10", "11", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({ "room_version": version, "name": "Room" }),
        )
        .await;
        let (status, name) = server
            .get(
                &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
                Some(&alice.token),
            )
            .await;
        assert_eq!(
            (status, name["name"].as_str()),
            (200, Some("Room")),
            "v{version}"
        );
    }
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "room_version": "9" }),
        )
        .await;
    assert_eq!(
        (status, errcode(&body)),
        (400, "M_UNSUPPORTED_ROOM_VERSION")
    );

    let room = create_room(&server, &alice, json!({ "topic": "chat" })).await;
    assert!(!room.contains(':'), "v12 room IDs are hashes: {room}");
    let (_, joined) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice.token))
        .await;
    assert_eq!(joined["joined_rooms"].as_array().unwrap().len(), 4);

    for i in 0..25 {
        let (status, _) =
            send_text(&server, &alice, &room, &format!("t{i}"), &format!("m{i}")).await;
        assert_eq!(status, 200);
    }
    // The same transaction ID gives the same event and creates nothing.
    let (_, first) = send_text(&server, &alice, &room, "t3", "m3").await;
    let (_, again) = send_text(&server, &alice, &room, "t3", "m3").await;
    assert_eq!(first["event_id"], again["event_id"]);

    // Backwards from the end, 10 at a time, newest first; then forwards.
    let mut seen = Vec::new();
    let mut query = "dir=b&limit=10".to_owned();
    for _ in 0..10 {
        let (status, page) = messages(&server, &alice, &room, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(bodies(&page));
        match page["end"].as_str() {
            Some(end) => query = format!("dir=b&limit=10&from={end}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
    let (_, page) = messages(&server, &alice, &room, "dir=f&limit=100").await;
    let forwards = bodies(&page);
    assert_eq!(forwards.first().map(String::as_str), Some("m0"));
    assert_eq!(forwards.len(), 25);
    let first_event = &page["chunk"][0];
    assert_eq!(first_event["type"], "m.room.create");
    // The sender's own device sees its transaction ID.
    let mine = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == "m0")
        .unwrap();
    assert_eq!(mine["unsigned"]["transaction_id"], "t0");

    let (status, body) = messages(&server, &alice, &room, "dir=x").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = messages(&server, &alice, &room, "dir=b&from=garbage").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn membership_and_power_are_enforced() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let eve = user(&server, "eve").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "preset": "private_chat", "invite": [bob.id] }),
    )
    .await;

    // Outsiders can neither send, read nor join an invite-only room.
    let (status, body) = send_text(&server, &eve, &room, "x", "hi").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, _) = messages(&server, &eve, &room, "dir=b").await;
    assert_eq!(status, 403);
    let (status, body) = join(&server, &eve, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    // The invitee joins and chats.
    let (status, _) = join(&server, &bob, &room).await;
    assert_eq!(status, 200);
    let (status, _) = send_text(&server, &bob, &room, "b1", "hello alice").await;
    assert_eq!(status, 200);
    let (_, members) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(members["joined"].as_object().unwrap().len(), 2);

    // Bob (power 0) cannot rename the room or kick; nothing changes.
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            Some(&bob.token),
            Some(json!({ "name": "bob's" })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = kick(&server, &room, &bob, &alice).await;
    assert_eq!(status, 403);

    // Alice kicks Bob: he can no longer send, and reads only up to his kick.
    let (status, _) = kick(&server, &room, &alice, &bob).await;
    assert_eq!(status, 200);
    let (status, _) = send_text(&server, &bob, &room, "b2", "still here?").await;
    assert_eq!(status, 403);
    let (status, _) = send_text(&server, &alice, &room, "a1", "after the kick").await;
    assert_eq!(status, 200);
    let (status, page) = messages(&server, &bob, &room, "dir=b&limit=50").await;
    assert_eq!(status, 200);
    let seen = bodies(&page);
    assert!(seen.contains(&"hello alice".to_owned()));
    assert!(!seen.contains(&"after the kick".to_owned()), "{seen:?}");

    // A ban keeps him out even when invited again; unban lets an invite work again.
    let ban = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(ban.0, 200);
    let (status, _) = join(&server, &bob, &room).await;
    assert_eq!(status, 403);
    let invite = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(invite.0, 403);
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/unban"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200);
    let invite = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(invite.0, 200);
    assert_eq!(join(&server, &bob, &room).await.0, 200);

    // Leaving works; unknown and malformed rooms are told apart.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .post(
            "/_matrix/client/v3/rooms/!nope:localhost/join",
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/rooms/not-a-room/join",
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn redaction_strips_content() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/join"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "public rooms can be joined");
    let (_, sent) = send_text(&server, &alice, &room, "a1", "secret").await;
    let event_id = sent["event_id"].as_str().unwrap().to_owned();

    // Bob may not redact Alice's message.
    let (status, body) = redact(&server, &room, &event_id, &bob, "r1").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = redact(&server, &room, &event_id, &alice, "r2").await;
    assert_eq!(status, 200, "{body}");

    let (status, event) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(event["content"], json!({}));
    assert_eq!(
        event["unsigned"]["redacted_because"]["content"]["reason"],
        "oops"
    );
    let (_, page) = messages(&server, &bob, &room, "dir=b&limit=5").await;
    let shown = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == event_id.as_str())
        .unwrap();
    assert_eq!(shown["content"], json!({}));
    assert!(!page.to_string().contains("secret"));
}

#[tokio::test]
async fn bad_events_are_refused() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let (status, body) = send_text(&server, &alice, &room, "big", &"x".repeat(70_000)).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.create"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "invite": ["@nobody:localhost"] }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=100").await;
    assert!(bodies(&page).is_empty(), "nothing was stored");
}

async fn ts(server: &TestServer, room: &str, u: &User, query: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?{query}"),
            Some(&u.token),
        )
        .await
}

async fn put_state(server: &TestServer, u: &User, room: &str, kind: &str, content: Value) -> u16 {
    server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
            Some(&u.token),
            Some(content),
        )
        .await
        .0
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn history_visibility_is_enforced_per_event() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;

    // joined: Bob sees only what was sent while he was joined.
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let hv = |v: &str| json!({ "history_visibility": v });
    assert_eq!(
        put_state(
            &server,
            &alice,
            &room,
            "m.room.history_visibility",
            hv("joined")
        )
        .await,
        200
    );
    send_text(&server, &alice, &room, "1", "before bob").await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    send_text(&server, &alice, &room, "2", "with bob").await;
    let (_, page) = messages(&server, &bob, &room, "dir=b&limit=50").await;
    assert_eq!(bodies(&page), vec!["with bob"]);
    // unsigned.membership is the reader's membership at each event.
    let with_bob = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == "with bob")
        .unwrap();
    assert_eq!(with_bob["unsigned"]["membership"], "join");
    // He leaves: later messages are hidden, earlier ones stay visible.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    send_text(&server, &alice, &room, "3", "after bob left").await;
    let (_, page) = messages(&server, &bob, &room, "dir=b&limit=50").await;
    assert_eq!(bodies(&page), vec!["with bob"]);
    // Strangers may not read a room that is not world-readable.
    let (status, _) = messages(&server, &carol, &room, "dir=b").await;
    assert_eq!(status, 403);

    // Forgetting: only after leaving, and then nothing is readable.
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_UNKNOWN"));
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/forget"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = messages(&server, &bob, &room, "dir=b").await;
    assert_eq!(status, 403);

    // shared: joining later reveals the earlier history.
    let shared = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    send_text(&server, &alice, &shared, "1", "early").await;
    assert_eq!(join(&server, &bob, &shared).await.0, 200);
    let (_, page) = messages(&server, &bob, &shared, "dir=b&limit=50").await;
    assert_eq!(bodies(&page), vec!["early"]);

    // invited: visible from the invite on.
    let invited = create_room(&server, &alice, json!({})).await;
    assert_eq!(
        put_state(
            &server,
            &alice,
            &invited,
            "m.room.history_visibility",
            hv("invited")
        )
        .await,
        200
    );
    send_text(&server, &alice, &invited, "1", "before the invite").await;
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{invited}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200);
    send_text(&server, &alice, &invited, "2", "while invited").await;
    assert_eq!(join(&server, &bob, &invited).await.0, 200);
    let (_, page) = messages(&server, &bob, &invited, "dir=f&limit=50").await;
    assert_eq!(bodies(&page), vec!["while invited"]);

    // world_readable: anyone can read without joining, but cannot send.
    let open = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(
        put_state(
            &server,
            &alice,
            &open,
            "m.room.history_visibility",
            hv("world_readable")
        )
        .await,
        200
    );
    let (_, sent) = send_text(&server, &alice, &open, "1", "for everyone").await;
    let (status, page) = messages(&server, &carol, &open, "dir=b&limit=50").await;
    assert_eq!(status, 200);
    assert_eq!(bodies(&page), vec!["for everyone"]);
    let (status, _) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{open}/event/{}",
                sent["event_id"].as_str().unwrap()
            ),
            Some(&carol.token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        send_text(&server, &carol, &open, "1", "me too").await.0,
        403
    );
}

#[tokio::test]
async fn context_timestamps_and_filters() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let mut ids = Vec::new();
    for i in 0..5 {
        let who = if i % 2 == 0 { &alice } else { &bob };
        let (_, sent) = send_text(&server, who, &room, &format!("t{i}"), &format!("m{i}")).await;
        ids.push(sent["event_id"].as_str().unwrap().to_owned());
    }

    let (status, ctx) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=2", ids[2]),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["event"]["content"]["body"], "m2");
    assert_eq!(ctx["events_before"][0]["content"]["body"], "m1");
    assert_eq!(ctx["events_after"][0]["content"]["body"], "m3");
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    // Paginating from the context's tokens continues on both sides.
    let (_, older) = messages(
        &server,
        &bob,
        &room,
        &format!("dir=b&limit=1&from={}", ctx["start"].as_str().unwrap()),
    )
    .await;
    assert_eq!(bodies(&older), vec!["m0"]);
    let (_, newer) = messages(
        &server,
        &bob,
        &room,
        &format!("dir=f&limit=1&from={}", ctx["end"].as_str().unwrap()),
    )
    .await;
    assert_eq!(bodies(&newer), vec!["m4"]);

    let (status, first) = ts(&server, &room, &bob, "ts=0&dir=f").await;
    assert_eq!(status, 200);
    let (_, create_event) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/event/{}",
                first["event_id"].as_str().unwrap()
            ),
            Some(&bob.token),
        )
        .await;
    assert_eq!(create_event["type"], "m.room.create");
    let (_, last) = ts(&server, &room, &bob, "ts=99999999999999&dir=b").await;
    assert_eq!(last["event_id"].as_str(), Some(ids[4].as_str()));
    let (status, _) = ts(&server, &room, &bob, "ts=0&dir=b").await;
    assert_eq!(status, 404);
    let (status, _) = ts(&server, &room, &bob, "ts=0&dir=x").await;
    assert_eq!(status, 400);

    // Filters: types and senders, and lazy-loaded members for exactly the senders shown.
    let filter = encode(
        &json!({ "types": ["m.room.message"], "senders": [bob.id], "lazy_load_members": true })
            .to_string(),
    );
    let (status, page) = messages(
        &server,
        &alice,
        &room,
        &format!("dir=b&limit=10&filter={filter}"),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(bodies(&page), vec!["m3", "m1"]);
    let members: Vec<&str> = page["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![bob.id.as_str()]);
    let (status, body) = messages(&server, &alice, &room, "dir=b&filter=%7Bnot").await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
}

/// Two events built by hand on the same prev event fork the DAG; the room's state is then the
/// state resolution of both branches, and the next local event merges them.
#[tokio::test]
async fn forks_are_resolved() {
    use roost::core::pdu::{EventTemplate, build_event};
    use ruma::events::TimelineEventType;
    use ruma::{MilliSecondsSinceUnixEpoch, OwnedRoomId, UInt, UserId};

    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let eve = user(&server, "eve").await;
    let room = create_room(&server, &alice, json!({ "name": "original" })).await;
    let services = server.server.as_ref().unwrap().services().clone();
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let info = services.rooms.info(&room_id).unwrap().unwrap();
    assert_eq!(info.extremities.len(), 1);
    let state = services.rooms.current_state(&room_id).unwrap();

    let fork = |sender: &str, kind: &str, state_key: Option<&str>, content: Value, ts: u64| {
        let mut template = EventTemplate {
            room_id: Some(room_id.clone()),
            sender: UserId::parse(sender).unwrap(),
            kind: TimelineEventType::from(kind),
            state_key: state_key.map(str::to_owned),
            content,
            prev_events: info.extremities.clone(),
            auth_events: Vec::new(),
            depth: UInt::try_from(info.depth + 1).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap()),
            redacts: None,
        };
        template.auth_events =
            roost::core::auth::select_auth_events(&info.room_version, &template, &state).unwrap();
        build_event(
            &info.room_version,
            template,
            ruma::server_name!("localhost"),
            &services.signing_key.pair,
        )
        .unwrap()
    };
    let name = |n: &str| json!({ "name": n });
    let early = fork(&alice.id, "m.room.name", Some(""), name("early"), 1_000);
    let late = fork(&alice.id, "m.room.name", Some(""), name("late"), 2_000);
    // The later one arrives first: the last write must not simply win.
    services.rooms.ingest(late.clone()).await.unwrap();
    services.rooms.ingest(early.clone()).await.unwrap();
    // Ingesting the same event twice changes nothing.
    services.rooms.ingest(early.clone()).await.unwrap();
    let info = services.rooms.info(&room_id).unwrap().unwrap();
    assert_eq!(info.extremities.len(), 2);

    // Same sender and power: the later timestamp wins.
    let current = |server: &TestServer| {
        let room = room.clone();
        let token = alice.token.clone();
        let server_base = server.base.clone();
        async move {
            reqwest::Client::new()
                .get(format!(
                    "{server_base}/_matrix/client/v3/rooms/{room}/state/m.room.name"
                ))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(current(&server).await["name"], "late");

    // An outsider's forked event fails the auth rules and changes nothing.
    let intruder = fork(
        &eve.id,
        "m.room.message",
        None,
        json!({ "body": "hi" }),
        3_000,
    );
    assert!(services.rooms.ingest(intruder).await.is_err());
    assert_eq!(
        services
            .rooms
            .info(&room_id)
            .unwrap()
            .unwrap()
            .extremities
            .len(),
        2
    );

    // The next local event follows both branches and merges them.
    let (status, sent) = send_text(&server, &alice, &room, "merge", "merged").await;
    assert_eq!(status, 200);
    let merged = services
        .rooms
        .pdu(&ruma::EventId::parse(sent["event_id"].as_str().unwrap()).unwrap())
        .unwrap()
        .unwrap();
    let mut prevs: Vec<String> = merged.prev_events().iter().map(|e| e.to_string()).collect();
    prevs.sort();
    let mut forks = vec![early.event_id().to_string(), late.event_id().to_string()];
    forks.sort();
    assert_eq!(prevs, forks);
    assert_eq!(
        services
            .rooms
            .info(&room_id)
            .unwrap()
            .unwrap()
            .extremities
            .len(),
        1
    );
    assert_eq!(current(&server).await["name"], "late");
    // Topologically, the two forks share a depth and the merge comes after both.
    let order = services.rooms.topological(&room_id, 0, 1000).unwrap();
    let depth_of = |id: &ruma::EventId| order.iter().find(|(_, e)| e == id).unwrap().0;
    assert_eq!(depth_of(early.event_id()), depth_of(late.event_id()));
    assert!(depth_of(merged.event_id()) > depth_of(late.event_id()));
    assert_eq!(
        order.first().map(|(d, _)| *d),
        Some(1),
        "the create event comes first"
    );
}

#[tokio::test]
async fn members_at_a_point_in_history() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (_, page) = messages(&server, &alice, &room, "dir=b&limit=1").await;
    let before_bob = page["start"].as_str().unwrap().to_owned();
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let count = |body: &Value| body["chunk"].as_array().unwrap().len();
    let (_, now) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(count(&now), 2);
    let (_, then) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/members?at={before_bob}"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(count(&then), 1, "{then}");
    let (_, joined) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/members?membership=join&not_membership=leave"
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(count(&joined), 2);
    // A member event's state key must be a user ID.
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/not-a-user"),
            Some(&alice.token),
            Some(json!({ "membership": "join" })),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn identical_rooms_created_at_once_get_their_own_ids() {
    // In room version 12 the room ID is the hash of the create event: identical requests in
    // the same millisecond must still make distinct rooms.
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let body = json!({ "room_version": "12", "preset": "private_chat" });
    let creates = (0..10).map(|_| {
        server.post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            body.clone(),
        )
    });
    let mut ids = std::collections::HashSet::new();
    for (status, reply) in futures_util::future::join_all(creates).await {
        assert_eq!(status, 200, "{reply}");
        ids.insert(reply["room_id"].as_str().expect("room_id").to_owned());
    }
    assert_eq!(ids.len(), 10, "{ids:?}");
    let (status, joined) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    assert_eq!(joined["joined_rooms"].as_array().map(Vec::len), Some(10));
}

#[tokio::test]
async fn profile_changes_reach_member_events_in_order() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    // Concurrent changes: the member event ends with the name the profile ends with.
    let mut changes = Vec::new();
    for i in 0..6 {
        let http = server.http.clone();
        let url = server.url(&format!(
            "/_matrix/client/v3/profile/{}/displayname",
            alice.id
        ));
        let token = alice.token.clone();
        changes.push(tokio::spawn(async move {
            http.put(url)
                .bearer_auth(token)
                .json(&json!({ "displayname": format!("Alice {i}") }))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for change in changes {
        assert_eq!(change.await.expect("task").expect("sent"), 200);
    }
    let (_, profile) = server
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
            Some(&alice.token),
        )
        .await;
    let (status, member) = server
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{room}/state/m.room.member/{}",
                alice.id
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["displayname"], profile["displayname"], "{member}");
    assert_eq!(member["membership"], "join");
}
