//! What other servers may read of our rooms (Server-Server API, "Retrieving events").
//!
//! Every read names a room whose server ACL must allow the asking server. Rejected and
//! soft-failed events are never served. Which events a server sees follows the history
//! visibility *at each event*, as for users, with the server standing for all its users:
//!
//! - `world_readable`: every server sees the event;
//! - `shared` (and unknown values): servers with a joined member in the room now;
//! - `invited` / `joined`: servers with a user invited or joined (resp. joined) at the event;
//!   other servers in the room get the event redacted, so that the DAG stays walkable without
//!   its content; servers not in the room get nothing.
//!
//! For history-visibility events and the asking server's own member events, the value after the
//! event counts too (as for users).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId, ServerName};
use serde_json::Value;

use crate::core::{Pdu, StateMap};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::outlier::{EventStanding, Standing};

/// The most events an auth chain may hold before a read gives up (a room's auth chain grows
/// with its member events; this is far above any real room's).
pub const MAX_AUTH_CHAIN: usize = 100_000;

/// What a server may see of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerView {
    /// Nothing: the event is not served.
    Hidden,
    /// The redacted event: its place in the DAG, without its content.
    Redacted,
    /// The event as it is.
    Full,
}

/// The facts of one state that decide what a server sees.
#[derive(Debug, Clone)]
struct Standpoint {
    visibility: String,
    /// Whether a user of the server was invited at that state.
    invited: bool,
    /// Whether a user of the server was joined at that state.
    joined: bool,
}

/// A server reading one room: who asks, whether it is in the room now, and the standpoints
/// already worked out (by state snapshot), so that a walk over many events reads each state once.
pub struct ServerReader<'a> {
    pub origin: &'a ServerName,
    pub room_id: &'a RoomId,
    /// Whether the server has a joined member in the room now.
    pub in_room: bool,
    standpoints: HashMap<Option<u64>, Standpoint>,
}

impl Services {
    /// Starts a read of `room_id` by `origin`: the room must be known here (404) and its server
    /// ACL must allow the server (403).
    pub fn server_reader<'a>(
        &self,
        origin: &'a ServerName,
        room_id: &'a RoomId,
    ) -> Result<ServerReader<'a>> {
        if self.rooms.info(room_id)?.is_none() {
            return Err(Error::NotFound("no such room".into()));
        }
        self.federation.check_acl(&self.rooms, room_id, origin)?;
        let in_room = self.rooms.servers_in_room(room_id)?.contains(origin);
        Ok(ServerReader {
            origin,
            room_id,
            in_room,
            standpoints: HashMap::new(),
        })
    }

    /// Refuses (403) a read of a room by a server that is not in it, unless the room is
    /// world-readable now (some of its events may then be read by anyone).
    pub fn check_may_read_room(&self, reader: &ServerReader<'_>) -> Result<()> {
        if reader.in_room || self.rooms.is_world_readable(reader.room_id)? {
            return Ok(());
        }
        Err(Error::Forbidden(format!(
            "{} has no member in {}",
            reader.origin, reader.room_id
        )))
    }

    /// A stored event of the room that may be served to other servers: not rejected, not
    /// soft-failed (`None` otherwise, and for events of other rooms).
    pub fn servable_event(&self, room_id: &RoomId, event_id: &EventId) -> Result<Option<Arc<Pdu>>> {
        match self.rooms.event_standing(event_id)? {
            None | Some(EventStanding::Beside(Standing::Rejected | Standing::SoftFailed)) => {
                return Ok(None);
            }
            Some(_) => {}
        }
        Ok(self
            .rooms
            .pdu(event_id)?
            .filter(|pdu| pdu.room_id() == room_id && !pdu.rejected()))
    }

    /// The state before an event, when it is known: for events of the timeline and for events
    /// stored with their state (gaps, backfilled history). The create event has the empty state
    /// before it.
    pub fn state_before_event(&self, pdu: &Pdu) -> Result<Option<(Option<u64>, Arc<StateMap>)>> {
        if *pdu.kind() == TimelineEventType::RoomCreate && pdu.prev_events().is_empty() {
            return Ok(Some((None, Arc::new(StateMap::new()))));
        }
        let Some(meta) = self.rooms.event_meta(pdu.event_id())? else {
            return Ok(None);
        };
        match meta.state_before {
            Some(id) => Ok(Some((Some(id), self.rooms.snapshots.state(id)?))),
            None => Ok(None),
        }
    }

    /// What `reader.origin` may see of `pdu` (see the module documentation).
    pub fn server_view(&self, reader: &mut ServerReader<'_>, pdu: &Pdu) -> Result<ServerView> {
        let before = match self.state_before_event(pdu)? {
            Some((snapshot, state)) => match reader.standpoints.get(&snapshot) {
                Some(standpoint) => standpoint.clone(),
                None => {
                    let standpoint = self.standpoint(reader.origin, &state)?;
                    reader.standpoints.insert(snapshot, standpoint.clone());
                    standpoint
                }
            },
            // An event stored without its state (an auth event fetched alone): servers in the
            // room see it, others only when the room is world-readable now.
            None => {
                return Ok(
                    if reader.in_room || self.rooms.is_world_readable(reader.room_id)? {
                        ServerView::Full
                    } else {
                        ServerView::Hidden
                    },
                );
            }
        };
        let mut view = view_at(&before, reader.in_room);
        if let Some(after) = standpoint_after(reader.origin, &before, pdu) {
            view = view.max(view_at(&after, reader.in_room));
        }
        Ok(view)
    }

    /// The facts of `state` about `origin`: the history visibility and its users' memberships.
    fn standpoint(&self, origin: &ServerName, state: &StateMap) -> Result<Standpoint> {
        let visibility = self
            .rooms
            .state_content(state, &StateEventType::RoomHistoryVisibility)?
            .and_then(|content| {
                content
                    .get("history_visibility")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "shared".into());
        let mut standpoint = Standpoint {
            visibility,
            invited: false,
            joined: false,
        };
        for ((kind, state_key), event_id) in state {
            if *kind != StateEventType::RoomMember || !is_user_of(state_key, origin) {
                continue;
            }
            let Some(member) = self.rooms.pdu(event_id)? else {
                continue;
            };
            match membership(&member).as_deref() {
                Some("join") => standpoint.joined = true,
                Some("invite") => standpoint.invited = true,
                _ => {}
            }
            if standpoint.joined {
                break;
            }
        }
        Ok(standpoint)
    }

    /// An event as other servers get it: redacted when it was redacted here (or when `redact`),
    /// without `unsigned`.
    pub fn served_event(&self, pdu: &Pdu, redact: bool) -> Result<CanonicalJsonObject> {
        let mut json = if redact || self.rooms.redacted_by(pdu.event_id())?.is_some() {
            pdu.redacted()?.into_json()
        } else {
            pdu.json().clone()
        };
        json.remove("unsigned");
        Ok(json)
    }

    /// [`Services::served_event`] as a JSON value, following what `view` allows (`None` when it
    /// allows nothing).
    pub fn served_as(&self, pdu: &Pdu, view: ServerView) -> Result<Option<Value>> {
        let json = match view {
            ServerView::Hidden => return Ok(None),
            ServerView::Redacted => self.served_event(pdu, true)?,
            ServerView::Full => self.served_event(pdu, false)?,
        };
        Ok(Some(serde_json::to_value(json).map_err(Error::internal)?))
    }

    /// The auth chain of `events`: their auth events, and theirs, recursively (not the events
    /// themselves, unless one is an auth event of another), each once. Events missing from the
    /// store are left out; rejected ones too (a valid event never cites one).
    pub fn auth_chain<'e>(
        &self,
        events: impl IntoIterator<Item = &'e Pdu>,
    ) -> Result<Vec<Arc<Pdu>>> {
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
        for pdu in events {
            for id in pdu.auth_events() {
                if seen.insert(id.clone()) {
                    queue.push_back(id.clone());
                }
            }
        }
        let mut chain = Vec::new();
        while let Some(id) = queue.pop_front() {
            if chain.len() >= MAX_AUTH_CHAIN {
                return Err(Error::internal(format!(
                    "an auth chain of more than {MAX_AUTH_CHAIN} events"
                )));
            }
            let Some(pdu) = self.rooms.pdu(&id)? else {
                continue;
            };
            if pdu.rejected() {
                continue;
            }
            for auth in pdu.auth_events() {
                if seen.insert(auth.clone()) {
                    queue.push_back(auth.clone());
                }
            }
            chain.push(pdu);
        }
        Ok(chain)
    }
}

/// What a server sees at a standpoint.
fn view_at(standpoint: &Standpoint, in_room: bool) -> ServerView {
    let member_view = |allowed: bool| match (allowed, in_room) {
        (true, _) => ServerView::Full,
        (false, true) => ServerView::Redacted,
        (false, false) => ServerView::Hidden,
    };
    match standpoint.visibility.as_str() {
        "world_readable" => ServerView::Full,
        "invited" => member_view(standpoint.invited || standpoint.joined),
        "joined" => member_view(standpoint.joined),
        // `shared`, and values we do not understand, which count as `shared`.
        _ if in_room => ServerView::Full,
        _ => ServerView::Hidden,
    }
}

/// The standpoint after `pdu` when it changes what `origin` sees: a history-visibility event, or
/// a member event of one of its users. `None` otherwise.
fn standpoint_after(origin: &ServerName, before: &Standpoint, pdu: &Pdu) -> Option<Standpoint> {
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    match pdu.kind() {
        TimelineEventType::RoomHistoryVisibility if pdu.state_key() == Some("") => {
            let visibility = content.get("history_visibility")?.as_str()?.to_owned();
            Some(Standpoint {
                visibility,
                ..before.clone()
            })
        }
        TimelineEventType::RoomMember if is_user_of(pdu.state_key()?, origin) => {
            let mut after = before.clone();
            match content.get("membership")?.as_str()? {
                "join" => after.joined = true,
                "invite" => after.invited = true,
                _ => return None,
            }
            Some(after)
        }
        _ => None,
    }
}

/// Whether a user ID (as a member event's state key) belongs to `server`.
fn is_user_of(user_id: &str, server: &ServerName) -> bool {
    user_id
        .split_once(':')
        .is_some_and(|(_, name)| name == server.as_str())
}

/// The `membership` of a member event.
fn membership(pdu: &Pdu) -> Option<String> {
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    content.get("membership")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standpoint(visibility: &str, invited: bool, joined: bool) -> Standpoint {
        Standpoint {
            visibility: visibility.into(),
            invited,
            joined,
        }
    }

    #[test]
    fn servers_see_what_history_visibility_lets_them() {
        use ServerView::*;
        let cases = [
            // (visibility, invited, joined, in room now) → view
            (("world_readable", false, false, false), Full),
            (("shared", false, false, true), Full),
            (("shared", false, false, false), Hidden),
            (("something new", false, false, true), Full),
            (("something new", false, false, false), Hidden),
            (("invited", true, false, true), Full),
            (("invited", false, false, true), Redacted),
            (("invited", false, false, false), Hidden),
            (("joined", true, false, true), Redacted),
            (("joined", false, true, false), Full),
            (("joined", false, false, false), Hidden),
        ];
        for ((visibility, invited, joined, in_room), expected) in cases {
            assert_eq!(
                view_at(&standpoint(visibility, invited, joined), in_room),
                expected,
                "{visibility} invited={invited} joined={joined} in_room={in_room}"
            );
        }
    }

    #[test]
    fn users_are_matched_to_their_server() {
        let server = ServerName::parse("127.0.0.1").unwrap();
        assert!(is_user_of("@a:127.0.0.1", &server));
        assert!(!is_user_of("@a:127.0.0.10", &server));
        assert!(!is_user_of("@a:127.0.0.1:8448", &server));
        assert!(!is_user_of("no colon", &server));
        let with_port = ServerName::parse("example.org:8448").unwrap();
        assert!(is_user_of("@a:example.org:8448", &with_port));
    }
}
