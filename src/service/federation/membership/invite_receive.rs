//! Invites of our users that other servers send us (`PUT /v2/invite`): we check the invite, sign
//! it and keep it so that the invitee sees it in `/sync`.

use ruma::api::federation::membership::RawStrippedState;
use ruma::signatures::Verified;
use ruma::{CanonicalJsonObject, EventId, OwnedUserId, RoomId, RoomVersionId, ServerName};
use serde::Deserialize;

use super::{HandshakeError, membership_of};
use crate::core::{Pdu, room_version};
use crate::error::{Error, Result};
use crate::service::Services;

/// The body of `PUT /v2/invite/{roomId}/{eventId}`.
#[derive(Deserialize)]
pub struct InviteRequest {
    pub room_version: String,
    pub event: CanonicalJsonObject,
    #[serde(default)]
    pub invite_room_state: Vec<RawStrippedState>,
}

impl Services {
    /// `PUT /v2/invite/{roomId}/{eventId}`: an invite of one of our users by a user of `origin`.
    ///
    /// The event must be an invite in the room version's format, with the ID and room the path
    /// names, sent by a user of `origin` to an active user of ours, correctly signed and hashed;
    /// the room's server ACL (when we know the room) must allow `origin`; the room description
    /// is checked too (see [`Services::verify_describing_state`]). We then add our signature and, unless
    /// we are in the room (the invite then reaches us through the room like any event), record
    /// the invite with the room description, which `/sync` shows the invitee.
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        request: InviteRequest,
    ) -> Result<CanonicalJsonObject, HandshakeError> {
        let version = RoomVersionId::try_from(request.room_version.as_str())
            .map_err(|e| Error::InvalidParam(format!("room_version: {e}")))?;
        if !room_version::is_supported(&version) {
            return Err(HandshakeError::IncompatibleRoomVersion(version));
        }
        let pdu = Pdu::from_federation(version.clone(), request.event)
            .map_err(|e| Error::InvalidParam(format!("the event: {e}")))?;
        let invitee = check_invite(&pdu, room_id, event_id, origin)?;
        if !self.federation.is_us(invitee.server_name()) {
            return Err(
                Error::InvalidParam(format!("{invitee} is not a user of this server")).into(),
            );
        }
        if !self.is_active_user(&invitee)? {
            return Err(Error::NotFound(format!("{invitee} does not exist")).into());
        }
        if let Some(known) = self.rooms.room_version(room_id)? {
            if known != version {
                return Err(
                    Error::InvalidParam(format!("{room_id} is a room of version {known}")).into(),
                );
            }
            self.federation.check_acl(&self.rooms, room_id, origin)?;
        }
        match self.federation.verify_event(&version, pdu.json()).await {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => {
                return Err(Error::InvalidParam(
                    "the content hash of the invite does not match".into(),
                )
                .into());
            }
            Err(Error::InvalidSignature(reason)) => {
                return Err(
                    Error::InvalidParam(format!("the invite's signatures: {reason}")).into(),
                );
            }
            Err(e) => return Err(e.into()),
        }
        let context = self
            .verify_describing_state(&version, room_id, request.invite_room_state)
            .await?;
        let rules = room_version::rules(&version)?;
        let event_id = pdu.event_id().to_owned();
        let mut json = pdu.into_json();
        ruma::signatures::sign_event(
            self.federation.server_name().as_str(),
            self.federation.keys.pair(),
            &mut json,
            &rules.redaction,
        )
        .map_err(|e| Error::InvalidParam(format!("the invite cannot be signed: {e}")))?;
        let signed = Pdu::from_canonical(version, event_id, json)?;
        if !self.rooms.is_resident(room_id)? {
            self.rooms
                .record_remote_membership(signed.clone(), context)
                .await?;
        }
        let mut answer = signed.into_json();
        answer.remove("unsigned");
        Ok(answer)
    }
}

/// Checks the invite event itself: the ID and room the path names, an `m.room.member` invite
/// sent by a user of `origin`; returns the invitee.
fn check_invite(
    pdu: &Pdu,
    room_id: &RoomId,
    event_id: &EventId,
    origin: &ServerName,
) -> Result<OwnedUserId> {
    if pdu.event_id() != event_id {
        return Err(Error::InvalidParam(
            "the event's ID is not the one the path names".into(),
        ));
    }
    if pdu.room_id() != room_id {
        return Err(Error::InvalidParam(
            "the event belongs to another room than the path names".into(),
        ));
    }
    if *pdu.kind() != ruma::events::TimelineEventType::RoomMember
        || membership_of(pdu).as_deref() != Some("invite")
    {
        return Err(Error::InvalidParam("not an invite event".into()));
    }
    if pdu.sender().server_name() != origin {
        return Err(Error::InvalidParam(format!(
            "the sender is not a user of {origin}"
        )));
    }
    pdu.state_key()
        .and_then(|key| OwnedUserId::try_from(key).ok())
        .ok_or_else(|| Error::InvalidParam("the state key is not a user ID".into()))
}
