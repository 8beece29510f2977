//! Stored events (PDUs): parsing, building (content hash, signature, event ID) and redaction.
//!
//! A [`Pdu`] keeps the full canonical JSON object it came from, so nothing is lost when the event
//! is relayed over federation, next to the parsed fields the auth rules and services need.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, ServerName, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{RoomIdFormatVersion, RoomVersionRules},
    signatures::{Ed25519KeyPair, JsonError, PublicKeyMap, Verified},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::core::{Error, room_version};

/// The largest event allowed, in bytes of canonical JSON with signatures (client-server API,
/// "Size limits").
pub const MAX_PDU_BYTES: usize = 65_536;

/// The most `prev_events` an event may reference.
pub const MAX_PREV_EVENTS: usize = 20;

/// The most `auth_events` an event may reference.
pub const MAX_AUTH_EVENTS: usize = 10;

/// A persistent data unit: one event of a room's DAG, as stored and relayed.
///
/// Fields are read through accessors so that they can never disagree with [`Pdu::json`].
/// `Debug` leaves the content out: events must not leak message bodies into logs.
#[derive(Clone)]
pub struct Pdu {
    room_version: RoomVersionId,
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    depth: UInt,
    redacts: Option<OwnedEventId>,
    json: CanonicalJsonObject,
    rejected: bool,
}

impl Pdu {
    /// Parses the canonical JSON object of an event whose ID is already known (we built it, or
    /// it was computed with [`reference_event_id`]).
    ///
    /// Checks that every required field is present and well-typed; does not check hashes,
    /// signatures or authorisation.
    pub fn from_canonical(
        room_version: RoomVersionId,
        event_id: OwnedEventId,
        json: CanonicalJsonObject,
    ) -> Result<Self, Error> {
        let rules = room_version::rules(&room_version)?;
        let kind = TimelineEventType::from(required_str(&json, "type")?);
        let state_key = optional_str(&json, "state_key")?.map(str::to_owned);
        let room_id = parse_room_id(&json, &kind, state_key.as_deref(), &event_id)?;
        let redacts = parse_redacts(&json, &kind, &rules)?;
        Ok(Self {
            sender: parse_id("sender", required_str(&json, "sender")?)?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(required_uint(&json, "origin_server_ts")?),
            content: raw_content(&json)?,
            prev_events: event_id_list(&json, "prev_events")?,
            auth_events: event_id_list(&json, "auth_events")?,
            depth: required_uint(&json, "depth")?,
            room_version,
            event_id,
            room_id,
            kind,
            state_key,
            redacts,
            json,
            rejected: false,
        })
    }

    /// Parses an event received over federation: its ID is its reference hash.
    pub fn from_federation(
        room_version: RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Self, Error> {
        let event_id = reference_event_id(&room_version, &json)?;
        Self::from_canonical(room_version, event_id, json)
    }

    /// The same event, marked as rejected (or not) by the checks on receipt.
    pub fn with_rejected(mut self, rejected: bool) -> Self {
        self.rejected = rejected;
        self
    }

    /// The event with its content and non-essential keys stripped, as the room version says.
    pub fn redacted(&self) -> Result<Self, Error> {
        let json = redact(&self.room_version, self.json.clone())?;
        let pdu = Self::from_canonical(self.room_version.clone(), self.event_id.clone(), json)?;
        Ok(pdu.with_rejected(self.rejected))
    }

    /// The version of the room the event belongs to.
    pub fn room_version(&self) -> &RoomVersionId {
        &self.room_version
    }

    /// The event ID (the reference hash, `$`-prefixed).
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// The room ID. For a room version 12 `m.room.create` event, which has no `room_id` field,
    /// this is the ID derived from its event ID.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }

    /// The user who sent the event.
    pub fn sender(&self) -> &UserId {
        &self.sender
    }

    /// When the sender's server says it created the event.
    pub fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    /// The event type.
    pub fn kind(&self) -> &TimelineEventType {
        &self.kind
    }

    /// The event content, as canonical JSON.
    pub fn content(&self) -> &RawValue {
        &self.content
    }

    /// The state key, for state events.
    pub fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    /// The `(type, state_key)` entry this event fills in the room state, for state events.
    pub fn state_entry(&self) -> Option<(StateEventType, String)> {
        let state_key = self.state_key.clone()?;
        Some((StateEventType::from(self.kind.to_string()), state_key))
    }

    /// The events this one follows in the room DAG.
    pub fn prev_events(&self) -> &[OwnedEventId] {
        &self.prev_events
    }

    /// The events that authorise this one.
    pub fn auth_events(&self) -> &[OwnedEventId] {
        &self.auth_events
    }

    /// The depth in the DAG.
    pub fn depth(&self) -> UInt {
        self.depth
    }

    /// For `m.room.redaction` events, the event redacted: the top-level `redacts` field up to
    /// room version 10, `content.redacts` from version 11 on.
    pub fn redacts(&self) -> Option<&EventId> {
        self.redacts.as_deref()
    }

    /// The full canonical JSON object, hashes and signatures included.
    pub fn json(&self) -> &CanonicalJsonObject {
        &self.json
    }

    /// Gives up the canonical JSON object.
    pub fn into_json(self) -> CanonicalJsonObject {
        self.json
    }

    /// Whether the event failed the checks on receipt.
    pub fn rejected(&self) -> bool {
        self.rejected
    }
}

impl std::fmt::Debug for Pdu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pdu")
            .field("event_id", &self.event_id)
            .field("room_id", &self.room_id)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("state_key", &self.state_key)
            .field("depth", &self.depth)
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    /// `None` when the JSON has no `room_id` (a room version 12 create event): the auth rules
    /// require exactly that.
    fn room_id(&self) -> Option<&RoomId> {
        self.json.contains_key("room_id").then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        self.rejected
    }
}

/// The storage form: the canonical JSON plus what is not in it.
#[derive(Serialize)]
struct StoredPduRef<'a> {
    room_version: &'a RoomVersionId,
    event_id: &'a EventId,
    rejected: bool,
    pdu: &'a CanonicalJsonObject,
}

#[derive(Deserialize)]
struct StoredPdu {
    room_version: RoomVersionId,
    event_id: OwnedEventId,
    #[serde(default)]
    rejected: bool,
    pdu: CanonicalJsonObject,
}

impl Serialize for Pdu {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredPduRef {
            room_version: &self.room_version,
            event_id: &self.event_id,
            rejected: self.rejected,
            pdu: &self.json,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Pdu {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredPdu::deserialize(deserializer)?;
        Pdu::from_canonical(stored.room_version, stored.event_id, stored.pdu)
            .map(|pdu| pdu.with_rejected(stored.rejected))
            .map_err(serde::de::Error::custom)
    }
}

/// What the caller decides about a new event; [`build_event`] adds hashes, signature and ID.
#[derive(Clone, Debug)]
pub struct EventTemplate {
    /// The room. `None` only for a room version 12 `m.room.create` event, whose hash names the
    /// room; required otherwise (`!opaque:server` up to version 11, `!hash` from 12).
    pub room_id: Option<OwnedRoomId>,
    /// The sender, a user of the signing server.
    pub sender: OwnedUserId,
    /// The event type.
    pub kind: TimelineEventType,
    /// The state key, for state events.
    pub state_key: Option<String>,
    /// The content; must be a JSON object representable as canonical JSON (no floats).
    pub content: serde_json::Value,
    /// The forward extremities this event follows (at most [`MAX_PREV_EVENTS`]).
    pub prev_events: Vec<OwnedEventId>,
    /// The auth events, see [`crate::core::auth::select_auth_events`] (at most
    /// [`MAX_AUTH_EVENTS`]).
    pub auth_events: Vec<OwnedEventId>,
    /// One more than the largest depth of the `prev_events`.
    pub depth: UInt,
    /// The creation time.
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    /// For `m.room.redaction`: the event redacted. Placed where the room version wants it.
    pub redacts: Option<OwnedEventId>,
}

/// Builds a new event of ours: checks the template, adds the content hash and our signature,
/// enforces the size limit and computes the event ID (and, for a room version 12 create event,
/// the room ID).
pub fn build_event(
    room_version: &RoomVersionId,
    template: EventTemplate,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
) -> Result<Pdu, Error> {
    let rules = room_version::rules(room_version)?;
    check_template(&rules, &template, server_name)?;
    let mut object = template_object(&rules, template)?;
    hash_and_sign_with(&rules, server_name, key, &mut object)?;
    check_size(&object)?;
    let event_id = reference_event_id_with(&rules, &object)?;
    Pdu::from_canonical(room_version.clone(), event_id, object)
}

/// Adds the content hash (`hashes.sha256`) and our signature to an event object, in place.
pub fn hash_and_sign(
    room_version: &RoomVersionId,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
    object: &mut CanonicalJsonObject,
) -> Result<(), Error> {
    hash_and_sign_with(
        &room_version::rules(room_version)?,
        server_name,
        key,
        object,
    )
}

/// The event ID of an event object: `$` + its reference hash (URL-safe unpadded base64).
pub fn reference_event_id(
    room_version: &RoomVersionId,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    reference_event_id_with(&room_version::rules(room_version)?, object)
}

/// Checks the signatures and the content hash of an event received over federation, with the
/// public keys of the servers that must have signed it (the sender's server, and for a restricted
/// join the server of `join_authorised_via_users_server`).
///
/// [`Verified::Signatures`] means the signatures are good but the content hash is not: the event
/// must then be redacted before it is used.
pub fn verify_event(
    room_version: &RoomVersionId,
    object: &CanonicalJsonObject,
    public_keys: &PublicKeyMap,
) -> Result<Verified, Error> {
    let rules = room_version::rules(room_version)?;
    ruma::signatures::verify_event(public_keys, object, &rules)
        .map_err(|e| Error::InvalidSignature(e.to_string()))
}

/// The room ID a room version 12 create event names: its event ID with `!` for `$`.
pub fn room_id_from_create_event_id(event_id: &EventId) -> Result<OwnedRoomId, Error> {
    if event_id.server_name().is_some() {
        return Err(invalid("event_id", "not a reference hash"));
    }
    RoomId::new_v2(event_id.localpart()).map_err(|e| invalid("room_id", e))
}

/// Redacts an event object per the room version's redaction algorithm.
pub fn redact(
    room_version: &RoomVersionId,
    object: CanonicalJsonObject,
) -> Result<CanonicalJsonObject, Error> {
    let rules = room_version::rules(room_version)?;
    Ok(ruma::canonical_json::redact(
        object,
        &rules.redaction,
        None,
    )?)
}

/// The size of an object as canonical JSON, in bytes.
pub fn canonical_size(object: &CanonicalJsonObject) -> Result<usize, Error> {
    serde_json::to_vec(object)
        .map(|bytes| bytes.len())
        .map_err(|e| Error::CanonicalJson(e.to_string()))
}

fn check_size(object: &CanonicalJsonObject) -> Result<(), Error> {
    let size = canonical_size(object)?;
    if size > MAX_PDU_BYTES {
        return Err(Error::TooLarge { size });
    }
    Ok(())
}

fn hash_and_sign_with(
    rules: &RoomVersionRules,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
    object: &mut CanonicalJsonObject,
) -> Result<(), Error> {
    ruma::signatures::hash_and_sign_event(server_name.as_str(), key, object, &rules.redaction)
        .map_err(|e| json_error(e, object))
}

fn reference_event_id_with(
    rules: &RoomVersionRules,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    let hash =
        ruma::signatures::reference_hash(object, rules).map_err(|e| json_error(e, object))?;
    EventId::new_v2_or_v3(&hash).map_err(|e| invalid("event_id", e))
}

/// Maps a ruma-signatures error; its size check (65,535 bytes, on the hashed form) surfaces as
/// our [`Error::TooLarge`].
fn json_error(error: JsonError, object: &CanonicalJsonObject) -> Error {
    match error {
        JsonError::PduTooLarge => Error::TooLarge {
            size: canonical_size(object).unwrap_or(usize::MAX),
        },
        other => Error::CanonicalJson(other.to_string()),
    }
}

/// Whether this is the room's `m.room.create` event.
fn is_create(kind: &TimelineEventType, state_key: Option<&str>) -> bool {
    *kind == TimelineEventType::RoomCreate && state_key == Some("")
}

fn check_template(
    rules: &RoomVersionRules,
    template: &EventTemplate,
    server_name: &ServerName,
) -> Result<(), Error> {
    if template.sender.server_name() != server_name {
        return Err(invalid("sender", "not a user of the signing server"));
    }
    check_template_room_id(rules, template)?;
    if template.prev_events.len() > MAX_PREV_EVENTS {
        return Err(invalid("prev_events", "too many"));
    }
    if template.auth_events.len() > MAX_AUTH_EVENTS {
        return Err(invalid("auth_events", "too many"));
    }
    if template.redacts.is_some() && template.kind != TimelineEventType::RoomRedaction {
        return Err(invalid("redacts", "only m.room.redaction events redact"));
    }
    Ok(())
}

/// The room ID must be absent exactly for a version 12 create event, and have the version's
/// format otherwise.
fn check_template_room_id(rules: &RoomVersionRules, template: &EventTemplate) -> Result<(), Error> {
    let hashed_ids = rules.room_id_format == RoomIdFormatVersion::V2;
    let derived = hashed_ids && is_create(&template.kind, template.state_key.as_deref());
    match &template.room_id {
        None if derived => Ok(()),
        None => Err(Error::MissingField("room_id")),
        Some(_) if derived => Err(invalid(
            "room_id",
            "this room version derives the room ID from the create event",
        )),
        Some(room_id) if room_id.server_name().is_some() == hashed_ids => {
            Err(invalid("room_id", "format does not match the room version"))
        }
        Some(_) => Ok(()),
    }
}

/// The unsigned event object: exactly the fields of the federation event format.
fn template_object(
    rules: &RoomVersionRules,
    template: EventTemplate,
) -> Result<CanonicalJsonObject, Error> {
    let mut content = match CanonicalJsonValue::try_from(template.content)? {
        CanonicalJsonValue::Object(content) => content,
        _ => return Err(invalid("content", "not a JSON object")),
    };
    let mut object = CanonicalJsonObject::new();
    if let Some(redacts) = template.redacts {
        let target = if rules.redaction.content_field_redacts {
            &mut content
        } else {
            &mut object
        };
        target.insert("redacts".into(), redacts.to_string().into());
    }
    if let Some(room_id) = template.room_id {
        object.insert("room_id".into(), room_id.to_string().into());
    }
    if let Some(state_key) = template.state_key {
        object.insert("state_key".into(), state_key.into());
    }
    object.insert("sender".into(), template.sender.to_string().into());
    object.insert("type".into(), template.kind.to_string().into());
    object.insert("content".into(), content.into());
    object.insert("prev_events".into(), id_array(template.prev_events));
    object.insert("auth_events".into(), id_array(template.auth_events));
    object.insert("depth".into(), template.depth.into());
    object.insert(
        "origin_server_ts".into(),
        template.origin_server_ts.get().into(),
    );
    Ok(object)
}

fn id_array(ids: Vec<OwnedEventId>) -> CanonicalJsonValue {
    CanonicalJsonValue::Array(ids.into_iter().map(|id| id.to_string().into()).collect())
}

fn invalid(field: &'static str, reason: impl ToString) -> Error {
    Error::InvalidField {
        field,
        reason: reason.to_string(),
    }
}

fn optional_str<'a>(
    json: &'a CanonicalJsonObject,
    field: &'static str,
) -> Result<Option<&'a str>, Error> {
    match json.get(field) {
        None => Ok(None),
        Some(CanonicalJsonValue::String(value)) => Ok(Some(value)),
        Some(_) => Err(invalid(field, "not a string")),
    }
}

fn required_str<'a>(json: &'a CanonicalJsonObject, field: &'static str) -> Result<&'a str, Error> {
    optional_str(json, field)?.ok_or(Error::MissingField(field))
}

fn required_uint(json: &CanonicalJsonObject, field: &'static str) -> Result<UInt, Error> {
    let value = json.get(field).ok_or(Error::MissingField(field))?;
    let int = value
        .as_integer()
        .ok_or_else(|| invalid(field, "not an integer"))?;
    UInt::try_from(i64::from(int)).map_err(|_| invalid(field, "negative"))
}

fn parse_id<T>(field: &'static str, value: &str) -> Result<T, Error>
where
    T: for<'a> TryFrom<&'a str, Error = ruma::IdParseError>,
{
    T::try_from(value).map_err(|e| invalid(field, e))
}

fn event_id_list(
    json: &CanonicalJsonObject,
    field: &'static str,
) -> Result<Vec<OwnedEventId>, Error> {
    let items = json
        .get(field)
        .ok_or(Error::MissingField(field))?
        .as_array()
        .ok_or_else(|| invalid(field, "not an array"))?;
    items
        .iter()
        .map(|item| {
            let id = item
                .as_str()
                .ok_or_else(|| invalid(field, "not a string"))?;
            parse_id(field, id)
        })
        .collect()
}

/// The `room_id` field, or for a create event without one (room version 12), the room ID its
/// event ID names.
fn parse_room_id(
    json: &CanonicalJsonObject,
    kind: &TimelineEventType,
    state_key: Option<&str>,
    event_id: &EventId,
) -> Result<OwnedRoomId, Error> {
    match optional_str(json, "room_id")? {
        Some(room_id) => parse_id("room_id", room_id),
        None if is_create(kind, state_key) => room_id_from_create_event_id(event_id),
        None => Err(Error::MissingField("room_id")),
    }
}

/// The redacted event of an `m.room.redaction`, from where the room version puts it.
fn parse_redacts(
    json: &CanonicalJsonObject,
    kind: &TimelineEventType,
    rules: &RoomVersionRules,
) -> Result<Option<OwnedEventId>, Error> {
    if *kind != TimelineEventType::RoomRedaction {
        return Ok(None);
    }
    let holder = if rules.redaction.content_field_redacts {
        json.get("content").and_then(CanonicalJsonValue::as_object)
    } else {
        Some(json)
    };
    let value = holder.and_then(|holder| holder.get("redacts"));
    match value.map(|value| value.as_str()) {
        None => Ok(None),
        Some(Some(id)) => parse_id("redacts", id).map(Some),
        Some(None) => Err(invalid("redacts", "not a string")),
    }
}

/// The content as a raw JSON value; must be an object.
fn raw_content(json: &CanonicalJsonObject) -> Result<Box<RawValue>, Error> {
    let content = json.get("content").ok_or(Error::MissingField("content"))?;
    if !content.is_object() {
        return Err(invalid("content", "not a JSON object"));
    }
    serde_json::value::to_raw_value(content).map_err(|e| Error::CanonicalJson(e.to_string()))
}

#[cfg(test)]
mod tests;
