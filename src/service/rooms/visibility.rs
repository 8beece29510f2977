//! History visibility: which events and which state a user may read, following the
//! specification's rules on the state of the room *at each event*.

use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::{EventMeta, Rooms};
use crate::core::{Pdu, StateMap};
use crate::error::{Error, Result};
use crate::storage::keys;

/// How far back a user's membership history is walked to find their latest join.
const MAX_MEMBERSHIP_WALK: usize = 1000;

/// A user reading a room, with what is needed to decide visibility.
#[derive(Debug, Clone)]
pub struct Reader {
    pub user_id: OwnedUserId,
    /// Current membership (`None` if never a member or the room was forgotten).
    pub membership: Option<String>,
    /// Stream position of the user's latest join event.
    pub last_join: Option<u64>,
    /// The user's current member event, if any.
    member_event: Option<ruma::OwnedEventId>,
}

fn content_str(pdu: &Pdu, field: &str) -> Option<String> {
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    content.get(field)?.as_str().map(str::to_owned)
}

impl Rooms {
    /// Whether the user forgot the room (it then reads as if never joined).
    pub fn is_forgotten(&self, room_id: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .forgotten
            .contains(keys::pair(user.as_str(), room_id.as_str()))?)
    }

    /// Forgets a room the user is no longer in.
    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        match self.membership(room_id, user)?.as_deref() {
            Some("join" | "invite" | "knock") => Err(Error::Unknown(
                "you must leave the room before forgetting it".into(),
            )),
            None => Err(Error::NotFound("you were never in this room".into())),
            Some(_) => {
                self.forgotten
                    .put(keys::pair(user.as_str(), room_id.as_str()), Vec::new())?;
                self.store.durable().await?;
                Ok(())
            }
        }
    }

    pub fn reader(&self, room_id: &RoomId, user: &UserId) -> Result<Reader> {
        let mut reader = Reader {
            user_id: user.to_owned(),
            membership: None,
            last_join: None,
            member_event: None,
        };
        if self.is_forgotten(room_id, user)? {
            return Ok(reader);
        }
        reader.membership = self.membership(room_id, user)?;
        let current = self.current_state(room_id)?;
        let entry = (StateEventType::RoomMember, user.to_string());
        reader.member_event = current.get(&entry).cloned();
        let mut next = reader.member_event.clone();
        for _ in 0..MAX_MEMBERSHIP_WALK {
            let Some(id) = next else { break };
            let (Some(pdu), Some(meta)) = (self.pdu(&id)?, self.event_meta(&id)?) else {
                break;
            };
            if content_str(&pdu, "membership").as_deref() == Some("join") {
                reader.last_join = Some(meta.stream_pos);
                break;
            }
            next = match meta.state_before {
                Some(snapshot) => self.snapshots.state(snapshot)?.get(&entry).cloned(),
                None => None,
            };
        }
        Ok(reader)
    }

    fn state_before(&self, meta: &EventMeta) -> Result<Arc<StateMap>> {
        match meta.state_before {
            Some(id) => self.snapshots.state(id),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    fn state_string(
        &self,
        state: &StateMap,
        kind: StateEventType,
        key: &str,
        field: &str,
    ) -> Result<Option<String>> {
        match state.get(&(kind, key.to_owned())) {
            Some(id) => Ok(self.pdu(id)?.and_then(|p| content_str(&p, field))),
            None => Ok(None),
        }
    }

    /// The user's membership when the event was sent.
    pub fn membership_at(&self, meta: &EventMeta, user: &UserId) -> Result<Option<String>> {
        let state = self.state_before(meta)?;
        self.state_string(
            &state,
            StateEventType::RoomMember,
            user.as_str(),
            "membership",
        )
    }

    /// Whether the reader may see the event.
    pub fn is_visible(&self, reader: &Reader, pdu: &Pdu, meta: &EventMeta) -> Result<bool> {
        let state = self.state_before(meta)?;
        let visibility = self
            .state_string(
                &state,
                StateEventType::RoomHistoryVisibility,
                "",
                "history_visibility",
            )?
            .unwrap_or_else(|| "shared".into());
        let membership = self.state_string(
            &state,
            StateEventType::RoomMember,
            reader.user_id.as_str(),
            "membership",
        )?;
        // For history-visibility events and the reader's own member events, the value after the
        // event counts too.
        let visibility_after = (*pdu.kind() == TimelineEventType::RoomHistoryVisibility)
            .then(|| content_str(pdu, "history_visibility"))
            .flatten();
        let membership_after = (*pdu.kind() == TimelineEventType::RoomMember
            && pdu.state_key() == Some(reader.user_id.as_str()))
        .then(|| content_str(pdu, "membership"))
        .flatten();
        let allowed = |visibility: &str, membership: Option<&str>| {
            visibility == "world_readable"
                || membership == Some("join")
                || (visibility == "shared" && reader.last_join.is_some_and(|j| j > meta.stream_pos))
                || (visibility == "invited" && membership == Some("invite"))
        };
        Ok(allowed(&visibility, membership.as_deref())
            || visibility_after
                .as_deref()
                .is_some_and(|v| allowed(v, membership.as_deref()))
            || membership_after
                .as_deref()
                .is_some_and(|m| allowed(&visibility, Some(m))))
    }

    /// Whether anyone may read the room now without being in it.
    pub fn is_world_readable(&self, room_id: &RoomId) -> Result<bool> {
        let state = self.current_state(room_id)?;
        Ok(self
            .state_string(
                &state,
                StateEventType::RoomHistoryVisibility,
                "",
                "history_visibility",
            )?
            .as_deref()
            == Some("world_readable"))
    }

    /// The room state the reader may see: the current state while joined (or when the room is
    /// world-readable), the state as they left it after leaving; `None` when they may not read it.
    pub fn readable_state(
        &self,
        room_id: &RoomId,
        reader: &Reader,
    ) -> Result<Option<Arc<StateMap>>> {
        if reader.membership.as_deref() == Some("join") || self.is_world_readable(room_id)? {
            return Ok(Some(self.current_state(room_id)?));
        }
        let Some(member_event) = &reader.member_event else {
            return Ok(None);
        };
        if !matches!(reader.membership.as_deref(), Some("leave" | "ban")) {
            return Ok(None);
        }
        let Some(meta) = self.event_meta(member_event)? else {
            return Ok(None);
        };
        let mut state = (*self.state_before(&meta)?).clone();
        state.insert(
            (StateEventType::RoomMember, reader.user_id.to_string()),
            member_event.clone(),
        );
        Ok(Some(Arc::new(state)))
    }

    /// Whether the reader may read anything of the room's history at all.
    pub fn may_read_history(&self, room_id: &RoomId, reader: &Reader) -> Result<bool> {
        Ok(reader.membership.is_some() || self.is_world_readable(room_id)?)
    }
}

impl Rooms {
    /// The state right after an event.
    pub fn state_after(&self, meta: &EventMeta, pdu: &Pdu) -> Result<Arc<StateMap>> {
        let before = self.state_before(meta)?;
        match pdu.state_entry() {
            Some(entry) => {
                let mut after = (*before).clone();
                after.insert(entry, pdu.event_id().to_owned());
                Ok(Arc::new(after))
            }
            None => Ok(before),
        }
    }

    /// The first visible event at or after `ts` (`forwards`), or the last at or before it. Walks
    /// the timeline in stream order, which follows the local clock.
    pub fn closest_to_timestamp(
        &self,
        room_id: &RoomId,
        reader: &Reader,
        ts: u64,
        forwards: bool,
    ) -> Result<Option<std::sync::Arc<Pdu>>> {
        const BATCH: usize = 200;
        let mut cursor = if forwards { 0 } else { u64::MAX };
        loop {
            let (after, before) = if forwards {
                (cursor, u64::MAX)
            } else {
                (0, cursor)
            };
            let entries = self.timeline_range(room_id, after, before, !forwards, BATCH)?;
            let exhausted = entries.len() < BATCH;
            for (pos, id) in entries {
                cursor = pos;
                let (Some(pdu), Some(meta)) = (self.pdu(&id)?, self.event_meta(&id)?) else {
                    continue;
                };
                let event_ts: u64 = pdu.origin_server_ts().0.into();
                let on_side = if forwards {
                    event_ts >= ts
                } else {
                    event_ts <= ts
                };
                if on_side && self.is_visible(reader, &pdu, &meta)? {
                    return Ok(Some(pdu));
                }
            }
            if exhausted {
                return Ok(None);
            }
        }
    }
}
