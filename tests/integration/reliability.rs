//! Reliability of the `roost` process:
//!
//! - sends acknowledged under concurrent load survive `kill -9` at random moments, in order, with
//!   their event IDs, nothing twice, and sync tokens stay valid and keep increasing;
//! - long-polling clients resume across a graceful restart and a `kill -9` with their last tokens,
//!   missing nothing and getting nothing twice;
//! - a disk that refuses writes (a lowered file-size limit) makes writes answer 503, loses nothing
//!   acknowledged, and the server recovers in-process once writes succeed again;
//! - a read-only data directory stops the server at start-up with a clear message.
//!
//! The crash test kills the server 5 times; `ROOST_LONG_TESTS=1` makes it 100. A run prints its
//! random seed; `ROOST_TEST_SEED=<seed>` repeats the same kill delays.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::child::{Api, ServerProcess, roost};
use crate::common::{PASSWORD, errcode};

fn long_tests() -> bool {
    std::env::var("ROOST_LONG_TESTS").is_ok_and(|v| v == "1")
}

/// A random seed, printed so that a failing run can be repeated.
fn seed() -> u64 {
    let seed = std::env::var("ROOST_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    eprintln!("reliability seed: {seed} (repeat with ROOST_TEST_SEED={seed})");
    seed
}

struct Member {
    token: String,
    id: String,
}

/// Registers `names`; the first creates a public room per entry of `rooms`, the others join all.
async fn members_and_rooms(api: &Api, names: &[&str], rooms: usize) -> (Vec<Member>, Vec<String>) {
    let mut members = Vec::new();
    for name in names {
        let (token, id) = api.register(name).await;
        members.push(Member { token, id });
    }
    let mut room_ids = Vec::new();
    for _ in 0..rooms {
        let (status, body) = api
            .post(
                "/_matrix/client/v3/createRoom",
                Some(&members[0].token),
                json!({ "preset": "public_chat" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let room = body["room_id"].as_str().expect("room_id").to_owned();
        for member in &members[1..] {
            let (status, body) = api
                .post(
                    &format!("/_matrix/client/v3/rooms/{room}/join"),
                    Some(&member.token),
                    json!({}),
                )
                .await;
            assert_eq!(status, 200, "{} joins: {body}", member.id);
        }
        room_ids.push(room);
    }
    (members, room_ids)
}

fn send_path(room: &str, txn: &str) -> String {
    format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}")
}

fn text(body: &str) -> Value {
    json!({ "msgtype": "m.text", "body": body })
}

/// Sends one message; `Some(event ID)` when acknowledged, `None` when no answer came (the server
/// died); any other answer fails the test.
async fn try_send(api: &Api, token: &str, room: &str, txn: &str) -> Option<String> {
    match api
        .try_call(
            reqwest::Method::PUT,
            &send_path(room, txn),
            Some(token),
            Some(text(txn)),
        )
        .await
    {
        Ok((200, body)) => Some(body["event_id"].as_str().expect("event_id").to_owned()),
        Ok((status, body)) => panic!("send {txn}: {status} {body}"),
        Err(_) => None,
    }
}

/// Sends one message that must be acknowledged; returns its event ID.
async fn send(api: &Api, token: &str, room: &str, txn: &str) -> String {
    try_send(api, token, room, txn)
        .await
        .unwrap_or_else(|| panic!("send {txn}: no answer"))
}

/// The `m.room.message` events of a room, oldest first, as (event ID, body), through `/messages`.
async fn room_messages(api: &Api, token: &str, room: &str) -> Vec<(String, String)> {
    let filter: String =
        url::form_urlencoded::byte_serialize(br#"{"types":["m.room.message"]}"#).collect();
    let mut events = Vec::new();
    let mut from = String::new();
    for _ in 0..10_000 {
        let (status, body) = api
            .get(
                &format!(
                    "/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000&filter={filter}{from}"
                ),
                Some(token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let chunk = body["chunk"].as_array().expect("chunk");
        for event in chunk {
            events.push((
                event["event_id"].as_str().expect("event_id").to_owned(),
                event["content"]["body"].as_str().unwrap_or("").to_owned(),
            ));
        }
        match body["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = format!("&from={end}"),
            _ => return events,
        }
    }
    panic!("/messages of {room} does not end");
}

/// The number in a stream token (`s<number>`).
fn position(token: &str) -> u64 {
    token
        .strip_prefix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a stream token: {token}"))
}

/// A sync filter whose timelines hold every message of a test (never `limited`).
fn sync_filter() -> String {
    url::form_urlencoded::byte_serialize(
        br#"{"room":{"timeline":{"limit":1000,"types":["m.room.message"]}}}"#,
    )
    .collect()
}

async fn sync(api: &Api, token: &str, since: Option<&str>, timeout_ms: u64) -> (u16, Value) {
    let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
    api.get(
        &format!(
            "/_matrix/client/v3/sync?timeout={timeout_ms}&filter={}{since}",
            sync_filter()
        ),
        Some(token),
    )
    .await
}

/// One send of the crash test.
#[derive(Clone)]
struct Sent {
    room: usize,
    txn: String,
    sender: usize,
    started: Instant,
    /// Event ID and when the acknowledgement arrived.
    acked: Option<(String, Instant)>,
}

/// Sends into `room` until the server stops answering; every send in order.
async fn send_until_killed(
    api: Api,
    token: String,
    room_id: String,
    room: usize,
    sender: usize,
    tag: String,
) -> Vec<Sent> {
    let mut sent = Vec::new();
    for n in 0.. {
        let txn = format!("{tag}-{n}");
        let started = Instant::now();
        let acked = try_send(&api, &token, &room_id, &txn)
            .await
            .map(|id| (id, Instant::now()));
        let done = acked.is_none();
        sent.push(Sent {
            room,
            txn,
            sender,
            started,
            acked,
        });
        if done {
            break;
        }
    }
    sent
}

/// Syncs back to back (no waiting, so that its token is always the newest the server hands out)
/// until the server stops answering; returns the last token it was handed. Each answer is
/// announced on `answered`.
async fn sync_until_killed(
    api: Api,
    token: String,
    mut since: String,
    answered: watch::Sender<usize>,
) -> String {
    loop {
        let path = format!(
            "/_matrix/client/v3/sync?timeout=0&since={since}&filter={}",
            sync_filter()
        );
        match api
            .try_call(reqwest::Method::GET, &path, Some(&token), None)
            .await
        {
            Ok((200, body)) => {
                let next = body["next_batch"].as_str().expect("next_batch").to_owned();
                assert!(position(&next) >= position(&since), "{next} after {since}");
                since = next;
                answered.send_modify(|n| *n += 1);
            }
            Ok((status, body)) => panic!("sync since {since}: {status} {body}"),
            Err(_) => return since,
        }
    }
}

/// Checks a room's messages against the sends: every acknowledged send is there once, with its
/// event ID; nothing is there twice or unknown; and a send acknowledged before another started
/// comes first.
fn check_room(room: usize, messages: &[(String, String)], sent: &HashMap<String, Sent>) {
    let mut bodies = HashSet::new();
    let mut ids = HashSet::new();
    let mut order = Vec::new();
    for (index, (event_id, body)) in messages.iter().enumerate() {
        assert!(bodies.insert(body.as_str()), "room {room}: {body} twice");
        assert!(
            ids.insert(event_id.as_str()),
            "room {room}: {event_id} twice"
        );
        let s = sent
            .get(body)
            .unwrap_or_else(|| panic!("room {room}: unknown message {body}"));
        assert_eq!(s.room, room, "{body} in the wrong room");
        if let Some((acked_id, _)) = &s.acked {
            assert_eq!(acked_id, event_id, "{body} has another event ID");
        }
        order.push((index, s));
    }
    for s in sent.values().filter(|s| s.room == room) {
        if let Some((id, _)) = &s.acked {
            assert!(
                ids.contains(id.as_str()),
                "room {room}: {} ({id}) lost",
                s.txn
            );
        }
    }
    // Scanning from the newest: no later message may have been acknowledged before an earlier
    // one was sent.
    let mut earliest_ack_after: Option<(Instant, &str)> = None;
    for (_, s) in order.iter().rev() {
        if let Some((acked_at, txn)) = earliest_ack_after {
            assert!(
                acked_at >= s.started,
                "room {room}: {txn} was acknowledged before {} was sent, yet comes after it",
                s.txn
            );
        }
        if let Some((_, at)) = &s.acked
            && earliest_ack_after.is_none_or(|(earliest, _)| *at < earliest)
        {
            earliest_ack_after = Some((*at, s.txn.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_sends_survive_kill_9_under_load() {
    const SENDERS: usize = 4;
    const ROOMS: usize = 2;
    let kills = if long_tests() { 100 } else { 5 };
    let mut rng = StdRng::seed_from_u64(seed());
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path());
    let api = server.api();
    let (members, rooms) = members_and_rooms(&api, &["alice", "bob", "carol", "dan"], ROOMS).await;
    let (status, body) = sync(&api, &members[0].token, None, 0).await;
    assert_eq!(status, 200, "{body}");
    let mut since = body["next_batch"].as_str().expect("next_batch").to_owned();
    let mut sent: HashMap<String, Sent> = HashMap::new();

    for round in 0..kills {
        let api = server.api();
        let mut senders = Vec::new();
        for (sender, member) in members.iter().enumerate().take(SENDERS) {
            for (room, room_id) in rooms.iter().enumerate() {
                senders.push(tokio::spawn(send_until_killed(
                    api.clone(),
                    member.token.clone(),
                    room_id.clone(),
                    room,
                    sender,
                    format!("r{round}-u{sender}-room{room}"),
                )));
            }
        }
        let (answered, mut answers) = watch::channel(0);
        let syncer = tokio::spawn(sync_until_killed(
            api.clone(),
            members[0].token.clone(),
            since.clone(),
            answered,
        ));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..300))).await;
        // Mostly right after a sync answer, when its token is as fresh as it gets.
        if rng.gen_bool(0.8) {
            answers.mark_unchanged();
            let _ = tokio::time::timeout(Duration::from_secs(2), answers.changed()).await;
        }
        server.kill();
        for task in senders {
            for s in task.await.expect("sender") {
                sent.insert(s.txn.clone(), s);
            }
        }
        since = syncer.await.expect("syncer");

        server = ServerProcess::start(data.path());
        let api = server.api();
        // The token handed out before the kill is still valid.
        let (status, body) = sync(&api, &members[0].token, Some(&since), 0).await;
        assert_eq!(status, 200, "round {round}: sync since {since}: {body}");
        let after_restart = body["next_batch"].as_str().expect("next_batch").to_owned();
        assert!(position(&after_restart) >= position(&since));
        // Unanswered sends, retried with the same transaction IDs, happen once.
        let unanswered: Vec<Sent> = sent
            .values()
            .filter(|s| s.acked.is_none())
            .cloned()
            .collect();
        for s in unanswered {
            let id = send(&api, &members[s.sender].token, &rooms[s.room], &s.txn).await;
            if let Some(entry) = sent.get_mut(&s.txn) {
                entry.acked = Some((id, Instant::now()));
            }
        }
        // New events take positions beyond the old token.
        let probe = format!("probe-{round}");
        let started = Instant::now();
        let probe_id = send(&api, &members[0].token, &rooms[0], &probe).await;
        sent.insert(
            probe.clone(),
            Sent {
                room: 0,
                txn: probe,
                sender: 0,
                started,
                acked: Some((probe_id.clone(), Instant::now())),
            },
        );
        let (status, body) = sync(&api, &members[0].token, Some(&since), 0).await;
        assert_eq!(status, 200, "{body}");
        let next = body["next_batch"].as_str().expect("next_batch").to_owned();
        assert!(
            position(&next) > position(&since),
            "round {round}: {next} after {since}"
        );
        let timeline = &body["rooms"]["join"][&rooms[0]]["timeline"]["events"];
        assert!(
            timeline
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event_id"] == probe_id.as_str())),
            "round {round}: the probe is not in the sync since {since}: {body}"
        );
        since = next;

        for (room, room_id) in rooms.iter().enumerate() {
            let messages = room_messages(&api, &members[0].token, room_id).await;
            check_room(room, &messages, &sent);
        }
    }
    let acked = sent.values().filter(|s| s.acked.is_some()).count();
    eprintln!("{kills} kills, {acked} messages acknowledged");
    assert!(acked > kills, "the load sent too little to mean anything");
}

/// What a long-polling client received.
#[derive(Default)]
struct Received {
    /// Event IDs in the order they arrived.
    events: Vec<String>,
    /// Answers other than 200 (and broken `next_batch` sequences).
    errors: Vec<String>,
}

/// A client that long-polls `/sync` from `since` until `stop`, reconnecting with its last token
/// whenever the server is away.
fn spawn_long_poller(
    api: Api,
    token: String,
    room: String,
    mut since: String,
    mut stop: watch::Receiver<bool>,
) -> (Arc<Mutex<Received>>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let out = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let path = format!(
                "/_matrix/client/v3/sync?timeout=30000&since={since}&filter={}",
                sync_filter()
            );
            let answer = tokio::select! {
                answer = api.try_call(reqwest::Method::GET, &path, Some(&token), None) => answer,
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match answer {
                Ok((200, body)) => {
                    let mut received = out.lock().unwrap();
                    let next = body["next_batch"].as_str().unwrap_or("").to_owned();
                    if next.is_empty() || position(&next) < position(&since) {
                        received
                            .errors
                            .push(format!("next_batch {next} after {since}"));
                    }
                    let timeline = &body["rooms"]["join"][&room]["timeline"];
                    if timeline["limited"] == true {
                        received
                            .errors
                            .push(format!("limited timeline since {since}"));
                    }
                    for event in timeline["events"].as_array().into_iter().flatten() {
                        if let Some(id) = event["event_id"].as_str() {
                            received.events.push(id.to_owned());
                        }
                    }
                    since = next;
                }
                Ok((status, body)) => {
                    out.lock()
                        .unwrap()
                        .errors
                        .push(format!("sync since {since}: {status} {body}"));
                    return;
                }
                // The server is away: try again shortly with the same token.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    (received, task)
}

/// Waits (bounded) until every client has received every event of `expected`.
async fn wait_for_all(clients: &[Arc<Mutex<Received>>], expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<(usize, usize)> = clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let c = c.lock().unwrap();
                assert!(c.errors.is_empty(), "client {i}: {:?}", c.errors);
                let got: HashSet<&String> = c.events.iter().collect();
                let missing = expected.iter().filter(|e| !got.contains(e)).count();
                (missing > 0).then_some((i, missing))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "clients still miss events: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn send_batch(api: &Api, token: &str, room: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(send(api, token, room, &format!("{tag}-{i}")).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_polls_resume_across_restarts() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path());
    let listen = server.addr().to_owned();
    let api = server.api();
    let (members, rooms) = members_and_rooms(&api, &["alice", "bob", "carol", "dan"], 1).await;
    let (alice, room) = (&members[0], rooms[0].clone());
    let (stop, stop_rx) = watch::channel(false);
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for member in &members[1..] {
        let (status, body) = sync(&api, &member.token, None, 0).await;
        assert_eq!(status, 200, "{body}");
        let since = body["next_batch"].as_str().expect("next_batch").to_owned();
        let (received, task) = spawn_long_poller(
            api.clone(),
            member.token.clone(),
            room.clone(),
            since,
            stop_rx.clone(),
        );
        clients.push(received);
        tasks.push(task);
    }
    let mut expected = send_batch(&api, &alice.token, &room, "before-term", 5).await;
    wait_for_all(&clients, &expected).await;

    // A graceful restart: the waiting long polls answer at once, so SIGTERM is quick although
    // they asked for 30 seconds.
    let started = Instant::now();
    assert!(server.terminate(Duration::from_secs(10)).success());
    assert!(started.elapsed() < Duration::from_secs(10));
    server = ServerProcess::start_on(data.path(), &listen);
    expected.extend(send_batch(&api, &alice.token, &room, "after-term", 5).await);
    wait_for_all(&clients, &expected).await;

    // A crash right after acknowledgements, with a send in flight.
    let (acks, mut acks_rx) = watch::channel(0usize);
    let sender = {
        let (api, token, room) = (api.clone(), alice.token.clone(), room.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                match try_send(&api, &token, &room, &format!("before-kill-{i}")).await {
                    Some(id) => {
                        acked.push(id);
                        acks.send_replace(acked.len());
                    }
                    None => return acked,
                }
            }
            acked
        })
    };
    let _ = acks_rx.wait_for(|n| *n >= 5).await;
    server.kill();
    expected.extend(sender.await.expect("sender"));
    server = ServerProcess::start_on(data.path(), &listen);
    expected.extend(send_batch(&api, &alice.token, &room, "after-kill", 5).await);
    wait_for_all(&clients, &expected).await;

    stop.send_replace(true);
    for task in tasks {
        task.await.expect("client");
    }
    let timeline: Vec<String> = room_messages(&api, &alice.token, &room)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let index: HashMap<&String, usize> =
        timeline.iter().enumerate().map(|(i, id)| (id, i)).collect();
    for (i, client) in clients.iter().enumerate() {
        let client = client.lock().unwrap();
        assert!(client.errors.is_empty(), "client {i}: {:?}", client.errors);
        let unique: HashSet<&String> = client.events.iter().collect();
        assert_eq!(
            unique.len(),
            client.events.len(),
            "client {i} got an event twice"
        );
        let positions: Vec<usize> = client
            .events
            .iter()
            .map(|id| {
                *index
                    .get(id)
                    .unwrap_or_else(|| panic!("client {i}: {id} is not in the room"))
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "client {i} got events out of order"
        );
    }
    drop(server);
}

/// The size of the largest file under `dir`.
fn largest_file(dir: &Path) -> u64 {
    let mut largest = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        largest = largest.max(if meta.is_dir() {
            largest_file(&entry.path())
        } else {
            meta.len()
        });
    }
    largest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    let mut server = ServerProcess::start(data.path());
    let api = server.api();
    let (members, rooms) = members_and_rooms(&api, &["alice"], 1).await;
    let (alice, room) = (&members[0], &rooms[0]);
    let mut acked = send_batch(&api, &alice.token, room, "before", 5).await;
    let (status, body) = sync(&api, &alice.token, None, 0).await;
    assert_eq!(status, 200);
    let since = body["next_batch"].as_str().expect("next_batch").to_owned();

    // The disk is full: no file may grow.
    server.set_file_size_limit(Some(largest_file(data.path())));
    let mut refused = Vec::new();
    for i in 0..200 {
        let txn = format!("full-{i}");
        let resp = reqwest::Client::new()
            .put(format!("{}{}", api.base, send_path(room, &txn)))
            .bearer_auth(&alice.token)
            .json(&text(&txn))
            .send()
            .await
            .expect("an answer (the server must not die)");
        let status = resp.status().as_u16();
        let retry_after = resp.headers().get("retry-after").cloned();
        let body: Value = resp.json().await.unwrap_or_default();
        match status {
            // Written into space the file already had: really on disk.
            200 => acked.push(body["event_id"].as_str().expect("event_id").to_owned()),
            503 => {
                assert_eq!(errcode(&body), "M_UNKNOWN", "{body}");
                assert!(
                    body["error"].as_str().unwrap_or("").contains("storage"),
                    "{body}"
                );
                assert!(retry_after.is_some(), "503 without Retry-After");
                refused.push(txn);
                if refused.len() >= 3 {
                    break;
                }
            }
            other => panic!("{txn}: {other} {body}"),
        }
    }
    assert!(!refused.is_empty(), "no write was refused");
    assert!(server.is_running(), "the server died of the full disk");

    // Space returns: writes succeed again (after the server reopens its database).
    server.set_file_size_limit(None);
    let mut recovered = None;
    for attempt in 0..200 {
        let txn = format!("after-{attempt}");
        match api
            .try_call(
                reqwest::Method::PUT,
                &send_path(room, &txn),
                Some(&alice.token),
                Some(text(&txn)),
            )
            .await
        {
            Ok((200, body)) => {
                recovered = Some(body["event_id"].as_str().expect("event_id").to_owned());
                break;
            }
            Ok((503, _)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok((status, body)) => panic!("{txn}: {status} {body}"),
            Err(e) => panic!("{txn}: {e}"),
        }
    }
    acked.push(recovered.expect("writes succeed again once space returns"));
    // The refused sends, retried with their transaction IDs, are stored once (an original may
    // have reached the disk before the failure: unacknowledged writes may or may not be there).
    let mut retried = Vec::new();
    for txn in &refused {
        retried.push(send(&api, &alice.token, room, txn).await);
    }
    let check = |messages: Vec<(String, String)>| {
        let ids: Vec<&String> = messages.iter().map(|(id, _)| id).collect();
        let unique: HashSet<&String> = ids.iter().copied().collect();
        assert_eq!(unique.len(), ids.len(), "an event twice");
        let bodies: HashSet<&String> = messages.iter().map(|(_, body)| body).collect();
        assert_eq!(bodies.len(), messages.len(), "a message twice");
        let positions: Vec<usize> = acked
            .iter()
            .map(|id| {
                ids.iter()
                    .position(|i| *i == id)
                    .unwrap_or_else(|| panic!("{id} lost"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "out of order");
        for id in &retried {
            assert!(ids.contains(&id), "{id} lost");
        }
    };
    check(room_messages(&api, &alice.token, room).await);
    // The token from before the failure is still good, and positions went on increasing.
    let (status, body) = sync(&api, &alice.token, Some(&since), 0).await;
    assert_eq!(status, 200, "{body}");
    let next = body["next_batch"].as_str().expect("next_batch");
    assert!(position(next) > position(&since), "{next} after {since}");

    // What was acknowledged after the recovery is on disk too.
    server.kill();
    let server = ServerProcess::start(data.path());
    let api = server.api();
    check(room_messages(&api, &alice.token, room).await);
}

/// Makes `path` and everything under it read-only (or writable again).
fn set_read_only(path: &Path, read_only: bool) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            set_read_only(&entry.unwrap().path(), read_only);
        }
    }
    let mode = match (meta.is_dir(), read_only) {
        (true, true) => 0o555,
        (true, false) => 0o755,
        (false, true) => 0o444,
        (false, false) => 0o644,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `roost serve` on a read-only `data` and returns its stderr; it must exit (bounded) with a
/// failure. Root ignores file modes, so as root the server runs as `nobody`.
fn serve_read_only(data: &Path) -> String {
    use std::os::unix::process::CommandExt;
    let mut cmd = roost(data);
    cmd.arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534);
    }
    let mut child = cmd.spawn().expect("roost serve");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on a read-only data directory");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(status.code().is_some(), "killed by a signal: {status:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn a_read_only_data_directory_stops_start_up() {
    // An existing store.
    let data = tempfile::tempdir().unwrap();
    let out = roost(data.path())
        .args(["user", "create", "alice", "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    set_read_only(data.path(), true);
    let stderr = serve_read_only(data.path());
    set_read_only(data.path(), false);
    assert!(
        stderr.contains("cannot open the database") && stderr.contains("writable"),
        "{stderr}"
    );

    // An empty data directory.
    let empty = tempfile::tempdir().unwrap();
    set_read_only(empty.path(), true);
    let stderr = serve_read_only(empty.path());
    set_read_only(empty.path(), false);
    assert!(
        stderr.contains("cannot open the database") && stderr.contains("writable"),
        "{stderr}"
    );
}
