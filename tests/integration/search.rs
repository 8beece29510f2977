//! Server-side search (`POST /search`) over raw HTTP: what a user may find (membership and
//! history visibility at each event, never another conversation's content), redactions,
//! pagination in both orders, filters, highlights, context, groups, room state, bad input, and
//! an index that catches up after a restart or is rebuilt from the store.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, test_config, user};

const SEARCH: &str = "/_matrix/client/v3/search";

/// `POST /search` with a `room_events` category built from `criteria`.
async fn search(
    server: &TestServer,
    u: &User,
    criteria: Value,
    next_batch: Option<&str>,
) -> (u16, Value) {
    let path = match next_batch {
        Some(token) => format!("{SEARCH}?next_batch={}", encode(token)),
        None => SEARCH.to_owned(),
    };
    server
        .post(
            &path,
            Some(&u.token),
            json!({ "search_categories": { "room_events": criteria } }),
        )
        .await
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The `room_events` of a successful search.
async fn room_events(server: &TestServer, u: &User, criteria: Value) -> Value {
    let (status, body) = search(server, u, criteria, None).await;
    assert_eq!(status, 200, "{body}");
    body["search_categories"]["room_events"].clone()
}

fn results(room_events: &Value) -> Vec<Value> {
    room_events["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn event_ids(room_events: &Value) -> Vec<String> {
    results(room_events)
        .iter()
        .map(|r| {
            r["result"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn send(server: &TestServer, u: &User, room: &str, txn: &str, body: &str) -> String {
    let (status, resp) = send_text(server, u, room, txn, body).await;
    assert_eq!(status, 200, "{resp}");
    resp["event_id"].as_str().expect("event_id").to_owned()
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

async fn leave(server: &TestServer, u: &User, room: &str) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&u.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A direct conversation: `a` creates a private room and invites `b`, who joins.
async fn direct_chat(server: &TestServer, a: &User, b: &User) -> String {
    let room = create_room(
        server,
        a,
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [b.id] }),
    )
    .await;
    let (status, body) = join(server, b, &room).await;
    assert_eq!(status, 200, "{body}");
    room
}

#[tokio::test]
async fn a_user_finds_only_what_they_may_see() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;

    // Two direct conversations of Bob's: Alice may search hers, never Carol's.
    let ours = direct_chat(&server, &alice, &bob).await;
    let theirs = direct_chat(&server, &carol, &bob).await;
    let our_secret = send(&server, &bob, &ours, "o1", "the pineapple plan").await;
    send(
        &server,
        &bob,
        &theirs,
        "t1",
        "the pineapple surprise for Carol",
    )
    .await;
    send(
        &server,
        &carol,
        &theirs,
        "t2",
        "pineapple pineapple pineapple",
    )
    .await;
    let found = room_events(&server, &alice, json!({ "search_term": "pineapple" })).await;
    assert_eq!(event_ids(&found), [our_secret.as_str()]);
    assert_eq!(found["count"], 1);
    // Naming the other conversation in the filter finds nothing either.
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "pineapple", "filter": { "rooms": [theirs] } }),
    )
    .await;
    assert_eq!(results(&found).len(), 0, "{found}");
    assert!(found.get("next_batch").is_none());
    // Bob finds his messages in both.
    let found = room_events(&server, &bob, json!({ "search_term": "pineapple" })).await;
    assert_eq!(results(&found).len(), 3, "{found}");
    // Carol finds nothing of Alice's conversation.
    let found = room_events(&server, &carol, json!({ "search_term": "plan" })).await;
    assert_eq!(results(&found).len(), 0, "{found}");

    // A room whose history is visible to members only from their join: what was said before
    // Alice joined stays hidden from her.
    let club = create_room(&server, &bob, json!({ "preset": "public_chat" })).await;
    put_state(
        &server,
        &bob,
        &club,
        "m.room.history_visibility",
        json!({ "history_visibility": "joined" }),
    )
    .await;
    send(&server, &bob, &club, "c1", "early mango talk").await;
    assert_eq!(join(&server, &alice, &club).await.0, 200);
    let late = send(&server, &bob, &club, "c2", "late mango talk").await;
    let found = room_events(&server, &alice, json!({ "search_term": "mango" })).await;
    assert_eq!(event_ids(&found), [late.as_str()]);
    // After she leaves, what follows is hidden too; what she saw stays findable.
    leave(&server, &alice, &club).await;
    send(&server, &bob, &club, "c3", "mango after alice left").await;
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "mango", "include_state": true }),
    )
    .await;
    assert_eq!(event_ids(&found), [late]);
    // No current state of a room she left.
    assert_eq!(found["state"], json!({}), "{found}");

    // A stranger to every room finds nothing.
    let dave = user(&server, "dave").await;
    let found = room_events(&server, &dave, json!({ "search_term": "mango" })).await;
    assert_eq!(results(&found).len(), 0);
    assert_eq!(found["count"], 0);
}

#[tokio::test]
async fn redacted_messages_are_no_longer_found() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    let kept = send(&server, &alice, &room, "1", "a walrus in the bath").await;
    let redacted = send(&server, &alice, &room, "2", "another walrus on the roof").await;
    let found = room_events(&server, &alice, json!({ "search_term": "walrus" })).await;
    assert_eq!(results(&found).len(), 2);
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/redact/{redacted}/r1"),
            Some(&alice.token),
            Some(json!({ "reason": "oops" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let found = room_events(&server, &alice, json!({ "search_term": "walrus" })).await;
    assert_eq!(event_ids(&found), [kept]);
    let found = room_events(&server, &alice, json!({ "search_term": "roof" })).await;
    assert_eq!(results(&found).len(), 0);
    assert_eq!(found["count"], 0, "the document itself is gone");
}

/// Every page of a search, following `next_batch`: the event IDs of each page.
async fn all_pages(server: &TestServer, u: &User, criteria: Value) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let (status, body) = search(server, u, criteria.clone(), next.as_deref()).await;
        assert_eq!(status, 200, "{body}");
        let room_events = &body["search_categories"]["room_events"];
        pages.push(event_ids(room_events));
        match room_events["next_batch"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => return pages,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
}

#[tokio::test]
async fn pages_have_no_duplicates_and_no_gaps_in_either_order() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let other = create_room(&server, &bob, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &alice, &other).await.0, 200);
    let mut sent = Vec::new();
    for i in 0..23 {
        // Different densities of the word give different ranks; some ranks are equal.
        let body = format!("{} number {i}", "banana ".repeat(1 + i % 4));
        let (who, to) = if i % 3 == 0 {
            (&bob, &other)
        } else {
            (&alice, &room)
        };
        sent.push(send(&server, who, to, &format!("b{i}"), &body).await);
        send(&server, who, to, &format!("n{i}"), "no fruit here").await;
    }
    for order in ["recent", "rank"] {
        let pages = all_pages(
            &server,
            &alice,
            json!({ "search_term": "banana", "order_by": order, "filter": { "limit": 4 } }),
        )
        .await;
        assert!(pages.iter().all(|p| p.len() <= 4), "{order}: {pages:?}");
        assert!(pages.len() >= 6, "{order}: {pages:?}");
        let all: Vec<String> = pages.concat();
        let distinct: HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{order}: duplicates");
        assert_eq!(
            distinct,
            sent.iter().collect::<HashSet<_>>(),
            "{order}: gaps"
        );
        if order == "recent" {
            let newest_first: Vec<String> = sent.iter().rev().cloned().collect();
            assert_eq!(all, newest_first);
        }
    }
    // Ranks never increase along the pages of `rank`.
    let mut last = f64::INFINITY;
    let mut next: Option<String> = None;
    loop {
        let (_, body) = search(
            &server,
            &alice,
            json!({ "search_term": "banana", "filter": { "limit": 5 } }),
            next.as_deref(),
        )
        .await;
        let room_events = &body["search_categories"]["room_events"];
        for result in results(room_events) {
            let rank = result["rank"].as_f64().expect("rank");
            assert!(rank <= last, "{rank} after {last}");
            last = rank;
        }
        match room_events["next_batch"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => break,
        }
    }

    // A group's token continues that group only.
    let first = room_events(
        &server,
        &alice,
        json!({
            "search_term": "banana",
            "order_by": "recent",
            "filter": { "limit": 3 },
            "groupings": { "group_by": [{ "key": "room_id" }] },
        }),
    )
    .await;
    let groups = first["groups"]["room_id"]
        .as_object()
        .expect("room groups")
        .clone();
    let token = groups[&room]["next_batch"]
        .as_str()
        .expect("group next_batch")
        .to_owned();
    let rest = all_pages_from(
        &server,
        &alice,
        json!({ "search_term": "banana", "order_by": "recent", "filter": { "limit": 3 } }),
        token,
    )
    .await;
    let in_room: HashSet<String> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
        .map(|(_, id)| id.clone())
        .collect();
    let seen: HashSet<String> = groups[&room]["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|id| id.as_str().map(str::to_owned))
        .chain(rest.concat())
        .collect();
    assert_eq!(seen, in_room);
}

/// Like [`all_pages`], from a token.
async fn all_pages_from(
    server: &TestServer,
    u: &User,
    criteria: Value,
    token: String,
) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(token);
    while let Some(token) = next.take() {
        let (status, body) = search(server, u, criteria.clone(), Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        let room_events = &body["search_categories"]["room_events"];
        pages.push(event_ids(room_events));
        next = room_events["next_batch"].as_str().map(str::to_owned);
        assert!(pages.len() < 100, "pagination does not end");
    }
    pages
}

#[tokio::test]
async fn filters_highlights_context_groups_and_state() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/profile/{}/displayname", bob.id),
            Some(&bob.token),
            Some(json!({ "displayname": "Bobby" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let kitchen = create_room(
        &server,
        &alice,
        json!({ "preset": "public_chat", "name": "Kitchen", "topic": "Recipes and espresso" }),
    )
    .await;
    assert_eq!(join(&server, &bob, &kitchen).await.0, 200);
    let garden = create_room(&server, &bob, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &alice, &garden).await.0, 200);

    send(&server, &alice, &kitchen, "k1", "good morning").await;
    let cafe = send(&server, &bob, &kitchen, "k2", "Meet at the Café?").await;
    send(&server, &alice, &kitchen, "k3", "see you there").await;
    let garden_cafe = send(&server, &alice, &garden, "g1", "the cafe by the roses").await;
    let bob_garden = send(&server, &bob, &garden, "g2", "cafe au lait").await;

    // Highlights: the term, and how the results write it.
    let found = room_events(&server, &alice, json!({ "search_term": "CAFE" })).await;
    assert_eq!(results(&found).len(), 3);
    let highlights: Vec<&str> = found["highlights"]
        .as_array()
        .expect("highlights")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(highlights.contains(&"cafe"), "{highlights:?}");
    assert!(highlights.contains(&"Café"), "{highlights:?}");
    assert!(found.get("next_batch").is_none());

    // Filters by room and by sender.
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "cafe", "filter": { "rooms": [garden] } }),
    )
    .await;
    assert_eq!(
        event_ids(&found).into_iter().collect::<HashSet<_>>(),
        HashSet::from([garden_cafe.clone(), bob_garden.clone()])
    );
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "cafe", "filter": { "senders": [bob.id], "not_rooms": [kitchen] } }),
    )
    .await;
    assert_eq!(event_ids(&found), [bob_garden.as_str()]);
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "cafe", "filter": { "not_senders": [bob.id] } }),
    )
    .await;
    assert_eq!(event_ids(&found), [garden_cafe.as_str()]);
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "cafe", "filter": { "types": ["m.room.name"] } }),
    )
    .await;
    assert_eq!(results(&found).len(), 0);

    // Phrases and exclusions.
    let found = room_events(&server, &alice, json!({ "search_term": "\"au lait\"" })).await;
    assert_eq!(event_ids(&found), [bob_garden.as_str()]);
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "cafe -roses -lait" }),
    )
    .await;
    assert_eq!(event_ids(&found), [cafe.as_str()]);

    // Room names and topics, by key.
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "kitchen", "keys": ["content.name"] }),
    )
    .await;
    assert_eq!(results(&found).len(), 1, "{found}");
    assert_eq!(results(&found)[0]["result"]["type"], "m.room.name");
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "espresso", "keys": ["content.body", "content.topic"] }),
    )
    .await;
    assert_eq!(results(&found)[0]["result"]["type"], "m.room.topic");
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "espresso", "keys": ["content.body"] }),
    )
    .await;
    assert_eq!(results(&found).len(), 0);

    // Context around a result, with the senders' profiles.
    let found = room_events(
        &server,
        &alice,
        json!({
            "search_term": "meet",
            "event_context": { "before_limit": 1, "after_limit": 2, "include_profile": true },
        }),
    )
    .await;
    let result = &results(&found)[0];
    assert_eq!(result["result"]["event_id"], cafe);
    let context = &result["context"];
    let before: Vec<&Value> = context["events_before"]
        .as_array()
        .expect("before")
        .iter()
        .collect();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0]["content"]["body"], "good morning");
    let after = context["events_after"].as_array().expect("after");
    assert_eq!(after[0]["content"]["body"], "see you there");
    assert!(context["start"].is_string() && context["end"].is_string());
    assert_eq!(context["profile_info"][&bob.id]["displayname"], "Bobby");
    assert_eq!(context["profile_info"][&alice.id]["displayname"], "alice");
    // No context unless asked for.
    let found = room_events(&server, &alice, json!({ "search_term": "meet" })).await;
    assert!(results(&found)[0].get("context").is_none());

    // Groups by room and by sender, and the current state of the rooms of the results.
    let found = room_events(
        &server,
        &alice,
        json!({
            "search_term": "cafe",
            "order_by": "recent",
            "include_state": true,
            "groupings": { "group_by": [{ "key": "room_id" }, { "key": "sender" }] },
        }),
    )
    .await;
    let by_room = &found["groups"]["room_id"];
    assert_eq!(
        by_room[&garden]["results"],
        json!([bob_garden, garden_cafe])
    );
    assert_eq!(by_room[&garden]["order"], 1);
    assert_eq!(by_room[&kitchen]["results"], json!([cafe]));
    assert_eq!(by_room[&kitchen]["order"], 2);
    assert!(by_room[&kitchen].get("next_batch").is_none());
    let by_sender = &found["groups"]["sender"];
    assert_eq!(by_sender[&bob.id]["results"], json!([bob_garden, cafe]));
    assert_eq!(by_sender[&alice.id]["results"], json!([garden_cafe]));
    let state = found["state"].as_object().expect("state");
    assert_eq!(state.len(), 2);
    let kitchen_state = state[&kitchen].as_array().expect("kitchen state");
    assert!(kitchen_state.iter().any(|e| e["type"] == "m.room.create"));
    assert!(
        kitchen_state
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Kitchen")
    );
}

#[tokio::test]
async fn bad_requests_get_matrix_errors() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    send(&server, &alice, &room, "1", "hello there").await;

    let post = |body: Value, query: &'static str| {
        let server = &server;
        let token = alice.token.clone();
        async move {
            server
                .post(&format!("{SEARCH}{query}"), Some(&token), body)
                .await
        }
    };
    for (body, query, status, code) in [
        (json!({}), "", 400, "M_BAD_JSON"),
        (json!({ "search_categories": [] }), "", 400, "M_BAD_JSON"),
        (
            json!({ "search_categories": { "room_events": {} } }),
            "",
            400,
            "M_BAD_JSON",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": ["x"] } } }),
            "",
            400,
            "M_BAD_JSON",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": "x", "order_by": "oldest" } } }),
            "",
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": "x", "keys": ["content.msgtype"] } } }),
            "",
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": "x", "groupings": { "group_by": [{ "key": "type" }] } } } }),
            "",
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": "x", "filter": { "limit": -1 } } } }),
            "",
            400,
            "M_BAD_JSON",
        ),
        (
            json!({ "search_categories": { "room_events": { "search_term": "x" } } }),
            "?next_batch=not-a-token",
            400,
            "M_INVALID_PARAM",
        ),
    ] {
        let (got, resp) = post(body.clone(), query).await;
        assert_eq!(
            (got, errcode(&resp)),
            (status, code),
            "{body} {query}: {resp}"
        );
    }
    // A token of one order is refused by the other.
    let mut sent = 0;
    for i in 0..12 {
        send(&server, &alice, &room, &format!("h{i}"), "hello again").await;
        sent += 1;
    }
    assert_eq!(sent, 12);
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "hello", "order_by": "recent", "filter": { "limit": 2 } }),
    )
    .await;
    let token = found["next_batch"].as_str().expect("next_batch");
    let (status, resp) = search(
        &server,
        &alice,
        json!({ "search_term": "hello", "order_by": "rank" }),
        Some(token),
    )
    .await;
    assert_eq!((status, errcode(&resp)), (400, "M_INVALID_PARAM"), "{resp}");

    // Unknown categories are ignored.
    let (status, resp) = post(
        json!({ "search_categories": { "people": { "search_term": "x" } } }),
        "",
    )
    .await;
    assert_eq!((status, resp), (200, json!({ "search_categories": {} })));
    // An empty term, or one of punctuation only, finds nothing.
    for term in ["", "?! -"] {
        let found = room_events(&server, &alice, json!({ "search_term": term })).await;
        assert_eq!(results(&found).len(), 0);
        assert_eq!(found["count"], 0);
    }
    // Without an access token.
    let (status, resp) = server
        .post(SEARCH, None, json!({ "search_categories": {} }))
        .await;
    assert_eq!((status, errcode(&resp)), (401, "M_MISSING_TOKEN"));
}

/// Restarts an in-process server on the same data directory with `search.enabled` as given.
async fn restart(server: &mut TestServer, search_enabled: bool) {
    server.stop().await;
    let mut config = test_config(server.data.path().to_path_buf());
    config.search.enabled = search_enabled;
    let started = roost::start(config).await.expect("server restarts");
    server.base = started.base_url();
    server.server = Some(started);
}

#[tokio::test]
async fn the_index_catches_up_and_can_be_rebuilt() {
    let mut server = TestServer::start_with(|c| c.search.enabled = false).await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({})).await;
    // Search is off: nothing is indexed, and the endpoint says so.
    let before = send(&server, &alice, &room, "1", "written while search was off").await;
    let (status, resp) = search(&server, &alice, json!({ "search_term": "off" }), None).await;
    assert_eq!((status, errcode(&resp)), (400, "M_UNKNOWN"), "{resp}");

    // Turned on, the index catches up on what it missed.
    restart(&mut server, true).await;
    let found = room_events(&server, &alice, json!({ "search_term": "written" })).await;
    assert_eq!(event_ids(&found), [before.as_str()]);
    let later = send(&server, &alice, &room, "2", "written after the restart").await;
    let found = room_events(
        &server,
        &alice,
        json!({ "search_term": "written", "order_by": "recent" }),
    )
    .await;
    assert_eq!(event_ids(&found), [later.clone(), before.clone()]);

    // A removed index directory is filled again from the store.
    server.stop().await;
    std::fs::remove_dir_all(server.data.path().join("search")).expect("remove the index");
    let mut config = test_config(server.data.path().to_path_buf());
    config.search.enabled = true;
    let started = roost::start(config).await.expect("server restarts");
    server.base = started.base_url();
    server.server = Some(started);
    let found = room_events(&server, &alice, json!({ "search_term": "written" })).await;
    assert_eq!(found["count"], 2, "{found}");

    // `roost search rebuild`, with the server stopped.
    let (status, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/rooms/{room}/redact/{later}/r1"),
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
    let out = crate::child::roost(server.data.path())
        .args(["search", "rebuild"])
        .output()
        .expect("roost search rebuild");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("1 events indexed"), "{stdout}");
    restart(&mut server, true).await;
    let found = room_events(&server, &alice, json!({ "search_term": "written" })).await;
    assert_eq!(event_ids(&found), [before]);
    assert_eq!(found["count"], 1);
}
