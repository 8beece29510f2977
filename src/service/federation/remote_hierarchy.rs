//! Spaces of other servers for our clients: `GET /_matrix/federation/v1/hierarchy/{roomId}` asked
//! of a server that a `m.space.child` event's `via` list (or a room ID) names, when a client's
//! `/hierarchy` or room summary reaches a room this server is not in.
//!
//! A peer may lie or send junk: its summaries and `m.space.child` events are parsed with ruma's
//! types and rebuilt from the parsed fields (nothing else of the answer reaches a client); a
//! malformed `room` fails the answer, malformed children are dropped, and children the `room`
//! does not name are ignored. Nothing is kept beyond the client request (and its pagination)
//! that asked.

use std::collections::{HashMap, HashSet};

use ruma::events::space::child::HierarchySpaceChildEvent;
use ruma::room::{JoinRuleSummary, RoomSummary as RumaRoomSummary};
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName};
use serde_json::{Value, json};

use super::Federation;
use super::request::Limit;
use crate::error::{Error, Result};
use crate::service::room_summary::RoomChunk;
use crate::service::rooms::alias::RoomSummary;

/// The most `m.space.child` events, child summaries and inaccessible children taken from one
/// answer (as many as we serve of a space ourselves).
const MAX_CHILDREN: usize = 1000;
/// The most rooms of a restricted join rule kept from one summary.
const MAX_ALLOWED_ROOMS: usize = 50;
/// The servers asked about one room, at most.
const MAX_SERVERS_PER_ROOM: usize = 3;

/// A room of another server and its children, as that server described them.
#[derive(Debug, Clone)]
pub struct RemoteSpace {
    /// The summary of the room asked for.
    pub room: RoomChunk,
    /// Its `m.space.child` events with a non-empty `via` list (the suggested ones only, when
    /// asked for).
    pub children_state: Vec<HierarchySpaceChildEvent>,
    /// The summaries the server gave of those children, by room ID.
    pub children: HashMap<OwnedRoomId, RoomChunk>,
    /// The children the server says we cannot peek into or join: not to be asked about again.
    pub inaccessible: HashSet<OwnedRoomId>,
}

impl Federation {
    /// The servers to ask about a room, from candidates (a `via` list, a room ID's server):
    /// not us, each once, the first few.
    pub fn servers_to_ask<'a>(
        &self,
        candidates: impl IntoIterator<Item = &'a ServerName>,
    ) -> Vec<OwnedServerName> {
        let mut servers: Vec<OwnedServerName> = Vec::new();
        for server in candidates {
            if servers.len() == MAX_SERVERS_PER_ROOM {
                break;
            }
            if !self.is_us(server) && !servers.iter().any(|s| s == server) {
                servers.push(server.to_owned());
            }
        }
        servers
    }

    /// Asks `server` for the summary of `room_id` and of its children (one level).
    /// Errors: `Error::Remote` for a refusal (404 when the server does not know the room or
    /// will not show it to us), `Error::Unreachable` when it cannot be reached or answers badly.
    pub async fn remote_hierarchy(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<RemoteSpace> {
        let path = format!(
            "/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}",
            url::form_urlencoded::byte_serialize(room_id.as_str().as_bytes()).collect::<String>()
        );
        let answer = self.get(server, &path, Limit::Batch).await?;
        parse_answer(room_id, answer, suggested_only).map_err(|reason| {
            Error::Unreachable(format!(
                "{server} answered the hierarchy of {room_id} badly: {reason}"
            ))
        })
    }
}

/// Whether a failed request was the other server's refusal (it knows no such room, or will not
/// show it), rather than a failure to get an answer. A timeout (408), a rate limit (429) or a
/// refused signature (401) says nothing about the room: they count as failures.
pub fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Remote { status, .. }
            if (400..=499).contains(status) && !matches!(status, 401 | 408 | 429)
    )
}

/// Checks a `/hierarchy` answer for `room_id` and keeps what is valid of it.
fn parse_answer(
    room_id: &RoomId,
    answer: Value,
    suggested_only: bool,
) -> std::result::Result<RemoteSpace, String> {
    let Value::Object(mut answer) = answer else {
        return Err("not a JSON object".into());
    };
    let Some(Value::Object(mut room)) = answer.remove("room") else {
        return Err("no room object".into());
    };
    let children_state = match room.remove("children_state") {
        Some(Value::Array(events)) => events,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err("children_state is not an array".into()),
    };
    let room = summary_chunk(Value::Object(room)).map_err(|e| format!("room: {e}"))?;
    if room.summary.room_id != room_id {
        return Err(format!("it describes {}", room.summary.room_id));
    }
    let mut named = HashSet::new();
    let children_state: Vec<HierarchySpaceChildEvent> = children_state
        .into_iter()
        .filter_map(|event| space_child(event, suggested_only))
        .filter(|event| named.insert(event.state_key.clone()))
        .take(MAX_CHILDREN)
        .collect();
    let children = array(answer.remove("children"))
        .filter_map(|child| summary_chunk(child).ok())
        .filter(|child| named.contains(&child.summary.room_id))
        .take(MAX_CHILDREN)
        .map(|child| (child.summary.room_id.clone(), child))
        .collect();
    let inaccessible = array(answer.remove("inaccessible_children"))
        .filter_map(|id| serde_json::from_value::<OwnedRoomId>(id).ok())
        .filter(|id| named.contains(id))
        .take(MAX_CHILDREN)
        .collect();
    Ok(RemoteSpace {
        room,
        children_state,
        children,
        inaccessible,
    })
}

/// The elements of a JSON array (none for anything else).
fn array(value: Option<Value>) -> impl Iterator<Item = Value> {
    match value {
        Some(Value::Array(values)) => values,
        _ => Vec::new(),
    }
    .into_iter()
}

/// An `m.space.child` event of a `children_state`, if it is one with a `via` list (and
/// suggested, when only suggested children are asked for).
fn space_child(event: Value, suggested_only: bool) -> Option<HierarchySpaceChildEvent> {
    if event.get("type").and_then(Value::as_str) != Some("m.space.child") {
        return None;
    }
    let event: HierarchySpaceChildEvent = serde_json::from_value(event).ok()?;
    let wanted = !event.content.via.is_empty() && (event.content.suggested || !suggested_only);
    wanted.then_some(event)
}

/// An `m.space.child` event as a hierarchy shows it (stripped state with `origin_server_ts`),
/// rebuilt from its parsed fields.
pub fn stripped_child(event: &HierarchySpaceChildEvent) -> Result<Value> {
    let ts: u64 = event.origin_server_ts.get().into();
    Ok(json!({
        "type": "m.space.child",
        "state_key": event.state_key,
        "content": serde_json::to_value(&event.content).map_err(Error::internal)?,
        "sender": event.sender,
        "origin_server_ts": ts,
    }))
}

/// A room summary another server sent, checked with ruma's type and rebuilt as ours.
pub fn summary_chunk(value: Value) -> std::result::Result<RoomChunk, serde_json::Error> {
    let summary: RumaRoomSummary = serde_json::from_value(value)?;
    let mut allowed_room_ids = match &summary.join_rule {
        JoinRuleSummary::Restricted(rule) | JoinRuleSummary::KnockRestricted(rule) => {
            rule.allowed_room_ids.clone()
        }
        _ => Vec::new(),
    };
    allowed_room_ids.truncate(MAX_ALLOWED_ROOMS);
    Ok(RoomChunk {
        summary: RoomSummary {
            room_id: summary.room_id,
            name: summary.name,
            topic: summary.topic,
            canonical_alias: summary.canonical_alias,
            avatar_url: summary.avatar_url.map(|url| url.to_string()),
            join_rule: Some(summary.join_rule.as_str().to_owned()),
            room_type: summary.room_type.map(|kind| kind.as_str().to_owned()),
            num_joined_members: summary.num_joined_members.into(),
            world_readable: summary.world_readable,
            guest_can_join: summary.guest_can_join,
        },
        room_version: summary.room_version,
        encryption: summary.encryption.map(|algorithm| algorithm.to_string()),
        allowed_room_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(id: &str) -> Value {
        json!({
            "room_id": id,
            "name": format!("room {id}"),
            "num_joined_members": 3,
            "world_readable": false,
            "guest_can_join": false,
            "join_rule": "public",
        })
    }

    fn child(id: &str, suggested: bool) -> Value {
        json!({
            "type": "m.space.child",
            "state_key": id,
            "content": { "via": ["a.example"], "suggested": suggested, "junk": "x".repeat(10) },
            "sender": "@alice:a.example",
            "origin_server_ts": 1_629_413_349_153u64,
        })
    }

    #[test]
    fn a_valid_answer_is_kept_and_junk_dropped() {
        let space = RoomId::parse("!space:a.example").unwrap();
        let mut root = room("!space:a.example");
        root["room_type"] = json!("m.space");
        root["extra"] = json!({ "big": "junk" });
        root["children_state"] = json!([
            child("!one:a.example", true),
            child("!two:a.example", false),
            // Not a child event, no via, a bad room ID: dropped.
            { "type": "m.room.name", "state_key": "!x:a.example", "content": {} },
            { "type": "m.space.child", "state_key": "!y:a.example", "content": { "via": [] },
              "sender": "@a:a.example", "origin_server_ts": 1 },
            child("not a room", false),
        ]);
        let answer = json!({
            "room": root,
            "children": [
                room("!one:a.example"),
                // Not named by the space, malformed: dropped.
                room("!other:a.example"),
                { "room_id": "!two:a.example", "num_joined_members": -1 },
                "junk",
            ],
            "inaccessible_children": ["!two:a.example", "!stranger:a.example", 3],
        });
        let parsed = parse_answer(&space, answer, false).unwrap();
        assert!(parsed.room.is_space());
        assert_eq!(parsed.children_state.len(), 2);
        assert_eq!(parsed.children.len(), 1);
        assert_eq!(
            parsed.children[&RoomId::parse("!one:a.example").unwrap()]
                .summary
                .name
                .as_deref(),
            Some("room !one:a.example")
        );
        assert_eq!(parsed.inaccessible.len(), 1);
        let served = stripped_child(&parsed.children_state[0]).unwrap();
        assert_eq!(served["type"], "m.space.child");
        assert!(served["content"].get("junk").is_none());
        let serialized = serde_json::to_value(&parsed.room).unwrap();
        assert!(serialized.get("extra").is_none());
        assert!(serialized.get("children_state").is_none());

        let answer = json!({ "room": root, "children": [], "inaccessible_children": [] });
        let suggested = parse_answer(&space, answer, true).unwrap();
        assert_eq!(suggested.children_state.len(), 1);
    }

    #[test]
    fn a_malformed_room_fails_the_answer() {
        let space = RoomId::parse("!space:a.example").unwrap();
        for answer in [
            json!([]),
            json!({ "children": [] }),
            json!({ "room": { "room_id": "!space:a.example" } }),
            json!({ "room": room("!elsewhere:a.example") }),
        ] {
            assert!(parse_answer(&space, answer, false).is_err());
        }
        let mut bad_state = room("!space:a.example");
        bad_state["children_state"] = json!("junk");
        assert!(parse_answer(&space, json!({ "room": bad_state }), false).is_err());
        // children_state missing: no children.
        let parsed = parse_answer(&space, json!({ "room": room("!space:a.example") }), false);
        assert!(parsed.unwrap().children_state.is_empty());
    }
}
