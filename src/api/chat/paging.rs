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

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: Option<&str>, limit: Option<usize>) -> PageQuery {
        PageQuery {
            cursor: cursor.map(str::to_owned),
            limit,
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(page(None, None).limit().ok(), Some(DEFAULT_LIMIT));
        assert_eq!(page(None, Some(MAX_LIMIT)).limit().ok(), Some(MAX_LIMIT));
        assert!(page(None, Some(0)).limit().is_err());
        assert!(page(None, Some(MAX_LIMIT + 1)).limit().is_err());
    }

    #[test]
    fn cursors_are_plain_positive_numbers() {
        assert_eq!(page(None, None).cursor().ok(), Some(None));
        assert_eq!(page(Some("42"), None).cursor().ok(), Some(Some(42)));
        for bad in ["0", "+5", "-1", "abc", " 7", ""] {
            assert!(page(Some(bad), None).cursor().is_err(), "{bad:?}");
        }
    }
}
