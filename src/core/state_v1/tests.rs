use ruma::{OwnedUserId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::*;
use crate::core::test_support::{Branch, TestRoom, user};

fn alice() -> OwnedUserId {
    user("alice")
}

fn bob() -> OwnedUserId {
    user("bob")
}

fn key(kind: StateEventType, state_key: &str) -> StateKey {
    (kind, state_key.to_owned())
}

fn power_levels(bob_level: u32) -> Value {
    json!({
        "users": { alice().as_str(): 100, bob().as_str(): bob_level },
        "state_default": 50,
        "kick": 50,
    })
}

/// A version 1 room of alice's with bob joined at power 50 and a name; `join_rule` as given.
fn room(join_rule: &str) -> TestRoom {
    let mut room = TestRoom::new(RoomVersionId::V1, &alice());
    room.send(&alice(), "m.room.power_levels", Some(""), power_levels(50))
        .unwrap();
    room.send(
        &alice(),
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": "public"}),
    )
    .unwrap();
    join(&mut room, &bob());
    if join_rule != "public" {
        room.send(
            &alice(),
            "m.room.join_rules",
            Some(""),
            json!({ "join_rule": join_rule }),
        )
        .unwrap();
    }
    room.send(&bob(), "m.room.name", Some(""), json!({"name": "base"}))
        .unwrap();
    room
}

fn join(room: &mut TestRoom, who: &UserId) {
    room.send(
        who,
        "m.room.member",
        Some(who.as_str()),
        json!({"membership": "join"}),
    )
    .unwrap();
}

fn append(
    room: &mut TestRoom,
    fork: &mut Branch,
    who: &UserId,
    kind: &str,
    state_key: &str,
    content: Value,
) -> OwnedEventId {
    room.append(fork, who, kind, Some(state_key), content)
        .unwrap()
}

/// Moves a fork one event deeper (a message), so that the next state event there is deeper than
/// the other fork's.
fn deepen(room: &mut TestRoom, fork: &mut Branch, who: &UserId) {
    room.append(fork, who, "m.room.message", None, json!({"body": "…"}))
        .unwrap();
}

fn resolve_forks(room: &TestRoom, forks: &[&Branch]) -> Result<StateMap, Error> {
    let sets: Vec<StateMap> = forks.iter().map(|fork| fork.state.clone()).collect();
    let rules = RoomVersionId::V1.rules().unwrap().authorization;
    resolve(&rules, &sets, |id| room.get(id))
}

fn name_of(room: &TestRoom, state: &StateMap) -> String {
    let id = &state[&key(StateEventType::RoomName, "")];
    let content: Value = serde_json::from_str(room.get(id).unwrap().content().get()).unwrap();
    content["name"].as_str().unwrap().to_owned()
}

#[test]
fn agreed_entries_and_entries_of_one_fork_are_kept() {
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let topic = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    );
    let avatar = append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.avatar",
        "",
        json!({"url": "mxc://x/y"}),
    );
    let resolved = resolve_forks(&room, &[&a, &b]).unwrap();
    let mut expected = room.main.state.clone();
    expected.insert(key(StateEventType::RoomTopic, ""), topic);
    expected.insert(key(StateEventType::RoomAvatar, ""), avatar);
    assert_eq!(resolved, expected);
    // One state, or identical ones, resolve to themselves.
    assert_eq!(resolve_forks(&room, &[&a]).unwrap(), a.state);
    assert_eq!(resolve_forks(&room, &[&a, &a]).unwrap(), a.state);
}

#[test]
fn conflicted_power_levels_take_the_deepest_event_the_rules_allow() {
    // Both allowed: the deeper one wins.
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let pl = key(StateEventType::RoomPowerLevels, "");
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(40),
    );
    deepen(&mut room, &mut b, &alice());
    let deeper = append(
        &mut room,
        &mut b,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(30),
    );
    assert_eq!(resolve_forks(&room, &[&a, &b]).unwrap()[&pl], deeper);
}

#[test]
fn conflicted_power_levels_stop_at_the_first_refused_event() {
    // Fork a demotes bob; fork b, deeper, has bob (still a moderator there) change the power
    // levels. Walking up from the shallowest, bob's change is refused once the demotion is in R.
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let pl = key(StateEventType::RoomPowerLevels, "");
    let demotion = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(0),
    );
    deepen(&mut room, &mut b, &bob());
    let mut by_bob = power_levels(50);
    by_bob["ban"] = json!(40);
    append(&mut room, &mut b, &bob(), "m.room.power_levels", "", by_bob);
    assert_eq!(resolve_forks(&room, &[&a, &b]).unwrap()[&pl], demotion);
}

#[test]
fn equal_depths_are_ordered_by_the_sha1_of_the_event_id() {
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let pl = key(StateEventType::RoomPowerLevels, "");
    let first = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(40),
    );
    let second = append(
        &mut room,
        &mut b,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(30),
    );
    // Ascending depth, then descending SHA-1: the lowest SHA-1 comes last and, allowed, wins.
    let lowest = if sha1(&first) < sha1(&second) {
        &first
    } else {
        &second
    };
    assert_eq!(&resolve_forks(&room, &[&a, &b]).unwrap()[&pl], lowest);

    // The same tie-break for other types: the highest depth, then the lowest SHA-1.
    let name_a = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.name",
        "",
        json!({"name": "a"}),
    );
    let name_b = append(
        &mut room,
        &mut b,
        &alice(),
        "m.room.name",
        "",
        json!({"name": "b"}),
    );
    let lowest = if sha1(&name_a) < sha1(&name_b) {
        &name_a
    } else {
        &name_b
    };
    let resolved = resolve_forks(&room, &[&a, &b]).unwrap();
    assert_eq!(&resolved[&key(StateEventType::RoomName, "")], lowest);
}

#[test]
fn join_rules_are_resolved_against_the_resolved_power_levels() {
    // Fork a demotes bob; fork b has bob, a moderator there, close the room. The power levels
    // resolve first (the demotion), and bob's join rules are then refused.
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let demotion = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(0),
    );
    append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.join_rules",
        "",
        json!({"join_rule": "invite"}),
    );
    let resolved = resolve_forks(&room, &[&a, &b]).unwrap();
    assert_eq!(
        resolved[&key(StateEventType::RoomPowerLevels, "")],
        demotion
    );
    let base_rules = &room.main.state[&key(StateEventType::RoomJoinRules, "")];
    assert_eq!(
        &resolved[&key(StateEventType::RoomJoinRules, "")],
        base_rules
    );
}

#[test]
fn a_kick_is_not_undone_by_a_deeper_membership_change_on_another_fork() {
    let mut room = room("invite");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    let member = key(StateEventType::RoomMember, bob().as_str());
    let kick = append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.member",
        bob().as_str(),
        json!({"membership": "leave"}),
    );
    deepen(&mut room, &mut b, &bob());
    append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.member",
        bob().as_str(),
        json!({"membership": "join", "displayname": "Bob"}),
    );
    // Walking up: bob's join, the kick (allowed), bob's profile change: a join into an invite-only
    // room he is not in, refused.
    assert_eq!(resolve_forks(&room, &[&a, &b]).unwrap()[&member], kick);
}

#[test]
fn other_entries_take_the_deepest_event_allowed_in_the_resolved_state() {
    // Fork b, deeper, renames the room as bob; fork a demotes bob. Bob's name is refused in the
    // resolved state, so the older name stays (the state reset version 1 is known for).
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(0),
    );
    deepen(&mut room, &mut b, &bob());
    append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.name",
        "",
        json!({"name": "bob's"}),
    );
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.name",
        "",
        json!({"name": "alice's"}),
    );
    let resolved = resolve_forks(&room, &[&a, &b]).unwrap();
    assert_eq!(name_of(&room, &resolved), "alice's");

    // Without the demotion, the deeper name wins.
    let mut c = room.main.clone();
    let mut d = room.main.clone();
    append(
        &mut room,
        &mut c,
        &alice(),
        "m.room.name",
        "",
        json!({"name": "shallow"}),
    );
    deepen(&mut room, &mut d, &bob());
    append(
        &mut room,
        &mut d,
        &bob(),
        "m.room.name",
        "",
        json!({"name": "deep"}),
    );
    assert_eq!(
        name_of(&room, &resolve_forks(&room, &[&c, &d]).unwrap()),
        "deep"
    );
}

#[test]
fn an_entry_no_event_passes_takes_the_lowest_event() {
    // The base name is bob's; fork a demotes bob, fork b has bob rename the room: neither name
    // passes in the resolved state, and the shallowest (the base name) is kept.
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(0),
    );
    append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.name",
        "",
        json!({"name": "bob's"}),
    );
    let resolved = resolve_forks(&room, &[&a, &b]).unwrap();
    assert_eq!(name_of(&room, &resolved), "base");
}

#[test]
fn unknown_conflicted_events_are_reported() {
    let mut room = room("public");
    let mut a = room.main.clone();
    let b = room.main.clone();
    let topic = key(StateEventType::RoomTopic, "");
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.topic",
        "",
        json!({"topic": "t"}),
    );
    let mut forged = b.clone();
    let unknown = OwnedEventId::try_from("$unknown:roost.test").unwrap();
    forged.state.insert(topic, unknown.clone());
    assert!(matches!(
        resolve_forks(&room, &[&a, &forged]),
        Err(Error::EventNotFound(id)) if id == unknown
    ));
}

#[test]
fn state_resolve_dispatches_version_1_rooms_here() {
    let mut room = room("public");
    let mut a = room.main.clone();
    let mut b = room.main.clone();
    append(
        &mut room,
        &mut a,
        &alice(),
        "m.room.power_levels",
        "",
        power_levels(0),
    );
    deepen(&mut room, &mut b, &bob());
    append(
        &mut room,
        &mut b,
        &bob(),
        "m.room.name",
        "",
        json!({"name": "bob's"}),
    );
    let sets = [a.state.clone(), b.state.clone()];
    let through_state =
        crate::core::state::resolve(&RoomVersionId::V1, &sets, |id| room.get(id)).unwrap();
    assert_eq!(through_state, resolve_forks(&room, &[&a, &b]).unwrap());
}
