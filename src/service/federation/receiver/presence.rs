//! `m.presence` EDUs: presence of users of the origin. Only users who share a room with us are
//! taken (a server could otherwise fill our store with users nobody here can see).

use ruma::api::federation::transactions::edu::PresenceContent;
use ruma::presence::PresenceState as WireState;

use super::Peer;
use crate::error::Result;
use crate::service::presence::{MAX_STATUS_MSG_CHARS, PresenceState};

/// The most updates taken from one EDU.
pub const MAX_PRESENCE_UPDATES: usize = 1_000;

impl Peer<'_> {
    pub async fn receive_presence(&self, content: PresenceContent) -> Result<()> {
        let services = self.services;
        for update in content.push.iter().take(MAX_PRESENCE_UPDATES) {
            if self.check_own_user(&update.user_id).is_err()
                || services.rooms.rooms_of(&update.user_id, "join")?.is_empty()
            {
                continue;
            }
            let presence = match update.presence {
                WireState::Online => PresenceState::Online,
                WireState::Unavailable => PresenceState::Unavailable,
                WireState::Offline => PresenceState::Offline,
                _ => continue,
            };
            let status_msg = update
                .status_msg
                .as_ref()
                .map(|msg| msg.chars().take(MAX_STATUS_MSG_CHARS).collect());
            services
                .presence
                .set_remote(
                    &update.user_id,
                    presence,
                    status_msg,
                    update.last_active_ago.into(),
                )
                .await?;
        }
        Ok(())
    }
}
