//! Chat: calls.

use crate::error::Result;
use crate::storage::Store;

pub struct Calls {}

impl Calls {
    pub fn new(_store: &Store) -> Result<Self> {
        Ok(Self {})
    }
}
