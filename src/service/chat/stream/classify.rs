//! How store changes read in chat terms: a timeline event (or the user's invite) as a message,
//! an edit, a reaction, a call signal, a friend request or a group change; a room's typing and
//! receipts as the chat's.
//!
//! Events are classified from the stored event (a redacted event's kind and relation are still
//! known to the server) but nothing redacted is handed out: a redacted message is shown as
//! deleted, a redacted reaction only as removed.

use std::collections::HashMap;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::events::{CallSignal, ChatEvent, EndReason, GroupChange};
use crate::core::Pdu;
use crate::error::Result;
use crate::service::Services;
use crate::service::receipts::ReceiptKind;
use crate::service::rooms::EventMeta;
use crate::util::now_ms;

/// Whether a room is a direct chat (and with whom) or a group, as far as the stream can tell.
#[derive(Debug, Clone)]
enum RoomKind {
    Direct(OwnedUserId),
    Group,
}

/// What one step or gap page knows while it classifies events.
pub(super) struct Classifier<'a> {
    services: &'a Services,
    user: &'a UserId,
    kinds: HashMap<OwnedRoomId, RoomKind>,
}

impl<'a> Classifier<'a> {
    pub(super) fn new(services: &'a Services, user: &'a UserId) -> Self {
        Self {
            services,
            user,
            kinds: HashMap::new(),
        }
    }

    /// Whether `room` is a direct chat of the user (and with whom).
    fn kind(&mut self, room: &RoomId) -> Result<RoomKind> {
        if let Some(kind) = self.kinds.get(room) {
            return Ok(kind.clone());
        }
        let kind = match self.services.dm_peer(self.user, room)? {
            Some(peer) => RoomKind::Direct(peer),
            None => RoomKind::Group,
        };
        self.kinds.insert(room.to_owned(), kind.clone());
        Ok(kind)
    }

    /// The chat event a timeline event (or the user's invite) stands for, if any.
    pub(super) fn classify(&mut self, pdu: &Pdu, meta: &EventMeta) -> Result<Option<ChatEvent>> {
        let services = self.services;
        let room = pdu.room_id().to_owned();
        let redacted = services.rooms.redacted_by(pdu.event_id())?.is_some();
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let kind = pdu.kind().to_string();
        let relation = Relation::of(&content);
        Ok(match pdu.kind() {
            // Encrypted messages are messages too (their relation stays in the clear).
            TimelineEventType::RoomMessage
            | TimelineEventType::Sticker
            | TimelineEventType::RoomEncrypted => {
                match relation {
                    // An edit: the message it replaces now reads differently. A redacted edit
                    // changes nothing until its redaction, which is told on its own.
                    Some(Relation::Replace(message)) if !redacted => {
                        Some(ChatEvent::MessageEdited { room, message })
                    }
                    Some(Relation::Replace(_)) => None,
                    _ => Some(ChatEvent::MessageNew {
                        room,
                        message: pdu.event_id().to_owned(),
                    }),
                }
            }
            TimelineEventType::Reaction => match relation {
                Some(Relation::Annotation(message, key)) if !redacted => {
                    Some(ChatEvent::ReactionAdded {
                        room,
                        message,
                        reaction: pdu.event_id().to_owned(),
                        key,
                        user: pdu.sender().to_owned(),
                    })
                }
                _ => None,
            },
            TimelineEventType::RoomRedaction => self.redaction(pdu)?,
            TimelineEventType::RoomMember => self.membership(pdu, meta, &content)?,
            TimelineEventType::RoomName
            | TimelineEventType::RoomTopic
            | TimelineEventType::RoomAvatar
            | TimelineEventType::RoomPowerLevels => {
                if matches!(self.kind(&room)?, RoomKind::Direct(_)) {
                    return Ok(None);
                }
                let change = match pdu.kind() {
                    TimelineEventType::RoomName => GroupChange::Name,
                    TimelineEventType::RoomTopic => GroupChange::Topic,
                    TimelineEventType::RoomAvatar => GroupChange::Picture,
                    _ => {
                        // The power levels a room is created with are part of its creation
                        // (which the creator's join announces), not a change of roles.
                        let before = match meta.state_before {
                            Some(id) => services.rooms.snapshots.state(id)?,
                            None => return Ok(None),
                        };
                        if !before.contains_key(&(StateEventType::RoomPowerLevels, String::new())) {
                            return Ok(None);
                        }
                        GroupChange::Roles
                    }
                };
                Some(ChatEvent::GroupUpdated {
                    room,
                    change,
                    by: pdu.sender().to_owned(),
                })
            }
            _ => match CallSignal::of(&kind) {
                Some(signal) if !redacted => Some(ChatEvent::Call {
                    signal,
                    room,
                    event: pdu.event_id().to_owned(),
                    sender: pdu.sender().to_owned(),
                    content,
                    at: pdu.origin_server_ts().0.into(),
                }),
                _ => None,
            },
        })
    }

    /// A redaction: of a message (deleted), of an edit (the message reads as before), of a
    /// reaction (removed).
    fn redaction(&mut self, pdu: &Pdu) -> Result<Option<ChatEvent>> {
        let services = self.services;
        let Some(target_id) = pdu.redacts() else {
            return Ok(None);
        };
        let Some(target) = services.rooms.pdu(target_id)? else {
            return Ok(None);
        };
        if target.room_id() != pdu.room_id() {
            return Ok(None);
        }
        let room = pdu.room_id().to_owned();
        let content: Value = serde_json::from_str(target.content().get())?;
        Ok(match (target.kind(), Relation::of(&content)) {
            (
                TimelineEventType::RoomMessage
                | TimelineEventType::Sticker
                | TimelineEventType::RoomEncrypted,
                Some(Relation::Replace(message)),
            ) => Some(ChatEvent::MessageEdited { room, message }),
            (
                TimelineEventType::RoomMessage
                | TimelineEventType::Sticker
                | TimelineEventType::RoomEncrypted,
                _,
            ) => Some(ChatEvent::MessageDeleted {
                room,
                message: target_id.to_owned(),
                by: pdu.sender().to_owned(),
            }),
            (TimelineEventType::Reaction, Some(Relation::Annotation(message, _))) => {
                Some(ChatEvent::ReactionRemoved {
                    room,
                    message,
                    reaction: target_id.to_owned(),
                    user: target.sender().to_owned(),
                })
            }
            _ => None,
        })
    }

    /// A member event: a friend request, its acceptance or the end of a direct chat; a member
    /// change in a group.
    fn membership(
        &mut self,
        pdu: &Pdu,
        meta: &EventMeta,
        content: &Value,
    ) -> Result<Option<ChatEvent>> {
        let services = self.services;
        let user = self.user;
        let room = pdu.room_id().to_owned();
        let Some(target) = pdu
            .state_key()
            .and_then(|key| OwnedUserId::try_from(key).ok())
        else {
            return Ok(None);
        };
        let Some(membership) = content["membership"].as_str() else {
            return Ok(None);
        };
        let previous = services.rooms.membership_at(meta, &target)?;
        let at: u64 = pdu.origin_server_ts().0.into();
        // The invite of a direct chat says so itself: it is known to be one even before the
        // direct-chat index records the room.
        let invite_peer = (membership == "invite" && content["is_direct"] == Value::Bool(true))
            .then(|| {
                if target == user {
                    Some(pdu.sender().to_owned())
                } else if pdu.sender() == user {
                    Some(target.clone())
                } else {
                    None
                }
            })
            .flatten();
        let peer = match (self.kind(&room)?, invite_peer) {
            (RoomKind::Direct(peer), _) | (RoomKind::Group, Some(peer)) => Some(peer),
            (RoomKind::Group, None) => None,
        };
        if let Some(peer) = peer {
            if target != user && target != peer {
                return Ok(None);
            }
            return Ok(match (membership, previous.as_deref()) {
                ("invite", _) => Some(ChatEvent::FriendRequest {
                    room,
                    peer,
                    incoming: target == user,
                    at,
                }),
                ("join", Some("invite")) => Some(ChatEvent::FriendAccepted { room, peer, at }),
                ("leave" | "ban", previous) => end_reason(pdu, &target, previous)
                    .map(|reason| ChatEvent::FriendRemoved { room, peer, reason }),
                _ => None,
            });
        }
        // A profile change is no change of the group.
        if membership == "join" && previous.as_deref() == Some("join") {
            return Ok(None);
        }
        // Nor is the creator's own first join: it is part of making the room (and a direct
        // chat being made is not known to be one before its invite).
        if previous.is_none()
            && membership == "join"
            && target == user
            && services
                .rooms
                .state_event(&room, &StateEventType::RoomCreate, "")?
                .is_some_and(|create| create.sender() == user)
        {
            return Ok(None);
        }
        Ok(Some(ChatEvent::GroupUpdated {
            room,
            change: GroupChange::Member {
                user: target,
                membership: membership.to_owned(),
                previous,
            },
            by: pdu.sender().to_owned(),
        }))
    }
}

/// Why a direct chat ended, from the member event that left it (`previous`: the membership
/// before it); `None` when it was no request or friendship.
pub(super) fn end_reason(pdu: &Pdu, target: &UserId, previous: Option<&str>) -> Option<EndReason> {
    match previous {
        Some("invite") if pdu.sender() == target => Some(EndReason::Declined),
        Some("invite") => Some(EndReason::Cancelled),
        Some("join") => Some(EndReason::Removed),
        _ => None,
    }
}

/// The relation of an event's content that the stream cares about.
enum Relation {
    /// `m.replace`: an edit of that event.
    Replace(OwnedEventId),
    /// `m.annotation`: a reaction to that event, with its key.
    Annotation(OwnedEventId, String),
}

impl Relation {
    fn of(content: &Value) -> Option<Self> {
        let relates = &content["m.relates_to"];
        let target = OwnedEventId::try_from(relates["event_id"].as_str()?).ok()?;
        match relates["rel_type"].as_str()? {
            "m.replace" => Some(Self::Replace(target)),
            "m.annotation" => Some(Self::Annotation(
                target,
                relates["key"].as_str()?.to_owned(),
            )),
            _ => None,
        }
    }
}

/// The typing and receipt events of one joined room's `ephemeral` section.
pub(super) fn ephemeral_events(user: &UserId, room: &RoomId, event: &Value) -> Vec<ChatEvent> {
    let mut out = Vec::new();
    match event["type"].as_str() {
        Some("m.typing") => {
            let users = event["content"]["user_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
                .filter(|u| *u != user.as_str())
                .filter_map(|u| OwnedUserId::try_from(u).ok())
                .collect();
            out.push(ChatEvent::Typing {
                room: room.to_owned(),
                users,
            });
        }
        Some("m.receipt") => {
            let Some(by_event) = event["content"].as_object() else {
                return out;
            };
            for (event_id, by_kind) in by_event {
                let Ok(message) = OwnedEventId::try_from(event_id.as_str()) else {
                    continue;
                };
                let Some(by_kind) = by_kind.as_object() else {
                    continue;
                };
                for (kind, by_user) in by_kind {
                    let read = match ReceiptKind::parse(kind) {
                        Some(ReceiptKind::Read | ReceiptKind::ReadPrivate) => true,
                        Some(ReceiptKind::Delivered) => false,
                        None => continue,
                    };
                    for (receipt_user, info) in by_user.as_object().into_iter().flatten() {
                        let Ok(receipt_user) = OwnedUserId::try_from(receipt_user.as_str()) else {
                            continue;
                        };
                        out.push(ChatEvent::Receipt {
                            room: room.to_owned(),
                            message: message.clone(),
                            user: receipt_user,
                            read,
                            at: info["ts"].as_u64().unwrap_or_else(now_ms),
                        });
                    }
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn relations_of_edits_and_reactions() {
        let edit = json!({ "m.relates_to": { "rel_type": "m.replace", "event_id": "$a" } });
        assert!(matches!(Relation::of(&edit), Some(Relation::Replace(id)) if id == "$a"));
        let reaction = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$a", "key": "👍" } });
        assert!(
            matches!(Relation::of(&reaction), Some(Relation::Annotation(id, key)) if id == "$a" && key == "👍")
        );
        let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$a" } } });
        assert!(Relation::of(&reply).is_none());
        let keyless = json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$a" } });
        assert!(Relation::of(&keyless).is_none());
    }

    #[test]
    fn typing_leaves_out_the_user_and_receipts_split_by_kind() {
        let me = ruma::user_id!("@me:x");
        let room = ruma::room_id!("!r:x");
        let typing = json!({ "type": "m.typing", "content": { "user_ids": ["@me:x", "@bob:x"] } });
        let events = ephemeral_events(me, room, &typing);
        assert!(
            matches!(&events[..], [ChatEvent::Typing { users, .. }] if users.len() == 1 && users[0] == "@bob:x")
        );
        let receipts = json!({ "type": "m.receipt", "content": { "$m": {
            "m.read": { "@bob:x": { "ts": 5 } },
            "org.roost.delivered": { "@carol:x": { "ts": 4 } },
            "m.unknown": { "@dan:x": { "ts": 3 } },
        } } });
        let events = ephemeral_events(me, room, &receipts);
        assert_eq!(events.len(), 2);
        assert!(events.iter().any(|e| matches!(e,
            ChatEvent::Receipt { user, read: true, at: 5, .. } if user == "@bob:x")));
        assert!(events.iter().any(|e| matches!(e,
            ChatEvent::Receipt { user, read: false, at: 4, .. } if user == "@carol:x")));
    }
}
