//! `/sync`: what changed for a user since a stream position, and the long poll that waits for the
//! next change on the notifier (never on a timer that re-reads the store).
//!
//! A token is the stream position up to which everything was reported. An incremental sync looks
//! only at the rooms that changed after its token (see `rooms::changes`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ruma::events::StateEventType;
use ruma::{OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Services;
use super::room_ephemeral::Delivery;
use super::rooms::read::{PageRequest, Viewer};
use super::rooms::visibility::Reader;
use crate::core::StateMap;
use crate::core::filter::{Filter, RoomEventFilter, apply_event_fields};
use crate::error::{Error, Result};

/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most a filter may ask for per room.
const MAX_TIMELINE_LIMIT: usize = 500;
/// The longest a long poll waits.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// State event types shown in an invite (besides the member events).
const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];
/// Members named as heroes in a room summary.
const HEROES: usize = 5;

pub struct SyncRequest {
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub since: Option<u64>,
    pub full_state: bool,
    pub filter: Filter,
    pub timeout: Duration,
    /// The users the syncing user ignores (filled in by the sync itself).
    pub ignored: std::sync::Arc<std::collections::HashSet<OwnedUserId>>,
}

/// Parses a stream token (`s<position>`), as `/sync`, `/messages` and `/context` hand out.
pub fn parse_token(raw: &str) -> Result<u64> {
    raw.strip_prefix('s')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::InvalidParam("invalid token".into()))
}

pub fn token(position: u64) -> String {
    format!("s{position}")
}

impl Services {
    /// Refuses a `since` token beyond every position handed out so far (a token from the future).
    pub fn check_since(&self, since: Option<u64>) -> Result<()> {
        if since.is_some_and(|s| s > self.store.sequencer().upto()) {
            return Err(Error::InvalidParam(
                "the sync token is from the future".into(),
            ));
        }
        Ok(())
    }

    /// Answers a sync request: at once if something changed (or for an initial sync), else when
    /// the notifier reports a change for the user, or empty when the timeout runs out.
    pub async fn sync(&self, request: SyncRequest) -> Result<Value> {
        self.check_since(request.since)?;
        let mut waiter = self.notifier.subscribe(&request.user_id);
        let deadline = tokio::time::Instant::now() + request.timeout.min(MAX_TIMEOUT);
        loop {
            let upto = self.store.sequencer().upto();
            // `upto` becomes the client's token: it must survive a crash, or the positions
            // taken again after a restart would be skipped (and the token refused as from the
            // future). Free when the writers' own flushes already cover it.
            self.store.durable_upto(upto).await?;
            let mut deliveries = Vec::new();
            let (response, changed) = self.sync_once(&request, upto, &mut deliveries)?;
            if changed || request.since.is_none() || request.full_state {
                self.deliveries.record(&request.user_id, deliveries);
                return Ok(response);
            }
            let woken = tokio::time::timeout_at(deadline, waiter.wait_for(|p| *p > upto)).await;
            match woken {
                Ok(Ok(_)) => continue,
                // Timed out (or the notifier went away): answer with what there is.
                _ => return Ok(response),
            }
        }
    }

    /// One pass over everything that changed in `(since, upto]`; also says whether anything did.
    /// The timeline events handed out that call for delivered receipts go to `deliveries`.
    fn sync_once(
        &self,
        request: &SyncRequest,
        upto: u64,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<(Value, bool)> {
        let user = &request.user_id;
        let since = if request.full_state {
            None
        } else {
            request.since
        };
        let mut account_data = self.account_data.changes_since(user, request.since)?;
        // Clients learn their push rules from an initial sync, changed or not.
        if request.since.is_none()
            && !account_data
                .global
                .iter()
                .any(|e| e["type"] == super::push::rules::PUSH_RULES_TYPE)
        {
            account_data.global.push(serde_json::json!({
                "type": super::push::rules::PUSH_RULES_TYPE,
                "content": self.push_rules_content(user)?,
            }));
        }
        let ignored = self.account_data.ignored_users(user)?;
        // To-device messages first: when more wait than one batch holds, `upto` moves back to
        // the last one delivered, and everything else is read up to there.
        let to_device =
            self.to_device
                .for_sync(user, &request.device_id, request.since, upto, &ignored)?;
        let upto = to_device.upto;
        let presence = self.presence_events(
            user,
            request.since,
            upto,
            &request.filter.presence,
            &ignored,
        )?;
        // Events of ignored users are left out of timelines.
        let mut filter = request.filter.clone();
        filter
            .room
            .timeline
            .not_senders
            .extend(ignored.iter().map(|u| u.to_string()));
        // Their typing and receipts too.
        filter
            .room
            .ephemeral
            .not_senders
            .extend(ignored.iter().map(|u| u.to_string()));
        let request = &SyncRequest {
            user_id: request.user_id.clone(),
            device_id: request.device_id.clone(),
            since: request.since,
            full_state: request.full_state,
            filter,
            timeout: request.timeout,
            ignored: std::sync::Arc::new(ignored.clone()),
        };
        let changed_rooms = request
            .since
            .and_then(|s| self.rooms.rooms_changed_since(s));
        // Rooms with only typing or receipt changes count too.
        let ephemeral_rooms = request
            .since
            .and_then(|s| self.ephemeral_rooms_since(user, s));
        let is_candidate = |room: &RoomId| {
            request.filter.room.includes_room(room.as_str())
                && match (&request.since, &changed_rooms) {
                    (None, _) | (_, None) => true,
                    (Some(_), Some(changed)) => {
                        changed.contains(room)
                            || ephemeral_rooms.as_ref().is_none_or(|e| e.contains(room))
                            || request.full_state
                            || account_data.rooms.contains_key(room)
                    }
                }
        };
        let mut join = Map::new();
        for room_id in self.rooms.rooms_of(user, "join")? {
            if !is_candidate(&room_id) {
                continue;
            }
            let room_data = account_data
                .rooms
                .get(&room_id)
                .map(|events| filter_account_data(&request.filter.room.account_data, events))
                .unwrap_or_default();
            if let Some(section) =
                self.joined_room(request, &room_id, since, upto, room_data, deliveries)?
            {
                join.insert(room_id.to_string(), section);
            }
        }
        let mut invite = Map::new();
        for room_id in self.rooms.rooms_of(user, "invite")? {
            if is_candidate(&room_id)
                && self.membership_changed_since(&room_id, user, since)?
                && !self.invited_by_ignored(&room_id, user, &ignored)?
            {
                invite.insert(
                    room_id.to_string(),
                    json!({ "invite_state": { "events": self.stripped_state(&room_id)? } }),
                );
            }
        }
        let mut knock = Map::new();
        for room_id in self.rooms.rooms_of(user, "knock")? {
            if is_candidate(&room_id) && self.membership_changed_since(&room_id, user, since)? {
                knock.insert(
                    room_id.to_string(),
                    json!({ "knock_state": { "events": self.stripped_state(&room_id)? } }),
                );
            }
        }
        let mut leave = Map::new();
        if since.is_some() || request.filter.room.include_leave {
            for membership in ["leave", "ban"] {
                for room_id in self.rooms.rooms_of(user, membership)? {
                    if is_candidate(&room_id)
                        && !self.rooms.is_forgotten(&room_id, user)?
                        && self.membership_changed_since(&room_id, user, since)?
                        && let Some(section) = self.left_room(request, &room_id, since)?
                    {
                        leave.insert(room_id.to_string(), section);
                    }
                }
            }
        }
        let global_data = filter_account_data(&request.filter.account_data, &account_data.global);
        let device_lists = match request.since {
            Some(since) => self.device_list_changes(user, since, upto)?,
            None => Default::default(),
        };
        let changed = !(join.is_empty()
            && invite.is_empty()
            && knock.is_empty()
            && leave.is_empty()
            && global_data.is_empty()
            && presence.is_empty()
            && to_device.events.is_empty()
            && !to_device.limited
            && device_lists.changed.is_empty()
            && device_lists.left.is_empty());
        let response = json!({
            "next_batch": token(upto),
            "rooms": { "join": join, "invite": invite, "knock": knock, "leave": leave },
            "account_data": { "events": global_data },
            "presence": { "events": presence },
            "to_device": { "events": to_device.events },
            "device_lists": { "changed": device_lists.changed, "left": device_lists.left },
            "device_one_time_keys_count": self.keys.one_time_key_counts(user, &request.device_id)?,
            "device_unused_fallback_key_types":
                self.keys.unused_fallback_key_types(user, &request.device_id)?,
        });
        Ok((response, changed))
    }

    /// Whether the user's pending invite to the room was sent by someone they ignore.
    fn invited_by_ignored(
        &self,
        room_id: &RoomId,
        user: &UserId,
        ignored: &std::collections::HashSet<OwnedUserId>,
    ) -> Result<bool> {
        if ignored.is_empty() {
            return Ok(false);
        }
        let invite = self
            .rooms
            .state_event(room_id, &StateEventType::RoomMember, user.as_str())?;
        Ok(invite.is_some_and(|pdu| ignored.contains(pdu.sender())))
    }

    /// Whether the user's membership event in the room came after `since`.
    fn membership_changed_since(
        &self,
        room_id: &RoomId,
        user: &UserId,
        since: Option<u64>,
    ) -> Result<bool> {
        let Some(since) = since else { return Ok(true) };
        Ok(self
            .member_event_position(room_id, user)?
            .is_some_and(|p| p > since))
    }

    fn member_event_position(&self, room_id: &RoomId, user: &UserId) -> Result<Option<u64>> {
        let state = self.rooms.current_state(room_id)?;
        match state.get(&(StateEventType::RoomMember, user.to_string())) {
            Some(id) => Ok(self.rooms.event_meta(id)?.map(|m| m.stream_pos)),
            None => Ok(None),
        }
    }

    /// The state after the last event at or before `position` (`None`: before the room).
    fn state_at(&self, room_id: &RoomId, position: u64) -> Result<Option<Arc<StateMap>>> {
        let last = self
            .rooms
            .timeline_range(room_id, 0, position.saturating_add(1), true, 1)?;
        let Some((_, event_id)) = last.first() else {
            return Ok(None);
        };
        let (Some(pdu), Some(meta)) = (self.rooms.pdu(event_id)?, self.rooms.event_meta(event_id)?)
        else {
            return Ok(None);
        };
        self.rooms.state_after(&meta, &pdu).map(Some)
    }

    fn joined_room(
        &self,
        request: &SyncRequest,
        room_id: &RoomId,
        since: Option<u64>,
        upto: u64,
        account_data: Vec<Value>,
        deliveries: &mut Vec<Delivery>,
    ) -> Result<Option<Value>> {
        let user = &request.user_id;
        let reader = self.rooms.reader(room_id, user)?;
        // A room joined after the token is sent whole, like in an initial sync.
        let joined_after_since = match since {
            Some(s) => self
                .member_event_position(room_id, user)?
                .is_some_and(|p| p > s),
            None => true,
        };
        let timeline = self.timeline(request, room_id, &reader, since, upto.saturating_add(1))?;
        let ephemeral_since = if joined_after_since { None } else { since };
        let ephemeral = self.room_ephemeral(request, room_id, ephemeral_since, upto)?;
        if since.is_some()
            && timeline.events.is_empty()
            && account_data.is_empty()
            && ephemeral.is_empty()
        {
            return Ok(None);
        }
        if let Some((event_id, sender)) = &timeline.newest_from_others {
            deliveries.push(Delivery {
                room_id: room_id.to_owned(),
                event_id: event_id.clone(),
                sender: sender.clone(),
            });
        }
        let start_state = match timeline.first_event.as_ref() {
            Some(first) => {
                let meta = self
                    .rooms
                    .event_meta(first)?
                    .ok_or_else(|| Error::internal("timeline event without metadata"))?;
                match meta.state_before {
                    Some(id) => self.rooms.snapshots.state(id)?,
                    None => Arc::new(StateMap::new()),
                }
            }
            None => self.rooms.current_state(room_id)?,
        };
        let state_ids: Vec<OwnedEventId> = match since {
            _ if joined_after_since => start_state.values().cloned().collect(),
            Some(_) if !timeline.limited => Vec::new(),
            Some(s) => {
                let before = self.state_at(room_id, s)?.unwrap_or_default();
                start_state
                    .iter()
                    .filter(|(k, v)| before.get(*k) != Some(*v))
                    .map(|(_, v)| v.clone())
                    .collect()
            }
            None => start_state.values().cloned().collect(),
        };
        let state = self.state_events(request, &state_ids, &timeline, user)?;
        let mut section = json!({
            "timeline": {
                "events": timeline.events,
                "limited": timeline.limited,
            },
            "state": { "events": state },
            "account_data": { "events": account_data },
            "ephemeral": { "events": ephemeral },
        });
        let per_thread = request.filter.room.timeline.unread_thread_notifications;
        self.add_unread_counts(&mut section, room_id, &reader, upto, per_thread)?;
        if let Some(prev) = timeline.prev_batch {
            section["timeline"]["prev_batch"] = json!(token(prev));
        }
        if joined_after_since || timeline.members_changed {
            section["summary"] = self.summary(room_id, user)?;
        }
        Ok(Some(section))
    }

    fn left_room(
        &self,
        request: &SyncRequest,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Result<Option<Value>> {
        let user = &request.user_id;
        let reader = self.rooms.reader(room_id, user)?;
        let Some(left_at) = self.member_event_position(room_id, user)? else {
            return Ok(None);
        };
        let timeline =
            self.timeline(request, room_id, &reader, since, left_at.saturating_add(1))?;
        let state_ids: Vec<OwnedEventId> = match timeline.first_event.as_ref() {
            Some(first) if since.is_none() || timeline.limited => {
                let meta = self
                    .rooms
                    .event_meta(first)?
                    .ok_or_else(|| Error::internal("timeline event without metadata"))?;
                match meta.state_before {
                    Some(id) => self.rooms.snapshots.state(id)?.values().cloned().collect(),
                    None => Vec::new(),
                }
            }
            _ => Vec::new(),
        };
        let state = self.state_events(request, &state_ids, &timeline, user)?;
        let mut section = json!({
            "timeline": { "events": timeline.events, "limited": timeline.limited },
            "state": { "events": state },
        });
        if let Some(prev) = timeline.prev_batch {
            section["timeline"]["prev_batch"] = json!(token(prev));
        }
        Ok(Some(section))
    }

    /// The newest visible events in `(since, before)`, oldest first.
    fn timeline(
        &self,
        request: &SyncRequest,
        room_id: &RoomId,
        reader: &Reader,
        since: Option<u64>,
        before: u64,
    ) -> Result<Timeline> {
        let filter = &request.filter.room.timeline;
        let limit = filter
            .limit
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
            .clamp(1, MAX_TIMELINE_LIMIT);
        let viewer = Viewer {
            user_id: &request.user_id,
            device_id: &request.device_id,
            ignored: request.ignored.clone(),
            readers: Default::default(),
        };
        let page = self.rooms.paginate(
            room_id,
            reader,
            &viewer,
            PageRequest {
                from: Some(before),
                to: since,
                backwards: true,
                limit,
                filter,
            },
        )?;
        let mut events = page.chunk;
        events.reverse();
        let first_event = events
            .first()
            .and_then(|e| e["event_id"].as_str())
            .and_then(|id| OwnedEventId::try_from(id).ok());
        let first_position = match &first_event {
            Some(id) => self.rooms.event_meta(id)?.map(|m| m.stream_pos),
            None => None,
        };
        let members_changed = events.iter().any(|e| e["type"] == "m.room.member");
        let newest_from_others = events
            .iter()
            .rev()
            .find(|e| {
                e["sender"].as_str() != Some(request.user_id.as_str())
                    && e.get("state_key").is_none()
            })
            .and_then(|e| {
                let event_id = OwnedEventId::try_from(e["event_id"].as_str()?).ok()?;
                let sender = OwnedUserId::try_from(e["sender"].as_str()?).ok()?;
                Some((event_id, sender))
            });
        Ok(Timeline {
            limited: page.end.is_some(),
            prev_batch: first_position.or(Some(before)),
            senders: page.senders,
            events: events
                .into_iter()
                .map(|e| shape(&request.filter, e, self))
                .collect::<Result<_>>()?,
            first_event,
            members_changed,
            newest_from_others,
        })
    }

    /// State events for a room section: filtered, lazy-loaded members cut down to the timeline's
    /// senders and the user, and never repeating a state event the timeline carries.
    fn state_events(
        &self,
        request: &SyncRequest,
        ids: &[OwnedEventId],
        timeline: &Timeline,
        user: &UserId,
    ) -> Result<Vec<Value>> {
        let filter: &RoomEventFilter = &request.filter.room.state;
        let viewer = Viewer {
            user_id: user,
            device_id: &request.device_id,
            ignored: request.ignored.clone(),
            readers: Default::default(),
        };
        let in_timeline: BTreeSet<&str> = timeline
            .events
            .iter()
            .filter_map(|e| e["event_id"].as_str())
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if in_timeline.contains(id.as_str()) {
                continue;
            }
            let Some(pdu) = self.rooms.pdu(id)? else {
                continue;
            };
            let kind = pdu.kind().to_string();
            if !filter.matches(pdu.room_id().as_str(), pdu.sender().as_str(), &kind, false) {
                continue;
            }
            if filter.lazy_load_members
                && kind == "m.room.member"
                && let Some(key) = pdu.state_key()
                && key != user.as_str()
                && !timeline.senders.iter().any(|s| s.as_str() == key)
            {
                continue;
            }
            if let Some(event) = self.rooms.client_event(id, &viewer)? {
                out.push(shape(&request.filter, event, self)?);
            }
        }
        Ok(out)
    }

    /// Heroes and member counts.
    fn summary(&self, room_id: &RoomId, user: &UserId) -> Result<Value> {
        let members = self.rooms.members(room_id, None)?;
        let joined = members.iter().filter(|(_, m)| m == "join").count();
        let invited = members.iter().filter(|(_, m)| m == "invite").count();
        let mut heroes: Vec<&str> = members
            .iter()
            .filter(|(u, m)| u != user.as_str() && matches!(m.as_str(), "join" | "invite"))
            .map(|(u, _)| u.as_str())
            .collect();
        heroes.sort_unstable();
        heroes.truncate(HEROES);
        Ok(json!({
            "m.heroes": heroes,
            "m.joined_member_count": joined,
            "m.invited_member_count": invited,
        }))
    }

    /// The stripped state an invitee or knocker sees.
    fn stripped_state(&self, room_id: &RoomId) -> Result<Vec<Value>> {
        let state = self.rooms.current_state(room_id)?;
        let mut out = Vec::new();
        for ((kind, key), id) in state.iter() {
            let wanted = STRIPPED_STATE.contains(&kind.to_string().as_str()) && key.is_empty();
            if !wanted {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(id)? {
                out.push(stripped(&pdu)?);
            }
        }
        // The member events of the invitee and of whoever invited them.
        let members: Vec<OwnedEventId> = state
            .iter()
            .filter(|((k, _), _)| *k == StateEventType::RoomMember)
            .map(|(_, id)| id.clone())
            .collect();
        for id in members {
            let Some(pdu) = self.rooms.pdu(&id)? else {
                continue;
            };
            let content: Value = serde_json::from_str(pdu.content().get())?;
            if matches!(content["membership"].as_str(), Some("invite" | "knock")) {
                out.push(stripped(&pdu)?);
                if let Some(inviter_member) =
                    state.get(&(StateEventType::RoomMember, pdu.sender().to_string()))
                    && let Some(inviter) = self.rooms.pdu(inviter_member)?
                    && inviter.event_id() != pdu.event_id()
                {
                    out.push(stripped(&inviter)?);
                }
            }
        }
        Ok(out)
    }
}

/// Account data events the filter lets through (by type).
fn filter_account_data(filter: &RoomEventFilter, events: &[Value]) -> Vec<Value> {
    let limit = filter.limit.unwrap_or(usize::MAX);
    events
        .iter()
        .filter(|e| filter.matches("", "", e["type"].as_str().unwrap_or(""), false))
        .take(limit)
        .cloned()
        .collect()
}

struct Timeline {
    events: Vec<Value>,
    limited: bool,
    prev_batch: Option<u64>,
    senders: BTreeSet<OwnedUserId>,
    first_event: Option<OwnedEventId>,
    members_changed: bool,
    /// The newest non-state event sent by someone else, and its sender (for the delivered
    /// receipt).
    newest_from_others: Option<(OwnedEventId, OwnedUserId)>,
}

fn stripped(pdu: &crate::core::Pdu) -> Result<Value> {
    Ok(json!({
        "type": pdu.kind().to_string(),
        "state_key": pdu.state_key(),
        "sender": pdu.sender(),
        "content": serde_json::from_str::<Value>(pdu.content().get())?,
    }))
}

/// Applies `event_format` and `event_fields`.
fn shape(filter: &Filter, event: Value, services: &Services) -> Result<Value> {
    let event = if filter.event_format.as_deref() == Some("federation") {
        match event["event_id"]
            .as_str()
            .and_then(|id| OwnedEventId::try_from(id).ok())
        {
            Some(id) => match services.rooms.pdu(&id)? {
                Some(pdu) => serde_json::to_value(pdu.json())?,
                None => event,
            },
            None => event,
        }
    } else {
        event
    };
    Ok(match &filter.event_fields {
        Some(fields) => apply_event_fields(&event, fields),
        None => event,
    })
}
