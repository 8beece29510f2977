//! Knocking on a room this server is not in: `make_knock` and `send_knock` with a resident
//! server; the room description it answers with is what the knocking user sees.

use ruma::api::federation::membership::RawStrippedState;
use ruma::{OwnedServerName, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::handshake::Handshake;
use super::join::is_final;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;

/// The answer of `send_knock`.
#[derive(Deserialize)]
struct KnockAnswer {
    #[serde(default)]
    knock_room_state: Vec<RawStrippedState>,
}

impl Services {
    /// Knocks on `room_id` for a local user, through the first server that helps among
    /// `servers` and the server named in the room ID. The knock is then recorded here with the
    /// room description the resident gave (checked like an invite's).
    pub async fn knock_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        servers: Vec<OwnedServerName>,
        content: Map<String, Value>,
    ) -> Result<()> {
        let mut last = Error::NotFound(format!("no server to knock on {room_id} through is known"));
        for server in self.membership_candidates(room_id, user, servers)? {
            let attempt = async {
                let knock = self
                    .signed_from_template(&server, Handshake::Knock, room_id, user, &content)
                    .await?;
                let body = serde_json::to_value(knock.json()).map_err(Error::internal)?;
                let answer = self
                    .federation
                    .put(
                        &server,
                        &Handshake::Knock.send_path(&knock),
                        &body,
                        Limit::Batch,
                    )
                    .await?;
                let answer: KnockAnswer = serde_json::from_value(answer).map_err(|e| {
                    Error::Unreachable(format!("{server} answered the knock badly: {e}"))
                })?;
                let context = self
                    .verify_describing_state(knock.room_version(), room_id, answer.knock_room_state)
                    .await
                    .map_err(|e| Error::Unreachable(format!("{server}'s room state: {e}")))?;
                Ok((knock, context))
            };
            match attempt.await {
                Ok((knock, context)) => {
                    return self.rooms.record_remote_membership(knock, context).await;
                }
                Err(e) if is_final(&e) => return Err(e),
                Err(e) => {
                    tracing::info!(%server, %room_id, error = %e, "could not knock through this server");
                    last = e;
                }
            }
        }
        Err(last)
    }
}
