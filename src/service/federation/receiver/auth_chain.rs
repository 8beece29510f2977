//! Auth events we lack: fetched from the origin (and theirs, recursively, within the budget),
//! each checked like a received event and against its own auth events (check 4), then stored as
//! outliers, rejected or not.

use std::collections::HashSet;

use ruma::{EventId, OwnedEventId};

use super::Peer;
use super::order::dependencies_first;
use crate::core::Pdu;
use crate::error::{Error, Result};

impl Peer<'_> {
    /// Makes sure every auth event of `pdu` is stored.
    pub async fn fetch_auth_events(&self, pdu: &Pdu) -> Result<()> {
        let rooms = &self.services.rooms;
        let known = |id: &EventId| rooms.pdu(id).map(|pdu| pdu.is_some());
        let mut wanted: Vec<OwnedEventId> = Vec::new();
        for id in pdu.auth_events() {
            if !known(id)? {
                wanted.push(id.clone());
            }
        }
        let mut seen: HashSet<OwnedEventId> = wanted.iter().cloned().collect();
        let mut fetched = Vec::new();
        while let Some(event_id) = wanted.pop() {
            let event = self
                .fetch_event(pdu.room_id(), pdu.room_version(), &event_id)
                .await?;
            for auth in event.auth_events() {
                if !seen.contains(auth) && !known(auth)? {
                    seen.insert(auth.clone());
                    wanted.push(auth.clone());
                }
            }
            fetched.push(event);
        }
        self.store_fetched(fetched).await
    }

    /// Stores fetched events as outliers, each after its auth events, each rejected when its
    /// auth events do not allow it. An event whose auth events could not be had is left out.
    pub async fn store_fetched(&self, events: Vec<Pdu>) -> Result<()> {
        let rooms = &self.services.rooms;
        for event in dependencies_first(events, |e| e.auth_events()) {
            if rooms.pdu(event.event_id())?.is_some() {
                continue;
            }
            match rooms.check_against_auth_events(&event) {
                Ok(Ok(())) => rooms.store_outlier(&event).await?,
                Ok(Err(reason)) => {
                    tracing::info!(
                        origin = %self.origin,
                        event_id = %event.event_id(),
                        %reason,
                        "rejected a fetched event"
                    );
                    rooms.store_outlier(&event.with_rejected(true)).await?;
                }
                // Its own auth events are missing: it cannot be checked, so it is not kept.
                Err(Error::NotFound(reason)) => tracing::info!(
                    origin = %self.origin,
                    event_id = %event.event_id(),
                    %reason,
                    "left out a fetched event"
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
