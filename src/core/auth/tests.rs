use ruma::{OwnedUserId, RoomVersionId};
use serde_json::{Value, json};

use super::*;
use crate::core::test_support::{TestRoom, user};

const VERSIONS: [RoomVersionId; 3] = [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

/// Room version 12 gives creators infinite power and forbids listing them in `users`.
fn creators_privileged(version: &RoomVersionId) -> bool {
    room_version::rules(version)
        .unwrap()
        .authorization
        .explicitly_privilege_room_creators
}

fn alice() -> OwnedUserId {
    user("alice")
}

fn bob() -> OwnedUserId {
    user("bob")
}

/// A room made by alice (power 100, or creator in v12) with state changes at 50 and the given
/// join rule.
fn room(version: RoomVersionId, join_rule: &str) -> TestRoom {
    let alice = alice();
    let mut room = TestRoom::new(version.clone(), &alice);
    let users = if creators_privileged(&version) {
        json!({})
    } else {
        json!({ alice.as_str(): 100 })
    };
    room.send(
        &alice,
        "m.room.power_levels",
        Some(""),
        json!({"users": users, "state_default": 50, "events_default": 0, "invite": 0}),
    )
    .unwrap();
    room.send(
        &alice,
        "m.room.join_rules",
        Some(""),
        json!({ "join_rule": join_rule }),
    )
    .unwrap();
    room
}

fn join(room: &mut TestRoom, who: &UserId) -> Result<OwnedEventId, Error> {
    room.send(
        who,
        "m.room.member",
        Some(who.as_str()),
        json!({"membership": "join"}),
    )
}

fn say(room: &mut TestRoom, who: &UserId, body: &str) -> Result<OwnedEventId, Error> {
    room.send(
        who,
        "m.room.message",
        None,
        json!({"msgtype": "m.text", "body": body}),
    )
}

fn set_power_levels(
    room: &mut TestRoom,
    who: &UserId,
    content: Value,
) -> Result<OwnedEventId, Error> {
    room.send(who, "m.room.power_levels", Some(""), content)
}

fn assert_unauthorized(result: Result<OwnedEventId, Error>, why: &str) {
    match result {
        Err(Error::Unauthorized(reason)) => assert!(reason.contains(why), "{reason}"),
        other => panic!("expected a rejection ({why}), got {other:?}"),
    }
}

#[test]
fn creator_may_send() {
    for version in VERSIONS {
        let mut room = room(version, "public");
        say(&mut room, &alice(), "hello").unwrap();
        room.send(&alice(), "m.room.name", Some(""), json!({"name": "Roost"}))
            .unwrap();
    }
}

#[test]
fn joined_user_may_send_and_outsider_may_not() {
    for version in VERSIONS {
        let mut room = room(version, "public");
        join(&mut room, &bob()).unwrap();
        say(&mut room, &bob(), "hi").unwrap();
        assert_unauthorized(
            say(&mut room, &user("carol"), "let me in"),
            "membership is not `join`",
        );
    }
}

#[test]
fn joining_an_invite_only_room_needs_an_invite() {
    for version in VERSIONS {
        let mut room = room(version, "invite");
        assert_unauthorized(join(&mut room, &bob()), "");
        room.send(
            &alice(),
            "m.room.member",
            Some(bob().as_str()),
            json!({"membership": "invite"}),
        )
        .unwrap();
        join(&mut room, &bob()).unwrap();
    }
}

#[test]
fn state_changes_need_the_required_power_level() {
    for version in VERSIONS {
        let mut room = room(version.clone(), "public");
        join(&mut room, &bob()).unwrap();
        let rename = |room: &mut TestRoom| {
            room.send(&bob(), "m.room.name", Some(""), json!({"name": "bob's"}))
        };
        assert_unauthorized(rename(&mut room), "not have enough power");

        let mut users = json!({ bob().as_str(): 50 });
        if !creators_privileged(&version) {
            users[alice().as_str()] = json!(100);
        }
        set_power_levels(
            &mut room,
            &alice(),
            json!({"users": users, "state_default": 50}),
        )
        .unwrap();
        rename(&mut room).unwrap();
    }
}

#[test]
fn state_keys_of_other_users_are_off_limits() {
    for version in VERSIONS {
        let mut room = room(version, "public");
        join(&mut room, &bob()).unwrap();
        let result = room.send(
            &alice(),
            "org.example.profile",
            Some(bob().as_str()),
            json!({}),
        );
        assert_unauthorized(result, "another user's ID");
    }
}

/// Version 12: creators have infinite power, cannot appear in `users`, and so cannot be demoted.
#[test]
fn v12_creator_has_infinite_power() {
    let mut room = room(RoomVersionId::V12, "public");
    join(&mut room, &bob()).unwrap();

    // Listing the creator is refused, even by the creator.
    let listing_alice = json!({"users": { alice().as_str(): 100 }});
    assert_unauthorized(
        set_power_levels(&mut room, &alice(), listing_alice),
        "creator",
    );

    // Bob at 100, the most a power level can be made to say short of the maximum integer.
    set_power_levels(
        &mut room,
        &alice(),
        json!({"users": { bob().as_str(): 100 }}),
    )
    .unwrap();
    let demote_alice = json!({"users": { bob().as_str(): 100, alice().as_str(): 0 }});
    assert_unauthorized(set_power_levels(&mut room, &bob(), demote_alice), "creator");
    let kick_alice = room.send(
        &bob(),
        "m.room.member",
        Some(alice().as_str()),
        json!({"membership": "leave"}),
    );
    assert_unauthorized(kick_alice, "");

    // An event type only infinite power can send.
    let max = i64::from(ruma::Int::MAX);
    set_power_levels(
        &mut room,
        &alice(),
        json!({"users": { bob().as_str(): 100 }, "events": {"m.room.topic": max}}),
    )
    .unwrap();
    room.send(&alice(), "m.room.topic", Some(""), json!({"topic": "mine"}))
        .unwrap();
    let bob_topic = room.send(&bob(), "m.room.topic", Some(""), json!({"topic": "bob's"}));
    assert_unauthorized(bob_topic, "not have enough power");
}

/// Before version 12 the creator is an ordinary user with whatever `users` says.
#[test]
fn v11_creator_is_bound_by_power_levels() {
    let mut room = room(RoomVersionId::V11, "public");
    set_power_levels(
        &mut room,
        &alice(),
        json!({"users": { alice().as_str(): 10 }, "state_default": 50}),
    )
    .unwrap();
    let rename = room.send(&alice(), "m.room.name", Some(""), json!({"name": "Roost"}));
    assert_unauthorized(rename, "not have enough power");
}

#[test]
fn auth_types_follow_the_selection_algorithm() {
    let content = serde_json::value::to_raw_value(&json!({"membership": "join"})).unwrap();
    let member = TimelineEventType::RoomMember;
    let bob = bob();
    let v11 = auth_types(
        &RoomVersionId::V11,
        &member,
        &bob,
        Some(bob.as_str()),
        &content,
    )
    .unwrap();
    let expected = |with_create: bool| {
        let mut types = vec![
            (StateEventType::RoomPowerLevels, String::new()),
            (StateEventType::RoomMember, bob.to_string()),
        ];
        if with_create {
            types.push((StateEventType::RoomCreate, String::new()));
        }
        types.push((StateEventType::RoomJoinRules, String::new()));
        types
    };
    assert_eq!(v11, expected(true));
    let v12 = auth_types(
        &RoomVersionId::V12,
        &member,
        &bob,
        Some(bob.as_str()),
        &content,
    )
    .unwrap();
    assert_eq!(v12, expected(false));

    let create = TimelineEventType::RoomCreate;
    let empty = serde_json::value::to_raw_value(&json!({})).unwrap();
    assert!(
        auth_types(&RoomVersionId::V11, &create, &bob, Some(""), &empty)
            .unwrap()
            .is_empty()
    );

    let no_membership = serde_json::value::to_raw_value(&json!({})).unwrap();
    assert!(matches!(
        auth_types(
            &RoomVersionId::V11,
            &member,
            &bob,
            Some(bob.as_str()),
            &no_membership
        ),
        Err(Error::Unauthorized(_))
    ));
}

#[test]
fn selected_auth_events_come_from_the_state() {
    for version in VERSIONS {
        let room = room(version.clone(), "public");
        let template = room
            .template(
                &room.main,
                5_000,
                &bob(),
                "m.room.member",
                Some(bob().as_str()),
                json!({"membership": "join"}),
            )
            .unwrap();
        let state = &room.main.state;
        let mut expected = vec![
            state[&(StateEventType::RoomPowerLevels, String::new())].clone(),
            state[&(StateEventType::RoomJoinRules, String::new())].clone(),
        ];
        if !creators_privileged(&version) {
            expected.push(room.create_event_id());
        }
        let mut selected = template.auth_events;
        selected.sort();
        expected.sort();
        assert_eq!(selected, expected, "{version}");
    }
}

#[test]
fn unexpected_duplicate_or_rejected_auth_events_are_refused() {
    for version in VERSIONS {
        let mut room = room(version, "public");
        let main = room.main.clone();
        let template = |room: &TestRoom| {
            room.template(
                &main,
                9_000,
                &alice(),
                "m.room.message",
                None,
                json!({"body": "x"}),
            )
            .unwrap()
        };
        let join_rules = main.state[&(StateEventType::RoomJoinRules, String::new())].clone();
        let power_levels = main.state[&(StateEventType::RoomPowerLevels, String::new())].clone();

        let mut unexpected = template(&room);
        unexpected.auth_events.push(join_rules);
        let pdu = room.sign(unexpected).unwrap();
        assert_unauthorized(
            check(&pdu, &main.state, |id| room.get(id)).map(|()| pdu.event_id().to_owned()),
            "unexpected auth event",
        );

        let mut duplicate = template(&room);
        duplicate.auth_events.push(power_levels.clone());
        let pdu = room.sign(duplicate).unwrap();
        assert_unauthorized(
            check(&pdu, &main.state, |id| room.get(id)).map(|()| pdu.event_id().to_owned()),
            "duplicate auth event",
        );

        let pdu = room.sign(template(&room)).unwrap();
        check(&pdu, &main.state, |id| room.get(id)).unwrap();
        let rejected = room.pdus.remove(&power_levels).unwrap().with_rejected(true);
        room.pdus.insert(power_levels, rejected);
        assert_unauthorized(
            check(&pdu, &main.state, |id| room.get(id)).map(|()| pdu.event_id().to_owned()),
            "rejected auth event",
        );
    }
}

#[test]
fn v11_needs_the_create_event_among_auth_events_and_v12_forbids_it() {
    let room = room(RoomVersionId::V11, "public");
    let mut template = room
        .template(
            &room.main,
            9_000,
            &alice(),
            "m.room.message",
            None,
            json!({"body": "x"}),
        )
        .unwrap();
    template
        .auth_events
        .retain(|id| *id != room.create_event_id());
    let pdu = room.sign(template).unwrap();
    assert!(matches!(
        check_state_independent(&pdu, |id| room.get(id)),
        Err(Error::Unauthorized(reason)) if reason.contains("no `m.room.create` event")
    ));

    let room12 = self::room(RoomVersionId::V12, "public");
    let template = room12
        .template(
            &room12.main,
            9_000,
            &alice(),
            "m.room.message",
            None,
            json!({"body": "x"}),
        )
        .unwrap();
    // Signing such an event is refused (the event format forbids it), so it is forged by hand.
    let mut json = room12.sign(template).unwrap().into_json();
    let create_id = room12.create_event_id().to_string();
    if let Some(ruma::CanonicalJsonValue::Array(auth_events)) = json.get_mut("auth_events") {
        auth_events.push(create_id.into());
    }
    let event_id = crate::core::pdu::reference_event_id(&RoomVersionId::V12, &json).unwrap();
    let pdu = Pdu::from_canonical(RoomVersionId::V12, event_id, json).unwrap();
    // ruma notices first that the create event has no room ID, hence is "not in the same room".
    assert!(matches!(
        check_state_independent(&pdu, |id| room12.get(id)),
        Err(Error::Unauthorized(reason)) if reason.contains("not in the same room")
    ));
}

#[test]
fn v12_events_need_their_create_event() {
    let room = room(RoomVersionId::V12, "public");
    let pdu = room
        .build(
            &room.main,
            9_000,
            &alice(),
            "m.room.message",
            None,
            json!({"body": "x"}),
        )
        .unwrap();
    let create_id = room.create_event_id();
    let without_create = |id: &EventId| room.get(id).filter(|pdu| pdu.event_id() != &create_id);
    assert!(matches!(
        check_state_independent(&pdu, without_create),
        Err(Error::Unauthorized(reason)) if reason.contains("m.room.create")
    ));
}

#[test]
fn create_event_passes_on_its_own() {
    for version in VERSIONS {
        let room = room(version, "public");
        let create = room.get(&room.create_event_id()).unwrap();
        check(create, &StateMap::new(), |id| room.get(id)).unwrap();
    }
}

#[test]
fn auth_events_state_is_what_the_event_claims() {
    for version in VERSIONS {
        let mut room = room(version.clone(), "public");
        let id = say(&mut room, &alice(), "hi").unwrap();
        let pdu = room.get(&id).unwrap();
        let claimed = auth_events_state(pdu, |id| room.get(id)).unwrap();
        let state = &room.main.state;
        let keys = [
            (StateEventType::RoomCreate, String::new()),
            (StateEventType::RoomPowerLevels, String::new()),
            (StateEventType::RoomMember, alice().to_string()),
        ];
        assert_eq!(claimed.len(), keys.len(), "{version}");
        for key in keys {
            assert_eq!(claimed[&key], state[&key], "{version} {key:?}");
        }
        check(pdu, &claimed, |id| room.get(id)).unwrap();
    }
}

#[test]
fn missing_auth_events_are_reported() {
    let room = room(RoomVersionId::V11, "public");
    let pdu = room
        .build(
            &room.main,
            9_000,
            &alice(),
            "m.room.message",
            None,
            json!({"body": "x"}),
        )
        .unwrap();
    let nothing = |_: &EventId| None::<&Pdu>;
    assert!(matches!(
        auth_events_state(&pdu, nothing),
        Err(Error::EventNotFound(_))
    ));
    assert!(matches!(
        check(&pdu, &room.main.state, nothing),
        Err(Error::Unauthorized(_))
    ));
}
