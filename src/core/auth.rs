//! Authorisation: which state events authorise an event, and whether they do.
//!
//! Thin glue over `ruma-state-res`, which implements the auth rules of every room version. The
//! checks on receipt of a PDU (server-server API) are, in this vocabulary:
//!
//! 1. [`check`] against [`auth_events_state`] of the event: reject on failure;
//! 2. [`check`] against the state before the event: reject on failure;
//! 3. [`check_state_dependent`] against the current state of the room: soft-fail on failure.

use ruma::{
    EventId, OwnedEventId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    state_res::{self, Event},
};
use serde_json::value::RawValue;

use crate::core::{Error, EventTemplate, Pdu, StateMap, room_version};

/// The `(type, state_key)` entries of the room state that authorise an event with these
/// properties ("auth events selection" in the server-server API). Empty for `m.room.create`; from
/// room version 12 on, never the create event itself.
pub fn auth_types(
    room_version: &RoomVersionId,
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawValue,
) -> Result<Vec<(StateEventType, String)>, Error> {
    let rules = room_version::rules(room_version)?;
    state_res::auth_types_for_event(kind, sender, state_key, content, &rules.authorization)
        .map_err(Error::Unauthorized)
}

/// The `auth_events` for a new event: the IDs that `state` holds for its [`auth_types`].
pub fn select_auth_events(
    room_version: &RoomVersionId,
    template: &EventTemplate,
    state: &StateMap,
) -> Result<Vec<OwnedEventId>, Error> {
    let content = serde_json::value::to_raw_value(&template.content)
        .map_err(|e| Error::CanonicalJson(e.to_string()))?;
    let types = auth_types(
        room_version,
        &template.kind,
        &template.sender,
        template.state_key.as_deref(),
        &content,
    )?;
    Ok(types
        .iter()
        .filter_map(|entry| state.get(entry).cloned())
        .collect())
}

/// Runs all the auth rules of the event's room version: the state-independent ones against the
/// event's own `auth_events`, and the state-dependent ones against `state`.
///
/// `fetch` looks events up by ID; it must know the auth events, the state events and, from room
/// version 12 on, the create event.
pub fn check<E: Event>(
    pdu: &Pdu,
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<(), Error> {
    check_state_independent(pdu, &fetch)?;
    check_state_dependent(pdu, state, &fetch)
}

/// The rules that only look at the event and its `auth_events` (the create event's own rules,
/// duplicate, unexpected or rejected auth events, the v12 room ID).
pub fn check_state_independent<E: Event>(
    pdu: &Pdu,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<(), Error> {
    let rules = room_version::rules(pdu.room_version())?;
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch)
        .map_err(Error::Unauthorized)
}

/// The rules that look at a room state (membership, join rules, power levels …).
pub fn check_state_dependent<E: Event>(
    pdu: &Pdu,
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<(), Error> {
    let rules = room_version::rules(pdu.room_version())?;
    let fetch_state = |kind: &StateEventType, state_key: &str| {
        state
            .get(&(kind.clone(), state_key.to_owned()))
            .and_then(|event_id| fetch(event_id))
    };
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
        .map_err(Error::Unauthorized)
}

/// The state an event claims through its `auth_events` (plus, from room version 12 on, the
/// create event its room ID names), to check it against in the first check on receipt.
pub fn auth_events_state<E: Event>(
    pdu: &Pdu,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap, Error> {
    let rules = room_version::rules(pdu.room_version())?;
    let mut state = StateMap::new();
    if rules.authorization.room_create_event_id_as_room_id
        && *pdu.kind() != TimelineEventType::RoomCreate
    {
        let create_id = create_event_id(pdu)?;
        state.insert((StateEventType::RoomCreate, String::new()), create_id);
    }
    for event_id in pdu.auth_events() {
        let event = fetch(event_id).ok_or_else(|| Error::EventNotFound(event_id.clone()))?;
        let state_key = event
            .state_key()
            .ok_or_else(|| Error::Unauthorized(format!("auth event {event_id} is not state")))?;
        let kind = StateEventType::from(event.event_type().to_string());
        state.insert((kind, state_key.to_owned()), event_id.clone());
    }
    Ok(state)
}

/// The ID of the create event a room version 12 event's room ID names.
fn create_event_id(pdu: &Pdu) -> Result<OwnedEventId, Error> {
    EventId::new_v2_or_v3(pdu.room_id().strip_sigil()).map_err(|e| Error::InvalidField {
        field: "room_id",
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
