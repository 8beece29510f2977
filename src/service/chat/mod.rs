//! The domain logic behind the Chat API that the Matrix services do not already hold: who is
//! whose friend (and through which direct-message room), the call log, the notification feed and
//! the event stream of the WebSocket.

pub mod calls;
pub mod friends;
pub mod notifications;
pub mod stream;

use std::time::SystemTime;

use crate::error::Result;
use crate::storage::Store;

pub struct Chat {
    /// When the server started (`GET /uptime`).
    pub started_at: SystemTime,
    pub friends: friends::Friends,
    pub calls: calls::Calls,
    pub notifications: notifications::Notifications,
}

impl Chat {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            started_at: SystemTime::now(),
            friends: friends::Friends::new(store)?,
            calls: calls::Calls::new(store)?,
            notifications: notifications::Notifications::new(store)?,
        })
    }
}
