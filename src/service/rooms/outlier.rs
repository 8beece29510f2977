//! Events stored beside a room's timeline.
//!
//! Federation brings events that must be kept without being shown as part of the room's
//! history:
//!
//! - **outliers**: events fetched to authorise others (auth events) or to fill a gap in the DAG
//!   (the events a peer names as the state at a missing event). They are valid events: state
//!   lookups, auth checks and state resolution use them, and clients may read them where the
//!   room state names them (they have an [`EventMeta`] for that, at stream position 0), but
//!   they are not in the timeline;
//! - **soft-failed** events: valid against the state before them, not against the room's current
//!   state (a banned user's server writing on an old branch). Stored and usable as prev events of
//!   later events, never relayed to clients and never our forward extremities;
//! - **rejected** events: they failed the auth rules. Stored with the rejected flag, so that they
//!   are not fetched again and fail the events citing them as auth events, but never served as
//!   valid, never state, never seen by clients.
//!
//! Each has a record in `eventid_offtimeline` with its standing and, when known, the state before
//! and after it: a later event that names it as a prev event needs that state. An event that
//! joins the timeline later loses its record (see `Rooms::persist`).

use std::sync::Arc;

use ruma::{EventId, OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};

use super::{EventMeta, Rooms};
use crate::core::{self, Pdu, StateMap};
use crate::error::{Error, Result};

/// The stream position of every outlier's [`EventMeta`]: it has no place in the timeline.
pub const OUTLIER_POSITION: u64 = 0;

/// Why an event stored beside the timeline is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Outlier,
    SoftFailed,
    Rejected,
}

/// Where a stored event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStanding {
    /// In the room's timeline.
    Timeline,
    /// Beside it, for one of the reasons of [`Standing`].
    Beside(Standing),
}

/// The state snapshots around an event (`None`: the empty state).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EventState {
    pub before: Option<u64>,
    pub after: Option<u64>,
}

/// The record of an event stored beside the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OffTimeline {
    pub room_id: OwnedRoomId,
    pub standing: Standing,
    /// The state around the event, when known (not for auth events fetched alone).
    pub state: Option<EventState>,
}

impl Rooms {
    /// The record of an event stored beside the timeline.
    pub fn off_timeline(&self, event_id: &EventId) -> Result<Option<OffTimeline>> {
        match self.off_timeline.get(event_id.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Where a stored event stands (`None`: not stored). Readers serving events to other servers
    /// must refuse rejected ones; soft-failed ones may be served to servers, never to clients.
    pub fn event_standing(&self, event_id: &EventId) -> Result<Option<EventStanding>> {
        if let Some(record) = self.off_timeline(event_id)? {
            return Ok(Some(EventStanding::Beside(record.standing)));
        }
        if let Some(meta) = self.event_meta(event_id)?
            && meta.stream_pos != OUTLIER_POSITION
        {
            return Ok(Some(EventStanding::Timeline));
        }
        // Stored without a record: an outlier of a remote join (its meta at position 0), which
        // carries its rejection in the event itself.
        Ok(self.pdu(event_id)?.map(|pdu| match pdu.rejected() {
            true => EventStanding::Beside(Standing::Rejected),
            false => EventStanding::Beside(Standing::Outlier),
        }))
    }

    /// The snapshot of the state after a stored event, when it is known: `Some(None)` is the
    /// empty state, `None` an event that is unknown or whose state is not (an outlier fetched as
    /// an auth event, or an event rejected before its state was looked at).
    pub fn state_after_event(&self, event_id: &EventId) -> Result<Option<Option<u64>>> {
        if let Some(record) = self.off_timeline(event_id)? {
            return Ok(record.state.map(|state| state.after));
        }
        Ok(self
            .event_meta(event_id)?
            .and_then(|meta| match meta.stream_pos {
                // An outlier stored with a room's state on a remote join: only the events that state
                // follows have one.
                OUTLIER_POSITION => meta.state_after.map(Some),
                _ => Some(meta.state_after.or(meta.state_before)),
            }))
    }

    /// Step 4 of the checks on receipt of a PDU: the auth rules against the event's own
    /// `auth_events`, which must all be stored. `Ok(Err(reason))`: the event is to be rejected.
    pub fn check_against_auth_events(&self, pdu: &Pdu) -> Result<std::result::Result<(), String>> {
        if let Some(missing) = pdu
            .auth_events()
            .iter()
            .find(|id| !self.pdus.contains(id.as_bytes()).unwrap_or(false))
        {
            return Err(Error::NotFound(format!(
                "the auth event {missing} is unknown"
            )));
        }
        let fetch = |id: &EventId| self.pdu(id).ok().flatten();
        let state = match core::auth::auth_events_state(pdu, fetch) {
            Ok(state) => state,
            Err(core::Error::Unauthorized(reason)) => return Ok(Err(reason)),
            Err(core::Error::EventNotFound(id)) => {
                return Err(Error::NotFound(format!("the event {id} is unknown")));
            }
            Err(e) => return Err(e.into()),
        };
        authorised(pdu, &state, fetch)
    }

    /// Stores an event beside the timeline without its state: an auth event fetched from a
    /// peer, or an event rejected by its own auth events (`pdu.rejected()`). An event already
    /// stored is left as it is.
    ///
    /// Not flushed here (a gap may bring hundreds of them): the event that needed it is, with
    /// everything written before; if the server stops first, it is only fetched again.
    pub async fn store_outlier(&self, pdu: &Pdu) -> Result<()> {
        let lock = self.room_lock(pdu.room_id())?;
        let guard = lock.lock().await;
        if !self.pdus.contains(pdu.event_id().as_bytes())? {
            let standing = match pdu.rejected() {
                true => Standing::Rejected,
                false => Standing::Outlier,
            };
            self.write_off_timeline(pdu, standing, None, Vec::new())?;
        }
        drop(guard);
        Ok(())
    }

    /// Stores an event at a gap of the DAG (a prev event we could not get with its own
    /// history) with the state before it as a peer gave it; the state after it follows (the
    /// same state for a rejected event). An event whose state is already known is left as it
    /// is. Not flushed here, like [`Rooms::store_outlier`].
    ///
    /// `room_id` is the room the state is of: an event of another room is refused, so that one
    /// room's state never becomes the state at another room's event.
    pub async fn store_gap_event(
        &self,
        room_id: &RoomId,
        pdu: &Pdu,
        state_before: StateMap,
    ) -> Result<()> {
        if pdu.room_id() != room_id {
            return Err(Error::Forbidden(format!(
                "{} is not an event of {room_id}",
                pdu.event_id()
            )));
        }
        let lock = self.room_lock(pdu.room_id())?;
        let _guard = lock.lock().await;
        if self.state_after_event(pdu.event_id())?.is_some() {
            return Ok(());
        }
        let info = self
            .info(pdu.room_id())?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        let current = self.current_state(pdu.room_id())?;
        let parent = info.snapshot.map(|id| (id, &*current));
        let mut snapshots = Vec::new();
        let before_id = self.store.generate_id()?;
        let before = self.snapshots.derive_to(parent, &state_before)?;
        snapshots.push((before_id, before, state_before.clone()));
        // A rejected event changes nothing: the state after it is the state before it.
        let after = match pdu.state_entry().filter(|_| !pdu.rejected()) {
            Some(entry) => {
                let mut state_after = state_before.clone();
                state_after.insert(entry, pdu.event_id().to_owned());
                let after_id = self.store.generate_id()?;
                let snapshot = self.snapshots.derive_to(parent, &state_after)?;
                snapshots.push((after_id, snapshot, state_after));
                Some(after_id)
            }
            None => Some(before_id),
        };
        let standing = match pdu.rejected() {
            true => Standing::Rejected,
            false => Standing::Outlier,
        };
        let state = EventState {
            before: Some(before_id),
            after,
        };
        self.write_off_timeline(pdu, standing, Some(state), snapshots)
    }

    /// Writes an event beside the timeline in one transaction: the PDU, its record, the new
    /// snapshots and, for outliers (valid events clients may meet in the room state), an
    /// [`EventMeta`] at stream position 0, as every outlier has. A soft-failed or rejected event
    /// has none, so that no client read path serves it.
    pub(super) fn write_off_timeline(
        &self,
        pdu: &Pdu,
        standing: Standing,
        state: Option<EventState>,
        snapshots: Vec<(u64, super::state::Snapshot, StateMap)>,
    ) -> Result<()> {
        let event_id = pdu.event_id();
        let record = OffTimeline {
            room_id: pdu.room_id().to_owned(),
            standing,
            state,
        };
        let record = serde_json::to_vec(&record)?;
        let pdu_bytes = serde_json::to_vec(pdu)?;
        let meta = match standing {
            Standing::Outlier => Some(serde_json::to_vec(&EventMeta {
                room_id: pdu.room_id().to_owned(),
                stream_pos: 0,
                state_before: state.and_then(|s| s.before),
                state_after: state.and_then(|s| s.after),
                txn: None,
            })?),
            Standing::SoftFailed | Standing::Rejected => None,
        };
        let trees = [
            &self.pdus,
            &self.meta,
            &self.off_timeline,
            self.snapshots.tree(),
        ];
        self.store.transact(&trees, |t| {
            t[0].put(event_id.as_bytes(), pdu_bytes.clone())?;
            match &meta {
                Some(meta) => t[1].put(event_id.as_bytes(), meta.clone())?,
                None => t[1].delete(event_id.as_bytes())?,
            }
            t[2].put(event_id.as_bytes(), record.clone())?;
            for (id, snapshot, _) in &snapshots {
                super::state::put_snapshot::<Error>(&t[3], *id, snapshot)?;
            }
            Ok(())
        })?;
        for (id, _, full) in snapshots {
            self.snapshots.remember(id, Arc::new(full))?;
        }
        // Replaces a copy decoded before (an outlier now rejected, a redacted copy now whole).
        self.events.insert(Arc::new(pdu.clone()));
        Ok(())
    }
}

/// Runs the auth rules of the event's room version against `state`; `Ok(Err(reason))` when
/// they refuse the event, `Err` when they could not run (an event missing from the store).
pub(super) fn authorised<E: ruma::state_res::Event>(
    pdu: &Pdu,
    state: &StateMap,
    fetch: impl Fn(&EventId) -> Option<E>,
) -> Result<std::result::Result<(), String>> {
    match core::auth::check(pdu, state, fetch) {
        Ok(()) => Ok(Ok(())),
        Err(core::Error::Unauthorized(reason)) => Ok(Err(reason)),
        Err(core::Error::EventNotFound(id)) => {
            Err(Error::NotFound(format!("the event {id} is unknown")))
        }
        Err(e) => Err(e.into()),
    }
}
