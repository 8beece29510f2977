//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}` and the `to_device`
//! section of `/sync` (exactly-once delivery, batches, long polls, deleted devices).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, User, errcode, spawn_long_poll, token};

/// A user's device: its access token, user ID and device ID.
struct Device {
    user: User,
    device_id: String,
}

async fn register(server: &TestServer, name: &str) -> Device {
    let body = server.register(name).await;
    Device {
        user: User {
            token: token(&body),
            id: body["user_id"].as_str().unwrap().to_owned(),
        },
        device_id: body["device_id"].as_str().unwrap().to_owned(),
    }
}

/// Logs `name` in once more (optionally as an existing device ID): another device.
async fn log_in(server: &TestServer, name: &str, device_id: Option<&str>) -> Device {
    let mut request = json!({
        "type": "m.login.password",
        "identifier": { "type": "m.id.user", "user": name },
        "password": PASSWORD,
    });
    if let Some(id) = device_id {
        request["device_id"] = json!(id);
    }
    let (status, body) = server.post("/_matrix/client/v3/login", None, request).await;
    assert_eq!(status, 200, "{body}");
    Device {
        user: User {
            token: token(&body),
            id: body["user_id"].as_str().unwrap().to_owned(),
        },
        device_id: body["device_id"].as_str().unwrap().to_owned(),
    }
}

async fn send(
    server: &TestServer,
    from: &Device,
    kind: &str,
    txn: &str,
    messages: Value,
) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &format!("/_matrix/client/v3/sendToDevice/{kind}/{txn}"),
            Some(&from.user.token),
            Some(json!({ "messages": messages })),
        )
        .await
}

async fn sync(server: &TestServer, device: &Device, query: &str) -> Value {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?set_presence=offline&{query}"),
            Some(&device.user.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn events(body: &Value) -> Vec<Value> {
    body["to_device"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The `n` field of each message's content.
fn numbers(body: &Value) -> Vec<u64> {
    events(body)
        .iter()
        .map(|e| e["content"]["n"].as_u64().expect("n"))
        .collect()
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

#[tokio::test]
async fn to_device_reaches_one_device_or_all_of_them() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob1 = register(&server, "bob").await;
    let bob2 = log_in(&server, "bob", None).await;
    let since1 = next_batch(&sync(&server, &bob1, "").await);
    let since2 = next_batch(&sync(&server, &bob2, "").await);

    let (status, body) = send(
        &server,
        &alice,
        "m.test",
        "t1",
        json!({ bob1.user.id.clone(): { bob1.device_id.clone(): { "n": 1 } } }),
    )
    .await;
    assert_eq!((status, &body), (200, &json!({})));
    let body = sync(&server, &bob1, &format!("since={since1}")).await;
    assert_eq!(
        events(&body),
        vec![json!({ "sender": alice.user.id, "type": "m.test", "content": { "n": 1 } })]
    );
    let since1 = next_batch(&body);
    // Bob's other device gets nothing.
    let body = sync(&server, &bob2, &format!("since={since2}&timeout=200")).await;
    assert!(events(&body).is_empty(), "{body}");
    let since2 = next_batch(&body);

    // `*`: every device of Bob's.
    let (status, _) = send(
        &server,
        &alice,
        "m.test",
        "t2",
        json!({ bob1.user.id.clone(): { "*": { "n": 2 } } }),
    )
    .await;
    assert_eq!(status, 200);
    for (device, since) in [(&bob1, &since1), (&bob2, &since2)] {
        let body = sync(&server, device, &format!("since={since}")).await;
        assert_eq!(numbers(&body), vec![2]);
        assert_eq!(events(&body)[0]["sender"], alice.user.id.as_str());
    }

    // A device named next to `*` gets its own message and only that one.
    let since1 = next_batch(&sync(&server, &bob1, &format!("since={since1}")).await);
    let since2 = next_batch(&sync(&server, &bob2, &format!("since={since2}")).await);
    send(
        &server,
        &alice,
        "m.test",
        "t3",
        json!({ bob1.user.id.clone(): { "*": { "n": 3 }, bob2.device_id.clone(): { "n": 4 } } }),
    )
    .await;
    assert_eq!(
        numbers(&sync(&server, &bob1, &format!("since={since1}")).await),
        vec![3]
    );
    assert_eq!(
        numbers(&sync(&server, &bob2, &format!("since={since2}")).await),
        vec![4]
    );
}

#[tokio::test]
async fn to_device_is_delivered_exactly_once() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let old = next_batch(&sync(&server, &bob, "").await);
    send(
        &server,
        &alice,
        "m.test",
        "t1",
        json!({ bob.user.id.clone(): { bob.device_id.clone(): { "n": 1 } } }),
    )
    .await;

    let first = sync(&server, &bob, &format!("since={old}")).await;
    assert_eq!(numbers(&first), vec![1]);
    // Not acknowledged yet: the old token gets it again, and so does an initial sync.
    assert_eq!(
        numbers(&sync(&server, &bob, &format!("since={old}")).await),
        vec![1]
    );
    assert_eq!(numbers(&sync(&server, &bob, "").await), vec![1]);
    // The new token acknowledges it: never again.
    let new = next_batch(&first);
    let body = sync(&server, &bob, &format!("since={new}&timeout=200")).await;
    assert!(events(&body).is_empty(), "{body}");
    assert!(events(&sync(&server, &bob, &format!("since={old}")).await).is_empty());
    assert!(events(&sync(&server, &bob, "").await).is_empty());
}

#[tokio::test]
async fn to_device_transaction_ids_make_retries_harmless() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let since = next_batch(&sync(&server, &bob, "").await);
    let to_bob = |n: u64| json!({ bob.user.id.clone(): { bob.device_id.clone(): { "n": n } } });
    for _ in 0..2 {
        let (status, body) = send(&server, &alice, "m.test", "same", to_bob(1)).await;
        assert_eq!((status, &body), (200, &json!({})));
    }
    // Another event type is another endpoint path: not a retransmission.
    send(&server, &alice, "m.other", "same", to_bob(2)).await;
    // Another device of the sender has its own transaction IDs.
    let alice2 = log_in(&server, "alice", None).await;
    send(&server, &alice2, "m.test", "same", to_bob(3)).await;
    let body = sync(&server, &bob, &format!("since={since}")).await;
    assert_eq!(numbers(&body), vec![1, 2, 3]);
    let kinds: Vec<String> = events(&body)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, vec!["m.test", "m.other", "m.test"]);
}

#[tokio::test]
async fn to_device_wakes_a_long_poll() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let since = next_batch(&sync(&server, &bob, "").await);
    let poll = spawn_long_poll(
        &server,
        &bob.user.token,
        &format!("since={since}&set_presence=offline&timeout=20000"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(
        &server,
        &alice,
        "m.test",
        "wake",
        json!({ bob.user.id.clone(): { bob.device_id.clone(): { "n": 7 } } }),
    )
    .await;
    let (elapsed, body) = poll.await.unwrap();
    assert!(elapsed < Duration::from_secs(15), "woken by the message");
    assert_eq!(numbers(&body), vec![7]);
}

#[tokio::test]
async fn to_device_comes_in_batches_of_a_hundred() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let since = next_batch(&sync(&server, &bob, "").await);
    for n in 0..150u64 {
        let (status, _) = send(
            &server,
            &alice,
            "m.test",
            &format!("t{n}"),
            json!({ bob.user.id.clone(): { bob.device_id.clone(): { "n": n } } }),
        )
        .await;
        assert_eq!(status, 200);
    }
    let first = sync(&server, &bob, &format!("since={since}")).await;
    assert_eq!(numbers(&first), (0..100).collect::<Vec<_>>());
    // The rest comes at once, although the poll would wait 20 s for a change.
    let started = Instant::now();
    let second = sync(
        &server,
        &bob,
        &format!("since={}&timeout=20000", next_batch(&first)),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(numbers(&second), (100..150).collect::<Vec<_>>());
    let body = sync(
        &server,
        &bob,
        &format!("since={}&timeout=200", next_batch(&second)),
    )
    .await;
    assert!(events(&body).is_empty());
}

#[tokio::test]
async fn to_device_refuses_bad_requests_and_skips_unknown_recipients() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let since = next_batch(&sync(&server, &bob, "").await);
    let good = json!({ bob.device_id.clone(): { "n": 1 } });
    for (messages, status, code) in [
        (
            json!({ "nonsense": { "D": {} }, bob.user.id.clone(): good.clone() }),
            400,
            "M_INVALID_PARAM",
        ),
        (
            json!({ bob.user.id.clone(): { bob.device_id.clone(): [1] } }),
            400,
            "M_BAD_JSON",
        ),
        (
            json!({ bob.user.id.clone(): { bob.device_id.clone(): { "n": 1 }, "": {} } }),
            400,
            "M_INVALID_PARAM",
        ),
        (json!([1]), 400, "M_BAD_JSON"),
    ] {
        let (got, body) = send(&server, &alice, "m.test", "bad", messages).await;
        assert_eq!((got, errcode(&body)), (status, code), "{body}");
    }
    let (status, body) = server
        .call(
            Method::PUT,
            "/_matrix/client/v3/sendToDevice/m.test/nomessages",
            Some(&alice.user.token),
            Some(json!({})),
        )
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_BAD_JSON"));
    let (status, _) = server
        .call(
            Method::PUT,
            "/_matrix/client/v3/sendToDevice/m.test/noauth",
            None,
            Some(json!({ "messages": {} })),
        )
        .await;
    assert_eq!(status, 401);

    // Unknown users and devices and remote users are skipped; the rest is delivered. The
    // failed requests above used txn "bad" without effect, so it is still free.
    let (status, _) = send(
        &server,
        &alice,
        "m.test",
        "bad",
        json!({
            "@nobody:localhost": { "*": { "n": 0 } },
            "@someone:elsewhere.example": { "D": { "n": 0 } },
            bob.user.id.clone(): { "NOSUCHDEVICE": { "n": 0 }, bob.device_id.clone(): { "n": 2 } },
        }),
    )
    .await;
    assert_eq!(status, 200);
    let body = sync(&server, &bob, &format!("since={since}")).await;
    assert_eq!(numbers(&body), vec![2]);
}

#[tokio::test]
async fn to_device_inbox_goes_with_a_deleted_device() {
    let server = TestServer::start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let phone = log_in(&server, "bob", Some("PHONE")).await;
    send(
        &server,
        &alice,
        "m.test",
        "t1",
        json!({ bob.user.id.clone(): { "PHONE": { "n": 1 } } }),
    )
    .await;
    let (status, body) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(&bob.user.token),
            json!({
                "devices": [phone.device_id],
                "auth": { "type": "m.login.password", "user": "bob", "password": PASSWORD },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A new login as PHONE is a new device: the old inbox is gone.
    let phone = log_in(&server, "bob", Some("PHONE")).await;
    assert!(events(&sync(&server, &phone, "").await).is_empty());
    // Messages sent to a deleted device are dropped, not kept for a later one.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/delete_devices",
            Some(&bob.user.token),
            json!({
                "devices": ["PHONE"],
                "auth": { "type": "m.login.password", "user": "bob", "password": PASSWORD },
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    send(
        &server,
        &alice,
        "m.test",
        "t2",
        json!({ bob.user.id.clone(): { "PHONE": { "n": 2 } } }),
    )
    .await;
    let phone = log_in(&server, "bob", Some("PHONE")).await;
    assert!(events(&sync(&server, &phone, "").await).is_empty());
    // Bob's first device never got any of it.
    assert!(events(&sync(&server, &bob, "").await).is_empty());
}
