//! Space hierarchies (`GET /rooms/{roomId}/hierarchy`): a depth-first walk from a root room along
//! the `m.space.child` state events of spaces, one page at a time.
//!
//! A walk visits a room once, whatever the number of paths to it (loops included). Rooms the
//! requester may not preview are left out and not walked into. The children of a space are taken
//! in the specification's order (`order`, then the child event's timestamp, then the room ID), and
//! only children with a `via` list count. Between pages the walk (the rooms still to visit and
//! those visited) is kept in memory under a random pagination token for a few minutes; a token
//! names the user, root room, `max_depth` and `suggested_only` it was made for and is refused for
//! any other request.
//!
//! A room this server is not in (no local user joined) is described by another server: the
//! summary its parent's server gave, when that is enough (a room that is not a space, or one at
//! the maximum depth), else the answer of `GET /_matrix/federation/v1/hierarchy/{roomId}` asked of
//! the servers in the `via` list of its `m.space.child` event (for the root: the server of the
//! room ID, for room versions that name one). Children that server calls inaccessible are left
//! out. When no server answers, what this server knows of the room (if anything) is used, as for
//! federation being off. A page makes at most [`MAX_REMOTE_REQUESTS_PER_PAGE`] such requests and
//! starts none after [`REMOTE_PAGE_TIME`]; rooms left then are visited on the next page.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ruma::events::StateEventType;
use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use super::Services;
use super::federation::remote_hierarchy::{RemoteSpace, is_refusal, stripped_child};
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
/// Requests to other servers one page may make.
pub const MAX_REMOTE_REQUESTS_PER_PAGE: usize = 10;
/// After this long, a page starts no more requests to other servers (each one is bounded by the
/// federation client's own timeouts).
pub const REMOTE_PAGE_TIME: Duration = Duration::from_secs(20);
/// How long a pagination token stays valid.
const WALK_LIFETIME: Duration = Duration::from_secs(300);
/// Walks kept at once; beyond, the one that expires first goes.
const MAX_WALKS: usize = 1000;
/// The most rooms a walk keeps queued: what another server lists cannot grow it further.
const MAX_QUEUED: usize = 2000;
/// The servers of a child's `via` list a walk keeps (the first ones).
const MAX_VIA: usize = 3;
/// The largest summary (serialized) another server gave of a child that a walk keeps; a larger
/// one is asked for again when the child's turn comes.
const MAX_KEPT_SUMMARY_BYTES: usize = 4096;

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
    /// The rooms still to visit, the next one last.
    queue: Vec<Pending>,
    /// The rooms visited, and those not to visit (inaccessible, as another server said).
    visited: HashSet<OwnedRoomId>,
    expires: Instant,
}

/// A room a walk has still to visit.
#[derive(Debug, Clone)]
struct Pending {
    room_id: OwnedRoomId,
    depth: u64,
    /// The servers that may know the room, should this server not be in it.
    via: Vec<OwnedServerName>,
    /// The summary another server gave of it with its parent, if any.
    summary: Option<RoomChunk>,
}

/// What visiting a room gave.
enum Visit {
    /// The room as the requester sees it, and its children to visit.
    Shown(Box<HierarchyRoom>, Vec<Pending>),
    /// Left out (unknown, not for the requester, or no server could describe it), with the
    /// error of the last server asked when none answered and none refused.
    Hidden(Option<Error>),
    /// The page may ask no more servers: the room waits for the next page.
    Deferred,
}

/// How many requests to other servers a page may still make, and until when.
struct RemoteBudget {
    requests: usize,
    until: Instant,
}

impl RemoteBudget {
    fn new() -> Self {
        Self {
            requests: MAX_REMOTE_REQUESTS_PER_PAGE,
            until: Instant::now() + REMOTE_PAGE_TIME,
        }
    }

    /// Takes one request, if the page may still make one.
    fn take(&mut self) -> bool {
        if self.requests == 0 || Instant::now() >= self.until {
            return false;
        }
        self.requests -= 1;
        true
    }
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
    /// The servers to ask about it (the valid names of its `via` list).
    via: Vec<OwnedServerName>,
    order: Option<String>,
    ts: u64,
    stripped: Value,
}

impl Child {
    /// A child another server described (already checked by ruma's type).
    fn remote(event: &HierarchySpaceChildEvent) -> Result<Self> {
        Ok(Self {
            room_id: event.state_key.clone(),
            via: event.content.via.iter().take(MAX_VIA).cloned().collect(),
            order: event.content.order.as_ref().map(|order| order.to_string()),
            ts: event.origin_server_ts.get().into(),
            stripped: stripped_child(event)?,
        })
    }
}

/// Children in the specification's order: those with an `order` first, by it, then by the child
/// event's timestamp, then by room ID.
fn sort_children(children: &mut [Child]) {
    children.sort_by(|a, b| {
        (a.order.is_none(), &a.order, a.ts, &a.room_id).cmp(&(
            b.order.is_none(),
            &b.order,
            b.ts,
            &b.room_id,
        ))
    });
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
        let via = content
            .get("via")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|server| OwnedServerName::try_from(server.as_str()?).ok())
            .take(MAX_VIA)
            .collect();
        let ts: u64 = pdu.origin_server_ts().0.into();
        out.push(Child {
            via,
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
    sort_children(&mut out);
    out.truncate(MAX_CHILDREN_PER_SPACE);
    Ok(out)
}

impl Services {
    /// One page of the hierarchy under `request.root`, as `user` may see it. The root must be a
    /// room the user may preview, else 403 (whether it exists or not, as the specification
    /// lists); a root this server is not in is asked of the server its room ID names (502 when
    /// that server cannot be reached).
    pub async fn space_hierarchy(
        &self,
        user: &UserId,
        request: &HierarchyRequest<'_>,
    ) -> Result<HierarchyPage> {
        let forbidden = || Error::Forbidden("you may not view this room".into());
        let mut walk = match request.from {
            Some(token) => {
                // The first page showed the root; a root we follow is checked again (the user
                // may have left it meanwhile), one of another server is not asked again.
                if self.follows_locally(request.root)?
                    && !room_summary::may_preview(&self.rooms, request.root, Some(user))?
                {
                    return Err(forbidden());
                }
                self.space_walks.resume(token, user, request)?
            }
            None => Walk {
                user: user.to_owned(),
                root: request.root.to_owned(),
                suggested_only: request.suggested_only,
                max_depth: request.max_depth,
                queue: vec![Pending {
                    room_id: request.root.to_owned(),
                    depth: 0,
                    via: request
                        .root
                        .server_name()
                        .map(ToOwned::to_owned)
                        .into_iter()
                        .collect(),
                    summary: None,
                }],
                visited: HashSet::new(),
                expires: Instant::now(),
            },
        };
        let mut budget = RemoteBudget::new();
        let mut page = Vec::new();
        let mut visits = 0;
        while page.len() < request.limit && visits < MAX_VISITS_PER_PAGE {
            let Some(pending) = walk.queue.pop() else {
                break;
            };
            if walk.visited.contains(&pending.room_id) {
                continue;
            }
            let is_root = pending.room_id == request.root && request.from.is_none();
            match self.visit(user, &walk, &pending, &mut budget).await? {
                Visit::Deferred => {
                    walk.queue.push(pending);
                    break;
                }
                Visit::Hidden(error) if is_root => return Err(error.unwrap_or_else(forbidden)),
                Visit::Hidden(_) => {}
                Visit::Shown(room, children) => {
                    // Reversed, so that the first child is visited next.
                    let room_left = MAX_QUEUED.saturating_sub(walk.queue.len());
                    for child in children.into_iter().take(room_left).rev() {
                        if !walk.visited.contains(&child.room_id) {
                            walk.queue.push(child);
                        }
                    }
                    page.push(*room);
                }
            }
            walk.visited.insert(pending.room_id);
            visits += 1;
        }
        walk.queue
            .retain(|pending| !walk.visited.contains(&pending.room_id));
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

    /// Whether this server describes a room from its own state: it knows the room and is in it,
    /// or it talks with no other server.
    fn follows_locally(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.rooms.info(room_id)?.is_some()
            && (!self.federation.enabled() || self.rooms.is_resident(room_id)?))
    }

    /// Visits one room of a walk: from this server's state when it is in the room, else from
    /// what other servers say of it (falling back to this server's state, if it has any).
    async fn visit(
        &self,
        user: &UserId,
        walk: &Walk,
        pending: &Pending,
        budget: &mut RemoteBudget,
    ) -> Result<Visit> {
        if self.follows_locally(&pending.room_id)? {
            return self.visit_local(user, walk, pending);
        }
        if !self.federation.enabled() {
            return Ok(Visit::Hidden(None));
        }
        if let Some(summary) = &pending.summary
            && (!summary.is_space() || pending.depth >= walk.max_depth)
        {
            if !room_summary::may_preview_remote(&self.rooms, summary, Some(user))? {
                return Ok(Visit::Hidden(None));
            }
            let room = HierarchyRoom {
                room: summary.clone(),
                children_state: Vec::new(),
            };
            return Ok(Visit::Shown(Box::new(room), Vec::new()));
        }
        let servers = self
            .federation
            .servers_to_ask(pending.via.iter().map(|s| &**s));
        let mut refused = false;
        let mut last_error = None;
        for server in &servers {
            if !budget.take() {
                // The room waits for the next page, where all its servers can be asked.
                return Ok(Visit::Deferred);
            }
            match self
                .federation
                .remote_hierarchy(server, &pending.room_id, walk.suggested_only)
                .await
            {
                Ok(space) => return self.visit_remote(user, walk, pending, space),
                Err(e) => {
                    tracing::info!(%server, room_id = %pending.room_id, error = %e,
                        "a server could not describe a room of a space");
                    refused |= is_refusal(&e);
                    last_error = Some(e);
                }
            }
        }
        if self.rooms.info(&pending.room_id)?.is_some() {
            return self.visit_local(user, walk, pending);
        }
        Ok(Visit::Hidden(if refused { None } else { last_error }))
    }

    /// A room from this server's state.
    fn visit_local(&self, user: &UserId, walk: &Walk, pending: &Pending) -> Result<Visit> {
        let rooms = &self.rooms;
        if rooms.info(&pending.room_id)?.is_none()
            || !room_summary::may_preview(rooms, &pending.room_id, Some(user))?
        {
            return Ok(Visit::Hidden(None));
        }
        let room = room_summary::chunk(rooms, &pending.room_id)?;
        let children = if room.is_space() && pending.depth < walk.max_depth {
            children(rooms, &pending.room_id, walk.suggested_only)?
        } else {
            Vec::new()
        };
        Ok(shown(room, children, pending.depth, |_| None))
    }

    /// A room as another server described it.
    fn visit_remote(
        &self,
        user: &UserId,
        walk: &Walk,
        pending: &Pending,
        mut space: RemoteSpace,
    ) -> Result<Visit> {
        if !room_summary::may_preview_remote(&self.rooms, &space.room, Some(user))? {
            return Ok(Visit::Hidden(None));
        }
        let mut children = Vec::new();
        if space.room.is_space() && pending.depth < walk.max_depth {
            for event in &space.children_state {
                children.push(Child::remote(event)?);
            }
            sort_children(&mut children);
            children.truncate(MAX_CHILDREN_PER_SPACE);
        }
        let inaccessible = std::mem::take(&mut space.inaccessible);
        let mut visit = shown(space.room, children, pending.depth, |room_id| {
            space.children.remove(room_id).filter(|summary| {
                serde_json::to_vec(summary).is_ok_and(|bytes| bytes.len() <= MAX_KEPT_SUMMARY_BYTES)
            })
        });
        if let Visit::Shown(_, pending_children) = &mut visit {
            pending_children.retain(|child| !inaccessible.contains(&child.room_id));
        }
        Ok(visit)
    }
}

/// A room shown with its children (their events in the room's entry, and the rooms to visit),
/// each with the summary `summary_of` gives of it.
fn shown(
    room: RoomChunk,
    children: Vec<Child>,
    depth: u64,
    mut summary_of: impl FnMut(&RoomId) -> Option<RoomChunk>,
) -> Visit {
    let mut pending = Vec::with_capacity(children.len());
    let mut children_state = Vec::with_capacity(children.len());
    for child in children {
        pending.push(Pending {
            summary: summary_of(&child.room_id),
            room_id: child.room_id,
            depth: depth + 1,
            via: child.via,
        });
        children_state.push(child.stripped);
    }
    let room = HierarchyRoom {
        room,
        children_state,
    };
    Visit::Shown(Box::new(room), pending)
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
            queue: vec![Pending {
                room_id: RoomId::parse("!next:x").unwrap(),
                depth: 1,
                via: Vec::new(),
                summary: None,
            }],
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
