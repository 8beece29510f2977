use ruma::{OwnedUserId, RoomVersionId, UserId, events::StateEventType};
use serde_json::{Value, json};

use super::*;
use crate::core::test_support::{Branch, TestRoom, user};

/// Every version resolving with state resolution v2 (2.1 in version 12).
const VERSIONS: [RoomVersionId; 11] = [
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

fn alice() -> OwnedUserId {
    user("alice")
}

fn bob() -> OwnedUserId {
    user("bob")
}

fn creators_privileged(version: &RoomVersionId) -> bool {
    room_version::rules(version)
        .unwrap()
        .authorization
        .explicitly_privilege_room_creators
}

/// Power levels with alice at 100 (implicitly, as creator, in v12) and the given other users.
fn power_levels(version: &RoomVersionId, users: Value) -> Value {
    let mut users = users;
    if !creators_privileged(version) {
        users[alice().as_str()] = json!(100);
    }
    json!({"users": users, "state_default": 50})
}

/// A public room by alice, with bob joined as a moderator (50) and a name.
fn moderated_room(version: RoomVersionId) -> TestRoom {
    let mut room = TestRoom::new(version.clone(), &alice());
    let content = power_levels(&version, json!({ bob().as_str(): 50 }));
    room.send(&alice(), "m.room.power_levels", Some(""), content)
        .unwrap();
    room.send(
        &alice(),
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "public"}),
    )
    .unwrap();
    room.send(
        &bob(),
        "m.room.member",
        Some(bob().as_str()),
        json!({"membership": "join"}),
    )
    .unwrap();
    room.send(&alice(), "m.room.name", Some(""), json!({"name": "before"}))
        .unwrap();
    room
}

fn key(kind: StateEventType) -> (StateEventType, String) {
    (kind, String::new())
}

fn resolve_forks(room: &TestRoom, forks: &[&Branch]) -> StateMap {
    let sets: Vec<StateMap> = forks.iter().map(|fork| fork.state.clone()).collect();
    resolve(&room.version, &sets, |id| room.get(id)).unwrap()
}

/// Appends a state event with a given timestamp to a fork.
fn set_state(
    room: &mut TestRoom,
    fork: &mut Branch,
    ts: u64,
    who: &UserId,
    kind: &str,
    content: Value,
) -> OwnedEventId {
    room.append_at(fork, ts, who, kind, Some(""), content)
        .unwrap()
}

/// Both forks are authorised, so both are applied in the reverse topological power order,
/// highest power first: the moderator's change, applied last, stays. Alice's timestamp is the
/// later one, so a timestamp-only order would keep hers.
#[test]
fn conflicting_join_rules_apply_in_power_order() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let by_alice = set_state(
            &mut room,
            &mut a,
            6_000,
            &alice(),
            "m.room.join_rules",
            json!({"join_rule": "invite"}),
        );
        let by_bob = set_state(
            &mut room,
            &mut b,
            5_000,
            &bob(),
            "m.room.join_rules",
            json!({"join_rule": "knock"}),
        );
        let resolved = resolve_forks(&room, &[&a, &b]);
        assert_ne!(by_alice, by_bob);
        assert_eq!(
            resolved[&key(StateEventType::RoomJoinRules)],
            by_bob,
            "{version}"
        );
        // The other entries are the common (unconflicted) state.
        assert_eq!(resolved.len(), room.main.state.len(), "{version}");
    }
}

/// Same power: the later timestamp is applied last and stays, whichever fork it is on.
#[test]
fn equal_power_falls_back_to_timestamps() {
    for version in VERSIONS {
        for (ts_a, ts_b) in [(5_000, 6_000), (6_000, 5_000)] {
            let mut room = moderated_room(version.clone());
            let (mut a, mut b) = (room.main.clone(), room.main.clone());
            let name_a = set_state(
                &mut room,
                &mut a,
                ts_a,
                &alice(),
                "m.room.name",
                json!({"name": "a"}),
            );
            let name_b = set_state(
                &mut room,
                &mut b,
                ts_b,
                &alice(),
                "m.room.name",
                json!({"name": "b"}),
            );
            let later = if ts_a > ts_b { name_a } else { name_b };
            let resolved = resolve_forks(&room, &[&a, &b]);
            assert_eq!(resolved[&key(StateEventType::RoomName)], later, "{version}");
        }
    }
}

/// The same for power events (sorted by the reverse topological power ordering rather than
/// the mainline ordering).
#[test]
fn equal_power_power_events_fall_back_to_timestamps() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let later = set_state(
            &mut room,
            &mut a,
            6_000,
            &alice(),
            "m.room.join_rules",
            json!({"join_rule": "invite"}),
        );
        set_state(
            &mut room,
            &mut b,
            5_000,
            &alice(),
            "m.room.join_rules",
            json!({"join_rule": "knock"}),
        );
        let resolved = resolve_forks(&room, &[&a, &b]);
        assert_eq!(
            resolved[&key(StateEventType::RoomJoinRules)],
            later,
            "{version}"
        );
    }
}

/// Same power and timestamp: the greater event ID is applied last and stays.
#[test]
fn equal_power_and_timestamp_fall_back_to_event_ids() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let name_a = set_state(
            &mut room,
            &mut a,
            5_000,
            &alice(),
            "m.room.name",
            json!({"name": "a"}),
        );
        let name_b = set_state(
            &mut room,
            &mut b,
            5_000,
            &alice(),
            "m.room.name",
            json!({"name": "b"}),
        );
        let resolved = resolve_forks(&room, &[&a, &b]);
        let greatest = name_a.max(name_b);
        assert_eq!(
            resolved[&key(StateEventType::RoomName)],
            greatest,
            "{version}"
        );
    }
}

/// Alice demotes bob while bob, still a moderator on his fork, renames the room: the demotion
/// is resolved first, and bob's change no longer passes the auth checks against it.
#[test]
fn demotion_beats_a_racing_state_change() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let before = room.main.state[&key(StateEventType::RoomName)].clone();
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let demotion = set_state(
            &mut room,
            &mut a,
            5_000,
            &alice(),
            "m.room.power_levels",
            power_levels(&version, json!({})),
        );
        // Bob's change is later: timestamps alone would keep it.
        set_state(
            &mut room,
            &mut b,
            6_000,
            &bob(),
            "m.room.name",
            json!({"name": "bob's"}),
        );
        let resolved = resolve_forks(&room, &[&a, &b]);
        assert_eq!(
            resolved[&key(StateEventType::RoomPowerLevels)],
            demotion,
            "{version}"
        );
        assert_eq!(
            resolved[&key(StateEventType::RoomName)],
            before,
            "{version}"
        );
    }
}

/// The same race with a power event of bob's (join rules).
#[test]
fn demotion_beats_a_racing_power_event() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let before = room.main.state[&key(StateEventType::RoomJoinRules)].clone();
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let demotion = set_state(
            &mut room,
            &mut a,
            5_000,
            &alice(),
            "m.room.power_levels",
            power_levels(&version, json!({})),
        );
        set_state(
            &mut room,
            &mut b,
            6_000,
            &bob(),
            "m.room.join_rules",
            json!({"join_rule": "invite"}),
        );
        let resolved = resolve_forks(&room, &[&a, &b]);
        assert_eq!(
            resolved[&key(StateEventType::RoomPowerLevels)],
            demotion,
            "{version}"
        );
        assert_eq!(
            resolved[&key(StateEventType::RoomJoinRules)],
            before,
            "{version}"
        );
    }
}

#[test]
fn unconflicted_forks_merge() {
    for version in VERSIONS {
        let mut room = moderated_room(version.clone());
        let (mut a, mut b) = (room.main.clone(), room.main.clone());
        let topic = set_state(
            &mut room,
            &mut a,
            5_000,
            &alice(),
            "m.room.topic",
            json!({"topic": "t"}),
        );
        let carol = user("carol");
        let join = room
            .append_at(
                &mut b,
                5_000,
                &carol,
                "m.room.member",
                Some(carol.as_str()),
                json!({"membership": "join"}),
            )
            .unwrap();
        let resolved = resolve_forks(&room, &[&a, &b]);
        assert_eq!(resolved[&key(StateEventType::RoomTopic)], topic);
        assert_eq!(
            resolved[&(StateEventType::RoomMember, carol.to_string())],
            join
        );
        assert_eq!(resolved.len(), room.main.state.len() + 2);

        assert_eq!(resolve_forks(&room, &[&a]), a.state);
        assert!(
            resolve(&room.version, &[], |id| room.get(id))
                .unwrap()
                .is_empty()
        );
    }
}

/// The events of the "problem B" room of MSC4297 (state resolution v2.1): bob, made a moderator
/// by PL01, makes charlie one in PL02; then zara and eve join on two forks.
struct ProblemB {
    room: TestRoom,
    pl00: OwnedEventId,
    pl01: OwnedEventId,
    pl02: OwnedEventId,
    bob_join: OwnedEventId,
    join_rules: OwnedEventId,
    zara: Branch,
    eve: Branch,
}

fn problem_b(version: RoomVersionId) -> ProblemB {
    let mut room = TestRoom::new(version.clone(), &alice());
    let pl00 = room
        .send(
            &alice(),
            "m.room.power_levels",
            Some(""),
            power_levels(&version, json!({})),
        )
        .unwrap();
    let join_rules = room
        .send(
            &alice(),
            "m.room.join_rules",
            Some(""),
            json!({"join_rule": "public"}),
        )
        .unwrap();
    let join = |room: &mut TestRoom, branch: &mut Branch, who: &UserId| {
        room.append(
            branch,
            who,
            "m.room.member",
            Some(who.as_str()),
            json!({"membership": "join", "displayname": who.localpart()}),
        )
        .unwrap()
    };
    let mut main = room.main.clone();
    let bob_join = join(&mut room, &mut main, &bob());
    join(&mut room, &mut main, &user("charlie"));
    room.main = main;
    let pl01 = room
        .send(
            &alice(),
            "m.room.power_levels",
            Some(""),
            power_levels(&version, json!({ bob().as_str(): 50 })),
        )
        .unwrap();
    let both = json!({ bob().as_str(): 50, user("charlie").as_str(): 50 });
    let pl02 = room
        .send(
            &bob(),
            "m.room.power_levels",
            Some(""),
            power_levels(&version, both),
        )
        .unwrap();
    let (mut zara, mut eve) = (room.main.clone(), room.main.clone());
    join(&mut room, &mut zara, &user("zara"));
    let eve_user = user("eve");
    join(&mut room, &mut eve, &eve_user);
    room.append(
        &mut eve,
        &eve_user,
        "m.room.member",
        Some(eve_user.as_str()),
        json!({"membership": "join", "displayname": "eve++"}),
    )
    .unwrap();
    ProblemB {
        room,
        pl00,
        pl01,
        pl02,
        bob_join,
        join_rules,
        zara,
        eve,
    }
}

/// Eve's server has (wrongly) reset the power levels to PL00. Version 2.0 resolves PL00 against
/// PL02 without PL01 in between, so bob's PL02 fails and the reset wins; version 2.1 (room
/// version 12) adds the conflicted state subgraph, PL01 included, and keeps PL02.
#[test]
fn conflicted_state_subgraph_prevents_a_state_reset() {
    for (version, expected) in [(RoomVersionId::V11, "PL00"), (RoomVersionId::V12, "PL02")] {
        let b = problem_b(version.clone());
        let mut eve_state = b.eve.state.clone();
        eve_state.insert(key(StateEventType::RoomPowerLevels), b.pl00.clone());
        let sets = [eve_state, b.zara.state.clone()];
        let resolved = resolve(&version, &sets, |id| b.room.get(id)).unwrap();
        let power_levels = &resolved[&key(StateEventType::RoomPowerLevels)];
        let expected = if expected == "PL00" { &b.pl00 } else { &b.pl02 };
        assert_eq!(power_levels, expected, "{version}");
        // Both forks' joins survive either way.
        for fork in [&b.zara, &b.eve] {
            for (entry, event_id) in &fork.state {
                if entry.0 == StateEventType::RoomMember {
                    assert_eq!(&resolved[entry], event_id, "{version} {entry:?}");
                }
            }
        }
    }
}

#[test]
fn conflicted_subgraph_is_every_path_between_conflicted_events() {
    for version in VERSIONS {
        let b = problem_b(version.clone());
        let subgraph = conflicted_subgraph([&*b.pl00, &*b.pl02], |id| b.room.get(id)).unwrap();
        // PL02 → PL01 → PL00, PL02 → bob's join → PL00, PL02 → bob's join → join rules → PL00;
        // not alice's join or the create event, below PL00.
        let expected: HashSet<OwnedEventId> = [b.pl00, b.pl01, b.pl02, b.bob_join, b.join_rules]
            .into_iter()
            .collect();
        assert_eq!(subgraph, expected, "{version}");
    }
}

#[test]
fn auth_chain_walks_auth_events_recursively() {
    for version in VERSIONS {
        let b = problem_b(version.clone());
        let create = b.room.create_event_id();
        let alice_join =
            b.room.main.state[&(StateEventType::RoomMember, alice().to_string())].clone();
        let chain = auth_chain([&*b.pl01], |id| b.room.get(id)).unwrap();
        let mut expected: HashSet<OwnedEventId> =
            [b.pl00.clone(), alice_join].into_iter().collect();
        // From version 12 on, the create event is no auth event: its hash is the room ID.
        if !creators_privileged(&version) {
            expected.insert(create);
        }
        assert_eq!(chain, expected, "{version}");

        let missing = |id: &EventId| b.room.get(id).filter(|pdu| pdu.event_id() != &*b.pl00);
        assert!(matches!(
            auth_chain([&*b.pl01], missing),
            Err(Error::EventNotFound(id)) if id == b.pl00
        ));
    }
}

#[test]
fn version_1_resolves_with_its_own_algorithm_and_unknown_versions_not_at_all() {
    let room = moderated_room(RoomVersionId::V11);
    // The version 1 algorithm (see `state_v1`): nothing to resolve, nothing resolved.
    assert_eq!(
        resolve(&RoomVersionId::V1, &[], |id| room.get(id)).unwrap(),
        StateMap::new()
    );
    let custom = RoomVersionId::try_from("org.example.custom").unwrap();
    assert!(matches!(
        resolve(&custom, &[], |id| room.get(id)),
        Err(Error::UnsupportedRoomVersion(_))
    ));
}
