//! Chat: friends.

use crate::error::Result;
use crate::storage::Store;

pub struct Friends {}

impl Friends {
    pub fn new(_store: &Store) -> Result<Self> {
        Ok(Self {})
    }
}
