//! Unread notification counts of a joined room, for `/sync`.
//!
//! The push rules decide what notifies and what highlights: the evaluator (see `service::push`)
//! records each notifying event for each user, and a count is the number of those records in
//! the room after what the user has read. The user has read an event when a read receipt
//! (`m.read` or `m.read.private`, whichever is further ahead) covers it: an unthreaded receipt
//! covers every thread, a threaded one its own thread (`main` for events outside threads).
//! Nothing before the user's current membership began counts (a join that only changes a
//! display name or avatar does not begin one).

use std::collections::BTreeMap;

use ruma::RoomId;
use serde_json::Value;

use super::Services;
use super::push::notifications::Counts;
use super::rooms::visibility::Reader;
use crate::error::Result;

/// The unread counts of one room.
#[derive(Debug, Default, Clone)]
pub struct UnreadCounts {
    /// The whole room, or only the main timeline when counted per thread.
    pub room: Counts,
    /// Per thread root, when counted per thread (threads with nothing unread are left out).
    pub threads: BTreeMap<String, Counts>,
}

impl Services {
    /// The unread counts of `reader` in a room they are joined to, over the events up to stream
    /// position `upto`; `per_thread` splits the counts of threads from the main timeline's (the
    /// filter's `unread_thread_notifications`).
    pub fn unread_counts(
        &self,
        room_id: &RoomId,
        reader: &Reader,
        upto: u64,
        per_thread: bool,
    ) -> Result<UnreadCounts> {
        let user = &reader.user_id;
        let read = self.read_up_to(room_id, user, self.rooms.joined_at(room_id, user)?)?;
        let (room, threads) = self.count_notifications(room_id, user, &read, upto, per_thread)?;
        Ok(UnreadCounts { room, threads })
    }

    /// Adds `unread_notifications` (and `unread_thread_notifications` when counted per thread
    /// and some thread has unread events) to a joined room's sync section.
    pub(crate) fn add_unread_counts(
        &self,
        section: &mut Value,
        room_id: &RoomId,
        reader: &Reader,
        upto: u64,
        per_thread: bool,
    ) -> Result<()> {
        let counts = self.unread_counts(room_id, reader, upto, per_thread)?;
        section["unread_notifications"] = counts.room.to_json();
        if !counts.threads.is_empty() {
            section["unread_thread_notifications"] = counts
                .threads
                .iter()
                .map(|(root, c)| (root.clone(), c.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        Ok(())
    }
}
