//! The domain logic behind the Chat API that the Matrix services do not already hold: who is
//! whose friend (and through which direct-message room), the call log, the notification feed and
//! the event stream of the WebSocket.

pub mod call_signalling;
pub mod calls;
mod expiring;
pub mod feed;
pub mod friends;
pub mod notifications;
pub mod observer;
pub mod password_resets;
pub mod signups;
pub mod stream;
pub mod turn;

use std::time::SystemTime;

use crate::error::Result;
use crate::storage::Store;

pub struct Chat {
    /// When the server started (`GET /uptime`).
    pub started_at: SystemTime,
    pub friends: friends::Friends,
    pub calls: calls::Calls,
    pub notifications: notifications::Notifications,
    /// Sign-ups waiting for their e-mail code, and unverified sign-up addresses.
    pub signups: signups::Signups,
    /// Password-reset codes sent by e-mail.
    pub password_resets: password_resets::PasswordResets,
    /// The timings of the WebSocket event stream.
    pub stream: stream::Stream,
}

impl Chat {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            started_at: SystemTime::now(),
            friends: friends::Friends::new(store)?,
            calls: calls::Calls::new(store)?,
            notifications: notifications::Notifications::new(store)?,
            signups: signups::Signups::new(store)?,
            password_resets: password_resets::PasswordResets::new(store)?,
            stream: stream::Stream::default(),
        })
    }
}
