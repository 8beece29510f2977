//! Peers that lie. Each attack on a room is refused without disturbing it: its state, forward
//! extremities and timeline stay as they were, and a good event sent next is still taken.
//! Requests that are not properly signed are refused whole (401).

use axum::http;
use roost::core::Pdu;
use roost::service::rooms::outlier::{EventStanding, Standing};
use ruma::events::StateEventType;
use ruma::{OwnedRoomId, ServerName};
use serde_json::{Value, json};

use crate::common::{User, create_room, send_text, user};
use crate::federation_common::{FederatedPair, FederatedServer, sync_from};
use crate::federation_forge::{
    Draft, Origin, assert_refused, assert_taken, message_bodies, picture, public_room,
    send_transaction, services, signed_request, unpublished_key, wire, with_content,
};

struct Room {
    alice: User,
    room: OwnedRoomId,
    bob: String,
}

/// Alice's public room on A, joined by bob of B, with one message of his.
async fn room_with_bob(a: &FederatedServer, b: &Origin<'_>) -> Room {
    let alice = user(a, "alice").await;
    let room = public_room(a, &alice, "12").await;
    let bob = b.user("bob");
    let join = b.event(a, &room, Draft::member(&bob, "join"));
    let (status, answer) = b.send(a, "setup-join", &[&join], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &join);
    let hello = b.event(a, &room, Draft::message(&bob, "hello"));
    let (status, answer) = b.send(a, "setup-hello", &[&hello], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &hello);
    Room { alice, room, bob }
}

/// A good message from bob is still taken after an attack, and shown.
async fn still_works(a: &FederatedServer, b: &Origin<'_>, room: &Room, txn: &str) {
    let good = b.event(a, &room.room, Draft::message(&room.bob, txn));
    let (status, answer) = b.send(a, &txn.replace(' ', "-"), &[&good], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_taken(&answer, &good);
    let bodies = message_bodies(a, &room.alice, &room.room).await;
    assert_eq!(bodies.last().map(String::as_str), Some(txn), "{bodies:?}");
}

fn standing(a: &FederatedServer, event_id: &ruma::EventId) -> Option<EventStanding> {
    services(a).rooms.event_standing(event_id).unwrap()
}

#[tokio::test]
async fn federation_attack_forged_signature_is_dropped() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let before = picture(a, &room.room);

    // Signed with a key B never published, under B's key ID.
    let forged_key = unpublished_key();
    let honest = b.event(a, &room.room, Draft::message(&room.bob, "forged"));
    let forged = crate::federation_forge::build(
        a,
        b.name(),
        &forged_key,
        &room.room,
        Draft::message(&room.bob, "forged"),
    );
    let mut json = wire(&forged);
    let key_id = b.key().version().to_owned();
    let signature = json["signatures"][b.name().as_str()]["ed25519:forged"].take();
    json["signatures"] = json!({ b.name().as_str(): { format!("ed25519:{key_id}"): signature } });
    let (status, answer) =
        send_transaction(a, b.name(), b.key(), "forged", vec![json], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &forged);
    assert_eq!(standing(a, forged.event_id()), None, "not stored");
    assert_eq!(picture(a, &room.room), before);
    // The honest twin (other timestamp, other ID) is fine.
    let (_, answer) = b.send(a, "honest", &[&honest], vec![]).await;
    assert_taken(&answer, &honest);
    still_works(a, &b, &room, "after a forged signature").await;
}

#[tokio::test]
async fn federation_attack_bad_content_hash_keeps_the_redacted_event() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let signed = b.event(a, &room.room, Draft::message(&room.bob, "what was signed"));
    let tampered = with_content(&signed, json!({ "msgtype": "m.text", "body": "tampered" }));
    let (status, answer) =
        send_transaction(a, b.name(), b.key(), "hash", vec![tampered], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    // The same event (its ID covers the redacted form only), kept redacted.
    assert_taken(&answer, &signed);
    let stored = services(a).rooms.pdu(signed.event_id()).unwrap().unwrap();
    assert_eq!(stored.content().get(), "{}");
    let (status, event) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                room.room,
                signed.event_id()
            ),
            Some(&room.alice.token),
        )
        .await;
    assert_eq!(status, 200, "{event}");
    assert_eq!(event["content"], json!({}));
    still_works(a, &b, &room, "after a bad hash").await;
}

#[tokio::test]
async fn federation_attack_event_from_a_server_not_in_the_room_is_rejected() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let c_server = FederatedServer::start(&pair.ca).await;
    let c = Origin::new(&c_server);
    let before = picture(a, &room.room);

    let carol = c.user("carol");
    let intrusion = c.event(a, &room.room, Draft::message(&carol, "let me in"));
    let (status, answer) = c.send(a, "intrusion", &[&intrusion], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &intrusion);
    assert_eq!(
        standing(a, intrusion.event_id()),
        Some(EventStanding::Beside(Standing::Rejected)),
        "stored as rejected, not to be fetched again"
    );
    // A member of C's claiming to be joined, with auth events it does not have.
    let impostor = c.event(
        a,
        &room.room,
        Draft::state(&carol, "m.room.topic", "", json!({ "topic": "mine" })),
    );
    let (_, answer) = c.send(a, "impostor", &[&impostor], vec![]).await;
    assert_refused(&answer, &impostor);
    assert_eq!(picture(a, &room.room), before);
    // What was rejected is not shown to clients, not even by ID.
    let (status, _) = a
        .get(
            &format!(
                "/_matrix/client/v3/rooms/{}/event/{}",
                room.room,
                intrusion.event_id()
            ),
            Some(&room.alice.token),
        )
        .await;
    assert_eq!(status, 404);
    still_works(a, &b, &room, "after an intrusion").await;
}

#[tokio::test]
async fn federation_attack_unauthorised_state_change_is_rejected() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let before = picture(a, &room.room);

    // Bob has power 0: no name changes, no power for himself.
    let rename = b.event(
        a,
        &room.room,
        Draft::state(
            &room.bob,
            "m.room.name",
            "",
            json!({ "name": "bob's room" }),
        ),
    );
    let power = b.event(
        a,
        &room.room,
        Draft::state(
            &room.bob,
            "m.room.power_levels",
            "",
            json!({ "users": { room.bob.as_str(): 100 } }),
        ),
    );
    let (status, answer) = b.send(a, "coup", &[&rename, &power], vec![]).await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &rename);
    assert_refused(&answer, &power);
    for pdu in [&rename, &power] {
        assert_eq!(
            standing(a, pdu.event_id()),
            Some(EventStanding::Beside(Standing::Rejected))
        );
    }
    assert_eq!(picture(a, &room.room), before);
    // An event citing a rejected one as an auth event fails too.
    let mut draft = Draft::message(&room.bob, "with rejected power");
    let mut auth = b
        .event(a, &room.room, Draft::message(&room.bob, "x"))
        .auth_events()
        .to_vec();
    auth.retain(|id| {
        services(a)
            .rooms
            .pdu(id)
            .unwrap()
            .is_some_and(|p| p.kind().to_string() != "m.room.power_levels")
    });
    auth.push(power.event_id().to_owned());
    draft.auth_events = Some(auth);
    let cites = b.event(a, &room.room, draft);
    let (_, answer) = b.send(a, "cites", &[&cites], vec![]).await;
    assert_refused(&answer, &cites);
    assert_eq!(picture(a, &room.room), before);
    still_works(a, &b, &room, "after a coup").await;
}

#[tokio::test]
async fn federation_attack_replayed_transaction_is_answered_the_same() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let once = b.event(a, &room.room, Draft::message(&room.bob, "once"));
    let rejected = b.event(
        a,
        &room.room,
        Draft::state(&room.bob, "m.room.name", "", json!({ "name": "no" })),
    );
    let (status, first) = b.send(a, "replayed", &[&once, &rejected], vec![]).await;
    assert_eq!(status, 200, "{first}");
    assert_taken(&first, &once);
    assert_refused(&first, &rejected);
    let after_first = picture(a, &room.room);

    // The same transaction ID again, even with other content: the same answer, nothing new.
    let other = b.event(a, &room.room, Draft::message(&room.bob, "other"));
    let (status, again) = b.send(a, "replayed", &[&other], vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(again, first);
    let (_, third) = b.send(a, "replayed", &[&once, &rejected], vec![]).await;
    assert_eq!(third, first);
    assert_eq!(picture(a, &room.room), after_first);
    assert_eq!(standing(a, other.event_id()), None);
    assert_eq!(
        message_bodies(a, &room.alice, &room.room).await,
        ["hello", "once"]
    );
    still_works(a, &b, &room, "after a replay").await;
}

#[tokio::test]
async fn federation_attack_unpublished_key_and_wrong_destination_are_refused() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let before = picture(a, &room.room);
    let message = b.event(a, &room.room, Draft::message(&room.bob, "unsigned"));
    let body = json!({
        "origin": b.name(),
        "origin_server_ts": roost::util::now_ms(),
        "pdus": [wire(&message)],
    });
    let path = "/_matrix/federation/v1/send/bad-auth";
    let forged_key = unpublished_key();
    let (status, answer) = signed_request(
        a,
        b.name(),
        &forged_key,
        None,
        http::Method::PUT,
        path,
        Some(&body),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["errcode"], "M_UNAUTHORIZED");

    let elsewhere: &ServerName = "elsewhere.example".try_into().unwrap();
    let (status, answer) = signed_request(
        a,
        b.name(),
        b.key(),
        Some(elsewhere),
        http::Method::PUT,
        path,
        Some(&body),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["errcode"], "M_UNAUTHORIZED");

    // Signed for another body than the one sent.
    let response = a
        .http
        .put(a.url(path))
        .header(
            "Authorization",
            format!(
                "X-Matrix origin=\"{}\",destination=\"{}\",key=\"ed25519:{}\",sig=\"AAAA\"",
                b.name(),
                a.name,
                b.key().version()
            ),
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(standing(a, message.event_id()), None);
    assert_eq!(picture(a, &room.room), before);
    still_works(a, &b, &room, "after bad signatures").await;
}

#[tokio::test]
async fn federation_attack_malformed_transactions_and_pdus() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let before = picture(a, &room.room);
    let message = b.event(a, &room.room, Draft::message(&room.bob, "x"));
    let send = |txn: &'static str, body: Value| {
        let b = &b;
        async move {
            signed_request(
                a,
                b.name(),
                b.key(),
                None,
                http::Method::PUT,
                &format!("/_matrix/federation/v1/send/{txn}"),
                Some(&body),
            )
            .await
        }
    };

    // Whole transactions refused: another origin, too many PDUs or EDUs, no PDUs, not JSON.
    for (txn, body) in [
        (
            "other-origin",
            json!({ "origin": "c.example", "origin_server_ts": 1, "pdus": [] }),
        ),
        (
            "too-many-pdus",
            json!({ "origin": b.name(), "origin_server_ts": 1,
                    "pdus": vec![wire(&message); 51] }),
        ),
        (
            "too-many-edus",
            json!({ "origin": b.name(), "origin_server_ts": 1, "pdus": [],
                    "edus": vec![json!({ "edu_type": "m.typing", "content": {} }); 101] }),
        ),
        (
            "no-pdus",
            json!({ "origin": b.name(), "origin_server_ts": 1 }),
        ),
    ] {
        let (status, answer) = send(txn, body).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (400, Some("M_BAD_JSON")),
            "{txn}: {answer}"
        );
    }

    // PDUs dropped one by one, the others of the transaction still taken.
    let oversized = with_content(
        &message,
        json!({ "msgtype": "m.text", "body": "x".repeat(70_000) }),
    );
    let unknown_room = {
        let mut json = wire(&message);
        json["room_id"] = json!(format!("!nowhere:{}", b.name()));
        json
    };
    let fine = b.event(a, &room.room, Draft::message(&room.bob, "fine"));
    let garbage = vec![
        oversized,
        unknown_room,
        json!("not an object"),
        json!({ "room_id": room.room, "type": "m.room.message", "depth": "1" }),
        json!({ "room_id": room.room }),
        wire(&fine),
    ];
    let (status, answer) = send(
        "garbage",
        json!({ "origin": b.name(), "origin_server_ts": 1, "pdus": garbage }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &message);
    assert_taken(&answer, &fine);
    assert_eq!(standing(a, message.event_id()), None);
    let after = picture(a, &room.room);
    assert_eq!(after.state, before.state);
    assert_eq!(after.extremities, vec![fine.event_id().to_owned()]);
    still_works(a, &b, &room, "after garbage").await;
}

#[tokio::test]
async fn federation_attack_server_banned_by_acl_is_ignored() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let room = room_with_bob(a, &b).await;
    let (status, body) = a
        .call(
            reqwest::Method::PUT,
            &format!(
                "/_matrix/client/v3/rooms/{}/state/m.room.server_acl/",
                room.room
            ),
            Some(&room.alice.token),
            Some(json!({ "allow": ["*"], "deny": [b.name()], "allow_ip_literals": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let before = picture(a, &room.room);

    let banned = b.event(a, &room.room, Draft::message(&room.bob, "banned"));
    let typing = json!({
        "edu_type": "m.typing",
        "content": { "room_id": room.room, "user_id": room.bob, "typing": true },
    });
    let (status, answer) = b.send(a, "acl", &[&banned], vec![typing]).await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &banned);
    assert!(
        answer["pdus"][banned.event_id().as_str()]["error"]
            .as_str()
            .unwrap()
            .contains("access control list"),
        "{answer}"
    );
    assert_eq!(standing(a, banned.event_id()), None);
    assert_eq!(picture(a, &room.room), before);
    assert!(
        services(a)
            .typing
            .typers(&room.room)
            .is_none_or(|(users, _)| users.is_empty())
    );
}

/// A `send_join` that names one of our members as the authoriser of a restricted join, built
/// without our `make_join`: countersigned only when the allow conditions hold (the user is in an
/// allowed room) and the member named may let users in.
#[tokio::test]
async fn federation_attack_restricted_join_outside_the_allowed_rooms_is_not_countersigned() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    // Bob of B is in the lobby; dave of B is not.
    let room_in_lobby = room_with_bob(a, &b).await;
    let alice = room_in_lobby.alice;
    let lobby = room_in_lobby.room;
    let bob = room_in_lobby.bob;
    let dave = b.user("dave");
    // Carol is joined but may not invite (invite needs 50); dan is not in the room.
    let carol = user(a, "carol").await;
    let dan = user(a, "dan").await;
    let restricted = OwnedRoomId::try_from(
        create_room(
            a,
            &alice,
            json!({
                "preset": "private_chat",
                "room_version": "12",
                "power_level_content_override": { "invite": 50 },
                "initial_state": [{
                    "type": "m.room.join_rules",
                    "content": {
                        "join_rule": "restricted",
                        "allow": [{ "type": "m.room_membership", "room_id": lobby }],
                    },
                }],
            }),
        )
        .await,
    )
    .unwrap();
    for (path, who) in [("invite", &alice), ("join", &carol)] {
        let (status, body) = a
            .post(
                &format!("/_matrix/client/v3/rooms/{restricted}/{path}"),
                Some(&who.token),
                json!({ "user_id": carol.id }),
            )
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let before = picture(a, &restricted);
    let join_of = |user: &str, authoriser: &str| {
        b.event(
            a,
            &restricted,
            Draft::state(
                user,
                "m.room.member",
                user,
                json!({ "membership": "join", "join_authorised_via_users_server": authoriser }),
            ),
        )
    };
    let send_join = |pdu: &Pdu| {
        let b = &b;
        let path = format!(
            "/_matrix/federation/v2/send_join/{restricted}/{}",
            pdu.event_id()
        );
        let body = wire(pdu);
        async move {
            signed_request(
                a,
                b.name(),
                b.key(),
                None,
                http::Method::PUT,
                &path,
                Some(&body),
            )
            .await
        }
    };

    // Dave is in no allowed room; carol may not invite; dan is not a member.
    for (joiner, authoriser) in [(&dave, &alice.id), (&bob, &carol.id), (&bob, &dan.id)] {
        let join = join_of(joiner, authoriser);
        let (status, answer) = send_join(&join).await;
        assert_eq!(
            (status, answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{joiner} through {authoriser}: {answer}"
        );
        assert_eq!(standing(a, join.event_id()), None, "not stored");
        assert_eq!(picture(a, &restricted), before);
    }
    let services = services(a);
    let dave_id = ruma::UserId::parse(&dave).unwrap();
    assert_eq!(
        services.rooms.membership(&restricted, &dave_id).unwrap(),
        None
    );

    // Bob is in the lobby: his join through alice is countersigned and taken.
    let join = join_of(&bob, &alice.id);
    let (status, answer) = send_join(&join).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["event"]["signatures"][a.name.as_str()].is_object(),
        "countersigned: {answer}"
    );
    let bob_id = ruma::UserId::parse(&bob).unwrap();
    assert_eq!(
        services
            .rooms
            .membership(&restricted, &bob_id)
            .unwrap()
            .as_deref(),
        Some("join")
    );
}

/// Events pushed for a room this server only knows from an invite (no user of ours joined):
/// refused one by one, before anything is fetched for them, and the invite stays as it was.
#[tokio::test]
async fn federation_attack_events_of_a_room_we_are_only_invited_to_are_refused() {
    let pair = FederatedPair::start().await;
    let (a, b) = (&pair.a, Origin::new(&pair.b));
    let alice = user(a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = create_room(
        &pair.b,
        &bob,
        json!({ "preset": "public_chat", "room_version": "12" }),
    )
    .await;
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&bob.token),
            json!({ "user_id": alice.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let invited = sync_from(a, &alice, None, |sync| {
        sync["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    let room_id = OwnedRoomId::try_from(room.as_str()).unwrap();
    let before = picture(a, &room_id);
    assert!(before.extremities.is_empty(), "a placeholder: {before:?}");

    // A message of bob's following the invite, citing only what the invite described: A
    // has every event it references.
    let invite = services(a)
        .rooms
        .state_event(&room_id, &StateEventType::RoomMember, &alice.id)
        .unwrap()
        .expect("the invite");
    let after_invite = b.event(
        a,
        &room_id,
        Draft::message(&bob.id, "after the invite").after(&invite),
    );
    // Two messages on B (which does not send them to A: no user of A is joined); only the
    // second is pushed, so that taking it would mean pulling the first from B.
    let on_b = services(&pair.b);
    let mut sent = Vec::new();
    for body in ["first", "second"] {
        let (status, answer) = send_text(&pair.b, &bob, &room, body, body).await;
        assert_eq!(status, 200, "{answer}");
        let event_id = ruma::OwnedEventId::try_from(answer["event_id"].as_str().unwrap()).unwrap();
        sent.push((*on_b.rooms.pdu(&event_id).unwrap().unwrap()).clone());
    }
    // Auth events of the message A lacks (the invite only described the room).
    let unknown_auth: Vec<_> = sent[1]
        .auth_events()
        .iter()
        .filter(|id| standing(a, id).is_none())
        .cloned()
        .collect();
    assert!(!unknown_auth.is_empty());
    let (status, answer) = b
        .send(a, "uninvited", &[&after_invite, &sent[1]], vec![])
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_refused(&answer, &after_invite);
    assert_refused(&answer, &sent[1]);
    for pdu in [&after_invite, &sent[0], &sent[1]] {
        assert_eq!(standing(a, pdu.event_id()), None, "not stored, not pulled");
    }
    for id in &unknown_auth {
        assert_eq!(standing(a, id), None, "the auth event {id} was not fetched");
    }
    assert_eq!(picture(a, &room_id), before);
    // Alice's client still sees the invite, and nothing else of the room.
    let since = invited["next_batch"].as_str().map(str::to_owned);
    let (status, sync) = a
        .get(
            &format!(
                "/_matrix/client/v3/sync?since={}&timeout=0",
                since.unwrap_or_default()
            ),
            Some(&alice.token),
        )
        .await;
    assert_eq!(status, 200, "{sync}");
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
    assert!(sync["rooms"]["leave"].get(&room).is_none(), "{sync}");
    let (status, sync) = a
        .get("/_matrix/client/v3/sync?timeout=0", Some(&alice.token))
        .await;
    assert_eq!(status, 200, "{sync}");
    assert!(sync["rooms"]["invite"].get(&room).is_some(), "{sync}");
    assert!(sync["rooms"]["join"].get(&room).is_none(), "{sync}");
}
