//! Notification records: written by the evaluator, counted for `/sync`, listed by
//! `GET /notifications`, removed when their event is redacted.

use std::collections::HashMap;

use futures_util::FutureExt;
use ruma::push::Action;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::Result;
use crate::service::Services;
use crate::service::receipts::MAIN_THREAD;
use crate::service::rooms::read::Viewer;
use crate::storage::keys;
use crate::util::now_ms;

/// What the evaluator found for one user.
pub struct NewNotification {
    pub user: OwnedUserId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    pub thread: String,
}

/// One stored notification (`user, position →` this).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: Vec<Action>,
    pub highlight: bool,
    pub thread: String,
    /// When the notification was made (ms since the epoch).
    pub ts: u64,
}

/// `user SEP position`.
fn listing_key(user: &UserId, position: u64) -> Vec<u8> {
    let mut key = keys::prefix(user.as_str());
    key.extend_from_slice(&keys::u64_be(position));
    key
}

/// `user SEP room SEP position`.
fn unread_key(user: &UserId, room: &RoomId, position: u64) -> Vec<u8> {
    let mut key = keys::pair(user.as_str(), room.as_str());
    key.push(keys::SEP);
    key.extend_from_slice(&keys::u64_be(position));
    key
}

/// The value of an unread entry: the highlight flag, then the thread.
fn unread_value(highlight: bool, thread: &str) -> Vec<u8> {
    let mut value = vec![u8::from(highlight)];
    value.extend_from_slice(thread.as_bytes());
    value
}

/// Notification and highlight counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

impl Counts {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        self.highlights += u64::from(highlight);
    }

    pub fn to_json(self) -> Value {
        json!({
            "notification_count": self.notifications,
            "highlight_count": self.highlights,
        })
    }
}

/// The most unread notifications one room's count counts (counts stop there).
pub const MAX_COUNTED: usize = 10_000;
/// The most events not evaluated yet that one room's count evaluates itself.
const MAX_PENDING: usize = 1_000;
/// The most notification records one room's count reads, read or not.
pub const MAX_SCANNED: usize = 100_000;

/// Where a user has read up to in one room: the unthreaded receipt (or their join, whichever
/// is later) and each thread's own receipt.
#[derive(Debug, Default, Clone)]
pub struct ReadUpTo {
    pub floor: u64,
    pub threads: HashMap<String, u64>,
}

impl ReadUpTo {
    /// Whether the event at `position` in `thread` has been read.
    pub fn covers(&self, thread: &str, position: u64) -> bool {
        position
            <= self
                .floor
                .max(self.threads.get(thread).copied().unwrap_or(0))
    }
}

impl Services {
    /// Stores what the evaluator found for one event and queues the pushes it calls for.
    pub(crate) fn record_notifications(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        position: u64,
        found: &[NewNotification],
    ) -> Result<()> {
        let ts = now_ms();
        let mut queued = false;
        for new in found {
            let notification = Notification {
                room_id: room_id.to_owned(),
                event_id: event_id.to_owned(),
                actions: new.actions.clone(),
                highlight: new.highlight,
                thread: new.thread.clone(),
                ts,
            };
            self.push.notifications.put(
                listing_key(&new.user, position),
                serde_json::to_vec(&notification)?,
            )?;
            self.push.unread.put(
                unread_key(&new.user, room_id, position),
                unread_value(new.highlight, &new.thread),
            )?;
            queued |= self.queue_pushes(&new.user, position, &notification)?;
        }
        if queued {
            self.push.pushes_queued.notify_one();
        }
        Ok(())
    }

    /// Removes the notifications of a redacted event.
    pub(crate) fn forget_notifications_of(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<()> {
        let Some(meta) = self.rooms.event_meta(event_id)? else {
            return Ok(());
        };
        for (user, _) in self.rooms.members(room_id, None)? {
            let Ok(user) = OwnedUserId::try_from(user) else {
                continue;
            };
            if self.is_local(&user) {
                self.push
                    .notifications
                    .delete(listing_key(&user, meta.stream_pos))?;
                self.push
                    .unread
                    .delete(unread_key(&user, room_id, meta.stream_pos))?;
            }
        }
        Ok(())
    }

    /// Where `user` has read up to in a room (`joined_at`: the position of their join; nothing
    /// before it is theirs to read).
    pub fn read_up_to(&self, room_id: &RoomId, user: &UserId, joined_at: u64) -> Result<ReadUpTo> {
        let mut read = ReadUpTo {
            floor: joined_at,
            threads: HashMap::new(),
        };
        for (key, receipt) in self.receipts.read_receipts(room_id, user)? {
            match key.thread {
                None => read.floor = read.floor.max(receipt.event_pos),
                Some(thread) => {
                    let at = read.threads.entry(thread).or_default();
                    *at = (*at).max(receipt.event_pos);
                }
            }
        }
        Ok(read)
    }

    /// Counts the user's notifications in a room after what they have read, up to stream
    /// position `upto`: for the whole room, or (`per_thread`) for the main timeline and each
    /// thread apart.
    pub fn count_notifications(
        &self,
        room_id: &RoomId,
        user: &UserId,
        read: &ReadUpTo,
        upto: u64,
        per_thread: bool,
    ) -> Result<(Counts, std::collections::BTreeMap<String, Counts>)> {
        let mut room = Counts::default();
        let mut threads: std::collections::BTreeMap<String, Counts> = Default::default();
        // Nothing at or before the floor is unread, whatever the thread.
        let start = unread_key(user, room_id, read.floor.saturating_add(1));
        // Records exist up to where the evaluator got; beyond it, the user's rules are run here.
        let evaluated = self.push.evaluated_upto().min(upto);
        let end = unread_key(user, room_id, evaluated.saturating_add(1));
        let pending = if upto > evaluated {
            self.rooms.timeline_range(
                room_id,
                evaluated.max(read.floor),
                upto.saturating_add(1),
                false,
                MAX_PENDING,
            )?
        } else {
            Vec::new()
        };
        let mut pending_events = Vec::with_capacity(pending.len());
        // Records of events redacted by a pending redaction are still there: leave them out.
        let mut redacted = std::collections::HashSet::new();
        for (position, event_id) in pending {
            if let Some(pdu) = self.rooms.pdu(&event_id)? {
                if let Some(target) = pdu.redacts()
                    && let Some(meta) = self.rooms.event_meta(target)?
                {
                    redacted.insert(meta.stream_pos);
                }
                pending_events.push((position, pdu));
            }
        }
        let prefix_len = start.len() - 8;
        let mut counted = 0;
        for item in self.push.unread.range(&start, &end).take(MAX_SCANNED) {
            if counted == MAX_COUNTED {
                break;
            }
            let (key, value) = item?;
            let Some(position) = keys::read_u64_be(&key[prefix_len..]) else {
                continue;
            };
            let Some((flag, thread)) = value.split_first() else {
                continue;
            };
            let thread = std::str::from_utf8(thread).unwrap_or(MAIN_THREAD);
            if read.covers(thread, position) || redacted.contains(&position) {
                continue;
            }
            counted += 1;
            let highlight = *flag == 1;
            if per_thread && thread != MAIN_THREAD {
                threads.entry(thread.to_owned()).or_default().add(highlight);
            } else {
                room.add(highlight);
            }
        }
        {
            for (position, pdu) in pending_events {
                let Some(mut event) = self.prepare_for_push(room_id, pdu)? else {
                    continue;
                };
                // ruma's evaluation never waits on anything: it is ready at once.
                let found = self
                    .push_actions_for(&mut event, user)
                    .now_or_never()
                    .transpose()?
                    .flatten();
                if let Some(found) = found
                    && !read.covers(&found.thread, position)
                {
                    if per_thread && found.thread != MAIN_THREAD {
                        threads
                            .entry(found.thread)
                            .or_default()
                            .add(found.highlight);
                    } else {
                        room.add(found.highlight);
                    }
                }
            }
        }
        Ok((room, threads))
    }

    /// `GET /notifications`: the user's notifications newest first, before the position in
    /// `from`, at most `limit`, only highlights if asked; with the token of the next page.
    pub fn list_notifications(
        &self,
        user: &UserId,
        device_id: &str,
        from: Option<u64>,
        limit: usize,
        only_highlight: bool,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        let start = listing_key(user, 0);
        let end = listing_key(user, from.unwrap_or(u64::MAX));
        let viewer = Viewer::new(user, device_id, self.account_data.ignored_users(user)?);
        let mut read_cache: HashMap<OwnedRoomId, ReadUpTo> = HashMap::new();
        let mut out = Vec::new();
        let mut next = None;
        let prefix_len = start.len() - 8;
        for item in self.push.notifications.range(&start, &end).rev() {
            let (key, value) = item?;
            let Some(position) = keys::read_u64_be(&key[prefix_len..]) else {
                continue;
            };
            let Ok(notification) = serde_json::from_slice::<Notification>(&value) else {
                continue;
            };
            if only_highlight && !notification.highlight {
                continue;
            }
            if out.len() == limit {
                next = Some(position + 1);
                break;
            }
            let Some(event) = self.rooms.client_event(&notification.event_id, &viewer)? else {
                continue;
            };
            let read = match read_cache.get(&notification.room_id) {
                Some(read) => read.clone(),
                None => {
                    let joined_at = self.rooms.joined_at(&notification.room_id, user)?;
                    let read = self.read_up_to(&notification.room_id, user, joined_at)?;
                    read_cache.insert(notification.room_id.clone(), read.clone());
                    read
                }
            };
            out.push(json!({
                "actions": notification.actions,
                "event": event,
                "read": read.covers(&notification.thread, position),
                "room_id": notification.room_id,
                "ts": notification.ts,
            }));
        }
        Ok((out, next))
    }

    /// The number of unread notifications of the user over all their joined rooms (the badge a
    /// push carries).
    pub fn total_unread(&self, user: &UserId) -> Result<u64> {
        let upto = self.store.sequencer().upto();
        let mut total = 0;
        for room_id in self.rooms.rooms_of(user, "join")? {
            let joined_at = self.rooms.joined_at(&room_id, user)?;
            let read = self.read_up_to(&room_id, user, joined_at)?;
            total += self
                .count_notifications(&room_id, user, &read, upto, false)?
                .0
                .notifications;
        }
        Ok(total)
    }
}
