//! The user directory over raw HTTP: who a search finds (users sharing a room, users in public
//! rooms, every local user when so configured), matching, ordering, `limit` and `limited`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, user};

const SEARCH: &str = "/_matrix/client/v3/user_directory/search";

async fn search(server: &TestServer, u: &User, body: Value) -> (u16, Value) {
    server.post(SEARCH, Some(&u.token), body).await
}

/// The user IDs a search finds, in order.
async fn found(server: &TestServer, u: &User, term: &str) -> Vec<String> {
    let (status, body) = search(server, u, json!({ "search_term": term })).await;
    assert_eq!(status, 200, "{body}");
    ids(&body)
}

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["user_id"].as_str().expect("user_id").to_owned())
        .collect()
}

async fn set_displayname(server: &TestServer, u: &User, name: &str) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/profile/{}/displayname", u.id),
            Some(&u.token),
            Some(json!({ "displayname": name })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn invite(server: &TestServer, by: &User, room: &str, who: &User) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&by.token),
            json!({ "user_id": who.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn put_state(server: &TestServer, u: &User, room: &str, kind: &str, content: Value) {
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
            Some(&u.token),
            Some(content),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn searches_find_room_mates_and_members_of_public_rooms() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let dave = user(&server, "dave").await;
    let erin = user(&server, "erin").await;
    let frank = user(&server, "frank").await;

    // Nobody shares a room yet, and no room is public.
    assert!(found(&server, &alice, "bob").await.is_empty());

    // Alice and Bob share a private room.
    let private = create_room(&server, &alice, json!({ "preset": "private_chat" })).await;
    invite(&server, &alice, &private, &bob).await;
    assert_eq!(join(&server, &bob, &private).await.0, 200);
    assert_eq!(found(&server, &alice, "bob").await, vec![bob.id.clone()]);
    assert_eq!(found(&server, &bob, "ALI").await, vec![alice.id.clone()]);

    // Carol's public room: its members are found by anyone, Carol's private room's are not.
    let public = create_room(&server, &carol, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &dave, &public).await.0, 200);
    assert_eq!(
        found(&server, &alice, "carol").await,
        vec![carol.id.clone()]
    );
    assert_eq!(found(&server, &alice, "dave").await, vec![dave.id.clone()]);
    assert!(found(&server, &alice, "erin").await.is_empty());
    let hidden = create_room(&server, &erin, json!({ "preset": "private_chat" })).await;
    assert!(found(&server, &alice, "erin").await.is_empty());

    // Leaving the public room hides Dave again; a room turned public shows its members.
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{public}/leave"),
            Some(&dave.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(found(&server, &alice, "dave").await.is_empty());
    put_state(
        &server,
        &erin,
        &hidden,
        "m.room.join_rules",
        json!({ "join_rule": "public" }),
    )
    .await;
    assert_eq!(found(&server, &alice, "erin").await, vec![erin.id.clone()]);
    // A world-readable room counts as public too.
    let readable = create_room(&server, &frank, json!({ "preset": "private_chat" })).await;
    assert!(found(&server, &alice, "frank").await.is_empty());
    put_state(
        &server,
        &frank,
        &readable,
        "m.room.history_visibility",
        json!({ "history_visibility": "world_readable" }),
    )
    .await;
    assert_eq!(
        found(&server, &alice, "frank").await,
        vec![frank.id.clone()]
    );

    // Display names: every word must start a word of the name or of the user ID.
    set_displayname(&server, &bob, "Robert Paulson").await;
    let (status, body) = search(&server, &alice, json!({ "search_term": "paul rob" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([{ "user_id": bob.id, "display_name": "Robert Paulson" }])
    );
    assert_eq!(body["limited"], false);
    assert!(found(&server, &alice, "aulson").await.is_empty());
    assert!(found(&server, &alice, "paul carol").await.is_empty());
    assert_eq!(
        found(&server, &alice, "@bob:localhost").await,
        vec![bob.id.clone()]
    );
    // Terms without a word find nobody.
    assert!(found(&server, &alice, " @: ").await.is_empty());

    // Everyone matches the server name: room mates first (Alice herself and Bob), then the
    // others with a display name, then by user ID.
    set_displayname(&server, &carol, "").await;
    let (status, body) = search(
        &server,
        &alice,
        json!({ "search_term": "localhost", "limit": 50 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(&body),
        vec![
            alice.id.clone(),
            bob.id.clone(),
            erin.id.clone(),
            frank.id.clone(),
            carol.id.clone(),
        ]
    );
    assert_eq!(body["limited"], false);
    assert!(body["results"][4].get("display_name").is_none());
    let (_, body) = search(
        &server,
        &alice,
        json!({ "search_term": "localhost", "limit": 2 }),
    )
    .await;
    assert_eq!(ids(&body), vec![alice.id.clone(), bob.id.clone()]);
    assert_eq!(body["limited"], true);
    let (_, body) = search(
        &server,
        &alice,
        json!({ "search_term": "localhost", "limit": 5 }),
    )
    .await;
    assert_eq!(body["limited"], false);
    let (_, body) = search(
        &server,
        &alice,
        json!({ "search_term": "localhost", "limit": 0 }),
    )
    .await;
    assert_eq!((ids(&body).len(), &body["limited"]), (0, &json!(true)));

    // Deactivated users are never found.
    let services = server.server.as_ref().expect("running").services();
    let erin_id = ruma::UserId::parse(erin.id.as_str()).expect("user ID");
    services
        .deactivate_account(&erin_id)
        .await
        .expect("deactivated");
    assert!(found(&server, &alice, "erin").await.is_empty());

    // Bad requests.
    let (status, _) = server
        .post(SEARCH, None, json!({ "search_term": "bob" }))
        .await;
    assert_eq!(status, 401);
    let (status, body) = search(&server, &alice, json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = search(&server, &alice, json!({ "search_term": "b", "limit": -1 })).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = search(&server, &alice, json!({ "search_term": "b".repeat(300) })).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
}

#[tokio::test]
async fn searching_all_users_finds_users_without_shared_rooms() {
    let server = TestServer::start_with(|c| c.user_directory.search_all_users = true).await;
    let alice = user(&server, "alice").await;
    let loner = user(&server, "loner").await;
    let gone = user(&server, "gone").await;
    assert_eq!(found(&server, &alice, "lon").await, vec![loner.id.clone()]);
    let services = server.server.as_ref().expect("running").services();
    let gone_id = ruma::UserId::parse(gone.id.as_str()).expect("user ID");
    services
        .deactivate_account(&gone_id)
        .await
        .expect("deactivated");
    assert!(found(&server, &alice, "gone").await.is_empty());

    // The configured cap lowers larger limits; `limited` says there was more.
    let server = TestServer::start_with(|c| {
        c.user_directory.search_all_users = true;
        c.user_directory.max_limit = 2;
    })
    .await;
    for name in ["ann", "ben", "cat"] {
        user(&server, name).await;
    }
    let ann = user(&server, "anna").await;
    let (status, body) = search(
        &server,
        &ann,
        json!({ "search_term": "localhost", "limit": 100 }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body).len(), 2);
    assert_eq!(body["limited"], true);
}
