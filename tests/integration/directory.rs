//! Room aliases, directory visibility and `/publicRooms` over raw HTTP.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, user};

/// The path of an alias (`#` must be percent-encoded in a URL path).
fn alias_path(alias: &str) -> String {
    format!(
        "/_matrix/client/v3/directory/room/{}",
        alias.replace('#', "%23")
    )
}

async fn resolve(server: &TestServer, alias: &str) -> (u16, Value) {
    server.get(&alias_path(alias), None).await
}

async fn put_alias(server: &TestServer, u: &User, alias: &str, room: &str) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &alias_path(alias),
            Some(&u.token),
            Some(json!({ "room_id": room })),
        )
        .await
}

async fn delete_alias(server: &TestServer, u: &User, alias: &str) -> (u16, Value) {
    server
        .call(Method::DELETE, &alias_path(alias), Some(&u.token), None)
        .await
}

async fn room_aliases(server: &TestServer, u: &User, room: &str) -> (u16, Value) {
    server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/aliases"),
            Some(&u.token),
        )
        .await
}

async fn join(server: &TestServer, u: &User, room: &str) -> (u16, Value) {
    server
        .post(
            &format!("/_matrix/client/v3/join/{}", room.replace('#', "%23")),
            Some(&u.token),
            json!({}),
        )
        .await
}

async fn joined_rooms(server: &TestServer, u: &User) -> usize {
    let (_, body) = server
        .get("/_matrix/client/v3/joined_rooms", Some(&u.token))
        .await;
    body["joined_rooms"].as_array().unwrap().len()
}

async fn set_visibility(server: &TestServer, u: &User, room: &str, body: Value) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            Some(&u.token),
            Some(body),
        )
        .await
}

async fn visibility(server: &TestServer, room: &str) -> String {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/directory/list/room/{room}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["visibility"].as_str().unwrap().to_owned()
}

async fn search(server: &TestServer, u: &User, body: Value) -> (u16, Value) {
    server
        .post("/_matrix/client/v3/publicRooms", Some(&u.token), body)
        .await
}

fn room_ids(page: &Value) -> Vec<String> {
    page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["room_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn aliases_resolve_and_join() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(
        &server,
        &alice,
        json!({ "room_alias_name": "lobby", "visibility": "public", "name": "Lobby" }),
    )
    .await;

    // Anyone resolves the alias, without a token.
    let (status, body) = resolve(&server, "#lobby:localhost").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["servers"], json!(["localhost"]));
    // It is the room's canonical alias, and the room is in the directory.
    let (status, content) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/state/m.room.canonical_alias"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(
        (status, &content["alias"]),
        (200, &json!("#lobby:localhost"))
    );
    assert_eq!(visibility(&server, &room).await, "public");
    // The canonical alias comes right after the power levels, as the spec orders them.
    let (_, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=5"),
            Some(&alice.token),
        )
        .await;
    let kinds: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds[..4],
        [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.canonical_alias"
        ]
    );

    // Joining by alias joins the room.
    let (status, body) = join(&server, &bob, "#lobby:localhost").await;
    assert_eq!((status, &body["room_id"]), (200, &json!(room)), "{body}");
    assert_eq!(
        server
            .call(
                Method::GET,
                &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
                Some(&bob.token),
                None,
            )
            .await
            .1["joined"]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // A taken alias: createRoom refuses before creating anything; PUT answers 409.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&bob.token),
            json!({ "room_alias_name": "lobby" }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_ROOM_IN_USE"), "{body}");
    assert_eq!(joined_rooms(&server, &bob).await, 1, "no room was created");
    let (status, body) = put_alias(&server, &bob, "#lobby:localhost", &room).await;
    assert_eq!((status, errcode(&body)), (409, "M_UNKNOWN"), "{body}");

    // Unknown, remote and malformed aliases.
    for alias in ["#nowhere:localhost", "#lobby:elsewhere.example"] {
        let (status, body) = resolve(&server, alias).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{alias}");
        let (status, body) = join(&server, &bob, alias).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{alias}");
    }
    for alias in [
        "#no-server",
        "#:localhost",
        "#bad alias:localhost",
        "#x:elsewhere.example",
    ] {
        let (status, body) = put_alias(&server, &alice, alias, &room).await;
        assert_eq!(
            (status, errcode(&body)),
            (400, "M_INVALID_PARAM"),
            "{alias}"
        );
    }
    let (status, body) = resolve(&server, "#no-server").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put_alias(&server, &alice, "#fine:localhost", "not-a-room").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = put_alias(&server, &alice, "#fine:localhost", "!nope:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    for name in ["", "has space", "a:b"] {
        let (status, body) = server
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&alice.token),
                json!({ "room_alias_name": name }),
            )
            .await;
        assert_eq!(
            (status, errcode(&body)),
            (400, "M_INVALID_PARAM"),
            "{name:?}"
        );
    }
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "visibility": "hidden" }),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    assert_eq!(
        joined_rooms(&server, &alice).await,
        1,
        "no room was created"
    );
    let (status, _) = resolve(&server, "#fine:localhost").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn alias_listing_and_deletion() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let eve = user(&server, "eve").await;
    // Room version 10: power comes from the power levels alone.
    let room = create_room(
        &server,
        &alice,
        json!({ "room_version": "10", "preset": "private_chat", "invite": [bob.id] }),
    )
    .await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);

    // Members may add aliases; outsiders may not.
    assert_eq!(
        put_alias(&server, &bob, "#bobs:localhost", &room).await.0,
        200
    );
    assert_eq!(
        put_alias(&server, &alice, "#alices:localhost", &room)
            .await
            .0,
        200
    );
    let (status, body) = put_alias(&server, &eve, "#eves:localhost", &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert_eq!(resolve(&server, "#eves:localhost").await.0, 404);

    // Members list the room's aliases; others are refused.
    let (status, body) = room_aliases(&server, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["aliases"],
        json!(["#alices:localhost", "#bobs:localhost"])
    );
    let (status, body) = room_aliases(&server, &eve, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = room_aliases(&server, &eve, "!unknown:localhost").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));

    // Bob (power 0) may not delete Alice's alias, nor Eve Bob's; nothing changes.
    let (status, body) = delete_alias(&server, &bob, "#alices:localhost").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) = delete_alias(&server, &eve, "#bobs:localhost").await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert_eq!(resolve(&server, "#alices:localhost").await.0, 200);
    assert_eq!(resolve(&server, "#bobs:localhost").await.0, 200);

    // The creator deletes his own alias; a moderator deletes anyone's.
    assert_eq!(delete_alias(&server, &bob, "#bobs:localhost").await.0, 200);
    let (status, body) = resolve(&server, "#bobs:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = delete_alias(&server, &bob, "#bobs:localhost").await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    assert_eq!(
        put_alias(&server, &bob, "#bobs2:localhost", &room).await.0,
        200
    );
    assert_eq!(
        delete_alias(&server, &alice, "#bobs2:localhost").await.0,
        200
    );
    let (_, body) = room_aliases(&server, &alice, &room).await;
    assert_eq!(body["aliases"], json!(["#alices:localhost"]));

    // A deleted alias can be taken again, here for another room.
    let other = create_room(&server, &bob, json!({})).await;
    assert_eq!(
        put_alias(&server, &bob, "#bobs:localhost", &other).await.0,
        200
    );
    let (_, body) = resolve(&server, "#bobs:localhost").await;
    assert_eq!(body["room_id"], other.as_str());
}

#[tokio::test]
async fn public_rooms_directory() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let eve = user(&server, "eve").await;
    let cheese = create_room(
        &server,
        &alice,
        json!({ "visibility": "public", "name": "Cheese Lovers", "topic": "Tasty things" }),
    )
    .await;
    assert_eq!(join(&server, &bob, &cheese).await.0, 200);
    let wine = create_room(
        &server,
        &alice,
        json!({ "visibility": "public", "name": "Wine Club", "room_alias_name": "wine" }),
    )
    .await;
    let secret = create_room(&server, &alice, json!({ "name": "Secret Cheese" })).await;

    // Anyone lists the directory: published rooms only, most members first.
    let (status, page) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(room_ids(&page), vec![cheese.clone(), wine.clone()]);
    assert_eq!(page["total_room_count_estimate"], 2);
    assert!(page.get("next_batch").is_none() && page.get("prev_batch").is_none());
    let first = &page["chunk"][0];
    assert_eq!(first["name"], "Cheese Lovers");
    assert_eq!(first["topic"], "Tasty things");
    assert_eq!(first["num_joined_members"], 2);
    assert_eq!(first["join_rule"], "public");
    assert_eq!(first["world_readable"], false);
    assert_eq!(first["guest_can_join"], false);
    assert_eq!(page["chunk"][1]["canonical_alias"], "#wine:localhost");
    // A stale or unknown token does not keep anyone from it either.
    let (status, again) = server
        .get("/_matrix/client/v3/publicRooms", Some("not-a-token"))
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(room_ids(&again), vec![cheese.clone(), wine.clone()]);

    // POST needs a token and filters by name, topic or alias, ignoring case.
    let (status, body) = server
        .post("/_matrix/client/v3/publicRooms", None, json!({}))
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_MISSING_TOKEN"));
    for (term, expected) in [
        ("CHEESE", vec![cheese.clone()]),
        ("tasty", vec![cheese.clone()]),
        ("#wine:", vec![wine.clone()]),
        ("nothing like it", vec![]),
    ] {
        let (status, page) = search(
            &server,
            &eve,
            json!({ "filter": { "generic_search_term": term } }),
        )
        .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(room_ids(&page), expected, "{term}");
    }

    // Pagination with limit 1, both ways, over GET and POST.
    let (_, first) = server
        .get("/_matrix/client/v3/publicRooms?limit=1", None)
        .await;
    assert_eq!(room_ids(&first), vec![cheese.clone()]);
    assert!(first.get("prev_batch").is_none());
    let next = first["next_batch"].as_str().unwrap();
    let (_, second) = server
        .get(
            &format!("/_matrix/client/v3/publicRooms?limit=1&since={next}"),
            None,
        )
        .await;
    assert_eq!(room_ids(&second), vec![wine.clone()]);
    assert!(second.get("next_batch").is_none());
    let prev = second["prev_batch"].as_str().unwrap();
    let (_, back) = search(&server, &eve, json!({ "limit": 1, "since": prev })).await;
    assert_eq!(room_ids(&back), vec![cheese.clone()]);
    let (status, body) = server
        .get("/_matrix/client/v3/publicRooms?since=garbage", None)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .get("/_matrix/client/v3/publicRooms?limit=-1", None)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = server
        .get(
            "/_matrix/client/v3/publicRooms?server=elsewhere.example",
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, page) = server
        .get("/_matrix/client/v3/publicRooms?server=localhost", None)
        .await;
    assert_eq!((status, room_ids(&page).len()), (200, 2));

    // No third-party networks here.
    let (status, page) = search(&server, &eve, json!({ "third_party_instance_id": "irc" })).await;
    assert_eq!((status, room_ids(&page).len()), (200, 0));
    let (status, body) = search(
        &server,
        &eve,
        json!({ "include_all_networks": true, "third_party_instance_id": "irc" }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));

    // Publishing and hiding a room.
    assert_eq!(visibility(&server, &secret).await, "private");
    let (status, body) = set_visibility(&server, &eve, &secret, json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    let (status, body) =
        set_visibility(&server, &bob, &cheese, json!({ "visibility": "private" })).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"));
    assert_eq!(visibility(&server, &cheese).await, "public");
    let (status, body) =
        set_visibility(&server, &alice, &secret, json!({ "visibility": "hidden" })).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, body) = set_visibility(&server, &alice, "!nope:localhost", json!({})).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    assert_eq!(
        server
            .get(
                "/_matrix/client/v3/directory/list/room/!nope:localhost",
                None
            )
            .await
            .0,
        404
    );
    assert_eq!(visibility(&server, &secret).await, "private");

    let (status, body) = set_visibility(&server, &alice, &secret, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(visibility(&server, &secret).await, "public");
    let (_, page) = search(
        &server,
        &eve,
        json!({ "filter": { "generic_search_term": "cheese" } }),
    )
    .await;
    assert_eq!(room_ids(&page).len(), 2);
    let (status, _) =
        set_visibility(&server, &alice, &wine, json!({ "visibility": "private" })).await;
    assert_eq!(status, 200);
    let (_, page) = server.get("/_matrix/client/v3/publicRooms", None).await;
    assert_eq!(page["total_room_count_estimate"], 2);
    assert!(!room_ids(&page).contains(&wine));
    assert!(room_ids(&page).contains(&secret));
}
