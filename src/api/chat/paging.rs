//! Paging of the Chat API's lists of calls and notifications: `?limit=` (1 to 100, 20 when
//! absent) and `?cursor=` (the `next_cursor` of the previous page).

use serde::Deserialize;

use super::error::{ChatError, ChatResult};

pub const DEFAULT_LIMIT: usize = 20;
pub const MAX_LIMIT: usize = 100;

/// `?cursor=&limit=`.
#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

impl PageQuery {
    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent; 400 otherwise.
    pub fn limit(&self) -> ChatResult<usize> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(_) => Err(ChatError::invalid(format!(
                "limit: between 1 and {MAX_LIMIT}"
            ))),
        }
    }

    /// The cursor: a number this server gave as `next_cursor`; 400 when it is not one.
    pub fn cursor(&self) -> ChatResult<Option<u64>> {
        self.cursor
            .as_deref()
            .map(|raw| {
                raw.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0 && raw.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| ChatError::invalid("cursor: not a cursor of this list"))
            })
            .transpose()
    }
}
