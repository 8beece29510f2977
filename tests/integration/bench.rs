//! The load tool (`roost-bench`) against a real server, each scenario with tiny parameters:
//! the counts it reports and what the server holds afterwards. Timings are never asserted.

use roost_bench::scenarios::{create_rooms, fanout, initial_sync, join, register, search, send};
use roost_bench::{Bench, Options, Registration, Summary};
use serde_json::Value;

use crate::common::TestServer;

async fn bench(server: &TestServer) -> Bench {
    Bench::connect(Options::new(&server.base))
        .await
        .expect("bench connects")
}

fn count(summary: &Summary, name: &str) -> u64 {
    *summary
        .counts
        .get(name)
        .unwrap_or_else(|| panic!("no count {name} in {summary:?}"))
}

fn no_failures(summary: &Summary) {
    assert_eq!(summary.failures, 0, "{:?}", summary.first_failure);
    assert_eq!(summary.rate_limited, 0);
    assert!(
        summary.targets.is_empty(),
        "targets only at standard parameters"
    );
}

/// The number of `m.room.message` events in a room, read back through `/messages`.
async fn messages_in(server: &TestServer, token: &str, room: &str) -> usize {
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1000"),
            Some(token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count()
}

#[tokio::test]
async fn send_sends_every_message() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = send::Config {
        senders: 3,
        messages: 5,
        rooms: 2,
    };
    let summary = bench.run(&config, "test").await.expect("send runs");
    no_failures(&summary);
    assert_eq!(count(&summary, "messages"), 15);
    assert_eq!(count(&summary, "expected"), 15);
    assert_eq!(summary.latency("send").expect("send latency").count, 15);
    assert!(summary.throughput.is_some());

    let creator = &bench.users(1).await.expect("pool")[0];
    let rooms: Vec<String> = serde_json::from_value(summary.details["rooms"].clone()).unwrap();
    assert_eq!(rooms.len(), 2);
    // Senders 0 and 2 send into the first room, sender 1 into the second.
    assert_eq!(
        messages_in(&server, &creator.access_token, &rooms[0]).await,
        10
    );
    assert_eq!(
        messages_in(&server, &creator.access_token, &rooms[1]).await,
        5
    );
}

#[tokio::test]
async fn fanout_delivers_every_message_to_every_receiver_once() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    for no_ephemeral in [false, true] {
        let config = fanout::Config {
            receivers: 5,
            messages: 4,
            pause_ms: 5,
            drain_secs: 30,
            budget_secs: 60,
            no_ephemeral,
        };
        let summary = bench.run(&config, "test").await.expect("fanout runs");
        no_failures(&summary);
        assert_eq!(count(&summary, "expected"), 20);
        assert_eq!(count(&summary, "messages_sent"), 4);
        assert_eq!(count(&summary, "deliveries"), 20);
        assert_eq!(count(&summary, "missing"), 0);
        assert_eq!(count(&summary, "duplicates"), 0);
        assert_eq!(count(&summary, "limited_timelines"), 0);
        assert_eq!(summary.latency("delivery").expect("delivery").count, 20);
        assert_eq!(summary.latency("send").expect("send").count, 4);
    }
}

#[tokio::test]
async fn initial_sync_sees_every_room_and_each_new_message() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = initial_sync::Config {
        rooms: 3,
        messages: 5,
        repeats: 3,
        fill_concurrency: 2,
    };
    let summary = bench.run(&config, "test").await.expect("initial-sync runs");
    no_failures(&summary);
    assert_eq!(count(&summary, "rooms_in_sync"), 3);
    // Each room holds its creation events and 5 messages: more than the limit of 10.
    assert_eq!(count(&summary, "timeline_events"), 30);
    assert_eq!(count(&summary, "incremental_syncs"), 3);
    assert_eq!(count(&summary, "incremental_with_message"), 3);
    assert_eq!(summary.latency("initial_sync").expect("initial").count, 3);
    assert_eq!(summary.latency("incremental_sync").expect("incr").count, 3);
    // Its user is its own: the pool stays empty.
    assert_eq!(bench.pool_size().await, 0);
}

#[tokio::test]
async fn create_rooms_creates_named_rooms() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = create_rooms::Config {
        users: 2,
        count: 6,
        duration_secs: None,
    };
    let summary = bench.run(&config, "test").await.expect("create-rooms runs");
    no_failures(&summary);
    assert_eq!(count(&summary, "rooms"), 6);
    assert_eq!(count(&summary, "duplicate_room_ids"), 0);

    let mut rooms = Vec::new();
    for user in bench.users(2).await.expect("pool") {
        let (status, body) = server
            .get("/_matrix/client/v3/joined_rooms", Some(&user.access_token))
            .await;
        assert_eq!(status, 200, "{body}");
        for room in body["joined_rooms"].as_array().expect("joined_rooms") {
            let room = room.as_str().expect("room ID").to_owned();
            let (status, name) = server
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/state/m.room.name/"),
                    Some(&user.access_token),
                )
                .await;
            assert_eq!(status, 200, "{name}");
            assert!(
                name["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("bench room "))
            );
            rooms.push(room);
        }
    }
    rooms.sort();
    rooms.dedup();
    assert_eq!(rooms.len(), 6);
}

#[tokio::test]
async fn join_grows_the_room_to_its_member_count() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = join::Config {
        members: 10,
        concurrency: 3,
    };
    let summary = bench.run(&config, "test").await.expect("join runs");
    no_failures(&summary);
    assert_eq!(count(&summary, "joins"), 9);
    assert_eq!(count(&summary, "members"), 10);
    assert_eq!(summary.latency("join").expect("join").count, 9);

    let creator = &bench.users(1).await.expect("pool")[0];
    let room = summary.details["room_id"].as_str().expect("room_id");
    let (status, body) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
            Some(&creator.access_token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["joined"].as_object().map(|m| m.len()), Some(10));
}

#[tokio::test]
async fn registered_users_join_the_pool_and_can_use_their_tokens() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = register::Config {
        users: 3,
        concurrency: 2,
    };
    let summary = bench.run(&config, "test").await.expect("register runs");
    assert_eq!(summary.failures, 0, "{:?}", summary.first_failure);
    assert_eq!(count(&summary, "users"), 3);
    assert_eq!(bench.pool_size().await, 3);
    for user in bench.users(3).await.expect("pool") {
        let (status, body) = server
            .get(
                "/_matrix/client/v3/account/whoami",
                Some(&user.access_token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["user_id"], Value::String(user.user_id.clone()));
        assert!(user.user_id.starts_with(&format!("@{}-", bench.prefix())));
    }
}

#[tokio::test]
async fn registers_with_a_registration_token_when_the_server_asks_for_one() {
    let server =
        TestServer::start_with(|c| c.registration = Some(roost::config::RegistrationMode::Token))
            .await;
    server
        .server
        .as_ref()
        .expect("running")
        .services()
        .regtokens
        .create(Some("bench-token".into()), Some(2), None)
        .expect("token created");
    let config = register::Config {
        users: 2,
        concurrency: 1,
    };

    // Without the token the server offers no flow the tool can complete.
    let refused = bench(&server)
        .await
        .run(&config, "test")
        .await
        .expect("runs");
    assert_eq!(refused.failures, 2);
    assert!(
        refused
            .first_failure
            .as_deref()
            .is_some_and(|f| f.contains("--registration-token")),
        "{:?}",
        refused.first_failure
    );

    let mut options = Options::new(&server.base);
    options.registration = Registration::Token("bench-token".into());
    let bench = Bench::connect(options).await.expect("bench connects");
    let summary = bench.run(&config, "test").await.expect("runs");
    assert_eq!(summary.failures, 0, "{:?}", summary.first_failure);
    assert_eq!(count(&summary, "users"), 2);
}

#[tokio::test]
async fn search_fills_a_history_and_finds_the_rare_word() {
    let server = TestServer::start().await;
    let bench = bench(&server).await;
    let config = search::Config {
        messages: 30,
        rooms: 3,
        senders: 4,
        searches: 5,
        repeats: 2,
    };
    let summary = bench.run(&config, "test").await.expect("search runs");
    no_failures(&summary);
    assert_eq!(count(&summary, "messages"), 30);
    assert_eq!(count(&summary, "searches"), 9);
    assert_eq!(count(&summary, "rare_matches"), 1);
    assert!(count(&summary, "common_matches") > count(&summary, "rare_matches"));
    assert_eq!(summary.latency("search").expect("search").count, 5);
    assert_eq!(summary.latency("search_rare").expect("rare").count, 2);
    assert_eq!(summary.latency("search_common").expect("common").count, 2);
}
