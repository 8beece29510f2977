//! Event relationships (`m.relates_to`): which parent an event points at and how.
//!
//! Only the cleartext `m.relates_to` of an event's content counts (the server cannot see inside
//! encrypted payloads). Relations that do not match the schema are ignored, as the specification
//! says: such an event simply stands on its own.

use ruma::{EventId, OwnedEventId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `rel_type` of an edit.
pub const REPLACE: &str = "m.replace";
/// `rel_type` of a reaction.
pub const ANNOTATION: &str = "m.annotation";
/// `rel_type` of an event in a thread.
pub const THREAD: &str = "m.thread";
/// `rel_type` of a reference.
pub const REFERENCE: &str = "m.reference";
/// What the index records for a rich reply, which has no `rel_type`. It never appears in
/// `/relations` answers; the dot-free form cannot collide with a namespaced `rel_type`.
pub const REPLY: &str = "reply";

/// One event's relation to its parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub parent: OwnedEventId,
    /// The `rel_type`, or [`REPLY`] for a rich reply.
    pub rel_type: String,
    /// The annotation key of an `m.annotation`.
    pub key: Option<String>,
}

impl Relation {
    pub fn is_reply(&self) -> bool {
        self.rel_type == REPLY
    }
}

/// The relation an event's content declares, if it is well formed.
pub fn of_content(content: &Value) -> Option<Relation> {
    let relates_to = content.get("m.relates_to")?.as_object()?;
    if let Some(rel_type) = relates_to.get("rel_type") {
        let rel_type = rel_type.as_str()?;
        if rel_type.is_empty() || rel_type.len() > 255 {
            return None;
        }
        let parent = parse_event_id(relates_to.get("event_id")?)?;
        let key = match rel_type {
            ANNOTATION => Some(relates_to.get("key")?.as_str()?.to_owned()),
            _ => None,
        };
        return Some(Relation {
            parent,
            rel_type: rel_type.to_owned(),
            key,
        });
    }
    let reply = relates_to.get("m.in_reply_to")?.as_object()?;
    Some(Relation {
        parent: parse_event_id(reply.get("event_id")?)?,
        rel_type: REPLY.to_owned(),
        key: None,
    })
}

/// Whether content declares a relation with a `rel_type` (threads may not start from such an
/// event, and edits of edits are not valid).
pub fn has_rel_type(content: &Value) -> bool {
    of_content(content).is_some_and(|r| !r.is_reply())
}

fn parse_event_id(value: &Value) -> Option<OwnedEventId> {
    let id = value.as_str()?;
    if id.len() > crate::core::MAX_ID_BYTES {
        return None;
    }
    EventId::parse(id).ok()
}

/// What the relation index holds for one child event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildEntry {
    /// The child event.
    #[serde(rename = "c")]
    pub event_id: OwnedEventId,
    #[serde(rename = "r")]
    pub rel_type: String,
    /// The child's event type.
    #[serde(rename = "t")]
    pub kind: String,
    #[serde(rename = "s")]
    pub sender: ruma::OwnedUserId,
    /// The child's `origin_server_ts` (the most recent edit is chosen by it).
    #[serde(rename = "ts")]
    pub origin_server_ts: u64,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Whether an edit may replace an original, by the specification's validity rules that the index
/// can check without the events' contents (same sender, same type, no state key on the
/// original — the caller checks that and `m.new_content`).
pub fn edit_matches(edit: &ChildEntry, original_sender: &str, original_kind: &str) -> bool {
    edit.rel_type == REPLACE && edit.sender == original_sender && edit.kind == original_kind
}

/// Of the valid edits, the most recent: the largest `origin_server_ts`, then the largest event ID.
pub fn most_recent<'a>(edits: impl Iterator<Item = &'a ChildEntry>) -> Vec<&'a ChildEntry> {
    let mut edits: Vec<&ChildEntry> = edits.collect();
    edits.sort_by(|a, b| {
        (b.origin_server_ts, b.event_id.as_str()).cmp(&(a.origin_server_ts, a.event_id.as_str()))
    });
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_relation_kind() {
        let thread = json!({ "m.relates_to": {
            "rel_type": "m.thread", "event_id": "$root",
            "is_falling_back": true, "m.in_reply_to": { "event_id": "$other" } } });
        let r = of_content(&thread).unwrap();
        assert_eq!((r.parent.as_str(), r.rel_type.as_str()), ("$root", THREAD));

        let reaction = json!({ "m.relates_to": {
            "rel_type": "m.annotation", "event_id": "$a", "key": "👍" } });
        assert_eq!(of_content(&reaction).unwrap().key.as_deref(), Some("👍"));

        let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$p" } } });
        let r = of_content(&reply).unwrap();
        assert!(r.is_reply());
        assert!(!has_rel_type(&reply));
        assert!(has_rel_type(&thread));
    }

    #[test]
    fn malformed_relations_are_ignored() {
        for content in [
            json!({}),
            json!({ "m.relates_to": "x" }),
            json!({ "m.relates_to": { "rel_type": "m.thread" } }),
            json!({ "m.relates_to": { "rel_type": "m.thread", "event_id": "not-an-id" } }),
            json!({ "m.relates_to": { "rel_type": 5, "event_id": "$a" } }),
            json!({ "m.relates_to": { "rel_type": "", "event_id": "$a" } }),
            json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": "$a" } }),
            json!({ "m.relates_to": { "m.in_reply_to": { "event_id": 1 } } }),
            json!({ "m.relates_to": { "rel_type": "m.reference", "event_id": format!("${}", "a".repeat(300)) } }),
        ] {
            assert_eq!(of_content(&content), None, "{content}");
        }
    }

    #[test]
    fn most_recent_edit_by_timestamp_then_event_id() {
        let entry = |id: &str, ts| ChildEntry {
            event_id: EventId::parse(id).unwrap(),
            rel_type: REPLACE.into(),
            kind: "m.room.message".into(),
            sender: ruma::UserId::parse("@a:x").unwrap(),
            origin_server_ts: ts,
            key: None,
        };
        let entries = [entry("$a", 5), entry("$c", 7), entry("$b", 7)];
        let order: Vec<_> = most_recent(entries.iter())
            .into_iter()
            .map(|e| e.event_id.as_str())
            .collect();
        assert_eq!(order, ["$c", "$b", "$a"]);
        assert!(edit_matches(&entries[0], "@a:x", "m.room.message"));
        assert!(!edit_matches(&entries[0], "@b:x", "m.room.message"));
        assert!(!edit_matches(&entries[0], "@a:x", "m.sticker"));
    }
}
