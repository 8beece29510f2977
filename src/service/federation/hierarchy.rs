//! A space and its children as another server asks for them
//! (`GET /_matrix/federation/v1/hierarchy/{roomId}`): one level, not paginated, the requesting
//! server filtering further for its user. Rooms the server could not peek into or join are named
//! in `inaccessible_children`; rooms this server does not know are left out.

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, RoomId, ServerName};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::room_summary;

/// The most children of a space that are looked at.
const MAX_CHILDREN: usize = 1000;

impl Services {
    /// The summary of `room_id` with its `m.space.child` events, and the summaries of the
    /// children `origin` may see. 404 when the room is unknown or `origin` may not see it.
    pub fn federation_hierarchy(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        suggested_only: bool,
    ) -> Result<Value> {
        let not_found = || Error::NotFound("no such room, or it is not accessible".into());
        if self.rooms.info(room_id)?.is_none() {
            return Err(not_found());
        }
        self.federation.check_acl(&self.rooms, room_id, origin)?;
        if !self.accessible_to_server(room_id, origin)? {
            return Err(not_found());
        }
        let (children_state, children_ids) = self.space_children(room_id, suggested_only)?;
        let mut room = serde_json::to_value(room_summary::chunk(&self.rooms, room_id)?)
            .map_err(Error::internal)?;
        room["children_state"] = json!(children_state);
        let mut children = Vec::new();
        let mut inaccessible = Vec::new();
        for child in children_ids {
            if child == room_id || self.rooms.info(&child)?.is_none() {
                continue;
            }
            let allowed = self
                .federation
                .check_acl(&self.rooms, &child, origin)
                .is_ok()
                && self.accessible_to_server(&child, origin)?;
            if !allowed {
                inaccessible.push(child);
                continue;
            }
            let chunk = room_summary::chunk(&self.rooms, &child)?;
            let mut entry = serde_json::to_value(&chunk).map_err(Error::internal)?;
            if chunk.is_space() {
                entry["children_state"] = json!(self.space_children(&child, suggested_only)?.0);
            }
            children.push(entry);
        }
        Ok(json!({
            "room": room,
            "children": children,
            "inaccessible_children": inaccessible,
        }))
    }

    /// Whether a server could peek into or join a room: anyone may see it (public, knockable or
    /// world-readable), the server is in it, or its join rule lets the server's members in
    /// through a room the server is in.
    fn accessible_to_server(&self, room_id: &RoomId, origin: &ServerName) -> Result<bool> {
        if room_summary::may_preview(&self.rooms, room_id, None)?
            || self.rooms.servers_in_room(room_id)?.contains(origin)
        {
            return Ok(true);
        }
        let state = self.rooms.current_state(room_id)?;
        let Some(allowed) = self.rooms.allowed_rooms(&state)? else {
            return Ok(false);
        };
        for allowed_room in allowed {
            if self.rooms.servers_in_room(&allowed_room)?.contains(origin) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A space's `m.space.child` events with a `via` list (the suggested ones only, if asked),
    /// as stripped state with `origin_server_ts`, and the rooms they name.
    fn space_children(
        &self,
        space: &RoomId,
        suggested_only: bool,
    ) -> Result<(Vec<Value>, Vec<OwnedRoomId>)> {
        let state = self.rooms.current_state(space)?;
        let mut stripped = Vec::new();
        let mut rooms = Vec::new();
        for ((kind, state_key), event_id) in state.iter() {
            if *kind != StateEventType::SpaceChild || rooms.len() >= MAX_CHILDREN {
                continue;
            }
            let Ok(child) = OwnedRoomId::try_from(state_key.as_str()) else {
                continue;
            };
            let Some(pdu) = self.rooms.pdu(event_id)? else {
                continue;
            };
            let pdu = match self.rooms.redacted_by(event_id)? {
                Some(_) => pdu.redacted()?,
                None => (*pdu).clone(),
            };
            let content: Value = serde_json::from_str(pdu.content().get())?;
            let has_via = content
                .get("via")
                .and_then(Value::as_array)
                .is_some_and(|via| !via.is_empty() && via.iter().all(Value::is_string));
            let suggested = content.get("suggested") == Some(&Value::Bool(true));
            if !has_via || (suggested_only && !suggested) {
                continue;
            }
            let ts: u64 = pdu.origin_server_ts().0.into();
            stripped.push(json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": pdu.sender(),
                "origin_server_ts": ts,
            }));
            rooms.push(child);
        }
        Ok((stripped, rooms))
    }
}
