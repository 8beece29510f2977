//! Which rooms changed recently: stream position → room, kept in memory for a window of recent
//! positions, so that an incremental sync looks only at the rooms that changed since its token.

use std::collections::{BTreeMap, HashSet};

use ruma::{OwnedRoomId, RoomId};

/// Positions remembered; older ones fall out of the window.
const WINDOW: usize = 100_000;

pub struct RecentChanges {
    by_position: BTreeMap<u64, OwnedRoomId>,
    /// Changes after this position are all in `by_position`.
    complete_after: u64,
}

impl RecentChanges {
    /// Starts empty: only changes after `start` (the position at start-up) are known.
    pub fn new(start: u64) -> Self {
        Self {
            by_position: BTreeMap::new(),
            complete_after: start,
        }
    }

    pub fn record(&mut self, position: u64, room_id: &RoomId) {
        self.by_position.insert(position, room_id.to_owned());
        while self.by_position.len() > WINDOW {
            if let Some((oldest, _)) = self.by_position.pop_first() {
                self.complete_after = self.complete_after.max(oldest);
            }
        }
    }

    /// The rooms changed after `since`, or `None` if `since` is older than the window (then every
    /// room must be looked at).
    pub fn since(&self, since: u64) -> Option<HashSet<OwnedRoomId>> {
        if since < self.complete_after {
            return None;
        }
        Some(
            self.by_position
                .range(since.saturating_add(1)..)
                .map(|(_, room)| room.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window() {
        let mut changes = RecentChanges::new(10);
        let a = ruma::room_id!("!a:x");
        let b = ruma::room_id!("!b:x");
        changes.record(11, a);
        changes.record(12, b);
        assert_eq!(changes.since(5), None);
        assert_eq!(changes.since(11).unwrap().len(), 1);
        assert!(changes.since(11).unwrap().contains(b));
        assert_eq!(changes.since(10).unwrap().len(), 2);
        assert!(changes.since(12).unwrap().is_empty());
    }
}
