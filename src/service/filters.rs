//! Stored filters (`POST /user/{userId}/filter`), referenced by ID from `/sync`.

use ruma::UserId;

use crate::core::filter::Filter;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};
use crate::util::random_string;

/// A stored filter may not be larger than this, serialized.
pub const MAX_FILTER_BYTES: usize = 65_536;

pub struct Filters {
    store: Store,
    tree: Tree,
}

impl Filters {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::USERID_FILTERID_FILTER)?,
        })
    }

    /// Stores a filter for a user; returns its ID.
    pub async fn create(&self, user: &UserId, filter: &Filter) -> Result<String> {
        filter.validate().map_err(Error::BadJson)?;
        let bytes = serde_json::to_vec(filter)?;
        if bytes.len() > MAX_FILTER_BYTES {
            return Err(Error::TooLarge("the filter is too large".into()));
        }
        let id = random_string(12);
        self.tree.put(keys::pair(user.as_str(), &id), bytes)?;
        self.store.durable().await?;
        Ok(id)
    }

    pub fn get(&self, user: &UserId, id: &str) -> Result<Option<Filter>> {
        match self.tree.get(keys::pair(user.as_str(), id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// A filter given to `/sync`: inline JSON, or the ID of a stored filter.
    pub fn resolve(&self, user: &UserId, raw: &str) -> Result<Filter> {
        if raw.trim_start().starts_with('{') {
            let filter: Filter = crate::util::from_json_object(raw.as_bytes())
                .map_err(|e| Error::BadJson(format!("invalid filter: {e}")))?;
            filter.validate().map_err(Error::BadJson)?;
            return Ok(filter);
        }
        self.get(user, raw)?
            .ok_or_else(|| Error::InvalidParam("unknown filter ID".into()))
    }
}
