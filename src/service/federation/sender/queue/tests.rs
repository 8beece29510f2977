use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, server_name};
use serde_json::json;

use super::*;

/// Opens the store in `dir`. After a restart sled's flusher thread lets go of the file lock
/// shortly after the last handle (the supervisor retries for the same reason): a bounded wait.
fn open(dir: &std::path::Path) -> (Store, Queue) {
    let mut opened = Store::open(dir);
    for _ in 0..100 {
        if !matches!(opened, Err(crate::storage::StorageError::Locked { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        opened = Store::open(dir);
    }
    let store = opened.unwrap();
    let queue = Queue::new(&store).unwrap();
    (store, queue)
}

fn pdu(destination: &str, position: u64, room: &str) -> NewPdu {
    NewPdu {
        destination: OwnedServerName::try_from(destination).unwrap(),
        position,
        room_id: OwnedRoomId::try_from(room).unwrap(),
        event_id: OwnedEventId::try_from(format!("$e{position}")).unwrap(),
    }
}

fn edu(kind: &str, queued_ms: u64) -> QueuedEdu {
    QueuedEdu {
        edu_type: kind.into(),
        content: json!({ "n": queued_ms }),
        queued_ms,
    }
}

#[test]
fn batches_respect_the_limits_and_keep_their_id_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    let entries: Vec<NewPdu> = (1..=120).map(|p| pdu("b.example", p, "!r:a")).collect();
    let touched = queue.enqueue_pdus(&entries, Some(120)).unwrap();
    assert_eq!(touched.len(), 1);
    assert_eq!(touched[0].1.queued_pdus, 120);
    assert_eq!(queue.progress().unwrap(), Some(120));
    // Queueing the same events again changes nothing.
    queue.enqueue_pdus(&entries[..10], Some(120)).unwrap();
    assert_eq!(queue.state(b).unwrap().queued_pdus, 120);
    let destinations = [b.to_owned()];
    for n in 0..130 {
        queue
            .enqueue_edu(&destinations, &edu("m.receipt", n))
            .unwrap();
    }

    let first = queue.next_batch(b, 1_000).unwrap().unwrap();
    assert_eq!(first.pdus, (1..=50).collect::<Vec<_>>());
    assert_eq!(first.edus.len(), batch::MAX_EDUS);
    // Until it is finished, the same transaction comes back.
    assert_eq!(queue.next_batch(b, 2_000).unwrap().unwrap(), first);
    let (pdus, edus) = queue.contents(b, &first).unwrap();
    assert_eq!(pdus.len(), 50);
    assert_eq!(pdus[0].event_id, "$e1");
    assert_eq!(pdus[0].room_id, "!r:a");
    assert_eq!(edus[0].content, json!({ "n": 0 }));

    let state = queue.finish(b, &first, Outcome::Delivered, 3_000).unwrap();
    assert_eq!((state.queued_pdus, state.queued_edus), (70, 30));
    assert_eq!(state.last_success_ms, Some(3_000));
    assert_eq!(
        (state.pdus_sent, state.edus_sent, state.transactions_sent),
        (50, 100, 1)
    );

    let second = queue.next_batch(b, 4_000).unwrap().unwrap();
    assert_ne!(second.txn_id, first.txn_id);
    assert_eq!(second.pdus, (51..=100).collect::<Vec<_>>());
    assert_eq!(second.edus.len(), 30);
    queue.finish(b, &second, Outcome::Delivered, 5_000).unwrap();
    let third = queue.next_batch(b, 6_000).unwrap().unwrap();
    assert_eq!(third.pdus.len(), 20);
    assert!(third.edus.is_empty());
    queue.finish(b, &third, Outcome::Delivered, 7_000).unwrap();
    assert!(queue.next_batch(b, 8_000).unwrap().is_none());
    assert!(!queue.has_work(b).unwrap());
    let state = queue.state(b).unwrap();
    assert_eq!(
        (state.queued_pdus, state.queued_edus, state.pdus_sent),
        (0, 0, 120)
    );
}

#[test]
fn failures_back_off_and_a_wake_ends_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    queue
        .enqueue_pdus(&[pdu("b.example", 1, "!r:a")], None)
        .unwrap();
    assert_eq!(
        queue.progress().unwrap(),
        None,
        "no progress given, none stored"
    );
    let state = queue.failed(b, "connection refused", 10_000).unwrap();
    assert_eq!(state.failures, 1);
    assert_eq!(state.backoff_until_ms, 15_000);
    assert!(state.in_backoff(14_999) && !state.in_backoff(15_000));
    let state = queue.failed(b, "connection refused", 20_000).unwrap();
    assert_eq!(state.backoff_until_ms, 30_000);
    assert_eq!(state.last_error.as_deref(), Some("connection refused"));
    assert!(queue.clear_backoff(b).unwrap());
    assert!(!queue.clear_backoff(b).unwrap());
    assert!(!queue.clear_backoff(server_name!("never.example")).unwrap());
    let state = queue.state(b).unwrap();
    assert_eq!((state.failures, state.backoff_until_ms), (0, 0));
    assert_eq!(state.queued_pdus, 1, "the queue is untouched");
    // A long error text is shortened.
    let state = queue.failed(b, &"x".repeat(10_000), 1).unwrap();
    assert!(state.last_error.unwrap().chars().count() <= MAX_ERROR_CHARS + 1);
}

#[test]
fn the_queue_the_transaction_in_flight_and_the_backoff_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let b = server_name!("b.example");
    let (first, backoff) = {
        let (store, queue) = open(dir.path());
        let entries: Vec<NewPdu> = (1..=60).map(|p| pdu("b.example", p, "!r:a")).collect();
        queue.enqueue_pdus(&entries, Some(60)).unwrap();
        queue
            .enqueue_edu(&[b.to_owned()], &edu("m.receipt", 1))
            .unwrap();
        let first = queue.next_batch(b, 1_000).unwrap().unwrap();
        let state = queue.failed(b, "timed out", 2_000).unwrap();
        store.flush_blocking().unwrap();
        (first, state.backoff_until_ms)
    };
    let (_store, queue) = open(dir.path());
    assert_eq!(queue.progress().unwrap(), Some(60));
    assert_eq!(queue.next_batch(b, 3_000).unwrap().unwrap(), first);
    let state = queue.state(b).unwrap();
    assert_eq!(state.backoff_until_ms, backoff);
    assert_eq!((state.queued_pdus, state.queued_edus), (60, 1));
    let listed = queue.infos().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].in_flight);
    assert_eq!(listed[0].failures, 1);
}

#[test]
fn a_refused_transaction_is_dropped_and_the_destination_counts_as_up() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    queue
        .enqueue_pdus(&[pdu("b.example", 1, "!r:a")], None)
        .unwrap();
    queue.failed(b, "down", 0).unwrap();
    let txn = queue.next_batch(b, 10).unwrap().unwrap();
    let state = queue
        .finish(b, &txn, Outcome::Refused("400 M_BAD_JSON"), 20)
        .unwrap();
    assert_eq!(
        (state.queued_pdus, state.pdus_dropped, state.pdus_sent),
        (0, 1, 0)
    );
    assert_eq!(state.failures, 0);
    assert_eq!(state.last_success_ms, None);
    assert!(!queue.has_work(b).unwrap());
}

#[test]
fn typing_is_given_up_for_failing_destinations_and_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    let destinations = [b.to_owned()];
    queue
        .enqueue_edu(&destinations, &edu("m.typing", 1_000))
        .unwrap();
    queue
        .enqueue_edu(&destinations, &edu("m.receipt", 1_000))
        .unwrap();
    // Stale typing is dropped when the next transaction is made.
    let txn = queue
        .next_batch(b, 1_001 + batch::TYPING_TTL_MS)
        .unwrap()
        .unwrap();
    assert_eq!(txn.edus.len(), 1);
    let (_, edus) = queue.contents(b, &txn).unwrap();
    assert_eq!(edus[0].edu_type, "m.receipt");
    let state = queue.state(b).unwrap();
    assert_eq!((state.queued_edus, state.edus_dropped), (1, 1));
    queue.finish(b, &txn, Outcome::Delivered, 40_000).unwrap();

    // While the destination is in backoff, typing is not queued; receipts are.
    queue.failed(b, "down", 50_000).unwrap();
    let queued = queue
        .enqueue_edu(&destinations, &edu("m.typing", 50_001))
        .unwrap();
    assert!(queued.is_empty());
    let queued = queue
        .enqueue_edu(&destinations, &edu("m.receipt", 50_001))
        .unwrap();
    assert_eq!(queued, destinations);
    // Presence stays queued until the backlog is long.
    let queued = queue
        .enqueue_edu(&destinations, &edu("m.presence", 50_001))
        .unwrap();
    assert_eq!(queued, destinations);
    let state = queue.state(b).unwrap();
    assert_eq!((state.queued_edus, state.edus_dropped), (2, 2));
}

#[test]
fn an_overflowing_queue_keeps_the_latest_event_of_each_room() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    let rooms = ["!one:a", "!two:a", "!three:a"];
    let total = MAX_QUEUED_PDUS + 5;
    let entries: Vec<NewPdu> = (1..=total)
        .map(|p| pdu("b.example", p, rooms[(p % 3) as usize]))
        .collect();
    let touched = queue.enqueue_pdus(&entries, Some(total)).unwrap();
    assert!(touched[0].1.overflowing());
    let dropped = queue.compact(b).unwrap();
    assert_eq!(dropped, total - 3);
    let state = queue.state(b).unwrap();
    assert_eq!(state.queued_pdus, 3);
    assert_eq!(state.pdus_dropped, total - 3);
    assert!(!state.overflowing());
    let txn = queue.next_batch(b, 1).unwrap().unwrap();
    assert_eq!(txn.pdus, vec![total - 2, total - 1, total]);
}

#[test]
fn compaction_under_a_transaction_in_flight_sends_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, queue) = open(dir.path());
    let b = server_name!("b.example");
    let entries: Vec<NewPdu> = (1..=4).map(|p| pdu("b.example", p, "!r:a")).collect();
    queue.enqueue_pdus(&entries, None).unwrap();
    let txn = queue.next_batch(b, 1).unwrap().unwrap();
    assert_eq!(queue.compact(b).unwrap(), 3);
    let (pdus, _) = queue.contents(b, &txn).unwrap();
    assert_eq!(pdus.len(), 1);
    assert_eq!(pdus[0].position, 4);
    let state = queue.finish(b, &txn, Outcome::Delivered, 2).unwrap();
    assert_eq!(
        (state.queued_pdus, state.pdus_sent, state.pdus_dropped),
        (0, 1, 3)
    );
}
