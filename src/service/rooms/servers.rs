//! The servers taking part in a room: those with a joined member. They receive the room's new
//! events and EDUs, and are asked for what we miss.

use std::collections::BTreeSet;

use ruma::{OwnedServerName, RoomId, UserId};

use super::Rooms;
use crate::error::Result;

impl Rooms {
    /// The servers with at least one joined member in the room (ours included when we have one).
    pub fn servers_in_room(&self, room_id: &RoomId) -> Result<BTreeSet<OwnedServerName>> {
        Ok(self
            .members(room_id, Some("join"))?
            .iter()
            .filter_map(|(user, _)| <&UserId>::try_from(user.as_str()).ok())
            .map(|user| user.server_name().to_owned())
            .collect())
    }
}
