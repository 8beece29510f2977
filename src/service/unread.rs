//! Unread notification counts of a joined room, for `/sync`.
//!
//! Until push rules arrive the rule is simple: an event notifies a user when it is an
//! `m.room.message`, `m.room.encrypted` or `m.sticker` event from someone else (not redacted,
//! not from an ignored user, sent after the user joined), and it highlights when its `body`
//! contains the user's ID or (as a whole word, ignoring case) their display name in the room,
//! or its `m.mentions.user_ids` lists them. The user has read it when a read receipt
//! (`m.read` or `m.read.private`, whichever is further ahead) covers it: an unthreaded receipt
//! covers every thread, a threaded one its own thread (`main` for events outside threads).

use std::collections::{BTreeMap, HashMap};

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::Services;
use super::receipts::{MAIN_THREAD, thread_root};
use super::rooms::visibility::Reader;
use crate::error::Result;

/// The event types that notify.
const NOTIFYING_TYPES: [&str; 3] = ["m.room.message", "m.room.encrypted", "m.sticker"];
/// The most unread timeline entries one count looks at (counts stop there).
const MAX_SCAN: usize = 1000;

/// Notification and highlight counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

impl Counts {
    fn add(&mut self, highlight: bool) {
        self.notifications += 1;
        self.highlights += u64::from(highlight);
    }

    fn to_json(self) -> Value {
        json!({
            "notification_count": self.notifications,
            "highlight_count": self.highlights,
        })
    }
}

/// The unread counts of one room.
#[derive(Debug, Default, Clone)]
pub struct UnreadCounts {
    /// The whole room, or only the main timeline when counted per thread.
    pub room: Counts,
    /// Per thread root, when counted per thread (threads with nothing unread are left out).
    pub threads: BTreeMap<String, Counts>,
}

/// What a count depends on besides the timeline: when any of it changes, the room is counted
/// again from the start.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CountBasis {
    floor: u64,
    threaded: Vec<(String, u64)>,
    ignored: Vec<String>,
    display_name: Option<String>,
    per_thread: bool,
}

/// The last counts of each (user, room), so that a sync counts only the events since the
/// previous one instead of every unread event again.
#[derive(Default)]
pub struct CountMemo {
    by_room: std::sync::Mutex<HashMap<MemoKey, Memo>>,
}

type MemoKey = (OwnedUserId, OwnedRoomId);
/// The basis, the stream position counted up to, and the counts.
type Memo = (CountBasis, u64, UnreadCounts);

/// Rooms remembered at most; the memo starts over beyond that.
const MEMO_ENTRIES: usize = 20_000;

impl CountMemo {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<MemoKey, Memo>> {
        // Only a cache: a panic half-way leaves nothing inconsistent that matters.
        self.by_room.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        let mut unthreaded = 0;
        let mut threaded: HashMap<String, u64> = HashMap::new();
        for (key, receipt) in self.receipts.read_receipts(room_id, user)? {
            match key.thread {
                None => unthreaded = unthreaded.max(receipt.event_pos),
                Some(thread) => {
                    let pos = threaded.entry(thread).or_default();
                    *pos = (*pos).max(receipt.event_pos);
                }
            }
        }
        // Nothing before the user's join notifies them.
        let floor = unthreaded.max(reader.last_join.unwrap_or(0));
        let read_upto = |thread: &str| floor.max(threaded.get(thread).copied().unwrap_or(0));
        let ignored = self.account_data.ignored_users(user)?;
        let display_name = self.display_name(room_id, user)?;
        let mut basis = CountBasis {
            floor,
            threaded: threaded.iter().map(|(t, p)| (t.clone(), *p)).collect(),
            ignored: ignored.iter().map(|u| u.to_string()).collect(),
            display_name: display_name.clone(),
            per_thread,
        };
        basis.threaded.sort();
        basis.ignored.sort();
        let memo_key = (user.clone(), room_id.to_owned());
        // Start from the counts of a previous sync when nothing they depend on changed since.
        let (mut counts, after) = match self.unread_memo.lock().get(&memo_key) {
            Some((old, counted_upto, counts)) if *old == basis && *counted_upto <= upto => {
                (counts.clone(), *counted_upto)
            }
            _ => (UnreadCounts::default(), floor),
        };
        let events =
            self.rooms
                .timeline_range(room_id, after, upto.saturating_add(1), true, MAX_SCAN)?;
        let mut pdus = Vec::with_capacity(events.len());
        for (pos, event_id) in events {
            if let Some(pdu) = self.rooms.pdu(&event_id)? {
                pdus.push((pos, event_id, pdu));
            }
        }
        // A redaction may take back an event counted before: count everything again.
        if after > floor
            && pdus
                .iter()
                .any(|(_, _, pdu)| *pdu.kind() == ruma::events::TimelineEventType::RoomRedaction)
        {
            self.unread_memo.lock().remove(&memo_key);
            return self.unread_counts(room_id, reader, upto, per_thread);
        }
        for (pos, event_id, pdu) in pdus {
            let kind = pdu.kind().to_string();
            if pdu.sender() == user
                || ignored.contains(pdu.sender())
                || !NOTIFYING_TYPES.contains(&kind.as_str())
                || self.rooms.redacted_by(&event_id)?.is_some()
            {
                continue;
            }
            let content: Value = serde_json::from_str(pdu.content().get())?;
            let thread = thread_root(&content).unwrap_or(MAIN_THREAD);
            if pos <= read_upto(thread) {
                continue;
            }
            let highlight = mentions(&content, user, display_name.as_deref());
            if per_thread && thread != MAIN_THREAD {
                counts
                    .threads
                    .entry(thread.to_owned())
                    .or_default()
                    .add(highlight);
            } else {
                counts.room.add(highlight);
            }
        }
        let mut memo = self.unread_memo.lock();
        if memo.len() >= MEMO_ENTRIES {
            memo.clear();
        }
        memo.insert(memo_key, (basis, upto, counts.clone()));
        Ok(counts)
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

    /// The user's display name in the room (from their member event).
    fn display_name(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        let Some(member) =
            self.rooms
                .state_event(room_id, &StateEventType::RoomMember, user.as_str())?
        else {
            return Ok(None);
        };
        let content: Value = serde_json::from_str(member.content().get())?;
        Ok(content
            .get("displayname")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned))
    }
}

/// Whether an event's content mentions the user (see the module documentation).
fn mentions(content: &Value, user: &UserId, display_name: Option<&str>) -> bool {
    let listed = content
        .get("m.mentions")
        .and_then(|m| m.get("user_ids"))
        .and_then(Value::as_array)
        .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(user.as_str())));
    if listed {
        return true;
    }
    let Some(body) = content.get("body").and_then(Value::as_str) else {
        return false;
    };
    body.contains(user.as_str()) || display_name.is_some_and(|name| contains_word(body, name))
}

/// Whether `word` occurs in `text` ignoring case, with no letter or digit right before or
/// after it.
fn contains_word(text: &str, word: &str) -> bool {
    let (text, word) = (text.to_lowercase(), word.to_lowercase());
    if word.is_empty() {
        return false;
    }
    text.match_indices(&word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_by_id_name_and_list() {
        let bob = ruma::user_id!("@bob:x");
        assert!(mentions(&json!({ "body": "hi @bob:x" }), bob, None));
        assert!(mentions(
            &json!({ "body": "Hi Bobby B!" }),
            bob,
            Some("bobby b")
        ));
        assert!(!mentions(
            &json!({ "body": "hi bobbyb" }),
            bob,
            Some("Bobby")
        ));
        assert!(!mentions(&json!({ "body": "hi" }), bob, Some("Bob")));
        assert!(mentions(
            &json!({ "body": "hi", "m.mentions": { "user_ids": ["@bob:x"] } }),
            bob,
            None
        ));
        assert!(!mentions(&json!({ "ciphertext": "…" }), bob, Some("bob")));
    }

    #[test]
    fn words() {
        assert!(contains_word("ping alice.", "Alice"));
        assert!(!contains_word("malice", "alice"));
        assert!(contains_word("alice", "alice"));
        assert!(!contains_word("anything", ""));
    }
}
