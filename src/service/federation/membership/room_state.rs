//! The state that describes a room to someone who is not in it yet: `invite_room_state` (sent
//! with an invite) and `knock_room_state` (the answer to a knock). Since Matrix 1.16 both are
//! full events in the room version's format, the create event among them, which the receiver
//! checks like any other event; older servers sent stripped events, which cannot be checked.

use ruma::api::federation::membership::RawStrippedState;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::signatures::Verified;
use ruma::{CanonicalJsonObject, RoomId, RoomVersionId, UserId};

use crate::core::{Pdu, room_version};
use crate::error::{Error, Result};
use crate::service::Services;

/// The state event types (with an empty state key) that describe a room.
const DESCRIBING_TYPES: &[StateEventType] = &[
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
    StateEventType::RoomTopic,
];

/// The most entries of a room description we look at.
pub const MAX_ROOM_STATE_ENTRIES: usize = 50;

impl Services {
    /// The events of the room's current state that describe it, as other servers get them, plus
    /// the member event of `member` (the inviter) when given.
    pub(super) fn describing_state_events(
        &self,
        room_id: &RoomId,
        member: Option<&UserId>,
    ) -> Result<Vec<CanonicalJsonObject>> {
        let state = self.rooms.current_state(room_id)?;
        let member_entry = member.map(|user| (StateEventType::RoomMember, user.to_string()));
        let mut out = Vec::new();
        for (entry, id) in state.iter() {
            let describing = entry.1.is_empty() && DESCRIBING_TYPES.contains(&entry.0);
            if !describing && Some(entry) != member_entry.as_ref() {
                continue;
            }
            if let Some(pdu) = self.rooms.pdu(id)? {
                out.push(self.handshake_served_event(&pdu)?);
            }
        }
        Ok(out)
    }

    /// Checks a room description another server sent: each full event must have the room
    /// version's format, belong to `room_id`, be a state event and carry valid signatures (a bad
    /// content hash means its redacted form is kept). What fails is left out; so are stripped
    /// events, which cannot be checked.
    ///
    /// From room version 12 on, where the room ID is the hash of the create event, a description
    /// without a valid create event, or with a full event that fails, is refused
    /// (`M_INVALID_PARAM`), as the specification says; stripped events are only left out there,
    /// so that servers still migrating to full events can invite. For older versions failures
    /// are only logged.
    pub(super) async fn verify_describing_state(
        &self,
        version: &RoomVersionId,
        room_id: &RoomId,
        entries: Vec<RawStrippedState>,
    ) -> Result<Vec<Pdu>> {
        let strict = room_version::rules(version)?
            .authorization
            .room_create_event_id_as_room_id;
        if entries.len() > MAX_ROOM_STATE_ENTRIES {
            return Err(Error::InvalidParam(format!(
                "the room state has more than {MAX_ROOM_STATE_ENTRIES} entries"
            )));
        }
        let mut accepted = Vec::new();
        for entry in entries {
            // Anything but a full event is a stripped one, the format before Matrix 1.16.
            let RawStrippedState::Pdu(raw) = entry else {
                tracing::debug!(%room_id, "left out a stripped room state entry");
                continue;
            };
            match self.verify_describing_entry(version, room_id, &raw).await {
                Ok(pdu) => accepted.push(pdu),
                Err(e) if strict => {
                    return Err(Error::InvalidParam(format!("the room state: {e}")));
                }
                Err(e) => tracing::info!(%room_id, error = %e, "left out a room state entry"),
            }
        }
        let has_create = accepted
            .iter()
            .any(|e| *e.kind() == TimelineEventType::RoomCreate && e.state_key() == Some(""));
        if strict && !has_create {
            return Err(Error::InvalidParam(
                "the room state has no valid m.room.create event".into(),
            ));
        }
        Ok(accepted)
    }

    async fn verify_describing_entry(
        &self,
        version: &RoomVersionId,
        room_id: &RoomId,
        raw: &serde_json::value::RawValue,
    ) -> Result<Pdu> {
        let json: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::InvalidParam(format!("not an event: {e}")))?;
        let pdu = Pdu::from_federation(version.clone(), json)
            .map_err(|e| Error::InvalidParam(format!("not an event of the room version: {e}")))?;
        if pdu.room_id() != room_id {
            return Err(Error::InvalidParam(format!(
                "{} belongs to another room",
                pdu.event_id()
            )));
        }
        if pdu.state_key().is_none() {
            return Err(Error::InvalidParam(format!(
                "{} is not a state event",
                pdu.event_id()
            )));
        }
        match self.federation.verify_event(version, pdu.json()).await? {
            Verified::All => Ok(pdu),
            Verified::Signatures => Ok(pdu.redacted()?),
        }
    }
}
