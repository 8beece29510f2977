//! Room ephemeral events in `/sync`: `m.typing` and `m.receipt` under `ephemeral`, and the
//! in-memory index of which rooms had ephemeral changes at which stream positions, so that an
//! incremental sync looks only at those rooms (like `rooms::changes` does for timelines).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::Services;
use super::receipts::ReceiptKind;
use super::sync::SyncRequest;
use crate::core::filter::RoomEventFilter;
use crate::error::Result;

/// Entries remembered; older ones fall out of the window.
const WINDOW: usize = 100_000;

/// Who an ephemeral change concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member of the room (typing, public read receipts).
    Everyone,
    /// Only this user (their private read receipt).
    Only(OwnedUserId),
    /// Every member but this user (their delivered receipt, which is for the senders).
    AllBut(OwnedUserId),
}

impl Audience {
    /// Whether the change concerns `user`.
    pub fn includes(&self, user: &UserId) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::Only(owner) => owner == user,
            Audience::AllBut(owner) => owner != user,
        }
    }
}

/// Recent ephemeral changes: stream position → the rooms changed there and for whom. One
/// position may carry several rooms (the delivered receipts one sync records).
pub struct EphemeralChanges {
    by_position: BTreeMap<u64, Vec<(OwnedRoomId, Audience)>>,
    entries: usize,
    /// Changes after this position are all in `by_position`.
    complete_after: u64,
}

impl EphemeralChanges {
    /// Starts empty: only changes after `start` (the position at start-up) are known.
    pub fn new(start: u64) -> Self {
        Self {
            by_position: BTreeMap::new(),
            entries: 0,
            complete_after: start,
        }
    }

    /// Records that `room_id` changed at `position` for `audience`.
    pub fn record(&mut self, position: u64, room_id: &RoomId, audience: Audience) {
        self.by_position
            .entry(position)
            .or_default()
            .push((room_id.to_owned(), audience));
        self.entries += 1;
        while self.entries > WINDOW {
            let Some((oldest, rooms)) = self.by_position.pop_first() else {
                break;
            };
            self.entries = self.entries.saturating_sub(rooms.len());
            self.complete_after = self.complete_after.max(oldest);
        }
    }

    /// The rooms with changes for `user` after `since`, or `None` if `since` is older than the
    /// window (then every room must be looked at).
    pub fn since(&self, since: u64, user: &UserId) -> Option<HashSet<OwnedRoomId>> {
        if since < self.complete_after {
            return None;
        }
        Some(
            self.by_position
                .range(since.saturating_add(1)..)
                .flat_map(|(_, rooms)| rooms)
                .filter(|(_, audience)| audience.includes(user))
                .map(|(room, _)| room.clone())
                .collect(),
        )
    }
}

/// Timeline events a `/sync` handed to a device: the newest one sent by someone else that is
/// not a state event (a message, a reaction, …), for which the user gets a delivered receipt
/// once the response is ready.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// The event's sender: the one member whose long poll the receipt ends.
    pub sender: OwnedUserId,
}

/// The delivered receipts `/sync` responses call for, recorded off the response path: a sync
/// answers at once, and one writer records what many syncs delivered in one transaction (a
/// message to a room of a thousand members makes a thousand deliveries at once).
pub struct DeliveryQueue {
    sender: mpsc::UnboundedSender<Deliveries>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Deliveries>>>,
}

/// What one sync response handed to one user.
type Deliveries = (OwnedUserId, Vec<Delivery>);

impl Default for DeliveryQueue {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

impl DeliveryQueue {
    /// Queues what one sync response handed to `user`.
    pub fn record(&self, user: &UserId, deliveries: Vec<Delivery>) {
        if !deliveries.is_empty() {
            // The writer only stops with the server.
            let _ = self.sender.send((user.to_owned(), deliveries));
        }
    }
}

/// Deliveries recorded in one transaction at most.
const DELIVERY_BATCH: usize = 4096;

impl Services {
    /// Starts the writer of delivered receipts: it sleeps until deliveries are queued, then
    /// records everything queued so far at once. Call once, at start-up.
    pub fn spawn_delivery_writer(self: &Arc<Self>) {
        let receiver = self
            .deliveries
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut receiver) = receiver else {
            return;
        };
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < DELIVERY_BATCH
                    && let Ok(more) = receiver.try_recv()
                {
                    batch.push(more);
                }
                let Some(services) = services.upgrade() else {
                    break;
                };
                if let Err(e) = services.record_deliveries(batch).await {
                    tracing::warn!(error = %e, "recording delivered receipts failed");
                }
            }
        });
    }
}

impl Services {
    /// The rooms with typing or receipt changes for `user` after `since`, or `None` when that
    /// is no longer known (every room must then be looked at).
    pub(crate) fn ephemeral_rooms_since(
        &self,
        user: &UserId,
        since: u64,
    ) -> Option<HashSet<OwnedRoomId>> {
        let mut rooms = self.typing.rooms_changed_since(since, user)?;
        rooms.extend(self.receipts.rooms_changed_since(since, user)?);
        Some(rooms)
    }

    /// The `ephemeral.events` of a joined room: `m.typing` with the current typers when they
    /// changed after `since` (on an initial sync: when someone types), and `m.receipt` with the
    /// receipts written in `(since, upto]` (all of them on an initial sync). Private receipts
    /// reach only their owner, and a delivered receipt only the sender of the event it is on.
    ///
    /// The `ephemeral` room filter applies: `types` / `not_types` to the event types,
    /// `senders` / `not_senders` to the users inside them (typers, receipt owners), `limit` to
    /// the number of events.
    pub(crate) fn room_ephemeral(
        &self,
        request: &SyncRequest,
        room_id: &RoomId,
        since: Option<u64>,
        upto: u64,
    ) -> Result<Vec<Value>> {
        let user = &request.user_id;
        let filter = &request.filter.room.ephemeral;
        let type_filter = RoomEventFilter {
            senders: None,
            not_senders: Vec::new(),
            ..filter.clone()
        };
        let wants_type = |kind: &str| type_filter.matches(room_id.as_str(), "", kind, false);
        let wants_user = |who: &str| {
            !filter.not_senders.iter().any(|s| s == who)
                && filter
                    .senders
                    .as_ref()
                    .is_none_or(|senders| senders.iter().any(|s| s == who))
        };
        let mut events = Vec::new();
        if wants_type("m.typing")
            && let Some((typers, changed_at)) = self.typing.typers(room_id)
        {
            let changed = match since {
                Some(since) => changed_at > since,
                None => !typers.is_empty(),
            };
            if changed {
                let user_ids: Vec<&str> = typers
                    .iter()
                    .map(|u| u.as_str())
                    .filter(|u| wants_user(u))
                    .collect();
                events.push(json!({ "type": "m.typing", "content": { "user_ids": user_ids } }));
            }
        }
        if wants_type("m.receipt") {
            let mut content: Map<String, Value> = Map::new();
            for (key, receipt) in self.receipts.changed_since(room_id, user, since, upto)? {
                if !key.kind.audience(&key.user).includes(user) || !wants_user(key.user.as_str()) {
                    continue;
                }
                // A delivered receipt is for the sender of the event it is on.
                if key.kind == ReceiptKind::Delivered
                    && self
                        .rooms
                        .pdu(&receipt.event_id)?
                        .is_none_or(|pdu| pdu.sender() != user)
                {
                    continue;
                }
                let mut info = json!({ "ts": receipt.ts });
                if let Some(thread) = &key.thread {
                    info["thread_id"] = json!(thread);
                }
                let by_kind = content
                    .entry(receipt.event_id.to_string())
                    .or_insert_with(|| json!({}));
                by_kind[key.kind.as_str()][key.user.as_str()] = info;
            }
            if !content.is_empty() {
                events.push(json!({ "type": "m.receipt", "content": content }));
            }
        }
        events.truncate(filter.limit.unwrap_or(usize::MAX));
        Ok(events)
    }

    /// Records the delivered receipts of `/sync` responses (see [`Delivery`]), each only when it
    /// is newer than the user's current one in that room, and wakes the senders of the events.
    async fn record_deliveries(&self, batch: Vec<Deliveries>) -> Result<()> {
        let mut receipts = Vec::new();
        for (user, deliveries) in batch {
            for delivery in deliveries {
                let Some(meta) = self.rooms.event_meta(&delivery.event_id)? else {
                    continue;
                };
                receipts.push(super::receipts::NewReceipt {
                    room_id: delivery.room_id,
                    kind: ReceiptKind::Delivered,
                    user: user.clone(),
                    thread: None,
                    event_id: delivery.event_id,
                    event_pos: meta.stream_pos,
                    recipient: Some(delivery.sender),
                });
            }
        }
        let written = self.receipts.write(&receipts)?;
        self.announce_receipts(&written).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_audiences() {
        let mut changes = EphemeralChanges::new(10);
        let a = ruma::room_id!("!a:x");
        let b = ruma::room_id!("!b:x");
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        changes.record(11, a, Audience::Everyone);
        changes.record(12, b, Audience::Only(alice.to_owned()));
        changes.record(12, a, Audience::AllBut(bob.to_owned()));
        assert_eq!(changes.since(5, alice), None);
        assert_eq!(changes.since(10, alice).unwrap().len(), 2);
        let for_bob = changes.since(11, bob).unwrap();
        assert!(for_bob.is_empty(), "{for_bob:?}");
        let for_alice = changes.since(11, alice).unwrap();
        assert!(for_alice.contains(a) && for_alice.contains(b));
        assert!(changes.since(12, alice).unwrap().is_empty());
    }
}
