//! Spaces and room previews over raw HTTP: the space hierarchy (depth, suggested rooms,
//! pagination, rooms hidden from the requester), room summaries, and restricted joins through
//! space membership.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, user};

async fn put_state(
    server: &TestServer,
    u: &User,
    room: &str,
    kind: &str,
    key: &str,
    content: Value,
) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/{key}"),
            Some(&u.token),
            Some(content),
        )
        .await;
    assert_eq!(status, 200, "{kind}/{key}: {body}");
}

/// Links `child` under `space` with an `order` (and `suggested` when asked).
async fn add_child(
    server: &TestServer,
    u: &User,
    space: &str,
    child: &str,
    order: &str,
    suggested: bool,
) {
    let content = json!({ "via": ["localhost"], "order": order, "suggested": suggested });
    put_state(server, u, space, "m.space.child", child, content).await;
}

async fn create_space(server: &TestServer, u: &User, name: &str) -> String {
    create_room(
        server,
        u,
        json!({
            "preset": "public_chat",
            "name": name,
            "creation_content": { "type": "m.space" },
        }),
    )
    .await
}

async fn hierarchy(server: &TestServer, u: &User, space: &str, query: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{space}/hierarchy?{query}"),
            Some(&u.token),
        )
        .await
}

/// The room IDs of a hierarchy page.
fn room_ids(page: &Value) -> Vec<String> {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

fn find<'a>(page: &'a Value, room: &str) -> &'a Value {
    page["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["room_id"] == room)
        .unwrap_or_else(|| panic!("{room} in {page}"))
}

/// A space with two rooms, a subspace holding one room, a private room only Alice is in, a
/// remote room, and a child link without `via`.
struct Tree {
    space: String,
    a: String,
    b: String,
    sub: String,
    c: String,
    private: String,
}

async fn tree(server: &TestServer, alice: &User) -> Tree {
    let space = create_space(server, alice, "Space").await;
    let public = |name: &'static str| json!({ "preset": "public_chat", "name": name });
    let a = create_room(server, alice, public("A")).await;
    let b = create_room(server, alice, public("B")).await;
    let sub = create_space(server, alice, "Subspace").await;
    let c = create_room(server, alice, public("C")).await;
    let private = create_room(
        server,
        alice,
        json!({ "preset": "private_chat", "name": "Private" }),
    )
    .await;
    add_child(server, alice, &space, &a, "a", false).await;
    add_child(server, alice, &space, &b, "b", true).await;
    add_child(server, alice, &space, &sub, "c", false).await;
    add_child(server, alice, &space, &private, "d", false).await;
    add_child(
        server,
        alice,
        &space,
        "!remote:elsewhere.example",
        "e",
        false,
    )
    .await;
    // No via: not a child.
    put_state(
        server,
        alice,
        &space,
        "m.space.child",
        "!gone:localhost",
        json!({}),
    )
    .await;
    add_child(server, alice, &sub, &c, "a", false).await;
    // A loop back to the top.
    add_child(server, alice, &sub, &space, "b", false).await;
    Tree {
        space,
        a,
        b,
        sub,
        c,
        private,
    }
}

#[tokio::test]
async fn the_hierarchy_walks_the_space_tree_depth_first() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let t = tree(&server, &alice).await;

    // Bob is in none of the rooms: the public ones show, the private one does not.
    let (status, page) = hierarchy(&server, &bob, &t.space, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        room_ids(&page),
        vec![
            t.space.clone(),
            t.a.clone(),
            t.b.clone(),
            t.sub.clone(),
            t.c.clone()
        ]
    );
    assert!(page.get("next_batch").is_none());
    let top = find(&page, &t.space);
    assert_eq!(top["name"], "Space");
    assert_eq!(top["room_type"], "m.space");
    assert_eq!(top["join_rule"], "public");
    assert_eq!(top["num_joined_members"], 1);
    assert_eq!(top["world_readable"], false);
    assert_eq!(top["guest_can_join"], false);
    assert!(top["room_version"].is_string());
    let children = top["children_state"].as_array().expect("children_state");
    let keys: Vec<&str> = children
        .iter()
        .map(|c| c["state_key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        vec![
            t.a.as_str(),
            t.b.as_str(),
            t.sub.as_str(),
            t.private.as_str(),
            "!remote:elsewhere.example"
        ]
    );
    let first = &children[0];
    assert_eq!(first["type"], "m.space.child");
    assert_eq!(first["sender"], json!(alice.id));
    assert_eq!(first["content"]["via"], json!(["localhost"]));
    assert!(first["origin_server_ts"].as_u64().is_some_and(|ts| ts > 0));
    assert_eq!(find(&page, &t.a)["children_state"], json!([]));
    assert_eq!(find(&page, &t.a)["name"], "A");
    assert!(find(&page, &t.a).get("room_type").is_none());
    assert_eq!(
        find(&page, &t.sub)["children_state"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Alice is in the private room: she sees it.
    let (_, page) = hierarchy(&server, &alice, &t.space, "").await;
    assert_eq!(
        room_ids(&page),
        vec![
            t.space.clone(),
            t.a.clone(),
            t.b.clone(),
            t.sub.clone(),
            t.c.clone(),
            t.private.clone()
        ]
    );

    // max_depth: the subspace's room is one level too deep; at 0 only the root, childless.
    let (_, page) = hierarchy(&server, &bob, &t.space, "max_depth=1").await;
    assert_eq!(
        room_ids(&page),
        vec![t.space.clone(), t.a.clone(), t.b.clone(), t.sub.clone()]
    );
    assert_eq!(find(&page, &t.sub)["children_state"], json!([]));
    let (_, page) = hierarchy(&server, &bob, &t.space, "max_depth=0").await;
    assert_eq!(room_ids(&page), vec![t.space.clone()]);
    assert_eq!(page["rooms"][0]["children_state"], json!([]));

    // suggested_only: only the suggested child.
    let (_, page) = hierarchy(&server, &bob, &t.space, "suggested_only=true").await;
    assert_eq!(room_ids(&page), vec![t.space.clone(), t.b.clone()]);
    assert_eq!(
        page["rooms"][0]["children_state"].as_array().map(Vec::len),
        Some(1)
    );

    // The subspace as the root: the loop back to the top is walked once.
    let (_, page) = hierarchy(&server, &bob, &t.sub, "").await;
    assert_eq!(
        room_ids(&page),
        vec![
            t.sub.clone(),
            t.c.clone(),
            t.space.clone(),
            t.a.clone(),
            t.b.clone()
        ]
    );

    // A room that is not a space has no children.
    let (_, page) = hierarchy(&server, &bob, &t.a, "").await;
    assert_eq!(room_ids(&page), vec![t.a.clone()]);

    // Roots the requester may not preview, or that do not exist, are refused alike.
    let (status, body) = hierarchy(&server, &bob, &t.private, "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = hierarchy(&server, &bob, "!nonexistent:localhost", "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = hierarchy(&server, &bob, &t.space, "limit=0").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = hierarchy(&server, &bob, &t.space, "max_depth=-1").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, _) = server
        .get(
            &format!("/_matrix/client/v1/rooms/{}/hierarchy", t.space),
            None,
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn hierarchy_pages_cover_the_tree_once() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let t = tree(&server, &alice).await;
    let (_, whole) = hierarchy(&server, &alice, &t.space, "").await;
    let expected = room_ids(&whole);
    assert_eq!(expected.len(), 6);

    let mut walked = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..20 {
        let query = match &from {
            Some(token) => format!("limit=1&from={token}"),
            None => "limit=1".to_owned(),
        };
        let (status, page) = hierarchy(&server, &alice, &t.space, &query).await;
        assert_eq!(status, 200, "{page}");
        let ids = room_ids(&page);
        assert!(ids.len() <= 1, "{page}");
        walked.extend(ids);
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => {
                from = None;
                break;
            }
        }
    }
    assert!(from.is_none(), "pagination did not end");
    assert_eq!(walked, expected);

    // A token is only good for the request it was made for.
    let (_, page) = hierarchy(&server, &alice, &t.space, "limit=2").await;
    let token = page["next_batch"].as_str().expect("next_batch").to_owned();
    let (status, page) =
        hierarchy(&server, &alice, &t.space, &format!("limit=2&from={token}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page), expected[2..4].to_vec());
    // Retrying a page gives the same page.
    let (_, again) = hierarchy(&server, &alice, &t.space, &format!("limit=2&from={token}")).await;
    assert_eq!(room_ids(&again), expected[2..4].to_vec());
    for query in [
        format!("from={token}&max_depth=1"),
        format!("from={token}&suggested_only=true"),
        "from=bogus".to_owned(),
    ] {
        let (status, body) = hierarchy(&server, &alice, &t.space, &query).await;
        assert_eq!(
            (status, errcode(&body)),
            (400, "M_INVALID_PARAM"),
            "{query}"
        );
    }
    let (status, body) = hierarchy(&server, &alice, &t.sub, &format!("from={token}")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    // Another user's token is unknown to Bob.
    let (status, body) = hierarchy(&server, &bob, &t.space, &format!("from={token}")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

async fn summary(server: &TestServer, u: Option<&User>, room: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/room_summary/{room}"),
            u.map(|u| u.token.as_str()),
        )
        .await
}

#[tokio::test]
async fn room_summaries_show_what_the_requester_may_preview() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let public = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "name": "Lobby",
            "topic": "Say hello",
            "room_alias_name": "lobby",
        }),
    )
    .await;
    let private = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Secret",
            "initial_state": [{
                "type": "m.room.encryption",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" },
            }],
        }),
    )
    .await;

    // A joined room, private or not.
    let (status, body) = summary(&server, Some(&alice), &private).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], json!(private));
    assert_eq!(body["name"], "Secret");
    assert_eq!(body["membership"], "join");
    assert_eq!(body["join_rule"], "invite");
    assert_eq!(body["encryption"], "m.megolm.v1.aes-sha2");
    assert_eq!(body["num_joined_members"], 1);
    assert!(body["room_version"].is_string());
    assert!(body.get("children_state").is_none());

    // A public room the requester is not in, by ID and by alias, and without a token.
    let (status, body) = summary(&server, Some(&bob), &public).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["membership"], "leave");
    assert_eq!(body["topic"], "Say hello");
    assert_eq!(body["canonical_alias"], "#lobby:localhost");
    assert!(body.get("encryption").is_none());
    let (status, by_alias) = summary(&server, Some(&bob), "%23lobby:localhost").await;
    assert_eq!(status, 200, "{by_alias}");
    assert_eq!(by_alias, body);
    let (status, anonymous) = summary(&server, None, &public).await;
    assert_eq!(status, 200, "{anonymous}");
    assert!(anonymous.get("membership").is_none());
    assert_eq!(anonymous["name"], "Lobby");
    // The path of the issue answers the same.
    let (status, same) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{public}/summary"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{same}");
    assert_eq!(same, body);
    let (status, _) = summary(&server, Some(&bob), &format!("{public}?via=localhost")).await;
    assert_eq!(status, 200);

    // A private room Bob is not in reads as if it did not exist.
    for who in [Some(&bob), None] {
        let (status, body) = summary(&server, who, &private).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    }
    let (status, body) = summary(&server, Some(&bob), "!nonexistent:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = summary(&server, Some(&bob), "%23nonexistent:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = summary(&server, Some(&bob), "not-a-room").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = summary(&server, Some(&bob), &format!("{public}?via=bad%20server")).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    // Invited: Bob sees the private room and his membership in it.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{private}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = summary(&server, Some(&bob), &private).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["membership"], "invite");

    // Knockable rooms can be previewed by anyone.
    let knock = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
        }),
    )
    .await;
    let (status, body) = summary(&server, None, &knock).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["join_rule"], "knock");
}

#[tokio::test]
async fn members_of_a_space_join_its_restricted_rooms() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let space = create_space(&server, &alice, "Team").await;
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Team chat",
            "initial_state": [
                {
                    "type": "m.room.join_rules",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": space }],
                    },
                },
                {
                    "type": "m.space.parent",
                    "state_key": space,
                    "content": { "via": ["localhost"], "canonical": true },
                },
            ],
        }),
    )
    .await;
    add_child(&server, &alice, &space, &room, "a", false).await;

    // Outside the space: the room is hidden and closed.
    let (_, page) = hierarchy(&server, &carol, &space, "").await;
    assert_eq!(room_ids(&page), vec![space.clone()]);
    let (status, body) = summary(&server, Some(&carol), &room).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = join(&server, &carol, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    // Inside the space: visible, with the allowed rooms, and open.
    assert_eq!(join(&server, &bob, &space).await.0, 200);
    let (_, page) = hierarchy(&server, &bob, &space, "").await;
    assert_eq!(room_ids(&page), vec![space.clone(), room.clone()]);
    let chunk = find(&page, &room);
    assert_eq!(chunk["join_rule"], "restricted");
    assert_eq!(chunk["allowed_room_ids"], json!([space]));
    let (status, body) = summary(&server, Some(&bob), &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed_room_ids"], json!([space]));
    let (status, body) = join(&server, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = summary(&server, Some(&bob), &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["membership"], &body["num_joined_members"]),
        (&json!("join"), &json!(2))
    );

    // The parent link is ordinary state of the room.
    let (status, parent) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.space.parent/{space}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{parent}");
    assert_eq!(parent["canonical"], true);

    // Carol joins the space later: now she may join too.
    assert_eq!(join(&server, &carol, &space).await.0, 200);
    let (status, body) = join(&server, &carol, &room).await;
    assert_eq!(status, 200, "{body}");
}
