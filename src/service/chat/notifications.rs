//! Chat: the notification feed's own records and read marks.
//!
//! The feed (`GET /notifications`) merges three sources by stream position (see
//! [`feed`](super::feed)):
//! - the notifications push rules made (`service::push`): messages, mentions, invites;
//! - what push rules do not make, recorded here by the ordered consumer of appended events
//!   (see [`observer`](super::observer)): a friend request accepted, a missed call;
//! - calls that expired unanswered with no later event, decided when read (see
//!   [`CallRecord::missed_by_expiry`](super::calls::CallRecord::missed_by_expiry)).
//!
//! A notification ID names its source and stream position (`m<position>` for push
//! notifications, `c<position>` for the others); clients treat it as opaque.

use std::fmt;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::storage::{Store, Tree, keys, trees};

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationType {
    Message,
    Mention,
    FriendRequest,
    FriendAccepted,
    GroupInvite,
    MissedCall,
}

/// A notification recorded here (what push rules do not make).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredNotification {
    #[serde(rename = "type")]
    pub kind: NotificationType,
    pub from: OwnedUserId,
    pub chat_id: OwnedRoomId,
    pub call_id: Option<String>,
    pub created_at: u64,
}

/// Where a notification comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A push notification (`USERID_STREAMPOS_NOTIFICATION`).
    Push,
    /// A record of this module, or a call that expired unanswered.
    Chat,
}

/// Identifies one notification of a user: its source and stream position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotificationId {
    pub source: Source,
    pub position: u64,
}

impl NotificationId {
    /// The order of the feed: by stream position, a record of this module after a push
    /// notification at the same position. Also the page cursor (exclusive).
    pub fn order(self) -> u64 {
        self.position
            .saturating_mul(2)
            .saturating_add(u64::from(self.source == Source::Chat))
    }

    pub fn parse(raw: &str) -> Option<Self> {
        let (source, digits) = match raw.split_at_checked(1)? {
            ("m", digits) => (Source::Push, digits),
            ("c", digits) => (Source::Chat, digits),
            _ => return None,
        };
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            source,
            position: digits.parse().ok()?,
        })
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.source {
            Source::Push => 'm',
            Source::Chat => 'c',
        };
        write!(f, "{prefix}{}", self.position)
    }
}

/// "Everything up to here is read" (`POST /notifications/read` with `all`): the stream
/// position then, and the time (a call that expires later is a new notification).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAll {
    pub position: u64,
    pub at: u64,
}

impl ReadAll {
    /// Whether a notification at `position`, made at `created_at`, is read by it.
    pub fn covers(&self, position: u64, created_at: u64) -> bool {
        position <= self.position && created_at <= self.at
    }
}

/// The records and read marks of the feed.
pub struct Notifications {
    /// user, position → [`StoredNotification`].
    records: Tree,
    /// user, notification ID → (empty): read marks; user, [`READ_ALL_KEY`] → [`ReadAll`].
    read: Tree,
}

/// The key, after the user, of the user's [`ReadAll`] (never a notification ID).
const READ_ALL_KEY: &str = "*";

/// `user SEP position`, the layout of the push notification records too.
pub(crate) fn position_key(user: &UserId, position: u64) -> Vec<u8> {
    let mut key = keys::prefix(user.as_str());
    key.extend_from_slice(&keys::u64_be(position));
    key
}

impl Notifications {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            records: store.tree(trees::USERID_STREAMPOS_CHATNOTIFICATION)?,
            read: store.tree(trees::USERID_CHATNOTIFICATIONID_READ)?,
        })
    }

    /// Records a notification for `user` at the stream position of the event that made it
    /// (written again, it stays one notification).
    pub(crate) fn record(
        &self,
        user: &UserId,
        position: u64,
        notification: &StoredNotification,
    ) -> Result<()> {
        self.records.put(
            position_key(user, position),
            serde_json::to_vec(notification)?,
        )?;
        Ok(())
    }

    pub fn get(&self, user: &UserId, position: u64) -> Result<Option<StoredNotification>> {
        match self.records.get(position_key(user, position))? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    /// The user's records before position `before`, newest first.
    pub fn before(
        &self,
        user: &UserId,
        before: u64,
    ) -> impl Iterator<Item = Result<(u64, StoredNotification)>> + use<> {
        let start = position_key(user, 0);
        let prefix_len = start.len() - 8;
        self.records
            .range(&start, &position_key(user, before))
            .rev()
            .filter_map(move |item| match item {
                Ok((key, value)) => {
                    let position = keys::read_u64_be(&key[prefix_len..])?;
                    let record = serde_json::from_slice(&value).ok()?;
                    Some(Ok((position, record)))
                }
                Err(e) => Some(Err(e.into())),
            })
    }

    pub fn is_marked_read(&self, user: &UserId, id: NotificationId) -> Result<bool> {
        Ok(self
            .read
            .contains(keys::pair(user.as_str(), &id.to_string()))?)
    }

    pub(crate) fn mark_read(&self, user: &UserId, id: NotificationId) -> Result<()> {
        self.read
            .put(keys::pair(user.as_str(), &id.to_string()), Vec::new())?;
        Ok(())
    }

    pub fn read_all(&self, user: &UserId) -> Result<ReadAll> {
        match self.read.get(keys::pair(user.as_str(), READ_ALL_KEY))? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            None => Ok(ReadAll::default()),
        }
    }

    /// Moves the user's [`ReadAll`] forwards (never back).
    pub(crate) fn set_read_all(&self, user: &UserId, read_all: ReadAll) -> Result<()> {
        let old = self.read_all(user)?;
        let new = ReadAll {
            position: old.position.max(read_all.position),
            at: old.at.max(read_all.at),
        };
        self.read.put(
            keys::pair(user.as_str(), READ_ALL_KEY),
            serde_json::to_vec(&new)?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order() {
        for raw in ["m0", "c42", "m18446744073709551615"] {
            let id = NotificationId::parse(raw).unwrap();
            assert_eq!(id.to_string(), raw);
        }
        for bad in [
            "",
            "m",
            "x1",
            "m-1",
            "c1a",
            "m18446744073709551616",
            "M1",
            "c 1",
        ] {
            assert!(NotificationId::parse(bad).is_none(), "{bad}");
        }
        let push = NotificationId::parse("m7").unwrap();
        let chat = NotificationId::parse("c7").unwrap();
        let later = NotificationId::parse("m8").unwrap();
        assert!(push.order() < chat.order() && chat.order() < later.order());
    }

    #[test]
    fn read_all_covers_what_was_there_when_marked() {
        let read = ReadAll {
            position: 100,
            at: 5_000,
        };
        assert!(read.covers(100, 5_000));
        assert!(!read.covers(101, 1_000));
        // A call invited before the mark that expired after it.
        assert!(!read.covers(90, 6_000));
    }
}
