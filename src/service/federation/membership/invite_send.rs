//! Invites of users of other servers into our rooms: the invitee's server must sign the invite
//! (`PUT /v2/invite`) before it joins the room, so that it knows of it and agrees.

use ruma::events::TimelineEventType;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId,
    UInt, UserId,
};
use serde_json::{Map, Value, json};

use super::encode;
use crate::core::{self, EventTemplate, Pdu};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::service::rooms::ingest::Received;
use crate::util::now_ms;

impl Services {
    /// Invites `invitee`, a user of another server, to `room_id` on behalf of `inviter`: builds
    /// the invite on the room's current state (refused with 403 when the auth rules refuse it),
    /// has the invitee's server sign it, checks that what comes back is the same event with a
    /// valid signature of that server, and adds it to the room, from where the sender relays it
    /// to the other servers in the room.
    pub async fn invite_remote(
        &self,
        room_id: &RoomId,
        inviter: &UserId,
        invitee: &UserId,
        extra: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        let server = invitee.server_name();
        let mut content = extra;
        content.insert("membership".into(), json!("invite"));
        let pdu = self.build_unappended_event(
            room_id,
            inviter,
            TimelineEventType::RoomMember,
            Some(invitee.as_str()),
            Value::Object(content),
        )?;
        let body = json!({
            "room_version": pdu.room_version(),
            "event": pdu.json(),
            "invite_room_state": self.describing_state_events(room_id, Some(inviter))?,
        });
        let path = format!(
            "/_matrix/federation/v2/invite/{}/{}",
            encode(room_id.as_str()),
            encode(pdu.event_id().as_str())
        );
        let answer = self
            .federation
            .put(server, &path, &body, Limit::Small)
            .await?;
        let returned = match answer
            .get("event")
            .cloned()
            .map(CanonicalJsonValue::try_from)
        {
            Some(Ok(CanonicalJsonValue::Object(event))) => event,
            _ => {
                return Err(Error::Unreachable(format!(
                    "{server} answered the invite without an event"
                )));
            }
        };
        let signed = self.add_invitee_signature(&pdu, returned, server).await?;
        let event_id = signed.event_id().to_owned();
        match self.rooms.ingest_remote(signed).await? {
            Received::Accepted => Ok(event_id),
            Received::SoftFailed => Err(Error::Forbidden(
                "the room's state changed: the invite is no longer allowed".into(),
            )),
            Received::Rejected(reason) => Err(Error::Forbidden(reason)),
        }
    }

    /// Our invite with the invitee server's signature from `returned`, which must be the same
    /// event (signatures and `unsigned` aside) and carry a valid signature of `server`.
    async fn add_invitee_signature(
        &self,
        ours: &Pdu,
        returned: CanonicalJsonObject,
        server: &ruma::ServerName,
    ) -> Result<Pdu> {
        let bare = |object: &CanonicalJsonObject| {
            let mut object = object.clone();
            object.remove("signatures");
            object.remove("unsigned");
            object
        };
        if bare(&returned) != bare(ours.json()) {
            return Err(Error::Unreachable(format!(
                "{server} changed the invite it signed"
            )));
        }
        let redacted = core::pdu::redact(ours.room_version(), returned.clone())?;
        self.federation
            .verify_json(server, &redacted)
            .await
            .map_err(|e| Error::Unreachable(format!("{server} did not sign the invite: {e}")))?;
        let theirs = match returned.get("signatures") {
            Some(CanonicalJsonValue::Object(signatures)) => {
                signatures.get(server.as_str()).cloned()
            }
            _ => None,
        }
        .ok_or_else(|| Error::Unreachable(format!("{server} did not sign the invite")))?;
        let mut json = ours.json().clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = json.get_mut("signatures") {
            signatures.insert(server.as_str().to_owned(), theirs);
        }
        Ok(Pdu::from_canonical(
            ours.room_version().clone(),
            ours.event_id().to_owned(),
            json,
        )?)
    }

    /// Builds and signs an event of ours on the room's current forward extremities and state,
    /// and checks it against the auth rules, without adding it to the room (for events another
    /// server must see first).
    pub(super) fn build_unappended_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: TimelineEventType,
        state_key: Option<&str>,
        content: Value,
    ) -> Result<Pdu> {
        let info = self
            .rooms
            .info(room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        let state = self.rooms.current_state(room_id)?;
        let mut template = EventTemplate {
            room_id: Some(room_id.to_owned()),
            sender: sender.to_owned(),
            kind,
            state_key: state_key.map(str::to_owned),
            content,
            prev_events: info
                .extremities
                .iter()
                .take(core::pdu::MAX_PREV_EVENTS)
                .cloned()
                .collect(),
            auth_events: Vec::new(),
            depth: UInt::try_from(info.depth.saturating_add(1)).map_err(Error::internal)?,
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::try_from(now_ms()).map_err(Error::internal)?,
            ),
            redacts: None,
        };
        if template.prev_events.is_empty() {
            return Err(Error::Forbidden(format!(
                "this server does not take part in {room_id}"
            )));
        }
        template.auth_events =
            core::auth::select_auth_events(&info.room_version, &template, &state)?;
        let fetch = |id: &ruma::EventId| self.rooms.pdu(id).ok().flatten();
        let pdu = core::pdu::build_event_referencing(
            &info.room_version,
            template,
            self.federation.server_name(),
            self.federation.keys.pair(),
            fetch,
        )?;
        core::auth::check(&pdu, &state, fetch)?;
        Ok(pdu)
    }
}
