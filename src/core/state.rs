//! State resolution: version 2 (room versions 2 to 11), its 2.1 variant (room version 12), and
//! version 1 (room version 1, in [`crate::core::state_v1`]).
//!
//! `ruma-state-res` implements version 2; this module computes what it needs from a pure lookup
//! of events: the full auth chain of each state set and, for room version 12, the conflicted
//! state subgraph. ruma has no version 1, hence our own.

use std::collections::{HashMap, HashSet};

use ruma::{
    EventId, OwnedEventId, RoomVersionId,
    room_version_rules::StateResolutionVersion,
    state_res::{self, Event, StateMap as RumaStateMap, utils::event_id_set::EventIdSet},
};

use crate::core::{Error, Pdu, StateMap, room_version, state_v1};

/// Resolves the states of the forks of a room (one state map per forward extremity, each the
/// state after that event) into one.
///
/// `fetch` must know every event of the state sets and of their auth chains.
pub fn resolve<E>(
    room_version: &RoomVersionId,
    state_sets: &[StateMap],
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<StateMap, Error>
where
    E: Event<Id = OwnedEventId> + Clone + AsRef<Pdu>,
{
    let rules = room_version::rules(room_version)?;
    if let [single] = state_sets {
        return Ok(single.clone());
    }
    let v2_rules = match &rules.state_res {
        StateResolutionVersion::V1 => {
            return state_v1::resolve(&rules.authorization, state_sets, fetch);
        }
        StateResolutionVersion::V2(v2_rules) => v2_rules,
        _ => return Err(Error::UnsupportedRoomVersion(room_version.clone())),
    };
    let auth_chains = state_sets
        .iter()
        .map(|set| auth_chain(set.values().map(|id| &**id), &fetch).map(to_event_id_set))
        .collect::<Result<Vec<_>, _>>()?;
    let resolved = state_res::resolve(
        &rules.authorization,
        v2_rules,
        state_sets,
        auth_chains,
        &fetch,
        |conflicted: &RumaStateMap<Vec<OwnedEventId>>| {
            let conflicted = conflicted.values().flatten().map(|id| &**id);
            conflicted_subgraph(conflicted, &fetch)
                .map(to_event_id_set)
                .ok()
        },
    )?;
    Ok(resolved)
}

/// The auth chain of a set of events: all their auth events, recursively, back to the create
/// event. A starting event is included only if another one's chain reaches it.
pub fn auth_chain<'a, E: Event<Id = OwnedEventId>>(
    event_ids: impl IntoIterator<Item = &'a EventId>,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<HashSet<OwnedEventId>, Error> {
    let mut chain = HashSet::new();
    let mut stack: Vec<OwnedEventId> = Vec::new();
    for event_id in event_ids {
        stack.extend(auth_event_ids(event_id, &fetch)?);
    }
    while let Some(event_id) = stack.pop() {
        if chain.contains(&event_id) {
            continue;
        }
        stack.extend(auth_event_ids(&event_id, &fetch)?);
        chain.insert(event_id);
    }
    Ok(chain)
}

/// The conflicted state subgraph (room version 12): every event on an `auth_events` path from
/// one conflicted event to another, endpoints included.
///
/// Walks the auth graph down from the conflicted events, then walks the edges seen back up from
/// the conflicted events: what is reached both ways lies on such a path.
pub fn conflicted_subgraph<'a, E: Event<Id = OwnedEventId>>(
    conflicted: impl IntoIterator<Item = &'a EventId>,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<HashSet<OwnedEventId>, Error> {
    let conflicted: Vec<OwnedEventId> = conflicted.into_iter().map(ToOwned::to_owned).collect();
    let cited_by = cited_by_below(&conflicted, &fetch)?;
    let mut subgraph = HashSet::new();
    let mut stack = conflicted;
    while let Some(event_id) = stack.pop() {
        if let Some(citing) = cited_by.get(&event_id) {
            stack.extend(citing.iter().filter(|id| !subgraph.contains(*id)).cloned());
        }
        subgraph.insert(event_id);
    }
    Ok(subgraph)
}

/// The reversed `auth_events` edges (auth event → events citing it) of the part of the auth
/// graph reachable from `roots`.
fn cited_by_below<E: Event<Id = OwnedEventId>>(
    roots: &[OwnedEventId],
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<HashMap<OwnedEventId, Vec<OwnedEventId>>, Error> {
    let mut cited_by: HashMap<OwnedEventId, Vec<OwnedEventId>> = HashMap::new();
    let mut seen: HashSet<OwnedEventId> = roots.iter().cloned().collect();
    let mut stack = roots.to_vec();
    while let Some(event_id) = stack.pop() {
        for auth_id in auth_event_ids(&event_id, &fetch)? {
            cited_by
                .entry(auth_id.clone())
                .or_default()
                .push(event_id.clone());
            if seen.insert(auth_id.clone()) {
                stack.push(auth_id);
            }
        }
    }
    Ok(cited_by)
}

/// The `auth_events` of an event, which must be known.
fn auth_event_ids<E: Event<Id = OwnedEventId>>(
    event_id: &EventId,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<Vec<OwnedEventId>, Error> {
    let event = fetch(event_id).ok_or_else(|| Error::EventNotFound(event_id.to_owned()))?;
    Ok(event.auth_events().cloned().collect())
}

fn to_event_id_set(ids: HashSet<OwnedEventId>) -> EventIdSet<OwnedEventId> {
    ids.into_iter().collect()
}

#[cfg(test)]
mod tests;
