//! The Chat API's story, end to end over HTTP and the WebSocket: Alice signs up (confirming her
//! e-mail address), adds Bob as a friend, they chat and share a picture, reply and mention each
//! other, read each other's messages, Alice makes a study group with a picture, and calls Bob.
//! Bob's WebSocket watches it all happen. Every answer and every frame is checked against
//! `spec/openapi.yaml` on the way.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::chat_common::{ChatUser, call, enc, get, post, put};
use crate::chat_openapi::{png, upload};
use crate::common::{PASSWORD, SmtpServer, TestServer};

/// How long the story waits for one frame, and how many other frames (heartbeats, presence,
/// receipts, frames it will look for later) it keeps aside while looking for one.
const FRAME_WAIT: Duration = Duration::from_secs(15);
const MAX_SKIPPED: usize = 200;

/// A user's WebSocket stream (`GET /ws`).
struct Stream {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while looking for another one, oldest first: the order in which a message
    /// and its notification arrive is not the story's business.
    set_aside: VecDeque<Value>,
}

impl Stream {
    /// Connects with the token in the header and reads the `ready` frame.
    async fn open(server: &TestServer, user: &ChatUser) -> Self {
        let url = format!("{}/ws", server.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("request");
        let bearer = format!("Bearer {}", user.token).parse().expect("header");
        request.headers_mut().insert("authorization", bearer);
        let (ws, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("WebSocket handshake");
        assert_eq!(response.status().as_u16(), 101);
        let mut stream = Self {
            ws,
            set_aside: VecDeque::new(),
        };
        let ready = stream.next().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        assert_eq!(ready["data"]["user_id"], user.user_id.as_str());
        stream
    }

    /// The next frame, checked against the document.
    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the stream is open")
                .expect("a frame");
            match message {
                Frame::Text(text) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    crate::chat_spec::check_schema("WsServerFrame", &frame);
                    return frame;
                }
                Frame::Close(close) => panic!("the stream closed: {close:?}"),
                _ => {}
            }
        }
    }

    /// The `data` of the first frame of type `kind` that `matches`, among those set aside and
    /// then those still to come.
    async fn wait_for(&mut self, kind: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let wanted = |frame: &Value| frame["type"] == kind && matches(&frame["data"]);
        if let Some(at) = self.set_aside.iter().position(wanted) {
            let frame = self.set_aside.remove(at).expect("present");
            return frame["data"].clone();
        }
        while self.set_aside.len() < MAX_SKIPPED {
            let frame = self.next().await;
            if wanted(&frame) {
                return frame["data"].clone();
            }
            self.set_aside.push_back(frame);
        }
        panic!("no {kind} frame among the next {MAX_SKIPPED}");
    }
}

/// Signs up with e-mail confirmation: 202, the code from the e-mail, 201 with the tokens.
async fn sign_up(server: &TestServer, smtp: &SmtpServer, username: &str) -> ChatUser {
    let email = format!("{username}@example.org");
    let body = json!({ "username": username, "email": email, "password": PASSWORD });
    let (status, pending) = call(server, Method::POST, "/signup", None, Some(body)).await;
    assert_eq!(status, 202, "{pending}");
    assert_eq!(pending["verification_required"], true);

    let mail = smtp.wait_for_message(&email, 1).await;
    let code = mail
        .split("enter this code in your app:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no code in the e-mail: {mail}"))
        .to_owned();
    let body = json!({ "signup_id": pending["signup_id"], "token": code });
    let (status, tokens) = call(server, Method::POST, "/signup/verify", None, Some(body)).await;
    assert_eq!(status, 201, "{tokens}");
    assert_eq!(tokens["email_verified"], true);
    ChatUser {
        token: tokens["access_token"].as_str().expect("token").to_owned(),
        refresh_token: tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
        user_id: tokens["user_id"].as_str().expect("user ID").to_owned(),
        username: username.to_owned(),
    }
}

fn id_of(object: &Value) -> String {
    object["id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn chat_story_friends_chat_with_pictures_make_a_group_and_call() {
    let smtp = SmtpServer::start().await;
    let server = TestServer::start_with(|config| {
        smtp.configure(config);
        config.registration_requires_email = true;
        config.turn.uris = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        config.turn.shared_secret = Some("story-secret".into());
    })
    .await;

    // Alice and Bob sign up, each confirming their e-mail address. Bob's phone is online.
    let alice = sign_up(&server, &smtp, "alice").await;
    let bob = sign_up(&server, &smtp, "bob").await;
    let mut bobs_phone = Stream::open(&server, &bob).await;

    // Alice asks Bob to be her friend; the request shows on Bob's phone and he accepts.
    let (status, request) = post(
        &server,
        "/friends/add",
        &alice.token,
        json!({ "user_id": bob.user_id }),
    )
    .await;
    assert_eq!(status, 201, "{request}");
    let chat_id = request["chat_id"].as_str().expect("chat_id").to_owned();
    let seen = bobs_phone
        .wait_for("friend.request", |d| d["chat_id"] == chat_id.as_str())
        .await;
    assert_eq!(seen["user"]["user_id"], alice.user_id.as_str());
    assert_eq!(seen["direction"], "incoming");
    let (status, friend) = post(
        &server,
        "/friends/accept",
        &bob.token,
        json!({ "user_id": "alice" }),
    )
    .await;
    assert_eq!(status, 200, "{friend}");
    let (_, friends) = get(&server, "/friends", &alice.token).await;
    assert_eq!(
        friends["friends"][0]["user"]["user_id"],
        bob.user_id.as_str()
    );
    assert_eq!(friends["friends"][0]["chat_id"], chat_id.as_str());

    // They chat: a greeting, then a picture of Alice's cat with a caption.
    let (status, hello) = post(
        &server,
        "/messages",
        &alice.token,
        json!({ "to": bob.user_id, "text": "Hi Bob! Look at my cat.", "client_txn_id": "hello-1" }),
    )
    .await;
    assert_eq!(status, 201, "{hello}");
    let seen = bobs_phone
        .wait_for("message.new", |m| m["id"] == hello["id"])
        .await;
    assert_eq!(seen["text"], "Hi Bob! Look at my cat.");
    assert_eq!(seen["chat_type"], "direct");

    let (status, photo) = upload(&server, &alice.token, "tom.png", "image/png", png()).await;
    assert_eq!(status, 201, "{photo}");
    let (status, picture) = post(
        &server,
        "/messages",
        &alice.token,
        json!({ "to": bob.user_id, "file_id": photo["id"], "text": "This is Tom" }),
    )
    .await;
    assert_eq!(status, 201, "{picture}");
    let seen = bobs_phone
        .wait_for("message.new", |m| m["id"] == picture["id"])
        .await;
    assert_eq!(seen["type"], "image");
    assert_eq!(seen["text"], "This is Tom");
    assert_eq!(seen["file"]["id"], photo["id"]);
    assert_eq!(
        (
            seen["file"]["width"].as_u64(),
            seen["file"]["height"].as_u64()
        ),
        (Some(4), Some(3))
    );
    // Bob downloads the picture from the message's URL.
    let image_url = seen["file"]["url"].as_str().expect("url");
    let downloaded = server
        .http
        .get(server.url(image_url))
        .bearer_auth(&bob.token)
        .send()
        .await
        .expect("download");
    assert_eq!(downloaded.status().as_u16(), 200);
    assert_eq!(downloaded.bytes().await.expect("bytes").to_vec(), png());

    // Bob replies to the picture, mentioning Alice, and reacts to it.
    let (status, reply) = post(
        &server,
        "/messages",
        &bob.token,
        json!({
            "to": "alice", "text": "So cute, @alice!",
            "reply_to": picture["id"], "mentions": [alice.user_id],
        }),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["reply_to"], picture["id"]);
    assert_eq!(reply["mentions"], json!([alice.user_id]));
    let picture_path = format!("/messages/{}", enc(&id_of(&picture)));
    let (status, _) = post(
        &server,
        &format!("{picture_path}/reactions"),
        &bob.token,
        json!({ "key": "❤️" }),
    )
    .await;
    assert_eq!(status, 201);

    // Alice is notified of the mention.
    let (_, feed) = get(&server, "/notifications?unread=true", &alice.token).await;
    let mention = feed["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .find(|n| n["type"] == "mention" && n["message_id"] == reply["id"])
        .unwrap_or_else(|| panic!("no mention notification: {feed}"));
    assert_eq!(mention["from"], bob.user_id.as_str());
    assert_eq!(mention["preview"], "So cute, @alice!");
    assert!(feed["unread_count"].as_u64().is_some_and(|n| n >= 1));

    // Delivered, then read: Bob's app loads the conversation, then he reads the picture.
    let (status, page) = get(
        &server,
        &format!("/messages/{}?limit=10", enc(&alice.user_id)),
        &bob.token,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let ids: Vec<&Value> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        ids,
        [&reply["id"], &picture["id"], &hello["id"]],
        "newest first"
    );
    assert_eq!(page["messages"][1]["reactions"][0]["key"], "❤️");
    let (_, status_now) = get(&server, &format!("{picture_path}/status"), &alice.token).await;
    assert_eq!(status_now["state"], "delivered", "{status_now}");
    assert!(status_now["recipients"][0]["delivered_at"].is_u64());
    assert!(status_now["recipients"][0]["read_at"].is_null());

    let (status, _) = post(
        &server,
        &format!("{picture_path}/read"),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 204);
    let (_, status_now) = get(&server, &format!("{picture_path}/status"), &alice.token).await;
    assert_eq!(status_now["state"], "read", "{status_now}");
    assert_eq!(status_now["recipients"][0]["user_id"], bob.user_id.as_str());
    assert!(status_now["recipients"][0]["read_at"].is_u64());
    // Reading the picture reads the greeting before it too.
    let hello_path = format!("/messages/{}", enc(&id_of(&hello)));
    let (_, hello_status) = get(&server, &format!("{hello_path}/status"), &alice.token).await;
    assert_eq!(hello_status["state"], "read", "{hello_status}");

    // Alice fixes her greeting; Bob's phone shows the new text.
    let (status, edited) = put(
        &server,
        &hello_path,
        &alice.token,
        json!({ "text": "Hi Bob! Look at my cat, Tom." }),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    let seen = bobs_phone
        .wait_for("message.edited", |m| m["id"] == hello["id"])
        .await;
    assert_eq!(seen["text"], "Hi Bob! Look at my cat, Tom.");
    assert_eq!(seen["edited"], true);

    // Alice makes a study group with a picture and invites Bob.
    let (status, group_picture) =
        upload(&server, &alice.token, "study.png", "image/png", png()).await;
    assert_eq!(status, 201, "{group_picture}");
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        json!({
            "name": "Study group", "topic": "Linear algebra, Thursdays",
            "picture_file_id": group_picture["id"], "members": [bob.user_id],
        }),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = id_of(&group);
    assert_eq!(group["my_role"], "admin");
    assert_eq!(group["picture_url"], group_picture["url"]);
    let invited = bobs_phone
        .wait_for("group.updated", |d| {
            d["group_id"] == group_id.as_str() && d["membership"] == "invite"
        })
        .await;
    assert_eq!(invited["group"]["name"], "Study group");
    assert_eq!(invited["group"]["my_membership"], "invite");

    // Bob joins; Alice welcomes him with a mention.
    let group_path = format!("/groups/{}", enc(&group_id));
    let (status, joined) = post(
        &server,
        &format!("{group_path}/join"),
        &bob.token,
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{joined}");
    assert_eq!(joined["my_membership"], "join");
    assert_eq!(joined["picture_url"], group_picture["url"]);
    let (status, welcome) = post(
        &server,
        "/messages",
        &alice.token,
        json!({ "to": group_id, "text": "Welcome! @bob, can you bring the notes?", "mentions": ["bob"] }),
    )
    .await;
    assert_eq!(status, 201, "{welcome}");
    let seen = bobs_phone
        .wait_for("message.new", |m| m["id"] == welcome["id"])
        .await;
    assert_eq!(seen["chat_type"], "group");
    assert_eq!(seen["chat_id"], group_id.as_str());
    assert_eq!(seen["mentions"], json!([bob.user_id]));
    let notified = bobs_phone
        .wait_for("notification", |n| {
            n["type"] == "mention" && n["message_id"] == welcome["id"]
        })
        .await;
    assert_eq!(notified["from"], alice.user_id.as_str());
    assert_eq!(notified["read"], false);
    let (_, bobs_feed) = get(&server, "/notifications?unread=true", &bob.token).await;
    assert!(
        bobs_feed["notifications"]
            .as_array()
            .expect("notifications")
            .iter()
            .any(|n| n["type"] == "mention" && n["message_id"] == welcome["id"]),
        "{bobs_feed}"
    );
    let (_, history) = get(
        &server,
        &format!("/messages/group/{}", enc(&group_id)),
        &bob.token,
    )
    .await;
    assert_eq!(history["messages"][0]["id"], welcome["id"]);

    // Alice calls Bob: his phone rings, he answers, she hangs up, and the call is in his log.
    let (status, turn) = get(&server, "/call/turn", &alice.token).await;
    assert_eq!(status, 200, "{turn}");
    assert!(
        turn["username"]
            .as_str()
            .is_some_and(|u| u.ends_with(&alice.user_id))
    );
    let offer =
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let (status, call_started) = post(
        &server,
        "/call/start",
        &alice.token,
        json!({ "to": bob.user_id, "kind": "voice", "sdp_offer": offer }),
    )
    .await;
    assert_eq!(status, 201, "{call_started}");
    assert_eq!(call_started["outcome"], "ringing");
    let call_id = id_of(&call_started);
    let ringing = bobs_phone
        .wait_for("call.invite", |d| d["call_id"] == call_id.as_str())
        .await;
    assert_eq!(ringing["sdp_offer"], offer);
    assert_eq!(ringing["kind"], "voice");
    assert_eq!(ringing["from"], alice.user_id.as_str());

    let answer =
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n";
    let (status, answered) = post(
        &server,
        "/call/answer",
        &bob.token,
        json!({ "call_id": call_id, "sdp_answer": answer }),
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["outcome"], "ongoing");
    let (status, ended) = post(
        &server,
        "/call/end",
        &alice.token,
        json!({ "call_id": call_id }),
    )
    .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["outcome"], "completed");
    let hangup = bobs_phone
        .wait_for("call.hangup", |d| d["call_id"] == call_id.as_str())
        .await;
    assert_eq!(hangup["rejected"], false);

    let (_, log) = get(&server, "/calls", &bob.token).await;
    let entry = &log["calls"][0];
    assert_eq!(entry["id"], call_id.as_str());
    assert_eq!(entry["caller"], alice.user_id.as_str());
    assert_eq!(entry["callees"], json!([bob.user_id]));
    assert_eq!(entry["outcome"], "completed");
    assert_eq!(entry["kind"], "voice");
    assert!(entry["answered_at"].is_u64() && entry["ended_at"].is_u64());
    assert!(entry["duration_ms"].is_u64(), "{entry}");

    // The files Alice shared with Bob are listed in their chat, newest first.
    let (_, files) = get(
        &server,
        &format!("/chats/{}/files", enc(&chat_id)),
        &bob.token,
    )
    .await;
    assert_eq!(files["files"][0]["id"], photo["id"]);
    assert_eq!(files["files"][0]["message_id"], picture["id"]);
}
