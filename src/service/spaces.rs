//! Space hierarchies (`GET /rooms/{roomId}/hierarchy`): a depth-first walk from a root room along
//! the `m.space.child` state events of spaces, one page at a time.
//!
//! A walk visits a room once, whatever the number of paths to it (loops included). Rooms the
//! requester may not preview are left out and not walked into; rooms this server does not know
//! are skipped (their state would come over federation). The children of a space are taken in
//! the specification's order (`order`, then the child event's timestamp, then the room ID), and
//! only children with a `via` list count. Between pages the walk (the rooms still to visit and
//! those visited) is kept in memory under a random pagination token for a few minutes; a token
//! names the user, root room, `max_depth` and `suggested_only` it was made for and is refused for
//! any other request.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use super::Services;
use super::room_summary::{self, RoomChunk};
use super::rooms::Rooms;
use crate::error::{Error, Result};

/// Rooms per page when the request gives no `limit`, and the most a page holds.
pub const MAX_LIMIT: u64 = 50;
/// How deep a walk goes when the request gives no `max_depth`, and the deepest it goes.
pub const MAX_DEPTH: u64 = 20;
/// Rooms one page may look at (including the ones left out), so that a page's cost stays bounded
/// when a space holds many rooms the requester may not see.
const MAX_VISITS_PER_PAGE: usize = 500;
/// The children of one space that are walked.
const MAX_CHILDREN_PER_SPACE: usize = 1000;
/// The longest valid `order` of a child, in characters.
const MAX_ORDER_CHARS: usize = 50;
/// How long a pagination token stays valid.
const WALK_LIFETIME: Duration = Duration::from_secs(300);
/// Walks kept at once; beyond, the one that expires first goes.
const MAX_WALKS: usize = 1000;

/// What a hierarchy request asks for.
#[derive(Debug, Clone)]
pub struct HierarchyRequest<'a> {
    pub root: &'a RoomId,
    pub suggested_only: bool,
    /// At most [`MAX_DEPTH`].
    pub max_depth: u64,
    /// Between 1 and [`MAX_LIMIT`].
    pub limit: usize,
    pub from: Option<&'a str>,
}

/// One room of a hierarchy page.
#[derive(Debug, Clone, Serialize)]
pub struct HierarchyRoom {
    #[serde(flatten)]
    pub room: RoomChunk,
    /// The room's `m.space.child` events as stripped state with `origin_server_ts`; empty for a
    /// room that is not a space or at the maximum depth.
    pub children_state: Vec<Value>,
}

/// One page of a hierarchy.
#[derive(Debug, Clone)]
pub struct HierarchyPage {
    pub rooms: Vec<HierarchyRoom>,
    pub next_batch: Option<String>,
}

/// The walks in progress, by pagination token.
#[derive(Default)]
pub struct SpaceWalks {
    walks: Mutex<HashMap<String, Walk>>,
}

/// A walk between two pages.
#[derive(Debug, Clone)]
struct Walk {
    user: OwnedUserId,
    root: OwnedRoomId,
    suggested_only: bool,
    max_depth: u64,
    /// The rooms still to visit with their depth, the next one last.
    queue: Vec<(OwnedRoomId, u64)>,
    visited: HashSet<OwnedRoomId>,
    expires: Instant,
}

impl SpaceWalks {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, Walk>>> {
        self.walks
            .lock()
            .map_err(|_| Error::internal("space walks poisoned"))
    }

    /// The walk a token names, if it is still valid and was made for this user and request.
    fn resume(&self, token: &str, user: &UserId, request: &HierarchyRequest<'_>) -> Result<Walk> {
        let now = Instant::now();
        let walk = self
            .lock()?
            .get(token)
            .filter(|w| w.expires > now && w.user == user)
            .cloned()
            .ok_or_else(|| Error::InvalidParam("unknown or expired pagination token".into()))?;
        if walk.root != request.root
            || walk.suggested_only != request.suggested_only
            || walk.max_depth != request.max_depth
        {
            return Err(Error::InvalidParam(
                "the room, suggested_only and max_depth cannot change during pagination".into(),
            ));
        }
        Ok(walk)
    }

    /// Keeps a walk for the next page; returns its token.
    fn park(&self, mut walk: Walk) -> Result<String> {
        let now = Instant::now();
        walk.expires = now + WALK_LIFETIME;
        let token = crate::util::random_string(24);
        let mut walks = self.lock()?;
        walks.retain(|_, w| w.expires > now);
        if walks.len() >= MAX_WALKS
            && let Some(first) = walks
                .iter()
                .min_by_key(|(_, w)| w.expires)
                .map(|(t, _)| t.clone())
        {
            walks.remove(&first);
        }
        walks.insert(token.clone(), walk);
        Ok(token)
    }
}

/// A valid child of a space.
struct Child {
    room_id: OwnedRoomId,
    order: Option<String>,
    ts: u64,
    stripped: Value,
}

/// The children of a space with a `via` list (the suggested ones only, if asked), in the
/// specification's order, at most [`MAX_CHILDREN_PER_SPACE`].
fn children(rooms: &Rooms, space: &RoomId, suggested_only: bool) -> Result<Vec<Child>> {
    let state = rooms.current_state(space)?;
    let mut out = Vec::new();
    for ((kind, state_key), event_id) in state.iter() {
        if *kind != StateEventType::SpaceChild {
            continue;
        }
        let Ok(room_id) = OwnedRoomId::try_from(state_key.as_str()) else {
            continue;
        };
        let Some(pdu) = rooms.pdu(event_id)? else {
            continue;
        };
        let pdu = match rooms.redacted_by(event_id)? {
            Some(_) => std::sync::Arc::new(pdu.redacted()?),
            None => pdu,
        };
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let valid_via = content
            .get("via")
            .and_then(Value::as_array)
            .is_some_and(|via| !via.is_empty() && via.iter().all(Value::is_string));
        if !valid_via || (suggested_only && content.get("suggested") != Some(&Value::Bool(true))) {
            continue;
        }
        let order = content
            .get("order")
            .and_then(Value::as_str)
            .filter(|o| {
                o.chars().count() <= MAX_ORDER_CHARS && o.chars().all(|c| (' '..='~').contains(&c))
            })
            .map(str::to_owned);
        let ts: u64 = pdu.origin_server_ts().0.into();
        out.push(Child {
            stripped: json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": pdu.sender(),
                "origin_server_ts": ts,
            }),
            room_id,
            order,
            ts,
        });
    }
    out.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(
            b.order.is_none(),
            &b.order,
            b.ts,
            &b.room_id,
        ))
    });
    out.truncate(MAX_CHILDREN_PER_SPACE);
    Ok(out)
}

impl Services {
    /// One page of the hierarchy under `request.root`, as `user` may see it. The root must be a
    /// room the user may preview, else 403 (whether it exists or not, as the specification
    /// lists).
    pub fn space_hierarchy(
        &self,
        user: &UserId,
        request: &HierarchyRequest<'_>,
    ) -> Result<HierarchyPage> {
        let rooms = &self.rooms;
        if rooms.info(request.root)?.is_none()
            || !room_summary::may_preview(rooms, request.root, Some(user))?
        {
            return Err(Error::Forbidden("you may not view this room".into()));
        }
        let mut walk = match request.from {
            Some(token) => self.space_walks.resume(token, user, request)?,
            None => Walk {
                user: user.to_owned(),
                root: request.root.to_owned(),
                suggested_only: request.suggested_only,
                max_depth: request.max_depth,
                queue: vec![(request.root.to_owned(), 0)],
                visited: HashSet::new(),
                expires: Instant::now(),
            },
        };
        let mut page = Vec::new();
        let mut visits = 0;
        while page.len() < request.limit && visits < MAX_VISITS_PER_PAGE {
            let Some((room_id, depth)) = walk.queue.pop() else {
                break;
            };
            if !walk.visited.insert(room_id.clone()) {
                continue;
            }
            visits += 1;
            // Rooms this server does not know are skipped until federation can fill them in.
            if rooms.info(&room_id)?.is_none()
                || !room_summary::may_preview(rooms, &room_id, Some(user))?
            {
                continue;
            }
            let room = room_summary::chunk(rooms, &room_id)?;
            let children = if room.is_space() && depth < walk.max_depth {
                children(rooms, &room_id, walk.suggested_only)?
            } else {
                Vec::new()
            };
            // Reversed, so that the first child is visited next.
            for child in children.iter().rev() {
                if !walk.visited.contains(&child.room_id) {
                    walk.queue.push((child.room_id.clone(), depth + 1));
                }
            }
            page.push(HierarchyRoom {
                room,
                children_state: children.into_iter().map(|c| c.stripped).collect(),
            });
        }
        walk.queue
            .retain(|(room_id, _)| !walk.visited.contains(room_id));
        let next_batch = if walk.queue.is_empty() {
            None
        } else {
            Some(self.space_walks.park(walk)?)
        };
        Ok(HierarchyPage {
            rooms: page,
            next_batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(user: &str, root: &str) -> Walk {
        Walk {
            user: UserId::parse(user).unwrap(),
            root: RoomId::parse(root).unwrap(),
            suggested_only: false,
            max_depth: 3,
            queue: vec![(RoomId::parse("!next:x").unwrap(), 1)],
            visited: HashSet::new(),
            expires: Instant::now(),
        }
    }

    #[test]
    fn tokens_fit_only_the_request_they_were_made_for() {
        let walks = SpaceWalks::default();
        let token = walks.park(walk("@a:x", "!root:x")).unwrap();
        let root = RoomId::parse("!root:x").unwrap();
        let other = RoomId::parse("!other:x").unwrap();
        let alice = UserId::parse("@a:x").unwrap();
        let bob = UserId::parse("@b:x").unwrap();
        let request = HierarchyRequest {
            root: &root,
            suggested_only: false,
            max_depth: 3,
            limit: 10,
            from: Some(&token),
        };
        let resumed = walks.resume(&token, &alice, &request).unwrap();
        assert_eq!(resumed.queue.len(), 1);
        // The same token may be used again (a retried request).
        assert!(walks.resume(&token, &alice, &request).is_ok());
        let invalid = |r: Result<Walk>| matches!(r, Err(Error::InvalidParam(_)));
        assert!(invalid(walks.resume(&token, &bob, &request)));
        assert!(invalid(walks.resume("bogus", &alice, &request)));
        for changed in [
            HierarchyRequest {
                root: &other,
                ..request.clone()
            },
            HierarchyRequest {
                suggested_only: true,
                ..request.clone()
            },
            HierarchyRequest {
                max_depth: 2,
                ..request.clone()
            },
        ] {
            assert!(invalid(walks.resume(&token, &alice, &changed)));
        }
        // A different limit is fine.
        let smaller = HierarchyRequest {
            limit: 1,
            ..request.clone()
        };
        assert!(walks.resume(&token, &alice, &smaller).is_ok());
    }
}
