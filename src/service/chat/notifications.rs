//! Chat: notifications.

use crate::error::Result;
use crate::storage::Store;

pub struct Notifications {}

impl Notifications {
    pub fn new(_store: &Store) -> Result<Self> {
        Ok(Self {})
    }
}
