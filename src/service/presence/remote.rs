//! Presence of users of other servers, as their servers report it (`m.presence` EDUs).

use ruma::UserId;

use super::{MAX_STATUS_MSG_CHARS, Presence, PresenceState};
use crate::error::{Error, Result};
use crate::util::now_ms;

impl Presence {
    /// Records a remote user's presence as their server reports it: state, status message and
    /// how long ago they were last active. Published to local users like a local change. Their
    /// server renews it while it lasts; without news, the idle and offline timers apply as for
    /// local users, so that a server that went away does not leave its users online for ever.
    pub async fn set_remote(
        &self,
        user: &UserId,
        presence: PresenceState,
        status_msg: Option<String>,
        last_active_ago: u64,
    ) -> Result<()> {
        if status_msg
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_STATUS_MSG_CHARS)
        {
            return Err(Error::InvalidParam(format!(
                "status_msg may not exceed {MAX_STATUS_MSG_CHARS} characters"
            )));
        }
        let active = now_ms().saturating_sub(last_active_ago);
        self.change(user, move |live, _| {
            live.record.presence = presence;
            live.record.status_msg = status_msg;
            live.record.last_active_ts = Some(active);
            live.seen_ts = active;
        })
        .await
    }
}
