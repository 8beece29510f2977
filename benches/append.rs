//! Appending one message through the real append pipeline (build, hash, sign, auth check, one
//! transaction, durability, wake-up) to rooms of growing size: by state entries (custom state
//! events with distinct keys) and by joined members.

mod common;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

use common::{Bench, text, user};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn append_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_message");
    group.sample_size(50);
    let alice = user("alice");
    for entries in SIZES {
        let bench = Bench::new();
        let room = bench.room_with_state(&alice, entries);
        group.bench_function(BenchmarkId::new("state_entries", entries), |b| {
            b.iter(|| {
                bench
                    .block_on(
                        bench
                            .services
                            .rooms
                            .append(&room, &alice, text("hello"), None),
                    )
                    .unwrap()
            })
        });
    }
    for members in SIZES {
        let bench = Bench::new();
        let room = bench.room_with_state(&alice, 0);
        bench.join_members(&room, members - 1);
        group.bench_function(BenchmarkId::new("joined_members", members), |b| {
            b.iter(|| {
                bench
                    .block_on(
                        bench
                            .services
                            .rooms
                            .append(&room, &alice, text("hello"), None),
                    )
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append_message);
criterion_main!(benches);
