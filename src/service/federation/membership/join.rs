//! Joining a room this server is not in: `make_join` and `send_join` with a resident server,
//! then the room is created here from the state it gave us, once verified.

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::{Map, Value};

use super::candidates;
use super::handshake::Handshake;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;

/// A local user's join of a room we are not in.
pub struct JoinRequest {
    pub user: OwnedUserId,
    pub room_id: OwnedRoomId,
    /// Servers to try first (`via`, `server_name`, those a room alias lookup named).
    pub servers: Vec<OwnedServerName>,
    /// Content of the join besides `membership` (display name, avatar, reason).
    pub content: Map<String, Value>,
}

impl Services {
    /// Joins a local user to a room this server is not in, through the first server that helps:
    /// the given ones, the server of whoever invited the user, servers that sent what we know
    /// of the room, the server named in the room ID. A refusal (403) or a room version we do
    /// not speak ends the attempt; other failures move on to the next server.
    pub async fn join_remote(&self, request: JoinRequest) -> Result<()> {
        let servers =
            self.membership_candidates(&request.room_id, &request.user, request.servers.clone())?;
        let mut last = Error::NotFound(format!(
            "no server to join {} through is known",
            request.room_id
        ));
        for server in servers {
            match self.join_through(&server, &request).await {
                Ok(()) => return Ok(()),
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(%server, room_id = %request.room_id, error = %e,
                        "could not join through this server");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn join_through(&self, server: &ServerName, request: &JoinRequest) -> Result<()> {
        let join = self
            .signed_from_template(
                server,
                Handshake::Join,
                &request.room_id,
                &request.user,
                &request.content,
            )
            .await?;
        let body = serde_json::to_value(join.json()).map_err(Error::internal)?;
        let answer = self
            .federation
            .put(
                server,
                &Handshake::Join.send_path(&join),
                &body,
                Limit::RoomState,
            )
            .await?;
        let room = self.verify_join_answer(server, join, answer).await?;
        self.rooms.bootstrap_remote_room(room).await
    }

    /// The servers to ask about a room we are not in, `given` first (see
    /// [`Services::join_remote`]).
    pub(super) fn membership_candidates(
        &self,
        room_id: &RoomId,
        user: &UserId,
        given: Vec<OwnedServerName>,
    ) -> Result<Vec<OwnedServerName>> {
        let mut servers = given;
        let state = self.rooms.current_state(room_id)?;
        let own_member = (StateEventType::RoomMember, user.to_string());
        if let Some(id) = state.get(&own_member)
            && let Some(member) = self.rooms.pdu(id)?
        {
            servers.push(member.sender().server_name().to_owned());
        }
        for id in state.values().take(super::MAX_CANDIDATE_SERVERS * 4) {
            if let Some(event) = self.rooms.pdu(id)? {
                servers.push(event.sender().server_name().to_owned());
            }
        }
        Ok(candidates(self.federation.server_name(), room_id, servers))
    }
}

/// Whether a failed attempt speaks for every server: a refusal, or a room version we cannot join.
pub(super) fn is_final(error: &Error) -> bool {
    match error {
        Error::UnsupportedRoomVersion(_) => true,
        Error::Remote {
            status, errcode, ..
        } => {
            *status == 403
                || errcode == "M_INCOMPATIBLE_ROOM_VERSION"
                || errcode == "M_UNSUPPORTED_ROOM_VERSION"
        }
        _ => false,
    }
}

impl Services {
    /// Whether a local user's membership change in `room_id` must go through another server:
    /// federation is on, no user of ours is joined, and the room is not ours alone (unknown here,
    /// named after another server, or with state events from other servers).
    pub fn is_remote_room(&self, room_id: &RoomId) -> Result<bool> {
        if !self.federation.enabled() || self.rooms.is_resident(room_id)? {
            return Ok(false);
        }
        if self.rooms.info(room_id)?.is_none() {
            return Ok(true);
        }
        let ours = self.federation.server_name();
        if room_id.server_name().is_some_and(|server| server != ours) {
            return Ok(true);
        }
        for id in self.rooms.current_state(room_id)?.values() {
            if let Some(event) = self.rooms.pdu(id)?
                && event.sender().server_name() != ours
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
