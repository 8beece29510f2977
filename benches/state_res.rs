//! State resolution (v2.1, room version 12) of a fork: from the same point of a room, two
//! branches each change the power levels (a different moderator each) and then the same custom
//! state entries (different content each), so that every changed entry conflicts. Resolved by
//! `roost::core::state::resolve`, with the events looked up in a map and, as the ingest path
//! does, through the room service (its event cache, then the store). The branches are built by
//! hand and given to the room through the ingest path.

mod common;

use std::collections::HashMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use roost::core::pdu::{EventTemplate, build_event};
use roost::core::{Pdu, StateMap, auth, state};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedUserId, RoomId, RoomVersionId,
    ServerName, UInt,
};
use serde_json::{Value, json};

use common::{Bench, SERVER, user};

/// One branch of the fork: its state, its tip and its depth.
struct Branch {
    state: StateMap,
    prev_events: Vec<OwnedEventId>,
    depth: u64,
}

struct ForkedRoom {
    bench: Bench,
    version: RoomVersionId,
    branches: [StateMap; 2],
    /// Every event of the room and of both branches.
    events: HashMap<OwnedEventId, Pdu>,
}

/// Builds events on the branches of one room.
struct Builder<'a> {
    bench: &'a Bench,
    room_id: &'a RoomId,
    version: RoomVersionId,
    events: HashMap<OwnedEventId, Pdu>,
}

impl Builder<'_> {
    /// Builds one state event on a branch, checks it against the branch's state, gives it to
    /// the room through the ingest path and moves the branch on.
    fn extend(
        &mut self,
        branch: &mut Branch,
        sender: &OwnedUserId,
        (kind, state_key, content): (&str, &str, Value),
        ts: u64,
    ) {
        let mut template = EventTemplate {
            room_id: Some(self.room_id.to_owned()),
            sender: sender.clone(),
            kind: TimelineEventType::from(kind),
            state_key: Some(state_key.to_owned()),
            content,
            prev_events: branch.prev_events.clone(),
            auth_events: Vec::new(),
            depth: UInt::try_from(branch.depth + 1).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap()),
            redacts: None,
        };
        template.auth_events =
            auth::select_auth_events(&self.version, &template, &branch.state).unwrap();
        let server = ServerName::parse(SERVER).unwrap();
        let key = &self.bench.services.signing_key.pair;
        let pdu = build_event(&self.version, template, &server, key).unwrap();
        auth::check(&pdu, &branch.state, |id: &EventId| self.events.get(id)).unwrap();
        self.bench
            .block_on(self.bench.services.rooms.ingest(pdu.clone()))
            .unwrap();
        let event_id = pdu.event_id().to_owned();
        branch
            .state
            .insert(pdu.state_entry().unwrap(), event_id.clone());
        branch.prev_events = vec![event_id.clone()];
        branch.depth += 1;
        self.events.insert(event_id, pdu);
    }
}

fn forked_room(members: usize, conflicts: usize) -> ForkedRoom {
    let bench = Bench::new();
    let alice = user("alice");
    let room_id = bench.room_with_state(&alice, 0);
    bench.join_members(&room_id, members - 1);
    let rooms = &bench.services.rooms;
    let info = rooms.info(&room_id).unwrap().unwrap();
    let version = info.room_version.clone();
    let current = (*rooms.current_state(&room_id).unwrap()).clone();
    let events: HashMap<OwnedEventId, Pdu> = rooms
        .timeline_range(&room_id, 0, u64::MAX, false, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, id)| {
            let pdu = (*rooms.pdu(&id).unwrap().unwrap()).clone();
            (id, pdu)
        })
        .collect();
    let power_levels: Value = serde_json::from_str(
        rooms
            .state_event(&room_id, &StateEventType::RoomPowerLevels, "")
            .unwrap()
            .unwrap()
            .content()
            .get(),
    )
    .unwrap();
    let mut builder = Builder {
        bench: &bench,
        room_id: &room_id,
        version: version.clone(),
        events,
    };
    let mut branches = Vec::new();
    for (n, label) in ["a", "b"].into_iter().enumerate() {
        let mut branch = Branch {
            state: current.clone(),
            prev_events: info.extremities.clone(),
            depth: info.depth,
        };
        let ts = 2_000_000_000_000 + n as u64 * 1_000_000;
        let mut levels = power_levels.clone();
        levels["users"][format!("@moderator-{label}:{SERVER}")] = json!(50);
        let changes = std::iter::once(("m.room.power_levels", String::new(), levels)).chain(
            (0..conflicts).map(|i| {
                (
                    "org.roost.bench.fork",
                    format!("key-{i}"),
                    json!({ "branch": label }),
                )
            }),
        );
        for (i, (kind, state_key, content)) in changes.enumerate() {
            builder.extend(
                &mut branch,
                &alice,
                (kind, &state_key, content),
                ts + i as u64,
            );
        }
        branches.push(branch.state);
    }
    let events = builder.events;
    let [a, b]: [StateMap; 2] = branches.try_into().ok().unwrap();
    ForkedRoom {
        bench,
        version,
        branches: [a, b],
        events,
    }
}

fn resolve_fork(c: &mut Criterion, group_name: &str, rooms: &[(usize, usize)], by_members: bool) {
    let mut group = c.benchmark_group(group_name);
    for &(members, conflicts) in rooms {
        let room = forked_room(members, conflicts);
        let parameter = if by_members { members } else { conflicts };
        let sets = &room.branches;
        group.bench_function(BenchmarkId::new("in_memory", parameter), |b| {
            b.iter(|| {
                state::resolve(&room.version, sets, |id: &EventId| room.events.get(id)).unwrap()
            })
        });
        let store = &room.bench.services.rooms;
        group.bench_function(BenchmarkId::new("from_store", parameter), |b| {
            b.iter(|| {
                state::resolve(&room.version, sets, |id: &EventId| {
                    store.pdu(id).ok().flatten()
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

/// A room of 100 members; 1, 10 and 100 conflicting custom entries (plus the power levels).
fn by_conflicts(c: &mut Criterion) {
    resolve_fork(
        c,
        "state_res_conflicts",
        &[(100, 1), (100, 10), (100, 100)],
        false,
    );
}

/// 10 conflicting custom entries (plus the power levels) in rooms of 10, 100 and 1,000 members.
fn by_members(c: &mut Criterion) {
    resolve_fork(
        c,
        "state_res_members",
        &[(10, 10), (100, 10), (1_000, 10)],
        true,
    );
}

criterion_group!(benches, by_conflicts, by_members);
criterion_main!(benches);
