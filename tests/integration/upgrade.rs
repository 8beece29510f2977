//! Room upgrades, knocking and restricted joins over raw HTTP.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, user};

async fn upgrade(server: &TestServer, u: &User, room: &str, body: Value) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/upgrade"),
            Some(&u.token),
            body,
        )
        .await
}

async fn knock(server: &TestServer, u: &User, room: &str) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/knock/{room}"),
            Some(&u.token),
            json!({ "reason": "let me in" }),
        )
        .await
}

async fn invite(server: &TestServer, by: &User, room: &str, target: &User) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&by.token),
            json!({ "user_id": target.id }),
        )
        .await
}

/// The content of a state event (`kind` may end in `/{state_key}`), or the error.
async fn state(server: &TestServer, u: &User, room: &str, kind: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
            Some(&u.token),
        )
        .await
}

async fn put_state(server: &TestServer, u: &User, room: &str, kind: &str, content: Value) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}"),
            Some(&u.token),
            Some(content),
        )
        .await;
    assert_eq!(status, 200, "{kind}: {body}");
}

async fn joined_rooms(server: &TestServer, u: &User) -> Vec<Value> {
    let (status, body) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&u.token))
        .await;
    assert_eq!(status, 200);
    body["joined_rooms"].as_array().unwrap().clone()
}

async fn membership(server: &TestServer, by: &User, room: &str, of: &User) -> Value {
    let (_, content) = state(server, by, room, &format!("m.room.member/{}", of.id)).await;
    content["membership"].clone()
}

#[tokio::test]
async fn upgrade_keeps_state_and_links_the_rooms() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    for version in ["10", "11"] {
        let old = create_room(
            &server,
            &alice,
            json!({
                "room_version": version,
                "preset": "public_chat",
                "name": "Old name",
                "topic": "Old topic",
            }),
        )
        .await;
        for u in [&bob, &carol] {
            assert_eq!(join(&server, u, &old).await.0, 200);
        }
        let (_, mut levels) = state(&server, &alice, &old, "m.room.power_levels").await;
        levels["users"][&bob.id] = json!(50);
        put_state(&server, &alice, &old, "m.room.power_levels", levels.clone()).await;
        put_state(
            &server,
            &alice,
            &old,
            "m.room.join_rules",
            json!({ "join_rule": "knock" }),
        )
        .await;

        let (status, body) = upgrade(&server, &alice, &old, json!({ "new_version": "12" })).await;
        assert_eq!(status, 200, "v{version}: {body}");
        let new = body["replacement_room"].as_str().unwrap().to_owned();
        assert_ne!(new, old);
        assert!(joined_rooms(&server, &alice).await.contains(&json!(new)));

        // The old room points to the new one and is closed to ordinary members.
        let (status, tombstone) = state(&server, &alice, &old, "m.room.tombstone").await;
        assert_eq!(status, 200, "{tombstone}");
        assert_eq!(tombstone["replacement_room"], json!(new));
        assert!(tombstone["body"].is_string());
        let (_, closed) = state(&server, &alice, &old, "m.room.power_levels").await;
        assert_eq!(
            (&closed["events_default"], &closed["invite"]),
            (&json!(50), &json!(50))
        );
        let (status, body) = send_text(&server, &carol, &old, "late", "hello").await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

        // The new room names its predecessor and keeps name, topic, join rules and power.
        let (_, create_content) = state(&server, &alice, &new, "m.room.create").await;
        assert_eq!(create_content["predecessor"]["room_id"], json!(old));
        assert!(create_content["predecessor"]["event_id"].is_string());
        assert_eq!(create_content["room_version"], "12");
        let (_, name) = state(&server, &alice, &new, "m.room.name").await;
        assert_eq!(name["name"], "Old name");
        let (_, topic) = state(&server, &alice, &new, "m.room.topic").await;
        assert_eq!(topic["topic"], "Old topic");
        let (_, rules) = state(&server, &alice, &new, "m.room.join_rules").await;
        assert_eq!(rules["join_rule"], "knock");
        let (_, new_levels) = state(&server, &alice, &new, "m.room.power_levels").await;
        assert_eq!(
            new_levels["users"],
            json!({ &bob.id: 50 }),
            "a v12 creator is not listed"
        );
        assert_eq!(new_levels["events"], levels["events"]);
        assert_eq!(new_levels["state_default"], levels["state_default"]);

        // Members follow by knocking (the copied join rule); Bob keeps his power there.
        assert_eq!(knock(&server, &bob, &new).await.0, 200);
        assert_eq!(invite(&server, &alice, &new, &bob).await.0, 200);
        assert_eq!(join(&server, &bob, &new).await.0, 200);
        put_state(
            &server,
            &bob,
            &new,
            "m.room.name",
            json!({ "name": "By Bob" }),
        )
        .await;
    }
}

#[tokio::test]
async fn upgrade_options_and_a_moderator_upgrading() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;

    // A v12 room upgraded with an additional creator, who is then not listed in `users`.
    let old = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &old).await.0, 200);
    let (_, mut levels) = state(&server, &alice, &old, "m.room.power_levels").await;
    levels["users"][&bob.id] = json!(50);
    put_state(&server, &alice, &old, "m.room.power_levels", levels).await;
    let body = json!({ "new_version": "12", "additional_creators": [bob.id, bob.id, alice.id] });
    let (status, body) = upgrade(&server, &alice, &old, body).await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap();
    let (_, create_content) = state(&server, &alice, new, "m.room.create").await;
    assert_eq!(create_content["additional_creators"], json!([bob.id]));
    let (_, new_levels) = state(&server, &alice, new, "m.room.power_levels").await;
    assert_eq!(new_levels["users"], json!({}));

    // A moderator (50) allowed to send tombstones upgrades a v11 room to v11: their level is
    // kept although the copied state needs 100, and they cannot close the old room.
    let old = create_room(
        &server,
        &alice,
        json!({
            "room_version": "11",
            "preset": "public_chat",
            "name": "Moderated",
            "power_level_content_override": {
                "users": { &alice.id: 100, &bob.id: 50 },
                "events": { "m.room.tombstone": 50, "m.room.power_levels": 100 },
            },
        }),
    )
    .await;
    assert_eq!(join(&server, &bob, &old).await.0, 200);
    let (status, body) = upgrade(&server, &bob, &old, json!({ "new_version": "11" })).await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap();
    let (_, new_levels) = state(&server, &bob, new, "m.room.power_levels").await;
    assert_eq!(new_levels["users"], json!({ &alice.id: 100, &bob.id: 50 }));
    let (_, name) = state(&server, &bob, new, "m.room.name").await;
    assert_eq!(name["name"], "Moderated");
    let (_, create) = state(&server, &bob, new, "m.room.create?format=event").await;
    assert_eq!(create["sender"], json!(bob.id));
    assert_eq!(create["content"]["room_version"], "11");
    let (_, old_levels) = state(&server, &bob, &old, "m.room.power_levels").await;
    assert_eq!(old_levels["events_default"], json!(0));
    let (_, tombstone) = state(&server, &bob, &old, "m.room.tombstone").await;
    assert_eq!(tombstone["replacement_room"], json!(new));
}

#[tokio::test]
async fn refused_upgrades_change_nothing() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let eve = user(&server, "eve").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "room_version": "11", "preset": "public_chat" }),
    )
    .await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let before = (
        joined_rooms(&server, &alice).await,
        joined_rooms(&server, &bob).await,
    );

    // A member without power, and an outsider.
    let (status, body) = upgrade(&server, &bob, &room, json!({ "new_version": "12" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = upgrade(&server, &eve, &room, json!({ "new_version": "12" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Versions we do not speak, malformed bodies, unknown and malformed rooms.
    for version in ["9", "1", "nope"] {
        let (status, body) =
            upgrade(&server, &alice, &room, json!({ "new_version": version })).await;
        assert_eq!(
            (status, errcode(&body)),
            (400, "M_UNSUPPORTED_ROOM_VERSION"),
            "{version}"
        );
    }
    let (status, body) = upgrade(&server, &alice, &room, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let body = json!({ "new_version": "12", "additional_creators": ["not a user"] });
    let (status, body) = upgrade(&server, &alice, &room, body).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let body = json!({ "new_version": "12" });
    let (status, _) = upgrade(&server, &alice, "!nope:localhost", body.clone()).await;
    assert_eq!(status, 404);
    let (status, _) = upgrade(&server, &alice, "nope", body).await;
    assert_eq!(status, 400);

    let after = (
        joined_rooms(&server, &alice).await,
        joined_rooms(&server, &bob).await,
    );
    assert_eq!(before, after, "no room was created");
    let (status, _) = state(&server, &alice, &room, "m.room.tombstone").await;
    assert_eq!(status, 404, "no tombstone was sent");
}

#[tokio::test]
async fn knock_then_invite_then_join() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    for version in ["10", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({
                "room_version": version,
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "content": { "join_rule": "knock" },
                }],
            }),
        )
        .await;
        let (status, body) = knock(&server, &bob, &room).await;
        assert_eq!(status, 200, "v{version}: {body}");
        assert_eq!(body["room_id"], json!(room));
        let (_, member) = state(&server, &alice, &room, &format!("m.room.member/{}", bob.id)).await;
        assert_eq!(
            (&member["membership"], &member["reason"]),
            (&json!("knock"), &json!("let me in"))
        );
        // A knock is no invite: joining still needs one.
        let (status, body) = join(&server, &bob, &room).await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
        assert_eq!(invite(&server, &alice, &room, &bob).await.0, 200);
        assert_eq!(join(&server, &bob, &room).await.0, 200);
        // Members cannot knock.
        let (status, body) = knock(&server, &bob, &room).await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
        assert_eq!(membership(&server, &alice, &room, &bob).await, "join");
    }

    // Invite-only rooms refuse knocks and nothing changes.
    let room = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    let (status, body) = knock(&server, &carol, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, _) = state(
        &server,
        &alice,
        &room,
        &format!("m.room.member/{}", carol.id),
    )
    .await;
    assert_eq!(status, 404);
    // Unknown rooms and aliases, malformed room IDs.
    let (status, body) = knock(&server, &carol, "!nope:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = knock(&server, &carol, "%23nope:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, _) = knock(&server, &carol, "nope").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_allowed_rooms() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let space = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &space).await.0, 200);
    let allow = json!([{ "type": "m.room_membership", "room_id": space }]);
    let rules = |rule: &str| {
        json!([{
            "type": "m.room.join_rules",
            "content": { "join_rule": rule, "allow": allow },
        }])
    };

    for version in ["10", "11", "12"] {
        let room = create_room(
            &server,
            &alice,
            json!({ "room_version": version, "initial_state": rules("restricted") }),
        )
        .await;
        let (status, body) = join(&server, &bob, &room).await;
        assert_eq!(status, 200, "v{version}: {body}");
        let (_, member) = state(&server, &bob, &room, &format!("m.room.member/{}", bob.id)).await;
        assert_eq!(member["join_authorised_via_users_server"], json!(alice.id));
        let (status, body) = join(&server, &carol, &room).await;
        assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "v{version}");
        assert_eq!(
            membership(&server, &alice, &room, &carol).await,
            Value::Null
        );
    }

    // knock_restricted: members of the allowed room join, others may knock.
    let room = create_room(
        &server,
        &alice,
        json!({ "initial_state": rules("knock_restricted") }),
    )
    .await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let (status, body) = join(&server, &carol, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert_eq!(knock(&server, &carol, &room).await.0, 200);
    // An invite needs no allow condition.
    assert_eq!(invite(&server, &alice, &room, &carol).await.0, 200);
    let (status, _) = join(&server, &carol, &room).await;
    assert_eq!(status, 200);
    let (_, member) = state(
        &server,
        &alice,
        &room,
        &format!("m.room.member/{}", carol.id),
    )
    .await;
    assert!(member.get("join_authorised_via_users_server").is_none());

    // Nobody in the room may invite: even members of the allowed room are refused.
    let room = create_room(
        &server,
        &alice,
        json!({
            "room_version": "11",
            "initial_state": rules("restricted"),
            "power_level_content_override": { "invite": 101 },
        }),
    )
    .await;
    let (status, body) = join(&server, &bob, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert_eq!(joined_rooms(&server, &carol).await.len(), 1);
}

#[tokio::test]
async fn upgrade_moves_aliases_and_the_directory_entry() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let old = create_room(
        &server,
        &alice,
        json!({ "room_alias_name": "lounge", "visibility": "public", "room_version": "11" }),
    )
    .await;
    let (status, body) = upgrade(&server, &alice, &old, json!({ "new_version": "12" })).await;
    assert_eq!(status, 200, "{body}");
    let new = body["replacement_room"].as_str().unwrap().to_owned();
    let (status, resolved) = server
        .get(
            "/_matrix/client/v3/directory/room/%23lounge:localhost",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resolved["room_id"], new.as_str());
    let (_, canonical) = state(&server, &alice, &new, "m.room.canonical_alias").await;
    assert_eq!(canonical["alias"], "#lounge:localhost");
    let (_, listed) = server.get("/_matrix/client/v3/publicRooms", None).await;
    let rooms: Vec<&str> = listed["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, vec![new.as_str()]);
}
