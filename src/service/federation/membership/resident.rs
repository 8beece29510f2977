//! What the resident side of every handshake shares: the checks on a member event another server
//! signed and sends back (`send_join`, `send_leave`, `send_knock`), and the form in which our
//! events are served to other servers.

use ruma::signatures::Verified;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, RoomId, ServerName, UserId};

use super::check_own_member_event;
use super::template::ResidentRoom;
use crate::core::{self, Pdu, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::ingest::Received;

impl Services {
    /// Checks a member event `origin` signed for one of its users: the room is ours to help
    /// with, the event has the room version's format and the ID the path names, it is the
    /// user's own `membership` event, its signatures and content hash hold (a bad hash is a
    /// refusal here: we would be adding the event ourselves), and the auth rules allow it, both
    /// against its auth events and against the room's current state.
    ///
    /// A restricted join naming one of our users in `join_authorised_via_users_server` is
    /// countersigned first (the auth rules require our signature on it).
    pub(super) async fn receive_member_event(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        mut json: CanonicalJsonObject,
        membership: &str,
    ) -> Result<(ResidentRoom, Pdu)> {
        let room = self.handshake_room(room_id, origin)?;
        let version = room.info.room_version.clone();
        if membership == "join" {
            self.countersign_restricted_join(&version, &mut json)?;
        }
        let pdu = Pdu::from_federation(version.clone(), json)
            .map_err(|e| Error::InvalidParam(format!("the event: {e}")))?;
        if pdu.event_id() != event_id {
            return Err(Error::InvalidParam(
                "the event's ID is not the one the path names".into(),
            ));
        }
        check_own_member_event(&pdu, room_id, origin, membership)?;
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
        Ok((room, pdu))
    }

    /// Adds our signature to a restricted join whose `join_authorised_via_users_server` is one of
    /// our users (room versions with restricted join rules). Anything else is left as it is: the
    /// auth rules decide on it.
    fn countersign_restricted_join(
        &self,
        version: &ruma::RoomVersionId,
        json: &mut CanonicalJsonObject,
    ) -> Result<()> {
        let rules = room_version::rules(version)?;
        if !rules.authorization.restricted_join_rule {
            return Ok(());
        }
        let authoriser = match json.get("content") {
            Some(CanonicalJsonValue::Object(content)) => {
                match content.get("join_authorised_via_users_server") {
                    Some(CanonicalJsonValue::String(user)) => UserId::parse(user).ok(),
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(authoriser) = authoriser else {
            return Ok(());
        };
        if !self.federation.is_us(authoriser.server_name()) {
            return Ok(());
        }
        ruma::signatures::sign_event(
            self.federation.server_name().as_str(),
            self.federation.keys.pair(),
            json,
            &rules.redaction,
        )
        .map_err(|e| Error::InvalidParam(format!("the event cannot be signed: {e}")))
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
