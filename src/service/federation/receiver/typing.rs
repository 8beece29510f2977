//! `m.typing` EDUs: a user of the origin starts or stops typing in a room. The user must be
//! joined, and the origin allowed by the room's server ACL; local clients then see it like a
//! local user's typing.

use std::time::Duration;

use ruma::api::federation::transactions::edu::TypingContent;

use super::Peer;
use crate::error::{Error, Result};

/// How long a remote user types unless their server says they stopped or renews it (typing
/// EDUs carry no timeout; this is the reference homeserver's).
pub const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(60);

impl Peer<'_> {
    pub async fn receive_typing(&self, content: TypingContent) -> Result<()> {
        self.check_own_user(&content.user_id)?;
        let services = self.services;
        if services.rooms.info(&content.room_id)?.is_none() {
            return Err(Error::NotFound(format!(
                "{} is unknown here",
                content.room_id
            )));
        }
        services
            .federation
            .check_acl(&services.rooms, &content.room_id, self.origin)?;
        let timeout = content.typing.then_some(REMOTE_TYPING_TIMEOUT);
        // Refuses users who are not joined to the room.
        services
            .typing
            .set(&content.room_id, &content.user_id, timeout)
    }
}
