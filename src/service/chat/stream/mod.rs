//! The Chat API's event stream (`GET /ws`): what changed for a user after a stream position, told
//! in chat terms (a new message, an edit, a reaction, a friend request, a group change …).
//!
//! Nothing here keeps its own log: a step runs the incremental `/sync` computation from the
//! client's cursor (a sync token) and translates its answer, so the stream sees exactly what a
//! Matrix client syncing from that token sees, in the same order, woken by the same notifier.
//! When a room changed more than one sync step carries (its timeline is `limited`), the events
//! it left out are read page by page from the timeline index ([`Gap`]), so that nothing is
//! skipped and no step holds an unbounded backlog in memory.
//!
//! `events` names what the stream tells, `classify` reads store changes as those, and
//! `connections` holds what the WebSocket connections share (timings, counts).

mod classify;
mod connections;
mod events;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use ruma::events::StateEventType;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};

use crate::core::filter::Filter;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::chat::friends::Friendship;
use crate::service::chat::notifications::{NotificationId, Source, position_key};
use crate::service::sync::{SyncRequest, parse_token};
use crate::storage::keys;
use classify::{Classifier, end_reason, ephemeral_events};
pub use connections::{DEFAULT_HEARTBEAT, DEFAULT_STALL_LIMIT, OpenConnection, Stream};
pub use events::{CallSignal, ChatEvent, EndReason, GroupChange};

/// Timeline events one step reads per room before the rest is read as a [`Gap`].
const TIMELINE_PAGE: usize = 100;
/// Timeline entries one gap page looks at.
const GAP_PAGE: usize = 200;
/// Notification feed entries one step (or one [`NotificationGap`] page) reads at most.
const NOTIFICATION_PAGE: usize = 100;
/// The device the stream syncs as. It is no real device, so the stream never takes (and
/// acknowledges) the to-device messages of the connection's own device, which a Matrix client
/// logged in with the same session may still be waiting for.
const STREAM_DEVICE: &str = "org.roost.chat.stream";
/// The timeline event types the stream translates; the others are not read at all.
const TIMELINE_TYPES: &[&str] = &[
    "m.room.message",
    "m.sticker",
    "m.room.encrypted",
    "m.reaction",
    "m.room.redaction",
    "m.call.*",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.power_levels",
    "m.room.member",
];

/// Events of a room's timeline a step did not carry: those strictly between two stream
/// positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub room: OwnedRoomId,
    pub after: u64,
    pub before: u64,
}

/// Chat events with the stream positions they are told at.
type Positioned = Vec<(u64, ChatEvent)>;

/// Entries of the user's notification feed a step did not carry: those at positions in
/// `(after, upto]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationGap {
    pub after: u64,
    pub upto: u64,
}

/// What one step of the stream found after its cursor.
#[derive(Debug, Default)]
pub struct Step {
    /// The cursor after this step: everything up to it is in `gaps` and `events`.
    pub next: u64,
    /// Older events of rooms that changed more than one step carries; each is to be read (with
    /// [`Services::chat_stream_gap`]) and sent before `events`.
    pub gaps: Vec<Gap>,
    /// The rest, in stream order: timeline events, invites and (the first page of)
    /// notifications by their positions, then typing, receipts and friends' presence.
    pub events: Vec<ChatEvent>,
    /// Notifications beyond the first page (a client resuming from an old cursor), to be read
    /// with [`Services::chat_stream_notifications`] and sent after `events`.
    pub notifications: Option<NotificationGap>,
}

impl Services {
    /// The position a new stream starts from: now. Durable, like a sync token, so that a cursor
    /// handed out survives a crash.
    pub async fn chat_stream_start(&self) -> Result<u64> {
        let upto = self.store.sequencer().upto();
        self.store.durable_upto(upto).await?;
        Ok(upto)
    }

    /// One step of `user`'s stream: everything after `since`, as an incremental `/sync` from that
    /// token sees it (without waiting).
    pub async fn chat_stream_step(&self, user: &UserId, since: u64) -> Result<Step> {
        let response = self
            .sync(SyncRequest {
                user_id: user.to_owned(),
                device_id: STREAM_DEVICE.to_owned(),
                since: Some(since),
                full_state: false,
                filter: stream_filter(),
                timeout: Duration::ZERO,
                ignored: Default::default(),
            })
            .await?;
        let synced = response["next_batch"]
            .as_str()
            .and_then(|t| parse_token(t).ok())
            .ok_or_else(|| Error::internal("sync answered without next_batch"))?;
        // The feed is written by the push evaluator after the events. When it is behind (it is
        // waited for a while only), the step ends where the feed is complete, and the next step
        // reads on from there: nothing after that is taken from this step, so nothing is
        // skipped (its typing, receipts and presence may be told again).
        self.push.wait_evaluated(synced).await;
        let next = self.push.evaluated_through(synced).max(since);
        let mut classifier = Classifier::new(self, user);
        let mut step = Step {
            next,
            ..Step::default()
        };
        // Timeline events and invites, by stream position.
        let mut positioned: Vec<(u64, ChatEvent)> = Vec::new();
        let mut ephemeral = Vec::new();
        let mut ended = HashSet::new();
        for section in ["join", "leave"] {
            let Some(rooms) = response["rooms"][section].as_object() else {
                continue;
            };
            for (room, body) in rooms {
                let room_id = room_id(room)?;
                let events = body["timeline"]["events"].as_array();
                let mut first = None;
                for event in events.into_iter().flatten() {
                    let Some(id) = event["event_id"]
                        .as_str()
                        .and_then(|id| OwnedEventId::try_from(id).ok())
                    else {
                        continue;
                    };
                    let (Some(pdu), Some(meta)) =
                        (self.rooms.pdu(&id)?, self.rooms.event_meta(&id)?)
                    else {
                        continue;
                    };
                    first.get_or_insert(meta.stream_pos);
                    if meta.stream_pos > next {
                        continue;
                    }
                    if let Some(event) = classifier.classify(&pdu, &meta)? {
                        if let ChatEvent::FriendRemoved { room, .. } = &event {
                            ended.insert(room.clone());
                        }
                        positioned.push((meta.stream_pos, event));
                    }
                }
                if body["timeline"]["limited"].as_bool() == Some(true)
                    && let Some(first) = first
                {
                    step.gaps.push(Gap {
                        room: room_id.clone(),
                        after: since,
                        before: first.min(next.saturating_add(1)),
                    });
                }
                for event in body["ephemeral"]["events"].as_array().into_iter().flatten() {
                    ephemeral.extend(ephemeral_events(user, &room_id, event));
                }
            }
        }
        if let Some(invites) = response["rooms"]["invite"].as_object() {
            for room in invites.keys() {
                let room_id = room_id(room)?;
                let Some(pdu) =
                    self.rooms
                        .state_event(&room_id, &StateEventType::RoomMember, user.as_str())?
                else {
                    continue;
                };
                let Some(meta) = self.rooms.event_meta(pdu.event_id())? else {
                    continue;
                };
                if meta.stream_pos <= next
                    && let Some(event) = classifier.classify(&pdu, &meta)?
                {
                    positioned.push((meta.stream_pos, event));
                }
            }
        }
        positioned.extend(self.forgotten_direct_chats(user, since, next, &ended)?);
        let (notifications, rest) = self.notification_page(
            user,
            &NotificationGap {
                after: since,
                upto: next,
            },
        )?;
        positioned.extend(notifications);
        step.notifications = rest;
        positioned.sort_by_key(|(position, _)| *position);
        step.events = positioned.into_iter().map(|(_, event)| event).collect();
        step.events.extend(ephemeral);
        for event in response["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(sender) = event["sender"]
                .as_str()
                .and_then(|s| OwnedUserId::try_from(s).ok())
            else {
                continue;
            };
            // Only friends' presence is news to a chat client; a block either way hides it (a
            // blocked user must not learn when the blocker is online).
            if sender != user
                && matches!(self.friendship(user, &sender)?, Friendship::Friends(_))
                && !self.blocked_between(user, &sender)?
            {
                step.events.push(ChatEvent::Presence {
                    user: sender,
                    content: event["content"].clone(),
                });
            }
        }
        Ok(step)
    }

    /// One page of a [`Gap`]: its oldest events the user may see, translated, and what is left of
    /// the gap (`None` when it is done).
    pub fn chat_stream_gap(
        &self,
        user: &UserId,
        gap: &Gap,
    ) -> Result<(Vec<ChatEvent>, Option<Gap>)> {
        let reader = self.rooms.reader(&gap.room, user)?;
        let ignored = self.account_data.ignored_users(user)?;
        let entries = self
            .rooms
            .timeline_range(&gap.room, gap.after, gap.before, false, GAP_PAGE)?;
        let rest = match entries.last() {
            Some((last, _)) if entries.len() == GAP_PAGE => Some(Gap {
                room: gap.room.clone(),
                after: *last,
                before: gap.before,
            }),
            _ => None,
        };
        let filter = stream_filter();
        let mut classifier = Classifier::new(self, user);
        let mut events = Vec::new();
        for (_, id) in entries {
            let (Some(pdu), Some(meta)) = (self.rooms.pdu(&id)?, self.rooms.event_meta(&id)?)
            else {
                continue;
            };
            if ignored.contains(pdu.sender())
                || !filter.room.timeline.matches(
                    gap.room.as_str(),
                    pdu.sender().as_str(),
                    &pdu.kind().to_string(),
                    false,
                )
                || !self.rooms.is_visible(&reader, &pdu, &meta)?
            {
                continue;
            }
            events.extend(classifier.classify(&pdu, &meta)?);
        }
        Ok((events, rest))
    }

    /// One page of a [`NotificationGap`]: its oldest entries of the user's notification feed,
    /// and what is left of it (`None` when it is done).
    pub fn chat_stream_notifications(
        &self,
        user: &UserId,
        gap: &NotificationGap,
    ) -> Result<(Vec<ChatEvent>, Option<NotificationGap>)> {
        let (events, rest) = self.notification_page(user, gap)?;
        Ok((events.into_iter().map(|(_, event)| event).collect(), rest))
    }

    /// The oldest entries (about [`NOTIFICATION_PAGE`]) of the user's notification feed in the
    /// gap, at the positions of the events that made them, and what is left of the gap. The
    /// caller makes sure the push evaluator got to `gap.upto` (see [`Self::chat_stream_step`]).
    /// A missed call that expires unanswered with no event after it becomes one when the feed
    /// is read, never here.
    fn notification_page(
        &self,
        user: &UserId,
        gap: &NotificationGap,
    ) -> Result<(Positioned, Option<NotificationGap>)> {
        let mut ids = Vec::new();
        let start = position_key(user, gap.after.saturating_add(1));
        let prefix_len = start.len() - 8;
        for item in self
            .push
            .notifications
            .range(&start, &position_key(user, gap.upto.saturating_add(1)))
            .take(NOTIFICATION_PAGE)
        {
            let (key, _) = item?;
            if let Some(position) = keys::read_u64_be(&key[prefix_len..]) {
                ids.push(NotificationId {
                    source: Source::Push,
                    position,
                });
            }
        }
        // With a full page of push entries, later chat entries belong to a later page.
        let chat_upto = match ids.last() {
            Some(last) if ids.len() == NOTIFICATION_PAGE => last.position,
            _ => gap.upto,
        };
        // The chat records are read newest first: the oldest page of them is kept.
        let mut chat = VecDeque::with_capacity(NOTIFICATION_PAGE);
        for item in self
            .chat
            .notifications
            .before(user, chat_upto.saturating_add(1))
        {
            let (position, _) = item?;
            if position <= gap.after {
                break;
            }
            if chat.len() == NOTIFICATION_PAGE {
                chat.pop_front();
            }
            chat.push_back(position);
        }
        ids.extend(chat.into_iter().map(|position| NotificationId {
            source: Source::Chat,
            position,
        }));
        ids.sort_by_key(|id| id.position);
        // Every entry up to the page's last position is read (both sources hold all of theirs
        // up to it): the page ends there, never between two entries at one position.
        let rest = if ids.len() >= NOTIFICATION_PAGE {
            let last = ids[NOTIFICATION_PAGE - 1].position;
            ids.retain(|id| id.position <= last);
            (last < gap.upto).then_some(NotificationGap {
                after: last,
                upto: gap.upto,
            })
        } else {
            None
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(view) = self.chat_notification(user, id)? {
                out.push((id.position, ChatEvent::Notification(view)));
            }
        }
        Ok((out, rest))
    }

    /// The direct chats `user` left and forgot in `(since, upto]` (ending a friendship forgets
    /// the chat, which takes it out of `/sync`), except those in `already`.
    fn forgotten_direct_chats(
        &self,
        user: &UserId,
        since: u64,
        upto: u64,
        already: &HashSet<OwnedRoomId>,
    ) -> Result<Vec<(u64, ChatEvent)>> {
        let changed = self.rooms.rooms_changed_since(since);
        let mut out = Vec::new();
        for (peer, room) in self.chat.friends.peers(user)? {
            if already.contains(&room) || changed.as_ref().is_some_and(|c| !c.contains(&room)) {
                continue;
            }
            if !matches!(
                self.rooms.membership(&room, user)?.as_deref(),
                Some("leave" | "ban")
            ) || !self.rooms.is_forgotten(&room, user)?
            {
                continue;
            }
            let Some(pdu) =
                self.rooms
                    .state_event(&room, &StateEventType::RoomMember, user.as_str())?
            else {
                continue;
            };
            let Some(meta) = self.rooms.event_meta(pdu.event_id())? else {
                continue;
            };
            if meta.stream_pos <= since || meta.stream_pos > upto {
                continue;
            }
            let previous = self.rooms.membership_at(&meta, user)?;
            if let Some(reason) = end_reason(&pdu, user, previous.as_deref()) {
                out.push((
                    meta.stream_pos,
                    ChatEvent::FriendRemoved { room, peer, reason },
                ));
            }
        }
        Ok(out)
    }
}

/// The sync filter of the stream: the timeline events it translates (a page per room), no
/// state or account data (which it does not show).
fn stream_filter() -> Filter {
    let mut filter = Filter::default();
    filter.room.timeline.limit = Some(TIMELINE_PAGE);
    filter.room.timeline.types = Some(TIMELINE_TYPES.iter().map(|t| (*t).to_owned()).collect());
    filter.room.state.types = Some(Vec::new());
    filter.room.account_data.types = Some(Vec::new());
    filter.account_data.types = Some(Vec::new());
    filter
}

fn room_id(raw: &str) -> Result<OwnedRoomId> {
    OwnedRoomId::try_from(raw).map_err(|e| Error::internal(format!("sync named a bad room: {e}")))
}
