//! A room as seen from outside: the summary that `GET /room_summary/{roomIdOrAlias}` answers and
//! that a space hierarchy gives of each of its rooms, and who may see it.

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, RoomId, RoomVersionId, UserId};
use serde::Serialize;

use super::rooms::Rooms;
use super::rooms::alias::RoomSummary;
use crate::error::{Error, Result};

/// A room's summary (the specification's `RoomSummary`): what the published room directory shows,
/// plus the room version, the encryption algorithm and the rooms a restricted join rule names.
#[derive(Debug, Clone, Serialize)]
pub struct RoomChunk {
    #[serde(flatten)]
    pub summary: RoomSummary,
    pub room_version: RoomVersionId,
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
        room_version: info.room_version,
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
