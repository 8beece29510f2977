//! The Chat API's WebSocket stream (`GET /ws`): authentication, live events in order, resuming
//! after a disconnect, heartbeats, client frames, and the slow-consumer close.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::chat_common::{ChatUser, befriend, call, enc, get, post, put, signup};
use crate::common::{TestServer, User, send_text};

/// How long a test waits for one frame.
const FRAME_WAIT: Duration = Duration::from_secs(15);

/// A stream client that remembers the last cursor it saw.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    cursor: Option<String>,
}

fn ws_url(server: &TestServer, cursor: Option<&str>) -> String {
    let mut url = format!("{}/ws", server.base.replacen("http://", "ws://", 1));
    if let Some(cursor) = cursor {
        url.push_str(&format!("?cursor={}", enc(cursor)));
    }
    url
}

impl Client {
    /// Connects with the token in the `Authorization` header (no `ready` read yet).
    async fn open(server: &TestServer, token: &str, cursor: Option<&str>) -> Self {
        let mut request = ws_url(server, cursor).into_client_request().unwrap();
        request
            .headers_mut()
            .insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket handshake");
        Self { ws, cursor: None }
    }

    /// Connects and reads `ready`.
    async fn connect(server: &TestServer, user: &ChatUser, cursor: Option<&str>) -> (Self, Value) {
        let mut client = Self::open(server, &user.token, cursor).await;
        let ready = client.next().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        (client, ready)
    }

    /// Connects without a header: authenticates with the first frame.
    async fn connect_by_frame(server: &TestServer, token: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url(server, None))
            .await
            .expect("websocket handshake");
        let mut client = Self { ws, cursor: None };
        client.send(json!({ "type": "auth", "token": token })).await;
        client
    }

    async fn send(&mut self, frame: Value) {
        use futures_util::SinkExt;
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("frame sent");
    }

    /// The next text frame (WebSocket pings are answered by the client stack).
    async fn next(&mut self) -> Value {
        use futures_util::StreamExt;
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("frame read");
            match message {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    // Every frame is one the OpenAPI document describes.
                    crate::chat_spec::check_schema("WsServerFrame", &frame);
                    if let Some(cursor) = frame["cursor"].as_str() {
                        self.cursor = Some(cursor.to_owned());
                    }
                    return frame;
                }
                Message::Close(close) => panic!("closed unexpectedly: {close:?}"),
                _ => continue,
            }
        }
    }

    /// The next frame of one of `types`, skipping the others (heartbeats, presence, …).
    async fn next_of(&mut self, types: &[&str]) -> Value {
        loop {
            let frame = self.next().await;
            if types.contains(&frame["type"].as_str().unwrap_or("")) {
                return frame;
            }
        }
    }

    /// Reads until the server's close frame: its code and reason, and the frames before it.
    async fn closed(&mut self, wait: Duration) -> (u16, String, Vec<Value>) {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("closed in time");
            match message {
                Some(Ok(Message::Close(Some(close)))) => {
                    return (u16::from(close.code), close.reason.to_string(), frames);
                }
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    crate::chat_spec::check_schema("WsServerFrame", &frame);
                    frames.push(frame);
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }
}

/// The `common` user of a Chat API user, for the Matrix API helpers.
fn matrix(user: &ChatUser) -> User {
    User {
        token: user.token.clone(),
        id: user.user_id.clone(),
    }
}

async fn send_message(server: &TestServer, from: &ChatUser, to: &str, text: &str) -> String {
    let (status, body) = post(
        server,
        "/messages",
        &from.token,
        json!({ "to": to, "text": text }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("id").to_owned()
}

fn services(server: &TestServer) -> std::sync::Arc<roost::service::Services> {
    server.server.as_ref().expect("running").services()
}

#[tokio::test]
async fn chat_ws_authenticates_by_header_and_by_first_frame() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;

    let (_client, ready) = Client::connect(&server, &alice, None).await;
    assert_eq!(ready["data"]["user_id"], alice.user_id.as_str());
    assert_eq!(ready["data"]["resumed"], false);
    let cursor = ready["cursor"].as_str().expect("cursor");
    // The cursor is a sync token: `/sync` takes it.
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={cursor}&timeout=0"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut by_frame = Client::connect_by_frame(&server, &alice.token).await;
    let ready = by_frame.next().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["data"]["user_id"], alice.user_id.as_str());

    // A second auth frame is an error, and the connection stays open.
    by_frame
        .send(json!({ "type": "auth", "token": alice.token }))
        .await;
    let error = by_frame.next_of(&["error"]).await;
    assert_eq!(error["data"]["code"], "invalid_request", "{error}");
    by_frame.send(json!({ "type": "ping" })).await;
    assert_eq!(by_frame.next_of(&["pong"]).await["type"], "pong");
}

#[tokio::test]
async fn chat_ws_refuses_bad_tokens_with_4001_and_bad_requests() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;

    let mut client = Client::open(&server, "not-a-token", None).await;
    let (code, _, frames) = client.closed(FRAME_WAIT).await;
    assert_eq!(code, 4001);
    assert!(frames.is_empty(), "{frames:?}");

    let mut client = Client::connect_by_frame(&server, "not-a-token").await;
    assert_eq!(client.closed(FRAME_WAIT).await.0, 4001);

    // The first frame must be the auth frame.
    let (ws, _) = tokio_tungstenite::connect_async(ws_url(&server, None))
        .await
        .unwrap();
    let mut client = Client { ws, cursor: None };
    client.send(json!({ "type": "ping" })).await;
    assert_eq!(client.closed(FRAME_WAIT).await.0, 4001);

    // A logged-out session's token.
    let (status, _) = call(&server, Method::POST, "/logout", Some(&alice.token), None).await;
    assert_eq!(status, 204);
    let mut client = Client::open(&server, &alice.token, None).await;
    assert_eq!(client.closed(FRAME_WAIT).await.0, 4001);

    // A cursor that is not one, or from the future, is refused before the upgrade.
    let bob = signup(&server, "bob").await;
    for cursor in ["nonsense", "s999999999"] {
        let mut request = ws_url(&server, Some(cursor)).into_client_request().unwrap();
        request.headers_mut().insert(
            AUTHORIZATION,
            format!("Bearer {}", bob.token).parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("cursor {cursor}: {other:?}"),
        }
    }

    // A plain GET is told to upgrade.
    let (status, body) = get(&server, "/ws", &bob.token).await;
    assert_eq!(status, 426, "{body}");
    assert_eq!(body["error"]["code"], "upgrade_required");
}

#[tokio::test]
async fn chat_ws_streams_friends_messages_reactions_typing_and_receipts_in_order() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let (mut a, _) = Client::connect(&server, &alice, None).await;
    let (mut b, _) = Client::connect(&server, &bob, None).await;

    // A friend request reaches both sides, then its acceptance.
    let (status, body) = post(
        &server,
        "/friends/add",
        &alice.token,
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let request = b.next_of(&["friend.request"]).await;
    assert_eq!(request["data"]["direction"], "incoming", "{request}");
    assert_eq!(request["data"]["user"]["user_id"], alice.user_id.as_str());
    let chat = request["data"]["chat_id"].as_str().unwrap().to_owned();
    // The invite is in Bob's notification feed too.
    let notification = b.next_of(&["notification"]).await;
    assert_eq!(
        notification["data"]["type"], "friend_request",
        "{notification}"
    );
    assert_eq!(notification["data"]["from"], alice.user_id.as_str());
    assert_eq!(notification["data"]["chat_id"], chat.as_str());
    // Alice's own request shows as outgoing; the direct chat being made never reads as a group.
    let mine = loop {
        let frame = a.next().await;
        assert_ne!(frame["type"], "group.updated", "{frame}");
        if frame["type"] == "friend.request" {
            break frame;
        }
    };
    assert_eq!(mine["data"]["direction"], "outgoing", "{mine}");
    assert_eq!(mine["data"]["chat_id"], chat.as_str());
    let (status, body) = post(
        &server,
        "/friends/accept",
        &bob.token,
        json!({ "user_id": alice.user_id }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let accepted = a.next_of(&["friend.accepted"]).await;
    assert_eq!(
        accepted["data"]["user"]["user_id"],
        bob.user_id.as_str(),
        "{accepted}"
    );
    assert_eq!(accepted["data"]["chat_id"], chat.as_str());
    let accepted = b.next_of(&["friend.accepted"]).await;
    assert_eq!(
        accepted["data"]["user"]["user_id"],
        alice.user_id.as_str(),
        "{accepted}"
    );

    // A message, its edit, a reaction and its removal, then its deletion: in this order.
    let id = send_message(&server, &alice, &bob.user_id, "hello bob").await;
    let (status, body) = put(
        &server,
        &format!("/messages/{}", enc(&id)),
        &alice.token,
        json!({ "text": "hello, bob" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &server,
        &format!("/messages/{}/reactions", enc(&id)),
        &bob.token,
        json!({ "key": "👍" }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("/messages/{}/reactions", enc(&id)),
        Some(&bob.token),
        Some(json!({ "key": "👍" })),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = call(
        &server,
        Method::DELETE,
        &format!("/messages/{}", enc(&id)),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let kinds = [
        "message.new",
        "message.edited",
        "reaction.added",
        "reaction.removed",
        "message.deleted",
    ];
    for client in [&mut a, &mut b] {
        let mut seen: Vec<Value> = Vec::new();
        while seen.len() < kinds.len() {
            let frame = client.next_of(&kinds).await;
            // Frames a resumption repeats would be de-duplicated: none here.
            seen.push(frame);
        }
        let types: Vec<&str> = seen.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(types, kinds);
        let new = &seen[0]["data"];
        assert_eq!(new["id"], id.as_str());
        assert_eq!(new["chat_id"], chat.as_str());
        assert_eq!(new["sender"], alice.user_id.as_str());
        let edited = &seen[1]["data"];
        assert_eq!(edited["id"], id.as_str());
        assert_eq!(edited["text"], "hello, bob");
        assert_eq!(edited["edited"], true);
        let added = &seen[2]["data"];
        assert_eq!(added["message_id"], id.as_str());
        assert_eq!(added["key"], "👍");
        assert_eq!(added["user_id"], bob.user_id.as_str());
        let removed = &seen[3]["data"];
        assert_eq!(removed["reaction_id"], added["reaction_id"]);
        assert_eq!(removed["reactions"], json!([]));
        let deleted = &seen[4]["data"];
        assert_eq!(deleted["message_id"], id.as_str());
        assert_eq!(deleted["deleted_by"], alice.user_id.as_str());
        // Every frame carries a cursor.
        assert!(
            seen.iter()
                .all(|f| f["cursor"].as_str().is_some_and(|c| c.starts_with('s')))
        );
    }

    // Bob's stream took the next message: Alice sees it delivered, then read.
    let id = send_message(&server, &alice, &bob.user_id, "are you there?").await;
    let new = b.next_of(&["message.new"]).await;
    assert_eq!(new["data"]["id"], id.as_str());
    let notification = b.next_of(&["notification"]).await;
    assert_eq!(notification["data"]["type"], "message", "{notification}");
    assert_eq!(notification["data"]["message_id"], id.as_str());
    assert_eq!(notification["data"]["read"], false);
    // (Earlier messages were delivered too.)
    let receipt = loop {
        let receipt = a.next_of(&["receipt"]).await;
        if receipt["data"]["message_id"] == id.as_str() {
            break receipt;
        }
    };
    assert_eq!(
        receipt["data"]["user_id"],
        bob.user_id.as_str(),
        "{receipt}"
    );
    assert_eq!(receipt["data"]["state"], "delivered");
    let (status, body) = post(
        &server,
        &format!("/messages/{}/read", enc(&id)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let receipt = loop {
        let receipt = a.next_of(&["receipt"]).await;
        if receipt["data"]["state"] == "read" && receipt["data"]["message_id"] == id.as_str() {
            break receipt;
        }
    };
    assert_eq!(receipt["data"]["message_id"], id.as_str(), "{receipt}");
    assert_eq!(receipt["data"]["user_id"], bob.user_id.as_str());

    // Typing through the Matrix API.
    let (status, body) =
        crate::common::set_typing(&server, &matrix(&alice), &chat, true, None).await;
    assert_eq!(status, 200, "{body}");
    let typing = b.next_of(&["typing"]).await;
    assert_eq!(typing["data"]["chat_id"], chat.as_str());
    assert_eq!(typing["data"]["user_ids"], json!([alice.user_id]));

    // Ending the friendship.
    let (status, body) = post(
        &server,
        "/friends/remove",
        &alice.token,
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    for client in [&mut b, &mut a] {
        let removed = client.next_of(&["friend.removed"]).await;
        assert_eq!(removed["data"]["chat_id"], chat.as_str(), "{removed}");
        assert_eq!(removed["data"]["reason"], "removed");
    }
}

#[tokio::test]
async fn chat_ws_shows_group_changes() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    befriend(&server, &alice, &bob).await;
    let (mut b, _) = Client::connect(&server, &bob, None).await;
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        json!({ "name": "study group", "members": [bob.user_id] }),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap();
    let invited = b.next_of(&["group.updated"]).await;
    assert_eq!(invited["data"]["group_id"], group_id, "{invited}");
    assert_eq!(invited["data"]["change"], "member");
    assert_eq!(invited["data"]["user_id"], bob.user_id.as_str());
    assert_eq!(invited["data"]["membership"], "invite");
    assert_eq!(invited["data"]["group"]["name"], "study group");
    assert_eq!(invited["data"]["group"]["my_membership"], "invite");
    // A summary and the member the change is about, never the whole member list.
    assert_eq!(invited["data"]["group"]["member_count"], 2, "{invited}");
    assert_eq!(invited["data"]["group"]["my_role"], "member");
    assert!(invited["data"]["group"].get("members").is_none());
    assert_eq!(
        invited["data"]["member"]["user"]["user_id"],
        bob.user_id.as_str()
    );
    assert_eq!(invited["data"]["member"]["role"], "member");

    let (status, body) = post(
        &server,
        &format!("/groups/{}/join", enc(group_id)),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let joined = b.next_of(&["group.updated"]).await;
    assert_eq!(joined["data"]["membership"], "join", "{joined}");
    assert_eq!(joined["data"]["group"]["my_membership"], "join");
    let (status, body) = put(
        &server,
        &format!("/groups/{}", enc(group_id)),
        &alice.token,
        json!({ "topic": "exams" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let topic = b.next_of(&["group.updated"]).await;
    assert_eq!(topic["data"]["change"], "topic", "{topic}");
    assert_eq!(topic["data"]["by"], alice.user_id.as_str());
    assert_eq!(topic["data"]["group"]["topic"], "exams");
    let id = send_message(&server, &alice, group_id, "welcome").await;
    let new = b.next_of(&["message.new"]).await;
    assert_eq!(new["data"]["id"], id.as_str());
    assert_eq!(new["data"]["chat_type"], "group");
}

#[tokio::test]
async fn chat_ws_signals_calls() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let chat = befriend(&server, &alice, &bob).await;
    let (mut a, _) = Client::connect(&server, &alice, None).await;
    let (mut b, _) = Client::connect(&server, &bob, None).await;
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let (status, call) = post(
        &server,
        "/call/start",
        &alice.token,
        json!({ "to": bob.user_id, "kind": "voice", "sdp_offer": offer }),
    )
    .await;
    assert_eq!(status, 201, "{call}");
    let call_id = call["id"].as_str().unwrap().to_owned();
    let invite = b.next_of(&["call.invite"]).await;
    assert_eq!(invite["data"]["call_id"], call_id.as_str(), "{invite}");
    assert_eq!(invite["data"]["chat_id"], chat.as_str());
    assert_eq!(invite["data"]["from"], alice.user_id.as_str());
    assert_eq!(invite["data"]["kind"], "voice");
    assert_eq!(invite["data"]["sdp_offer"], offer);
    assert_eq!(invite["data"]["call"]["id"], call_id.as_str());

    let answer = offer.replace("o=- 1 1", "o=- 2 2");
    let (status, body) = post(
        &server,
        "/call/answer",
        &bob.token,
        json!({ "call_id": call_id, "sdp_answer": answer }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answered = a.next_of(&["call.answer"]).await;
    assert_eq!(
        answered["data"]["sdp_answer"],
        answer.as_str(),
        "{answered}"
    );
    assert_eq!(answered["data"]["from"], bob.user_id.as_str());
    let candidate = json!({ "candidate": "candidate:1 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": "0", "sdpMLineIndex": 0 });
    let (status, body) = post(
        &server,
        "/call/candidates",
        &alice.token,
        json!({ "call_id": call_id, "candidates": [candidate] }),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let candidates = b.next_of(&["call.candidates"]).await;
    assert_eq!(
        candidates["data"]["candidates"][0]["candidate"], candidate["candidate"],
        "{candidates}"
    );
    let (status, body) = post(
        &server,
        "/call/end",
        &alice.token,
        json!({ "call_id": call_id }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let hangup = b.next_of(&["call.hangup"]).await;
    assert_eq!(hangup["data"]["call_id"], call_id.as_str(), "{hangup}");
    assert_eq!(hangup["data"]["rejected"], false);
    assert_eq!(hangup["data"]["call"]["outcome"], "completed");

    // Signalling from Matrix clients is checked, not copied: malformed events are left out or
    // normalised, and every frame still matches the schema (`next` checks it).
    let malformed = [
        (
            "m.call.invite",
            json!({ "call_id": null, "version": 1, "lifetime": 1000,
            "offer": { "type": "offer", "sdp": offer } }),
        ),
        (
            "m.call.candidates",
            json!({ "call_id": "odd", "version": 1, "party_id": 7,
            "candidates": "not a list" }),
        ),
        (
            "m.call.invite",
            json!({ "call_id": "odd", "version": 1, "party_id": 7,
            "lifetime": "soon", "offer": { "type": "offer", "sdp": offer } }),
        ),
        (
            "m.call.candidates",
            json!({ "call_id": "odd", "version": 1, "candidates": [
            { "candidate": "candidate:2 1 UDP 1 127.0.0.1 9 typ host", "sdpMid": 5,
              "sdpMLineIndex": -1 },
            { "candidate": 3 }, "junk"] }),
        ),
        (
            "m.call.answer",
            json!({ "call_id": "odd", "version": 1, "answer": { "sdp": 9 } }),
        ),
    ];
    for (i, (kind, content)) in malformed.into_iter().enumerate() {
        let (status, body) = server
            .call(
                Method::PUT,
                &format!("/_matrix/client/v3/rooms/{}/send/{kind}/odd{i}", enc(&chat)),
                Some(&alice.token),
                Some(content),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let invite = b.next_of(&["call.invite"]).await;
    assert_eq!(invite["data"]["call_id"], "odd", "{invite}");
    assert!(invite["data"]["party_id"].is_null());
    assert!(invite["data"]["lifetime_ms"].is_null());
    let candidates = b.next_of(&["call.candidates"]).await;
    assert_eq!(candidates["data"]["call_id"], "odd", "{candidates}");
    assert_eq!(
        candidates["data"]["candidates"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(candidates["data"]["candidates"][0]["sdpMid"].is_null());
    assert!(candidates["data"]["candidates"][0]["sdpMLineIndex"].is_null());
    let answer = a.next_of(&["call.answer"]).await;
    assert_eq!(answer["data"]["call_id"], "odd", "{answer}");
    assert!(answer["data"]["sdp_answer"].is_null());
}

#[tokio::test]
async fn chat_ws_shows_friends_presence_only() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let carol = signup(&server, "carol").await;
    befriend(&server, &alice, &bob).await;
    befriend(&server, &carol, &bob).await;
    // Alice and Carol share a group, but are no friends.
    let (status, group) = post(
        &server,
        "/groups",
        &bob.token,
        json!({ "name": "all of us", "members": [alice.user_id, carol.user_id] }),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap();
    for user in [&alice, &carol] {
        let (status, body) = post(
            &server,
            &format!("/groups/{}/join", enc(group_id)),
            &user.token,
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (mut a, _) = Client::connect(&server, &alice, None).await;
    for (user, status) in [(&carol, "not a friend"), (&bob, "studying")] {
        let (code, body) = server
            .call(
                Method::PUT,
                &format!("/_matrix/client/v3/presence/{}/status", user.user_id),
                Some(&user.token),
                Some(json!({ "presence": "online", "status_msg": status })),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    let presence = loop {
        let presence = a.next_of(&["presence"]).await;
        assert_ne!(
            presence["data"]["user_id"],
            carol.user_id.as_str(),
            "{presence}"
        );
        if presence["data"]["status_message"] == "studying" {
            break presence;
        }
    };
    assert_eq!(presence["data"]["user_id"], bob.user_id.as_str());
    assert_eq!(presence["data"]["presence"], "online");
    assert_eq!(presence["data"]["online"], true);
    assert!(presence["data"]["last_seen_at"].is_u64(), "{presence}");

    // Once Bob blocks Alice, she no longer learns when he is around.
    let (status, body) = post(
        &server,
        &format!("/users/{}/block", enc(&alice.user_id)),
        &bob.token,
        json!({}),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    let (code, body) = server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/presence/{}/status", bob.user_id),
            Some(&bob.token),
            Some(json!({ "presence": "online", "status_msg": "after the block" })),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // Two markers after it: the second is in a later step than anything before the first, so
    // every frame of the presence change's step has arrived by then.
    for marker in ["first marker", "second marker"] {
        let id = send_message(&server, &carol, group_id, marker).await;
        loop {
            let frame = a.next_of(&["presence", "message.new"]).await;
            if frame["type"] == "presence" {
                assert_ne!(frame["data"]["user_id"], bob.user_id.as_str(), "{frame}");
                assert_ne!(frame["data"]["user_id"], carol.user_id.as_str(), "{frame}");
            } else if frame["data"]["id"] == id.as_str() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn chat_ws_closes_with_4001_when_the_access_token_expires() {
    let server = TestServer::start_with(|c| {
        c.auth.access_token_lifetime_secs = 3;
        c.auth.non_refreshable_token_lifetime_secs = 3;
    })
    .await;
    let alice = signup(&server, "alice").await;
    let (mut a, _) = Client::connect(&server, &alice, None).await;
    let started = Instant::now();
    let (code, reason, _) = a.closed(FRAME_WAIT).await;
    assert_eq!(code, 4001, "{reason}");
    assert_eq!(reason, "the access token expired");
    // Closed when the token expires, not at some later heartbeat (every 30 seconds).
    assert!(started.elapsed() < Duration::from_secs(6));

    // A refreshed token connects again.
    let (status, body) = server
        .call(
            Method::POST,
            "/_matrix/client/v3/refresh",
            None,
            Some(json!({ "refresh_token": alice.refresh_token })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().expect("access_token");
    let mut again = Client::open(&server, token, None).await;
    assert_eq!(again.next().await["type"], "ready");
}

#[tokio::test]
async fn chat_ws_closes_with_1001_when_the_server_stops() {
    let mut server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let (mut a, _) = Client::connect(&server, &alice, None).await;
    let reader = tokio::spawn(async move { a.closed(FRAME_WAIT).await.0 });
    tokio::time::timeout(FRAME_WAIT, server.stop())
        .await
        .expect("the server stops with a stream open");
    assert_eq!(reader.await.unwrap(), 1001);
}

#[tokio::test]
async fn chat_ws_resumes_after_a_disconnect_without_gaps() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    befriend(&server, &alice, &bob).await;
    let (mut b, ready) = Client::connect(&server, &bob, None).await;
    assert!(ready["cursor"].is_string());
    let first = send_message(&server, &alice, &bob.user_id, "before").await;
    assert_eq!(
        b.next_of(&["message.new"]).await["data"]["id"],
        first.as_str()
    );
    let cursor = b.cursor.clone().expect("a cursor");
    drop(b);

    // More than one step carries per room: the rest is read page by page.
    let mut sent = Vec::new();
    for i in 0..130 {
        sent.push(send_message(&server, &alice, &bob.user_id, &format!("missed {i}")).await);
    }
    let (mut b, ready) = Client::connect(&server, &bob, Some(&cursor)).await;
    assert_eq!(ready["data"]["resumed"], true);
    assert_eq!(ready["cursor"], cursor.as_str());
    let mut received: Vec<String> = Vec::new();
    // Their notifications too: more than a page of them, read page by page.
    let mut notified: Vec<String> = Vec::new();
    while received.len() < sent.len() || notified.len() < sent.len() {
        let frame = b.next_of(&["message.new", "notification"]).await;
        let (list, id) = match frame["type"].as_str() {
            Some("message.new") => (&mut received, &frame["data"]["id"]),
            _ => (&mut notified, &frame["data"]["message_id"]),
        };
        let id = id.as_str().unwrap().to_owned();
        // Clients de-duplicate by ID: a resumption may repeat what was already seen.
        if id != first && !list.contains(&id) {
            list.push(id);
        }
    }
    assert_eq!(received, sent, "every missed message, in order");
    assert_eq!(notified, sent, "every missed notification, in order");

    // Live again after the catch-up, from the cursor the last frame gave.
    let live = send_message(&server, &alice, &bob.user_id, "live").await;
    assert_eq!(
        b.next_of(&["message.new"]).await["data"]["id"],
        live.as_str()
    );
    // The message's notification ends that step: its cursor is past the message.
    let notification = b.next_of(&["notification"]).await;
    assert_eq!(notification["data"]["message_id"], live.as_str());
    let cursor = b.cursor.clone().unwrap();
    drop(b);
    // Resuming from the end of a step repeats nothing of it.
    let again = send_message(&server, &alice, &bob.user_id, "after").await;
    let (mut b, _) = Client::connect(&server, &bob, Some(&cursor)).await;
    assert_eq!(
        b.next_of(&["message.new"]).await["data"]["id"],
        again.as_str()
    );
}

#[tokio::test]
async fn chat_ws_heartbeats_and_drops_silent_clients() {
    let server = TestServer::start().await;
    services(&server)
        .chat
        .stream
        .set_timings(Duration::from_millis(300), Duration::from_secs(10));
    let alice = signup(&server, "alice").await;
    let (mut a, ready) = Client::connect(&server, &alice, None).await;
    assert_eq!(ready["data"]["heartbeat_ms"], 300);
    let ping = a.next_of(&["ping"]).await;
    assert_eq!(ping["cursor"], ready["cursor"], "{ping}");
    // A client that answers stays connected past two intervals.
    for _ in 0..4 {
        a.next_of(&["ping"]).await;
        a.send(json!({ "type": "pong" })).await;
    }

    // A client that reads nothing (so answers no ping) is dropped after two intervals.
    let (mut silent, _) = Client::connect(&server, &alice, None).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let (code, reason, _) = silent.closed(FRAME_WAIT).await;
    assert_eq!(code, 4002, "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn chat_ws_client_frames_reach_the_matrix_api() {
    let server = TestServer::start().await;
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let chat = befriend(&server, &alice, &bob).await;
    let id = send_message(&server, &bob, &alice.user_id, "hi alice").await;
    let (status, body) = server
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.token))
        .await;
    assert_eq!(status, 200, "{body}");
    let since = body["next_batch"].as_str().unwrap().to_owned();
    let (mut a, _) = Client::connect(&server, &alice, None).await;

    a.send(json!({ "type": "typing", "chat_id": chat, "typing": true }))
        .await;
    a.send(json!({ "type": "read", "message_id": id })).await;
    // Bob's Matrix sync shows both.
    let mut typing = false;
    let mut read = false;
    let mut since = since;
    let deadline = Instant::now() + FRAME_WAIT;
    while !(typing && read) && Instant::now() < deadline {
        let (status, body) = server
            .get(
                &format!("/_matrix/client/v3/sync?since={since}&timeout=5000"),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        since = body["next_batch"].as_str().unwrap().to_owned();
        for event in body["rooms"]["join"][&chat]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if event["type"] == "m.typing"
                && event["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|u| u.iter().any(|u| u == alice.user_id.as_str()))
            {
                typing = true;
            }
            if event["type"] == "m.receipt"
                && event["content"][&id]["m.read"][&alice.user_id].is_object()
            {
                read = true;
            }
        }
    }
    assert!(typing && read, "typing {typing}, read {read}");

    // Bad frames are answered with an error, and the connection stays open.
    let carol = signup(&server, "carol").await;
    let (status, body) = post(
        &server,
        "/groups",
        &carol.token,
        json!({ "name": "not alice's", "members": [] }),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let others = body["id"].as_str().unwrap().to_owned();
    let bad = [
        (json!({ "type": "dance" }), "invalid_request"),
        (json!({ "no": "type" }), "invalid_request"),
        (json!([1, 2]), "invalid_request"),
        (
            json!({ "type": "typing", "chat_id": chat }),
            "invalid_request",
        ),
        (
            json!({ "type": "typing", "chat_id": "nope", "typing": true }),
            "invalid_request",
        ),
        (
            json!({ "type": "typing", "chat_id": others, "typing": true }),
            "not_found",
        ),
        (json!({ "type": "read" }), "invalid_request"),
        (
            json!({ "type": "read", "message_id": "$unknown:x" }),
            "not_found",
        ),
    ];
    for (frame, code) in bad {
        a.send(frame.clone()).await;
        let error = a.next_of(&["error"]).await;
        assert_eq!(error["data"]["code"], code, "{frame}: {error}");
        assert!(error["data"]["message"].is_string());
    }
    {
        use futures_util::SinkExt;
        a.ws.send(Message::Text("not json".into())).await.unwrap();
        a.ws.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
    }
    for _ in 0..2 {
        assert_eq!(
            a.next_of(&["error"]).await["data"]["code"],
            "invalid_request"
        );
    }
    a.send(json!({ "type": "ping" })).await;
    assert_eq!(a.next_of(&["pong"]).await["type"], "pong");
}

#[tokio::test]
async fn chat_ws_closes_slow_consumers_with_4008() {
    let server = TestServer::start().await;
    let stream = services(&server);
    stream
        .chat
        .stream
        .set_timings(Duration::from_secs(30), Duration::from_secs(1));
    let alice = signup(&server, "alice").await;
    let bob = signup(&server, "bob").await;
    let chat = befriend(&server, &alice, &bob).await;
    // Bob connects, then reads nothing while Alice sends more than the socket buffers and the
    // server's queue hold, until the server gives up on him.
    let (mut b, _) = Client::connect(&server, &bob, None).await;
    let big = "x".repeat(48_000);
    let sender = matrix(&alice);
    let started = Instant::now();
    let mut sent = 0;
    while stream.chat.stream.slow_consumers_dropped() == 0 {
        assert!(sent < 1000, "no slow-consumer close after {sent} messages");
        let (status, body) = send_text(&server, &sender, &chat, &format!("t{sent}"), &big).await;
        assert_eq!(status, 200, "{body}");
        sent += 1;
    }
    let decided = started.elapsed();
    // Nothing more is read for him once he is dropped, however much more happens.
    for i in 0..20 {
        let (status, body) = send_text(&server, &sender, &chat, &format!("u{i}"), &big).await;
        assert_eq!(status, 200, "{body}");
        sent += 1;
    }
    let (code, reason, frames) = b.closed(Duration::from_secs(30)).await;
    assert_eq!(code, 4008, "{reason}");
    assert_eq!(reason, "slow consumer");
    // The server held no backlog: the client got what was in flight (the socket's buffers),
    // not what waited in the queue, let alone what came later.
    let messages = frames.iter().filter(|f| f["type"] == "message.new").count();
    assert!(
        messages < sent - 20,
        "{messages} of {sent} messages reached a stalled client"
    );
    assert!(
        decided < Duration::from_secs(120),
        "decided after {decided:?}"
    );
    let deadline = Instant::now() + FRAME_WAIT;
    while stream.chat.stream.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the connection was not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
