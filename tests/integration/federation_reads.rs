//! Reading rooms across servers: a late joiner paging `/messages` back through history its
//! server backfills from the room's other server, and the read endpoints other servers call
//! (`/event`, `/state`, `/state_ids`, `/event_auth`, `/backfill`, `/get_missing_events`,
//! `/timestamp_to_event`, `/publicRooms`, `/hierarchy`, `/openid/userinfo`), signed as a real
//! server, with what history visibility and server ACLs let that server see.

use std::collections::HashSet;

use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, send_text, user};
use crate::federation_common::{FederatedPair, FederatedServer};
use crate::federation_forge::{Draft, Origin, signed_request};

/// Pages a paginating client would ask for at most, before the test gives up.
const MAX_PAGES: usize = 100;

/// Sends `count` messages `"{prefix} {i}"`; returns their event IDs.
async fn send_messages(
    server: &TestServer,
    u: &User,
    room: &str,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let (status, body) = send_text(
            server,
            u,
            room,
            &format!("{prefix}-{i}"),
            &format!("{prefix} {i}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        ids.push(body["event_id"].as_str().expect("event_id").to_owned());
    }
    ids
}

/// Joins `u` of `server` to `room` through `via`.
async fn join_via(server: &TestServer, u: &User, room: &str, via: &FederatedServer) {
    let (status, body) = server
        .post(
            &format!("/_matrix/client/v3/join/{room}?via={}", via.name),
            Some(&u.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A public, published room of `u` with the given extra `createRoom` fields.
async fn public_room(server: &TestServer, u: &User, name: &str, extra: Value) -> String {
    let mut body = json!({
        "preset": "public_chat",
        "visibility": "public",
        "name": name,
        "room_version": "12",
    });
    if let (Some(fields), Some(more)) = (body.as_object_mut(), extra.as_object()) {
        fields.extend(more.clone());
    }
    create_room(server, u, body).await
}

/// Every event of `room` as `u` pages `/messages` backwards from now, `limit` at a time, until
/// the server gives no more; the pages' `end` tokens too.
async fn page_back(
    server: &TestServer,
    u: &User,
    room: &str,
    limit: usize,
) -> (Vec<Value>, Vec<String>) {
    let mut events = Vec::new();
    let mut tokens = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit={limit}");
        if let Some(token) = &from {
            path.push_str(&format!("&from={token}"));
        }
        let (status, page) = server.get(&path, Some(&u.token)).await;
        assert_eq!(status, 200, "{page}");
        events.extend(page["chunk"].as_array().expect("chunk").iter().cloned());
        match page["end"].as_str() {
            Some(end) => {
                tokens.push(end.to_owned());
                from = Some(end.to_owned());
            }
            None => return (events, tokens),
        }
    }
    panic!("/messages never reached the start of {room}");
}

/// The bodies of the messages among `events`, in the order given.
fn bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn late_joiner_backfills_the_history() {
    let mut pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = public_room(&pair.a, &alice, "lobby", json!({})).await;
    send_messages(&pair.a, &alice, &room, "before", 60).await;
    join_via(&pair.b, &bob, &room, &pair.a).await;

    let (events, tokens) = page_back(&pair.b, &bob, &room, 7).await;
    // Newest first: Bob's join, then Alice's 60 messages, then the room's creation.
    let expected: Vec<String> = (0..60).rev().map(|i| format!("before {i}")).collect();
    assert_eq!(bodies(&events), expected);
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an event came twice");
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("m.room.member"))
    );
    assert_eq!(
        events.first().map(|e| e["state_key"].clone()),
        Some(json!(bob.id))
    );
    assert_eq!(
        events.last().map(|e| e["type"].clone()),
        Some(json!("m.room.create"))
    );
    assert!(
        tokens.iter().any(|t| t.starts_with('h')),
        "the history before the join was paged with its own tokens: {tokens:?}"
    );

    // Forwards from within the history: the rest of it, then the timeline from Bob's join.
    let middle = tokens
        .iter()
        .find(|t| t.starts_with('h'))
        .expect("a history token");
    let (status, page) = pair
        .b
        .get(
            &format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=200&from={middle}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let forwards = page["chunk"].as_array().expect("chunk").clone();
    let numbers: Vec<u32> = bodies(&forwards)
        .iter()
        .filter_map(|b| b.strip_prefix("before ")?.parse().ok())
        .collect();
    assert!(
        !numbers.is_empty() && numbers.windows(2).all(|w| w[0] + 1 == w[1]),
        "{numbers:?}"
    );
    assert_eq!(numbers.last(), Some(&59));
    assert!(
        forwards.iter().any(|e| e["state_key"] == bob.id.as_str()),
        "the timeline follows the history"
    );

    // A room whose history is for its members of the time only: Bob's server gets the earlier
    // events redacted (their place in the DAG) and Bob sees none of them.
    let private = public_room(
        &pair.a,
        &alice,
        "members only",
        json!({ "initial_state": [{
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": { "history_visibility": "joined" },
        }] }),
    )
    .await;
    send_messages(&pair.a, &alice, &private, "secret", 5).await;
    join_via(&pair.b, &bob, &private, &pair.a).await;
    let (events, _) = page_back(&pair.b, &bob, &private, 10).await;
    assert!(bodies(&events).is_empty(), "{events:?}");
    assert!(events.iter().any(|e| e["state_key"] == bob.id.as_str()));

    // The history is Bob's server's now: with Alice's server gone, the same pages come back.
    pair.a.stop().await;
    let (again, _) = page_back(&pair.b, &bob, &room, 25).await;
    let again_ids: Vec<&str> = again
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(again_ids, ids);
}

/// A request to `a` signed as `b`: (status, JSON answer).
async fn as_b(
    pair: &FederatedPair,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let b = Origin::new(&pair.b);
    signed_request(
        &pair.a,
        b.name(),
        b.key(),
        None,
        method,
        path,
        body.as_ref(),
    )
    .await
}

async fn get_as_b(pair: &FederatedPair, path: &str) -> (u16, Value) {
    as_b(pair, Method::GET, path, None).await
}

/// The `content.body` of the single PDU of an `/event` answer.
fn single_body(answer: &Value) -> Option<&str> {
    answer["pdus"].as_array()?.first()?["content"]["body"].as_str()
}

#[tokio::test]
async fn reads_follow_history_visibility_and_acls() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let shared = public_room(&pair.a, &alice, "lobby", json!({})).await;
    let shared_ids = send_messages(&pair.a, &alice, &shared, "shared", 3).await;
    let open = public_room(
        &pair.a,
        &alice,
        "reading room",
        json!({ "initial_state": [{
            "type": "m.room.history_visibility",
            "state_key": "",
            "content": { "history_visibility": "world_readable" },
        }] }),
    )
    .await;
    let open_ids = send_messages(&pair.a, &alice, &open, "open", 3).await;

    // Bob's server has no member in either room. The shared room's history is not for it.
    let m = &shared_ids[1];
    for path in [
        format!("/_matrix/federation/v1/event/{m}"),
        format!("/_matrix/federation/v1/state_ids/{shared}?event_id={m}"),
        format!("/_matrix/federation/v1/state/{shared}?event_id={m}"),
        format!("/_matrix/federation/v1/event_auth/{shared}/{m}"),
        format!("/_matrix/federation/v1/backfill/{shared}?v={m}&limit=5"),
        format!("/_matrix/federation/v1/timestamp_to_event/{shared}?ts=0&dir=f"),
    ] {
        let (status, body) = get_as_b(&pair, &path).await;
        assert_eq!(
            (status, errcode(&body)),
            (403, "M_FORBIDDEN"),
            "{path}: {body}"
        );
    }
    let missing = json!({ "earliest_events": [], "latest_events": [shared_ids[2]], "limit": 5 });
    let (status, body) = as_b(
        &pair,
        Method::POST,
        &format!("/_matrix/federation/v1/get_missing_events/{shared}"),
        Some(missing),
    )
    .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");

    // The world-readable room's is for anyone.
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/event/{}", open_ids[0]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(single_body(&body), Some("open 0"));
    let (status, body) = get_as_b(
        &pair,
        &format!(
            "/_matrix/federation/v1/backfill/{open}?v={}&limit=3",
            open_ids[2]
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let pdus = body["pdus"].as_array().expect("pdus");
    let backfilled: Vec<&str> = pdus
        .iter()
        .filter_map(|p| p["content"]["body"].as_str())
        .collect();
    assert_eq!(backfilled, ["open 2", "open 1", "open 0"]);
    let (status, body) = get_as_b(
        &pair,
        &format!(
            "/_matrix/federation/v1/state_ids/{open}?event_id={}",
            open_ids[0]
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!body["pdu_ids"].as_array().expect("pdu_ids").is_empty());

    // A server ACL that bans Bob's server closes the room to it.
    let (status, body) = pair
        .a
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/rooms/{open}/state/m.room.server_acl/"),
            Some(&alice.token),
            Some(json!({ "allow": ["*"], "deny": [pair.b.name], "allow_ip_literals": true })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/event/{}", open_ids[0]),
    )
    .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
}

#[tokio::test]
async fn read_endpoints_for_a_server_in_the_room() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let bob = user(&pair.b, "bob").await;
    let room = public_room(&pair.a, &alice, "lobby", json!({})).await;
    let ids = send_messages(&pair.a, &alice, &room, "m", 30).await;
    join_via(&pair.b, &bob, &room, &pair.a).await;
    let m = |i: usize| ids[i].as_str();

    // One event, and the state before it with its auth chain.
    let (status, body) = get_as_b(&pair, &format!("/_matrix/federation/v1/event/{}", m(5))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(single_body(&body), Some("m 5"));
    assert_eq!(body["origin"], pair.a.name.as_str());
    let (status, ids_answer) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/state_ids/{room}?event_id={}", m(5)),
    )
    .await;
    assert_eq!(status, 200, "{ids_answer}");
    let (status, state) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/state/{room}?event_id={}", m(5)),
    )
    .await;
    assert_eq!(status, 200, "{state}");
    let pdus = state["pdus"].as_array().expect("pdus");
    assert_eq!(
        pdus.len(),
        ids_answer["pdu_ids"].as_array().expect("pdu_ids").len()
    );
    let types: HashSet<&str> = pdus.iter().filter_map(|p| p["type"].as_str()).collect();
    for kind in [
        "m.room.create",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.member",
    ] {
        assert!(types.contains(kind), "{kind} in the state: {types:?}");
    }
    // The state before the message: Bob had not joined yet.
    assert!(!pdus.iter().any(|p| p["state_key"] == bob.id.as_str()));
    assert!(
        !state["auth_chain"]
            .as_array()
            .expect("auth_chain")
            .is_empty()
    );
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/event_auth/{room}/{}", m(5)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let chain = body["auth_chain"].as_array().expect("auth_chain");
    // Room version 12: the create event is named by the room ID, not cited as an auth event.
    for kind in ["m.room.power_levels", "m.room.member"] {
        assert!(chain.iter().any(|e| e["type"] == kind), "{kind}: {body}");
    }
    assert!(
        !chain.iter().any(|e| e["type"] == "m.room.message"),
        "{body}"
    );

    // History: back from an event (deepest first), and what lies between two events.
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/backfill/{room}?v={}&limit=5", m(20)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<&str> = body["pdus"]
        .as_array()
        .expect("pdus")
        .iter()
        .filter_map(|p| p["content"]["body"].as_str())
        .collect();
    assert_eq!(got, ["m 20", "m 19", "m 18", "m 17", "m 16"]);
    let request = json!({ "earliest_events": [m(10)], "latest_events": [m(20)], "limit": 5 });
    let (status, body) = as_b(
        &pair,
        Method::POST,
        &format!("/_matrix/federation/v1/get_missing_events/{room}"),
        Some(request),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<&str> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|p| p["content"]["body"].as_str())
        .collect();
    assert_eq!(got, ["m 15", "m 16", "m 17", "m 18", "m 19"]);
    let request = json!({ "earliest_events": [m(2)], "latest_events": [m(29)], "limit": 500 });
    let (status, body) = as_b(
        &pair,
        Method::POST,
        &format!("/_matrix/federation/v1/get_missing_events/{room}"),
        Some(request),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["events"].as_array().expect("events").len(),
        20,
        "capped"
    );

    // The event closest to a time.
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=f"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, first) = get_as_b(
        &pair,
        &format!(
            "/_matrix/federation/v1/event/{}",
            body["event_id"].as_str().unwrap_or("$x")
        ),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["pdus"][0]["type"], "m.room.create");
    let (status, body) = get_as_b(
        &pair,
        &format!(
            "/_matrix/federation/v1/timestamp_to_event/{room}?ts={}&dir=b",
            u64::MAX / 2
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["origin_server_ts"].as_u64().is_some());
    // A time inside the room's history, both ways, and times beyond either end.
    let (_, middle) = get_as_b(&pair, &format!("/_matrix/federation/v1/event/{}", m(15))).await;
    let ts = middle["pdus"][0]["origin_server_ts"].as_u64().expect("ts");
    for dir in ["f", "b"] {
        let (status, body) = get_as_b(
            &pair,
            &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={ts}&dir={dir}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        // That message, or one sent in the same millisecond.
        assert_eq!(body["origin_server_ts"].as_u64(), Some(ts), "{dir}: {body}");
    }
    for (ts, dir) in [(1, "b"), (u64::MAX / 2, "f")] {
        let (status, body) = get_as_b(
            &pair,
            &format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts={ts}&dir={dir}"),
        )
        .await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    }

    // Requests that are wrong.
    for (path, expected) in [
        (
            format!("/_matrix/federation/v1/backfill/{room}?limit=5"),
            (400, "M_MISSING_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/backfill/{room}?v={}", m(3)),
            (400, "M_MISSING_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/backfill/{room}?v=nope&limit=1"),
            (400, "M_INVALID_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/state_ids/{room}"),
            (400, "M_MISSING_PARAM"),
        ),
        (
            format!("/_matrix/federation/v1/timestamp_to_event/{room}?ts=0&dir=x"),
            (400, "M_INVALID_PARAM"),
        ),
        (
            "/_matrix/federation/v1/event/$unknown".to_owned(),
            (404, "M_NOT_FOUND"),
        ),
        (
            format!("/_matrix/federation/v1/event_auth/{room}/$unknown"),
            (404, "M_NOT_FOUND"),
        ),
        (
            "/_matrix/federation/v1/state_ids/!unknown:example.org?event_id=$x".to_owned(),
            (404, "M_NOT_FOUND"),
        ),
    ] {
        let (status, body) = get_as_b(&pair, &path).await;
        assert_eq!((status, errcode(&body)), expected, "{path}: {body}");
    }
    let (status, body) = pair
        .a
        .get(&format!("/_matrix/federation/v1/event/{}", m(5)), None)
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNAUTHORIZED"), "{body}");

    // An event the room's rules reject is never served: Bob cannot raise his own power.
    let b = Origin::new(&pair.b);
    let mut users = serde_json::Map::new();
    users.insert(bob.id.clone(), json!(100));
    let forged = b.event(
        &pair.a,
        &ruma::RoomId::parse(&room).unwrap(),
        Draft::state(
            &bob.id,
            "m.room.power_levels",
            "",
            json!({ "users": users }),
        ),
    );
    let (status, answer) = b
        .send(&pair.a, "forged-power", &[&forged], Vec::new())
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["pdus"][forged.event_id().as_str()]["error"].is_string(),
        "{answer}"
    );
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/event/{}", forged.event_id()),
    )
    .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
}

#[tokio::test]
async fn directory_hierarchy_and_openid() {
    let pair = FederatedPair::start().await;
    let alice = user(&pair.a, "alice").await;
    let lobby = public_room(&pair.a, &alice, "lobby", json!({})).await;
    let garden = public_room(&pair.a, &alice, "garden", json!({})).await;
    let secret = create_room(
        &pair.a,
        &alice,
        json!({ "preset": "private_chat", "name": "secret" }),
    )
    .await;
    let via = json!([pair.a.name]);
    let space = public_room(
        &pair.a,
        &alice,
        "the space",
        json!({
            "creation_content": { "type": "m.space" },
            "initial_state": [
                { "type": "m.space.child", "state_key": lobby, "content": { "via": via } },
                { "type": "m.space.child", "state_key": secret, "content": { "via": via } },
            ],
        }),
    )
    .await;

    // The published directory, whole, filtered and paged.
    let (status, body) = get_as_b(&pair, "/_matrix/federation/v1/publicRooms").await;
    assert_eq!(status, 200, "{body}");
    let listed: HashSet<&str> = body["chunk"]
        .as_array()
        .expect("chunk")
        .iter()
        .filter_map(|r| r["room_id"].as_str())
        .collect();
    for room in [&lobby, &garden, &space] {
        assert!(listed.contains(room.as_str()), "{room} listed: {body}");
    }
    assert!(!listed.contains(secret.as_str()));
    let filter = json!({ "filter": { "generic_search_term": "GARD" } });
    let (status, body) = as_b(
        &pair,
        Method::POST,
        "/_matrix/federation/v1/publicRooms",
        Some(filter),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunk"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(body["chunk"][0]["room_id"], garden.as_str());
    let (status, first) = get_as_b(&pair, "/_matrix/federation/v1/publicRooms?limit=1").await;
    assert_eq!(status, 200, "{first}");
    let next = first["next_batch"].as_str().expect("a next page");
    let (status, second) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/publicRooms?limit=1&since={next}"),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(first["chunk"][0]["room_id"], second["chunk"][0]["room_id"]);
    let (status, body) = get_as_b(&pair, "/_matrix/federation/v1/publicRooms?since=bogus").await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    // The space: its children, the private one named as inaccessible.
    let (status, body) =
        get_as_b(&pair, &format!("/_matrix/federation/v1/hierarchy/{space}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["room_id"], space.as_str());
    assert_eq!(body["room"]["room_type"], "m.space");
    assert_eq!(
        body["room"]["children_state"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    let children: Vec<&str> = body["children"]
        .as_array()
        .expect("children")
        .iter()
        .filter_map(|c| c["room_id"].as_str())
        .collect();
    assert_eq!(children, [lobby.as_str()]);
    assert_eq!(body["inaccessible_children"], json!([secret]));
    let (status, body) = get_as_b(
        &pair,
        &format!("/_matrix/federation/v1/hierarchy/{space}?suggested_only=true"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["children"], json!([]));
    for room in [secret.as_str(), "!unknown:example.org"] {
        let (status, body) =
            get_as_b(&pair, &format!("/_matrix/federation/v1/hierarchy/{room}")).await;
        assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"), "{body}");
    }

    // OpenID: a token of Alice's, exchanged (without a signature) for her user ID.
    let (status, token) = pair
        .a
        .post(
            &format!("/_matrix/client/v3/user/{}/openid/request_token", alice.id),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{token}");
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["matrix_server_name"], pair.a.name.as_str());
    assert_eq!(token["expires_in"], 3600);
    let access = token["access_token"].as_str().expect("access_token");
    let (status, body) = pair
        .a
        .get(
            &format!("/_matrix/federation/v1/openid/userinfo?access_token={access}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], alice.id.as_str());
    let (status, body) = pair
        .a
        .get(
            "/_matrix/federation/v1/openid/userinfo?access_token=nope",
            None,
        )
        .await;
    assert_eq!((status, errcode(&body)), (401, "M_UNKNOWN_TOKEN"), "{body}");
    let (status, body) = pair
        .a
        .get("/_matrix/federation/v1/openid/userinfo", None)
        .await;
    assert_eq!((status, errcode(&body)), (400, "M_MISSING_PARAM"), "{body}");
    // Tokens are for oneself only, and not access tokens.
    let (status, body) = pair
        .a
        .post(
            &format!(
                "/_matrix/client/v3/user/@someone:{}/openid/request_token",
                pair.a.name
            ),
            Some(&alice.token),
            json!({}),
        )
        .await;
    assert_eq!((status, errcode(&body)), (403, "M_FORBIDDEN"), "{body}");
    let (status, _) = pair
        .a
        .get("/_matrix/client/v3/account/whoami", Some(access))
        .await;
    assert_eq!(status, 401);
}
