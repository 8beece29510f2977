//! Reporting events, rooms and users over raw HTTP: what is refused, what is stored, and the
//! listing behind `roost reports list`, read while the server is stopped.

use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, user};
use roost::service::reports::{ReportTarget, Reports};

async fn report(server: &TestServer, u: &User, path: &str, body: Value) -> (u16, Value) {
    server
        .post(&format!("/_matrix/client/v3{path}"), Some(&u.token), body)
        .await
}

#[tokio::test]
async fn reports_are_checked_stored_and_listed() {
    let mut server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    // Bob cannot see what was said before he joined.
    let room = create_room(
        &server,
        &alice,
        json!({
            "preset": "public_chat",
            "initial_state": [{
                "type": "m.room.history_visibility",
                "content": { "history_visibility": "joined" },
            }],
        }),
    )
    .await;
    let (_, sent) = send_text(&server, &alice, &room, "t0", "before bob").await;
    let before = sent["event_id"].as_str().expect("event_id").to_owned();
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let (_, sent) = send_text(&server, &alice, &room, "t1", "nasty").await;
    let nasty = sent["event_id"].as_str().expect("event_id").to_owned();
    let other_room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let (_, sent) = send_text(&server, &alice, &other_room, "t2", "elsewhere").await;
    let elsewhere = sent["event_id"].as_str().expect("event_id").to_owned();

    // Event reports.
    let event_path = |room: &str, event: &str| format!("/rooms/{room}/report/{event}");
    let (status, body) = report(
        &server,
        &bob,
        &event_path(&room, &nasty),
        json!({ "reason": "rude", "score": -80 }),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    // The reason may be left out.
    let (status, _) = report(&server, &bob, &event_path(&room, &nasty), json!({})).await;
    assert_eq!(status, 200);
    for (who, path) in [
        // Unknown event, event of another room, event Bob may not see.
        (&bob, event_path(&room, "$nonexistent")),
        (&bob, event_path(&room, &elsewhere)),
        (&bob, event_path(&room, &before)),
        // Carol is not in the room; the room does not exist.
        (&carol, event_path(&room, &nasty)),
        (&bob, event_path("!nonexistent:localhost", &nasty)),
    ] {
        let (status, body) = report(&server, who, &path, json!({ "reason": "x" })).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{path}");
    }
    for (bad, code) in [
        (json!({ "score": 1 }), "M_INVALID_PARAM"),
        (json!({ "score": -101 }), "M_INVALID_PARAM"),
        (json!({ "score": "-10" }), "M_BAD_JSON"),
        (json!({ "score": -1.5 }), "M_BAD_JSON"),
        (json!({ "reason": 1 }), "M_BAD_JSON"),
        (json!({ "reason": "r".repeat(1001) }), "M_INVALID_PARAM"),
    ] {
        let (status, body) = report(&server, &bob, &event_path(&room, &nasty), bad.clone()).await;
        assert_eq!((status, errcode(&body)), (400, code), "{bad}");
    }
    let (status, body) = report(&server, &bob, &event_path(&room, "not-an-event"), json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"));
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3{}", event_path(&room, &nasty)),
            None,
            json!({}),
        )
        .await;
    assert_eq!(status, 401);

    // Room reports: anyone may report a room the server knows; a reason is required.
    let (status, _) = report(
        &server,
        &carol,
        &format!("/rooms/{room}/report"),
        json!({ "reason": "a den of rudeness" }),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = report(&server, &carol, &format!("/rooms/{room}/report"), json!({})).await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, body) = report(
        &server,
        &carol,
        "/rooms/!nonexistent:localhost/report",
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));

    // User reports: users of this server only.
    let (status, _) = report(
        &server,
        &carol,
        &format!("/users/{}/report", alice.id),
        json!({ "reason": "" }),
    )
    .await;
    assert_eq!(status, 200);
    for (user, status_code, code) in [
        ("@nobody:localhost", 404, "M_NOT_FOUND"),
        ("@alice:elsewhere.example", 404, "M_NOT_FOUND"),
        ("alice", 400, "M_INVALID_PARAM"),
    ] {
        let (status, body) = report(
            &server,
            &carol,
            &format!("/users/{user}/report"),
            json!({ "reason": "x" }),
        )
        .await;
        assert_eq!((status, errcode(&body)), (status_code, code), "{user}");
    }

    // `roost reports list`, with the server stopped: newest first.
    let closed = server
        .server
        .as_ref()
        .expect("running")
        .services()
        .store
        .closed();
    server.stop().await;
    tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .expect("the store closes");
    let run = |args: &[&str]| {
        let output = crate::child::roost(server.data.path())
            .args(args)
            .output()
            .expect("roost runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let text = run(&["reports", "list"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].contains(&format!("user {}", alice.id)), "{text}");
    assert!(lines[3].contains("score -80\t\"rude\""), "{text}");
    let json_lines = run(&["reports", "list", "--json", "--limit", "2"]);
    let parsed: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON report per line"))
        .collect();
    assert_eq!(parsed.len(), 2);
    assert_eq!(
        parsed[1]["target"],
        json!({ "kind": "room", "room_id": room })
    );

    // The function behind it.
    let store = roost::storage::Store::open(server.data.path())
        .expect("the store opens once the server is stopped");
    let reports = Reports::new(&store).expect("reports");
    let listed = reports.list(10).expect("list");
    assert_eq!(listed.len(), 4);
    let at = |i: usize| &listed[i];
    assert_eq!(
        at(0).target,
        ReportTarget::User {
            user_id: ruma::UserId::parse(alice.id.as_str()).expect("user ID"),
        }
    );
    assert_eq!(at(0).reason.as_deref(), Some(""));
    assert_eq!(at(0).reporter.as_str(), carol.id);
    assert!(matches!(&at(1).target, ReportTarget::Room { room_id } if room_id.as_str() == room));
    assert_eq!(at(1).reason.as_deref(), Some("a den of rudeness"));
    let event_target = ReportTarget::Event {
        room_id: ruma::RoomId::parse(room.as_str()).expect("room ID"),
        event_id: ruma::EventId::parse(nasty.as_str()).expect("event ID"),
    };
    assert_eq!(at(2).target, event_target);
    assert_eq!((at(2).reason.as_deref(), at(2).score), (None, None));
    assert_eq!(at(3).target, event_target);
    assert_eq!(
        (at(3).reason.as_deref(), at(3).score),
        (Some("rude"), Some(-80))
    );
    assert_eq!(at(3).reporter.as_str(), bob.id);
    assert!(
        listed
            .windows(2)
            .all(|w| w[0].id > w[1].id && w[0].ts >= w[1].ts)
    );
    assert_eq!(reports.list(1).expect("list").len(), 1);
    let line = at(3).line();
    assert!(line.contains(&bob.id) && line.contains("score -80") && line.contains("\"rude\""));
}

#[tokio::test]
async fn reports_are_rate_limited_per_account() {
    let server = TestServer::start_with(|c| {
        c.rate_limits.enabled = true;
        c.rate_limits.reports_per_account.burst = 2;
        c.rate_limits.reports_per_account.per_second = 0.001;
    })
    .await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let path = format!("/users/{}/report", alice.id);
    for _ in 0..2 {
        let (status, body) = report(&server, &bob, &path, json!({ "reason": "spam" })).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = report(&server, &bob, &path, json!({ "reason": "spam" })).await;
    assert_eq!((status, errcode(&body)), (429, "M_LIMIT_EXCEEDED"));
    // Another reporter has a bucket of their own.
    let (status, _) = report(
        &server,
        &alice,
        &format!("/users/{}/report", bob.id),
        json!({ "reason": "x" }),
    )
    .await;
    assert_eq!(status, 200);
}
