//! Prev events we lack. First the origin is asked for the events between what we have and the
//! new event (`POST /get_missing_events`, a bounded walk back), which are processed like received
//! events, oldest first. Where a prev event is still missing (the walk did not reach back to us),
//! the gap stays: the origin is asked for the state at that event (`GET /state_ids`), the events
//! it names are fetched and stored as outliers, and the event is stored with that state, so that
//! the new event's state can be resolved across the gap.

use std::collections::HashSet;

use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId, UInt};
use serde::Deserialize;
use serde_json::json;

use super::Peer;
use super::fetch::encode;
use super::order::dependencies_first;
use crate::core::{Pdu, StateMap, pdu::MAX_PREV_EVENTS};
use crate::error::{Error, Result};
use crate::service::federation::request::Limit;

/// The most events one `/get_missing_events` asks for.
pub const MISSING_EVENTS_LIMIT: usize = 10;
/// How far below the new event's depth the walk back may go.
pub const MISSING_EVENTS_DEPTH_WINDOW: u64 = 100;
/// The most event IDs a `/state_ids` answer may name (state and auth chain together).
pub const MAX_STATE_IDS: usize = 100_000;

/// A `/state_ids` answer.
#[derive(Deserialize)]
struct StateIds {
    pdu_ids: Vec<OwnedEventId>,
    auth_chain_ids: Vec<OwnedEventId>,
}

impl Peer<'_> {
    /// Makes the state after every prev event of `pdu` known: pulls the missing ones (when
    /// `pull`), then fills the gaps that stay.
    pub async fn fill_prev_events(&self, pdu: &Pdu, pull: bool) -> Result<()> {
        let mut missing = self.prevs_without_state(pdu)?;
        if missing.is_empty() {
            return Ok(());
        }
        if pull {
            if let Err(e) = self.pull_missing_events(pdu).await {
                tracing::info!(
                    origin = %self.origin,
                    event_id = %pdu.event_id(),
                    error = %e,
                    "could not get the missing events"
                );
            }
            missing = self.prevs_without_state(pdu)?;
        }
        for prev in missing {
            self.fill_gap(pdu.room_id(), pdu.room_version(), &prev)
                .await?;
        }
        Ok(())
    }

    /// The prev events whose state after them we do not know (unknown events, outliers).
    /// A stored event of another room is left out: nothing is fetched for it, and the event
    /// citing it is rejected when it is checked.
    fn prevs_without_state(&self, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
        let rooms = &self.services.rooms;
        let mut missing = Vec::new();
        for prev in pdu.prev_events().iter().take(MAX_PREV_EVENTS) {
            if rooms.state_after_event(prev)?.is_some() {
                continue;
            }
            if rooms
                .pdu(prev)?
                .is_some_and(|stored| stored.room_id() != pdu.room_id())
            {
                continue;
            }
            missing.push(prev.clone());
        }
        Ok(missing)
    }

    /// Asks the origin for the events between our forward extremities and `pdu`, and processes
    /// what it gives, oldest first, each like a received event (without pulling again).
    async fn pull_missing_events(&self, pdu: &Pdu) -> Result<()> {
        let rooms = &self.services.rooms;
        let limit = self.budget.pull_events(MISSING_EVENTS_LIMIT);
        if limit == 0 {
            return Err(Error::TooLarge(
                "the transaction pulled too many missing events".into(),
            ));
        }
        let info = rooms
            .info(pdu.room_id())?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        let earliest: Vec<&OwnedEventId> = info.extremities.iter().take(MAX_PREV_EVENTS).collect();
        let body = json!({
            "earliest_events": earliest,
            "latest_events": [pdu.event_id()],
            "limit": limit,
            "min_depth": self.min_depth(pdu, &info.extremities)?,
        });
        let path = format!(
            "/_matrix/federation/v1/get_missing_events/{}",
            encode(pdu.room_id().as_str())
        );
        let answer = self
            .services
            .federation
            .post(self.origin, &path, &body, Limit::Batch)
            .await?;
        let events = answer
            .get("events")
            .and_then(|events| events.as_array())
            .ok_or_else(|| self.bad_answer("no events in /get_missing_events"))?;
        let mut pulled = Vec::new();
        let mut seen = HashSet::new();
        // The peer may send more than asked: only `limit` are looked at.
        for event in events.iter().take(limit) {
            let parsed = serde_json::from_value::<CanonicalJsonObject>(event.clone())
                .map_err(|e| self.bad_answer(&format!("an event that is not canonical JSON: {e}")))
                .and_then(|json| self.parse_fetched(pdu.room_id(), pdu.room_version(), json));
            match parsed {
                Ok(event) if seen.insert(event.event_id().to_owned()) => pulled.push(event),
                Ok(_) => {}
                Err(e) => {
                    tracing::info!(origin = %self.origin, error = %e, "skipped a pulled event")
                }
            }
        }
        for event in dependencies_first(pulled, |e| e.prev_events()) {
            let event_id = event.event_id().to_owned();
            // Boxed: `handle` brought us here (without pulling again, so this ends).
            if let Err(e) = Box::pin(self.handle(event, false)).await {
                tracing::info!(origin = %self.origin, %event_id, error = %e, "a pulled event failed");
            }
        }
        Ok(())
    }

    /// The lowest depth the walk back may reach: no lower than our forward extremities (what is
    /// older we have, or is a gap), nor than the depth window below the new event.
    fn min_depth(&self, pdu: &Pdu, extremities: &[OwnedEventId]) -> Result<UInt> {
        let mut ours = u64::MAX;
        for extremity in extremities {
            if let Some(event) = self.services.rooms.pdu(extremity)? {
                ours = ours.min(u64::from(event.depth()));
            }
        }
        let window = u64::from(pdu.depth()).saturating_sub(MISSING_EVENTS_DEPTH_WINDOW);
        let min = match ours {
            u64::MAX => window,
            ours => ours.max(window),
        };
        Ok(UInt::try_from(min).unwrap_or(UInt::MAX))
    }

    /// Fills the gap at `prev`: the state before it from the origin's `/state_ids`, its events
    /// and their auth chain fetched and stored as outliers, then `prev` stored with that state.
    async fn fill_gap(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        prev: &EventId,
    ) -> Result<()> {
        let rooms = &self.services.rooms;
        // The state asked for is the state of `room_id`: it must never become the state at an
        // event of another room (a stored event the prev events name).
        if let Some(stored) = rooms.pdu(prev)?
            && stored.room_id() != room_id
        {
            return Err(Error::Forbidden(format!(
                "the prev event {prev} is an event of another room"
            )));
        }
        self.budget.fill_gap()?;
        let path = format!(
            "/_matrix/federation/v1/state_ids/{}?event_id={}",
            encode(room_id.as_str()),
            encode(prev.as_str())
        );
        let answer = self
            .services
            .federation
            .get(self.origin, &path, Limit::Batch)
            .await?;
        let state_ids: StateIds = serde_json::from_value(answer)
            .map_err(|e| self.bad_answer(&format!("a bad /state_ids answer: {e}")))?;
        if state_ids.pdu_ids.len() + state_ids.auth_chain_ids.len() > MAX_STATE_IDS {
            return Err(Error::TooLarge(format!(
                "the state at {prev} names more than {MAX_STATE_IDS} events"
            )));
        }
        let mut wanted = Vec::new();
        let mut seen = HashSet::new();
        for id in state_ids
            .pdu_ids
            .iter()
            .chain(&state_ids.auth_chain_ids)
            .chain(std::iter::once(&prev.to_owned()))
        {
            if seen.insert(id.clone()) && rooms.pdu(id)?.is_none() {
                wanted.push(id.clone());
            }
        }
        let fetched = self.fetch_events(room_id, version, wanted).await?;
        let (gap_event, others): (Vec<Pdu>, Vec<Pdu>) =
            fetched.into_iter().partition(|e| e.event_id() == prev);
        self.store_fetched(others).await?;
        let state = self.state_from_ids(room_id, &state_ids.pdu_ids)?;
        let prev_pdu = match gap_event.into_iter().next() {
            Some(event) => match rooms.check_against_auth_events(&event)? {
                Ok(()) => event,
                Err(reason) => {
                    tracing::info!(event_id = %prev, %reason, "rejected the event at a gap");
                    event.with_rejected(true)
                }
            },
            None => rooms
                .pdu(prev)?
                .map(|pdu| (*pdu).clone())
                .ok_or_else(|| Error::NotFound(format!("the prev event {prev} is unknown")))?,
        };
        rooms.store_gap_event(room_id, &prev_pdu, state).await
    }

    /// The state map the IDs of a `/state_ids` answer stand for: every event stored (fetched
    /// just before), state events of the room, one per `(type, state_key)`. Rejected events are
    /// left out: they never become state.
    fn state_from_ids(&self, room_id: &RoomId, ids: &[OwnedEventId]) -> Result<StateMap> {
        let mut state = StateMap::new();
        for id in ids {
            let event = self.services.rooms.pdu(id)?.ok_or_else(|| {
                self.bad_answer(&format!("a state event {id} that it did not give"))
            })?;
            if event.room_id() != room_id {
                return Err(self.bad_answer(&format!("{id} of another room as state")));
            }
            if event.rejected() {
                continue;
            }
            let entry = event
                .state_entry()
                .ok_or_else(|| self.bad_answer(&format!("{id}, not a state event, as state")))?;
            if state.insert(entry, id.clone()).is_some() {
                return Err(self.bad_answer(&format!("two events for the state entry of {id}")));
            }
        }
        Ok(state)
    }
}
