//! Event templates a resident server hands out (`make_join`, `make_leave`, `make_knock`), and the
//! auth rules run on them before they are handed out, so that a user who may not join (banned,
//! not invited to an invite-only room …) is refused at once rather than after signing.

use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedRoomId, RoomId, ServerName, UInt, UserId,
};
use serde_json::Value;

use crate::core::{self, EventTemplate, Pdu, StateMap};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::RoomInfo;
use crate::util::now_ms;

/// A room this server is resident in, as a handshake about it sees it.
pub(super) struct ResidentRoom {
    pub room_id: OwnedRoomId,
    pub info: RoomInfo,
    pub state: Arc<StateMap>,
}

impl Services {
    /// The room a handshake from `origin` is about: we must be resident in it (404 otherwise:
    /// we cannot help), and its server ACL must allow `origin` (403).
    pub(super) fn handshake_room(
        &self,
        room_id: &RoomId,
        origin: &ServerName,
    ) -> Result<ResidentRoom> {
        let not_here = || Error::NotFound(format!("this server is not in {room_id}"));
        let info = self.rooms.info(room_id)?.ok_or_else(not_here)?;
        if !self.rooms.is_resident(room_id)? {
            return Err(not_here());
        }
        self.federation.check_acl(&self.rooms, room_id, origin)?;
        Ok(ResidentRoom {
            room_id: room_id.to_owned(),
            state: self.rooms.current_state(room_id)?,
            info,
        })
    }

    /// The template of `user`'s member event with `content`, following the room's forward
    /// extremities, and checked against the room's current state with the auth rules as if the
    /// user's server had completed it.
    pub(super) fn member_template(
        &self,
        room: &ResidentRoom,
        user: &UserId,
        content: Value,
    ) -> Result<CanonicalJsonObject> {
        let version = &room.info.room_version;
        let mut template = EventTemplate {
            room_id: Some(room.room_id.clone()),
            sender: user.to_owned(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(user.to_string()),
            content,
            prev_events: room
                .info
                .extremities
                .iter()
                .take(core::pdu::MAX_PREV_EVENTS)
                .cloned()
                .collect(),
            auth_events: Vec::new(),
            depth: UInt::try_from(room.info.depth.saturating_add(1)).map_err(Error::internal)?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::try_from(now_ms()).map_err(Error::internal)?,
            ),
            redacts: None,
        };
        template.auth_events = core::auth::select_auth_events(version, &template, &room.state)?;
        // The builder lays the event out in the room version's format (references with their
        // hashes in versions 1 and 2 …) and needs a key to finish: ours stands in for the user's
        // server, whose signature and event ID are dropped below. The completed event is what the
        // auth rules judge.
        let fetch = |id: &ruma::EventId| self.rooms.pdu(id).ok().flatten();
        let as_if = core::pdu::build_event_referencing(
            version,
            template,
            user.server_name(),
            &self.signing_key.pair,
            fetch,
        )?;
        check_as_if(&as_if, &room.state, fetch)?;
        let mut object = as_if.into_json();
        for field in ["signatures", "hashes", "unsigned", "event_id"] {
            object.remove(field);
        }
        Ok(object)
    }
}

/// The auth rules on the event a template would become: 403 with the reason when they refuse it.
fn check_as_if(
    pdu: &Pdu,
    state: &StateMap,
    fetch: impl Fn(&ruma::EventId) -> Option<Arc<Pdu>>,
) -> Result<()> {
    core::auth::check(pdu, state, fetch).map_err(|e| match e {
        core::Error::Unauthorized(reason) => Error::Forbidden(reason),
        other => other.into(),
    })
}
