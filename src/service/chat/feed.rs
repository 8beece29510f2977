//! The notification feed of the Chat API: `GET /notifications` and `POST /notifications/read`.
//!
//! Three sources, merged by stream position, newest first:
//! - the notifications the push evaluator recorded with the user's push rules: messages (a
//!   highlight is a *mention*) and invites (to a direct chat: a *friend request*; to any other
//!   room: a *group invite*). Other notifying events (call invites, tombstones) are not shown:
//!   a call shows as a *missed call* when it was one;
//! - the records the ordered consumer of events made (*friend accepted*, *missed call*, see
//!   [`observer`](super::observer));
//! - the calls of the user's log that expired unanswered with no event after them: *missed
//!   calls* decided when read, at the invite's position (the ID stays the same when a later
//!   hangup makes the record).
//!
//! Read state agrees with Matrix where it can: a message or mention is read once the user's
//! read receipt in that chat (any client, public or private) reaches it; marking it read here
//! sends a private read receipt (`m.read.private`, in the event's thread) — which, as Matrix
//! receipts do, also covers the earlier events of that chat. An invite is read once answered
//! (joined or declined); *friend accepted* also when the receipt reaches the join. Anything is
//! read when marked read by ID, or by "all read" (up to the stream position and time it was
//! given: a call that expires afterwards is a new, unread notification).

use std::collections::{HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::Value;

use super::calls::{CallRecord, MAX_LIFETIME_MS};
use super::notifications::{
    NotificationId, NotificationType, ReadAll, Source, StoredNotification, position_key,
};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::push::notifications::{Notification as PushNotification, ReadUpTo};
use crate::service::receipts::MAIN_THREAD;
use crate::storage::keys;
use crate::util::now_ms;

/// The most feed entries one request looks at (a page, or the unread count, stops there).
pub const MAX_SCANNED: usize = 10_000;
/// The characters of a message's text its notification's preview shows.
const PREVIEW_CHARS: usize = 140;
/// The receipt type marking notifications read sends.
const PRIVATE_READ: &str = "m.read.private";

/// The Chat API's `Notification` object.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub created_at: u64,
    pub read: bool,
    pub from: Option<OwnedUserId>,
    pub chat_id: Option<OwnedRoomId>,
    pub message_id: Option<OwnedEventId>,
    pub call_id: Option<String>,
    pub preview: Option<String>,
}

/// One page of the feed.
#[derive(Debug, Clone)]
pub struct NotificationPage {
    pub notifications: Vec<NotificationView>,
    /// Where the next page starts (see [`NotificationId::order`]); `None` at the end.
    pub next_cursor: Option<u64>,
    /// Unread notifications in the whole feed (of the newest [`MAX_SCANNED`]).
    pub unread_count: u64,
}

/// A feed entry before it is shown.
enum Entry {
    Push(PushNotification),
    Chat(StoredNotification),
    /// A call that expired unanswered.
    Expired(CallRecord),
}

struct Item {
    id: NotificationId,
    entry: Entry,
}

/// A notification shown, with the read receipt that marking it read sends (messages only).
struct Shown {
    view: NotificationView,
    receipt: Option<Receipt>,
}

#[derive(Clone)]
struct Receipt {
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    thread: String,
    position: u64,
}

type Stream<'a> = std::iter::Fuse<Box<dyn Iterator<Item = Result<Item>> + 'a>>;

/// The sources merged newest first.
struct Merged<'a> {
    sources: Vec<Stream<'a>>,
    heads: Vec<Option<Item>>,
}

impl Iterator for Merged<'_> {
    type Item = Result<Item>;

    fn next(&mut self) -> Option<Result<Item>> {
        for (source, head) in self.sources.iter_mut().zip(self.heads.iter_mut()) {
            if head.is_none() {
                match source.next() {
                    Some(Ok(item)) => *head = Some(item),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
        }
        let newest = self
            .heads
            .iter_mut()
            .filter(|head| head.is_some())
            .max_by_key(|head| head.as_ref().map(|item| item.id.order()))?;
        newest.take().map(Ok)
    }
}

/// Reads entries for one user, remembering per room what they have read.
struct FeedReader<'a> {
    services: &'a Services,
    user: &'a UserId,
    ignored: HashSet<OwnedUserId>,
    read_all: ReadAll,
    receipts: HashMap<OwnedRoomId, ReadUpTo>,
}

/// An event's `origin_server_ts`, in ms.
pub(crate) fn timestamp(pdu: &crate::core::Pdu) -> u64 {
    pdu.origin_server_ts().get().into()
}

/// The first characters of a text.
fn preview(text: &str) -> String {
    text.chars().take(PREVIEW_CHARS).collect()
}

impl<'a> FeedReader<'a> {
    fn new(services: &'a Services, user: &'a UserId) -> Result<Self> {
        Ok(Self {
            services,
            user,
            ignored: services.account_data.ignored_users(user)?,
            read_all: services.chat.notifications.read_all(user)?,
            receipts: HashMap::new(),
        })
    }

    /// Whether the user's read receipts in a room cover the event at `position` of `thread`.
    fn receipt_covers(&mut self, room_id: &RoomId, thread: &str, position: u64) -> Result<bool> {
        if let Some(read) = self.receipts.get(room_id) {
            return Ok(read.covers(thread, position));
        }
        let joined_at = self.services.rooms.joined_at(room_id, self.user)?;
        let read = self.services.read_up_to(room_id, self.user, joined_at)?;
        let covers = read.covers(thread, position);
        self.receipts.insert(room_id.to_owned(), read);
        Ok(covers)
    }

    fn marked(&self, id: NotificationId) -> Result<bool> {
        self.services
            .chat
            .notifications
            .is_marked_read(self.user, id)
    }

    /// The entry as the Chat API shows it (`None`: not shown).
    fn show(&mut self, item: &Item) -> Result<Option<Shown>> {
        match &item.entry {
            Entry::Push(notification) => self.show_push(item.id, notification),
            Entry::Chat(stored) => self.show_chat(item.id, stored).map(Some),
            Entry::Expired(record) => self.show_expired(item.id, record).map(Some),
        }
        .map(|shown| {
            shown.filter(|s| {
                s.view
                    .from
                    .as_ref()
                    .is_none_or(|f| !self.ignored.contains(f))
            })
        })
    }

    fn show_push(
        &mut self,
        id: NotificationId,
        notification: &PushNotification,
    ) -> Result<Option<Shown>> {
        let rooms = &self.services.rooms;
        let event_id = &notification.event_id;
        let Some(pdu) = rooms.pdu(event_id)? else {
            return Ok(None);
        };
        if rooms.redacted_by(event_id)?.is_some() {
            return Ok(None);
        }
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let room_id = pdu.room_id();
        let marked = id.position <= self.read_all.position || self.marked(id)?;
        let (kind, read, preview, receipt) = match pdu.kind().to_string().as_str() {
            "m.room.member" => {
                if content.get("membership").and_then(Value::as_str) != Some("invite")
                    || pdu.state_key() != Some(self.user.as_str())
                {
                    return Ok(None);
                }
                let direct = content.get("is_direct").and_then(Value::as_bool) == Some(true);
                // Read once answered: the user's membership is no longer this invite.
                let answered = rooms
                    .state_event(room_id, &StateEventType::RoomMember, self.user.as_str())?
                    .is_none_or(|current| current.event_id() != pdu.event_id());
                if direct {
                    (
                        NotificationType::FriendRequest,
                        marked || answered,
                        None,
                        None,
                    )
                } else {
                    let name = self.room_name(room_id)?;
                    (
                        NotificationType::GroupInvite,
                        marked || answered,
                        name,
                        None,
                    )
                }
            }
            kind @ ("m.room.message"
            | "m.sticker"
            | "m.room.encrypted"
            | "m.poll.start"
            | "org.matrix.msc3381.poll.start") => {
                let read =
                    marked || self.receipt_covers(room_id, &notification.thread, id.position)?;
                let text = match kind {
                    "m.room.message" | "m.sticker" => {
                        content.get("body").and_then(Value::as_str).map(preview)
                    }
                    _ => None,
                };
                let kind = if notification.highlight {
                    NotificationType::Mention
                } else {
                    NotificationType::Message
                };
                let receipt = Receipt {
                    room_id: room_id.to_owned(),
                    event_id: event_id.clone(),
                    thread: notification.thread.clone(),
                    position: id.position,
                };
                (kind, read, text, Some(receipt))
            }
            _ => return Ok(None),
        };
        Ok(Some(Shown {
            view: NotificationView {
                id: id.to_string(),
                kind,
                created_at: timestamp(&pdu),
                read,
                from: Some(pdu.sender().to_owned()),
                chat_id: Some(room_id.to_owned()),
                message_id: matches!(kind, NotificationType::Message | NotificationType::Mention)
                    .then(|| event_id.clone()),
                call_id: None,
                preview,
            },
            receipt,
        }))
    }

    fn show_chat(&mut self, id: NotificationId, stored: &StoredNotification) -> Result<Shown> {
        let read = self.read_all.covers(id.position, stored.created_at)
            || self.marked(id)?
            || (stored.kind == NotificationType::FriendAccepted
                && self.receipt_covers(&stored.chat_id, MAIN_THREAD, id.position)?);
        Ok(Shown {
            view: NotificationView {
                id: id.to_string(),
                kind: stored.kind,
                created_at: stored.created_at,
                read,
                from: Some(stored.from.clone()),
                chat_id: Some(stored.chat_id.clone()),
                message_id: None,
                call_id: stored.call_id.clone(),
                preview: None,
            },
            receipt: None,
        })
    }

    fn show_expired(&mut self, id: NotificationId, record: &CallRecord) -> Result<Shown> {
        let created_at = record.expires_at();
        let read = self.read_all.covers(id.position, created_at) || self.marked(id)?;
        Ok(Shown {
            view: NotificationView {
                id: id.to_string(),
                kind: NotificationType::MissedCall,
                created_at,
                read,
                from: Some(record.caller.clone()),
                chat_id: Some(record.room_id.clone()),
                message_id: None,
                call_id: Some(record.call_id.clone()),
                preview: None,
            },
            receipt: None,
        })
    }

    /// A group's name, for the preview of its invite.
    fn room_name(&self, room_id: &RoomId) -> Result<Option<String>> {
        let rooms = &self.services.rooms;
        let state = rooms.current_state(room_id)?;
        Ok(rooms
            .state_content(&state, &StateEventType::RoomName)?
            .and_then(|content| content.get("name")?.as_str().map(preview))
            .filter(|name| !name.is_empty()))
    }
}

impl Services {
    /// The user's feed entries before the order key `before` (see [`NotificationId::order`]),
    /// newest first. With `unread_since`, only what may be unread after it: push notifications
    /// after its position, and calls that may have expired after its time.
    fn feed_items<'a>(
        &'a self,
        user: &'a UserId,
        before: u64,
        unread_since: Option<ReadAll>,
        now: u64,
    ) -> Merged<'a> {
        // A push notification at p has order 2p, a record 2p + 1.
        let push_before = before / 2 + before % 2;
        let chat_before = before / 2;
        let push_from = unread_since.map_or(0, |r| r.position.saturating_add(1));
        let push: Box<dyn Iterator<Item = Result<Item>> + 'a> = if push_from < push_before {
            let start = position_key(user, push_from);
            let prefix_len = start.len() - 8;
            Box::new(
                self.push
                    .notifications
                    .range(&start, &position_key(user, push_before))
                    .rev()
                    .filter_map(move |item| match item {
                        Ok((key, value)) => {
                            let position = keys::read_u64_be(&key[prefix_len..])?;
                            let notification = serde_json::from_slice(&value).ok()?;
                            Some(Ok(Item {
                                id: NotificationId {
                                    source: Source::Push,
                                    position,
                                },
                                entry: Entry::Push(notification),
                            }))
                        }
                        Err(e) => Some(Err(Error::from(e))),
                    }),
            )
        } else {
            Box::new(std::iter::empty())
        };
        let chat = self
            .chat
            .notifications
            .before(user, chat_before)
            .map(|item| {
                item.map(|(position, stored)| Item {
                    id: NotificationId {
                        source: Source::Chat,
                        position,
                    },
                    entry: Entry::Chat(stored),
                })
            });
        let expired = self
            .chat
            .calls
            .log_before(user, chat_before)
            .take_while(move |item| match (item, unread_since) {
                // Older calls expired before "all read" was given.
                (Ok((position, record)), Some(since)) => {
                    *position > since.position
                        || record.started_at.saturating_add(MAX_LIFETIME_MS) >= since.at
                }
                _ => true,
            })
            .filter_map(move |item| match item {
                Ok((position, record)) => record.missed_by_expiry(user, now).then(|| {
                    Ok(Item {
                        id: NotificationId {
                            source: Source::Chat,
                            position,
                        },
                        entry: Entry::Expired(record),
                    })
                }),
                Err(e) => Some(Err(e)),
            });
        let sources: Vec<Stream<'a>> = vec![
            push.fuse(),
            (Box::new(chat) as Box<dyn Iterator<Item = Result<Item>> + 'a>).fuse(),
            (Box::new(expired) as Box<dyn Iterator<Item = Result<Item>> + 'a>).fuse(),
        ];
        Merged {
            heads: sources.iter().map(|_| None).collect(),
            sources,
        }
    }

    /// Waits until the push evaluator (and the Chat API's step in it) has reached the present:
    /// the notification feed and the call log are then complete.
    pub(crate) async fn chat_caught_up(&self) {
        self.push
            .wait_evaluated(self.store.sequencer().upto())
            .await;
    }

    /// `GET /notifications`: the notifications before the cursor `before`, newest first, at
    /// most `limit`, only the unread ones if asked; with the unread count.
    pub async fn chat_notifications(
        &self,
        user: &UserId,
        before: Option<u64>,
        limit: usize,
        unread_only: bool,
    ) -> Result<NotificationPage> {
        self.chat_caught_up().await;
        let now = now_ms();
        let mut reader = FeedReader::new(self, user)?;
        let mut notifications = Vec::new();
        let mut next_cursor = None;
        let mut last = None;
        for (scanned, item) in self
            .feed_items(user, before.unwrap_or(u64::MAX), None, now)
            .enumerate()
        {
            let item = item?;
            if scanned == MAX_SCANNED {
                // Enough for one request: the next page goes on from here.
                next_cursor = Some(last.unwrap_or(item.id.order().saturating_add(1)));
                break;
            }
            let Some(shown) = reader.show(&item)? else {
                last = Some(item.id.order());
                continue;
            };
            if unread_only && shown.view.read {
                last = Some(item.id.order());
                continue;
            }
            if notifications.len() == limit {
                next_cursor = last;
                break;
            }
            notifications.push(shown.view);
            last = Some(item.id.order());
        }
        let unread_count = self.count_unread(&mut reader, user, now)?.0;
        Ok(NotificationPage {
            notifications,
            next_cursor,
            unread_count,
        })
    }

    /// The unread notifications (of the newest [`MAX_SCANNED`] entries that may be unread),
    /// with the newest unread message of each (room, thread): where "all read" puts a receipt.
    fn count_unread(
        &self,
        reader: &mut FeedReader<'_>,
        user: &UserId,
        now: u64,
    ) -> Result<(u64, Vec<Receipt>)> {
        let mut count = 0;
        let mut receipts: HashMap<(OwnedRoomId, String), Receipt> = HashMap::new();
        let since = reader.read_all;
        for item in self
            .feed_items(user, u64::MAX, Some(since), now)
            .take(MAX_SCANNED)
        {
            let item = item?;
            let Some(shown) = reader.show(&item)? else {
                continue;
            };
            if shown.view.read {
                continue;
            }
            count += 1;
            if let Some(receipt) = shown.receipt {
                receipts
                    .entry((receipt.room_id.clone(), receipt.thread.clone()))
                    .and_modify(|r| {
                        if r.position < receipt.position {
                            *r = receipt.clone();
                        }
                    })
                    .or_insert(receipt);
            }
        }
        Ok((count, receipts.into_values().collect()))
    }

    /// One notification of the user's feed, if it is one.
    pub fn chat_notification(
        &self,
        user: &UserId,
        id: NotificationId,
    ) -> Result<Option<NotificationView>> {
        let mut reader = FeedReader::new(self, user)?;
        Ok(self
            .feed_item(user, id, now_ms())?
            .map(|item| reader.show(&item))
            .transpose()?
            .flatten()
            .map(|shown| shown.view))
    }

    fn feed_item(&self, user: &UserId, id: NotificationId, now: u64) -> Result<Option<Item>> {
        let entry = match id.source {
            Source::Push => self
                .push
                .notifications
                .get(position_key(user, id.position))?
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .map(Entry::Push),
            Source::Chat => match self.chat.notifications.get(user, id.position)? {
                Some(stored) => Some(Entry::Chat(stored)),
                None => self
                    .chat
                    .calls
                    .logged_at(user, id.position)?
                    .filter(|record| record.missed_by_expiry(user, now))
                    .map(Entry::Expired),
            },
        };
        Ok(entry.map(|entry| Item { id, entry }))
    }

    /// `POST /notifications/read` with IDs: marks them read (404 when one is not in the
    /// user's feed; then none is marked). Messages and mentions also get a private read
    /// receipt in their chat.
    pub async fn mark_chat_notifications_read(
        &self,
        user: &UserId,
        ids: &[NotificationId],
    ) -> Result<()> {
        self.chat_caught_up().await;
        let now = now_ms();
        let mut reader = FeedReader::new(self, user)?;
        let mut receipts = Vec::new();
        for id in ids {
            let shown = self
                .feed_item(user, *id, now)?
                .map(|item| reader.show(&item))
                .transpose()?
                .flatten()
                .ok_or_else(|| Error::NotFound(format!("no notification {id}")))?;
            receipts.extend(shown.receipt);
        }
        for id in ids {
            self.chat.notifications.mark_read(user, *id)?;
        }
        // The marks are on disk before the answer says they are made.
        self.store.durable().await?;
        self.send_read_receipts(user, receipts).await;
        Ok(())
    }

    /// `POST /notifications/read` with `all`: everything in the feed now is read; the newest
    /// unread message of each chat gets a private read receipt.
    pub async fn mark_all_chat_notifications_read(&self, user: &UserId) -> Result<()> {
        self.chat_caught_up().await;
        let now = now_ms();
        let position = self.store.sequencer().upto();
        let mut reader = FeedReader::new(self, user)?;
        let (_, receipts) = self.count_unread(&mut reader, user, now)?;
        self.chat
            .notifications
            .set_read_all(user, ReadAll { position, at: now })?;
        self.store.durable().await?;
        self.send_read_receipts(user, receipts).await;
        Ok(())
    }

    /// Private read receipts (they move forwards only); a chat the user has left takes none.
    async fn send_read_receipts(&self, user: &UserId, receipts: Vec<Receipt>) {
        for receipt in receipts {
            if let Err(e) = self
                .send_receipt(
                    user,
                    &receipt.room_id,
                    PRIVATE_READ,
                    &receipt.event_id,
                    Some(&receipt.thread),
                )
                .await
            {
                tracing::debug!(error = %e, "no read receipt for a notification read");
            }
        }
    }
}
