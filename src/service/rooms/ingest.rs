//! Events that were not built by this room's append path: from another server (federation), or
//! forks built by hand. Their state is resolved from their `prev_events`, and the room's current
//! state is resolved over its forward extremities with state resolution v2.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId};

use super::{RoomInfo, Rooms, StatePlan};
use crate::core::{self, Pdu, StateMap};
use crate::error::{Error, Result};

impl Rooms {
    /// Adds a signed event whose `prev_events` are all known. It is checked against its auth
    /// events and against the state before it (resolved over its `prev_events`); the room's
    /// current state becomes the resolution of its forward extremities. An event already known is
    /// accepted again without change.
    pub async fn ingest(&self, pdu: Pdu) -> Result<()> {
        let room_id = pdu.room_id().to_owned();
        let lock = self.room_lock(&room_id)?;
        let guard = lock.lock().await;
        if self.pdus.contains(pdu.event_id().as_bytes())? {
            drop(guard);
            return self.store.durable().await.map_err(Into::into);
        }
        let mut info = self
            .info(&room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        if pdu.room_version() != &info.room_version {
            return Err(Error::BadJson(
                "the event is of another room version".into(),
            ));
        }
        let plan = self.ingest_plan(&info, &pdu)?;
        self.persist(&mut info, &pdu, plan, None)?;
        drop(guard);
        self.store.durable().await?;
        self.announce(&room_id, super::member_target(&pdu).as_deref())?;
        Ok(())
    }

    /// The snapshot of the state after a known event.
    fn state_after_id(&self, event_id: &EventId) -> Result<Option<u64>> {
        let meta = self
            .event_meta(event_id)?
            .ok_or_else(|| Error::NotFound(format!("unknown event {event_id}")))?;
        Ok(meta.state_after.or(meta.state_before))
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

    /// A new snapshot for `target`, as a delta on `parent` where possible.
    fn new_snapshot(
        &self,
        plan: &mut StatePlan,
        parent: Option<(u64, &StateMap)>,
        target: StateMap,
    ) -> Result<u64> {
        let snapshot = self.snapshots.derive_to(parent, &target)?;
        let id = self.store.generate_id()?;
        plan.new.push((id, snapshot, target));
        Ok(id)
    }

    fn ingest_plan(&self, info: &RoomInfo, pdu: &Pdu) -> Result<StatePlan> {
        if pdu.prev_events().is_empty() {
            return Err(Error::BadJson(
                "only a create event has no prev_events".into(),
            ));
        }
        let mut plan = StatePlan {
            before: None,
            after: None,
            current: None,
            new: Vec::new(),
            extremities: Vec::new(),
        };
        // The state before the event: the resolution of the states after its prev_events.
        let prev_ids: Vec<Option<u64>> = pdu
            .prev_events()
            .iter()
            .map(|id| self.state_after_id(id))
            .collect::<Result<_>>()?;
        let prev_states: Vec<Arc<StateMap>> = prev_ids
            .iter()
            .map(|id| self.load(*id))
            .collect::<Result<_>>()?;
        let before = if let [only] = prev_ids.as_slice() {
            plan.before = *only;
            prev_states[0].clone()
        } else {
            let resolved = self.resolve_states(info, &prev_states, pdu)?;
            let parent = prev_ids[0].map(|id| (id, &*prev_states[0]));
            let id = self.new_snapshot(&mut plan, parent, resolved.clone())?;
            plan.before = Some(id);
            Arc::new(resolved)
        };
        let fetch = |id: &EventId| self.pdu(id).ok().flatten();
        core::auth::check(pdu, &before, fetch)?;

        let after = match pdu.state_entry() {
            Some(entry) => {
                let mut after = (*before).clone();
                after.insert(entry, pdu.event_id().to_owned());
                let parent = plan.before.map(|id| (id, &*before));
                let id = self.new_snapshot(&mut plan, parent, after.clone())?;
                plan.after = Some(id);
                Arc::new(after)
            }
            None => {
                plan.after = plan.before;
                before
            }
        };

        // The forward extremities: the event replaces the ones it follows.
        let mut extremities: Vec<OwnedEventId> = info
            .extremities
            .iter()
            .filter(|e| !pdu.prev_events().contains(e))
            .cloned()
            .collect();
        extremities.push(pdu.event_id().to_owned());
        if let [_] = extremities.as_slice() {
            plan.current = plan.after;
        } else {
            let mut states = vec![after];
            for extremity in &extremities[..extremities.len() - 1] {
                states.push(self.load(self.state_after_id(extremity)?)?);
            }
            let resolved = self.resolve_states(info, &states, pdu)?;
            let current = self.load(info.snapshot)?;
            let parent = info.snapshot.map(|id| (id, &*current));
            plan.current = Some(self.new_snapshot(&mut plan, parent, resolved)?);
        }
        plan.extremities = extremities;
        Ok(plan)
    }
}
