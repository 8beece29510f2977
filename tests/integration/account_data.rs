//! Client config (account data), room tags and ignored users over raw HTTP, and the service API
//! the sync engine reads them through.

use reqwest::Method;
use roost::storage::stream;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, user};

fn global_path(user: &str, kind: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/account_data/{kind}")
}

fn room_path(user: &str, room: &str, kind: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/rooms/{room}/account_data/{kind}")
}

fn tags_path(user: &str, room: &str) -> String {
    format!("/_matrix/client/v3/user/{user}/rooms/{room}/tags")
}

async fn put(server: &TestServer, u: &User, path: &str, body: Value) -> (u16, Value) {
    server
        .call(Method::PUT, path, Some(&u.token), Some(body))
        .await
}

/// A PUT that must succeed.
async fn put_ok(server: &TestServer, u: &User, path: &str, body: Value) {
    let (status, resp) = put(server, u, path, body).await;
    assert_eq!(status, 200, "{path}: {resp}");
}

async fn delete(server: &TestServer, u: &User, path: &str) -> (u16, Value) {
    server
        .call(Method::DELETE, path, Some(&u.token), None)
        .await
}

/// Sends a raw body (for bodies that are not JSON objects).
async fn put_raw(server: &TestServer, u: &User, path: &str, body: &str) -> (u16, Value) {
    let resp = server
        .http
        .put(server.url(path))
        .bearer_auth(&u.token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn services(server: &TestServer) -> std::sync::Arc<roost::service::Services> {
    server.server.as_ref().expect("running").services()
}

fn position(server: &TestServer) -> u64 {
    stream::current(&services(server).store).expect("stream position")
}

#[tokio::test]
async fn global_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let path = global_path(&alice.id, "org.example.config");

    let (status, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    let (status, body) = put(&server, &alice, &path, json!({ "theme": "dark" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({}));
    let (status, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!((status, body), (200, json!({ "theme": "dark" })));

    // Overwrite replaces the whole content.
    let (status, _) = put(&server, &alice, &path, json!({ "font": 12 })).await;
    assert_eq!(status, 200);
    let (_, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({ "font": 12 }));

    // Only the user themself.
    let (status, body) = server.get(&path, Some(&bob.token)).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = put(&server, &bob, &path, json!({ "theme": "x" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, _) = server.get(&path, None).await;
    assert_eq!(status, 401);

    // Invalid user IDs.
    let bad = global_path("not-a-user", "org.example.config");
    let (status, body) = server.get(&bad, Some(&alice.token)).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put(&server, &alice, &bad, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    // The content must be a JSON object, of at most 64 KiB.
    for raw in ["[1, 2]", "\"text\"", "12"] {
        let (status, body) = put_raw(&server, &alice, &path, raw).await;
        assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{raw}");
    }
    let (status, body) = put_raw(&server, &alice, &path, "{not json").await;
    assert_eq!((status, errcode(&body)), (400, "M_NOT_JSON"));
    let big = json!({ "blob": "x".repeat(70_000) });
    let (status, body) = put(&server, &alice, &path, big).await;
    assert_eq!((status, errcode(&body)), (413, "M_TOO_LARGE"));
    // Failed writes changed nothing.
    let (_, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({ "font": 12 }));

    // Types the server manages are readable but cannot be set here.
    for kind in ["m.push_rules", "m.fully_read"] {
        let (status, body) = put(&server, &alice, &global_path(&alice.id, kind), json!({})).await;
        assert_eq!((status, errcode(&body)), (405, "M_BAD_JSON"), "{kind}");
    }
    // The push rules read as account data are the rules in force (the defaults here).
    let (status, body) = server
        .get(&global_path(&alice.id, "m.push_rules"), Some(&alice.token))
        .await;
    assert_eq!(status, 200);
    assert!(body["global"]["override"].is_array(), "{body}");
}

#[tokio::test]
async fn room_account_data_round_trip() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let path = room_path(&alice.id, &room, "org.example.room");

    let (status, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = put(&server, &alice, &path, json!({ "pinned": true })).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!((status, body), (200, json!({ "pinned": true })));
    let (_, _) = put(&server, &alice, &path, json!({ "pinned": false })).await;
    let (_, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({ "pinned": false }));

    // No inheritance between room and global account data.
    let (status, _) = server
        .get(
            &global_path(&alice.id, "org.example.room"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 404);

    let (status, body) = server.get(&path, Some(&bob.token)).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = put(&server, &bob, &path, json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    let bad = room_path(&alice.id, "not-a-room", "org.example.room");
    let (status, body) = server.get(&bad, Some(&alice.token)).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put(&server, &alice, &bad, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let unknown = room_path(&alice.id, "!nowhere:localhost", "org.example.room");
    let (status, body) = put(&server, &alice, &unknown, json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    let (status, body) = put_raw(&server, &alice, &path, "[]").await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = put(
        &server,
        &alice,
        &room_path(&alice.id, &room, "m.fully_read"),
        json!({ "event_id": "$x" }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (405, "M_BAD_JSON"));
    let (_, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(body, json!({ "pinned": false }));
}

#[tokio::test]
async fn tags_put_list_delete() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let tags = tags_path(&alice.id, &room);
    let tag = |name: &str| format!("{tags}/{name}");

    let (status, body) = server.get(&tags, Some(&alice.token)).await;
    assert_eq!((status, body), (200, json!({ "tags": {} })));

    let (status, body) = put(&server, &alice, &tag("u.work"), json!({ "order": 0.5 })).await;
    assert_eq!((status, body), (200, json!({})));
    let (status, _) = put(&server, &alice, &tag("m.favourite"), json!({})).await;
    assert_eq!(status, 200);
    let (_, body) = server.get(&tags, Some(&alice.token)).await;
    assert_eq!(
        body,
        json!({ "tags": { "u.work": { "order": 0.5 }, "m.favourite": {} } })
    );
    // Tags are the room account data type m.tag.
    let (_, body) = server
        .get(&room_path(&alice.id, &room, "m.tag"), Some(&alice.token))
        .await;
    assert_eq!(body["tags"]["u.work"]["order"], json!(0.5));

    // Order in 0..=1, a number; names up to 255 bytes.
    let before = position(&server);
    let (status, body) = put(&server, &alice, &tag("u.work"), json!({ "order": 1.5 })).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put(&server, &alice, &tag("u.work"), json!({ "order": -1 })).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put(&server, &alice, &tag("u.work"), json!({ "order": "1" })).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = put(&server, &alice, &tag(&"t".repeat(256)), json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put_raw(&server, &alice, &tag("u.work"), "[]").await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = put(&server, &bob, &tag("u.work"), json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = server.get(&tags, Some(&bob.token)).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = server
        .get(&tags_path(&alice.id, "bad"), Some(&alice.token))
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .get(
            &tags_path(&alice.id, "!nowhere:localhost"),
            Some(&alice.token),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    // Nothing changed, not even the stream position.
    assert_eq!(position(&server), before);
    let (_, body) = server.get(&tags, Some(&alice.token)).await;
    assert_eq!(body["tags"]["u.work"], json!({ "order": 0.5 }));

    // Replacing a tag and deleting one.
    let (status, _) = put(&server, &alice, &tag("u.work"), json!({ "order": 0 })).await;
    assert_eq!(status, 200);
    let (status, body) = delete(&server, &alice, &tag("m.favourite")).await;
    assert_eq!((status, body), (200, json!({})));
    let (_, body) = server.get(&tags, Some(&alice.token)).await;
    assert_eq!(body, json!({ "tags": { "u.work": { "order": 0 } } }));
    // Deleting a tag that is not there succeeds and writes nothing.
    let before = position(&server);
    let (status, _) = delete(&server, &alice, &tag("u.absent")).await;
    assert_eq!(status, 200);
    assert_eq!(position(&server), before);
    let (status, body) = delete(&server, &bob, &tag("u.work")).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
}

#[tokio::test]
async fn ignored_users_through_the_service() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let path = global_path(&alice.id, "m.ignored_user_list");
    let alice_id = OwnedUserId::try_from(alice.id.as_str()).unwrap();
    let running = services(&server);
    let account_data = &running.account_data;
    assert!(account_data.ignored_users(&alice_id).unwrap().is_empty());

    let list = json!({ "ignored_users": { "@bob:localhost": {}, "@eve:other.example": {} } });
    let (status, body) = put(&server, &alice, &path, list.clone()).await;
    assert_eq!(status, 200, "{body}");
    let ignored = account_data.ignored_users(&alice_id).unwrap();
    let expected: std::collections::HashSet<OwnedUserId> = ["@bob:localhost", "@eve:other.example"]
        .into_iter()
        .map(|u| OwnedUserId::try_from(u).unwrap())
        .collect();
    assert_eq!(ignored, expected);
    let (_, body) = server.get(&path, Some(&alice.token)).await;
    assert_eq!(body, list);

    // A malformed list is refused and the stored one stays.
    for bad in [
        json!({ "ignored_users": { "bob": {} } }),
        json!({ "ignored_users": ["@bob:localhost"] }),
        json!({ "ignored_users": { "@bob:localhost": true } }),
    ] {
        let (status, body) = put(&server, &alice, &path, bad.clone()).await;
        assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"), "{bad}");
    }
    assert_eq!(account_data.ignored_users(&alice_id).unwrap(), expected);

    // Un-ignoring everyone.
    let (status, _) = put(&server, &alice, &path, json!({ "ignored_users": {} })).await;
    assert_eq!(status, 200);
    assert!(account_data.ignored_users(&alice_id).unwrap().is_empty());
}

#[tokio::test]
async fn changes_since_a_position() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({})).await;
    let other_room = create_room(&server, &alice, json!({})).await;
    let alice_id = OwnedUserId::try_from(alice.id.as_str()).unwrap();
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let other_id = OwnedRoomId::try_from(other_room.as_str()).unwrap();
    let running = services(&server);
    let account_data = &running.account_data;

    put_ok(
        &server,
        &alice,
        &global_path(&alice.id, "a.one"),
        json!({ "v": 1 }),
    )
    .await;
    put_ok(
        &server,
        &alice,
        &global_path(&alice.id, "a.two"),
        json!({ "v": 1 }),
    )
    .await;
    put_ok(
        &server,
        &alice,
        &room_path(&alice.id, &room, "r.one"),
        json!({ "v": 1 }),
    )
    .await;
    put_ok(
        &server,
        &bob,
        &global_path(&bob.id, "b.one"),
        json!({ "v": 1 }),
    )
    .await;
    let start = position(&server);

    // Everything, for an initial sync; never another user's data.
    let all = account_data.changes_since(&alice_id, None).unwrap();
    assert_eq!(
        all.global,
        vec![
            json!({ "type": "a.one", "content": { "v": 1 } }),
            json!({ "type": "a.two", "content": { "v": 1 } }),
        ]
    );
    assert_eq!(
        all.rooms.get(&room_id),
        Some(&vec![json!({ "type": "r.one", "content": { "v": 1 } })])
    );
    assert_eq!(all.rooms.len(), 1);
    let none = account_data.changes_since(&alice_id, Some(start)).unwrap();
    assert!(none.global.is_empty() && none.rooms.is_empty(), "{none:?}");

    // A waiting request of alice's is woken by her writes.
    let mut waiter = services(&server).notifier.subscribe(&alice_id);
    put_ok(
        &server,
        &alice,
        &global_path(&alice.id, "a.one"),
        json!({ "v": 2 }),
    )
    .await;
    assert!(*waiter.borrow_and_update() > start);
    put_ok(
        &server,
        &alice,
        &global_path(&alice.id, "a.one"),
        json!({ "v": 3 }),
    )
    .await;
    put_ok(
        &server,
        &alice,
        &format!("{}/u.work", tags_path(&alice.id, &other_room)),
        json!({}),
    )
    .await;
    put_ok(
        &server,
        &bob,
        &global_path(&bob.id, "b.one"),
        json!({ "v": 2 }),
    )
    .await;
    let end = position(&server);
    assert!(end > start);

    // Only what changed after `start`, each type once with its latest content.
    let changes = account_data.changes_since(&alice_id, Some(start)).unwrap();
    assert_eq!(
        changes.global,
        vec![json!({ "type": "a.one", "content": { "v": 3 } })]
    );
    assert_eq!(changes.rooms.len(), 1, "{changes:?}");
    assert_eq!(
        changes.rooms.get(&other_id),
        Some(&vec![
            json!({ "type": "m.tag", "content": { "tags": { "u.work": {} } } })
        ])
    );
    let later = account_data.changes_since(&alice_id, Some(end)).unwrap();
    assert!(later.global.is_empty() && later.rooms.is_empty());
    let bobs = account_data
        .changes_since(
            &OwnedUserId::try_from(bob.id.as_str()).unwrap(),
            Some(start),
        )
        .unwrap();
    assert_eq!(
        bobs.global,
        vec![json!({ "type": "b.one", "content": { "v": 2 } })]
    );
}
