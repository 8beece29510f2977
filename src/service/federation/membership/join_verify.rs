//! Checking a resident server's `send_join` answer before a room is created from it. Nothing in
//! it is taken on trust: every event must have the room version's format, belong to the room and
//! carry valid signatures (a bad content hash means its redacted form is used); every event must
//! be authorised by its auth events, which must all be in the answer (events are decided in
//! auth-chain order, so that an event citing a rejected one is rejected too); the state must
//! hold one event per entry, a create event of the announced room version, and let our join in.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ruma::api::federation::membership::create_join_event::v2::RoomState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::signatures::Verified;
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId, ServerName};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::core::{self, Pdu, StateMap, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::remote::RemoteRoom;

/// The most events (state and auth chain together) a join answer may hold.
pub const MAX_JOIN_EVENTS: usize = 250_000;

impl Services {
    /// Checks `server`'s answer to our join `ours` (see the module documentation) and gives the
    /// room to create: the state before our join, every accepted or rejected event, and our join
    /// as the resident accepted it (countersigned for a restricted join).
    pub(super) async fn verify_join_answer(
        &self,
        server: &ServerName,
        ours: Pdu,
        answer: Value,
    ) -> Result<RemoteRoom> {
        let bad =
            |what: &str| Error::Unreachable(format!("{server} sent a bad join answer: {what}"));
        let answer: RoomState = serde_json::from_value(answer).map_err(|e| bad(&e.to_string()))?;
        if answer.members_omitted {
            return Err(bad(
                "member events were left out, which this server did not ask for",
            ));
        }
        if answer.state.len().saturating_add(answer.auth_chain.len()) > MAX_JOIN_EVENTS {
            return Err(bad("too many events"));
        }
        let version = ours.room_version().clone();
        let room_id = ours.room_id().to_owned();
        let mut events: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut state_ids: Vec<OwnedEventId> = Vec::new();
        let mut dropped = 0usize;
        let tagged = answer
            .state
            .iter()
            .map(|raw| (raw, true))
            .chain(answer.auth_chain.iter().map(|raw| (raw, false)));
        for (raw, in_state) in tagged {
            let pdu = match parse_event(&version, &room_id, raw) {
                Ok(pdu) => pdu,
                Err(e) => {
                    tracing::debug!(%server, error = %e, "left out an event of a join answer");
                    dropped += 1;
                    continue;
                }
            };
            let id = pdu.event_id().to_owned();
            if !events.contains_key(&id) {
                match self.federation.verify_event(&version, pdu.json()).await {
                    Ok(Verified::All) => {
                        events.insert(id.clone(), pdu);
                    }
                    Ok(Verified::Signatures) => {
                        events.insert(id.clone(), pdu.redacted()?);
                    }
                    Err(e @ Error::Storage(_)) => return Err(e),
                    Err(e) => {
                        tracing::debug!(%server, event_id = %id, error = %e,
                            "left out an event of a join answer");
                        dropped += 1;
                        continue;
                    }
                }
            }
            if in_state {
                state_ids.push(id);
            }
        }
        if dropped > 0 {
            tracing::info!(%server, %room_id, dropped, "join answer events failed their checks");
        }
        let join = match &answer.event {
            Some(raw) => self
                .returned_join(&ours, raw)
                .await
                .map_err(|e| bad(&e.to_string()))?,
            None => ours,
        };
        let decided = authorise_all(&room_id, &version, events);
        let state = state_map(&state_ids, &decided).map_err(|e| bad(&e))?;
        check_create(&state, &decided, &version).map_err(|e| bad(&e))?;
        let fetch = |id: &EventId| {
            if id == join.event_id() {
                Some(Arc::new(join.clone()))
            } else {
                decided.get(id).cloned()
            }
        };
        core::auth::check(&join, &state, fetch)
            .map_err(|e| bad(&format!("the room state does not let our join in: {e}")))?;
        Ok(RemoteRoom {
            state,
            events: decided.into_values().map(Arc::unwrap_or_clone).collect(),
            join,
        })
    }

    /// The join the resident sent back: ours, with at most signatures added, valid ones.
    async fn returned_join(&self, ours: &Pdu, raw: &RawValue) -> Result<Pdu> {
        let json: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::BadJson(format!("the join: {e}")))?;
        let bare = |object: &CanonicalJsonObject| {
            let mut object = object.clone();
            object.remove("signatures");
            object.remove("unsigned");
            object
        };
        if bare(&json) != bare(ours.json()) {
            return Err(Error::BadJson("the join came back changed".into()));
        }
        let pdu = Pdu::from_federation(ours.room_version().clone(), json)?;
        match self
            .federation
            .verify_event(pdu.room_version(), pdu.json())
            .await?
        {
            Verified::All => Ok(pdu),
            Verified::Signatures => Err(Error::BadJson("the join's hash does not match".into())),
        }
    }
}

/// Parses one event of the answer: the room version's format, and the room.
fn parse_event(version: &RoomVersionId, room_id: &RoomId, raw: &RawValue) -> Result<Pdu> {
    let json: CanonicalJsonObject =
        serde_json::from_str(raw.get()).map_err(|e| Error::BadJson(e.to_string()))?;
    let pdu = Pdu::from_federation(version.clone(), json)?;
    if pdu.room_id() != room_id {
        return Err(Error::BadJson(format!(
            "{} belongs to another room",
            pdu.event_id()
        )));
    }
    Ok(pdu)
}

/// Decides every event against its auth events, auth events first; an event whose auth events
/// are not all known, or that waits on a cycle, is rejected. Returns every event, marked.
fn authorise_all(
    room_id: &RoomId,
    version: &RoomVersionId,
    mut events: HashMap<OwnedEventId, Pdu>,
) -> HashMap<OwnedEventId, Arc<Pdu>> {
    // From room version 12 on the create event is no auth event, yet every event depends on it.
    let implicit_create = room_version::rules(version)
        .map(|rules| rules.authorization.room_create_event_id_as_room_id)
        .unwrap_or(false)
        .then(|| EventId::parse(format!("${}", room_id.strip_sigil())).ok())
        .flatten();
    let mut waiting: HashMap<OwnedEventId, usize> = HashMap::new();
    let mut citing: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut ready: Vec<OwnedEventId> = Vec::new();
    for (id, pdu) in &events {
        let mut needs: HashSet<&OwnedEventId> = pdu.auth_events().iter().collect();
        if let Some(create) = &implicit_create
            && create != id
        {
            needs.insert(create);
        }
        let known: Vec<&OwnedEventId> = needs
            .into_iter()
            .filter(|auth| events.contains_key(*auth))
            .collect();
        for auth in &known {
            citing.entry((*auth).clone()).or_default().push(id.clone());
        }
        if known.is_empty() {
            ready.push(id.clone());
        } else {
            waiting.insert(id.clone(), known.len());
        }
    }
    let mut decided: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
    while let Some(id) = ready.pop() {
        let Some(pdu) = events.remove(&id) else {
            continue;
        };
        let accepted = is_authorised(&pdu, &decided);
        decided.insert(id.clone(), Arc::new(pdu.with_rejected(!accepted)));
        for citer in citing.remove(&id).unwrap_or_default() {
            if let Some(count) = waiting.get_mut(&citer) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    waiting.remove(&citer);
                    ready.push(citer);
                }
            }
        }
    }
    for (id, pdu) in events {
        decided.insert(id, Arc::new(pdu.with_rejected(true)));
    }
    decided
}

/// Whether the auth rules let an event in, judged by its own auth events (all decided already).
fn is_authorised(pdu: &Pdu, decided: &HashMap<OwnedEventId, Arc<Pdu>>) -> bool {
    if pdu.auth_events().iter().any(|id| !decided.contains_key(id)) {
        return false;
    }
    let fetch = |id: &EventId| decided.get(id).cloned();
    match core::auth::auth_events_state(pdu, fetch) {
        Ok(state) => core::auth::check(pdu, &state, fetch).is_ok(),
        Err(_) => false,
    }
}

/// The state the answer describes: its accepted state events, one per entry.
fn state_map(
    state_ids: &[OwnedEventId],
    decided: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> std::result::Result<StateMap, String> {
    let mut state = StateMap::new();
    for id in state_ids {
        let Some(pdu) = decided.get(id) else {
            continue;
        };
        if pdu.rejected() {
            tracing::info!(event_id = %id, "a state event of a join answer is not authorised");
            continue;
        }
        let entry = pdu
            .state_entry()
            .ok_or_else(|| format!("{id} in the state is not a state event"))?;
        if let Some(other) = state.insert(entry, id.clone())
            && other != *id
        {
            return Err(format!("{other} and {id} hold the same state entry"));
        }
    }
    Ok(state)
}

/// The state must have an accepted create event of the room version the resident announced.
fn check_create(
    state: &StateMap,
    decided: &HashMap<OwnedEventId, Arc<Pdu>>,
    version: &RoomVersionId,
) -> std::result::Result<(), String> {
    let create = state
        .get(&(StateEventType::RoomCreate, String::new()))
        .and_then(|id| decided.get(id))
        .ok_or("the state has no valid create event")?;
    if *create.kind() != TimelineEventType::RoomCreate {
        return Err("the create entry is not a create event".into());
    }
    let content: Value = serde_json::from_str(create.content().get()).map_err(|e| e.to_string())?;
    let announced = content
        .get("room_version")
        .map_or(Some("1"), Value::as_str)
        .ok_or("the create event's room_version is not a string")?;
    if announced != version.as_str() {
        return Err(format!(
            "the room is of version {announced}, not {version} as announced"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
