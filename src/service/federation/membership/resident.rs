//! What the resident side of every handshake shares: the checks on a member event another server
//! signed and sends back (`send_join`, `send_leave`, `send_knock`), and the form in which our
//! events are served to other servers.

use ruma::signatures::Verified;
use ruma::{CanonicalJsonObject, EventId, ServerName};

use super::check_own_member_event;
use super::template::ResidentRoom;
use crate::core::{self, Pdu};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::ingest::Received;

impl Services {
    /// Checks a member event `origin` signed for one of its users, about `room` (see
    /// [`Services::handshake_room`]): the event has the room version's format and the ID the
    /// path names, it is the user's own `membership` event, its signatures and content hash hold
    /// (a bad hash is a refusal here: we would be adding the event ourselves), and the auth rules
    /// allow it, both against its auth events and against the room's current state.
    ///
    /// A restricted join naming one of our users in `join_authorised_via_users_server` must have
    /// been countersigned before (see [`Services::countersign_restricted_join`]): its signature
    /// check requires ours.
    pub(super) async fn receive_member_event(
        &self,
        origin: &ServerName,
        room: &ResidentRoom,
        event_id: &EventId,
        json: CanonicalJsonObject,
        membership: &str,
    ) -> Result<Pdu> {
        let version = room.info.room_version.clone();
        let pdu = Pdu::from_federation(version.clone(), json)
            .map_err(|e| Error::InvalidParam(format!("the event: {e}")))?;
        if pdu.event_id() != event_id {
            return Err(Error::InvalidParam(
                "the event's ID is not the one the path names".into(),
            ));
        }
        check_own_member_event(&pdu, &room.room_id, origin, membership)?;
        match self.federation.verify_event(&version, pdu.json()).await {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => {
                return Err(Error::InvalidParam(
                    "the content hash of the event does not match".into(),
                ));
            }
            Err(Error::InvalidSignature(reason)) => {
                return Err(Error::InvalidParam(format!(
                    "the event's signatures: {reason}"
                )));
            }
            Err(e) => return Err(e),
        }
        let fetch = |id: &EventId| self.rooms.pdu(id).ok().flatten();
        let auth_state = core::auth::auth_events_state(&pdu, fetch).map_err(|e| match e {
            core::Error::EventNotFound(id) => {
                Error::InvalidParam(format!("the auth event {id} is unknown here"))
            }
            other => other.into(),
        })?;
        for state in [&auth_state, &*room.state] {
            core::auth::check(&pdu, state, fetch).map_err(|e| match e {
                core::Error::Unauthorized(reason) => Error::Forbidden(reason),
                other => other.into(),
            })?;
        }
        Ok(pdu)
    }

    /// Adds an event `origin` handed us in a handshake (checked by
    /// [`Services::receive_member_event`]) to the room, and relays it to the room's other
    /// servers, as a resident server must. Refused (403) when the auth rules reject it at its
    /// place in the DAG or the room's current state no longer allows it.
    pub(super) async fn accept_handshake_event(
        &self,
        origin: &ServerName,
        pdu: &Pdu,
    ) -> Result<()> {
        match self.rooms.ingest_remote(pdu.clone()).await? {
            Received::Accepted => self.broadcast_pdu(pdu.event_id(), origin),
            Received::SoftFailed => Err(Error::Forbidden(
                "the room's current state does not allow the event".into(),
            )),
            Received::Rejected(reason) => Err(Error::Forbidden(reason)),
        }
    }

    /// An event of ours as other servers get it: redacted if it was redacted, without `unsigned`.
    pub(super) fn handshake_served_event(&self, pdu: &Pdu) -> Result<CanonicalJsonObject> {
        let mut json = match self.rooms.redacted_by(pdu.event_id())? {
            Some(_) => pdu.redacted()?.into_json(),
            None => pdu.json().clone(),
        };
        json.remove("unsigned");
        Ok(json)
    }
}
