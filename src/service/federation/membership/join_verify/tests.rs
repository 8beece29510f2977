use ruma::RoomVersionId;
use serde_json::json;

use super::*;
use crate::core::test_support::{TestRoom, user};

/// A room with power levels, a public join rule and a second member.
fn room(version: RoomVersionId) -> TestRoom {
    let alice = user("alice");
    let bob = user("bob");
    // Room version 12 creators have every power without being listed.
    let users = match version {
        RoomVersionId::V12 => json!({}),
        _ => json!({ alice.as_str(): 100 }),
    };
    let mut room = TestRoom::new(version, &alice);
    room.send(
        &alice,
        "m.room.power_levels",
        Some(""),
        json!({ "users": users }),
    )
    .unwrap();
    room.send(
        &alice,
        "m.room.join_rules",
        Some(""),
        json!({ "join_rule": "public" }),
    )
    .unwrap();
    room.send(
        &bob,
        "m.room.member",
        Some(bob.as_str()),
        json!({ "membership": "join" }),
    )
    .unwrap();
    room
}

fn rejected(decided: &HashMap<OwnedEventId, Arc<Pdu>>) -> Vec<OwnedEventId> {
    decided
        .values()
        .filter(|e| e.rejected())
        .map(|e| e.event_id().to_owned())
        .collect()
}

#[test]
fn a_whole_room_is_accepted_in_every_format() {
    for version in [
        RoomVersionId::V1,
        RoomVersionId::V3,
        RoomVersionId::V6,
        RoomVersionId::V10,
        RoomVersionId::V12,
    ] {
        let room = room(version.clone());
        let decided = authorise_all(&room.room_id, &version, room.pdus.clone());
        assert_eq!(decided.len(), room.pdus.len(), "{version}");
        assert!(rejected(&decided).is_empty(), "{version}");
        let ids: Vec<OwnedEventId> = room.main.state.values().cloned().collect();
        let state = state_map(&ids, &decided).unwrap();
        assert_eq!(state, room.main.state, "{version}");
        check_create(&state, &decided, &version).unwrap();
        let other = if version == RoomVersionId::V1 {
            RoomVersionId::V2
        } else {
            RoomVersionId::V1
        };
        assert!(check_create(&state, &decided, &other).is_err(), "{version}");
    }
}

#[test]
fn unauthorised_events_and_those_citing_them_are_rejected() {
    let version = RoomVersionId::V12;
    let mut room = room(version.clone());
    let mallory = user("mallory");
    // Power levels set by someone who is not in the room.
    let branch = room.main.clone();
    let forged = room
        .build(
            &branch,
            10_000,
            &mallory,
            "m.room.power_levels",
            Some(""),
            json!({ "users": { mallory.as_str(): 100 } }),
        )
        .unwrap();
    // A topic whose auth events name the forged power levels.
    let mut template = room
        .template(
            &branch,
            10_001,
            &user("alice"),
            "m.room.topic",
            Some(""),
            json!({ "topic": "hi" }),
        )
        .unwrap();
    let power_entry = (StateEventType::RoomPowerLevels, String::new());
    let real_power = room.main.state[&power_entry].clone();
    template.auth_events = template
        .auth_events
        .iter()
        .map(|id| {
            if *id == real_power {
                forged.event_id().to_owned()
            } else {
                id.clone()
            }
        })
        .collect();
    let citing = room.sign(template).unwrap();
    let honest = room
        .send(
            &user("alice"),
            "m.room.name",
            Some(""),
            json!({ "name": "fine" }),
        )
        .unwrap();
    let mut events = room.pdus.clone();
    events.insert(forged.event_id().to_owned(), forged.clone());
    events.insert(citing.event_id().to_owned(), citing.clone());
    let decided = authorise_all(&room.room_id, &version, events);
    let mut refused = rejected(&decided);
    refused.sort();
    let mut expected = vec![forged.event_id().to_owned(), citing.event_id().to_owned()];
    expected.sort();
    assert_eq!(refused, expected);
    assert!(!decided[&honest].rejected());

    // A state naming a rejected event leaves it out.
    let mut ids: Vec<OwnedEventId> = room.main.state.values().cloned().collect();
    ids.push(forged.event_id().to_owned());
    let state = state_map(&ids, &decided).unwrap();
    assert_eq!(state[&power_entry], real_power);
}

#[test]
fn events_whose_auth_events_are_missing_are_rejected() {
    let version = RoomVersionId::V10;
    let room = room(version.clone());
    let power = room.main.state[&(StateEventType::RoomPowerLevels, String::new())].clone();
    let mut events = room.pdus.clone();
    events.remove(&power);
    let decided = authorise_all(&room.room_id, &version, events);
    // Everything after the power levels cites them.
    let refused = rejected(&decided);
    assert!(!refused.is_empty());
    for id in &refused {
        assert!(decided[id].auth_events().contains(&power), "{id}");
    }
    let create = room.create_event_id();
    assert!(!decided[&create].rejected());
}

#[test]
fn a_state_with_two_events_for_one_entry_is_refused() {
    let version = RoomVersionId::V11;
    let mut room = room(version.clone());
    let alice = user("alice");
    let first = room
        .send(&alice, "m.room.topic", Some(""), json!({ "topic": "one" }))
        .unwrap();
    let second = room
        .send(&alice, "m.room.topic", Some(""), json!({ "topic": "two" }))
        .unwrap();
    let decided = authorise_all(&room.room_id, &version, room.pdus.clone());
    assert!(state_map(&[first.clone(), second], &decided).is_err());
    assert!(state_map(&[first.clone(), first], &decided).is_ok());
    let message = room
        .send(&alice, "m.room.message", None, json!({ "body": "hi" }))
        .unwrap();
    let decided = authorise_all(&room.room_id, &version, room.pdus.clone());
    assert!(
        state_map(&[message], &decided).is_err(),
        "not a state event"
    );
}

#[test]
fn a_state_without_a_create_event_is_refused() {
    let version = RoomVersionId::V10;
    let room = room(version.clone());
    let decided = authorise_all(&room.room_id, &version, room.pdus.clone());
    let mut state = room.main.state.clone();
    state.remove(&(StateEventType::RoomCreate, String::new()));
    assert!(check_create(&state, &decided, &version).is_err());
}
