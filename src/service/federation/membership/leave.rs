//! Leaving a room this server is not in (rejecting an invite, retracting a knock): `make_leave`
//! and `send_leave` with a resident server, usually the one that invited us.

use ruma::events::TimelineEventType;
use ruma::{MilliSecondsSinceUnixEpoch, RoomId, UInt, UserId};
use serde_json::{Map, Value, json};

use super::handshake::Handshake;
use super::join::is_final;
use super::membership_of;
use crate::core::{self, EventTemplate, Pdu};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::util::now_ms;

impl Services {
    /// Rejects a local user's invite to (or retracts their knock on) a room we are not in,
    /// through the servers that know the room (the inviter's first). When none can be reached,
    /// an invite is still rejected here, so that the user is rid of it; a knock is not, since the
    /// room would keep it.
    pub async fn leave_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        content: Map<String, Value>,
    ) -> Result<()> {
        let membership = self.rooms.membership(room_id, user)?;
        if !matches!(membership.as_deref(), Some("invite" | "knock")) {
            return Err(Error::Forbidden(format!("{user} is not in {room_id}")));
        }
        let mut last = Error::NotFound(format!("no server to leave {room_id} through is known"));
        for server in self.membership_candidates(room_id, user, Vec::new())? {
            let attempt = async {
                let leave = self
                    .signed_from_template(&server, Handshake::Leave, room_id, user, &content)
                    .await?;
                if self.rooms.room_version(room_id)?.as_ref() != Some(leave.room_version()) {
                    return Err(Error::Unreachable(format!(
                        "{server} named another room version"
                    )));
                }
                let body = serde_json::to_value(leave.json()).map_err(Error::internal)?;
                self.federation
                    .put(
                        &server,
                        &Handshake::Leave.send_path(&leave),
                        &body,
                        Limit::Small,
                    )
                    .await?;
                Ok(leave)
            };
            match attempt.await {
                Ok(leave) => return self.rooms.record_remote_membership(leave, Vec::new()).await,
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %e, "could not leave through this server");
                    last = e;
                }
            }
        }
        if membership.as_deref() != Some("invite") {
            return Err(last);
        }
        tracing::info!(%room_id, error = %last, "rejecting an invite on this server only");
        let rejection = self.local_rejection(room_id, user, content)?;
        self.rooms
            .record_remote_membership(rejection, Vec::new())
            .await
    }

    /// A leave that follows the user's invite and nothing else: it tells our clients the invite
    /// is gone when no server of the room can be told.
    fn local_rejection(
        &self,
        room_id: &RoomId,
        user: &UserId,
        extra: Map<String, Value>,
    ) -> Result<Pdu> {
        let invite = self
            .rooms
            .state_event(
                room_id,
                &ruma::events::StateEventType::RoomMember,
                user.as_str(),
            )?
            .filter(|pdu| membership_of(pdu).as_deref() == Some("invite"))
            .ok_or_else(|| Error::Forbidden(format!("{user} is not invited to {room_id}")))?;
        let mut content = extra;
        content.insert("membership".into(), json!("leave"));
        let template = EventTemplate {
            room_id: Some(room_id.to_owned()),
            sender: user.to_owned(),
            kind: TimelineEventType::RoomMember,
            state_key: Some(user.to_string()),
            content: Value::Object(content),
            prev_events: vec![invite.event_id().to_owned()],
            auth_events: vec![invite.event_id().to_owned()],
            depth: invite.depth().saturating_add(UInt::from(1u32)),
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::try_from(now_ms()).map_err(Error::internal)?,
            ),
            redacts: None,
        };
        let fetch = |id: &ruma::EventId| self.rooms.pdu(id).ok().flatten();
        Ok(core::pdu::build_event_referencing(
            invite.room_version(),
            template,
            self.federation.server_name(),
            self.federation.keys.pair(),
            fetch,
        )?)
    }
}
