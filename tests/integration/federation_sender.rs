//! The federation sender against a real second server: events of our users reach the other
//! server in order, in transactions within the limits, exactly once, after the other server or
//! this one was down, and also when they were stored while the sender was not running; typing,
//! public receipts and presence go out; a kicked server gets its kick and nothing after;
//! nothing goes out with federation disabled.

use std::collections::BTreeMap;
use std::time::Duration;

use roost::service::federation::sender::{DestinationState, MAX_PDUS};
use roost::service::receipts::{ReceiptKey, ReceiptKind};
use roost::storage::{keys, trees};
use ruma::{OwnedUserId, RoomId, ServerName, UserId};
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, send_receipt, send_text, set_typing, user};
use crate::federation_common::FederatedPair;
use crate::federation_forge::{Draft, build, services, unpublished_key};

/// How long a test waits for something another server does.
const PATIENCE: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_millis(50);

/// Waits (boundedly) until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(STEP).await;
    }
}

/// What `server`'s sender knows of `destination`.
fn sender_state(server: &TestServer, destination: &ServerName) -> DestinationState {
    services(server)
        .federation
        .sender
        .destination(destination)
        .expect("the destination's state")
}

/// Whether `server` has nothing queued or in flight for `destination`.
fn idle_towards(server: &TestServer, destination: &ServerName) -> bool {
    let state = sender_state(server, destination);
    let in_flight = services(server)
        .federation
        .sender
        .destinations()
        .expect("destinations")
        .iter()
        .any(|d| d.destination == destination && d.in_flight);
    state.queued_pdus == 0 && state.queued_edus == 0 && !in_flight
}

/// The bodies of the room's messages in `server`'s timeline, in its order.
fn bodies(server: &TestServer, room: &str) -> Vec<String> {
    let services = services(server);
    let room = RoomId::parse(room).expect("room ID");
    services
        .rooms
        .timeline_range(&room, 0, u64::MAX, false, 100_000)
        .expect("timeline")
        .into_iter()
        .filter_map(|(_, id)| services.rooms.pdu(&id).expect("event"))
        .filter(|pdu| pdu.kind().to_string() == "m.room.message")
        .map(|pdu| {
            let content: Value = serde_json::from_str(pdu.content().get()).expect("content");
            content["body"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The answers `server` recorded for transactions of `origin`: transaction ID → answer.
fn answers_from(server: &TestServer, origin: &ServerName) -> BTreeMap<String, Value> {
    let tree = services(server)
        .store
        .tree(trees::FED_TXN_ANSWER)
        .expect("the answer tree");
    tree.scan_prefix(keys::prefix(origin.as_str()))
        .map(|item| {
            let (key, value) = item.expect("an answer");
            let txn = keys::second(&key).expect("a transaction ID").to_owned();
            (txn, serde_json::from_slice(&value).expect("JSON"))
        })
        .collect()
}

/// Opens the store of a stopped server: sled's own flusher lets go of the file lock shortly
/// after the store's last handle, hence a bounded wait.
async fn open_closed_store(dir: &std::path::Path) -> roost::storage::Store {
    for _ in 0..100 {
        match roost::storage::Store::open(dir) {
            Err(roost::storage::StorageError::Locked { .. }) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => return opened.expect("the store opens"),
        }
    }
    panic!("the store stays locked");
}

/// Runs the `roost` command on a stopped server's data directory; its output.
async fn roost_command(dir: &std::path::Path, args: &[&str]) -> String {
    for _ in 0..100 {
        let output = crate::child::roost(dir)
            .args(args)
            .output()
            .expect("roost runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return String::from_utf8_lossy(&output.stdout).into_owned();
        }
        assert!(stderr.contains("in use by another process"), "{stderr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the store stays locked");
}

/// A public room of Alice's on A that Bob of B joined; both servers idle afterwards.
async fn shared_room(pair: &FederatedPair) -> (User, User, String) {
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = create_room(&pair.a, &alice, json!({ "preset": "public_chat" })).await;
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/join/{room}?server_name={}", pair.a.name),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (a, b) = (pair.a.name.clone(), pair.b.name.clone());
    wait_until("both servers have sent everything", || {
        idle_towards(&pair.a, &b) && idle_towards(&pair.b, &a)
    })
    .await;
    (alice, bob, room)
}

#[tokio::test]
async fn federation_sender_delivers_in_order_in_bounded_batches_after_an_outage() {
    let mut pair = FederatedPair::start().await;
    let (alice, bob, room) = shared_room(&pair).await;
    let b_name = pair.b.name.clone();
    let before = sender_state(&pair.a, &b_name);
    let answered_before = answers_from(&pair.b, &pair.a.name);

    // B is down while Alice writes: everything waits in A's queue.
    pair.b.stop().await;
    let texts: Vec<String> = (0..120).map(|i| format!("burst {i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        let (status, body) = send_text(&pair.a, &alice, &room, &format!("t{i}"), text).await;
        assert_eq!(status, 200, "{body}");
    }
    // Two failures in a row: the next attempt is 10 s away.
    wait_until("A queued the burst and failed twice to reach B", || {
        let state = sender_state(&pair.a, &b_name);
        state.queued_pdus == 120 && state.failures >= 2
    })
    .await;
    let backoff_until = sender_state(&pair.a, &b_name).backoff_until_ms;

    // B comes back; A retries at once when B contacts it (Bob writes), not when its backoff ends.
    pair.b.restart().await;
    let (status, body) = send_text(&pair.b, &bob, &room, "back", "bob is back").await;
    assert_eq!(status, 200, "{body}");
    wait_until("B has the whole burst", || {
        bodies(&pair.b, &room)
            .iter()
            .filter(|b| b.starts_with("burst"))
            .count()
            >= 120
    })
    .await;
    assert!(
        roost::util::now_ms() < backoff_until,
        "delivered only when the backoff ended"
    );
    wait_until("A has Bob's message", || {
        bodies(&pair.a, &room).contains(&"bob is back".to_owned())
    })
    .await;

    // Exactly once, in order.
    let seen: Vec<String> = bodies(&pair.b, &room)
        .into_iter()
        .filter(|b| b.starts_with("burst"))
        .collect();
    assert_eq!(seen, texts);

    // The queue is empty, the backoff over, and the burst went in several transactions, none
    // above the limit, as B recorded them.
    wait_until("A's queue for B is empty", || {
        idle_towards(&pair.a, &b_name)
    })
    .await;
    let after = sender_state(&pair.a, &b_name);
    assert_eq!(after.failures, 0);
    assert_eq!(after.backoff_until_ms, 0);
    assert_eq!(after.pdus_sent - before.pdus_sent, 120);
    assert!(after.last_success_ms > before.last_success_ms);
    let new_answers: Vec<Value> = answers_from(&pair.b, &pair.a.name)
        .into_iter()
        .filter(|(txn, _)| !answered_before.contains_key(txn))
        .map(|(_, answer)| answer)
        .collect();
    let sizes: Vec<usize> = new_answers
        .iter()
        .map(|answer| answer["pdus"].as_object().map_or(0, |pdus| pdus.len()))
        .filter(|n| *n > 0)
        .collect();
    assert!(sizes.len() >= 3, "transactions: {sizes:?}");
    assert!(
        sizes.iter().all(|n| *n <= MAX_PDUS),
        "transactions: {sizes:?}"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 120, "transactions: {sizes:?}");
    for answer in &new_answers {
        for (event, result) in answer["pdus"].as_object().into_iter().flatten() {
            assert_eq!(result, &json!({}), "B refused {event}: {answer}");
        }
    }
}

#[tokio::test]
async fn federation_sender_queue_and_backoff_survive_a_restart_of_the_sender() {
    let mut pair = FederatedPair::start().await;
    let (alice, bob, room) = shared_room(&pair).await;
    let b_name = pair.b.name.clone();

    pair.b.stop().await;
    let texts: Vec<String> = (0..10).map(|i| format!("while down {i}")).collect();
    for (i, text) in texts.iter().enumerate() {
        let (status, body) = send_text(&pair.a, &alice, &room, &format!("d{i}"), text).await;
        assert_eq!(status, 200, "{body}");
    }
    wait_until("A failed to reach B with the messages queued", || {
        let state = sender_state(&pair.a, &b_name);
        state.queued_pdus == 10 && state.failures >= 1
    })
    .await;

    // A stops: the queue, the transaction in flight and the backoff are on disk, and the
    // command-line view shows them.
    let closed = services(&pair.a).store.closed();
    pair.a.stop().await;
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("A's store closes");
    let stored = {
        let store = open_closed_store(pair.a.data.path()).await;
        let listed = roost::service::federation::sender::destinations_in(&store).expect("list");
        listed
            .into_iter()
            .find(|d| d.destination == b_name)
            .expect("B is listed")
    };
    assert_eq!(stored.queued_pdus, 10);
    assert!(stored.failures >= 1 && stored.in_flight, "{stored:?}");
    assert!(stored.last_error.is_some());
    // The command-line view (a process of its own: the lock of the in-process handle above may
    // linger a moment, the command is retried while it does).
    let text = roost_command(pair.a.data.path(), &["federation", "destinations"]).await;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{b_name}\t")))
        .unwrap_or_else(|| panic!("B is listed: {text}"));
    assert!(line.contains("\tpdus 10\t"), "{line}");
    let json_text = roost_command(
        pair.a.data.path(),
        &["federation", "destinations", "--json"],
    )
    .await;
    let listed: Vec<Value> = json_text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let entry = listed
        .iter()
        .find(|d| d["destination"] == b_name.as_str())
        .expect("B in the JSON list");
    assert_eq!(entry["queued_pdus"], 10);
    assert_eq!(entry["failures"], stored.failures);

    pair.a.restart().await;
    let restored = sender_state(&pair.a, &b_name);
    assert_eq!(restored.queued_pdus, 10);
    // The stored failures and backoff are where the restarted sender starts from (it may have
    // tried once more meanwhile, if the backoff ran out).
    assert!(restored.failures >= stored.failures, "{restored:?}");
    assert!(restored.backoff_until_ms >= stored.backoff_until_ms.unwrap_or(0));
    let listed = services(&pair.a)
        .federation
        .sender
        .destinations()
        .expect("destinations");
    assert!(
        listed
            .iter()
            .any(|d| d.destination == b_name && d.in_flight)
    );

    // B comes back and speaks to A, which ends A's backoff: everything arrives, once.
    pair.b.restart().await;
    let (status, body) = send_text(&pair.b, &bob, &room, "hello", "hello again").await;
    assert_eq!(status, 200, "{body}");
    wait_until("B has every message", || {
        bodies(&pair.b, &room)
            .iter()
            .filter(|b| b.starts_with("while down"))
            .count()
            >= 10
    })
    .await;
    let seen: Vec<String> = bodies(&pair.b, &room)
        .into_iter()
        .filter(|b| b.starts_with("while down"))
        .collect();
    assert_eq!(seen, texts);
    wait_until("A's queue for B is empty", || {
        idle_towards(&pair.a, &b_name)
    })
    .await;
    assert_eq!(sender_state(&pair.a, &b_name).failures, 0);
}

#[tokio::test]
async fn federation_sender_sends_typing_public_receipts_and_presence() {
    let pair = FederatedPair::start().await;
    let (alice, _bob, room) = shared_room(&pair).await;
    let room_id = RoomId::parse(&room).unwrap();
    let alice_id = OwnedUserId::try_from(alice.id.as_str()).unwrap();
    let b_name = pair.b.name.clone();

    let (status, body) = set_typing(&pair.a, &alice, &room, true, Some(30_000)).await;
    assert_eq!(status, 200, "{body}");
    wait_until("B sees Alice typing", || {
        services(&pair.b)
            .typing
            .typers(&room_id)
            .is_some_and(|(typers, _)| typers.contains(&alice_id))
    })
    .await;
    let (status, body) = set_typing(&pair.a, &alice, &room, false, None).await;
    assert_eq!(status, 200, "{body}");
    wait_until("B sees Alice stop typing", || {
        services(&pair.b)
            .typing
            .typers(&room_id)
            .is_some_and(|(typers, _)| !typers.contains(&alice_id))
    })
    .await;

    let (status, sent) = send_text(&pair.a, &alice, &room, "r1", "read me").await;
    assert_eq!(status, 200, "{sent}");
    let event = sent["event_id"].as_str().unwrap().to_owned();
    wait_until("B has the message", || {
        bodies(&pair.b, &room).contains(&"read me".to_owned())
    })
    .await;
    wait_until("A's queue for B is empty", || {
        idle_towards(&pair.a, &b_name)
    })
    .await;

    // A private receipt stays home.
    let edus = |state: DestinationState| state.queued_edus + state.edus_sent + state.edus_dropped;
    let counted = edus(sender_state(&pair.a, &b_name));
    let (status, body) =
        send_receipt(&pair.a, &alice, &room, "m.read.private", &event, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(edus(sender_state(&pair.a, &b_name)), counted);

    // A public one goes out.
    let (status, body) = send_receipt(&pair.a, &alice, &room, "m.read", &event, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let key = ReceiptKey {
        kind: ReceiptKind::Read,
        user: alice_id.clone(),
        thread: None,
    };
    wait_until("B has Alice's read receipt", || {
        services(&pair.b)
            .receipts
            .get(&room_id, &key)
            .expect("receipt")
            .is_some_and(|r| r.event_id == event)
    })
    .await;
    let private = ReceiptKey {
        kind: ReceiptKind::ReadPrivate,
        ..key.clone()
    };
    assert!(
        services(&pair.b)
            .receipts
            .get(&room_id, &private)
            .unwrap()
            .is_none()
    );

    // Presence reaches the servers sharing a room with Alice.
    let (status, body) = pair
        .a
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/presence/{}/status", alice.id),
            Some(&alice.token),
            Some(json!({ "presence": "online", "status_msg": "baking" })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("B has Alice's status", || {
        services(&pair.b)
            .presence
            .get(&alice_id)
            .expect("presence")
            .is_some_and(|p| p.status_msg.as_deref() == Some("baking"))
    })
    .await;
}

#[tokio::test]
async fn federation_sender_sends_a_kick_to_the_kicked_server_and_nothing_after() {
    let pair = FederatedPair::start().await;
    let (alice, bob, room) = shared_room(&pair).await;
    let room_id = RoomId::parse(&room).unwrap();
    let bob_id = UserId::parse(&bob.id).unwrap();
    let b_name = pair.b.name.clone();

    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({ "user_id": bob.id, "reason": "enough" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    wait_until("B knows Bob was kicked", || {
        services(&pair.b)
            .rooms
            .membership(&room_id, &bob_id)
            .unwrap()
            .as_deref()
            == Some("leave")
    })
    .await;
    wait_until("A's queue for B is empty", || {
        idle_towards(&pair.a, &b_name)
    })
    .await;
    let sent = sender_state(&pair.a, &b_name).pdus_sent;

    // B has no member left: Alice's next message is not for it.
    let (status, after) = send_text(&pair.a, &alice, &room, "x1", "after the kick").await;
    assert_eq!(status, 200, "{after}");
    let event = ruma::EventId::parse(after["event_id"].as_str().unwrap()).unwrap();
    let position = services(&pair.a)
        .rooms
        .event_meta(&event)
        .unwrap()
        .expect("meta")
        .stream_pos;
    wait_until("A's fan-out passed the message", || {
        services(&pair.a)
            .federation
            .sender
            .fanned_out_upto()
            .unwrap()
            >= position
    })
    .await;
    let state = sender_state(&pair.a, &b_name);
    assert_eq!(state.queued_pdus + state.pdus_sent, sent);
    assert!(!bodies(&pair.b, &room).contains(&"after the kick".to_owned()));
}

#[tokio::test]
async fn federation_sender_stays_idle_when_federation_is_disabled() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    let room_id = RoomId::parse(&room).unwrap();
    // A member of another server, as if it had joined.
    let remote = ruma::server_name!("remote.example");
    let key = unpublished_key();
    let join = build(
        &server,
        remote,
        &key,
        &room_id,
        Draft::member("@carol:remote.example", "join"),
    );
    services(&server)
        .rooms
        .ingest(join)
        .await
        .expect("the join is stored");
    assert!(
        services(&server)
            .rooms
            .servers_in_room(&room_id)
            .unwrap()
            .contains(remote)
    );

    let (status, body) = send_text(&server, &alice, &room, "m1", "stays here").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = set_typing(&server, &alice, &room, true, Some(10_000)).await;
    assert_eq!(status, 200, "{body}");
    let sender = &services(&server).federation.sender;
    sender
        .queue_edu(
            &[remote.to_owned()],
            &json!({ "edu_type": "m.typing", "content": {} }),
        )
        .expect("queue_edu is a no-op");
    sender.wake(remote);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sender.destinations().unwrap().is_empty());
    assert!(!sender.is_sending_to(remote));
}

#[tokio::test]
async fn federation_sender_catches_up_on_events_stored_while_it_was_not_running() {
    let mut pair = FederatedPair::start().await;
    let (alice, _bob, room) = shared_room(&pair).await;
    let room_id = RoomId::parse(&room).unwrap();
    let alice_id = UserId::parse(&alice.id).unwrap();

    // Events persisted with no fan-out running (as after a crash right after their commit):
    // A's store is opened by itself and written to.
    let closed = services(&pair.a).store.closed();
    pair.a.stop().await;
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("A's store closes");
    let store = open_closed_store(pair.a.data.path()).await;
    let offline = roost::service::Services::build(pair.a.config.clone(), store).expect("services");
    let texts: Vec<String> = (0..3).map(|i| format!("written offline {i}")).collect();
    for text in &texts {
        offline
            .rooms
            .append(
                &room_id,
                &alice_id,
                roost::service::rooms::NewEvent::message(
                    "m.room.message".into(),
                    json!({ "msgtype": "m.text", "body": text }),
                ),
                None,
            )
            .await
            .expect("the message is stored");
    }
    let closed = offline.store.closed();
    offline.store.flush_blocking().expect("flush");
    drop(offline);
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the offline store closes");

    // A starts again: its fan-out resumes from its stored progress and B gets them.
    let mut restarted = None;
    for _ in 0..100 {
        match roost::start(pair.a.config.clone()).await {
            Ok(server) => {
                restarted = Some(server);
                break;
            }
            Err(roost::StartError::Storage(roost::storage::StorageError::Locked { .. })) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("A restarts: {e}"),
        }
    }
    pair.a.ts.server = Some(restarted.expect("A restarts"));
    wait_until(
        "B has the messages written while A's sender was not running",
        || {
            bodies(&pair.b, &room)
                .iter()
                .filter(|b| b.starts_with("written offline"))
                .count()
                >= 3
        },
    )
    .await;
    let seen: Vec<String> = bodies(&pair.b, &room)
        .into_iter()
        .filter(|b| b.starts_with("written offline"))
        .collect();
    assert_eq!(seen, texts);
}
