//! Chat API friends and messages: requests accepted, declined, withdrawn and ended, blocked
//! users; text and image messages, replies, mentions, edits, deletes, reactions, delivered and
//! read status, pagination, strangers answered 404; and the same conversation seen at the same
//! time by a matrix-sdk client logged in as the friend.

use std::io::Cursor;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat_common::{ChatUser, befriend, call, code, delete, enc, get, post, put, signup};
use crate::common::TestServer;

/// A PNG of `width` × `height`.
fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 40 % 256) as u8, (y * 40 % 256) as u8, 90])
    });
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode");
    out.into_inner()
}

/// Uploads bytes through the Matrix media API; returns the media ID (a Chat API file ID).
async fn upload(server: &TestServer, token: &str, name: &str, mime: &str, data: Vec<u8>) -> String {
    let response = server
        .http
        .post(server.url(&format!("/_matrix/media/v3/upload?filename={name}")))
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, mime)
        .body(data)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    let uri = body["content_uri"].as_str().expect("content_uri");
    uri.rsplit('/').next().expect("media ID").to_owned()
}

/// Sets the users `user` ignores (Matrix `m.ignored_user_list`, what blocking is).
async fn ignore(server: &TestServer, user: &ChatUser, others: &[&ChatUser]) {
    let ignored: serde_json::Map<String, Value> = others
        .iter()
        .map(|u| (u.user_id.clone(), json!({})))
        .collect();
    let path = format!(
        "/_matrix/client/v3/user/{}/account_data/m.ignored_user_list",
        enc(&user.user_id)
    );
    let (status, body) = server
        .call(
            Method::PUT,
            &path,
            Some(&user.token),
            Some(json!({ "ignored_users": ignored })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn add(server: &TestServer, from: &ChatUser, to: &str) -> (u16, Value) {
    post(
        server,
        "/friends/add",
        &from.token,
        json!({ "user_id": to }),
    )
    .await
}

async fn send(server: &TestServer, from: &ChatUser, body: Value) -> (u16, Value) {
    post(server, "/messages", &from.token, body).await
}

async fn send_text(server: &TestServer, from: &ChatUser, to: &str, text: &str) -> Value {
    let (status, body) = send(server, from, json!({ "to": to, "text": text })).await;
    assert_eq!(status, 201, "{body}");
    body
}

fn friend_ids(body: &Value) -> Vec<String> {
    body["friends"]
        .as_array()
        .expect("friends")
        .iter()
        .map(|f| f["user"]["user_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn request_ids(body: &Value, direction: &str) -> Vec<String> {
    body[direction]
        .as_array()
        .expect("requests")
        .iter()
        .map(|r| r["user"]["user_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The membership of `user` in `room` as the Matrix API reports it to `viewer`.
async fn matrix_membership(
    server: &TestServer,
    viewer: &ChatUser,
    room: &str,
    user: &str,
) -> String {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
        enc(room),
        enc(user)
    );
    let (status, body) = server.get(&path, Some(&viewer.token)).await;
    assert_eq!(status, 200, "{body}");
    body["membership"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn chat_friend_requests_accept_decline_remove_and_block() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    let dave = signup(&server, "dave").await;

    // Without a token; bad, unknown and self requests.
    let (status, body) = call(&server, Method::GET, "/friends", None, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = call(
        &server,
        Method::POST,
        "/friends/add",
        None,
        Some(json!({ "user_id": "bob" })),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let (status, body) = add(&server, &alice, &alice.user_id).await;
    assert_eq!((status, code(&body)), (400, "self"));
    let (status, body) = add(&server, &alice, "@nobody:localhost").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = add(&server, &alice, "@@bad").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let (status, body) = post(&server, "/friends/add", &alice.token, json!({})).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));

    // A request, seen from both sides; asking twice is pending.
    let (status, request) = add(&server, &alice, "bob").await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["direction"], "outgoing");
    assert_eq!(request["user"]["user_id"], json!(bob.user_id));
    let chat = request["chat_id"].as_str().expect("chat_id").to_owned();
    let (status, body) = add(&server, &alice, &bob.user_id).await;
    assert_eq!((status, code(&body)), (409, "request_pending"));
    let (_, requests) = get(&server, "/friends/requests", &bob.token).await;
    assert_eq!(request_ids(&requests, "incoming"), [alice.user_id.as_str()]);
    assert_eq!(requests["incoming"][0]["chat_id"], json!(chat));
    let (_, requests) = get(&server, "/friends/requests", &alice.token).await;
    assert_eq!(request_ids(&requests, "outgoing"), [bob.user_id.as_str()]);
    // Only friends message each other, and nobody reads a chat that is only a request.
    let (status, body) = send(&server, &alice, json!({ "to": bob.user_id, "text": "hi" })).await;
    assert_eq!((status, code(&body)), (403, "not_friends"));
    let (status, _) = get(
        &server,
        &format!("/messages/{}", enc(&bob.user_id)),
        &alice.token,
    )
    .await;
    assert_eq!(status, 404);

    // Accepted: friends both ways, in the same chat, which both Matrix accounts list as direct.
    let (status, friend) = post(
        &server,
        "/friends/accept",
        &bob.token,
        json!({ "user_id": "alice" }),
    )
    .await;
    assert_eq!(status, 200, "{friend}");
    assert_eq!(friend["chat_id"], json!(chat));
    assert_eq!(friend["user"]["user_id"], json!(alice.user_id));
    assert!(friend["since"].as_u64().unwrap() > 0);
    // Requests count as activity ("last seen"); online is what a sync or the stream sets.
    assert_eq!(friend["presence"], "offline");
    assert_eq!(friend["online"], false);
    assert!(friend["last_seen_at"].as_u64().is_some(), "{friend}");
    let (_, friends) = get(&server, "/friends", &alice.token).await;
    assert_eq!(friend_ids(&friends), [bob.user_id.as_str()]);
    let (_, friends) = get(&server, "/friends", &bob.token).await;
    assert_eq!(friend_ids(&friends), [alice.user_id.as_str()]);
    let (_, requests) = get(&server, "/friends/requests", &bob.token).await;
    assert_eq!(requests, json!({ "incoming": [], "outgoing": [] }));
    for (who, peer) in [(&alice, &bob), (&bob, &alice)] {
        let path = format!(
            "/_matrix/client/v3/user/{}/account_data/m.direct",
            enc(&who.user_id)
        );
        let (status, direct) = server.get(&path, Some(&who.token)).await;
        assert_eq!(status, 200, "{direct}");
        assert_eq!(direct[&peer.user_id], json!([chat]), "{}", who.user_id);
    }
    let (status, body) = add(&server, &bob, &alice.user_id).await;
    assert_eq!((status, code(&body)), (409, "already_friends"));
    let (status, body) = post(
        &server,
        "/friends/accept",
        &bob.token,
        json!({ "user_id": alice.user_id }),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "already_friends"));

    // Declined: gone for both; declining again finds nothing; asking again is a new chat.
    let (status, first) = add(&server, &carol, &alice.user_id).await;
    assert_eq!(status, 201, "{first}");
    let (status, _) = post(
        &server,
        "/friends/decline",
        &alice.token,
        json!({ "user_id": carol.user_id }),
    )
    .await;
    assert_eq!(status, 204);
    for who in [&alice, &carol] {
        let (_, requests) = get(&server, "/friends/requests", &who.token).await;
        assert_eq!(requests, json!({ "incoming": [], "outgoing": [] }));
    }
    let (status, body) = post(
        &server,
        "/friends/decline",
        &alice.token,
        json!({ "user_id": carol.user_id }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, second) = add(&server, &carol, &alice.user_id).await;
    assert_eq!(status, 201, "{second}");
    assert_ne!(second["chat_id"], first["chat_id"]);

    // Asking someone who already asked you accepts their request.
    let (status, friend) = add(&server, &alice, &carol.user_id).await;
    assert_eq!(status, 200, "{friend}");
    assert_eq!(friend["chat_id"], second["chat_id"]);

    // Removed: neither is the other's friend, the chat is closed to both.
    let (status, _) = post(
        &server,
        "/friends/remove",
        &bob.token,
        json!({ "user_id": alice.user_id }),
    )
    .await;
    assert_eq!(status, 204);
    let (_, friends) = get(&server, "/friends", &bob.token).await;
    assert!(friend_ids(&friends).is_empty());
    let (_, friends) = get(&server, "/friends", &alice.token).await;
    assert_eq!(friend_ids(&friends), [carol.user_id.as_str()]);
    let (status, body) = send(&server, &alice, json!({ "to": bob.user_id, "text": "hi" })).await;
    assert_eq!((status, code(&body)), (403, "not_friends"));
    let (status, _) = get(
        &server,
        &format!("/messages/{}", enc(&bob.user_id)),
        &bob.token,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = post(
        &server,
        "/friends/remove",
        &bob.token,
        json!({ "user_id": alice.user_id }),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"));

    // Withdrawn: the invite is taken back, as the Matrix API shows.
    let (status, request) = add(&server, &alice, &dave.user_id).await;
    assert_eq!(status, 201, "{request}");
    let chat = request["chat_id"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &server,
        "/friends/remove",
        &alice.token,
        json!({ "user_id": dave.user_id }),
    )
    .await;
    assert_eq!(status, 204);
    let (_, requests) = get(&server, "/friends/requests", &dave.token).await;
    assert_eq!(requests, json!({ "incoming": [], "outgoing": [] }));
    assert_eq!(
        matrix_membership(&server, &dave, &chat, &dave.user_id).await,
        "leave"
    );

    // Blocked (either way): no requests, and a friend who is blocked is hidden.
    ignore(&server, &dave, &[&alice]).await;
    let (status, body) = add(&server, &alice, &dave.user_id).await;
    assert_eq!((status, code(&body)), (403, "blocked"));
    let (status, body) = add(&server, &dave, &alice.user_id).await;
    assert_eq!((status, code(&body)), (403, "blocked"));
    ignore(&server, &carol, &[&alice]).await;
    for (who, peer) in [(&alice, &carol), (&carol, &alice)] {
        let (_, friends) = get(&server, "/friends", &who.token).await;
        assert!(!friend_ids(&friends).contains(&peer.user_id), "{friends}");
    }
    let (status, body) = send(
        &server,
        &alice,
        json!({ "to": carol.user_id, "text": "hi" }),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "blocked"));
    ignore(&server, &carol, &[]).await;
    let (_, friends) = get(&server, "/friends", &alice.token).await;
    assert_eq!(friend_ids(&friends), [carol.user_id.as_str()]);
}

async fn unreact(server: &TestServer, user: &ChatUser, path: &str, key: &str) -> (u16, Value) {
    call(
        server,
        Method::DELETE,
        path,
        Some(&user.token),
        Some(json!({ "key": key })),
    )
    .await
}

fn message_ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The message `id` as `user` reads it in a history page.
async fn read_message(server: &TestServer, user: &ChatUser, path: &str, id: &str) -> Value {
    let (status, page) = get(server, path, &user.token).await;
    assert_eq!(status, 200, "{page}");
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == json!(id))
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {page}"))
}

#[tokio::test]
async fn chat_messages_text_image_reply_edit_delete_reactions_status() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    let chat = befriend(&server, &alice, &bob).await;
    let to_bob = format!("/messages/{}", enc(&bob.user_id));
    let to_alice = format!("/messages/{}", enc(&alice.user_id));

    // Text.
    let hello = send_text(&server, &alice, &bob.user_id, "hello bob").await;
    assert_eq!(hello["type"], "text");
    assert_eq!(hello["text"], "hello bob");
    assert_eq!(hello["chat_id"], json!(chat));
    assert_eq!(hello["chat_type"], "direct");
    assert_eq!(hello["sender"], json!(alice.user_id));
    assert_eq!(
        (hello["edited"].clone(), hello["deleted"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(hello["status"]["state"], "sent");
    assert_eq!(hello["status"]["recipient_count"], 1);
    assert_eq!(
        hello["status"]["recipients"][0]["user_id"],
        json!(bob.user_id)
    );
    let hello_id = hello["id"].as_str().unwrap().to_owned();

    // The same client_txn_id twice is one message.
    let body = json!({ "to": "bob", "text": "once", "client_txn_id": "txn-1" });
    let (status, first) = send(&server, &alice, body.clone()).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = send(&server, &alice, body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(first["id"], again["id"]);

    // An image: the file's type, size and pixel size.
    let data = png(4, 3);
    let size = data.len();
    let file_id = upload(&server, &alice.token, "cat.png", "image/png", data).await;
    let (status, image) = send(
        &server,
        &alice,
        json!({ "to": bob.user_id, "file_id": file_id, "text": "my cat" }),
    )
    .await;
    assert_eq!(status, 201, "{image}");
    assert_eq!(image["type"], "image");
    assert_eq!(image["text"], "my cat");
    let file = &image["file"];
    assert_eq!(file["id"], json!(file_id));
    assert_eq!(file["name"], "cat.png");
    assert_eq!(file["mime_type"], "image/png");
    assert_eq!(file["size"], json!(size));
    assert_eq!(
        (file["width"].as_u64(), file["height"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(file["uploader"], json!(alice.user_id));
    let download = server
        .http
        .get(server.url(file["url"].as_str().unwrap()))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status().as_u16(), 200);
    // Someone else's upload cannot be sent.
    let (status, body) = send(
        &server,
        &bob,
        json!({ "to": alice.user_id, "file_id": file_id }),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));

    // A reply with a mention.
    let (status, reply) = send(
        &server,
        &bob,
        json!({ "to": alice.username, "text": "hi alice", "reply_to": hello_id, "mentions": [alice.user_id] }),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["reply_to"], json!(hello_id));
    assert_eq!(reply["mentions"], json!([alice.user_id]));
    let reply_id = reply["id"].as_str().unwrap().to_owned();
    // Alice has not fetched it yet.
    let status_path = format!("/messages/{}/status", enc(&reply_id));
    let (_, reply_status) = get(&server, &status_path, &bob.token).await;
    assert_eq!(reply_status["state"], "sent", "{reply_status}");
    assert_eq!(reply_status["message_id"], json!(reply_id));

    // Bad fields.
    let long = "x".repeat(32 * 1024 + 1);
    for body in [
        json!({ "text": "no to" }),
        json!({ "to": bob.user_id }),
        json!({ "to": bob.user_id, "text": "   " }),
        json!({ "to": bob.user_id, "text": long }),
        json!({ "to": bob.user_id, "text": "x", "type": "sticker" }),
        json!({ "to": bob.user_id, "type": "image" }),
        json!({ "to": bob.user_id, "file_id": file_id, "type": "text" }),
        json!({ "to": bob.user_id, "text": "x", "reply_to": "nope" }),
        json!({ "to": bob.user_id, "text": "x", "reply_to": "$unknown:localhost" }),
        json!({ "to": bob.user_id, "text": "x", "mentions": ["@@"] }),
        json!({ "to": bob.user_id, "text": "x", "mentions": [carol.user_id] }),
        json!({ "to": bob.user_id, "text": "x", "mentions": ["nobody"] }),
        json!({ "to": bob.user_id, "text": "x", "client_txn_id": "" }),
        json!({ "to": "not:a:user", "text": "x" }),
        json!({ "to": bob.user_id, "text": 5 }),
    ] {
        let (status, answer) = send(&server, &alice, body.clone()).await;
        assert_eq!((status, code(&answer)), (400, "invalid_request"), "{body}");
    }
    let (status, body) = send(
        &server,
        &alice,
        json!({ "to": alice.user_id, "text": "me" }),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "self"));
    let (status, body) = call(
        &server,
        Method::POST,
        "/messages",
        None,
        Some(json!({ "to": bob.user_id, "text": "x" })),
    )
    .await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));

    // A stranger sees none of it.
    let (status, body) = send(&server, &carol, json!({ "to": bob.user_id, "text": "hey" })).await;
    assert_eq!((status, code(&body)), (403, "not_friends"));
    let (status, body) = send(&server, &carol, json!({ "to": chat, "text": "hey" })).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, _) = get(&server, &to_alice, &carol.token).await;
    assert_eq!(status, 404);
    let (status, _) = get(
        &server,
        &format!("/messages/group/{}", enc(&chat)),
        &carol.token,
    )
    .await;
    assert_eq!(status, 404);
    let message = format!("/messages/{}", enc(&hello_id));
    let (status, _) = get(&server, &format!("{message}/status"), &carol.token).await;
    assert_eq!(status, 404);
    let (status, _) = put(&server, &message, &carol.token, json!({ "text": "mine" })).await;
    assert_eq!(status, 404);
    let (status, _) = delete(&server, &message, &carol.token).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &server,
        &format!("{message}/reactions"),
        &carol.token,
        json!({ "key": "x" }),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(&server, &format!("{message}/read"), &carol.token, json!({})).await;
    assert_eq!(status, 404);

    // Edits: the sender's only; the text changes for both.
    let (status, body) = put(
        &server,
        &message,
        &bob.token,
        json!({ "text": "not yours" }),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = put(&server, &message, &alice.token, json!({ "text": "" })).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    // The longest text fits an edit too (its fallback body is cut short).
    let longest = "y".repeat(32 * 1024);
    let (status, edited) = put(&server, &message, &alice.token, json!({ "text": longest })).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["text"], json!(longest));
    let (status, edited) = put(
        &server,
        &message,
        &alice.token,
        json!({ "text": "hello, bob!" }),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        (edited["text"].clone(), edited["edited"].clone()),
        (json!("hello, bob!"), json!(true))
    );
    assert!(edited["edited_at"].as_u64().is_some());
    let seen = read_message(&server, &bob, &to_alice, &hello_id).await;
    assert_eq!(seen["text"], "hello, bob!");

    // Reactions: once per key and user; taken back.
    let reactions = format!("{message}/reactions");
    let (status, body) = post(&server, &reactions, &bob.token, json!({ "key": "👍" })).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, json!({ "key": "👍", "message_id": hello_id }));
    let (status, body) = post(&server, &reactions, &bob.token, json!({ "key": "👍" })).await;
    assert_eq!((status, code(&body)), (409, "duplicate_reaction"));
    let (status, _) = post(&server, &reactions, &alice.token, json!({ "key": "👍" })).await;
    assert_eq!(status, 201);
    let (status, body) = post(
        &server,
        &reactions,
        &alice.token,
        json!({ "key": "k".repeat(65) }),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
    let seen = read_message(&server, &alice, &to_bob, &hello_id).await;
    assert_eq!(seen["reactions"][0]["key"], "👍");
    assert_eq!(seen["reactions"][0]["count"], 2);
    assert_eq!(seen["reactions"][0]["mine"], true);
    let (status, _) = unreact(&server, &bob, &reactions, "👍").await;
    assert_eq!(status, 204);
    let (status, body) = unreact(&server, &bob, &reactions, "👍").await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let seen = read_message(&server, &bob, &to_alice, &hello_id).await;
    assert_eq!(
        seen["reactions"],
        json!([{ "key": "👍", "count": 1, "users": [alice.user_id], "mine": false }])
    );

    // Delivered once Bob has fetched the conversation, read once he says so.
    let (_, status_body) = get(
        &server,
        &format!("/messages/{}/status", enc(&hello_id)),
        &alice.token,
    )
    .await;
    assert_eq!(status_body["message_id"], json!(hello_id));
    assert_eq!(
        status_body["recipients"][0]["state"], "delivered",
        "{status_body}"
    );
    assert!(
        status_body["recipients"][0]["delivered_at"]
            .as_u64()
            .is_some()
    );
    let (status, _) = post(
        &server,
        &format!("/messages/{}/read", enc(&hello_id)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    let (_, status_body) = get(
        &server,
        &format!("/messages/{}/status", enc(&hello_id)),
        &alice.token,
    )
    .await;
    assert_eq!(status_body["state"], "read", "{status_body}");
    assert!(status_body["recipients"][0]["read_at"].as_u64().is_some());
    // Bob's reply reached Alice when she fetched the conversation.
    let (_, reply_status) = get(&server, &status_path, &bob.token).await;
    assert_eq!(reply_status["state"], "delivered", "{reply_status}");

    // Deletes: the sender's own in a direct chat; deleted for both, and again is fine.
    let (status, body) = delete(&server, &message, &bob.token).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, _) = delete(&server, &message, &alice.token).await;
    assert_eq!(status, 204);
    let (status, _) = delete(&server, &message, &alice.token).await;
    assert_eq!(status, 204);
    let seen = read_message(&server, &bob, &to_alice, &hello_id).await;
    assert_eq!(seen["type"], "deleted");
    assert_eq!(seen["deleted"], true);
    assert!(seen["text"].is_null() && seen["file"].is_null());
    let (status, body) = put(&server, &message, &alice.token, json!({ "text": "back" })).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));

    // Bad paths.
    let (status, body) = get(&server, "/messages/%24nope/status", &alice.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = get(&server, "/messages/not-an-id/status", &alice.token).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"));
}

#[tokio::test]
async fn chat_messages_paginate_without_gaps_in_direct_chats_and_groups() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    let direct = befriend(&server, &alice, &bob).await;
    let mut sent = Vec::new();
    for i in 0..23 {
        let from = if i % 3 == 0 { &bob } else { &alice };
        let to = if i % 3 == 0 { &alice } else { &bob };
        let message = send_text(&server, from, &to.user_id, &format!("m{i}")).await;
        let id = message["id"].as_str().unwrap().to_owned();
        // Edits and reactions are folded into their messages, not listed.
        if i % 5 == 0 {
            let path = format!("/messages/{}", enc(&id));
            let (status, _) = put(
                &server,
                &path,
                &from.token,
                json!({ "text": format!("m{i}!") }),
            )
            .await;
            assert_eq!(status, 200);
            let (status, _) = post(
                &server,
                &format!("{path}/reactions"),
                &to.token,
                json!({ "key": "ok" }),
            )
            .await;
            assert_eq!(status, 201);
        }
        sent.push(id);
    }
    sent.reverse();
    let path = format!("/messages/{}", enc(&bob.user_id));
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            Some(c) => format!("{path}?limit=5&cursor={}", enc(c)),
            None => format!("{path}?limit=5"),
        };
        let (status, page) = get(&server, &url, &alice.token).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["messages"].as_array().unwrap().len() <= 5);
        seen.extend(message_ids(&page));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, sent, "every message once, newest first");
    let (_, page) = get(
        &server,
        &format!("/messages/{}?limit=100", enc(&alice.user_id)),
        &bob.token,
    )
    .await;
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(page["messages"][22]["text"], "m0!");
    for query in ["limit=0", "limit=101", "limit=x", "cursor=abc", "cursor=0"] {
        let (status, body) = get(&server, &format!("{path}?{query}"), &alice.token).await;
        assert_eq!((status, code(&body)), (400, "invalid_request"), "{query}");
    }
    let (status, body) = call(&server, Method::GET, &path, None, None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));

    // A group (a room of both, made through the Matrix API): its members post and read it.
    let (status, created) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&alice.token),
            json!({ "name": "study", "invite": [bob.user_id] }),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let group = created["room_id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/join/{}", enc(&group)),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let from_bob = send_text(&server, &bob, &group, "group hello").await;
    assert_eq!(from_bob["chat_type"], "group");
    let from_alice = send_text(&server, &alice, &group, "welcome").await;
    let group_path = format!("/messages/group/{}", enc(&group));
    let (status, page) = get(&server, &group_path, &bob.token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        message_ids(&page),
        [from_alice["id"].clone(), from_bob["id"].clone()].map(|v| v.as_str().unwrap().to_owned())
    );
    // Not a member: 404 for reading and posting; a direct chat is no group.
    let (status, body) = get(&server, &group_path, &carol.token).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = send(&server, &carol, json!({ "to": group, "text": "let me in" })).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    assert_eq!(from_bob["chat_id"], json!(group));
    let (status, _) = get(
        &server,
        &format!("/messages/group/{}", enc(&direct)),
        &alice.token,
    )
    .await;
    assert_eq!(status, 404);
    // In a group, a member cannot delete another's message, the admin can.
    let bob_message = format!("/messages/{}", enc(from_bob["id"].as_str().unwrap()));
    let alice_message = format!("/messages/{}", enc(from_alice["id"].as_str().unwrap()));
    let (status, body) = delete(&server, &alice_message, &bob.token).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, _) = delete(&server, &bob_message, &alice.token).await;
    assert_eq!(status, 204);
}

/// One matrix-sdk sync that waits up to a second for news.
async fn sdk_sync(client: &matrix_sdk::Client) -> matrix_sdk::sync::SyncResponse {
    client
        .sync_once(matrix_sdk::config::SyncSettings::default().timeout(Duration::from_secs(1)))
        .await
        .expect("sync")
}

#[tokio::test]
async fn chat_conversation_seen_by_a_matrix_sdk_client() {
    use matrix_sdk::ruma::OwnedRoomId;
    use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
    use matrix_sdk::ruma::api::client::room::create_room;
    use matrix_sdk::ruma::events::receipt::ReceiptThread;

    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = crate::sdk::sdk_user(&server, "bob").await;
    let bob_id = bob.user_id().expect("logged in").to_string();

    // Alice asks through the Chat API; Bob's client sees an invite to a direct chat and joins.
    let (status, request) = add(&server, &alice, &bob_id).await;
    assert_eq!(status, 201, "{request}");
    let chat: OwnedRoomId = request["chat_id"].as_str().unwrap().try_into().unwrap();
    let mut invited = false;
    for _ in 0..10 {
        if sdk_sync(&bob).await.rooms.invited.contains_key(&chat) {
            invited = true;
            break;
        }
    }
    assert!(
        invited,
        "the friend request reaches the Matrix client as an invite"
    );
    bob.join_room_by_id(&chat).await.expect("join");
    let (_, friends) = get(&server, "/friends", &alice.token).await;
    assert_eq!(
        friend_ids(&friends),
        [bob_id.as_str()],
        "joining accepted the request"
    );
    sdk_sync(&bob).await;
    let room = bob.get_room(&chat).expect("room known");
    assert!(
        room.is_direct().await.expect("is_direct"),
        "a direct chat for the client too"
    );

    // Alice writes: a text, a reply to it, an image.
    let text = send_text(&server, &alice, &bob_id, "hello from the chat api").await;
    let text_id = text["id"].as_str().unwrap().to_owned();
    let (status, reply) = send(
        &server,
        &alice,
        json!({ "to": bob_id, "text": "and a reply", "reply_to": text_id, "mentions": [bob_id] }),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let file_id = upload(&server, &alice.token, "pic.png", "image/png", png(8, 6)).await;
    let (status, image) = send(&server, &alice, json!({ "to": bob_id, "file_id": file_id })).await;
    assert_eq!(status, 201, "{image}");
    let image_id = image["id"].as_str().unwrap().to_owned();

    // Bob's client receives all three as Matrix messages.
    let mut received: Vec<Value> = Vec::new();
    for _ in 0..15 {
        let response = sdk_sync(&bob).await;
        if let Some(update) = response.rooms.joined.get(&chat) {
            for event in &update.timeline.events {
                let value: Value = event.raw().deserialize_as().expect("json");
                if value["type"] == "m.room.message" {
                    received.push(value);
                }
            }
        }
        if received.iter().any(|e| e["event_id"] == json!(image_id)) {
            break;
        }
    }
    let by_id = |id: &str| {
        received
            .iter()
            .find(|e| e["event_id"] == json!(id))
            .unwrap_or_else(|| panic!("{id} not received: {received:?}"))
            .clone()
    };
    let got = by_id(&text_id);
    assert_eq!(got["content"]["msgtype"], "m.text");
    assert_eq!(got["content"]["body"], "hello from the chat api");
    let got = by_id(reply["id"].as_str().unwrap());
    assert_eq!(
        got["content"]["m.relates_to"]["m.in_reply_to"]["event_id"],
        json!(text_id)
    );
    assert_eq!(got["content"]["m.mentions"]["user_ids"], json!([bob_id]));
    let got = by_id(&image_id);
    assert_eq!(got["content"]["msgtype"], "m.image");
    assert_eq!(got["content"]["info"]["mimetype"], "image/png");
    assert_eq!(
        (
            got["content"]["info"]["w"].as_u64(),
            got["content"]["info"]["h"].as_u64()
        ),
        (Some(8), Some(6))
    );
    assert!(got["content"]["url"].as_str().unwrap().ends_with(&file_id));

    // Bob answers from his client (a reply) and marks the image read.
    let answer = room
        .send_raw(
            "m.room.message",
            json!({ "msgtype": "m.text", "body": "hi alice, from matrix",
                "m.relates_to": { "m.in_reply_to": { "event_id": image_id } } }),
        )
        .await
        .expect("send")
        .response
        .event_id
        .to_string();
    room.send_single_receipt(
        ReceiptType::Read,
        ReceiptThread::Unthreaded,
        image_id.as_str().try_into().unwrap(),
    )
    .await
    .expect("receipt");

    // Alice sees the answer first in the conversation, and her messages read.
    let (status, page) = get(
        &server,
        &format!("/messages/{}", enc(&bob_id)),
        &alice.token,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let newest = &page["messages"][0];
    assert_eq!(newest["id"], json!(answer));
    assert_eq!(newest["sender"], json!(bob_id));
    assert_eq!(newest["text"], "hi alice, from matrix");
    assert_eq!(newest["reply_to"], json!(image_id));
    assert_eq!(
        message_ids(&page)[1..],
        [
            image_id.clone(),
            reply["id"].as_str().unwrap().to_owned(),
            text_id.clone()
        ]
    );
    for message in page["messages"].as_array().unwrap()[1..].iter() {
        assert_eq!(message["status"]["state"], "read", "{message}");
    }
    assert_eq!(page["messages"][1]["file"]["width"], 8);

    // A direct chat started from the Matrix client is a friend request to a Chat API user.
    let carol = signup(&server, "carol").await;
    let mut create = create_room::v3::Request::new();
    create.invite = vec![carol.user_id.as_str().try_into().unwrap()];
    create.is_direct = true;
    create.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
    let dm = bob.send(create).await.expect("createRoom").room_id;
    let (_, requests) = get(&server, "/friends/requests", &carol.token).await;
    assert_eq!(request_ids(&requests, "incoming"), [bob_id.as_str()]);
    assert_eq!(requests["incoming"][0]["chat_id"], json!(dm));
    let (status, friend) = post(
        &server,
        "/friends/accept",
        &carol.token,
        json!({ "user_id": bob_id }),
    )
    .await;
    assert_eq!(status, 200, "{friend}");
    let hi = send_text(&server, &carol, &bob_id, "hi bob").await;
    assert_eq!(hi["chat_id"], json!(dm));
}
