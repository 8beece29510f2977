//! What goes into one transaction (`PUT /_matrix/federation/v1/send/{txnId}`), without I/O: the
//! limits, which queued EDUs are sent or dropped, the body, the answer's per-PDU errors, and
//! which queued PDUs an overflowing queue gives up.

use std::collections::HashMap;

use ruma::{OwnedRoomId, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most PDUs in one transaction (the specification's limit).
pub const MAX_PDUS: usize = 50;
/// The most EDUs in one transaction (the specification's limit).
pub const MAX_EDUS: usize = 100;
/// The most bytes of EDUs in one transaction (one larger EDU still goes, alone). With 50 PDUs
/// of at most 64 KiB, a transaction stays well under the 8 MiB receivers commonly accept.
pub const MAX_EDU_BYTES: usize = 4 << 20;
/// Queued EDUs looked at for one transaction beyond those sent: stale typing notifications
/// found on the way are dropped, and the look stops there.
pub const MAX_EDUS_SCANNED: usize = 1_000;
/// A typing notification older than this is not worth sending: the remote server has timed it
/// out, or the user has stopped (and that stop follows in the queue).
pub const TYPING_TTL_MS: u64 = 30_000;
/// The longest error text of a peer's answer kept for the log.
const MAX_LOGGED_ERROR: usize = 200;

/// An EDU waiting in a destination's queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedEdu {
    pub edu_type: String,
    pub content: Value,
    /// When it was queued (ms since the epoch).
    pub queued_ms: u64,
}

impl QueuedEdu {
    /// An EDU as the public API takes it: `{"edu_type": …, "content": {…}}`.
    pub fn from_json(edu: &Value, now_ms: u64) -> Option<Self> {
        let edu_type = edu.get("edu_type")?.as_str()?.to_owned();
        let content = edu.get("content").filter(|c| c.is_object())?.clone();
        Some(Self {
            edu_type,
            content,
            queued_ms: now_ms,
        })
    }

    /// Whether the EDU lost its worth while it waited (a typing notification).
    pub fn stale(&self, now_ms: u64) -> bool {
        self.edu_type == "m.typing" && now_ms.saturating_sub(self.queued_ms) > TYPING_TTL_MS
    }

    /// The EDU as sent at `now_ms`: a presence update's `last_active_ago` grows by the time it
    /// waited in the queue.
    pub fn to_wire(&self, now_ms: u64) -> Value {
        let mut content = self.content.clone();
        let waited = now_ms.saturating_sub(self.queued_ms);
        if self.edu_type == "m.presence"
            && waited > 0
            && let Some(push) = content.get_mut("push").and_then(Value::as_array_mut)
        {
            for update in push {
                if let Some(ago) = update.get("last_active_ago").and_then(Value::as_u64) {
                    update["last_active_ago"] = json!(ago.saturating_add(waited));
                }
            }
        }
        json!({ "edu_type": self.edu_type, "content": content })
    }
}

/// The queued EDUs one transaction takes, and the stale ones to drop.
#[derive(Debug, Default, PartialEq)]
pub struct EduPick {
    pub send: Vec<u64>,
    pub drop: Vec<u64>,
}

/// Picks EDUs in queue order from `(queue ID, size in bytes, stale)`: at most [`MAX_EDUS`] and
/// [`MAX_EDU_BYTES`] (the first always goes), stale ones set aside to drop; looks at no more
/// than [`MAX_EDUS`] + [`MAX_EDUS_SCANNED`] entries.
pub fn pick_edus(candidates: impl IntoIterator<Item = (u64, usize, bool)>) -> EduPick {
    let mut pick = EduPick::default();
    let mut bytes = 0usize;
    for (id, size, stale) in candidates.into_iter().take(MAX_EDUS + MAX_EDUS_SCANNED) {
        if stale {
            pick.drop.push(id);
            continue;
        }
        if pick.send.len() == MAX_EDUS
            || (!pick.send.is_empty() && bytes.saturating_add(size) > MAX_EDU_BYTES)
        {
            break;
        }
        bytes = bytes.saturating_add(size);
        pick.send.push(id);
    }
    pick
}

/// A transaction ID: the time and a number the store never hands out twice, so IDs stay unique
/// per destination across restarts and even across a fresh database under the same name.
pub fn txn_id(now_ms: u64, unique: u64) -> String {
    format!("{now_ms}-{unique}")
}

/// The body of `PUT /send/{txnId}`.
pub fn transaction_body(
    origin: &ServerName,
    now_ms: u64,
    pdus: Vec<Value>,
    edus: Vec<Value>,
) -> Value {
    json!({
        "origin": origin,
        "origin_server_ts": now_ms,
        "pdus": pdus,
        "edus": edus,
    })
}

/// An event as sent: its full signed JSON, without the local `unsigned` section.
pub fn pdu_for_wire(mut pdu: Value) -> Value {
    if let Some(object) = pdu.as_object_mut() {
        object.remove("unsigned");
    }
    pdu
}

/// The per-PDU errors of a `/send` answer (`{"pdus": {"$event": {"error": "…"}}}`), for the log
/// only: at most [`MAX_PDUS`], each text shortened. Whatever else the peer answers is ignored.
pub fn pdu_errors(answer: &Value) -> Vec<(String, String)> {
    let Some(pdus) = answer.get("pdus").and_then(Value::as_object) else {
        return Vec::new();
    };
    pdus.iter()
        .filter_map(|(event_id, result)| {
            let error = result.get("error")?;
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            Some((shorten(event_id), shorten(&text)))
        })
        .take(MAX_PDUS)
        .collect()
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_LOGGED_ERROR) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Of a destination's queued PDUs `(position, room)` in position order, the positions to drop
/// so that only the latest of each room stays: the forward extremity of what we sent there. The
/// destination fetches what lies between with `get_missing_events` when it gets that event.
pub fn superseded(entries: &[(u64, OwnedRoomId)]) -> Vec<u64> {
    let mut latest: HashMap<&OwnedRoomId, u64> = HashMap::new();
    for (position, room) in entries {
        let slot = latest.entry(room).or_insert(*position);
        *slot = (*slot).max(*position);
    }
    entries
        .iter()
        .filter(|(position, room)| latest.get(room) != Some(position))
        .map(|(position, _)| *position)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edus_are_capped_by_count_and_bytes() {
        let many = pick_edus((0..250).map(|id| (id, 10, false)));
        assert_eq!(many.send, (0..100).collect::<Vec<_>>());
        assert!(many.drop.is_empty());

        let big = MAX_EDU_BYTES / 3 + 1;
        let sized = pick_edus((0..10).map(|id| (id, big, false)));
        assert_eq!(sized.send, vec![0, 1]);

        // One EDU larger than the budget still goes, alone.
        let huge = pick_edus([(7, MAX_EDU_BYTES * 2, false), (8, 1, false)]);
        assert_eq!(huge.send, vec![7]);
    }

    #[test]
    fn stale_edus_are_dropped_and_the_scan_is_bounded() {
        let mixed = pick_edus([(1, 5, true), (2, 5, false), (3, 5, true), (4, 5, false)]);
        assert_eq!(mixed.send, vec![2, 4]);
        assert_eq!(mixed.drop, vec![1, 3]);

        let all_stale = pick_edus((0..5_000).map(|id| (id, 5, true)));
        assert!(all_stale.send.is_empty());
        assert_eq!(all_stale.drop.len(), MAX_EDUS + MAX_EDUS_SCANNED);
    }

    #[test]
    fn typing_goes_stale_and_presence_ages() {
        let typing = QueuedEdu::from_json(
            &json!({"edu_type": "m.typing", "content": {"room_id": "!r:x", "user_id": "@a:x", "typing": true}}),
            1_000,
        )
        .unwrap();
        assert!(!typing.stale(1_000 + TYPING_TTL_MS));
        assert!(typing.stale(1_001 + TYPING_TTL_MS));

        let presence = QueuedEdu::from_json(
            &json!({"edu_type": "m.presence", "content": {"push": [
                {"user_id": "@a:x", "presence": "online", "last_active_ago": 10},
                {"user_id": "@b:x", "presence": "offline"},
            ]}}),
            1_000,
        )
        .unwrap();
        assert!(!presence.stale(u64::MAX));
        let wire = presence.to_wire(6_000);
        assert_eq!(wire["edu_type"], "m.presence");
        assert_eq!(wire["content"]["push"][0]["last_active_ago"], 5_010);
        assert!(wire["content"]["push"][1].get("last_active_ago").is_none());
        assert!(wire.get("queued_ms").is_none());
    }

    #[test]
    fn malformed_edus_are_refused() {
        assert!(QueuedEdu::from_json(&json!({"content": {}}), 0).is_none());
        assert!(QueuedEdu::from_json(&json!({"edu_type": "m.x", "content": []}), 0).is_none());
        assert!(QueuedEdu::from_json(&json!({"edu_type": 3, "content": {}}), 0).is_none());
    }

    #[test]
    fn the_body_has_the_transaction_fields_and_no_unsigned() {
        let origin = ruma::server_name!("a.example");
        let pdu = pdu_for_wire(json!({"type": "m.room.message", "unsigned": {"age": 1}}));
        let body = transaction_body(origin, 42, vec![pdu], vec![json!({"edu_type": "m.x"})]);
        assert_eq!(body["origin"], "a.example");
        assert_eq!(body["origin_server_ts"], 42);
        assert!(body["pdus"][0].get("unsigned").is_none());
        assert_eq!(body["edus"].as_array().unwrap().len(), 1);
        assert_ne!(txn_id(1, 2), txn_id(1, 3));
    }

    #[test]
    fn answers_are_read_leniently_and_boundedly() {
        let answer = json!({"pdus": {
            "$ok": {},
            "$bad": {"error": "x".repeat(1_000)},
            "$odd": {"error": {"nested": true}},
        }});
        let mut errors = pdu_errors(&answer);
        errors.sort();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].0, "$bad");
        assert!(errors[0].1.chars().count() <= MAX_LOGGED_ERROR + 1);
        assert_eq!(errors[1].0, "$odd");
        for nonsense in [
            json!(null),
            json!({"pdus": []}),
            json!("x"),
            json!({"pdus": {"$a": 1}}),
        ] {
            assert!(pdu_errors(&nonsense).is_empty());
        }
        let flood: serde_json::Map<String, Value> = (0..500)
            .map(|i| (format!("${i}"), json!({"error": "no"})))
            .collect();
        assert_eq!(pdu_errors(&json!({ "pdus": flood })).len(), MAX_PDUS);
    }

    #[test]
    fn an_overflowing_queue_keeps_the_latest_event_of_each_room() {
        let a = ruma::owned_room_id!("!a:x");
        let b = ruma::owned_room_id!("!b:x");
        let entries = vec![
            (1, a.clone()),
            (2, b.clone()),
            (3, a.clone()),
            (4, a.clone()),
            (5, b.clone()),
            (9, ruma::owned_room_id!("!c:x")),
        ];
        assert_eq!(superseded(&entries), vec![1, 2, 3]);
        assert!(superseded(&[]).is_empty());
    }
}
