//! Server access control lists (`m.room.server_acl`): a room may ban servers, whose events,
//! EDUs and requests about the room are then refused.

use ruma::events::StateEventType;
use ruma::events::room::server_acl::RoomServerAclEventContent;
use ruma::{RoomId, ServerName};

use super::Federation;
use crate::error::{Error, Result};
use crate::service::rooms::Rooms;

impl Federation {
    /// Whether the room's current server ACL allows `server`. A room without an ACL (or with an
    /// ACL we cannot read, which the auth rules would not have let in) allows every server.
    pub fn check_acl(&self, rooms: &Rooms, room_id: &RoomId, server: &ServerName) -> Result<()> {
        let state = rooms.current_state(room_id)?;
        let Some(content) = rooms.state_content(&state, &StateEventType::RoomServerAcl)? else {
            return Ok(());
        };
        let Ok(acl) = serde_json::from_value::<RoomServerAclEventContent>(content.into()) else {
            return Ok(());
        };
        if acl.is_allowed(server) {
            Ok(())
        } else {
            Err(Error::ServerAcl(format!(
                "the server access control list of {room_id} bans {server}"
            )))
        }
    }
}
