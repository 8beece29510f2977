//! Receiving transactions (`PUT /_matrix/federation/v1/send/{txnId}`) from another server: its
//! user joins a public room of ours with a join event, sends messages, types, reads and shows
//! presence; our users see it all. Server B is real (its keys are fetched over TLS), but the
//! test writes B's events and transactions itself, signed with B's key. Events on an old branch
//! are soft-failed; missing events are pulled from B and gaps filled with the state B gives.

use roost::service::rooms::ingest::Received;
use roost::service::rooms::outlier::{EventStanding, Standing};
use ruma::{OwnedRoomId, OwnedUserId, RoomId};
use serde_json::{Value, json};

use crate::common::{User, user};
use crate::federation_common::{FederatedPair, FederatedServer};
use crate::federation_forge::{
    Draft, Origin, assert_taken, message_bodies, picture, public_room, services,
};

/// A public room of alice on A that bob of B joined through a transaction.
struct Joined {
    alice: User,
    room: OwnedRoomId,
    bob: String,
}

async fn join_through_transaction(a: &FederatedServer, b: &Origin<'_>, version: &str) -> Joined {
    let alice = user(a, &format!("alice{version}")).await;
    let room = public_room(a, &alice, version).await;
    let bob = b.user("bob");
    let join = b.event(a, &room, Draft::member(&bob, "join"));
    let (status, answer) = b
        .send(a, &format!("join-{version}"), &[&join], vec![])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &join);
    assert_eq!(
        services(a)
            .rooms
            .membership(&room, &OwnedUserId::try_from(bob.as_str()).unwrap())
            .unwrap()
            .as_deref(),
        Some("join")
    );
    Joined { alice, room, bob }
}

async fn initial_sync(a: &FederatedServer, alice: &User) -> Value {
    let (status, body) = a.get("/_matrix/client/v3/sync", Some(&alice.token)).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn federation_receive_joins_and_messages_in_order() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    for version in ["10", "11", "12"] {
        let Joined { alice, room, bob } = join_through_transaction(a, &b, version).await;

        // Three messages in one transaction, each following the one before.
        let one = b.event(a, &room, Draft::message(&bob, "one"));
        let two = b.event(a, &room, Draft::message(&bob, "two").after(&one));
        let three = b.event(a, &room, Draft::message(&bob, "three").after(&two));
        let (status, answer) = b
            .send(
                a,
                &format!("messages-{version}"),
                &[&one, &two, &three],
                vec![],
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        for pdu in [&one, &two, &three] {
            assert_taken(&answer, pdu);
        }
        assert_eq!(
            message_bodies(a, &alice, &room).await,
            ["one", "two", "three"],
            "room version {version}"
        );
        let info = services(a).rooms.info(&room).unwrap().unwrap();
        assert_eq!(info.extremities, vec![three.event_id().to_owned()]);

        // Alice's sync has bob as a member and his messages in its timeline.
        let sync = initial_sync(a, &alice).await;
        let joined = &sync["rooms"]["join"][room.as_str()];
        let timeline: Vec<&str> = joined["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str())
            .collect();
        assert!(timeline.ends_with(&["one", "two", "three"]), "{joined}");
    }
}

#[tokio::test]
async fn federation_receive_typing_receipts_and_presence() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let Joined { alice, room, bob } = join_through_transaction(a, &b, "12").await;
    let message = b.event(a, &room, Draft::message(&bob, "hello"));
    let (_, answer) = b.send(a, "message", &[&message], vec![]).await;
    assert_taken(&answer, &message);
    // Alice writes too, so that bob has something of hers to read.
    let (status, sent) = crate::common::send_text(a, &alice, room.as_str(), "t1", "hi bob").await;
    assert_eq!(status, 200, "{sent}");
    let hers = sent["event_id"].as_str().unwrap().to_owned();

    let edus = vec![
        json!({
            "edu_type": "m.typing",
            "content": { "room_id": room, "user_id": bob, "typing": true },
        }),
        json!({
            "edu_type": "m.receipt",
            "content": { room.as_str(): { "m.read": { bob.as_str(): {
                "data": { "ts": 1_700_000_000_000u64 },
                "event_ids": [hers],
            } } } },
        }),
        json!({
            "edu_type": "m.presence",
            "content": { "push": [{
                "user_id": bob,
                "presence": "online",
                "status_msg": "on a boat",
                "last_active_ago": 5_000,
                "currently_active": true,
            }] },
        }),
        // Unknown types are ignored.
        json!({ "edu_type": "org.example.unknown", "content": { "x": 1 } }),
    ];
    let (status, answer) = b.send(a, "edus", &[], edus).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "pdus": {} }));

    let sync = initial_sync(a, &alice).await;
    let ephemeral = sync["rooms"]["join"][room.as_str()]["ephemeral"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let typing = ephemeral
        .iter()
        .find(|e| e["type"] == "m.typing")
        .unwrap_or_else(|| panic!("no typing in {ephemeral:?}"));
    assert_eq!(typing["content"]["user_ids"], json!([bob]));
    let receipt = ephemeral
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap_or_else(|| panic!("no receipt in {ephemeral:?}"));
    assert!(
        receipt["content"][&hers]["m.read"][&bob].is_object(),
        "{receipt}"
    );
    let presence = sync["presence"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let bobs = presence
        .iter()
        .find(|e| e["sender"] == bob.as_str())
        .unwrap_or_else(|| panic!("no presence of bob in {presence:?}"));
    assert_eq!(bobs["content"]["presence"], "online");
    assert_eq!(bobs["content"]["status_msg"], "on a boat");

    // Typing stops when bob's server says so.
    let stop = json!({
        "edu_type": "m.typing",
        "content": { "room_id": room, "user_id": bob, "typing": false },
    });
    let (status, _) = b.send(a, "stop", &[], vec![stop]).await;
    assert_eq!(status, 200);
    let typers = services(a).typing.typers(&room).map(|(users, _)| users);
    assert_eq!(typers, Some(vec![]));
}

#[tokio::test]
async fn federation_receive_edus_only_for_the_origins_members() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let Joined { alice, room, bob } = join_through_transaction(a, &b, "12").await;
    let other_room = public_room(a, &alice, "12").await;
    let stranger = format!("@carol:{}", a.name); // not a user of B
    let not_joined = b.user("dave");
    let typing = |room: &RoomId, user: &str| {
        json!({
            "edu_type": "m.typing",
            "content": { "room_id": room, "user_id": user, "typing": true },
        })
    };
    let edus = vec![
        typing(&room, &stranger),
        typing(&room, &not_joined),
        typing(&other_room, &bob),
        json!({ "edu_type": "m.typing", "content": { "room_id": 3 } }),
        json!({ "no_type": true }),
        json!({
            "edu_type": "m.presence",
            "content": { "push": [
                { "user_id": stranger, "presence": "online", "last_active_ago": 0 },
                { "user_id": not_joined, "presence": "online", "last_active_ago": 0 },
            ] },
        }),
    ];
    let (status, answer) = b.send(a, "edus", &[], edus).await;
    assert_eq!(status, 200, "{answer}");
    let services = services(a);
    assert!(
        services
            .typing
            .typers(&room)
            .is_none_or(|(users, _)| users.is_empty())
    );
    assert!(services.typing.typers(&other_room).is_none());
    for user in [&stranger, &not_joined] {
        let user = OwnedUserId::try_from(user.as_str()).unwrap();
        assert_eq!(services.presence.get(&user).unwrap(), None, "{user}");
    }
}

/// An event on a branch that ends before a ban passes the auth rules at its place in the DAG
/// but not against the room's current state: it is soft-failed, stored but never shown, and
/// never one of our forward extremities.
#[tokio::test]
async fn federation_receive_soft_fails_an_event_that_evades_a_ban() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let Joined { alice, room, bob } = join_through_transaction(a, &b, "12").await;
    let before_ban = b.event(a, &room, Draft::message(&bob, "before the ban"));
    let (_, answer) = b.send(a, "before", &[&before_ban], vec![]).await;
    assert_taken(&answer, &before_ban);
    let (status, body) = a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({ "user_id": bob }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let banned = picture(a, &room);

    let evading = b.event(
        a,
        &room,
        Draft::message(&bob, "evading")
            .after(&before_ban)
            .authorised_like(&before_ban),
    );
    let (status, answer) = b.send(a, "evading", &[&evading], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &evading);
    let services = services(a);
    assert_eq!(
        services.rooms.event_standing(evading.event_id()).unwrap(),
        Some(EventStanding::Beside(Standing::SoftFailed))
    );
    assert_eq!(picture(a, &room), banned, "the room did not change");
    assert_eq!(message_bodies(a, &alice, &room).await, ["before the ban"]);
    // Sent again, it is answered the same and still not shown.
    let (_, again) = b.send(a, "evading-again", &[&evading], vec![]).await;
    assert_taken(&again, &evading);
    assert_eq!(picture(a, &room), banned);
}

/// The room service's side of a gap: a prev event stored with the state a peer gave for it,
/// then an event following it, resolved against our own branch.
#[tokio::test]
async fn federation_receive_resolves_state_across_a_gap() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let Joined { alice, room, bob } = join_through_transaction(a, &b, "12").await;
    let services = services(a);
    let state_at_join = (*services.rooms.current_state(&room).unwrap()).clone();

    // Alice goes on; on B's side, bob wrote two messages we never got.
    let (status, _) = crate::common::send_text(a, &alice, room.as_str(), "t1", "ours").await;
    assert_eq!(status, 200);
    let ours = picture(a, &room).extremities;
    let join = services
        .rooms
        .state_event(
            &room,
            &ruma::events::StateEventType::RoomMember,
            bob.as_str(),
        )
        .unwrap()
        .unwrap();
    let lost = b.event(a, &room, Draft::message(&bob, "lost").after(&join));
    let missing = b.event(a, &room, Draft::message(&bob, "missing").after(&lost));
    let next = b.event(a, &room, Draft::message(&bob, "next").after(&missing));

    // Without the state at `missing`, `next` cannot be taken.
    assert!(services.rooms.ingest_remote(next.clone()).await.is_err());
    assert_eq!(
        services.rooms.event_standing(next.event_id()).unwrap(),
        None
    );

    // Another room's state never becomes the state at the event.
    let other = public_room(a, &alice, "12").await;
    let other_state = (*services.rooms.current_state(&other).unwrap()).clone();
    assert!(
        services
            .rooms
            .store_gap_event(&other, &missing, other_state)
            .await
            .is_err()
    );
    assert_eq!(
        services.rooms.event_standing(missing.event_id()).unwrap(),
        None
    );

    // The receiver stores `missing` with the state a peer gives for it (bob joined).
    services
        .rooms
        .store_gap_event(&room, &missing, state_at_join.clone())
        .await
        .unwrap();
    assert_eq!(
        services.rooms.event_standing(missing.event_id()).unwrap(),
        Some(EventStanding::Beside(Standing::Outlier))
    );
    assert_eq!(
        services.rooms.ingest_remote(next.clone()).await.unwrap(),
        Received::Accepted
    );
    let info = services.rooms.info(&room).unwrap().unwrap();
    let mut extremities = info.extremities.clone();
    extremities.sort();
    let mut expected = vec![ours[0].clone(), next.event_id().to_owned()];
    expected.sort();
    assert_eq!(extremities, expected, "two branches now");
    assert_eq!(message_bodies(a, &alice, &room).await, ["ours", "next"]);
    // The next local event merges both branches.
    let (status, _) = crate::common::send_text(a, &alice, room.as_str(), "t2", "merged").await;
    assert_eq!(status, 200);
    assert_eq!(picture(a, &room).extremities.len(), 1);
}

/// An event whose prev events the origin cannot give (it answers neither
/// `/get_missing_events` nor `/state_ids` for the room) is not taken, and nothing of it is kept:
/// a later event referencing it brings it again.
#[tokio::test]
async fn federation_receive_keeps_nothing_it_cannot_connect() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let Joined { alice, room, bob } = join_through_transaction(a, &b, "12").await;
    let before = picture(a, &room);
    let lost = b.event(a, &room, Draft::message(&bob, "lost"));
    let orphan = b.event(a, &room, Draft::message(&bob, "orphan").after(&lost));
    let (status, answer) = b.send(a, "orphan", &[&orphan], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        crate::federation_forge::result_of(&answer, &orphan)["error"].is_string(),
        "{answer}"
    );
    let services = services(a);
    for pdu in [&lost, &orphan] {
        assert_eq!(services.rooms.event_standing(pdu.event_id()).unwrap(), None);
    }
    assert_eq!(picture(a, &room), before);
    // Once the lost event arrives, both are taken, in order.
    let (_, answer) = b.send(a, "found", &[&lost, &orphan], vec![]).await;
    assert_taken(&answer, &lost);
    assert_taken(&answer, &orphan);
    assert_eq!(message_bodies(a, &alice, &room).await, ["lost", "orphan"]);
}

/// A gap filled end to end: B really takes part in the room (bob joined through B), and holds a
/// chain of bob's events A never got. Only the chain's tip reaches A: A pulls the ten events
/// before it with `/get_missing_events`, and fills what lies below them with the state B gives
/// for the oldest missing one (`/state_ids`, `/event`).
#[tokio::test]
async fn federation_receive_fills_a_gap_from_the_origin() {
    let pair = FederatedPair::start().await;
    let (a, b_server) = (&pair.a, &pair.b);
    let b = Origin::new(b_server);
    let alice = user(a, "alice").await;
    let room = public_room(a, &alice, "12").await;
    let bob = user(b_server, "bob").await;
    let (status, body) = b_server
        .post(
            &format!("/_matrix/client/v3/join/{room}?via={}", a.name),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Stored on B beside its timeline, so that B's sender does not send them.
    let on_b = services(b_server);
    let state = (*on_b.rooms.current_state(&room).unwrap()).clone();
    let mut prev = (*on_b
        .rooms
        .state_event(
            &room,
            &ruma::events::StateEventType::RoomMember,
            bob.id.as_str(),
        )
        .unwrap()
        .expect("bob's join on B"))
    .clone();
    let mut chain = Vec::new();
    for i in 0..15 {
        let event = b.event(
            b_server,
            &room,
            Draft::message(&bob.id, &format!("lost {i}")).after(&prev),
        );
        on_b.rooms
            .store_gap_event(&room, &event, state.clone())
            .await
            .unwrap();
        prev = event.clone();
        chain.push(event);
    }
    let tip = b.event(b_server, &room, Draft::message(&bob.id, "tip").after(&prev));
    on_b.rooms
        .store_gap_event(&room, &tip, state.clone())
        .await
        .unwrap();

    let (status, answer) = b.send(a, "tip", &[&tip], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &tip);
    // The timeline as A wrote it (a client's `/messages` would backfill the rest from B).
    let mut expected: Vec<_> = chain[5..].iter().map(|e| e.event_id().to_owned()).collect();
    expected.push(tip.event_id().to_owned());
    let timeline = picture(a, &room).timeline;
    assert!(timeline.ends_with(&expected), "{timeline:?}");
    let on_a = services(a);
    assert_eq!(
        on_a.rooms.event_standing(chain[4].event_id()).unwrap(),
        Some(EventStanding::Beside(Standing::Outlier)),
        "the event at the gap, stored with its state"
    );
    assert!(
        on_a.rooms
            .state_after_event(chain[4].event_id())
            .unwrap()
            .is_some()
    );
    for event in &chain[..4] {
        assert_eq!(on_a.rooms.event_standing(event.event_id()).unwrap(), None);
    }
    assert!(
        on_a.rooms
            .info(&room)
            .unwrap()
            .unwrap()
            .extremities
            .contains(&tip.event_id().to_owned())
    );
}
