//! Membership across two real servers: a direct chat and a group (invites, joins through the
//! invite and by alias, messages both ways, profile lookups, kick and ban), rejected invites,
//! and the resident endpoints refusing what they must (a user of another server, a room version
//! the joining server does not speak, a banned user, unsigned or tampered joins and invites).

use axum::http::Method;
use roost::core::pdu::build_from_template;
use ruma::events::StateEventType;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, send_text, user};
use crate::federation_common::{FederatedPair, FederatedServer, sync_from};
use crate::federation_forge::{Origin, services, signed_request, unpublished_key};

/// Syncs `u` until `done` holds for one answer (an initial sync, then incremental ones from its
/// token); returns that answer.
async fn sync_until(server: &TestServer, u: &User, done: impl FnMut(&Value) -> bool) -> Value {
    sync_from(server, u, None, done).await
}

/// Syncs `u` until the room's timeline has shown messages with all of `bodies`; returns the
/// message bodies in the order they arrived.
async fn messages_until(server: &TestServer, u: &User, room: &str, bodies: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    sync_until(server, u, |sync| {
        let events = sync["rooms"]["join"][room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for event in events {
            if event["type"] == "m.room.message"
                && let Some(body) = event["content"]["body"].as_str()
                && !seen.iter().any(|s| s == body)
            {
                seen.push(body.to_owned());
            }
        }
        bodies.iter().all(|b| seen.iter().any(|s| s == b))
    })
    .await;
    seen
}

/// The membership of `user` in `room` as `server` knows it.
fn membership(server: &TestServer, room: &str, user: &str) -> Option<String> {
    let room = RoomId::parse(room).unwrap();
    let user = UserId::parse(user).unwrap();
    services(server).rooms.membership(&room, &user).unwrap()
}

async fn put(server: &TestServer, u: &User, path: &str, body: Value) -> (u16, Value) {
    server
        .call(reqwest::Method::PUT, path, Some(&u.token), Some(body))
        .await
}

#[tokio::test]
async fn direct_chat_across_servers() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let (status, body) = put(
        &pair.a,
        &alice,
        &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
        json!({ "displayname": "Alice of A" }),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let room = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.id] }),
    )
    .await;
    // Bob's server signed the invite and keeps it: Bob sees it, with the room's description.
    let sync = sync_until(&pair.b, &bob, |sync| {
        sync["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    let invite_state = sync["rooms"]["invite"][&room]["invite_state"]["events"]
        .as_array()
        .expect("invite state")
        .clone();
    let of_type = |kind: &str| invite_state.iter().find(|e| e["type"] == kind).cloned();
    let own = invite_state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.id.as_str())
        .expect("the invite itself");
    assert_eq!(own["sender"], alice.id.as_str());
    assert_eq!(own["content"]["is_direct"], true);
    assert_eq!(
        of_type("m.room.create").expect("the create event")["sender"],
        alice.id.as_str()
    );
    // Profile queries: a field Alice has not set is left out of a 200 answer.
    let b = Origin::new(&pair.b);
    let query = |field: &str| {
        format!(
            "/_matrix/federation/v1/query/profile?user_id={}&field={field}",
            alice.id.replace('@', "%40").replace(':', "%3A")
        )
    };
    for (field, expected) in [
        ("displayname", json!({ "displayname": "Alice of A" })),
        ("avatar_url", json!({})),
    ] {
        let answer = signed_request(
            &pair.a,
            b.name(),
            b.key(),
            None,
            Method::GET,
            &query(field),
            None,
        )
        .await;
        assert_eq!(answer, (200, expected), "{field}");
    }
    // `trusted_private_chat`: the invitee of the other server gets the creator's power too
    // (in room version 12, by being one of its creators).
    let state = |kind: &'static str| {
        let (a, token, room) = (&pair.a, alice.token.clone(), room.clone());
        async move {
            let (status, body) = a
                .get(
                    &format!("/_matrix/client/v3/rooms/{room}/state/{kind}/"),
                    Some(&token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let create = state("m.room.create").await;
    assert_eq!(create["room_version"], "12", "{create}");
    assert_eq!(create["additional_creators"], json!([bob.id]), "{create}");
    let levels = state("m.room.power_levels").await;
    assert!(levels["users"].get(&bob.id).is_none(), "{levels}");
    assert_eq!(
        membership(&pair.a, &room, &bob.id).as_deref(),
        Some("invite")
    );

    // Bob accepts: his server joins through Alice's, which invited him.
    let (status, body) = join(&pair.b, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(membership(&pair.a, &room, &bob.id).as_deref(), Some("join"));
    assert_eq!(
        membership(&pair.b, &room, &alice.id).as_deref(),
        Some("join")
    );
    let sync = sync_until(&pair.b, &bob, |sync| {
        sync["rooms"]["join"].get(&room).is_some()
    })
    .await;
    let state = &sync["rooms"]["join"][&room]["state"]["events"];
    assert!(
        state
            .as_array()
            .expect("state")
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.id.as_str()),
        "Bob's client gets the room's state: {state}"
    );

    // Messages both ways, in order.
    for (i, text) in ["one", "two", "three"].iter().enumerate() {
        let (status, body) = send_text(&pair.a, &alice, &room, &format!("a{i}"), text).await;
        assert_eq!(status, 200, "{body}");
    }
    let seen = messages_until(&pair.b, &bob, &room, &["one", "two", "three"]).await;
    assert_eq!(seen, ["one", "two", "three"]);
    for (i, text) in ["four", "five"].iter().enumerate() {
        let (status, body) = send_text(&pair.b, &bob, &room, &format!("b{i}"), text).await;
        assert_eq!(status, 200, "{body}");
    }
    let seen = messages_until(&pair.a, &alice, &room, &["four", "five"]).await;
    assert_eq!(
        seen.iter()
            .filter(|s| ["four", "five"].contains(&s.as_str()))
            .collect::<Vec<_>>(),
        ["four", "five"]
    );

    // Profiles across servers.
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/profile/{}", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["displayname"], "Alice of A");
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/profile/{}/displayname", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!((status, &body["displayname"]), (200, &json!("Alice of A")));
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/profile/{}/avatar_url", alice.id),
            Some(&bob.token),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/profile/@nobody:{}", pair.a.name),
            Some(&bob.token),
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

#[tokio::test]
async fn group_across_servers_with_alias_kick_and_ban() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let carol = user(&pair.a, "carol").await;
    let bob = user(&pair.b, "bob").await;
    let room = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "public_chat", "room_alias_name": "group", "name": "The group" }),
    )
    .await;
    let (status, body) = join(&pair.a, &carol, &room).await;
    assert_eq!(status, 200, "{body}");
    let alias = format!("#group:{}", pair.a.name);

    // The alias, resolved by its server.
    let encoded = alias.replace('#', "%23");
    let (status, body) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/directory/room/{encoded}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert!(
        body["servers"]
            .as_array()
            .unwrap()
            .contains(&json!(pair.a.name)),
        "{body}"
    );
    let (status, body) = pair
        .b
        .get(
            &format!(
                "/_matrix/client/v3/directory/room/%23missing:{}",
                pair.a.name
            ),
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");

    // Bob joins by alias.
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/join/{encoded}"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    for member in [&alice, &carol, &bob] {
        assert_eq!(
            membership(&pair.b, &room, &member.id).as_deref(),
            Some("join")
        );
        assert_eq!(
            membership(&pair.a, &room, &member.id).as_deref(),
            Some("join")
        );
    }
    let (status, body) = send_text(&pair.b, &bob, &room, "hi", "hello from B").await;
    assert_eq!(status, 200, "{body}");
    messages_until(&pair.a, &carol, &room, &["hello from B"]).await;
    let (status, body) = send_text(&pair.a, &carol, &room, "hey", "hello from A").await;
    assert_eq!(status, 200, "{body}");
    messages_until(&pair.b, &bob, &room, &["hello from A"]).await;

    // A kick: Bob's server hears of it; Bob may come back to the public room.
    let (_, before_kick) = pair
        .b
        .get("/_matrix/client/v3/sync?timeout=0", Some(&bob.token))
        .await;
    let before_kick = before_kick["next_batch"].as_str().map(str::to_owned);
    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/kick"),
            Some(&alice.token),
            json!({ "user_id": bob.id, "reason": "out" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_from(&pair.b, &bob, before_kick, |sync| {
        sync["rooms"]["leave"].get(&room).is_some()
    })
    .await;
    assert_eq!(
        membership(&pair.b, &room, &bob.id).as_deref(),
        Some("leave")
    );
    let (status, body) = join(&pair.b, &bob, &room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(membership(&pair.a, &room, &bob.id).as_deref(), Some("join"));

    // A ban: Bob's server hears of it, and Bob cannot come back.
    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sync_until(&pair.b, &bob, |_| {
        membership(&pair.b, &room, &bob.id).as_deref() == Some("ban")
    })
    .await;
    let (status, body) = join(&pair.b, &bob, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/join/{encoded}"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    assert_eq!(membership(&pair.a, &room, &bob.id).as_deref(), Some("ban"));
}

#[tokio::test]
async fn rejecting_an_invite_of_another_server() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = create_room(&pair.a, &alice, json!({ "preset": "private_chat" })).await;
    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/invite"),
            Some(&alice.token),
            json!({ "user_id": bob.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let invited = sync_until(&pair.b, &bob, |sync| {
        sync["rooms"]["invite"].get(&room).is_some()
    })
    .await;
    let before_leaving = invited["next_batch"].as_str().map(str::to_owned);

    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({ "reason": "no thanks" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The inviting server took the rejection into the room; Bob's client sees the invite gone.
    assert_eq!(
        membership(&pair.a, &room, &bob.id).as_deref(),
        Some("leave")
    );
    assert_eq!(
        membership(&pair.b, &room, &bob.id).as_deref(),
        Some("leave")
    );
    sync_from(&pair.b, &bob, before_leaving, |sync| {
        sync["rooms"]["invite"].get(&room).is_none() && sync["rooms"]["leave"].get(&room).is_some()
    })
    .await;
    // Without an invite, the private room stays closed to Bob.
    let (status, body) = join(&pair.b, &bob, &room).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

/// A `make_join` of `user` into `room` on `resident`, signed by `origin`, asking for `versions`.
async fn make_join(
    resident: &FederatedServer,
    origin: &Origin<'_>,
    room: &str,
    user: &str,
    versions: &[&str],
) -> (u16, Value) {
    let query: Vec<String> = versions.iter().map(|v| format!("ver={v}")).collect();
    signed_request(
        resident,
        origin.name(),
        origin.key(),
        None,
        Method::GET,
        &format!(
            "/_matrix/federation/v1/make_join/{room}/{user}?{}",
            query.join("&")
        ),
        None,
    )
    .await
}

/// The event of a template answer, completed and signed by `origin`.
fn completed(origin: &Origin<'_>, answer: &Value) -> CanonicalJsonObject {
    let version = RoomVersionId::try_from(answer["room_version"].as_str().unwrap()).unwrap();
    let CanonicalJsonValue::Object(template) =
        CanonicalJsonValue::try_from(answer["event"].clone()).unwrap()
    else {
        panic!("no template: {answer}");
    };
    build_from_template(&version, template, origin.name(), origin.key())
        .unwrap()
        .into_json()
}

async fn send_join(
    resident: &FederatedServer,
    origin: &Origin<'_>,
    room: &str,
    event: &CanonicalJsonObject,
    query: &str,
) -> (u16, Value) {
    let event_id = roost::core::pdu::event_id(&RoomVersionId::V12, event)
        .map(|id| id.to_string())
        .unwrap_or_else(|_| "$unknown".to_owned());
    signed_request(
        resident,
        origin.name(),
        origin.key(),
        None,
        Method::PUT,
        &format!("/_matrix/federation/v2/send_join/{room}/{event_id}{query}"),
        Some(&serde_json::to_value(event).unwrap()),
    )
    .await
}

#[tokio::test]
async fn resident_endpoints_refuse_what_they_must() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let room = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "public_chat", "name": "Open", "room_version": "12" }),
    )
    .await;
    let b = Origin::new(&pair.b);
    let eve = b.user("eve");

    // A user of another server than the requesting one.
    let (status, body) = make_join(&pair.a, &b, &room, &alice.id, &["12"]).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // A room version the joining server does not speak.
    let (status, body) = make_join(&pair.a, &b, &room, &eve, &["10", "11"]).await;
    assert_eq!(
        (status, errcode(&body)),
        (400, "M_INCOMPATIBLE_ROOM_VERSION"),
        "{body}"
    );
    assert_eq!(body["room_version"], "12");
    // A room the server is not in.
    let unknown = format!("!nowhere:{}", pair.a.name);
    let (status, body) = make_join(&pair.a, &b, &unknown, &eve, &["12"]).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    // A banned user.
    let mallory = b.user("mallory");
    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/ban"),
            Some(&alice.token),
            json!({ "user_id": mallory }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = make_join(&pair.a, &b, &room, &mallory, &["12"]).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    // Unsigned requests.
    let (status, body) = pair
        .a
        .get(
            &format!("/_matrix/federation/v1/make_join/{room}/{eve}?ver=12"),
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");

    // A good template; then joins that are not what was signed.
    let (status, template) = make_join(&pair.a, &b, &room, &eve, &["12"]).await;
    assert_eq!(status, 200, "{template}");
    assert_eq!(template["room_version"], "12");
    assert_eq!(template["event"]["content"]["membership"], "join");
    let signed = completed(&b, &template);

    let mut unsigned = signed.clone();
    unsigned.remove("signatures");
    let (status, body) = send_join(&pair.a, &b, &room, &unsigned, "").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    let mut tampered = signed.clone();
    if let Some(CanonicalJsonValue::Object(content)) = tampered.get_mut("content") {
        content.insert("displayname".into(), "not what was signed".into());
    }
    let (status, body) = send_join(&pair.a, &b, &room, &tampered, "").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    let forger = unpublished_key();
    let forged = {
        let CanonicalJsonValue::Object(template) =
            CanonicalJsonValue::try_from(template["event"].clone()).unwrap()
        else {
            unreachable!()
        };
        build_from_template(&RoomVersionId::V12, template, b.name(), &forger)
            .unwrap()
            .into_json()
    };
    let (status, body) = send_join(&pair.a, &b, &room, &forged, "").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // A join of a user of another server than the one sending it (correctly signed by theirs).
    let a_origin = Origin::new(&pair.a);
    let zed = a_origin.user("zed");
    let someone_elses = {
        let CanonicalJsonValue::Object(mut template) =
            CanonicalJsonValue::try_from(template["event"].clone()).unwrap()
        else {
            unreachable!()
        };
        template.insert("sender".into(), zed.clone().into());
        template.insert("state_key".into(), zed.clone().into());
        build_from_template(
            &RoomVersionId::V12,
            template,
            a_origin.name(),
            a_origin.key(),
        )
        .unwrap()
        .into_json()
    };
    let (status, body) = send_join(&pair.a, &b, &room, &someone_elses, "").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    assert_eq!(membership(&pair.a, &room, &eve), None, "nothing was added");
    assert_eq!(membership(&pair.a, &room, &zed), None, "nothing was added");

    // The join as signed: taken, with the room's state; reduced on request.
    let (status, body) = send_join(&pair.a, &b, &room, &signed, "?omit_members=true").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(membership(&pair.a, &room, &eve).as_deref(), Some("join"));
    assert_eq!(body["members_omitted"], true);
    assert_eq!(body["origin"], pair.a.name.as_str());
    assert_eq!(body["servers_in_room"], json!([pair.a.name]));
    let state = body["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{body}");
    assert!(state.iter().all(|e| e["type"] != "m.room.member"), "{body}");
    let chain = body["auth_chain"].as_array().unwrap();
    assert!(
        chain
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.id.as_str()),
        "the creator's join authorises the power levels: {body}"
    );
    assert!(
        chain.iter().all(|e| !state.contains(e)),
        "nothing twice: {body}"
    );
    let (status, body) = send_join(&pair.a, &b, &room, &signed, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members_omitted"], false);
    assert!(
        body["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.member" && e["state_key"] == alice.id.as_str()),
        "{body}"
    );
}

#[tokio::test]
async fn invites_are_checked_before_they_are_signed() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = create_room(&pair.a, &alice, json!({ "preset": "private_chat" })).await;
    let room_id = RoomId::parse(&room).unwrap();
    let a = Origin::new(&pair.a);
    let invite = |target: &str| {
        crate::federation_forge::build(
            &pair.a,
            a.name(),
            a.key(),
            &room_id,
            crate::federation_forge::Draft::state(
                &alice.id,
                "m.room.member",
                target,
                json!({ "membership": "invite" }),
            ),
        )
    };
    let send_invite = |event_id: String, body: Value| {
        let pair = &pair;
        let a = &a;
        let room = room.clone();
        async move {
            signed_request(
                &pair.b,
                a.name(),
                a.key(),
                None,
                Method::PUT,
                &format!("/_matrix/federation/v2/invite/{room}/{event_id}"),
                Some(&body),
            )
            .await
        }
    };
    let good = invite(&bob.id);
    let create = services(&pair.a)
        .rooms
        .state_event(&room_id, &StateEventType::RoomCreate, "")
        .unwrap()
        .expect("the create event");
    let described = json!([create.json()]);
    let body = |version: &str, event: &CanonicalJsonObject| json!({ "room_version": version, "event": event, "invite_room_state": described });

    let (status, answer) = send_invite(good.event_id().to_string(), body("999", good.json())).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INCOMPATIBLE_ROOM_VERSION"),
        "{answer}"
    );
    let stranger = invite(&format!("@someone:{}", pair.a.name));
    let (status, answer) =
        send_invite(stranger.event_id().to_string(), body("12", stranger.json())).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    let mut tampered = good.json().clone();
    if let Some(CanonicalJsonValue::Object(content)) = tampered.get_mut("content") {
        content.insert("reason".into(), "added later".into());
    }
    let (status, answer) = send_invite(good.event_id().to_string(), body("12", &tampered)).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    let (status, answer) = send_invite("$elsewhere".into(), body("12", good.json())).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    // From room version 12 on, the room must be described by its create event.
    let undescribed =
        json!({ "room_version": "12", "event": good.json(), "invite_room_state": [] });
    let (status, answer) = send_invite(good.event_id().to_string(), undescribed).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    let mut forged_create = create.json().clone();
    forged_create.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(1u32.into()),
    );
    let misdescribed =
        json!({ "room_version": "12", "event": good.json(), "invite_room_state": [forged_create] });
    let (status, answer) = send_invite(good.event_id().to_string(), misdescribed).await;
    assert_eq!(
        (status, errcode(&answer)),
        (400, "M_INVALID_PARAM"),
        "{answer}"
    );
    assert_eq!(membership(&pair.b, &room, &bob.id), None, "nothing kept");

    // The real thing: signed by both servers, kept for Bob.
    let (status, answer) = send_invite(good.event_id().to_string(), body("12", good.json())).await;
    assert_eq!(status, 200, "{answer}");
    let signatures = answer["event"]["signatures"].as_object().unwrap();
    assert!(signatures.contains_key(pair.a.name.as_str()), "{answer}");
    assert!(signatures.contains_key(pair.b.name.as_str()), "{answer}");
    assert_eq!(
        membership(&pair.b, &room, &bob.id).as_deref(),
        Some("invite")
    );
}

#[tokio::test]
async fn restricted_joins_and_knocks_across_servers() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let dave = user(&pair.b, "dave").await;
    let lobby = create_room(&pair.a, &alice, json!({ "preset": "public_chat" })).await;
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/join/{lobby}?via={}", pair.a.name),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A room for members of the lobby: Alice's server names her as the authoriser of Bob's join
    // and countersigns it.
    let restricted = create_room(
        &pair.a,
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.join_rules",
                "content": {
                    "join_rule": "restricted",
                    "allow": [{ "type": "m.room_membership", "room_id": lobby }],
                },
            }],
        }),
    )
    .await;
    // Room IDs of version 12 name no server: the client says where to join through.
    let join_path = format!("/_matrix/client/v3/join/{restricted}?via={}", pair.a.name);
    let (status, body) = join(&pair.b, &bob, &restricted).await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    let (status, body) = pair.b.post(&join_path, Some(&bob.token), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        membership(&pair.a, &restricted, &bob.id).as_deref(),
        Some("join")
    );
    let room_id = RoomId::parse(&restricted).unwrap();
    let joined = services(&pair.b)
        .rooms
        .state_event(&room_id, &StateEventType::RoomMember, &bob.id)
        .unwrap()
        .expect("Bob's join");
    let content: Value = serde_json::from_str(joined.content().get()).unwrap();
    assert_eq!(
        content["join_authorised_via_users_server"],
        alice.id.as_str()
    );
    let CanonicalJsonValue::Object(signatures) = &joined.json()["signatures"] else {
        panic!("no signatures");
    };
    assert!(
        signatures.contains_key(pair.a.name.as_str()),
        "countersigned"
    );
    // Dave is in no room whose members may join.
    let (status, body) = pair.b.post(&join_path, Some(&dave.token), json!({})).await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // Knocks: Dave asks to be let into a knock room, sees his knock, retracts it, knocks again
    // and is let in.
    let knock_room = create_room(
        &pair.a,
        &alice,
        json!({
            "preset": "private_chat",
            "name": "Knock knock",
            "initial_state": [{ "type": "m.room.join_rules", "content": { "join_rule": "knock" } }],
        }),
    )
    .await;
    let knock_path = format!("/_matrix/client/v3/knock/{knock_room}?via={}", pair.a.name);
    let knock = |reason: &'static str| {
        pair.b
            .post(&knock_path, Some(&dave.token), json!({ "reason": reason }))
    };
    let (status, body) = knock("please").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], knock_room.as_str());
    assert_eq!(
        membership(&pair.a, &knock_room, &dave.id).as_deref(),
        Some("knock")
    );
    let sync = sync_until(&pair.b, &dave, |sync| {
        sync["rooms"]["knock"].get(&knock_room).is_some()
    })
    .await;
    let knock_state = &sync["rooms"]["knock"][&knock_room]["knock_state"]["events"];
    assert!(
        knock_state
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.name" && e["content"]["name"] == "Knock knock"),
        "the room as its server described it: {knock_state}"
    );
    let (status, body) = pair
        .b
        .post(
            &format!("/_matrix/client/v3/rooms/{knock_room}/leave"),
            Some(&dave.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        membership(&pair.a, &knock_room, &dave.id).as_deref(),
        Some("leave")
    );
    let (status, body) = knock("please, again").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/rooms/{knock_room}/invite"),
            Some(&alice.token),
            json!({ "user_id": dave.id }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        membership(&pair.b, &knock_room, &dave.id).as_deref(),
        Some("invite")
    );
    let (status, body) = join(&pair.b, &dave, &knock_room).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        membership(&pair.a, &knock_room, &dave.id).as_deref(),
        Some("join")
    );
}
