//! Event filters (`RoomEventFilter` of the Client-Server API): which events a request returns.

use serde::Deserialize;

/// The parts of a room event filter that select events.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    pub limit: Option<usize>,
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
}

/// `*` matches any run of characters, as the specification allows in type filters.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, tail)) => {
            let Some(rest) = value.strip_prefix(head) else {
                return false;
            };
            if tail.is_empty() {
                return true;
            }
            (0..=rest.len())
                .filter(|i| rest.is_char_boundary(*i))
                .any(|i| glob(tail, &rest[i..]))
        }
    }
}

impl RoomEventFilter {
    /// Whether an event with these properties passes. `not_*` lists win over the allow lists.
    pub fn matches(&self, room_id: &str, sender: &str, kind: &str, has_url: bool) -> bool {
        if self.not_types.iter().any(|p| glob(p, kind))
            || self.not_senders.iter().any(|s| s == sender)
            || self.not_rooms.iter().any(|r| r == room_id)
        {
            return false;
        }
        self.types
            .as_ref()
            .is_none_or(|types| types.iter().any(|p| glob(p, kind)))
            && self
                .senders
                .as_ref()
                .is_none_or(|senders| senders.iter().any(|s| s == sender))
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
            && self.contains_url.is_none_or(|want| want == has_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("m.room.*", "m.room.message"));
        assert!(glob("*", "anything"));
        assert!(glob("m.*.message", "m.room.message"));
        assert!(!glob("m.room.*", "m.call.invite"));
        assert!(glob("m.room.message", "m.room.message"));
        assert!(!glob("m.room.message", "m.room.messages"));
    }

    #[test]
    fn allow_and_deny_lists() {
        let f: RoomEventFilter = serde_json::from_value(serde_json::json!({
            "types": ["m.room.*"],
            "not_types": ["m.room.member"],
            "not_senders": ["@spam:x"],
            "contains_url": false,
        }))
        .unwrap();
        assert!(f.matches("!r", "@a:x", "m.room.message", false));
        assert!(!f.matches("!r", "@a:x", "m.room.member", false));
        assert!(!f.matches("!r", "@spam:x", "m.room.message", false));
        assert!(!f.matches("!r", "@a:x", "m.reaction", false));
        assert!(!f.matches("!r", "@a:x", "m.room.message", true));
        let everything = RoomEventFilter::default();
        assert!(everything.matches("!r", "@a:x", "x", true));
        let rooms: RoomEventFilter =
            serde_json::from_value(serde_json::json!({ "rooms": ["!a"], "not_rooms": ["!b"] }))
                .unwrap();
        assert!(rooms.matches("!a", "@a:x", "x", false));
        assert!(!rooms.matches("!b", "@a:x", "x", false));
        assert!(!rooms.matches("!c", "@a:x", "x", false));
    }
}
