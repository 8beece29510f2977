//! Fuzz targets: plain functions that take arbitrary bytes, must never panic on any input, and
//! assert the invariants of one parser or encoder (a failed assertion is a finding).
//!
//! The same functions are driven two ways (see `docs/fuzzing.md`): by `cargo fuzz`
//! (`fuzz/fuzz_targets/`), coverage-guided, for long runs; and by the `fuzz_smoke` integration
//! test, which feeds each target its seed corpus (`fuzz/corpus/<target>/`) plus a bounded number
//! of deterministic mutations on every `cargo test`.
//!
//! Not part of the server's API.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, RoomVersionId,
    serde::{Base64, base64::Standard},
    signatures::{PublicKeyMap, required_server_signatures_to_verify_event},
};
use serde_json::Value;

use crate::core::filter::{Filter, RoomEventFilter, apply_event_fields};
use crate::core::{Pdu, StateMap, auth, pdu, room_version};
use crate::service::sync::{parse_token, token};

/// A fuzz target: takes any bytes, panics only on a finding.
pub type Target = fn(&[u8]);

/// Every target, by the name of its fuzz target and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("canonical_json", canonical_json),
    ("pdu", pdu),
    ("sync_token", sync_token),
    ("filter", filter),
];

/// The server name whose events the `pdu` target verifies, and the public key it has: the key
/// `ed25519:1` of the specification's test vectors (appendices, "Cryptographic Test Vectors").
/// The signed seeds of the `pdu` corpus were made with its private half.
pub const PDU_SERVER: &str = "roost.test";
const SPEC_PUBLIC_KEY: &str = "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI";

// --- canonical JSON ---------------------------------------------------------------------------

/// Arbitrary bytes as JSON: whatever parses as canonical JSON (no floats, integers within
/// ±(2^53 - 1)) must encode to the specification's canonical form, and parsing that again must give
/// the same value and the same text.
pub fn canonical_json(data: &[u8]) {
    let direct = serde_json::from_slice::<CanonicalJsonValue>(data);
    let via_value = serde_json::from_slice::<Value>(data)
        .map_err(|_| ())
        .and_then(|value| CanonicalJsonValue::try_from(value).map_err(|_| ()));
    // Parsing straight into canonical JSON (stored PDUs) and converting a parsed request body
    // (event content) accept the same documents and agree on them.
    let value = match (direct, via_value) {
        (Ok(direct), Ok(via_value)) => {
            assert_eq!(direct, via_value, "the two parsing paths disagree");
            direct
        }
        (Err(_), Err(())) => return,
        (direct, via_value) => panic!(
            "one parsing path accepts what the other refuses: direct {:?}, via Value {:?}",
            direct.is_ok(),
            via_value.is_ok()
        ),
    };
    let encoded = match serde_json::to_string(&value) {
        Ok(encoded) => encoded,
        Err(e) => panic!("a canonical JSON value does not serialise: {e}"),
    };
    assert_eq!(
        encoded,
        canonical_reference(&value),
        "the encoding is not the canonical form"
    );
    assert_eq!(encoded, value.to_string(), "Display differs from serde");
    let reparsed = match serde_json::from_str::<CanonicalJsonValue>(&encoded) {
        Ok(reparsed) => reparsed,
        Err(e) => panic!("the canonical encoding does not parse again: {e}"),
    };
    assert_eq!(reparsed, value, "the value changed on a round trip");
    assert_eq!(
        serde_json::to_string(&reparsed).ok().as_deref(),
        Some(encoded.as_str()),
        "the encoding is not stable"
    );
}

/// The canonical form, written from the specification's rules (appendices, "Canonical JSON")
/// independently of serde_json: no insignificant whitespace, object keys in code point order,
/// integers in decimal, strings escaped only where JSON requires it, with the short escapes and
/// lower-case `\u00XX` for the other control characters.
fn canonical_reference(value: &CanonicalJsonValue) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &CanonicalJsonValue, out: &mut String) {
    match value {
        CanonicalJsonValue::Null => out.push_str("null"),
        CanonicalJsonValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        CanonicalJsonValue::Integer(i) => {
            let _ = write!(out, "{}", i64::from(*i));
        }
        CanonicalJsonValue::String(s) => write_string(s, out),
        CanonicalJsonValue::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        CanonicalJsonValue::Object(map) => {
            let mut entries: Vec<(&String, &CanonicalJsonValue)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.chars().cmp(b.chars()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

// --- PDUs -------------------------------------------------------------------------------------

/// Arbitrary bytes as a PDU in each room version we speak (1 to 12): event ID, content hash,
/// signature check, redaction, parsing, the stored form and the auth rules must never panic, and:
///
/// - redaction is idempotent and keeps the event ID (the reference hash covers the redacted
///   form; versions 1 and 2 keep the `event_id` field);
/// - signatures that verify still verify once the event is redacted;
/// - an event that parses is named as its version names events, survives the storage round
///   trip, and stays parseable once redacted.
pub fn pdu(data: &[u8]) {
    let Ok(object) = serde_json::from_slice::<CanonicalJsonObject>(data) else {
        return;
    };
    let keys = public_keys();
    for version in room_version::SUPPORTED {
        pdu_in_version(version, &object, &keys);
    }
}

/// The public keys the `pdu` target verifies with.
pub fn public_keys() -> PublicKeyMap {
    let mut servers = BTreeMap::new();
    if let Ok(key) = Base64::<Standard>::parse(SPEC_PUBLIC_KEY) {
        // `domain` signs the specification's own test vectors.
        for server in [PDU_SERVER, "domain"] {
            servers.insert(
                server.to_owned(),
                BTreeMap::from([("ed25519:1".to_owned(), key.clone())]),
            );
        }
    }
    servers
}

fn pdu_in_version(version: &RoomVersionId, object: &CanonicalJsonObject, keys: &PublicKeyMap) {
    let event_id = pdu::event_id(version, object);
    let _ = ruma::signatures::content_hash(object);
    let verified = pdu::verify_event(version, object, keys);
    let Ok(redacted) = pdu::redact(version, object.clone()) else {
        assert!(
            pdu::reference_event_id(version, object).is_err(),
            "an event that cannot be redacted has a reference hash"
        );
        return;
    };
    assert_eq!(
        pdu::redact(version, redacted.clone()).ok().as_ref(),
        Some(&redacted),
        "redaction is not idempotent"
    );
    let redacted_id = pdu::event_id(version, &redacted);
    assert_eq!(
        event_id.as_ref().ok(),
        redacted_id.as_ref().ok(),
        "redaction changed the event ID"
    );
    if verified.is_ok() {
        let rules = room_version::rules(version).map(|rules| rules.signatures);
        let required = |object: &CanonicalJsonObject| {
            let rules = rules.as_ref().ok()?;
            required_server_signatures_to_verify_event(object, rules).ok()
        };
        // Redaction can change whose signatures are required (a version 10 invite loses its
        // `third_party_invite`); where it does not, the same signatures must still hold.
        if required(object) == required(&redacted) {
            assert!(
                pdu::verify_event(version, &redacted, keys).is_ok(),
                "signatures that verify fail once the event is redacted"
            );
        }
    }

    let Ok(parsed) = Pdu::from_federation(version.clone(), object.clone()) else {
        return;
    };
    assert_eq!(
        Some(parsed.event_id()),
        event_id.as_deref().ok(),
        "the parsed event is not named by its event ID"
    );
    let stored = match serde_json::to_vec(&parsed) {
        Ok(stored) => stored,
        Err(e) => panic!("a parsed event does not serialise for storage: {e}"),
    };
    match serde_json::from_slice::<Pdu>(&stored) {
        Ok(loaded) => {
            assert_eq!(loaded.event_id(), parsed.event_id());
            assert_eq!(loaded.json(), parsed.json());
        }
        Err(e) => panic!("a stored event does not load again: {e}"),
    }
    match parsed.redacted() {
        Ok(stripped) => {
            assert_eq!(stripped.event_id(), parsed.event_id());
            assert_eq!(stripped.json(), &redacted);
        }
        Err(e) => panic!("a parsed event does not parse once redacted: {e}"),
    }
    let _ = parsed.state_entry();
    let _ = auth::auth_types(
        version,
        parsed.kind(),
        parsed.sender(),
        parsed.state_key(),
        parsed.content(),
    );
    let fetch = |id: &EventId| (id == parsed.event_id()).then(|| parsed.clone());
    let _ = auth::auth_events_state(&parsed, fetch);
    let _ = auth::check(&parsed, &StateMap::new(), fetch);
}

// --- sync tokens ------------------------------------------------------------------------------

/// Arbitrary strings as stream tokens (`since`, `from`, `to`): parsing never panics, refuses with
/// a 400 error, and every position's token parses back to it.
pub fn sync_token(data: &[u8]) {
    if let Ok(raw) = std::str::from_utf8(data) {
        match parse_token(raw) {
            Ok(position) => {
                let canonical = token(position);
                assert_eq!(
                    parse_token(&canonical).ok(),
                    Some(position),
                    "the token of a parsed position does not parse back"
                );
            }
            Err(crate::error::Error::InvalidParam(_)) => {}
            Err(other) => panic!("a bad token gives another error than 400: {other:?}"),
        }
    }
    let mut bytes = [0u8; 8];
    for (slot, byte) in bytes.iter_mut().zip(data) {
        *slot = *byte;
    }
    let position = u64::from_le_bytes(bytes);
    assert_eq!(
        parse_token(&token(position)).ok(),
        Some(position),
        "a token does not round-trip"
    );
}

// --- filters ----------------------------------------------------------------------------------

/// Arbitrary bytes as a filter, optionally followed by a NUL byte and an event (JSON): a whole
/// filter (`POST /user/{userId}/filter`, `/sync`) and a room event filter (`/messages`,
/// `/context`) parse or refuse without panicking; a stored filter loads back unchanged; applying
/// it to the event agrees with a reference glob matcher, and `event_fields` only keeps what the
/// event has.
pub fn filter(data: &[u8]) {
    let (filter_bytes, event_bytes) = match data.iter().position(|b| *b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let events: Vec<Value> = match event_bytes.map(serde_json::from_slice::<Value>) {
        Some(Ok(event)) => vec![event],
        Some(Err(_)) => return,
        None => sample_events(),
    };
    if let Ok(filter) = serde_json::from_slice::<Filter>(filter_bytes) {
        whole_filter(&filter, &events);
    }
    if let Ok(room_filter) = serde_json::from_slice::<RoomEventFilter>(filter_bytes) {
        for event in &events {
            event_filter(&room_filter, event);
        }
    }
}

fn sample_events() -> Vec<Value> {
    vec![
        serde_json::json!({
            "type": "m.room.message",
            "room_id": "!room:roost.test",
            "sender": "@alice:roost.test",
            "event_id": "$event",
            "origin_server_ts": 1,
            "content": { "msgtype": "m.image", "body": "cat.png", "url": "mxc://roost.test/cat",
                "m.relates_to": { "rel_type": "m.thread", "event_id": "$root" } },
            "unsigned": { "age": 5 },
        }),
        serde_json::json!({
            "type": "m.room.member",
            "state_key": "@bob:roost.test",
            "room_id": "!other:roost.test",
            "sender": "@bob:roost.test",
            "content": { "membership": "join", "displayname": "Bob" },
        }),
    ]
}

fn whole_filter(filter: &Filter, events: &[Value]) {
    let valid = filter.validate();
    // A stored filter is serialised and read back on every `/sync` that names it.
    let stored = match serde_json::to_vec(filter) {
        Ok(stored) => stored,
        Err(e) => panic!("a filter does not serialise: {e}"),
    };
    let loaded = match serde_json::from_slice::<Filter>(&stored) {
        Ok(loaded) => loaded,
        Err(e) => panic!("a stored filter does not load again: {e}"),
    };
    assert_eq!(
        serde_json::to_vec(&loaded).ok().as_ref(),
        Some(&stored),
        "a stored filter changed on loading"
    );
    assert_eq!(loaded.validate().is_ok(), valid.is_ok());
    for event in events {
        let room_id = event["room_id"].as_str().unwrap_or("");
        let _ = filter.room.includes_room(room_id);
        for part in [
            &filter.presence,
            &filter.account_data,
            &filter.room.timeline,
            &filter.room.state,
            &filter.room.ephemeral,
            &filter.room.account_data,
        ] {
            event_filter(part, event);
        }
        if valid.is_ok()
            && let Some(fields) = &filter.event_fields
        {
            let kept = apply_event_fields(event, fields);
            assert!(
                kept_from(&kept, event),
                "event_fields kept something the event does not have: {kept}"
            );
        }
    }
}

fn event_filter(filter: &RoomEventFilter, event: &Value) {
    let room_id = event["room_id"].as_str().unwrap_or("");
    let sender = event["sender"].as_str().unwrap_or("");
    let kind = event["type"].as_str().unwrap_or("");
    let has_url = event["content"].get("url").is_some();
    let _ = filter.matches(room_id, sender, kind, has_url);
    // Each type pattern on its own, against the reference matcher.
    for pattern in filter.types.iter().flatten().chain(filter.not_types.iter()) {
        let single = RoomEventFilter {
            types: Some(vec![pattern.clone()]),
            ..RoomEventFilter::default()
        };
        assert_eq!(
            single.matches(room_id, sender, kind, has_url),
            glob_reference(pattern, kind),
            "type pattern {pattern:?} against {kind:?}"
        );
    }
}

/// `*` matches any run of characters, by dynamic programming over (pattern, value) prefixes.
fn glob_reference(pattern: &str, value: &str) -> bool {
    let value: Vec<char> = value.chars().collect();
    // matched[j]: the pattern so far matches the first j characters of the value.
    let mut matched = vec![false; value.len() + 1];
    matched[0] = true;
    for p in pattern.chars() {
        let mut next = vec![false; value.len() + 1];
        if p == '*' {
            let mut reachable = false;
            for (j, slot) in next.iter_mut().enumerate() {
                reachable |= matched[j];
                *slot = reachable;
            }
        } else {
            for j in 1..=value.len() {
                next[j] = matched[j - 1] && value[j - 1] == p;
            }
        }
        matched = next;
    }
    matched[value.len()]
}

/// Whether everything in `kept` is in `event`: each value equal to the event's at the same path,
/// or an object holding only such values, and never an object the event does not have there.
fn kept_from(kept: &Value, event: &Value) -> bool {
    match (kept, event) {
        (Value::Object(kept), Value::Object(event)) => kept.iter().all(|(key, value)| {
            event.get(key).is_some_and(|original| {
                value == original
                    || (matches!(value, Value::Object(inner) if !inner.is_empty())
                        && kept_from(value, original))
            })
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_glob() {
        assert!(glob_reference("m.room.*", "m.room.message"));
        assert!(glob_reference("*", ""));
        assert!(glob_reference("a*b*c", "aXbYc"));
        assert!(!glob_reference("a*b", "ab c"));
        assert!(!glob_reference("", "x"));
    }

    #[test]
    fn reference_encoding() {
        let value: CanonicalJsonValue =
            serde_json::from_str(r#"{"b":[1,-2,"\u0001\n é"],"a":{"é":null,"z":true}}"#).unwrap();
        assert_eq!(
            canonical_reference(&value),
            r#"{"a":{"z":true,"é":null},"b":[1,-2,"\u0001\n é"]}"#
        );
    }

    #[test]
    fn spec_vector_verifies() {
        let event: CanonicalJsonObject = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/pdu/spec-vector"
        )))
        .unwrap();
        let verified = pdu::verify_event(&RoomVersionId::V10, &event, &public_keys()).unwrap();
        assert_eq!(verified, ruma::signatures::Verified::All);
    }
}
