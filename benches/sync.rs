//! Building `/sync` responses (`Services::sync`, without the HTTP layer) for a user in 10 and 100
//! rooms, each with 20 messages and a few members: the initial sync, and an incremental sync
//! after one new message in one room.

mod common;

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use roost::core::filter::Filter;
use roost::service::sync::{SyncRequest, parse_token};
use ruma::{OwnedRoomId, OwnedUserId};

use common::{Bench, user};

const ROOM_COUNTS: [usize; 2] = [10, 100];
const MESSAGES_PER_ROOM: usize = 20;
const OTHER_MEMBERS: usize = 3;

fn request(user: &OwnedUserId, since: Option<u64>) -> SyncRequest {
    SyncRequest {
        user_id: user.clone(),
        device_id: "BENCHDEVICE".into(),
        since,
        full_state: false,
        filter: Filter::default(),
        timeout: Duration::ZERO,
        ignored: Default::default(),
    }
}

/// `rooms` rooms by alice, each with a few other members and some messages.
fn setup(rooms: usize) -> (Bench, OwnedUserId, Vec<OwnedRoomId>) {
    let bench = Bench::new();
    let alice = user("alice");
    let mut room_ids = Vec::new();
    for _ in 0..rooms {
        let room = bench.room_with_state(&alice, 0);
        let members = bench.join_members(&room, OTHER_MEMBERS);
        for i in 0..MESSAGES_PER_ROOM {
            let sender = if i % 2 == 0 {
                &alice
            } else {
                &members[i % OTHER_MEMBERS]
            };
            bench.send_text(&room, sender, &format!("message {i}"));
        }
        room_ids.push(room);
    }
    (bench, alice, room_ids)
}

fn sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync");
    group.sample_size(30);
    for rooms in ROOM_COUNTS {
        let (bench, alice, room_ids) = setup(rooms);
        let services = &bench.services;
        group.bench_function(BenchmarkId::new("initial", rooms), |b| {
            b.iter(|| {
                bench
                    .block_on(services.sync(request(&alice, None)))
                    .unwrap()
            })
        });
        let initial = bench
            .block_on(services.sync(request(&alice, None)))
            .unwrap();
        let since = parse_token(initial["next_batch"].as_str().unwrap()).unwrap();
        bench.send_text(&room_ids[rooms / 2], &alice, "one more");
        let incremental = bench
            .block_on(services.sync(request(&alice, Some(since))))
            .unwrap();
        assert_eq!(incremental["rooms"]["join"].as_object().unwrap().len(), 1);
        group.bench_function(BenchmarkId::new("incremental_one_message", rooms), |b| {
            b.iter(|| {
                bench
                    .block_on(services.sync(request(&alice, Some(since))))
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
