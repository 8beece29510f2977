//! Test helpers: the spec's test signing key, and rooms built event by event with real hashes,
//! signatures and auth checks.

use std::collections::HashMap;

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomVersionId, UInt, UserId,
    events::TimelineEventType,
    room_version_rules::RoomIdFormatVersion,
    serde::{Base64, base64::Standard},
    signatures::Ed25519KeyPair,
};
use serde_json::{Value, json};

use crate::core::{
    Error, EventTemplate, Pdu, StateMap, auth,
    pdu::{build_event, build_event_referencing},
};

/// The signing key seed of the spec's test vectors (appendices, "Cryptographic Test Vectors").
pub const SPEC_SEED: &str = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1";

/// The key `ed25519:1` of server `domain` in the spec's test vectors.
pub fn spec_key() -> Ed25519KeyPair {
    key_from_seed(SPEC_SEED)
}

/// An ed25519 key pair from a base64 seed, wrapped in the PKCS#8 v1 DER ruma reads.
pub fn key_from_seed(seed: &str) -> Ed25519KeyPair {
    let seed = Base64::<Standard, Vec<u8>>::parse(seed)
        .unwrap()
        .into_inner();
    assert_eq!(seed.len(), 32);
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    Ed25519KeyPair::from_der(&der, "1".to_owned()).unwrap()
}

pub fn user(name: &str) -> OwnedUserId {
    UserId::parse(format!("@{name}:{SERVER}")).unwrap()
}

/// The server name all test users live on.
pub const SERVER: &str = "roost.test";

/// The tip of one line of history: its state, extremities and depth.
#[derive(Clone, Debug)]
pub struct Branch {
    pub state: StateMap,
    pub prev_events: Vec<OwnedEventId>,
    pub depth: u64,
}

/// A room whose events are built, signed and auth-checked for real.
pub struct TestRoom {
    pub version: RoomVersionId,
    pub room_id: OwnedRoomId,
    pub pdus: HashMap<OwnedEventId, Pdu>,
    pub main: Branch,
    server: OwnedServerName,
    key: Ed25519KeyPair,
    clock: u64,
}

impl TestRoom {
    /// A room created by `creator`, who has joined; no power levels or join rules yet.
    pub fn new(version: RoomVersionId, creator: &UserId) -> Self {
        let server: OwnedServerName = SERVER.try_into().unwrap();
        let key = spec_key();
        let rules = version.rules().unwrap();
        let room_id = (rules.room_id_format == RoomIdFormatVersion::V1)
            .then(|| OwnedRoomId::try_from(format!("!opaque:{SERVER}")).unwrap());
        let mut content = json!({ "room_version": version.as_str() });
        if !rules.authorization.use_room_create_sender {
            content["creator"] = json!(creator);
        }
        let create = build_event(
            &version,
            EventTemplate {
                room_id,
                sender: creator.to_owned(),
                kind: TimelineEventType::RoomCreate,
                state_key: Some(String::new()),
                content,
                prev_events: vec![],
                auth_events: vec![],
                depth: UInt::MIN,
                origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(1_000u32)),
                redacts: None,
            },
            &server,
            &key,
        )
        .unwrap();
        let main = Branch {
            state: StateMap::from([(create.state_entry().unwrap(), create.event_id().to_owned())]),
            prev_events: vec![create.event_id().to_owned()],
            depth: 0,
        };
        let mut room = Self {
            version,
            room_id: create.room_id().to_owned(),
            pdus: HashMap::from([(create.event_id().to_owned(), create)]),
            main,
            server,
            key,
            clock: 1_000,
        };
        room.send(
            creator,
            "m.room.member",
            Some(creator.as_str()),
            json!({"membership": "join"}),
        )
        .unwrap();
        room
    }

    /// The create event's ID.
    pub fn create_event_id(&self) -> OwnedEventId {
        self.pdus
            .values()
            .find(|pdu| *pdu.kind() == TimelineEventType::RoomCreate)
            .map(|pdu| pdu.event_id().to_owned())
            .unwrap()
    }

    pub fn get(&self, event_id: &EventId) -> Option<&Pdu> {
        self.pdus.get(event_id)
    }

    /// Appends an event to the main branch; an auth failure leaves the room unchanged.
    pub fn send(
        &mut self,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<OwnedEventId, Error> {
        let mut main = self.main.clone();
        let event_id = self.append(&mut main, sender, kind, state_key, content)?;
        self.main = main;
        Ok(event_id)
    }

    /// Appends an event to a branch, at the next tick of the room's clock.
    pub fn append(
        &mut self,
        branch: &mut Branch,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<OwnedEventId, Error> {
        self.clock += 1;
        let ts = self.clock;
        self.append_at(branch, ts, sender, kind, state_key, content)
    }

    /// Appends an event with a given timestamp to a branch: builds it with the auth events the
    /// branch state selects, checks it against that state, then stores it and moves the branch.
    pub fn append_at(
        &mut self,
        branch: &mut Branch,
        ts: u64,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<OwnedEventId, Error> {
        let pdu = self.build(branch, ts, sender, kind, state_key, content)?;
        auth::check(&pdu, &branch.state, |id| self.pdus.get(id))?;
        let event_id = pdu.event_id().to_owned();
        if let Some(entry) = pdu.state_entry() {
            branch.state.insert(entry, event_id.clone());
        }
        branch.prev_events = vec![event_id.clone()];
        branch.depth += 1;
        self.pdus.insert(event_id.clone(), pdu);
        Ok(event_id)
    }

    /// Builds (but neither checks nor stores) an event on a branch.
    pub fn build(
        &self,
        branch: &Branch,
        ts: u64,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<Pdu, Error> {
        self.sign(self.template(branch, ts, sender, kind, state_key, content)?)
    }

    /// The template of an event on a branch, with the auth events the branch state selects.
    pub fn template(
        &self,
        branch: &Branch,
        ts: u64,
        sender: &UserId,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<EventTemplate, Error> {
        let mut template = EventTemplate {
            room_id: Some(self.room_id.clone()),
            sender: sender.to_owned(),
            kind: TimelineEventType::from(kind),
            state_key: state_key.map(str::to_owned),
            content,
            prev_events: branch.prev_events.clone(),
            auth_events: vec![],
            depth: UInt::try_from(branch.depth + 1).unwrap(),
            origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::try_from(ts).unwrap()),
            redacts: None,
        };
        template.auth_events = auth::select_auth_events(&self.version, &template, &branch.state)?;
        Ok(template)
    }

    /// Hashes and signs a template with the test server's key (referencing the room's events
    /// with their reference hashes in room versions 1 and 2).
    pub fn sign(&self, template: EventTemplate) -> Result<Pdu, Error> {
        build_event_referencing(&self.version, template, &self.server, &self.key, |id| {
            self.pdus.get(id)
        })
    }
}
