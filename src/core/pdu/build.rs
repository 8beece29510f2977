//! Building events of ours, in every room version's format.
//!
//! Two starting points: an [`EventTemplate`] the room services fill in ([`build_event`]), and the
//! event template a resident server hands out from `make_join`, `make_leave` or `make_knock`
//! ([`build_from_template`]). Both end in the same sealing step: the fields the format adds
//! (`origin` where the redaction algorithm still protects it, the `event_id` of room versions 1
//! and 2), the content hash, our signature, the event format and size checks, and the event ID.

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, ServerName, UInt,
    events::TimelineEventType,
    room_version_rules::{
        EventIdFormatVersion, EventsReferenceFormatVersion, RoomIdFormatVersion, RoomVersionRules,
    },
    signatures::Ed25519KeyPair,
};

use super::{
    MAX_AUTH_EVENTS, MAX_PREV_EVENTS, Pdu, check_format, event_id_with, invalid, is_create,
    json_error, optional_str, parse_id, required_str,
};
use crate::core::{Error, room_version};

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
/// enforces the event format and size limit and computes the event ID (and, for a room version
/// 12 create event, the room ID).
///
/// Room versions 1 and 2 reference events together with their reference hashes, which a template
/// does not hold: there, only an event referencing nothing (a create event) can be built this
/// way; use [`build_event_referencing`].
pub fn build_event(
    room_version: &RoomVersionId,
    template: EventTemplate,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
) -> Result<Pdu, Error> {
    build_event_referencing(room_version, template, server_name, key, |_: &EventId| {
        None::<Pdu>
    })
}

/// [`build_event`] for every room version: `fetch` looks up the events the template references,
/// whose reference hashes room versions 1 and 2 put next to their IDs (it is not called in later
/// versions). An unknown referenced event is [`Error::EventNotFound`].
pub fn build_event_referencing<E: AsRef<Pdu>>(
    room_version: &RoomVersionId,
    template: EventTemplate,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<Pdu, Error> {
    let rules = room_version::rules(room_version)?;
    check_template(&rules, &template, server_name)?;
    let object = template_object(&rules, template, &fetch)?;
    seal(room_version, &rules, object, server_name, key)
}

/// Completes an event template into a signed event of `origin`: a template a resident server
/// returned from `make_join`, `make_leave` or `make_knock`, or one we built as JSON.
///
/// Whatever the template says about hashes, signatures, `unsigned` and the event ID is replaced:
/// the event is ours once signed. Sets `origin` where the room version's redaction algorithm
/// protects it (versions 1 to 10; removed after), `origin_server_ts` to now if the template has
/// none, and in versions 1 and 2 a new `event_id` `$<random>:<origin>` (hence the clock and the
/// random generator, the only ones core reads). The sender must be a user of `origin`, the room
/// ID must fit the room version, and the result must pass the event format checks a peer will
/// apply ([`check_format`]). Returns the parsed event with its ID.
pub fn build_from_template(
    room_version: &RoomVersionId,
    template: CanonicalJsonObject,
    origin: &ServerName,
    key: &Ed25519KeyPair,
) -> Result<Pdu, Error> {
    let rules = room_version::rules(room_version)?;
    let sender: OwnedUserId = parse_id("sender", required_str(&template, "sender")?)?;
    if sender.server_name() != origin {
        return Err(invalid("sender", "not a user of the signing server"));
    }
    let kind = TimelineEventType::from(required_str(&template, "type")?);
    let room_id: Option<OwnedRoomId> = optional_str(&template, "room_id")?
        .map(|room_id| parse_id("room_id", room_id))
        .transpose()?;
    let state_key = optional_str(&template, "state_key")?;
    check_room_id(&rules, room_id.as_deref(), &kind, state_key)?;
    seal(room_version, &rules, template, origin, key)
}

/// Adds the content hash (`hashes.sha256`) and our signature to an event object, in place.
pub fn hash_and_sign(
    room_version: &RoomVersionId,
    server_name: &ServerName,
    key: &Ed25519KeyPair,
    object: &mut CanonicalJsonObject,
) -> Result<(), Error> {
    let rules = room_version::rules(room_version)?;
    hash_and_sign_with(&rules, server_name, key, object)
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

/// The step both builders share: the format's own fields, hash, signature, checks, ID.
fn seal(
    room_version: &RoomVersionId,
    rules: &RoomVersionRules,
    mut object: CanonicalJsonObject,
    origin: &ServerName,
    key: &Ed25519KeyPair,
) -> Result<Pdu, Error> {
    for field in ["signatures", "hashes", "unsigned"] {
        object.remove(field);
    }
    // The federation formats no longer list `origin`, but up to room version 10 the redaction
    // algorithm keeps it, so servers of those rooms' era expect it and it is signed.
    if rules.redaction.keep_origin_membership_prev_state {
        object.insert("origin".into(), origin.as_str().into());
    } else {
        object.remove("origin");
    }
    if !object.contains_key("origin_server_ts") {
        let now = MilliSecondsSinceUnixEpoch::now();
        object.insert("origin_server_ts".into(), now.get().into());
    }
    if rules.event_id_format == EventIdFormatVersion::V1 {
        let event_id = EventId::new_v1(origin);
        object.insert("event_id".into(), event_id.to_string().into());
    } else {
        object.remove("event_id");
    }
    hash_and_sign_with(rules, origin, key, &mut object)?;
    check_format(rules, &object)?;
    let event_id = event_id_with(rules, &object)?;
    Pdu::from_canonical(room_version.clone(), event_id, object)
}

fn check_template(
    rules: &RoomVersionRules,
    template: &EventTemplate,
    server_name: &ServerName,
) -> Result<(), Error> {
    if template.sender.server_name() != server_name {
        return Err(invalid("sender", "not a user of the signing server"));
    }
    check_room_id(
        rules,
        template.room_id.as_deref(),
        &template.kind,
        template.state_key.as_deref(),
    )?;
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
fn check_room_id(
    rules: &RoomVersionRules,
    room_id: Option<&RoomId>,
    kind: &TimelineEventType,
    state_key: Option<&str>,
) -> Result<(), Error> {
    let hashed_ids = rules.room_id_format == RoomIdFormatVersion::V2;
    let derived = hashed_ids && is_create(kind, state_key);
    match room_id {
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

/// The unsigned event object: exactly the fields of the federation event format, before the
/// ones [`seal`] adds.
fn template_object<E: AsRef<Pdu>>(
    rules: &RoomVersionRules,
    template: EventTemplate,
    fetch: impl Fn(&EventId) -> Option<E>,
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
    let prev_events = references(rules, template.prev_events, &fetch)?;
    let auth_events = references(rules, template.auth_events, &fetch)?;
    object.insert("sender".into(), template.sender.to_string().into());
    object.insert("type".into(), template.kind.to_string().into());
    object.insert("content".into(), content.into());
    object.insert("prev_events".into(), prev_events);
    object.insert("auth_events".into(), auth_events);
    object.insert("depth".into(), template.depth.into());
    object.insert(
        "origin_server_ts".into(),
        template.origin_server_ts.get().into(),
    );
    Ok(object)
}

/// References to events in the room version's format: their IDs, or in versions 1 and 2
/// `[event_id, {"sha256": reference hash}]` pairs.
fn references<E: AsRef<Pdu>>(
    rules: &RoomVersionRules,
    ids: Vec<OwnedEventId>,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<CanonicalJsonValue, Error> {
    let paired = rules.events_reference_format == EventsReferenceFormatVersion::V1;
    let items = ids.into_iter().map(|id| {
        if !paired {
            return Ok(id.to_string().into());
        }
        let event = fetch(&id).ok_or_else(|| Error::EventNotFound(id.clone()))?;
        let hash = event.as_ref().reference_hash()?;
        let hashes = CanonicalJsonObject::from([("sha256".to_owned(), hash.into())]);
        Ok(CanonicalJsonValue::Array(vec![
            id.to_string().into(),
            hashes.into(),
        ]))
    });
    Ok(CanonicalJsonValue::Array(
        items.collect::<Result<_, Error>>()?,
    ))
}
