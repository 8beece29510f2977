//! Stored events (PDUs): parsing every room version's event format, event IDs and redaction.
//! Building and signing events of ours is in [`build`] (re-exported here).
//!
//! A [`Pdu`] keeps the full canonical JSON object it came from, so nothing is lost when the event
//! is relayed over federation, next to the parsed fields the auth rules and services need.
//!
//! The formats differ in how events are named and referenced:
//!
//! - room versions 1 and 2: the event carries its ID (`$opaque:server`) in an `event_id` field,
//!   and `prev_events`/`auth_events` are `[event_id, {"sha256": reference hash}]` pairs;
//! - room version 3: the ID is `$` + the reference hash in standard unpadded base64, and events
//!   are referenced by ID alone;
//! - room version 4 on: the same with URL-safe unpadded base64.
//!
//! [`Pdu::prev_events`] and [`Pdu::auth_events`] are event IDs in every version.

mod build;

pub use build::{
    EventTemplate, build_event, build_event_referencing, build_from_template, hash_and_sign,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{JsonError, PublicKeyMap, Verified},
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::core::{Error, MAX_ID_BYTES, room_version};

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
    /// Parses the canonical JSON object of an event whose ID is already known (we built it, it
    /// was computed with [`event_id`], or the event was stored).
    ///
    /// Checks that every required field is present and well-typed in the room version's format
    /// (in versions 1 and 2, that the `event_id` field names the same ID); does not check the
    /// size, hashes, signatures or authorisation.
    pub fn from_canonical(
        room_version: RoomVersionId,
        event_id: OwnedEventId,
        json: CanonicalJsonObject,
    ) -> Result<Self, Error> {
        let rules = room_version::rules(&room_version)?;
        if rules.event_id_format == EventIdFormatVersion::V1
            && required_str(&json, "event_id")? != event_id.as_str()
        {
            return Err(invalid("event_id", "does not match the event's ID"));
        }
        let kind = TimelineEventType::from(required_str(&json, "type")?);
        let state_key = optional_str(&json, "state_key")?.map(str::to_owned);
        let room_id = parse_room_id(&json, &kind, state_key.as_deref(), &event_id)?;
        let redacts = parse_redacts(&json, &kind, &rules)?;
        Ok(Self {
            sender: parse_id("sender", required_str(&json, "sender")?)?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(required_uint(&json, "origin_server_ts")?),
            content: raw_content(&json)?,
            prev_events: event_references(&json, "prev_events", &rules)?,
            auth_events: event_references(&json, "auth_events", &rules)?,
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

    /// Parses an event received over federation (or from a peer's answer): checks the room
    /// version's event format and the size limit, names the event as its version does
    /// ([`event_id`]) and parses it.
    pub fn from_federation(
        room_version: RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Self, Error> {
        let rules = room_version::rules(&room_version)?;
        check_format(&rules, &json)?;
        let event_id = event_id_with(&rules, &json)?;
        Self::from_canonical(room_version, event_id, json)
    }

    /// The event's reference hash (unpadded base64, standard alphabet up to room version 3,
    /// URL-safe after): what room versions 1 and 2 put next to an event's ID where another event
    /// references it.
    pub fn reference_hash(&self) -> Result<String, Error> {
        let rules = room_version::rules(&self.room_version)?;
        ruma::signatures::reference_hash(&self.json, &rules).map_err(|e| json_error(e, &self.json))
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

    /// The event ID: `$opaque:server` in room versions 1 and 2, `$` + the reference hash after.
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

    /// The IDs of the events this one follows in the room DAG (without the reference hashes of
    /// room versions 1 and 2).
    pub fn prev_events(&self) -> &[OwnedEventId] {
        &self.prev_events
    }

    /// The IDs of the events that authorise this one (without the reference hashes of room
    /// versions 1 and 2).
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

/// Lets lookups hand out `Pdu`, `&Pdu` or `Arc<Pdu>` alike where a PDU's own fields (the depth
/// of state resolution v1, the reference hash of v1/v2 references) are needed.
impl AsRef<Pdu> for Pdu {
    fn as_ref(&self) -> &Pdu {
        self
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

/// The event ID of an event object, as its room version names events: the `event_id` field in
/// versions 1 and 2 (which must be `$opaque:server`), `$` + the reference hash after.
pub fn event_id(
    room_version: &RoomVersionId,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    event_id_with(&room_version::rules(room_version)?, object)
}

/// The event ID of an event object of room version 3 or later: `$` + its reference hash
/// (standard unpadded base64 in version 3, URL-safe after). Versions 1 and 2 do not name events
/// by their hash: an error there (see [`event_id`]).
pub fn reference_event_id(
    room_version: &RoomVersionId,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    reference_event_id_with(&room_version::rules(room_version)?, object)
}

/// Checks an event object against the event format of its room version and the size limit
/// (checks on receipt of a PDU, and on what we sign): required fields and their types, lengths of
/// IDs, `type` and `state_key`, the number of `prev_events` and `auth_events`, a non-negative
/// `depth`, no create event among the `auth_events` from version 12 on.
pub fn check_format(rules: &RoomVersionRules, object: &CanonicalJsonObject) -> Result<(), Error> {
    let size = canonical_size(object)?;
    if size > MAX_PDU_BYTES {
        return Err(Error::TooLarge { size });
    }
    // ruma counts 65,535 bytes as the limit where the specification allows 65,536: an event of
    // exactly the limit is checked without its signatures, which the format checks do not read.
    let result = if size == MAX_PDU_BYTES {
        let mut unsigned = object.clone();
        unsigned.remove("signatures");
        ruma::state_res::check_pdu_format(&unsigned, &rules.event_format)
    } else {
        ruma::state_res::check_pdu_format(object, &rules.event_format)
    };
    result.map_err(|reason| invalid("pdu", reason))
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

fn event_id_with(
    rules: &RoomVersionRules,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    if rules.event_id_format != EventIdFormatVersion::V1 {
        return reference_event_id_with(rules, object);
    }
    let event_id: OwnedEventId = parse_id("event_id", required_str(object, "event_id")?)?;
    if event_id.server_name().is_none() {
        return Err(invalid("event_id", "not of the form $opaque:server"));
    }
    Ok(event_id)
}

fn reference_event_id_with(
    rules: &RoomVersionRules,
    object: &CanonicalJsonObject,
) -> Result<OwnedEventId, Error> {
    if rules.event_id_format == EventIdFormatVersion::V1 {
        return Err(invalid(
            "event_id",
            "this room version does not name events by their reference hash",
        ));
    }
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

/// Parses an identifier, within the length limit whatever ruma's features say (see
/// [`MAX_ID_BYTES`]).
fn parse_id<T>(field: &'static str, value: &str) -> Result<T, Error>
where
    T: for<'a> TryFrom<&'a str, Error = ruma::IdParseError>,
{
    if value.len() > MAX_ID_BYTES {
        return Err(invalid(field, format!("longer than {MAX_ID_BYTES} bytes")));
    }
    T::try_from(value).map_err(|e| invalid(field, e))
}

/// The event IDs of `prev_events` or `auth_events`, in the room version's format: plain IDs, or
/// in versions 1 and 2 `[event_id, {"sha256": hash}]` pairs (the hash is not checked: nothing
/// defines what to do when it is wrong, and the referenced event is verified on its own).
fn event_references(
    json: &CanonicalJsonObject,
    field: &'static str,
    rules: &RoomVersionRules,
) -> Result<Vec<OwnedEventId>, Error> {
    let items = json
        .get(field)
        .ok_or(Error::MissingField(field))?
        .as_array()
        .ok_or_else(|| invalid(field, "not an array"))?;
    let paired = rules.events_reference_format == EventsReferenceFormatVersion::V1;
    items
        .iter()
        .map(|item| {
            let id = if paired {
                paired_reference(field, item)?
            } else {
                item.as_str()
                    .ok_or_else(|| invalid(field, "not a string"))?
            };
            parse_id(field, id)
        })
        .collect()
}

/// The event ID of a `[event_id, {"sha256": hash}]` reference. The hashes are not checked (no
/// rule uses them), and the object may be empty: the reference homeserver sends `{}` for an event
/// whose reference hash it did not store.
fn paired_reference<'a>(
    field: &'static str,
    item: &'a CanonicalJsonValue,
) -> Result<&'a str, Error> {
    let not_a_pair = || invalid(field, "not an [event_id, hashes] pair");
    let pair = item.as_array().ok_or_else(not_a_pair)?;
    let [id, hashes] = pair else {
        return Err(not_a_pair());
    };
    if hashes.as_object().is_none() {
        return Err(invalid(field, "reference hashes are not an object"));
    }
    id.as_str().ok_or_else(not_a_pair)
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

#[cfg(test)]
mod version_tests;
