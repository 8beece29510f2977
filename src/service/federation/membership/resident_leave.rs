//! The resident side of a remote leave (a rejected invite, a retracted knock): `make_leave` hands
//! out a leave template, `send_leave` takes the signed leave into the room.

use ruma::{CanonicalJsonObject, EventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::json;

use crate::error::{Error, Result};
use crate::service::Services;

impl Services {
    /// `GET /make_leave/{roomId}/{userId}`: a leave template for `user`, a user of `origin`,
    /// when the auth rules would let the user leave (they are invited, knocking or joined).
    pub async fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        if user.server_name() != origin {
            return Err(Error::Forbidden(format!(
                "{user} is not a user of {origin}"
            )));
        }
        let room = self.handshake_room(room_id, origin)?;
        let template = self.member_template(&room, user, json!({ "membership": "leave" }))?;
        Ok((room.info.room_version, template))
    }

    /// `PUT /v2/send_leave/{roomId}/{eventId}`: checks the leave (see
    /// [`Services::receive_member_event`]) and adds it to the room; the sender relays it.
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        json: CanonicalJsonObject,
    ) -> Result<()> {
        let room = self.handshake_room(room_id, origin)?;
        let pdu = self
            .receive_member_event(origin, &room, event_id, json, "leave")
            .await?;
        self.accept_handshake_event(origin, &pdu).await
    }
}
