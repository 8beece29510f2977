//! The resident side of a remote knock: `make_knock` hands out a knock template, `send_knock`
//! takes the signed knock into the room and describes the room to the knocking server.

use ruma::{CanonicalJsonObject, EventId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::json;

use super::HandshakeError;
use crate::error::{Error, Result};
use crate::service::Services;

impl Services {
    /// `GET /make_knock/{roomId}/{userId}`: a knock template for `user`, a user of `origin`,
    /// when the room's version is one of `versions` and the auth rules allow the knock (the
    /// join rule is `knock` or `knock_restricted`, the user is neither joined, invited nor
    /// banned).
    pub async fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        versions: &[RoomVersionId],
    ) -> Result<(RoomVersionId, CanonicalJsonObject), HandshakeError> {
        if user.server_name() != origin {
            return Err(Error::Forbidden(format!("{user} is not a user of {origin}")).into());
        }
        let room = self.handshake_room(room_id, origin)?;
        let version = room.info.room_version.clone();
        if !versions.contains(&version) {
            return Err(HandshakeError::IncompatibleRoomVersion(version));
        }
        let template = self.member_template(&room, user, json!({ "membership": "knock" }))?;
        Ok((version, template))
    }

    /// `PUT /v1/send_knock/{roomId}/{eventId}`: checks the knock (see
    /// [`Services::receive_member_event`]), adds it to the room and answers with the room's
    /// stripped state, as full events (`knock_room_state`).
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        json: CanonicalJsonObject,
    ) -> Result<Vec<CanonicalJsonObject>> {
        let room = self.handshake_room(room_id, origin)?;
        let pdu = self
            .receive_member_event(origin, &room, event_id, json, "knock")
            .await?;
        self.accept_handshake_event(origin, &pdu).await?;
        self.describing_state_events(&room.room_id, None)
    }
}
