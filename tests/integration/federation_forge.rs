//! Acting as another server in tests: events built and signed with a test server's key (or a key
//! of our own) against what the receiving server knows of a room, and transactions pushed to it
//! with an `X-Matrix` header we sign ourselves.

use std::sync::Arc;

use axum::http::{self, HeaderValue, header};
use roost::core::pdu::{EventTemplate, build_event_referencing};
use roost::core::{Pdu, StateMap};
use roost::service::Services;
use ruma::api::federation::authentication::{ServerSignaturesInput, XMatrix};
use ruma::events::TimelineEventType;
use ruma::signatures::Ed25519KeyPair;
use ruma::{
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomId,
    ServerName, UInt, UserId,
};
use serde_json::{Value, json};

use crate::common::{TestServer, User};
use crate::federation_common::FederatedServer;

/// The in-process services of a test server.
pub fn services(server: &TestServer) -> Arc<Services> {
    server.server.as_ref().expect("running").services()
}

/// A key pair no server published.
pub fn unpublished_key() -> Ed25519KeyPair {
    let der = Ed25519KeyPair::generate();
    Ed25519KeyPair::from_der(&der, "forged".to_owned()).expect("the key")
}

/// What an event is, before it is built on the receiver's view of a room.
pub struct Draft<'a> {
    pub sender: &'a str,
    pub kind: &'a str,
    pub state_key: Option<&'a str>,
    pub content: Value,
    /// The events it follows; `None`: the receiver's forward extremities.
    pub prev_events: Option<Vec<OwnedEventId>>,
    /// Its depth; `None`: one more than the receiver's room.
    pub depth: Option<u64>,
    /// Its auth events; `None`: those the receiver's current state selects.
    pub auth_events: Option<Vec<OwnedEventId>>,
}

impl<'a> Draft<'a> {
    pub fn message(sender: &'a str, body: &str) -> Self {
        Self {
            sender,
            kind: "m.room.message",
            state_key: None,
            content: json!({ "msgtype": "m.text", "body": body }),
            prev_events: None,
            depth: None,
            auth_events: None,
        }
    }

    pub fn state(sender: &'a str, kind: &'a str, state_key: &'a str, content: Value) -> Self {
        Self {
            sender,
            kind,
            state_key: Some(state_key),
            content,
            prev_events: None,
            depth: None,
            auth_events: None,
        }
    }

    pub fn member(sender: &'a str, membership: &str) -> Self {
        Self::state(
            sender,
            "m.room.member",
            sender,
            json!({ "membership": membership }),
        )
    }

    /// Follows `prev` (instead of the receiver's extremities), one deeper.
    pub fn after(mut self, prev: &Pdu) -> Self {
        self.prev_events = Some(vec![prev.event_id().to_owned()]);
        self.depth = Some(u64::from(prev.depth()) + 1);
        self
    }

    /// Cites the auth events `other` cites (an event written on an older state).
    pub fn authorised_like(mut self, other: &Pdu) -> Self {
        self.auth_events = Some(other.auth_events().to_vec());
        self
    }
}

/// Builds an event of `origin`'s (signed with `key` under `origin`'s name) in a room of
/// `receiver`, on the receiver's current view: its extremities (or the draft's prev events),
/// the auth events its current state selects, the next depth.
pub fn build(
    receiver: &TestServer,
    origin: &ServerName,
    key: &Ed25519KeyPair,
    room_id: &RoomId,
    draft: Draft<'_>,
) -> Pdu {
    let services = services(receiver);
    let info = services.rooms.info(room_id).unwrap().expect("a known room");
    let state: Arc<StateMap> = services.rooms.current_state(room_id).unwrap();
    let mut template = EventTemplate {
        room_id: Some(room_id.to_owned()),
        sender: UserId::parse(draft.sender).unwrap(),
        kind: TimelineEventType::from(draft.kind),
        state_key: draft.state_key.map(str::to_owned),
        content: draft.content,
        prev_events: draft.prev_events.unwrap_or(info.extremities.clone()),
        auth_events: Vec::new(),
        depth: UInt::try_from(draft.depth.unwrap_or(info.depth + 1)).unwrap(),
        origin_server_ts: MilliSecondsSinceUnixEpoch(
            UInt::try_from(roost::util::now_ms()).unwrap(),
        ),
        redacts: None,
    };
    template.auth_events = match draft.auth_events {
        Some(auth_events) => auth_events,
        None => {
            roost::core::auth::select_auth_events(&info.room_version, &template, &state).unwrap()
        }
    };
    build_event_referencing(&info.room_version, template, origin, key, |id: &EventId| {
        services.rooms.pdu(id).ok().flatten()
    })
    .expect("the event builds")
}

/// An event as it goes over the wire.
pub fn wire(pdu: &Pdu) -> Value {
    serde_json::to_value(pdu.json()).unwrap()
}

/// A request to `receiver` signed as `origin` with `key`, naming `destination` (the receiver
/// when `None`). Returns the status and the JSON answer.
pub async fn signed_request(
    receiver: &FederatedServer,
    origin: &ServerName,
    key: &Ed25519KeyPair,
    destination: Option<&ServerName>,
    method: http::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let request = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .body(bytes.clone())
        .unwrap();
    let destination = destination.unwrap_or(&receiver.name).to_owned();
    let authorization = XMatrix::try_from_http_request(
        &request,
        ServerSignaturesInput::new(origin.to_owned(), destination, key),
    )
    .unwrap();
    let response = receiver
        .http
        .request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            receiver.url(path),
        )
        .header(header::AUTHORIZATION, HeaderValue::from(&authorization))
        .header(header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await
        .expect("the request is sent");
    let status = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Pushes a transaction of `origin`'s PDUs and EDUs to `receiver`.
pub async fn send_transaction(
    receiver: &FederatedServer,
    origin: &ServerName,
    key: &Ed25519KeyPair,
    txn_id: &str,
    pdus: Vec<Value>,
    edus: Vec<Value>,
) -> (u16, Value) {
    let body = json!({
        "origin": origin,
        "origin_server_ts": roost::util::now_ms(),
        "pdus": pdus,
        "edus": edus,
    });
    signed_request(
        receiver,
        origin,
        key,
        None,
        http::Method::PUT,
        &format!("/_matrix/federation/v1/send/{txn_id}"),
        Some(&body),
    )
    .await
}

/// A server of a test acting through its own name and signing key.
pub struct Origin<'a> {
    pub server: &'a FederatedServer,
    services: Arc<Services>,
}

impl<'a> Origin<'a> {
    pub fn new(server: &'a FederatedServer) -> Self {
        Self {
            services: services(server),
            server,
        }
    }

    pub fn name(&self) -> &ServerName {
        &self.server.name
    }

    pub fn key(&self) -> &Ed25519KeyPair {
        &self.services.signing_key.pair
    }

    /// `@localpart:<this server>`.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server.name)
    }

    /// An event of ours in a room of `receiver`.
    pub fn event(&self, receiver: &TestServer, room_id: &RoomId, draft: Draft<'_>) -> Pdu {
        build(receiver, self.name(), self.key(), room_id, draft)
    }

    /// Pushes a transaction to `receiver`.
    pub async fn send(
        &self,
        receiver: &FederatedServer,
        txn_id: &str,
        pdus: &[&Pdu],
        edus: Vec<Value>,
    ) -> (u16, Value) {
        let pdus = pdus.iter().map(|p| wire(p)).collect();
        send_transaction(receiver, self.name(), self.key(), txn_id, pdus, edus).await
    }
}

/// The answer for one PDU of a transaction answer.
pub fn result_of<'v>(answer: &'v Value, pdu: &Pdu) -> &'v Value {
    &answer["pdus"][pdu.event_id().as_str()]
}

/// Asserts that a PDU was taken.
pub fn assert_taken(answer: &Value, pdu: &Pdu) {
    assert_eq!(result_of(answer, pdu), &json!({}), "{answer}");
}

/// Asserts that a PDU was refused (dropped or rejected).
pub fn assert_refused(answer: &Value, pdu: &Pdu) {
    assert!(result_of(answer, pdu)["error"].is_string(), "{answer}");
}

/// A public room of a local user of `server`, with the room version given.
pub async fn public_room(server: &TestServer, creator: &User, version: &str) -> OwnedRoomId {
    let room = crate::common::create_room(
        server,
        creator,
        json!({ "preset": "public_chat", "room_version": version, "name": "lobby" }),
    )
    .await;
    OwnedRoomId::try_from(room).unwrap()
}

/// The bodies of the room's messages as `user` reads them (`/messages`, oldest first).
pub async fn message_bodies(server: &TestServer, user: &User, room_id: &RoomId) -> Vec<String> {
    let (status, page) = server
        .get(
            &format!("/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=100"),
            Some(&user.token),
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let mut bodies: Vec<String> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["content"]["body"].as_str().unwrap_or("").to_owned())
        .collect();
    bodies.reverse();
    bodies
}

/// What an attack must leave alone: the room's current state, forward extremities and timeline.
#[derive(Debug, PartialEq)]
pub struct RoomPicture {
    pub state: StateMap,
    pub extremities: Vec<OwnedEventId>,
    pub timeline: Vec<OwnedEventId>,
}

pub fn picture(server: &TestServer, room_id: &RoomId) -> RoomPicture {
    let services = services(server);
    let info = services.rooms.info(room_id).unwrap().unwrap();
    RoomPicture {
        state: (*services.rooms.current_state(room_id).unwrap()).clone(),
        extremities: info.extremities,
        timeline: services
            .rooms
            .timeline_range(room_id, 0, u64::MAX, false, 10_000)
            .unwrap()
            .into_iter()
            .map(|(_, id)| id)
            .collect(),
    }
}

/// Replaces the content of a signed event (its signature stays, its hash no longer matches).
pub fn with_content(pdu: &Pdu, content: Value) -> Value {
    let mut json: CanonicalJsonObject = pdu.json().clone();
    json.insert("content".into(), serde_json::from_value(content).unwrap());
    serde_json::to_value(json).unwrap()
}
