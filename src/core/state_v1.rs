//! State resolution for room version 1 (rooms/v1, "State resolution").
//!
//! `ruma-state-res` implements only the second algorithm (room version 2 on), and version 1 rooms
//! still exist, so this is the first one, from the specification:
//!
//! 1. R is the union of the states, without the *conflicted* entries (an entry the states give
//!    different event IDs).
//! 2. A conflicted `m.room.power_levels` entry: its events sorted by ascending depth, then
//!    descending SHA-1 of the event ID; the first goes into R, each next one replaces it as long
//!    as the auth rules allow it in R (the first refusal ends the walk).
//! 3. The same for the conflicted `m.room.join_rules` entries, then the `m.room.member` ones.
//! 4. Every other conflicted entry: the event of highest depth, then lowest SHA-1 of its ID, that
//!    the auth rules allow in R.
//!
//! Where the specification leaves room, this follows the reference implementation (Synapse), so
//! that servers of a version 1 room agree: the entries of one phase (all join rules, all members,
//! all others) are each resolved against R as it was when the phase began, and R is updated once
//! the phase is over, so the result does not depend on the order of the entries; an "other" entry
//! none of whose events passes takes the lowest of them in that order (lowest depth, highest
//! SHA-1). Events are checked with the state-dependent auth rules only: the state-independent
//! ones looked at the event alone and were checked when it was received.
//!
//! The algorithm is known to reset state (the specification warns about it); it is used only for
//! rooms of that version.

use std::collections::{BTreeSet, HashMap};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::AuthorizationRules,
    state_res::{self, Event},
};
use sha1::{Digest, Sha1};

use crate::core::{Error, Pdu, StateMap};

/// A `(type, state_key)` entry of a room state.
type StateKey = (StateEventType, String);

/// Resolves the states of the forks of a version 1 room into one.
///
/// `fetch` must know every event of the state sets (the conflicted ones and those the auth rules
/// read).
pub fn resolve<E>(
    rules: &AuthorizationRules,
    state_sets: &[StateMap],
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap, Error>
where
    E: Event + AsRef<Pdu>,
{
    let (mut resolved, conflicted) = separate(state_sets);
    let mut conflicted = load(conflicted, &fetch)?;

    let power_levels = (StateEventType::RoomPowerLevels, String::new());
    if let Some(events) = conflicted.remove(&power_levels)
        && let Some(winner) = walk_up(rules, &power_levels, events, &resolved, &fetch)
    {
        resolved.insert(power_levels, winner);
    }
    for kind in [StateEventType::RoomJoinRules, StateEventType::RoomMember] {
        let phase: Vec<(StateKey, Vec<E>)> =
            conflicted.extract_if(|key, _| key.0 == kind).collect();
        let winners: Vec<(StateKey, OwnedEventId)> = phase
            .into_iter()
            .filter_map(|(key, events)| {
                let winner = walk_up(rules, &key, events, &resolved, &fetch)?;
                Some((key, winner))
            })
            .collect();
        resolved.extend(winners);
    }
    let winners: Vec<(StateKey, OwnedEventId)> = conflicted
        .into_iter()
        .filter_map(|(key, events)| {
            let winner = first_allowed(rules, events, &resolved, &fetch)?;
            Some((key, winner))
        })
        .collect();
    resolved.extend(winners);
    Ok(resolved)
}

/// Splits the states into the entries they agree on (an entry only some of them have included)
/// and, for the others, the distinct event IDs they give.
fn separate(state_sets: &[StateMap]) -> (StateMap, HashMap<StateKey, BTreeSet<OwnedEventId>>) {
    let mut all: HashMap<StateKey, BTreeSet<OwnedEventId>> = HashMap::new();
    for state in state_sets {
        for (key, event_id) in state {
            all.entry(key.clone()).or_default().insert(event_id.clone());
        }
    }
    let mut unconflicted = StateMap::new();
    let mut conflicted = HashMap::new();
    for (key, mut ids) in all {
        if ids.len() > 1 {
            conflicted.insert(key, ids);
        } else if let Some(only) = ids.pop_first() {
            unconflicted.insert(key, only);
        }
    }
    (unconflicted, conflicted)
}

/// The conflicted events, looked up.
fn load<E>(
    conflicted: HashMap<StateKey, BTreeSet<OwnedEventId>>,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<HashMap<StateKey, Vec<E>>, Error> {
    conflicted
        .into_iter()
        .map(|(key, ids)| {
            let events = ids
                .into_iter()
                .map(|id| fetch(&id).ok_or(Error::EventNotFound(id)))
                .collect::<Result<Vec<E>, Error>>()?;
            Ok((key, events))
        })
        .collect()
}

/// Steps 2 and 3: from the lowest event up, each next event replaces the previous one while the
/// auth rules allow it in `state` with the previous one in place. `None` only without events.
fn walk_up<E>(
    rules: &AuthorizationRules,
    key: &StateKey,
    mut events: Vec<E>,
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Option<OwnedEventId>
where
    E: Event + AsRef<Pdu>,
{
    events.sort_by_cached_key(|event| {
        let pdu = event.as_ref();
        (pdu.depth(), std::cmp::Reverse(sha1(pdu.event_id())))
    });
    let mut events = events.iter().map(|event| event.as_ref());
    let mut winner = events.next()?;
    for event in events {
        if !allowed(rules, event, state, Some((key, winner.event_id())), &fetch) {
            break;
        }
        winner = event;
    }
    Some(winner.event_id().to_owned())
}

/// Step 4: the highest event the auth rules allow in `state`; the lowest if none is allowed.
/// `None` only without events.
fn first_allowed<E>(
    rules: &AuthorizationRules,
    mut events: Vec<E>,
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Option<OwnedEventId>
where
    E: Event + AsRef<Pdu>,
{
    events.sort_by_cached_key(|event| {
        let pdu = event.as_ref();
        (std::cmp::Reverse(pdu.depth()), sha1(pdu.event_id()))
    });
    let pdus: Vec<&Pdu> = events.iter().map(AsRef::as_ref).collect();
    pdus.iter()
        .find(|pdu| allowed(rules, pdu, state, None, &fetch))
        .or(pdus.last())
        .map(|pdu| pdu.event_id().to_owned())
}

/// Whether the state-dependent auth rules allow `event` in `state`, with `overlay` (an entry and
/// its event) replacing what `state` has for that entry.
fn allowed<E: Event>(
    rules: &AuthorizationRules,
    event: &Pdu,
    state: &StateMap,
    overlay: Option<(&StateKey, &EventId)>,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> bool {
    let fetch_state = |kind: &StateEventType, state_key: &str| {
        let event_id = match overlay {
            Some((key, event_id)) if key.0 == *kind && key.1 == state_key => Some(event_id),
            _ => state
                .get(&(kind.clone(), state_key.to_owned()))
                .map(|id| &**id),
        };
        event_id.and_then(&fetch)
    };
    state_res::check_state_dependent_auth_rules(rules, event, fetch_state).is_ok()
}

/// The SHA-1 of an event ID's UTF-8 bytes, the tie-breaker of the algorithm.
fn sha1(event_id: &EventId) -> [u8; 20] {
    Sha1::digest(event_id.as_bytes()).into()
}

#[cfg(test)]
mod tests;
