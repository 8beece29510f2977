//! Chat API notifications: friend requests and their acceptance (through the Chat API and from a
//! Matrix client), messages and mentions, group invites, the unread filter, paging, marking read
//! by ID and all at once, agreement with Matrix read receipts both ways, blocked users hidden,
//! and every refusal.

use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat_common::{ChatUser, befriend, call, code, enc, get, post, signup};
use crate::common::TestServer;

/// The user's feed (first page of `query`).
async fn feed(server: &TestServer, user: &ChatUser, query: &str) -> Value {
    let (status, body) = get(server, &format!("/notifications?{query}"), &user.token).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn items(page: &Value) -> Vec<Value> {
    page["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The notifications of one type.
async fn of_type(server: &TestServer, user: &ChatUser, kind: &str) -> Vec<Value> {
    items(&feed(server, user, "limit=100").await)
        .into_iter()
        .filter(|n| n["type"] == kind)
        .collect()
}

async fn add_friend(server: &TestServer, from: &ChatUser, to: &ChatUser) -> String {
    let (status, body) = post(
        server,
        "/friends/add",
        &from.token,
        json!({"user_id": to.user_id}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["chat_id"].as_str().expect("chat_id").to_owned()
}

async fn send(server: &TestServer, from: &ChatUser, body: Value) -> String {
    let (status, message) = post(server, "/messages", &from.token, body).await;
    assert_eq!(status, 201, "{message}");
    message["id"].as_str().expect("id").to_owned()
}

async fn mark_read(server: &TestServer, user: &ChatUser, body: Value) {
    let (status, answer) = post(server, "/notifications/read", &user.token, body).await;
    assert_eq!(status, 204, "{answer}");
}

#[tokio::test]
async fn chat_notifications_for_friend_requests_and_acceptance() {
    let server = TestServer::start().await;
    let alice = signup(&server, "nfa").await;
    let bob = signup(&server, "nfb").await;
    let carol = signup(&server, "nfc").await;

    let dm = add_friend(&server, &alice, &bob).await;
    let requests = of_type(&server, &bob, "friend_request").await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["from"], json!(alice.user_id));
    assert_eq!(request["chat_id"], json!(dm));
    assert_eq!(request["read"], false);
    assert!(
        request["message_id"].is_null() && request["call_id"].is_null(),
        "{request}"
    );
    assert_eq!(feed(&server, &bob, "").await["unread_count"], 1);
    assert!(of_type(&server, &alice, "friend_request").await.is_empty());

    let (status, body) = post(
        &server,
        "/friends/accept",
        &bob.token,
        json!({"user_id": alice.user_id}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let accepted = of_type(&server, &alice, "friend_accepted").await;
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["from"], json!(bob.user_id));
    assert_eq!(accepted[0]["chat_id"], json!(dm));
    assert_eq!(accepted[0]["read"], false);
    // Answered: the request is read now.
    let requests = of_type(&server, &bob, "friend_request").await;
    assert_eq!(requests[0]["read"], true, "{requests:?}");
    assert_eq!(feed(&server, &bob, "").await["unread_count"], 0);
    assert!(of_type(&server, &bob, "friend_accepted").await.is_empty());

    // Accepted from a Matrix client (joining the invited room) counts the same.
    let dm = add_friend(&server, &alice, &carol).await;
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&dm)),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let accepted = of_type(&server, &alice, "friend_accepted").await;
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(accepted[0]["from"], json!(carol.user_id));

    // An `is_direct` invite never taken for a friend request (made and joined from Matrix
    // clients, the invitee never looking at their requests) is no friendship: no
    // `friend_accepted`.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&carol.token),
            json!({"preset": "private_chat", "is_direct": true, "invite": [bob.user_id]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("room_id").to_owned();
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{}/join", enc(&room)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(of_type(&server, &carol, "friend_accepted").await.is_empty());
}

#[tokio::test]
async fn chat_notifications_for_messages_mentions_and_group_invites() {
    let server = TestServer::start().await;
    let alice = signup(&server, "nma").await;
    let bob = signup(&server, "nmb").await;
    let dm = befriend(&server, &alice, &bob).await;

    let plain = send(
        &server,
        &alice,
        json!({"to": bob.user_id, "text": "lunch at noon?"}),
    )
    .await;
    let mention = send(
        &server,
        &alice,
        json!({"to": bob.user_id, "text": "nmb, bring the notes", "mentions": [bob.user_id]}),
    )
    .await;
    let page = feed(&server, &bob, "").await;
    let list = items(&page);
    assert_eq!(list[0]["type"], "mention", "{page}");
    assert_eq!(list[0]["message_id"], json!(mention));
    assert_eq!(list[0]["preview"], "nmb, bring the notes");
    assert_eq!(list[1]["type"], "message");
    assert_eq!(list[1]["message_id"], json!(plain));
    assert_eq!(list[1]["preview"], "lunch at noon?");
    assert_eq!(list[1]["from"], json!(alice.user_id));
    assert_eq!(list[1]["chat_id"], json!(dm));
    assert!(list[1]["created_at"].as_u64() <= list[0]["created_at"].as_u64());
    assert_eq!(page["unread_count"], 2);
    // Her own messages notify her of nothing.
    assert!(of_type(&server, &alice, "message").await.is_empty());

    // A long text is previewed by its start.
    let long = "x".repeat(500);
    send(&server, &alice, json!({"to": bob.user_id, "text": long})).await;
    let newest = &items(&feed(&server, &bob, "limit=1").await)[0];
    assert_eq!(
        newest["preview"].as_str().map(|p| p.chars().count()),
        Some(140)
    );

    // A group invite, previewed by the group's name.
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        json!({"name": "Study group", "members": [bob.user_id]}),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let invites = of_type(&server, &bob, "group_invite").await;
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert_eq!(invites[0]["chat_id"], group["id"]);
    assert_eq!(invites[0]["preview"], "Study group");
    assert_eq!(invites[0]["from"], json!(alice.user_id));
    assert_eq!(invites[0]["read"], false);
    let (status, _) = post(
        &server,
        &format!("/groups/{}/join", enc(group["id"].as_str().unwrap())),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        of_type(&server, &bob, "group_invite").await[0]["read"],
        true
    );

    // A blocked user's notifications are hidden.
    let (status, _) = post(
        &server,
        &format!("/users/{}/block", enc(&alice.user_id)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    let page = feed(&server, &bob, "limit=100").await;
    assert!(
        items(&page)
            .iter()
            .all(|n| n["from"] != json!(alice.user_id)),
        "{page}"
    );
    assert_eq!(page["unread_count"], 0);
}

#[tokio::test]
async fn chat_notifications_page_filter_and_read_marks() {
    let server = TestServer::start().await;
    let alice = signup(&server, "npa").await;
    let bob = signup(&server, "npb").await;
    let carol = signup(&server, "npc").await;
    let dm = befriend(&server, &alice, &bob).await;
    befriend(&server, &carol, &bob).await;

    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(
            send(
                &server,
                &alice,
                json!({"to": bob.user_id, "text": format!("message {i}")}),
            )
            .await,
        );
    }
    let from_carol = send(
        &server,
        &carol,
        json!({"to": bob.user_id, "text": "hello from carol"}),
    )
    .await;

    // Pages of two, newest first, without gaps or repeats.
    let mut seen = Vec::new();
    let mut query = "limit=2".to_owned();
    for _ in 0..10 {
        let page = feed(&server, &bob, &query).await;
        assert!(items(&page).len() <= 2, "{page}");
        seen.extend(items(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
    }
    let messages: Vec<&str> = seen
        .iter()
        .filter(|n| n["type"] == "message")
        .filter_map(|n| n["message_id"].as_str())
        .collect();
    let mut expected: Vec<&str> = sent.iter().map(String::as_str).collect();
    expected.push(&from_carol);
    expected.reverse();
    assert_eq!(messages, expected);
    let ids: HashSet<&str> = seen.iter().filter_map(|n| n["id"].as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "an ID repeats: {seen:?}");
    assert!(seen.iter().any(|n| n["type"] == "friend_request"));

    let page = feed(&server, &bob, "unread=true&limit=100").await;
    assert_eq!(page["unread_count"], 6, "{page}");
    assert_eq!(items(&page).len(), 6);
    assert!(items(&page).iter().all(|n| n["read"] == false));

    // Marking Carol's message read by ID.
    let carol_note = items(&page)
        .into_iter()
        .find(|n| n["message_id"] == json!(from_carol))
        .unwrap();
    mark_read(&server, &bob, json!({"ids": [carol_note["id"]]})).await;
    let page = feed(&server, &bob, "unread=true&limit=100").await;
    assert_eq!(page["unread_count"], 5);
    assert!(items(&page).iter().all(|n| n["id"] != carol_note["id"]));
    // ... sent a private read receipt: Matrix counts it read too.
    let (status, matrix) = server
        .get("/_matrix/client/v3/notifications", Some(&bob.token))
        .await;
    assert_eq!(status, 200, "{matrix}");
    let in_matrix = matrix["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["event"]["event_id"] == json!(from_carol))
        .expect("carol's message in Matrix notifications");
    assert_eq!(in_matrix["read"], true);

    // A read receipt from a Matrix client reads the feed: Alice's third message and those
    // before it.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/receipt/m.read/{}",
        enc(&dm),
        enc(&sent[2])
    );
    let (status, body) = server.post(&path, Some(&bob.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let page = feed(&server, &bob, "unread=true").await;
    let unread: Vec<String> = items(&page)
        .iter()
        .filter_map(|n| n["message_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(unread, [sent[4].clone(), sent[3].clone()]);
    assert_eq!(page["unread_count"], 2);

    // All read at once; what comes later is unread.
    mark_read(&server, &bob, json!({"all": true})).await;
    let page = feed(&server, &bob, "unread=true").await;
    assert_eq!(
        (page["unread_count"].as_u64(), items(&page).len()),
        (Some(0), 0),
        "{page}"
    );
    assert!(
        items(&feed(&server, &bob, "").await)
            .iter()
            .all(|n| n["read"] == true)
    );
    let later = send(
        &server,
        &alice,
        json!({"to": bob.user_id, "text": "one more"}),
    )
    .await;
    let page = feed(&server, &bob, "unread=true").await;
    assert_eq!(page["unread_count"], 1);
    assert_eq!(items(&page)[0]["message_id"], json!(later));
    // Marking read again is fine.
    mark_read(&server, &bob, json!({"ids": [items(&page)[0]["id"]]})).await;
    mark_read(&server, &bob, json!({"ids": [items(&page)[0]["id"]]})).await;
    assert_eq!(feed(&server, &bob, "").await["unread_count"], 0);
}

#[tokio::test]
async fn chat_notification_refusals() {
    let server = TestServer::start().await;
    let alice = signup(&server, "nra").await;
    let bob = signup(&server, "nrb").await;
    befriend(&server, &alice, &bob).await;
    send(&server, &alice, json!({"to": bob.user_id, "text": "hi"})).await;
    let bobs = items(&feed(&server, &bob, "").await);
    let bob_id = bobs[0]["id"].as_str().unwrap().to_owned();

    for (method, path) in [
        (Method::GET, "/notifications"),
        (Method::POST, "/notifications/read"),
    ] {
        let body = (method == Method::POST).then(|| json!({"all": true}));
        let (status, body) = call(&server, method, path, None, body).await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{path}: {body}"
        );
    }
    for query in [
        "unread=maybe",
        "limit=0",
        "limit=101",
        "limit=ten",
        "cursor=abc",
        "cursor=0",
    ] {
        let (status, body) = get(&server, &format!("/notifications?{query}"), &bob.token).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{query}: {body}"
        );
    }
    let too_many: Vec<String> = (0..101).map(|i| format!("m{i}")).collect();
    for body in [
        json!({}),
        json!({"ids": []}),
        json!({"all": false}),
        json!({"ids": ["not-an-id"]}),
        json!({"ids": [""]}),
        json!({"ids": [42]}),
        json!({"ids": too_many}),
        json!({"all": true, "ids": [bob_id]}),
        json!({"all": "yes"}),
    ] {
        let (status, answer) = post(&server, "/notifications/read", &bob.token, body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{body}: {answer}"
        );
    }
    // Unknown IDs, and other people's, are not found; nothing is marked then.
    for ids in [
        json!(["m999999"]),
        json!(["c999999"]),
        json!([bob_id, "m999999"]),
    ] {
        let (status, answer) = post(
            &server,
            "/notifications/read",
            &bob.token,
            json!({"ids": ids}),
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (404, "not_found"),
            "{ids}: {answer}"
        );
    }
    let (status, answer) = post(
        &server,
        "/notifications/read",
        &alice.token,
        json!({"ids": [bob_id]}),
    )
    .await;
    assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");
    assert_eq!(items(&feed(&server, &bob, "").await)[0]["read"], false);
}
