//! Chat API calls: a call started, answered and ended with its log entry on both sides; a call
//! cancelled by the caller (a missed call for the callee), a declined call, a group call that
//! rings every member; the Matrix VoIP events in the room's timeline; a call placed and answered
//! from the Matrix API counted the same; an invite that expires unanswered; every refusal. And
//! TURN credentials accepted by a real coturn server (Debian's `coturn`), checked with coturn's
//! own `turnutils_uclient`.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::chat_common::{ChatUser, befriend, call, code, enc, get, post, signup};
use crate::common::TestServer;

/// A voice offer, as a browser makes it (shortened).
const VOICE_SDP: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
    a=rtpmap:111 opus/48000/2\r\n";
/// A video offer.
const VIDEO_SDP: &str = "v=0\r\no=- 4611731400430051337 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
    a=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
    a=mid:1\r\na=rtpmap:96 VP8/90000\r\n";

/// The device ID of a token (the `party_id` of the calls it makes).
async fn device_of(server: &TestServer, user: &ChatUser) -> String {
    let (status, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&user.token))
        .await;
    assert_eq!(status, 200, "{body}");
    body["device_id"].as_str().expect("device_id").to_owned()
}

async fn start(server: &TestServer, caller: &ChatUser, to: &str, kind: &str) -> Value {
    let sdp = if kind == "video" {
        VIDEO_SDP
    } else {
        VOICE_SDP
    };
    let (status, body) = post(
        server,
        "/call/start",
        &caller.token,
        json!({"to": to, "kind": kind, "sdp_offer": sdp}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn act(server: &TestServer, user: &ChatUser, path: &str, body: Value) -> (u16, Value) {
    post(server, path, &user.token, body).await
}

/// The newest entry of a user's call log.
async fn latest_call(server: &TestServer, user: &ChatUser) -> Value {
    let (status, body) = get(server, "/calls", &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["calls"][0].clone()
}

/// The events of a room's timeline through the Matrix API, oldest first.
async fn matrix_timeline(server: &TestServer, token: &str, room: &str) -> Vec<Value> {
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=50",
        enc(room)
    );
    let (status, body) = server.get(&path, Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let mut events = body["chunk"].as_array().cloned().unwrap_or_default();
    events.reverse();
    events
}

/// The call events of one call in a room's timeline: (type, content).
async fn call_events(
    server: &TestServer,
    token: &str,
    room: &str,
    call_id: &str,
) -> Vec<(String, Value)> {
    matrix_timeline(server, token, room)
        .await
        .into_iter()
        .filter(|e| e["content"]["call_id"] == json!(call_id))
        .map(|e| {
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                e["content"].clone(),
            )
        })
        .collect()
}

/// Sends an event through the Matrix API; returns its ID.
async fn matrix_send(
    server: &TestServer,
    token: &str,
    room: &str,
    kind: &str,
    content: Value,
) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/{kind}/calltxn{}",
        enc(room),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (status, body) = server
        .call(Method::PUT, &path, Some(token), Some(content))
        .await;
    assert_eq!(status, 200, "{body}");
    body["event_id"].as_str().expect("event_id").to_owned()
}

/// The user's notifications of one call.
async fn call_notifications(server: &TestServer, user: &ChatUser, call_id: &str) -> Vec<Value> {
    let (status, body) = get(server, "/notifications?limit=100", &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["call_id"] == json!(call_id))
        .collect()
}

#[tokio::test]
async fn chat_call_started_answered_and_ended_is_logged_for_both() {
    let server = TestServer::start().await;
    let alice = signup(&server, "calla").await;
    let bob = signup(&server, "callb").await;
    let dm = befriend(&server, &alice, &bob).await;
    let alice_device = device_of(&server, &alice).await;
    let bob_device = device_of(&server, &bob).await;

    // A bare username names the friend.
    let call = start(&server, &alice, &bob.username, "voice").await;
    let call_id = call["id"].as_str().expect("id").to_owned();
    assert_eq!(call["chat_id"], json!(dm));
    assert_eq!(call["kind"], "voice");
    assert_eq!(call["caller"], json!(alice.user_id));
    assert_eq!(call["callees"], json!([bob.user_id]));
    assert_eq!(call["outcome"], "ringing");
    assert!(
        call["answered_at"].is_null() && call["ended_at"].is_null(),
        "{call}"
    );
    assert_eq!(latest_call(&server, &bob).await["outcome"], "ringing");

    // Matrix clients in the chat see the VoIP invite and ring.
    let events = call_events(&server, &bob.token, &dm, &call_id).await;
    let (kind, invite) = &events[0];
    assert_eq!(kind, "m.call.invite");
    assert_eq!(invite["version"], "1");
    assert_eq!(invite["party_id"], json!(alice_device));
    assert_eq!(invite["lifetime"], 60000);
    assert_eq!(invite["invitee"], json!(bob.user_id));
    assert_eq!(invite["offer"], json!({"type": "offer", "sdp": VOICE_SDP}));

    let candidate = json!({"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host", "sdpMid": "0", "sdpMLineIndex": 0});
    let (status, body) = act(
        &server,
        &alice,
        "/call/candidates",
        json!({"call_id": call_id, "candidates": [candidate]}),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    let answer_sdp = VOICE_SDP.replace("4611731400430051336", "99");
    let (status, answered) = act(
        &server,
        &bob,
        "/call/answer",
        json!({"call_id": call_id, "sdp_answer": answer_sdp}),
    )
    .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["outcome"], "ongoing");
    assert!(
        answered["answered_at"].as_u64() >= call["started_at"].as_u64(),
        "{answered}"
    );
    let (status, body) = act(
        &server,
        &bob,
        "/call/candidates",
        json!({"call_id": call_id, "candidates": [{"candidate": "", "sdpMid": null}]}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(latest_call(&server, &alice).await["outcome"], "ongoing");

    let (status, ended) = act(&server, &alice, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["outcome"], "completed");
    let duration = ended["ended_at"].as_u64().unwrap() - ended["answered_at"].as_u64().unwrap();
    assert_eq!(ended["duration_ms"].as_u64(), Some(duration));

    // The log of both parties.
    for user in [&alice, &bob] {
        let logged = latest_call(&server, user).await;
        assert_eq!(logged["id"], json!(call_id));
        assert_eq!(logged["outcome"], "completed", "{logged}");
        assert_eq!(logged["caller"], json!(alice.user_id));
        assert_eq!(logged["callees"], json!([bob.user_id]));
        assert_eq!(logged["duration_ms"], ended["duration_ms"]);
    }

    // The whole exchange is in the room, in order.
    let events = call_events(&server, &bob.token, &dm, &call_id).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "m.call.invite",
            "m.call.candidates",
            "m.call.answer",
            "m.call.candidates",
            "m.call.hangup"
        ]
    );
    assert_eq!(events[1].1["candidates"], json!([candidate]));
    assert_eq!(
        events[2].1["answer"],
        json!({"type": "answer", "sdp": answer_sdp})
    );
    assert_eq!(events[2].1["party_id"], json!(bob_device));
    assert_eq!(events[4].1["reason"], "user_hangup");

    // Over: nothing more can be done with it.
    for (user, path, body) in [
        (
            &bob,
            "/call/answer",
            json!({"call_id": call_id, "sdp_answer": VOICE_SDP}),
        ),
        (&alice, "/call/end", json!({"call_id": call_id})),
        (
            &bob,
            "/call/candidates",
            json!({"call_id": call_id, "candidates": [candidate]}),
        ),
    ] {
        let (status, body) = act(&server, user, path, body).await;
        assert_eq!(status, 409, "{path}: {body}");
    }
    let (_, body) = act(
        &server,
        &bob,
        "/call/answer",
        json!({"call_id": call_id, "sdp_answer": VOICE_SDP}),
    )
    .await;
    assert_eq!(code(&body), "already_answered");
    let (_, body) = act(&server, &alice, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(code(&body), "call_ended");

    // The log pages newest first.
    let second = start(&server, &bob, &alice.user_id, "video").await;
    act(&server, &bob, "/call/end", json!({"call_id": second["id"]})).await;
    let (status, page) = get(&server, "/calls?limit=1", &alice.token).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["calls"][0]["id"], second["id"]);
    assert_eq!(page["calls"][0]["kind"], "video");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, page) = get(
        &server,
        &format!("/calls?limit=1&cursor={cursor}"),
        &alice.token,
    )
    .await;
    assert_eq!(page["calls"][0]["id"], json!(call_id));
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
}

#[tokio::test]
async fn chat_call_cancelled_is_missed_and_rejected_is_declined() {
    let server = TestServer::start().await;
    let alice = signup(&server, "missa").await;
    let bob = signup(&server, "missb").await;
    let dm = befriend(&server, &alice, &bob).await;

    // The caller gives up before an answer: cancelled for her, missed for him.
    let call = start(&server, &alice, &bob.user_id, "voice").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    let (status, ended) = act(&server, &alice, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["outcome"], "cancelled");
    assert!(
        ended["answered_at"].is_null() && ended["duration_ms"].is_null(),
        "{ended}"
    );
    assert_eq!(latest_call(&server, &bob).await["outcome"], "missed");
    let missed = call_notifications(&server, &bob, &call_id).await;
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(missed[0]["type"], "missed_call");
    assert_eq!(missed[0]["from"], json!(alice.user_id));
    assert_eq!(missed[0]["chat_id"], json!(dm));
    assert_eq!(missed[0]["read"], false);
    assert!(missed[0]["message_id"].is_null());
    // Not for the caller.
    assert!(
        call_notifications(&server, &alice, &call_id)
            .await
            .is_empty()
    );

    // The callee declines: m.call.reject, declined for both, no missed call.
    let call = start(&server, &alice, &bob.user_id, "voice").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    let (status, ended) = act(&server, &bob, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["outcome"], "declined");
    assert_eq!(latest_call(&server, &alice).await["outcome"], "declined");
    let events = call_events(&server, &alice.token, &dm, &call_id).await;
    assert_eq!(
        events.last().map(|(k, _)| k.as_str()),
        Some("m.call.reject")
    );
    assert!(call_notifications(&server, &bob, &call_id).await.is_empty());
    let (status, body) = act(&server, &alice, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!((status, code(&body)), (409, "call_ended"), "{body}");
}

#[tokio::test]
async fn chat_group_call_rings_every_member() {
    let server = TestServer::start().await;
    let alice = signup(&server, "groupa").await;
    let bob = signup(&server, "groupb").await;
    let carol = signup(&server, "groupc").await;
    befriend(&server, &alice, &bob).await;
    befriend(&server, &alice, &carol).await;
    let (status, group) = post(
        &server,
        "/groups",
        &alice.token,
        json!({"name": "Study", "members": [bob.user_id, carol.user_id]}),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    let group_id = group["id"].as_str().unwrap().to_owned();
    for user in [&bob, &carol] {
        let (status, body) = post(
            &server,
            &format!("/groups/{}/join", enc(&group_id)),
            &user.token,
            json!({}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let call = start(&server, &alice, &group_id, "video").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    assert_eq!(call["chat_id"], json!(group_id));
    assert_eq!(call["kind"], "video");
    let callees: BTreeSet<&str> = call["callees"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        callees,
        BTreeSet::from([bob.user_id.as_str(), carol.user_id.as_str()])
    );
    // No invitee: every member's Matrix client rings.
    let events = call_events(&server, &carol.token, &group_id, &call_id).await;
    assert_eq!(events[0].0, "m.call.invite");
    assert!(events[0].1.get("invitee").is_none(), "{:?}", events[0]);

    // Carol declines; the call goes on ringing Bob, who answers.
    let (status, body) = act(&server, &carol, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("declined")),
        "{body}"
    );
    assert_eq!(latest_call(&server, &bob).await["outcome"], "ringing");
    let (status, body) = act(
        &server,
        &carol,
        "/call/answer",
        json!({"call_id": call_id, "sdp_answer": VIDEO_SDP}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "call_ended"), "{body}");
    let (status, body) = act(
        &server,
        &bob,
        "/call/answer",
        json!({"call_id": call_id, "sdp_answer": VIDEO_SDP}),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("ongoing")),
        "{body}"
    );

    let (status, body) = act(
        &server,
        &alice,
        "/call/end",
        json!({"call_id": call_id, "reason": "user_hangup"}),
    )
    .await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("completed")),
        "{body}"
    );
    assert_eq!(latest_call(&server, &bob).await["outcome"], "completed");
    assert_eq!(latest_call(&server, &carol).await["outcome"], "declined");
    assert!(
        call_notifications(&server, &carol, &call_id)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn chat_calls_from_matrix_clients_count_the_same() {
    let server = TestServer::start().await;
    let alice = signup(&server, "mxa").await;
    let bob = signup(&server, "mxb").await;
    let dm = befriend(&server, &alice, &bob).await;

    // Alice calls through the Chat API, Bob answers and hangs up from a Matrix client.
    let call = start(&server, &alice, &bob.user_id, "voice").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    let answer = json!({"call_id": call_id, "party_id": "BOBPHONE", "version": "1", "answer": {"type": "answer", "sdp": VOICE_SDP}});
    matrix_send(&server, &bob.token, &dm, "m.call.answer", answer).await;
    assert_eq!(latest_call(&server, &alice).await["outcome"], "ongoing");
    let hangup = json!({"call_id": call_id, "party_id": "BOBPHONE", "version": "1", "reason": "user_hangup"});
    matrix_send(&server, &bob.token, &dm, "m.call.hangup", hangup).await;
    let logged = latest_call(&server, &alice).await;
    assert_eq!(logged["outcome"], "completed", "{logged}");
    assert!(logged["duration_ms"].is_u64(), "{logged}");

    // Bob rings from a Matrix client with a short invite that nobody answers: missed, decided
    // when read (no event comes after it).
    let invite = json!({
        "call_id": "matrix-call-1", "party_id": "BOBPHONE", "version": "1", "lifetime": 2000,
        "offer": {"type": "offer", "sdp": VIDEO_SDP}, "invitee": alice.user_id,
    });
    let before_send = std::time::Instant::now();
    matrix_send(&server, &bob.token, &dm, "m.call.invite", invite).await;
    let sent = std::time::Instant::now();
    let logged = latest_call(&server, &alice).await;
    let notifications = call_notifications(&server, &alice, "matrix-call-1").await;
    assert_eq!(
        (logged["id"].as_str(), logged["kind"].as_str()),
        (Some("matrix-call-1"), Some("video"))
    );
    assert_eq!(logged["caller"], json!(bob.user_id));
    // (Unless this machine took the whole lifetime to get here.)
    if before_send.elapsed() < Duration::from_millis(1900) {
        assert_eq!(logged["outcome"], "ringing");
        assert!(notifications.is_empty(), "{notifications:?}");
    }
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(sent.elapsed())).await;
    let logged = latest_call(&server, &alice).await;
    assert_eq!(logged["outcome"], "missed", "{logged}");
    assert_eq!(
        logged["ended_at"].as_u64(),
        logged["started_at"].as_u64().map(|s| s + 2000)
    );
    assert_eq!(latest_call(&server, &bob).await["outcome"], "cancelled");
    let missed = call_notifications(&server, &alice, "matrix-call-1").await;
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert_eq!(
        (missed[0]["type"].as_str(), missed[0]["read"].as_bool()),
        (Some("missed_call"), Some(false))
    );
    // Too late to answer.
    let (status, body) = act(
        &server,
        &alice,
        "/call/answer",
        json!({"call_id": "matrix-call-1", "sdp_answer": VIDEO_SDP}),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "call_ended"), "{body}");

    // The caller's client then hangs up: the same notification, still unread, now recorded.
    let hangup = json!({"call_id": "matrix-call-1", "party_id": "BOBPHONE", "version": "1", "reason": "invite_timeout"});
    matrix_send(&server, &bob.token, &dm, "m.call.hangup", hangup).await;
    let after = call_notifications(&server, &alice, "matrix-call-1").await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], missed[0]["id"]);
    assert_eq!(after[0]["created_at"], missed[0]["created_at"]);
    assert_eq!(after[0]["read"], false);
    let (status, body) = post(
        &server,
        "/notifications/read",
        &alice.token,
        json!({"ids": [after[0]["id"]]}),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        call_notifications(&server, &alice, "matrix-call-1").await[0]["read"],
        true
    );
}

#[tokio::test]
async fn chat_call_refusals() {
    let server = TestServer::start().await;
    let alice = signup(&server, "refa").await;
    let bob = signup(&server, "refb").await;
    let stranger = signup(&server, "refc").await;
    befriend(&server, &alice, &bob).await;

    // Without a token.
    for (method, path) in [
        (Method::POST, "/call/start"),
        (Method::POST, "/call/answer"),
        (Method::POST, "/call/candidates"),
        (Method::POST, "/call/end"),
        (Method::GET, "/calls"),
        (Method::GET, "/call/turn"),
    ] {
        let body = (method == Method::POST).then(|| json!({}));
        let (status, body) = call(&server, method, path, None, body).await;
        assert_eq!(
            (status, code(&body)),
            (401, "unauthorized"),
            "{path}: {body}"
        );
    }
    let (status, _) = server.get("/_matrix/client/v3/voip/turnServer", None).await;
    assert_eq!(status, 401);

    // Bad requests.
    let start_with =
        |to: &str, kind: &str, sdp: &str| json!({"to": to, "kind": kind, "sdp_offer": sdp});
    for body in [
        json!({}),
        json!({"to": bob.user_id, "kind": "voice"}),
        start_with(&bob.user_id, "hologram", VOICE_SDP),
        start_with(&bob.user_id, "voice", ""),
        start_with(&bob.user_id, "voice", "hello"),
        start_with(&bob.user_id, "voice", VIDEO_SDP),
        start_with(&bob.user_id, "video", VOICE_SDP),
        start_with(
            &bob.user_id,
            "voice",
            &format!("{VOICE_SDP}{}", "a=x\r\n".repeat(8000)),
        ),
        start_with("@@nope", "voice", VOICE_SDP),
        start_with(
            &format!("!{}:localhost", "a".repeat(300)),
            "voice",
            VOICE_SDP,
        ),
        start_with("#alias:localhost", "voice", VOICE_SDP),
        start_with("", "voice", VOICE_SDP),
    ] {
        let (status, answer) = act(&server, &alice, "/call/start", body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{body}: {answer}"
        );
    }
    // Nobody calls themselves (by user ID or username).
    for to in [alice.user_id.as_str(), alice.username.as_str()] {
        let (status, body) = act(
            &server,
            &alice,
            "/call/start",
            start_with(to, "voice", VOICE_SDP),
        )
        .await;
        assert_eq!((status, code(&body)), (400, "self"), "{to}: {body}");
    }
    // Strangers cannot be called; unknown users and rooms are not found.
    let (status, body) = act(
        &server,
        &alice,
        "/call/start",
        start_with(&stranger.user_id, "voice", VOICE_SDP),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "not_friends"), "{body}");
    let (status, body) = act(
        &server,
        &alice,
        "/call/start",
        start_with("nobody", "voice", VOICE_SDP),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = act(
        &server,
        &alice,
        "/call/start",
        start_with("!nowhere:localhost", "voice", VOICE_SDP),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    // A group the caller is not in is not found either.
    befriend(&server, &bob, &stranger).await;
    let (_, group) = post(
        &server,
        "/groups",
        &bob.token,
        json!({"name": "Closed", "members": [stranger.user_id]}),
    )
    .await;
    let group_id = group["id"].as_str().expect("group").to_owned();
    let (status, body) = act(
        &server,
        &alice,
        "/call/start",
        start_with(&group_id, "voice", VOICE_SDP),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");

    let call = start(&server, &alice, &bob.user_id, "voice").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    // Other people's calls and unknown calls are not found.
    for call_id in [call_id.as_str(), "no-such-call"] {
        for (path, body) in [
            (
                "/call/answer",
                json!({"call_id": call_id, "sdp_answer": VOICE_SDP}),
            ),
            (
                "/call/candidates",
                json!({"call_id": call_id, "candidates": [{"candidate": ""}]}),
            ),
            ("/call/end", json!({"call_id": call_id})),
        ] {
            let (status, answer) = act(&server, &stranger, path, body).await;
            assert_eq!(
                (status, code(&answer)),
                (404, "not_found"),
                "{path}: {answer}"
            );
        }
    }
    // The caller cannot answer her own call.
    let (status, body) = act(
        &server,
        &alice,
        "/call/answer",
        json!({"call_id": call_id, "sdp_answer": VOICE_SDP}),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    for (path, body) in [
        ("/call/answer", json!({"call_id": call_id})),
        (
            "/call/answer",
            json!({"call_id": call_id, "sdp_answer": "nonsense"}),
        ),
        (
            "/call/answer",
            json!({"call_id": "", "sdp_answer": VOICE_SDP}),
        ),
        (
            "/call/answer",
            json!({"call_id": "x".repeat(256), "sdp_answer": VOICE_SDP}),
        ),
        (
            "/call/candidates",
            json!({"call_id": call_id, "candidates": []}),
        ),
        (
            "/call/candidates",
            json!({"call_id": call_id, "candidates": [{"candidate": "candidate:1"}]}),
        ),
        (
            "/call/candidates",
            json!({"call_id": call_id, "candidates": [{"sdpMid": "0"}]}),
        ),
        (
            "/call/candidates",
            json!({"call_id": call_id, "candidates": [{"candidate": "x".repeat(1025), "sdpMid": "0"}]}),
        ),
        (
            "/call/candidates",
            json!({"call_id": call_id, "candidates": vec![json!({"candidate": ""}); 101]}),
        ),
        ("/call/end", json!({"call_id": call_id, "reason": "bored"})),
        ("/call/end", json!({})),
    ] {
        let (status, answer) = act(&server, &bob, path, body.clone()).await;
        assert_eq!(
            (status, code(&answer)),
            (400, "invalid_request"),
            "{path} {body}: {answer}"
        );
    }
    for query in [
        "limit=0",
        "limit=101",
        "limit=x",
        "cursor=abc",
        "cursor=0",
        "cursor=-1",
    ] {
        let (status, body) = get(&server, &format!("/calls?{query}"), &alice.token).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{query}: {body}"
        );
    }

    // No TURN server configured.
    let (status, body) = get(&server, "/call/turn", &alice.token).await;
    assert_eq!((status, code(&body)), (404, "not_configured"), "{body}");
    let (status, body) = server
        .get("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!((status, body), (200, json!({})));
}

/// A coturn server (`turnserver`) on a loopback port with `use-auth-secret`, killed by PID when
/// dropped.
struct Coturn {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Coturn {
    async fn start(secret: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let spawned = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--use-auth-secret",
                "--realm=roost.test",
                "--allow-loopback-peers",
            ])
            .arg(format!("--static-auth-secret={secret}"))
            .arg(format!("--log-file={}", path("turn.log")))
            .arg(format!("--pidfile={}", path("turn.pid")))
            .arg(format!("--db={}", path("turndb")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = spawned.unwrap_or_else(|e| {
            panic!(
                "cannot run turnserver ({e}): the TURN test needs Debian's coturn package \
                 (apt-get install coturn; .ci/run installs it)"
            )
        });
        // Ready when it accepts connections (its UDP listener starts with the TCP one).
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Self {
                    child,
                    port,
                    _dir: dir,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("turnserver exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("turnserver did not start listening on 127.0.0.1:{port}");
    }

    /// Whether coturn's own client gets a relay allocation with these credentials (and
    /// exchanges a message through it).
    async fn accepts(&self, username: &str, password: &str) -> bool {
        let mut client = Command::new("turnutils_uclient")
            .args(["-y", "-c", "-n", "1", "-p", &self.port.to_string()])
            .args(["-u", username, "-w", password, "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_uclient (Debian's coturn package) runs");
        for _ in 0..600 {
            if let Some(status) = client.try_wait().expect("wait for turnutils_uclient") {
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = client.kill();
        let _ = client.wait();
        panic!("turnutils_uclient did not finish within 30 s");
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn chat_turn_credentials_are_accepted_by_coturn() {
    let secret = "roost-turn-test-secret";
    let coturn = Coturn::start(secret).await;
    let uri = format!("turn:127.0.0.1:{}?transport=udp", coturn.port);
    let server = TestServer::start_with(|config| {
        config.turn.uris = vec![uri.clone()];
        config.turn.shared_secret = Some(secret.into());
        config.turn.ttl_secs = 600;
    })
    .await;
    let alice = signup(&server, "turna").await;

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, creds) = get(&server, "/call/turn", &alice.token).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["uris"], json!([uri]));
    assert_eq!(creds["ttl_secs"], 600);
    let username = creds["username"].as_str().unwrap().to_owned();
    let password = creds["password"].as_str().unwrap().to_owned();
    let (expiry, user) = username.split_once(':').expect("expiry:user");
    assert_eq!(user, alice.user_id);
    let expiry: u64 = expiry.parse().expect("expiry in seconds");
    assert!((before + 600..=before + 602).contains(&expiry), "{expiry}");

    // The Matrix endpoint answers the same for its users.
    let (status, matrix) = server
        .get("/_matrix/client/v3/voip/turnServer", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{matrix}");
    assert_eq!(matrix["uris"], json!([uri]));
    assert_eq!(matrix["ttl"], 600);
    assert!(
        matrix["username"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", alice.user_id))
    );

    assert!(
        coturn.accepts(&username, &password).await,
        "coturn refused the credentials"
    );
    assert!(
        coturn
            .accepts(
                matrix["username"].as_str().unwrap(),
                matrix["password"].as_str().unwrap()
            )
            .await,
        "coturn refused the Matrix endpoint's credentials"
    );
    let mut wrong = password.clone();
    wrong.replace_range(0..1, if wrong.starts_with('A') { "B" } else { "A" });
    assert!(
        !coturn.accepts(&username, &wrong).await,
        "coturn accepted a wrong password"
    );
    // Another user's name with this password is refused too.
    let forged = format!("{expiry}:@mallory:localhost");
    assert!(
        !coturn.accepts(&forged, &password).await,
        "coturn accepted a forged username"
    );
}

#[tokio::test]
async fn chat_call_log_and_missed_calls_survive_a_restart() {
    let mut server = TestServer::start().await;
    let alice = signup(&server, "resta").await;
    let bob = signup(&server, "restb").await;
    befriend(&server, &alice, &bob).await;
    let call = start(&server, &alice, &bob.user_id, "voice").await;
    let call_id = call["id"].as_str().unwrap().to_owned();
    let (status, _) = act(&server, &alice, "/call/end", json!({"call_id": call_id})).await;
    assert_eq!(status, 200);
    let missed = call_notifications(&server, &bob, &call_id).await;
    assert_eq!(missed.len(), 1, "{missed:?}");

    server.stop().await;
    let config = crate::common::test_config(server.data.path().to_path_buf());
    let again = roost::start(config)
        .await
        .expect("restart on the same data");
    server.base = again.base_url();
    server.server = Some(again);

    for (user, outcome) in [(&alice, "cancelled"), (&bob, "missed")] {
        let logged = latest_call(&server, user).await;
        assert_eq!(
            (logged["id"].as_str(), logged["outcome"].as_str()),
            (Some(call_id.as_str()), Some(outcome))
        );
    }
    assert_eq!(call_notifications(&server, &bob, &call_id).await, missed);
    // And the log goes on from where it was.
    let next = start(&server, &bob, &alice.user_id, "voice").await;
    assert_eq!(latest_call(&server, &alice).await["id"], next["id"]);
}

/// The call IDs of a user's call log.
async fn logged_ids(server: &TestServer, user: &ChatUser) -> Vec<String> {
    let (status, body) = get(server, "/calls?limit=100", &user.token).await;
    assert_eq!(status, 200, "{body}");
    body["calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_call_invites_ring_only_members_joined_at_the_invite() {
    let server = TestServer::start().await;
    let mallory = signup(&server, "ringm").await;
    let victim = signup(&server, "ringv").await;

    // A stranger's room the victim is only invited to (not joined): an invite naming the
    // victim, given up at once, rings nobody.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/createRoom",
            Some(&mallory.token),
            json!({"preset": "private_chat", "invite": [victim.user_id]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let room = body["room_id"].as_str().expect("room_id").to_owned();
    let invite = |call_id: &str| {
        json!({
            "call_id": call_id, "party_id": "MPHONE", "version": "1", "lifetime": 1,
            "offer": {"type": "offer", "sdp": VOICE_SDP}, "invitee": victim.user_id,
        })
    };
    matrix_send(
        &server,
        &mallory.token,
        &room,
        "m.call.invite",
        invite("spam-1"),
    )
    .await;
    let hangup =
        json!({"call_id": "spam-1", "party_id": "MPHONE", "version": "1", "reason": "user_hangup"});
    matrix_send(&server, &mallory.token, &room, "m.call.hangup", hangup).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        !logged_ids(&server, &victim)
            .await
            .contains(&"spam-1".to_owned())
    );
    assert!(
        call_notifications(&server, &victim, "spam-1")
            .await
            .is_empty()
    );
    // The caller's own log has it, ringing nobody.
    let own = latest_call(&server, &mallory).await;
    assert_eq!(
        (own["id"].as_str(), own["callees"].clone()),
        (Some("spam-1"), json!([]))
    );

    // Once the victim has joined, an invite naming them rings them.
    let path = format!("/_matrix/client/v3/rooms/{}/join", enc(&room));
    let (status, body) = server.post(&path, Some(&victim.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    matrix_send(
        &server,
        &mallory.token,
        &room,
        "m.call.invite",
        invite("rung-1"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        logged_ids(&server, &victim)
            .await
            .contains(&"rung-1".to_owned())
    );
    assert_eq!(
        call_notifications(&server, &victim, "rung-1").await.len(),
        1
    );
}

#[tokio::test]
async fn chat_call_log_hides_blocked_users() {
    let server = TestServer::start().await;
    let alice = signup(&server, "blka").await;
    let bob = signup(&server, "blkb").await;
    befriend(&server, &alice, &bob).await;
    let from_bob = start(&server, &bob, &alice.user_id, "voice").await;
    let from_bob = from_bob["id"].as_str().expect("id").to_owned();
    let (status, body) = act(&server, &bob, "/call/end", json!({"call_id": from_bob})).await;
    assert_eq!(status, 200, "{body}");
    let to_bob = start(&server, &alice, &bob.user_id, "voice").await;
    let to_bob = to_bob["id"].as_str().expect("id").to_owned();
    let both = BTreeSet::from([from_bob.clone(), to_bob.clone()]);
    let set = |ids: Vec<String>| ids.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(set(logged_ids(&server, &alice).await), both);

    let block_path = format!("/users/{}/block", enc(&bob.user_id));
    let (status, body) = act(&server, &alice, &block_path, json!({})).await;
    assert!((200..300).contains(&status), "{body}");
    assert!(logged_ids(&server, &alice).await.is_empty());
    // Bob blocks nobody: his log is whole.
    assert_eq!(set(logged_ids(&server, &bob).await), both);

    let (status, body) = call(
        &server,
        Method::DELETE,
        &block_path,
        Some(&alice.token),
        None,
    )
    .await;
    assert!((200..300).contains(&status), "{body}");
    assert_eq!(set(logged_ids(&server, &alice).await), both);
}
