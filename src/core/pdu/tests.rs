use std::collections::BTreeMap;

use base64::Engine as _;
use ruma::{
    CanonicalJsonObject, RoomVersionId, event_id, owned_room_id, owned_user_id, serde::Base64,
    server_name, signatures::Verified,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::*;
use crate::core::test_support::{SERVER, spec_key};

fn object(value: serde_json::Value) -> CanonicalJsonObject {
    serde_json::from_value(value).unwrap()
}

fn ts(ms: u32) -> MilliSecondsSinceUnixEpoch {
    MilliSecondsSinceUnixEpoch(UInt::from(ms))
}

/// A message template in a `!opaque:roost.test` room.
fn message(content: serde_json::Value) -> EventTemplate {
    EventTemplate {
        room_id: Some(owned_room_id!("!opaque:roost.test")),
        sender: owned_user_id!("@alice:roost.test"),
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content,
        prev_events: vec![event_id!("$prev").to_owned()],
        auth_events: vec![event_id!("$auth").to_owned()],
        depth: UInt::from(2u32),
        origin_server_ts: ts(1_234),
        redacts: None,
    }
}

fn build(version: RoomVersionId, template: EventTemplate) -> Result<Pdu, Error> {
    build_event(&version, template, server_name!("roost.test"), &spec_key())
}

fn sha256_b64url(canonical: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

// --- Spec test vectors (appendices, "Cryptographic Test Vectors") ---------------------------

#[test]
fn json_signing_vectors() {
    let key = spec_key();
    let mut empty = CanonicalJsonObject::new();
    ruma::signatures::sign_json("domain", &key, &mut empty).unwrap();
    assert_eq!(
        serde_json::to_value(&empty).unwrap(),
        json!({"signatures": {"domain": {"ed25519:1":
            "K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ"}}})
    );

    let mut data = object(json!({"one": 1, "two": "Two"}));
    ruma::signatures::sign_json("domain", &key, &mut data).unwrap();
    assert_eq!(
        serde_json::to_value(&data).unwrap(),
        json!({"one": 1, "two": "Two", "signatures": {"domain": {"ed25519:1":
            "KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw"}}})
    );
}

fn minimal_event() -> CanonicalJsonObject {
    object(json!({
        "room_id": "!x:domain",
        "sender": "@a:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "signatures": {},
        "hashes": {},
        "type": "X",
        "content": {},
        "prev_events": [],
        "auth_events": [],
        "depth": 3,
        "unsigned": {"age_ts": 1000000}
    }))
}

/// The vectors predate room version 11, whose redaction drops the top-level `origin`: with
/// version 10 rules they hold exactly.
#[test]
fn minimal_event_signing_vector() {
    let mut event = minimal_event();
    hash_and_sign(
        &RoomVersionId::V10,
        server_name!("domain"),
        &spec_key(),
        &mut event,
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({
            "auth_events": [],
            "content": {},
            "depth": 3,
            "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
            "origin": "domain",
            "origin_server_ts": 1000000,
            "prev_events": [],
            "room_id": "!x:domain",
            "sender": "@a:domain",
            "signatures": {"domain": {"ed25519:1":
                "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},
            "type": "X",
            "unsigned": {"age_ts": 1000000}
        })
    );
}

#[test]
fn redactable_event_signing_vector() {
    let mut event = object(json!({
        "content": {"body": "Here is the message content"},
        "event_id": "$0:domain",
        "origin": "domain",
        "origin_server_ts": 1000000,
        "type": "m.room.message",
        "room_id": "!r:domain",
        "sender": "@u:domain",
        "signatures": {},
        "unsigned": {"age_ts": 1000000}
    }));
    hash_and_sign(
        &RoomVersionId::V10,
        server_name!("domain"),
        &spec_key(),
        &mut event,
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        json!({
            "content": {"body": "Here is the message content"},
            "event_id": "$0:domain",
            "hashes": {"sha256": "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"},
            "origin": "domain",
            "origin_server_ts": 1000000,
            "type": "m.room.message",
            "room_id": "!r:domain",
            "sender": "@u:domain",
            "signatures": {"domain": {"ed25519:1":
                "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"}},
            "unsigned": {"age_ts": 1000000}
        })
    );
}

/// The content hash does not depend on the room version, the signature does (v11 no longer
/// protects `origin`).
#[test]
fn v11_signs_a_different_redacted_form() {
    let mut event = minimal_event();
    hash_and_sign(
        &RoomVersionId::V11,
        server_name!("domain"),
        &spec_key(),
        &mut event,
    )
    .unwrap();
    assert_eq!(
        event["hashes"],
        CanonicalJsonValue::Object(object(
            json!({"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"})
        ))
    );
    assert_ne!(
        event["signatures"],
        CanonicalJsonValue::Object(object(json!({"domain": {"ed25519:1":
            "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}})))
    );
}

/// The event ID is `$` + URL-safe unpadded base64 of the SHA-256 of the redacted event without
/// `signatures` and `unsigned`, as canonical JSON; computed here by hand.
#[test]
fn event_id_is_the_reference_hash() {
    let mut event = minimal_event();
    hash_and_sign(
        &RoomVersionId::V10,
        server_name!("domain"),
        &spec_key(),
        &mut event,
    )
    .unwrap();

    let v10 = r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin":"domain","origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}"#;
    let id = reference_event_id(&RoomVersionId::V10, &event).unwrap();
    assert_eq!(id.as_str(), format!("${}", sha256_b64url(v10)));

    // Room version 11 redaction drops `origin` before hashing.
    let v11 = r#"{"auth_events":[],"content":{},"depth":3,"hashes":{"sha256":"5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},"origin_server_ts":1000000,"prev_events":[],"room_id":"!x:domain","sender":"@a:domain","type":"X"}"#;
    let id = reference_event_id(&RoomVersionId::V11, &event).unwrap();
    assert_eq!(id.as_str(), format!("${}", sha256_b64url(v11)));
}

// --- build_event -----------------------------------------------------------------------------

fn public_keys() -> ruma::signatures::PublicKeyMap {
    let key = Base64::new(spec_key().public_key().to_vec());
    BTreeMap::from([(
        SERVER.to_owned(),
        BTreeMap::from([("ed25519:1".to_owned(), key)]),
    )])
}

#[test]
fn built_events_are_hashed_signed_and_named_by_their_reference_hash() {
    for version in [RoomVersionId::V10, RoomVersionId::V11] {
        let pdu = build(
            version.clone(),
            message(json!({"body": "hi", "msgtype": "m.text"})),
        )
        .unwrap();
        let rules = version.rules().unwrap();
        let verified = ruma::signatures::verify_event(&public_keys(), pdu.json(), &rules).unwrap();
        assert_eq!(verified, Verified::All);
        assert_eq!(
            pdu.event_id(),
            reference_event_id(&version, pdu.json()).unwrap()
        );
        // Federation format: no event ID, no unsigned; `origin` only where redaction keeps it.
        for absent in ["event_id", "unsigned", "redacts"] {
            assert!(!pdu.json().contains_key(absent), "{absent}");
        }
        let origin = pdu
            .json()
            .get("origin")
            .and_then(CanonicalJsonValue::as_str);
        match version {
            RoomVersionId::V10 => assert_eq!(origin, Some("roost.test")),
            _ => assert_eq!(origin, None),
        }
        assert_eq!(pdu.room_id(), "!opaque:roost.test");
        assert_eq!(pdu.sender(), "@alice:roost.test");
        assert_eq!(*pdu.kind(), TimelineEventType::RoomMessage);
        assert_eq!(pdu.content().get(), r#"{"body":"hi","msgtype":"m.text"}"#);
        assert_eq!(pdu.prev_events(), [event_id!("$prev").to_owned()]);
        assert_eq!(pdu.auth_events(), [event_id!("$auth").to_owned()]);
        assert_eq!(pdu.depth(), UInt::from(2u32));
        assert_eq!(pdu.origin_server_ts(), ts(1_234));
        assert_eq!(pdu.state_key(), None);
        assert!(!pdu.rejected());
        // Receiving it over federation names it the same.
        let received = Pdu::from_federation(version, pdu.json().clone()).unwrap();
        assert_eq!(received.event_id(), pdu.event_id());
    }
}

fn v12_create() -> Pdu {
    build(
        RoomVersionId::V12,
        EventTemplate {
            room_id: None,
            kind: TimelineEventType::RoomCreate,
            state_key: Some(String::new()),
            content: json!({"room_version": "12"}),
            prev_events: vec![],
            auth_events: vec![],
            ..message(json!({}))
        },
    )
    .unwrap()
}

#[test]
fn v12_create_event_names_the_room() {
    let create = v12_create();
    assert!(!create.json().contains_key("room_id"));
    assert_eq!(
        create.room_id().as_str(),
        format!("!{}", create.event_id().as_str().trim_start_matches('$'))
    );
    assert_eq!(
        create.room_id(),
        room_id_from_create_event_id(create.event_id()).unwrap()
    );
    // What the auth rules see: no room ID on the create event.
    assert_eq!(ruma::state_res::Event::room_id(&create), None);

    // Later events carry the derived room ID.
    let message = build(
        RoomVersionId::V12,
        EventTemplate {
            room_id: Some(create.room_id().to_owned()),
            ..message(json!({"body": "first"}))
        },
    )
    .unwrap();
    assert_eq!(message.room_id(), create.room_id());
    assert_eq!(
        ruma::state_res::Event::room_id(&message),
        Some(create.room_id())
    );
}

#[test]
fn room_id_must_fit_the_room_version() {
    let v12_create_with_room_id = EventTemplate {
        kind: TimelineEventType::RoomCreate,
        state_key: Some(String::new()),
        ..message(json!({}))
    };
    assert!(matches!(
        build(RoomVersionId::V12, v12_create_with_room_id.clone()),
        Err(Error::InvalidField {
            field: "room_id",
            ..
        })
    ));
    let v11_create_without = EventTemplate {
        room_id: None,
        ..v12_create_with_room_id
    };
    assert!(matches!(
        build(RoomVersionId::V11, v11_create_without),
        Err(Error::MissingField("room_id"))
    ));
    // A `!opaque:server` ID in a version 12 room, a `!hash` one in a version 11 room.
    assert!(matches!(
        build(RoomVersionId::V12, message(json!({}))),
        Err(Error::InvalidField {
            field: "room_id",
            ..
        })
    ));
    let hashed = EventTemplate {
        room_id: Some(v12_create().room_id().to_owned()),
        ..message(json!({}))
    };
    assert!(matches!(
        build(RoomVersionId::V11, hashed),
        Err(Error::InvalidField {
            field: "room_id",
            ..
        })
    ));
}

#[test]
fn templates_are_validated() {
    let foreign_sender = EventTemplate {
        sender: owned_user_id!("@mallory:elsewhere.test"),
        ..message(json!({}))
    };
    assert!(matches!(
        build(RoomVersionId::V11, foreign_sender),
        Err(Error::InvalidField {
            field: "sender",
            ..
        })
    ));
    assert!(matches!(
        build(RoomVersionId::V11, message(json!(["not", "an", "object"]))),
        Err(Error::InvalidField {
            field: "content",
            ..
        })
    ));
    assert!(matches!(
        build(RoomVersionId::V11, message(json!({"float": 1.5}))),
        Err(Error::CanonicalJson(_))
    ));
    let stray_redacts = EventTemplate {
        redacts: Some(event_id!("$target").to_owned()),
        ..message(json!({}))
    };
    assert!(matches!(
        build(RoomVersionId::V11, stray_redacts),
        Err(Error::InvalidField {
            field: "redacts",
            ..
        })
    ));
    let too_many_prev = EventTemplate {
        prev_events: vec![event_id!("$prev").to_owned(); MAX_PREV_EVENTS + 1],
        ..message(json!({}))
    };
    assert!(matches!(
        build(RoomVersionId::V11, too_many_prev),
        Err(Error::InvalidField {
            field: "prev_events",
            ..
        })
    ));
    let custom = RoomVersionId::try_from("org.example.custom").unwrap();
    assert!(matches!(
        build(custom.clone(), message(json!({}))),
        Err(Error::UnsupportedRoomVersion(v)) if v == custom
    ));
}

// --- Size limit ------------------------------------------------------------------------------

/// A message whose signed canonical JSON is exactly `size` bytes.
fn message_of_size(size: usize) -> Result<Pdu, Error> {
    let probe = build(RoomVersionId::V11, message(json!({"body": ""}))).unwrap();
    let overhead = canonical_size(probe.json()).unwrap();
    let body = "x".repeat(size - overhead);
    build(RoomVersionId::V11, message(json!({ "body": body })))
}

#[test]
fn size_limit_is_65536_bytes_of_signed_canonical_json() {
    let largest = message_of_size(MAX_PDU_BYTES).unwrap();
    assert_eq!(canonical_size(largest.json()).unwrap(), MAX_PDU_BYTES);
    assert!(matches!(
        message_of_size(MAX_PDU_BYTES + 1),
        Err(Error::TooLarge { size }) if size == MAX_PDU_BYTES + 1
    ));
    // Far too large: ruma's own check (while hashing) fires first, same error.
    let huge = message(json!({"body": "x".repeat(100_000)}));
    assert!(matches!(
        build(RoomVersionId::V11, huge),
        Err(Error::TooLarge { size }) if size > MAX_PDU_BYTES
    ));
}

// --- Redaction -------------------------------------------------------------------------------

fn state_event(kind: TimelineEventType, content: serde_json::Value) -> EventTemplate {
    EventTemplate {
        kind,
        state_key: Some(String::new()),
        ..message(content)
    }
}

fn redacted_content(version: RoomVersionId, template: EventTemplate) -> serde_json::Value {
    let pdu = build(version, template).unwrap();
    let redacted = pdu.redacted().unwrap();
    // Redaction keeps the reference hash, hence the event ID, and the signatures valid.
    assert_eq!(redacted.event_id(), pdu.event_id());
    assert_eq!(
        reference_event_id(pdu.room_version(), redacted.json()).unwrap(),
        pdu.event_id()
    );
    serde_json::from_str(redacted.content().get()).unwrap()
}

#[test]
fn redaction_follows_the_room_version() {
    let power_levels =
        json!({"ban": 50, "invite": 0, "users": {"@alice:roost.test": 100}, "other": 1});
    let pl = || state_event(TimelineEventType::RoomPowerLevels, power_levels.clone());
    assert_eq!(
        redacted_content(RoomVersionId::V10, pl()),
        json!({"ban": 50, "users": {"@alice:roost.test": 100}})
    );
    assert_eq!(
        redacted_content(RoomVersionId::V11, pl()),
        json!({"ban": 50, "invite": 0, "users": {"@alice:roost.test": 100}})
    );

    let join_rules = || {
        state_event(
            TimelineEventType::RoomJoinRules,
            json!({"join_rule": "restricted", "allow": [], "extra": true}),
        )
    };
    for version in [RoomVersionId::V10, RoomVersionId::V11] {
        assert_eq!(
            redacted_content(version, join_rules()),
            json!({"join_rule": "restricted", "allow": []})
        );
    }

    let member = || EventTemplate {
        state_key: Some("@alice:roost.test".to_owned()),
        ..state_event(
            TimelineEventType::RoomMember,
            json!({"membership": "join", "displayname": "Alice"}),
        )
    };
    assert_eq!(
        redacted_content(RoomVersionId::V11, member()),
        json!({"membership": "join"})
    );

    let message = || message(json!({"body": "secret", "msgtype": "m.text"}));
    assert_eq!(redacted_content(RoomVersionId::V10, message()), json!({}));
    assert_eq!(redacted_content(RoomVersionId::V11, message()), json!({}));
}

#[test]
fn v11_keeps_the_whole_create_content() {
    let create = || EventTemplate {
        room_id: Some(owned_room_id!("!opaque:roost.test")),
        prev_events: vec![],
        auth_events: vec![],
        ..state_event(
            TimelineEventType::RoomCreate,
            json!({"creator": "@alice:roost.test", "room_version": "10", "m.federate": false}),
        )
    };
    assert_eq!(
        redacted_content(RoomVersionId::V10, create()),
        json!({"creator": "@alice:roost.test"})
    );
    assert_eq!(
        redacted_content(RoomVersionId::V11, create()),
        json!({"creator": "@alice:roost.test", "room_version": "10", "m.federate": false})
    );
}

fn redaction(version: RoomVersionId) -> Pdu {
    build(
        version,
        EventTemplate {
            kind: TimelineEventType::RoomRedaction,
            redacts: Some(event_id!("$target").to_owned()),
            ..message(json!({"reason": "spam"}))
        },
    )
    .unwrap()
}

#[test]
fn redacts_moves_into_content_in_v11() {
    let v10 = redaction(RoomVersionId::V10);
    assert_eq!(v10.json()["redacts"].as_str(), Some("$target"));
    assert_eq!(v10.content().get(), r#"{"reason":"spam"}"#);
    assert_eq!(v10.redacts(), Some(event_id!("$target")));
    // The top-level `redacts` is not protected from redaction.
    let redacted = v10.redacted().unwrap();
    assert!(!redacted.json().contains_key("redacts"));
    assert_eq!(redacted.redacts(), None);

    let v11 = redaction(RoomVersionId::V11);
    assert!(!v11.json().contains_key("redacts"));
    assert_eq!(
        v11.content().get(),
        r#"{"reason":"spam","redacts":"$target"}"#
    );
    assert_eq!(v11.redacts(), Some(event_id!("$target")));
    // `content.redacts` is.
    let redacted = v11.redacted().unwrap();
    assert_eq!(redacted.content().get(), r#"{"redacts":"$target"}"#);
    assert_eq!(redacted.redacts(), Some(event_id!("$target")));
}

/// From version 11 on only `content.redacts` counts, whatever a top-level field says.
#[test]
fn v11_ignores_a_top_level_redacts() {
    let mut json = redaction(RoomVersionId::V11).into_json();
    json.insert("redacts".into(), "$other".to_owned().into());
    let pdu = Pdu::from_canonical(RoomVersionId::V11, event_id!("$x").to_owned(), json).unwrap();
    assert_eq!(pdu.redacts(), Some(event_id!("$target")));
}

#[test]
fn redact_function_strips_top_level_keys_per_version() {
    let event = minimal_event();
    let v10 = redact(&RoomVersionId::V10, event.clone()).unwrap();
    assert!(v10.contains_key("origin"));
    assert!(!v10.contains_key("unsigned"));
    let v11 = redact(&RoomVersionId::V11, event).unwrap();
    assert!(!v11.contains_key("origin"));
}

// --- Parsing and storage ---------------------------------------------------------------------

fn parse(mutate: impl FnOnce(&mut CanonicalJsonObject)) -> Result<Pdu, Error> {
    let mut json = build(RoomVersionId::V11, message(json!({"body": "hi"})))
        .unwrap()
        .into_json();
    mutate(&mut json);
    Pdu::from_canonical(RoomVersionId::V11, event_id!("$x").to_owned(), json)
}

#[test]
fn parsing_reports_typed_errors() {
    assert!(parse(|_| {}).is_ok());
    for field in [
        "type",
        "sender",
        "room_id",
        "content",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    ] {
        assert!(
            matches!(parse(|json| { json.remove(field); }), Err(Error::MissingField(f)) if f == field),
            "{field}"
        );
    }
    let cases: [(&str, serde_json::Value); 7] = [
        ("depth", json!(-1)),
        ("depth", json!("3")),
        ("sender", json!("not a user id")),
        ("content", json!("text")),
        ("prev_events", json!([1])),
        ("auth_events", json!(["no sigil"])),
        ("state_key", json!(7)),
    ];
    for (field, value) in cases {
        let value: CanonicalJsonValue = value.try_into().unwrap();
        let result = parse(|json| {
            json.insert(field.to_owned(), value);
        });
        assert!(
            matches!(result, Err(Error::InvalidField { field: f, .. }) if f == field),
            "{field}: {result:?}"
        );
    }
}

#[test]
fn storage_round_trip_keeps_everything() {
    let pdu = redaction(RoomVersionId::V11).with_rejected(true);
    let stored = serde_json::to_string(&pdu).unwrap();
    let loaded: Pdu = serde_json::from_str(&stored).unwrap();
    assert_eq!(loaded.json(), pdu.json());
    assert_eq!(loaded.event_id(), pdu.event_id());
    assert_eq!(loaded.room_version(), &RoomVersionId::V11);
    assert_eq!(loaded.redacts(), pdu.redacts());
    assert!(loaded.rejected());

    let mut broken: serde_json::Value = serde_json::from_str(&stored).unwrap();
    broken["pdu"].as_object_mut().unwrap().remove("sender");
    assert!(serde_json::from_value::<Pdu>(broken).is_err());
}

#[test]
fn debug_output_leaves_the_content_out() {
    let pdu = build(RoomVersionId::V11, message(json!({"body": "secret"}))).unwrap();
    let debug = format!("{pdu:?}");
    assert!(debug.contains(pdu.event_id().as_str()));
    assert!(!debug.contains("secret"));
}
