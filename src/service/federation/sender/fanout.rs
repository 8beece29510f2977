//! The fan-out: every event of one of our users, whichever path persisted it, is queued for
//! each other server that must receive it.
//!
//! It is a durable, ordered consumer of the stream, like the push evaluator: a stored progress
//! position (every event up to it is queued), advanced in the same transaction as the queue
//! entries it writes. The room service wakes it after each persisted event; it then reads the
//! timeline of the rooms changed after its progress (all rooms after a restart), in windows of
//! [`WINDOW`] stream positions, and only up to a position already on disk, so that no remote
//! server ever gets an event a crash could make this server lose. After a crash it resumes from
//! the stored progress: nothing acknowledged to a client is lost, and nothing is queued twice.
//!
//! An event goes to the servers with a joined member in the room at the event: for a member
//! event, in the state before or after it, so that a server whose last member leaves, is kicked
//! or is banned gets that event too. An invite's target server is reached by the invite API.

use std::collections::BTreeSet;
use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedRoomId, OwnedServerName, ServerName};

use super::queue::NewPdu;
use super::room_servers::RoomServers;
use crate::error::Result;
use crate::service::Services;

/// Stream positions read per step (one transaction of queue entries each).
const WINDOW: u64 = 256;

impl Services {
    /// Queues the events appended after the fan-out's progress, up to the latest durable
    /// position.
    pub(super) async fn fan_out(&self, servers: &mut RoomServers) -> Result<()> {
        let sender = &self.federation.sender;
        let upto = self.store.sequencer().upto();
        let Some(mut from) = sender.queue.progress()? else {
            sender.queue.set_progress(upto)?;
            return Ok(());
        };
        if from >= upto {
            return Ok(());
        }
        self.store.durable_upto(upto).await?;
        let mut rooms: Vec<OwnedRoomId> = match self.rooms.rooms_changed_since(from) {
            Some(changed) => changed.into_iter().collect(),
            // After a restart: the rooms with an event in the range (one seek each).
            None => {
                let mut rooms = Vec::new();
                for room in self.rooms.room_ids()? {
                    let end = upto.saturating_add(1);
                    if !self
                        .rooms
                        .timeline_range(&room, from, end, false, 1)?
                        .is_empty()
                    {
                        rooms.push(room);
                    }
                }
                rooms
            }
        };
        rooms.sort();
        while from < upto {
            let to = upto.min(from.saturating_add(WINDOW));
            let mut events = Vec::new();
            for room in &rooms {
                for (position, event_id) in self.rooms.timeline_range(
                    room,
                    from,
                    to.saturating_add(1),
                    false,
                    usize::MAX,
                )? {
                    events.push((position, room.clone(), event_id));
                }
            }
            events.sort_by_key(|(position, ..)| *position);
            let mut entries = Vec::new();
            for (position, room_id, event_id) in events {
                let destinations = match self.local_event_destinations(&event_id, servers) {
                    Ok(destinations) => destinations,
                    Err(e) => {
                        // One unreadable event must not stop every later one.
                        tracing::warn!(%event_id, error = %e, "cannot find the destinations of an event; not sent");
                        continue;
                    }
                };
                entries.extend(destinations.into_iter().map(|destination| NewPdu {
                    destination,
                    position,
                    room_id: room_id.clone(),
                    event_id: event_id.clone(),
                }));
            }
            let touched = sender.queue.enqueue_pdus(&entries, Some(to))?;
            self.after_enqueue(touched);
            from = to;
        }
        Ok(())
    }

    /// The servers an event of one of our users goes to (none for other events).
    fn local_event_destinations(
        &self,
        event_id: &EventId,
        servers: &mut RoomServers,
    ) -> Result<BTreeSet<OwnedServerName>> {
        let Some(pdu) = self.rooms.pdu(event_id)? else {
            return Ok(BTreeSet::new());
        };
        if !self.federation.is_us(pdu.sender().server_name()) || pdu.rejected() {
            return Ok(BTreeSet::new());
        }
        self.event_destinations(event_id, servers)
    }

    /// The servers other than ours with a joined member in the event's room before the event
    /// or, for a member event, after it.
    fn event_destinations(
        &self,
        event_id: &EventId,
        servers: &mut RoomServers,
    ) -> Result<BTreeSet<OwnedServerName>> {
        let (Some(pdu), Some(meta)) = (self.rooms.pdu(event_id)?, self.rooms.event_meta(event_id)?)
        else {
            return Ok(BTreeSet::new());
        };
        let room = pdu.room_id();
        let before = servers.at(&self.rooms, room, meta.state_before)?;
        let mut out: BTreeSet<OwnedServerName> = before.keys().cloned().collect();
        // The next event's state before is this one's state after: counted now either way.
        let after = servers.at(&self.rooms, room, meta.state_after.or(meta.state_before))?;
        if *pdu.kind() == TimelineEventType::RoomMember {
            out.extend(after.keys().cloned());
        }
        out.remove(self.federation.server_name());
        Ok(out)
    }

    /// Sends an event of another server through us to the room's other servers (those with a
    /// joined member before or after it, `except` its origin): what a resident server does for
    /// an event it accepted with `send_join`, `send_leave` or `send_knock`. Does nothing when
    /// federation is disabled.
    pub fn broadcast_pdu(&self, event_id: &EventId, except: &ServerName) -> Result<()> {
        if !self.federation.enabled() {
            return Ok(());
        }
        let Some(meta) = self.rooms.event_meta(event_id)? else {
            return Ok(());
        };
        let mut servers = RoomServers::default();
        let entries: Vec<NewPdu> = self
            .event_destinations(event_id, &mut servers)?
            .into_iter()
            .filter(|destination| destination != except)
            .map(|destination| NewPdu {
                destination,
                position: meta.stream_pos,
                room_id: meta.room_id.clone(),
                event_id: event_id.to_owned(),
            })
            .collect();
        let touched = self.federation.sender.queue.enqueue_pdus(&entries, None)?;
        self.after_enqueue(touched);
        Ok(())
    }

    /// Compacts the queues that grew past their bound and wakes the workers.
    fn after_enqueue(&self, touched: Vec<(OwnedServerName, super::queue::DestinationState)>) {
        let sender = &self.federation.sender;
        for (destination, state) in touched {
            if state.overflowing() {
                match sender.queue.compact(&destination) {
                    Ok(dropped) => tracing::warn!(
                        %destination,
                        dropped,
                        "the destination's queue overflowed: only the latest event of each room is kept; it fetches the rest with get_missing_events"
                    ),
                    Err(e) => {
                        tracing::warn!(%destination, error = %e, "compacting a destination queue failed")
                    }
                }
            }
            sender.kick(&destination);
        }
    }
}

/// Starts the fan-out task: one pass now (what the last run did not reach), then one after
/// each wake-up of the room service.
pub(super) fn spawn(services: &Arc<Services>) {
    let mut appended = services.rooms.appended.subscribe();
    let weak = Arc::downgrade(services);
    tokio::spawn(async move {
        let mut servers = RoomServers::default();
        loop {
            {
                let Some(services) = weak.upgrade() else {
                    return;
                };
                if let Err(e) = services.fan_out(&mut servers).await {
                    // Progress stays where it is: the next wake-up tries again.
                    tracing::warn!(error = %e, "queueing events for other servers failed");
                }
            }
            // Ends when the room service is gone (the services were replaced).
            if appended.changed().await.is_err() {
                return;
            }
        }
    });
}
