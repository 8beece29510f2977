//! A room as seen from outside: the summary that `GET /room_summary/{roomIdOrAlias}` answers and
//! that a space hierarchy gives of each of its rooms, and who may see it.

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId};
use serde::Serialize;
use serde_json::{Value, json};

use super::Services;
use super::federation::remote_hierarchy::is_refusal;
use super::rooms::Rooms;
use super::rooms::alias::RoomSummary;
use crate::error::{Error, Result};

/// A room's summary (the specification's `RoomSummary`): what the published room directory shows,
/// plus the room version, the encryption algorithm and the rooms a restricted join rule names.
/// Summaries of rooms this server knows always carry the room version; those another server gave
/// may lack it (it became part of the summary in Matrix 1.15).
#[derive(Debug, Clone, Serialize)]
pub struct RoomChunk {
    #[serde(flatten)]
    pub summary: RoomSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_version: Option<RoomVersionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    /// The rooms whose members may join, for the `restricted` and `knock_restricted` rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_room_ids: Vec<OwnedRoomId>,
}

impl RoomChunk {
    /// Whether the room is a space (`m.space` in its create event).
    pub fn is_space(&self) -> bool {
        self.summary.room_type.as_deref() == Some("m.space")
    }
}

/// The summary of a room this server knows (404 otherwise), from its current state.
pub fn chunk(rooms: &Rooms, room_id: &RoomId) -> Result<RoomChunk> {
    let info = rooms
        .info(room_id)?
        .ok_or_else(|| Error::NotFound("no such room".into()))?;
    let summary = rooms.room_summary(room_id)?;
    let state = rooms.current_state(room_id)?;
    let encryption = rooms
        .state_content(&state, &StateEventType::RoomEncryption)?
        .and_then(|content| content.get("algorithm")?.as_str().map(str::to_owned));
    Ok(RoomChunk {
        summary,
        room_version: Some(info.room_version),
        encryption,
        allowed_room_ids: rooms.allowed_rooms(&state)?.unwrap_or_default(),
    })
}

/// Whether `user` (`None`: a request without an access token) may see the summary of a room this
/// server knows: they are joined or invited, the room is world-readable, anyone may join it or
/// knock on it, or its join rule is `restricted` and they are in one of the rooms it names. A
/// banned user only sees world-readable rooms.
pub fn may_preview(rooms: &Rooms, room_id: &RoomId, user: Option<&UserId>) -> Result<bool> {
    let membership = match user {
        Some(user) => rooms.membership(room_id, user)?,
        None => None,
    };
    if matches!(membership.as_deref(), Some("join" | "invite")) {
        return Ok(true);
    }
    let state = rooms.current_state(room_id)?;
    let field = |kind: StateEventType, field: &str| -> Result<Option<String>> {
        Ok(rooms
            .state_content(&state, &kind)?
            .and_then(|content| content.get(field)?.as_str().map(str::to_owned)))
    };
    if field(StateEventType::RoomHistoryVisibility, "history_visibility")?.as_deref()
        == Some("world_readable")
    {
        return Ok(true);
    }
    if membership.as_deref() == Some("ban") {
        return Ok(false);
    }
    match field(StateEventType::RoomJoinRules, "join_rule")?.as_deref() {
        Some("public" | "knock" | "knock_restricted") => Ok(true),
        Some("restricted") => match (user, rooms.allowed_rooms(&state)?) {
            (Some(user), Some(allowed)) => rooms.is_joined_to_any(user, &allowed),
            _ => Ok(false),
        },
        _ => Ok(false),
    }
}

/// Whether `user` (`None`: a request without an access token) may see the summary of a room this
/// server is not in, as another server described it: the rules of [`may_preview`] applied to the
/// summary, with the user's membership as this server knows it (an invite or a ban it received).
pub fn may_preview_remote(rooms: &Rooms, room: &RoomChunk, user: Option<&UserId>) -> Result<bool> {
    let room_id = &room.summary.room_id;
    let membership = match user {
        Some(user) => rooms.membership(room_id, user)?,
        None => None,
    };
    if matches!(membership.as_deref(), Some("join" | "invite")) || room.summary.world_readable {
        return Ok(true);
    }
    if membership.as_deref() == Some("ban") {
        return Ok(false);
    }
    match room.summary.join_rule.as_deref() {
        // No join rule in a summary means `public`.
        None | Some("public" | "knock" | "knock_restricted") => Ok(true),
        Some("restricted") => match user {
            Some(user) => rooms.is_joined_to_any(user, &room.allowed_room_ids),
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

impl Services {
    /// A room's summary with the requester's membership (`GET /room_summary/{roomIdOrAlias}`).
    ///
    /// A room this server is in is described from its state. Another one, for a requester with
    /// an access token while federation is on, is asked of the servers in `via` and then of the
    /// server its room ID names (`GET /_matrix/federation/v1/hierarchy/{roomId}`, a few servers
    /// at most, the first that describes it counting); when none does, what this server knows of
    /// the room (an invite's state, a room it left) is used. 404 when the room is unknown or the
    /// requester may not preview it; 502 when no server could be reached and none refused.
    pub async fn room_summary(
        &self,
        room_id: &RoomId,
        user: Option<&UserId>,
        via: &[OwnedServerName],
    ) -> Result<Value> {
        let not_found = || Error::NotFound("room not found, or you may not preview it".into());
        let known = self.rooms.info(room_id)?.is_some();
        let resident = known && self.rooms.is_resident(room_id)?;
        let described = if !resident && user.is_some() && self.federation.enabled() {
            let candidates = via.iter().map(|s| &**s).chain(room_id.server_name());
            let mut remote = None;
            let mut refused = false;
            let mut last_error = None;
            for server in self.federation.servers_to_ask(candidates) {
                match self
                    .federation
                    .remote_hierarchy(&server, room_id, true)
                    .await
                {
                    Ok(space) => {
                        remote = Some(space.room);
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%server, %room_id, error = %e,
                            "a server could not describe a room");
                        refused |= is_refusal(&e);
                        last_error = Some(e);
                    }
                }
            }
            match remote {
                Some(room) => {
                    if !may_preview_remote(&self.rooms, &room, user)? {
                        return Err(not_found());
                    }
                    Some(room)
                }
                None if known => None,
                None if refused => return Err(not_found()),
                None => return Err(last_error.unwrap_or_else(not_found)),
            }
        } else {
            None
        };
        let chunk = match described {
            Some(chunk) => chunk,
            None => {
                if !known || !may_preview(&self.rooms, room_id, user)? {
                    return Err(not_found());
                }
                chunk(&self.rooms, room_id)?
            }
        };
        let mut body = serde_json::to_value(chunk).map_err(Error::internal)?;
        if let (Some(user), Some(fields)) = (user, body.as_object_mut()) {
            let membership = self.rooms.membership(room_id, user)?;
            fields.insert(
                "membership".into(),
                json!(membership.as_deref().unwrap_or("leave")),
            );
        }
        Ok(body)
    }
}
