//! Event filters (`RoomEventFilter` of the Client-Server API): which events a request returns.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The parts of a room event filter that select events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomEventFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contains_url: Option<bool>,
    pub lazy_load_members: bool,
    pub include_redundant_members: bool,
    /// `/sync` only: count unread notifications per thread (`unread_thread_notifications`).
    pub unread_thread_notifications: bool,
}

/// A whole filter (`POST /user/{userId}/filter`, or inline in `/sync`). Its parts are JSON
/// objects only (see [`crate::util::from_object`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_fields: Option<Vec<String>>,
    /// `client` (default) or `federation`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_format: Option<String>,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub presence: RoomEventFilter,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub account_data: RoomEventFilter,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub room: RoomFilter,
}

/// The room part of a filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RoomFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    pub not_rooms: Vec<String>,
    pub include_leave: bool,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub timeline: RoomEventFilter,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub state: RoomEventFilter,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub ephemeral: RoomEventFilter,
    #[serde(deserialize_with = "crate::util::from_object")]
    pub account_data: RoomEventFilter,
}

impl RoomFilter {
    /// Whether a room passes the `rooms` / `not_rooms` lists.
    pub fn includes_room(&self, room_id: &str) -> bool {
        !self.not_rooms.iter().any(|r| r == room_id)
            && self
                .rooms
                .as_ref()
                .is_none_or(|rooms| rooms.iter().any(|r| r == room_id))
    }
}

impl Filter {
    /// Checks the values the specification constrains.
    pub fn validate(&self) -> Result<(), String> {
        match self.event_format.as_deref() {
            None | Some("client" | "federation") => {}
            Some(other) => {
                return Err(format!(
                    "event_format must be client or federation, not {other}"
                ));
            }
        }
        if let Some(fields) = &self.event_fields
            && fields.iter().any(|f| f.is_empty())
        {
            return Err("event_fields entries must not be empty".into());
        }
        Ok(())
    }
}

/// Keeps only the listed fields of an event (dot-separated paths; `\.` escapes a dot).
pub fn apply_event_fields(event: &Value, fields: &[String]) -> Value {
    let mut out = Map::new();
    for field in fields {
        let path = split_path(field);
        copy_path(event, &mut out, &path);
    }
    Value::Object(out)
}

fn split_path(field: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                chars.next();
                if let Some(last) = parts.last_mut() {
                    last.push('.');
                }
            }
            '.' => parts.push(String::new()),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    parts
}

fn copy_path(from: &Value, into: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = from.get(first) else {
        return;
    };
    if rest.is_empty() {
        into.insert(first.clone(), value.clone());
        return;
    }
    // The enclosing objects are created only for a field the event has: no `{}` for a missing
    // one.
    if !has_path(value, rest) {
        return;
    }
    let entry = into
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = entry {
        copy_path(value, inner, rest);
    }
}

/// Whether `path` names a field inside `value` (through objects only).
fn has_path(value: &Value, path: &[String]) -> bool {
    path.iter()
        .try_fold(value, |value, key| value.as_object()?.get(key))
        .is_some()
}

/// `*` matches any run of characters, as the specification allows in type filters.
///
/// Greedy with backtracking to the last `*` only, so at worst proportional to the product of the
/// lengths (trying every split for every `*` would be exponential in their number, which a
/// filter chooses). Works on bytes: literal text is whole UTF-8 characters, so it can only match
/// at character boundaries anyway.
fn glob(pattern: &str, value: &str) -> bool {
    let (pattern, value) = (pattern.as_bytes(), value.as_bytes());
    let (mut p, mut v) = (0, 0);
    // The last `*` seen, and where in the value what follows it is being tried.
    let mut backtrack: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p + 1, v));
                p += 1;
            }
            Some(c) if *c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match backtrack {
                // Let that `*` take one more byte, and try the rest of the pattern after it.
                Some((after_star, tried)) => {
                    backtrack = Some((after_star, tried + 1));
                    p = after_star;
                    v = tried + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
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
    fn event_fields() {
        let event = serde_json::json!({
            "type": "m.room.message",
            "content": { "body": "hi", "m.relates_to": { "a.b": 1 }, "msgtype": "m.text" },
            "sender": "@a:x",
        });
        let kept = apply_event_fields(
            &event,
            &[
                "type".into(),
                "content.body".into(),
                "content.m\\.relates_to".into(),
            ],
        );
        assert_eq!(
            kept,
            serde_json::json!({
                "type": "m.room.message",
                "content": { "body": "hi", "m.relates_to": { "a.b": 1 } },
            })
        );
        let escaped = apply_event_fields(
            &serde_json::json!({ "content": { "m.relates_to": 1 } }),
            &["content.m\\.relates_to".into()],
        );
        assert_eq!(
            escaped,
            serde_json::json!({ "content": { "m.relates_to": 1 } })
        );
        // A sub-field the event lacks leaves no empty object behind.
        let missing = apply_event_fields(
            &serde_json::json!({ "content": { "body": "hi" }, "sender": "@a:x", "age": 1 }),
            &["content.missing".into(), "age.x".into(), "sender".into()],
        );
        assert_eq!(missing, serde_json::json!({ "sender": "@a:x" }));
    }

    #[test]
    fn whole_filters_validate() {
        let f: Filter = serde_json::from_value(serde_json::json!({
            "room": { "timeline": { "limit": 5 }, "not_rooms": ["!b"] },
            "event_format": "client",
        }))
        .unwrap();
        assert!(f.validate().is_ok());
        assert!(f.room.includes_room("!a") && !f.room.includes_room("!b"));
        let bad: Filter =
            serde_json::from_value(serde_json::json!({ "event_format": "x" })).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn globs() {
        assert!(glob("m.room.*", "m.room.message"));
        assert!(glob("*", "anything"));
        assert!(glob("m.*.message", "m.room.message"));
        assert!(!glob("m.room.*", "m.call.invite"));
        assert!(glob("m.room.message", "m.room.message"));
        assert!(!glob("m.room.message", "m.room.messages"));
        assert!(glob("", ""));
        assert!(!glob("", "x"));
        assert!(glob("**", ""));
        assert!(glob("*a*", "bab"));
        assert!(!glob("a*", "ba"));
        assert!(glob("*é*", "café au lait"));
        // Many stars that cannot match: must not try every way to split the value.
        let pattern = format!("{}*b", "*a".repeat(12));
        let started = std::time::Instant::now();
        assert!(!glob(&pattern, &"a".repeat(200)));
        assert!(glob(&pattern, &format!("{}b", "a".repeat(200))));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
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
