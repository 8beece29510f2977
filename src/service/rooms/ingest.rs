//! Events that were not built by this room's append path: from another server (federation), or
//! forks built by hand. Their state is resolved from their `prev_events`, and the room's current
//! state is resolved over its forward extremities with state resolution.
//!
//! An event goes through the last checks on receipt of a PDU (server-server API) here, under the
//! room lock; the earlier ones (format, signatures, hashes, fetching what it references) are the
//! federation receiver's:
//!
//! 4. the auth rules against its own `auth_events`, else it is rejected;
//! 5. the auth rules against the state before it (the resolution of the states after its
//!    `prev_events`), else it is rejected;
//! 6. the auth rules against the room's current state, else it is soft-failed.
//!
//! Rejected and soft-failed events are stored beside the timeline (see [`super::outlier`]).

use std::collections::BTreeSet;
use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{EventId, OwnedEventId};

use super::outlier::{EventStanding, EventState, Standing, authorised};
use super::{AppendEffects, RoomInfo, Rooms, StatePlan, power};
use crate::core::{self, Pdu, StateMap};
use crate::error::{Error, Result};

/// What became of an event handed to [`Rooms::ingest_remote`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// In the timeline (now or before).
    Accepted,
    /// Stored, valid at its place in the DAG, but not against the current state: not shown.
    SoftFailed,
    /// Stored as rejected, for this reason.
    Rejected(String),
}

/// The states after an event's prev events.
struct PrevStates {
    /// Snapshot and state after each prev event, in the order of `prev_events`.
    states: Vec<(Option<u64>, Arc<StateMap>)>,
    /// Whether a prev event is not in the timeline (a gap filled with a peer's state, or a
    /// soft-failed or rejected event).
    off_timeline: bool,
}

/// Whether the event follows exactly the room's forward extremities (all in the timeline): the
/// state before it is then the room's current state.
fn follows_current_state(info: &RoomInfo, pdu: &Pdu, prevs: &PrevStates) -> bool {
    let prev_set: BTreeSet<&OwnedEventId> = pdu.prev_events().iter().collect();
    let extremities: BTreeSet<&OwnedEventId> = info.extremities.iter().collect();
    prev_set == extremities && !prevs.off_timeline
}

impl Rooms {
    /// Adds a signed event whose `prev_events` are all known with their state (forks built by
    /// hand, tests). A rejected event is an error; a soft-failed one is stored beside the
    /// timeline.
    pub async fn ingest(&self, pdu: Pdu) -> Result<()> {
        match self.ingest_remote(pdu).await? {
            Received::Accepted | Received::SoftFailed => Ok(()),
            Received::Rejected(reason) => Err(Error::Forbidden(reason)),
        }
    }

    /// Checks an event of another server against its auth events, the state before it and the
    /// current state, and stores it: in the timeline, or beside it when soft-failed or rejected.
    /// Its auth events must be stored, and the state after each of its prev events known
    /// (`NotFound` otherwise: nothing is stored), and the room must have events of its own to
    /// follow (403 for a room known only from an invite or a knock). An event already processed
    /// is answered as it was.
    pub async fn ingest_remote(&self, pdu: Pdu) -> Result<Received> {
        let room_id = pdu.room_id().to_owned();
        let lock = self.room_lock(&room_id)?;
        let guard = lock.lock().await;
        if let Some(known) = self.received(pdu.event_id())? {
            drop(guard);
            self.store.durable().await?;
            return Ok(known);
        }
        let mut info = self
            .info(&room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        if pdu.room_version() != &info.room_version {
            return Err(Error::BadJson(
                "the event is of another room version".into(),
            ));
        }
        // A room we only know from an invite or a knock (see `remote.rs`) has no DAG of ours for
        // the event to join: taking it would replace the placeholder's state (the invite a
        // client is shown) with whatever state the event brings.
        if info.extremities.is_empty() {
            return Err(Error::Forbidden(
                "this server is not in the room: it follows none of its events".into(),
            ));
        }
        let received = self.check_and_store(&mut info, pdu)?;
        drop(guard);
        self.store.durable().await?;
        Ok(received)
    }

    /// What became of an event processed before; `None` for an unknown event and for an
    /// outlier without state (fetched as an auth event), which is processed like a new event.
    pub fn received(&self, event_id: &EventId) -> Result<Option<Received>> {
        Ok(match self.event_standing(event_id)? {
            None => None,
            Some(EventStanding::Timeline) => Some(Received::Accepted),
            Some(EventStanding::Beside(Standing::SoftFailed)) => Some(Received::SoftFailed),
            Some(EventStanding::Beside(Standing::Rejected)) => {
                Some(Received::Rejected("the event was rejected before".into()))
            }
            Some(EventStanding::Beside(Standing::Outlier)) => self
                .state_after_event(event_id)?
                .map(|_| Received::Accepted),
        })
    }

    /// Checks 4 to 6 and the write, under the room lock.
    fn check_and_store(&self, info: &mut RoomInfo, pdu: Pdu) -> Result<Received> {
        if pdu.prev_events().is_empty() {
            return Err(Error::BadJson(
                "only a create event has no prev_events".into(),
            ));
        }
        if let Err(reason) = self.check_against_auth_events(&pdu)? {
            self.write_off_timeline(
                &pdu.clone().with_rejected(true),
                Standing::Rejected,
                None,
                Vec::new(),
            )?;
            return Ok(Received::Rejected(reason));
        }
        let prevs = match self.prev_states(&pdu)? {
            Ok(prevs) => prevs,
            Err(reason) => {
                let rejected = pdu.with_rejected(true);
                self.write_off_timeline(&rejected, Standing::Rejected, None, Vec::new())?;
                return Ok(Received::Rejected(reason));
            }
        };
        let mut plan = StatePlan {
            before: None,
            after: None,
            current: None,
            new: Vec::new(),
            extremities: Vec::new(),
        };
        let before = self.resolve_state_before(info, &pdu, &prevs, &mut plan)?;
        let fetch = |id: &EventId| self.pdu(id).ok().flatten();
        if let Err(reason) = authorised(&pdu, &before, fetch)? {
            let state = EventState {
                before: plan.before,
                after: plan.before,
            };
            let rejected = pdu.with_rejected(true);
            self.write_off_timeline(&rejected, Standing::Rejected, Some(state), plan.new)?;
            return Ok(Received::Rejected(reason));
        }
        let after = self.plan_state_after(&pdu, before.clone(), &mut plan)?;
        if let Err(reason) = self.check_current_state(info, &pdu, &before, &prevs)? {
            tracing::info!(event_id = %pdu.event_id(), %reason, "soft-failed an event");
            let state = EventState {
                before: plan.before,
                after: plan.after,
            };
            self.write_off_timeline(&pdu, Standing::SoftFailed, Some(state), plan.new)?;
            return Ok(Received::SoftFailed);
        }
        let redaction_refused = !self.redaction_allowed(&pdu, &before)?;
        let current = self.current_after(info, &pdu, after, &mut plan)?;
        // Following the current state, only the event changes it; otherwise resolution may
        // change any membership.
        let changes = match follows_current_state(info, &pdu, &prevs) {
            true => None,
            false => {
                let old_current = self.load(info.snapshot)?;
                Some(self.membership_changes(&old_current, &current, &pdu)?)
            }
        };
        let targets: Vec<ruma::OwnedUserId> = changes
            .iter()
            .flatten()
            .filter_map(|(user, _)| ruma::OwnedUserId::try_from(user.as_str()).ok())
            .collect();
        let effects = AppendEffects {
            members: changes,
            redaction_refused,
        };
        self.persist_with(info, &pdu, plan, None, effects)?;
        self.events.insert(Arc::new(pdu.clone()));
        self.announce(pdu.room_id(), super::member_target(&pdu).as_deref())?;
        if targets.len() > 1 {
            let position = self.store.sequencer().upto();
            self.notifier
                .notify(targets.iter().map(AsRef::as_ref), position);
        }
        Ok(Received::Accepted)
    }

    /// The state after each prev event; `Ok(Err(reason))` when a prev event is in another room
    /// (the event is to be rejected), `NotFound` when one's state is unknown.
    fn prev_states(&self, pdu: &Pdu) -> Result<std::result::Result<PrevStates, String>> {
        let mut prevs = PrevStates {
            states: Vec::with_capacity(pdu.prev_events().len()),
            off_timeline: false,
        };
        for prev in pdu.prev_events() {
            let Some(prev_pdu) = self.pdu(prev)? else {
                return Err(Error::NotFound(format!("the prev event {prev} is unknown")));
            };
            // Before its state is asked for: the receiver fills no gap at another room's event.
            if prev_pdu.room_id() != pdu.room_id() {
                return Ok(Err(format!("the prev event {prev} is in another room")));
            }
            let Some(snapshot) = self.state_after_event(prev)? else {
                return Err(Error::NotFound(format!(
                    "the state after the prev event {prev} is unknown"
                )));
            };
            prevs.off_timeline |= self.off_timeline(prev)?.is_some();
            prevs.states.push((snapshot, self.load(snapshot)?));
        }
        Ok(Ok(prevs))
    }

    /// The state before the event: the resolution of the states after its prev events. Sets
    /// `plan.before` (a new snapshot when resolved).
    fn resolve_state_before(
        &self,
        info: &RoomInfo,
        pdu: &Pdu,
        prevs: &PrevStates,
        plan: &mut StatePlan,
    ) -> Result<Arc<StateMap>> {
        if let [(snapshot, state)] = prevs.states.as_slice() {
            plan.before = *snapshot;
            return Ok(state.clone());
        }
        let states: Vec<Arc<StateMap>> = prevs.states.iter().map(|(_, s)| s.clone()).collect();
        let resolved = self.resolve_states(info, &states, pdu)?;
        let (first_id, first) = &prevs.states[0];
        let parent = first_id.map(|id| (id, &**first));
        let id = self.new_snapshot(plan, parent, resolved.clone())?;
        plan.before = Some(id);
        Ok(Arc::new(resolved))
    }

    /// The state after the event: the state before it plus the event, if it is a state event.
    /// Sets `plan.after`.
    fn plan_state_after(
        &self,
        pdu: &Pdu,
        before: Arc<StateMap>,
        plan: &mut StatePlan,
    ) -> Result<Arc<StateMap>> {
        let Some(entry) = pdu.state_entry() else {
            plan.after = plan.before;
            return Ok(before);
        };
        let mut after = (*before).clone();
        after.insert(entry, pdu.event_id().to_owned());
        let parent = plan.before.map(|id| (id, &*before));
        plan.after = Some(self.new_snapshot(plan, parent, after.clone())?);
        Ok(Arc::new(after))
    }

    /// Check 6: the event against the room's current state. When the event follows exactly
    /// the forward extremities, that is the state before it, already checked. When it follows a
    /// gap, the current state may be stale, so the state before the event is resolved into it
    /// (a ban carried by that state then counts).
    fn check_current_state(
        &self,
        info: &RoomInfo,
        pdu: &Pdu,
        before: &Arc<StateMap>,
        prevs: &PrevStates,
    ) -> Result<std::result::Result<(), String>> {
        if follows_current_state(info, pdu, prevs) {
            return Ok(Ok(()));
        }
        let mut current = self.load(info.snapshot)?;
        if prevs.off_timeline {
            current = Arc::new(self.resolve_states(info, &[current, before.clone()], pdu)?);
        }
        let fetch = |id: &EventId| self.pdu(id).ok().flatten();
        match core::auth::check_state_dependent(pdu, &current, fetch) {
            Ok(()) => Ok(Ok(())),
            Err(core::Error::Unauthorized(reason)) => Ok(Err(reason)),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a redaction takes effect: the redacted event must be known, in the same room, and
    /// from the redaction's server or redactable by its sender's power. The auth rules of most
    /// room versions let any member send a redaction; this is the check they leave to servers.
    fn redaction_allowed(&self, pdu: &Pdu, before: &StateMap) -> Result<bool> {
        let Some(target) = pdu.redacts() else {
            return Ok(true);
        };
        let Some(original) = self.pdu(target)? else {
            return Ok(false);
        };
        if original.room_id() != pdu.room_id() {
            return Ok(false);
        }
        if original.sender().server_name() == pdu.sender().server_name() {
            return Ok(true);
        }
        power::can_redact_others(self, pdu.room_version(), before, pdu.sender())
    }

    /// The room's current state once the event is in: the state after it when it is the only
    /// forward extremity, else the resolution of every extremity's state. Sets
    /// `plan.extremities` and `plan.current`.
    fn current_after(
        &self,
        info: &RoomInfo,
        pdu: &Pdu,
        after: Arc<StateMap>,
        plan: &mut StatePlan,
    ) -> Result<Arc<StateMap>> {
        // The event replaces the extremities it follows.
        let mut extremities: Vec<OwnedEventId> = info
            .extremities
            .iter()
            .filter(|e| !pdu.prev_events().contains(e))
            .cloned()
            .collect();
        extremities.push(pdu.event_id().to_owned());
        let current = if let [_] = extremities.as_slice() {
            plan.current = plan.after;
            after
        } else {
            let mut states = vec![after];
            for extremity in &extremities[..extremities.len() - 1] {
                let snapshot = self.state_after_event(extremity)?.ok_or_else(|| {
                    Error::internal(format!("the extremity {extremity} has no state"))
                })?;
                states.push(self.load(snapshot)?);
            }
            let resolved = self.resolve_states(info, &states, pdu)?;
            let current = self.load(info.snapshot)?;
            let parent = info.snapshot.map(|id| (id, &*current));
            plan.current = Some(self.new_snapshot(plan, parent, resolved.clone())?);
            Arc::new(resolved)
        };
        plan.extremities = extremities;
        Ok(current)
    }

    /// The membership changes between two current states (state resolution may change several
    /// at once), and the event's own target as the new state has it.
    fn membership_changes(
        &self,
        old: &StateMap,
        new: &StateMap,
        pdu: &Pdu,
    ) -> Result<Vec<(String, String)>> {
        let mut changes = Vec::new();
        for ((kind, user), event_id) in new {
            if *kind == StateEventType::RoomMember
                && old.get(&(kind.clone(), user.clone())) != Some(event_id)
            {
                changes.push((user.clone(), self.membership_of(event_id, pdu)?));
            }
        }
        for (kind, user) in old.keys() {
            if *kind == StateEventType::RoomMember
                && !new.contains_key(&(kind.clone(), user.clone()))
            {
                changes.push((user.clone(), "leave".to_owned()));
            }
        }
        // A member event that lost to another branch leaves its target as the state has it.
        if *pdu.kind() == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key()
            && !changes.iter().any(|(user, _)| user == target)
        {
            let entry = (StateEventType::RoomMember, target.to_owned());
            if let Some(event_id) = new.get(&entry) {
                changes.push((target.to_owned(), self.membership_of(event_id, pdu)?));
            } else {
                changes.push((target.to_owned(), "leave".to_owned()));
            }
        }
        Ok(changes)
    }

    /// The `membership` of a member event, stored or `pending` (`leave` when unreadable).
    fn membership_of(&self, event_id: &EventId, pending: &Pdu) -> Result<String> {
        let stored;
        let pdu = if event_id == pending.event_id() {
            pending
        } else {
            stored = self
                .pdu(event_id)?
                .ok_or_else(|| Error::internal(format!("state names missing event {event_id}")))?;
            &*stored
        };
        let content: serde_json::Value = serde_json::from_str(pdu.content().get())?;
        Ok(content
            .get("membership")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("leave")
            .to_owned())
    }

    fn load(&self, snapshot: Option<u64>) -> Result<Arc<StateMap>> {
        match snapshot {
            Some(id) => self.snapshots.state(id),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    /// Resolves several states into one; one state is returned as it is. `pending` is the event
    /// being added, which the store does not have yet.
    fn resolve_states(
        &self,
        info: &RoomInfo,
        states: &[Arc<StateMap>],
        pending: &Pdu,
    ) -> Result<StateMap> {
        if let [only] = states {
            return Ok((**only).clone());
        }
        let maps: Vec<StateMap> = states.iter().map(|s| (**s).clone()).collect();
        let fetch = |id: &EventId| {
            if id == pending.event_id() {
                return Some(Arc::new(pending.clone()));
            }
            self.pdu(id).ok().flatten()
        };
        Ok(core::state::resolve(&info.room_version, &maps, fetch)?)
    }

    /// A new snapshot for `target`, as a delta on `parent` where possible. A parent this plan
    /// makes is not stored yet: the delta is then taken on what that one derives from.
    fn new_snapshot(
        &self,
        plan: &mut StatePlan,
        parent: Option<(u64, &StateMap)>,
        target: StateMap,
    ) -> Result<u64> {
        let pending = parent.and_then(|(id, _)| plan.new.iter().find(|(p, ..)| *p == id));
        let snapshot = match pending {
            Some((_, snapshot, _)) => match snapshot.parent {
                Some(stored) => {
                    let base = self.load(Some(stored))?;
                    self.snapshots.derive_to(Some((stored, &base)), &target)?
                }
                None => self.snapshots.derive_to(None, &target)?,
            },
            None => self.snapshots.derive_to(parent, &target)?,
        };
        let id = self.store.generate_id()?;
        plan.new.push((id, snapshot, target));
        Ok(id)
    }
}
