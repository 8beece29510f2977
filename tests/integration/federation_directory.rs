//! The client API across servers: a user of one server listing another server's published room
//! directory (`/publicRooms?server=`), walking a space whose rooms live on another server
//! (`/hierarchy`), and previewing such rooms (`/room_summary`).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, user};
use crate::federation_common::{FederatedPair, FederatedServer};

/// A loopback server name nobody listens on (federated test servers use `127.b.c.d` with `b` at
/// most 241).
const NOBODY: &str = "127.255.255.254";
/// Pages a paginating client asks for at most.
const MAX_PAGES: usize = 20;

/// A public room of `u`, published in the directory, of the given room version.
async fn public_room(
    server: &TestServer,
    u: &User,
    name: &str,
    version: &str,
    extra: Value,
) -> String {
    let mut body = json!({
        "preset": "public_chat",
        "visibility": "public",
        "name": name,
        "room_version": version,
    });
    if let (Some(fields), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        fields.extend(more.clone());
    }
    create_room(server, u, body).await
}

/// Joins `u` of `server` to `room` through `via`.
async fn join_via(server: &TestServer, u: &User, room: &str, via: &FederatedServer) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room}?via={}", via.name),
            Some(&u.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The room IDs of a directory or hierarchy page (`chunk` or `rooms`), in order.
fn room_ids(page: &Value, field: &str) -> Vec<String> {
    page[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {page}"))
        .iter()
        .map(|room| room["room_id"].as_str().expect("room_id").to_owned())
        .collect()
}

/// The entry of `room` in a page.
fn entry<'a>(page: &'a Value, field: &str, room: &str) -> &'a Value {
    page[field]
        .as_array()
        .and_then(|rooms| rooms.iter().find(|r| r["room_id"] == room))
        .unwrap_or_else(|| panic!("{room} in {page}"))
}

#[tokio::test]
async fn public_rooms_of_another_server() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let mut rooms = BTreeSet::new();
    for name in ["Lobby", "Garden", "Kitchen"] {
        rooms.insert(public_room(&pair.a, &alice, name, "12", json!({})).await);
    }
    let a = pair.a.name.as_str();

    // The whole directory, with the rooms' names.
    let (status, page) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={a}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let listed: BTreeSet<String> = room_ids(&page, "chunk").into_iter().collect();
    assert_eq!(listed, rooms);
    let names: BTreeSet<&str> = page["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|room| room["name"].as_str())
        .collect();
    assert_eq!(names, BTreeSet::from(["Garden", "Kitchen", "Lobby"]));
    assert_eq!(page["total_room_count_estimate"], 3);
    assert!(page.get("next_batch").is_none(), "{page}");

    // Filtered (POST, passed on as a POST).
    let (status, page) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={a}"),
            Some(&bob.token),
            json!({ "filter": { "generic_search_term": "GARD" } }),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["chunk"][0]["name"], "Garden", "{page}");

    // One room per page, following the other server's tokens, GET and POST alike.
    for post in [false, true] {
        let mut seen = Vec::new();
        let mut since: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (status, page) = if post {
                let mut body = json!({ "limit": 1 });
                if let Some(token) = &since {
                    body["since"] = json!(token);
                }
                pair.b
                    .post(
                        &format!("/_matrix/client/v3/publicRooms?server={a}"),
                        Some(&bob.token),
                        body,
                    )
                    .await
            } else {
                let mut path = format!("/_matrix/client/v3/publicRooms?server={a}&limit=1");
                if let Some(token) = &since {
                    path.push_str(&format!("&since={token}"));
                }
                pair.b.get(&path, Some(&bob.token)).await
            };
            assert_eq!(status, 200, "{page}");
            let ids = room_ids(&page, "chunk");
            assert_eq!(ids.len(), 1, "{page}");
            seen.extend(ids);
            if seen.len() > 1 {
                assert!(page["prev_batch"].is_string(), "{page}");
            }
            match page["next_batch"].as_str() {
                Some(next) => since = Some(next.to_owned()),
                None => break,
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), 3, "post {post}: {seen:?}");
        assert_eq!(unique, rooms);
    }

    // Our own name lists our own (empty) directory, as without `server`.
    let (status, page) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={}", pair.b.name),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["chunk"], json!([]));

    // Another server's directory is only fetched for users of ours.
    let (status, body) = pair
        .b
        .get(&format!("/_matrix/client/v3/publicRooms?server={a}"), None)
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"), "{body}");
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/publicRooms?server={a}"),
            Some("not-a-token"),
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
    // The other server's refusal is relayed.
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/publicRooms?server={a}"),
            Some(&bob.token),
            json!({ "since": "bogus" }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    // A server nobody answers for, and a name that is no server name.
    for path in [
        format!("/_matrix/client/v3/publicRooms?server={NOBODY}"),
        format!("/_matrix/client/v3/publicRooms?server={NOBODY}&limit=1"),
    ] {
        let (status, body) = pair.b.get(&path, Some(&bob.token)).await;
        assert_eq!(status, 502, "{body}");
    }
    let (status, body) = pair
        .b
        .get(
            "/_matrix/client/v3/publicRooms?server=bad%20name",
            Some(&bob.token),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
}

/// `/hierarchy` of `space` as `u` of `server` sees it.
async fn hierarchy(server: &TestServer, u: &User, space: &str, query: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v1/rooms/{space}/hierarchy?{query}"),
            Some(&u.token),
        )
        .await
}

#[tokio::test]
async fn spaces_with_rooms_of_another_server() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let a = pair.a.name.as_str();
    let lobby = public_room(&pair.a, &alice, "Lobby", "12", json!({})).await;
    let garden = public_room(&pair.a, &alice, "Garden", "12", json!({})).await;
    let secret = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "private_chat", "name": "Secret", "room_version": "12" }),
    )
    .await;
    let child = |room: &str, order: &str, suggested: bool| {
        json!({
            "type": "m.space.child",
            "state_key": room,
            "content": { "via": [a], "order": order, "suggested": suggested },
        })
    };
    let space = public_room(
        &pair.a,
        &alice,
        "Space",
        "12",
        json!({
            "creation_content": { "type": "m.space" },
            "initial_state": [
                child(&lobby, "a", true),
                child(&garden, "b", false),
                child(&secret, "c", false),
            ],
        }),
    )
    .await;
    // Bob's server is in the space, not in its rooms.
    join_via(&pair.b, &bob, &space, &pair.a).await;

    let (status, page) = hierarchy(&pair.b, &bob, &space, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        room_ids(&page, "rooms"),
        [space.clone(), lobby.clone(), garden.clone()],
        "the private room is left out: {page}"
    );
    assert_eq!(entry(&page, "rooms", &lobby)["name"], "Lobby");
    assert_eq!(entry(&page, "rooms", &garden)["name"], "Garden");
    assert_eq!(entry(&page, "rooms", &garden)["num_joined_members"], 1);
    assert_eq!(entry(&page, "rooms", &garden)["room_version"], "12");
    assert_eq!(
        entry(&page, "rooms", &space)["children_state"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert!(page.get("next_batch").is_none(), "{page}");

    let (status, page) = hierarchy(&pair.b, &bob, &space, "suggested_only=true").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page, "rooms"), [space.clone(), lobby.clone()]);
    assert_eq!(entry(&page, "rooms", &lobby)["name"], "Lobby");

    let (status, page) = hierarchy(&pair.b, &bob, &space, "max_depth=0").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page, "rooms"), [space.as_str()]);

    // One room per page.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let query = match &from {
            Some(token) => format!("limit=1&from={token}"),
            None => "limit=1".to_owned(),
        };
        let (status, page) = hierarchy(&pair.b, &bob, &space, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(room_ids(&page, "rooms"));
        match page["next_batch"].as_str() {
            Some(next) => from = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [space.clone(), lobby.clone(), garden.clone()]);

    // A root Bob's server is not in: asked of the server its room ID names (room version 11).
    let outer = public_room(
        &pair.a,
        &alice,
        "Outer",
        "11",
        json!({
            "creation_content": { "type": "m.space" },
            "initial_state": [child(&space, "a", false), child(&garden, "b", false)],
        }),
    )
    .await;
    let (status, page) = hierarchy(&pair.b, &bob, &outer, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        room_ids(&page, "rooms"),
        [outer.clone(), space.clone(), lobby.clone(), garden.clone()],
        "{page}"
    );
    assert_eq!(entry(&page, "rooms", &outer)["name"], "Outer");
    // Unknown there, or on a server nobody answers for.
    let (status, body) = hierarchy(&pair.b, &bob, &format!("!unknown:{a}"), "").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = hierarchy(&pair.b, &bob, &format!("!unknown:{NOBODY}"), "").await;
    assert_eq!(status, 502, "{body}");

    // Previews of rooms Bob's server is not in.
    let summary = |room: String| {
        let server = &pair.b;
        let token = bob.token.clone();
        async move {
            server
                .get(
                    &format!("/_matrix/client/v1/room_summary/{room}"),
                    Some(&token),
                )
                .await
        }
    };
    let (status, body) = summary(format!("{garden}?via={a}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "Garden");
    assert_eq!(body["membership"], "leave");
    let (status, body) = summary(outer.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_type"], "m.space");
    // A room version 12 ID names no server; a private room is not for Bob; nobody answers.
    let (status, body) = summary(garden.clone()).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = summary(format!("{secret}?via={a}")).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = summary(format!("{garden}?via={NOBODY}")).await;
    assert_eq!(status, 502, "{body}");
}
