//! Every room version family: event format (parsing, references), event IDs, building from a
//! resident server's template, redaction and the auth rules, for rooms we join but never create.

use std::collections::BTreeMap;

use base64::Engine as _;
use ruma::{
    CanonicalJsonObject, OwnedUserId, RoomVersionId, ServerName, UserId, owned_room_id,
    owned_user_id, serde::Base64, server_name, signatures::Verified,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::*;
use crate::core::{
    auth,
    test_support::{SERVER, TestRoom, key_from_seed, spec_key, user},
};

/// The server that joins rooms in these tests, and its signing key.
const JOINING: &str = "joining.test";
const JOINING_SEED: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWY";

/// One version of each family: 1 (IDs in the event, references with hashes, state resolution
/// v1), 3 (reference-hash IDs in standard base64), 4 and 6 (URL-safe IDs; v6 redaction and
/// stricter auth), 8 and 9 (restricted join rules, their redaction), 10 (integer power levels),
/// 11 (new redaction, creator from the sender), 12 (room ID from the create event).
const FAMILIES: [RoomVersionId; 9] = [
    RoomVersionId::V1,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V6,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

fn alice() -> OwnedUserId {
    user("alice")
}

fn bob() -> OwnedUserId {
    user("bob")
}

fn rules_of(version: &RoomVersionId) -> RoomVersionRules {
    version.rules().unwrap()
}

fn object(value: Value) -> CanonicalJsonObject {
    serde_json::from_value(value).unwrap()
}

fn public_keys(server: &str, key: &ruma::signatures::Ed25519KeyPair) -> PublicKeyMap {
    let public = Base64::new(key.public_key().to_vec());
    BTreeMap::from([(
        server.to_owned(),
        BTreeMap::from([("ed25519:1".to_owned(), public)]),
    )])
}

/// Power levels with alice at 100 (implicit for a version 12 creator) plus `users`.
fn power_levels(version: &RoomVersionId, users: Value) -> Value {
    let mut users = users;
    if !rules_of(version)
        .authorization
        .explicitly_privilege_room_creators
    {
        users[alice().as_str()] = json!(100);
    }
    json!({"users": users, "state_default": 50, "invite": 0})
}

/// A room of alice's with power levels, the given join rules, and bob joined (when public).
fn room(version: &RoomVersionId, join_rules: Value) -> TestRoom {
    let mut room = TestRoom::new(version.clone(), &alice());
    let content = power_levels(version, json!({}));
    room.send(&alice(), "m.room.power_levels", Some(""), content)
        .unwrap();
    let public = json!({"join_rule": "public"});
    room.send(&alice(), "m.room.join_rules", Some(""), public)
        .unwrap();
    join(&mut room, &bob(), json!({"membership": "join"})).unwrap();
    room.send(&alice(), "m.room.join_rules", Some(""), join_rules)
        .unwrap();
    room
}

fn join(room: &mut TestRoom, who: &UserId, content: Value) -> Result<OwnedEventId, Error> {
    room.send(who, "m.room.member", Some(who.as_str()), content)
}

fn say(room: &mut TestRoom, who: &UserId, body: &str) -> Result<OwnedEventId, Error> {
    room.send(who, "m.room.message", None, json!({ "body": body }))
}

/// `$` + the SHA-256 of the redacted event without `signatures` and `unsigned`, as canonical
/// JSON, in the alphabet of the room version: computed by hand.
fn hand_made_reference_hash(version: &RoomVersionId, json: &CanonicalJsonObject) -> String {
    let mut redacted = redact(version, json.clone()).unwrap();
    redacted.remove("signatures");
    redacted.remove("unsigned");
    let canonical = serde_json::to_string(&redacted).unwrap();
    let hash = Sha256::digest(canonical.as_bytes());
    match version {
        RoomVersionId::V1 | RoomVersionId::V2 | RoomVersionId::V3 => {
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
        }
        _ => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash),
    }
}

fn paired_references(version: &RoomVersionId) -> bool {
    matches!(version, RoomVersionId::V1 | RoomVersionId::V2)
}

// --- Events of every version -----------------------------------------------------------------

#[test]
fn every_version_builds_names_parses_stores_and_authorises_events() {
    for version in room_version::SUPPORTED {
        let mut room = room(version, json!({"join_rule": "public"}));
        let message_id = say(&mut room, &bob(), "hello").unwrap();
        let pdu = room.get(&message_id).unwrap().clone();
        let json = pdu.json();

        // Named as the version names events.
        if paired_references(version) {
            assert_eq!(json["event_id"].as_str(), Some(message_id.as_str()));
            assert_eq!(message_id.server_name().map(|s| s.as_str()), Some(SERVER));
            assert!(reference_event_id(version, json).is_err(), "{version}");
        } else {
            assert!(!json.contains_key("event_id"), "{version}");
            let expected = format!("${}", hand_made_reference_hash(version, json));
            assert_eq!(message_id.as_str(), expected, "{version}");
        }
        assert_eq!(event_id(version, json).unwrap(), message_id, "{version}");

        // References in the version's format, read back as IDs.
        let prev = &json["prev_events"].as_array().unwrap()[0];
        let prev_id = &pdu.prev_events()[0];
        if paired_references(version) {
            let referenced = room.get(prev_id).unwrap();
            let expected = json!([prev_id, {"sha256": referenced.reference_hash().unwrap()}]);
            assert_eq!(serde_json::to_value(prev).unwrap(), expected, "{version}");
            assert_eq!(
                referenced.reference_hash().unwrap(),
                hand_made_reference_hash(version, referenced.json()),
            );
        } else {
            assert_eq!(prev.as_str(), Some(prev_id.as_str()), "{version}");
        }

        // Signed so that peers verify it; `origin` where redaction still protects it.
        let verified = ruma::signatures::verify_event(
            &public_keys(SERVER, &spec_key()),
            json,
            &rules_of(version),
        );
        assert_eq!(verified.unwrap(), Verified::All, "{version}");
        let has_origin = json.get("origin").and_then(CanonicalJsonValue::as_str) == Some(SERVER);
        assert_eq!(
            has_origin,
            rules_of(version)
                .redaction
                .keep_origin_membership_prev_state
        );

        // Received over federation: the same event.
        let received = Pdu::from_federation(version.clone(), json.clone()).unwrap();
        assert_eq!(received.event_id(), pdu.event_id(), "{version}");
        assert_eq!(received.prev_events(), pdu.prev_events());
        assert_eq!(received.auth_events(), pdu.auth_events());

        // Stored and loaded: the same event, `event_id` field included in versions 1 and 2.
        let stored = serde_json::to_string(&pdu).unwrap();
        let loaded: Pdu = serde_json::from_str(&stored).unwrap();
        assert_eq!(loaded.json(), pdu.json(), "{version}");
        assert_eq!(loaded.event_id(), pdu.event_id());
        assert_eq!(loaded.room_version(), version);

        // Redacted: same ID, still parseable as received.
        let redacted = pdu.redacted().unwrap();
        assert_eq!(redacted.event_id(), pdu.event_id());
        let received = Pdu::from_federation(version.clone(), redacted.into_json()).unwrap();
        assert_eq!(received.event_id(), pdu.event_id(), "{version}");

        // The auth rules apply: someone who never joined may not speak.
        assert!(
            matches!(
                say(&mut room, &user("carol"), "hi"),
                Err(Error::Unauthorized(_))
            ),
            "{version}"
        );
        let fetch = |id: &EventId| room.get(id);
        auth::check(&pdu, &room.main.state, fetch).unwrap();
    }
}

#[test]
fn version_3_uses_standard_base64_and_version_4_url_safe() {
    // Over enough events, standard base64 shows `+` or `/` and URL-safe `-` or `_`.
    for (version, standard) in [(RoomVersionId::V3, true), (RoomVersionId::V4, false)] {
        let mut room = room(&version, json!({"join_rule": "public"}));
        let ids: String = (0..40)
            .map(|i| say(&mut room, &bob(), &i.to_string()).unwrap().to_string())
            .collect();
        assert_eq!(ids.contains(['+', '/']), standard, "{version}");
        assert_eq!(ids.contains(['-', '_']), !standard, "{version}");
    }
}

#[test]
fn versions_1_and_2_need_the_referenced_events_to_build() {
    let room = room(&RoomVersionId::V1, json!({"join_rule": "public"}));
    let template = room
        .template(&room.main, 9_000, &bob(), "m.room.message", None, json!({}))
        .unwrap();
    // Without a lookup, the reference hashes are unknown.
    let result = build_event(
        &RoomVersionId::V1,
        template,
        server_name!("roost.test"),
        &spec_key(),
    );
    assert!(matches!(result, Err(Error::EventNotFound(_))));
}

// --- Parsing: each version's format ----------------------------------------------------------

fn v1_message() -> CanonicalJsonObject {
    let mut room = room(&RoomVersionId::V1, json!({"join_rule": "public"}));
    let id = say(&mut room, &bob(), "hi").unwrap();
    room.get(&id).unwrap().json().clone()
}

fn v4_message() -> CanonicalJsonObject {
    let mut room = room(&RoomVersionId::V4, json!({"join_rule": "public"}));
    let id = say(&mut room, &bob(), "hi").unwrap();
    room.get(&id).unwrap().json().clone()
}

fn receive(
    version: RoomVersionId,
    json: &CanonicalJsonObject,
    mutate: impl FnOnce(&mut CanonicalJsonObject),
) -> Result<Pdu, Error> {
    let mut json = json.clone();
    mutate(&mut json);
    Pdu::from_federation(version, json)
}

fn set(json: &mut CanonicalJsonObject, field: &str, value: Value) {
    json.insert(field.to_owned(), value.try_into().unwrap());
}

#[test]
fn version_1_format_is_enforced() {
    let v1 = v1_message();
    assert!(receive(RoomVersionId::V1, &v1, |_| {}).is_ok());
    // The ID is in the event, and names its server.
    assert!(matches!(
        receive(RoomVersionId::V1, &v1, |json| {
            json.remove("event_id");
        }),
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    assert!(matches!(
        receive(RoomVersionId::V1, &v1, |json| set(
            json,
            "event_id",
            json!("$no_server")
        )),
        Err(Error::InvalidField {
            field: "event_id",
            ..
        })
    ));
    assert!(matches!(
        receive(RoomVersionId::V1, &v1, |json| set(
            json,
            "event_id",
            json!(7)
        )),
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    // References are [id, hashes] pairs. The hashes object is not checked (no rule uses it) and
    // may be empty: the reference homeserver sends `{}` when it holds no reference hash.
    let prev = v1["prev_events"].clone();
    let empty_hashes = receive(RoomVersionId::V1, &v1, |json| {
        set(json, "prev_events", json!([["$a:roost.test", {}]]))
    });
    assert!(
        !matches!(
            empty_hashes,
            Err(Error::InvalidField {
                field: "prev_events",
                ..
            })
        ),
        "{empty_hashes:?}"
    );
    let bad_references = [
        json!(["$a:roost.test"]),
        json!([["$a:roost.test"]]),
        json!([["$a:roost.test", {"sha256": "x"}, 3]]),
        json!([["$a:roost.test", "x"]]),
        json!([["$a:roost.test", null]]),
        json!([[7, {"sha256": "x"}]]),
        json!([["no sigil", {"sha256": "x"}]]),
    ];
    for bad in bad_references {
        let result = receive(RoomVersionId::V1, &v1, |json| {
            set(json, "prev_events", bad.clone())
        });
        assert!(
            matches!(
                result,
                Err(Error::InvalidField {
                    field: "prev_events",
                    ..
                })
            ),
            "{bad}: {result:?}"
        );
    }
    // The stored form must agree with the ID it is stored under.
    let other = OwnedEventId::try_from("$other:roost.test").unwrap();
    assert!(matches!(
        Pdu::from_canonical(RoomVersionId::V1, other, v1.clone()),
        Err(Error::InvalidField {
            field: "event_id",
            ..
        })
    ));
    // The same references are not the version 4 format.
    let result = receive(RoomVersionId::V4, &v1, |json| {
        json.remove("event_id");
        set(json, "prev_events", serde_json::to_value(&prev).unwrap());
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField {
            field: "prev_events",
            ..
        })
    ));
}

#[test]
fn later_formats_reference_by_id_and_check_sizes() {
    let v4 = v4_message();
    assert!(receive(RoomVersionId::V4, &v4, |_| {}).is_ok());
    let result = receive(RoomVersionId::V4, &v4, |json| {
        set(json, "prev_events", json!([["$a", {"sha256": "x"}]]));
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField {
            field: "prev_events",
            ..
        })
    ));
    // A version 4 event read as version 1 lacks its ID.
    assert!(receive(RoomVersionId::V1, &v4, |_| {}).is_err());
    // Limits of the event format: 20 prev events, a 255-byte state key, no negative depth.
    let too_many: Vec<String> = (0..21).map(|i| format!("$e{i}")).collect();
    let result = receive(RoomVersionId::V4, &v4, |json| {
        set(json, "prev_events", json!(too_many))
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    let result = receive(RoomVersionId::V4, &v4, |json| {
        set(json, "state_key", json!("k".repeat(256)));
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    let result = receive(RoomVersionId::V4, &v4, |json| set(json, "depth", json!(-1)));
    assert!(matches!(
        result,
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    let long_id = format!("${}", "e".repeat(MAX_ID_BYTES));
    let result = receive(RoomVersionId::V4, &v4, |json| {
        set(json, "auth_events", json!([long_id]))
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField {
            field: "auth_events",
            ..
        })
    ));
    let result = receive(RoomVersionId::V4, &v4, |json| {
        set(json, "content", json!({"body": "x".repeat(MAX_PDU_BYTES)}));
    });
    assert!(matches!(result, Err(Error::TooLarge { .. })));
}

// --- Templates from a resident server --------------------------------------------------------

/// A `make_join` answer's event for `who` as a resident server of `room` would send it: in the
/// version's format, with its own origin, hashes, signatures, `unsigned` and (for every version,
/// to see it replaced or dropped) an event ID.
fn join_template(room: &TestRoom, who: &UserId, content: Value) -> CanonicalJsonObject {
    let template = room
        .template(
            &room.main,
            5_000,
            who,
            "m.room.member",
            Some(who.as_str()),
            content.clone(),
        )
        .unwrap();
    let references = |ids: &[OwnedEventId]| -> Value {
        if paired_references(&room.version) {
            let pairs = ids
                .iter()
                .map(|id| json!([id, {"sha256": room.get(id).unwrap().reference_hash().unwrap()}]));
            Value::Array(pairs.collect())
        } else {
            json!(ids)
        }
    };
    object(json!({
        "room_id": room.room_id,
        "sender": who,
        "type": "m.room.member",
        "state_key": who,
        "content": content,
        "prev_events": references(&template.prev_events),
        "auth_events": references(&template.auth_events),
        "depth": template.depth,
        "origin": "resident.test",
        "origin_server_ts": 5_000,
        "event_id": "$resident:resident.test",
        "hashes": {"sha256": "not the hash"},
        "signatures": {"resident.test": {"ed25519:r": "not a signature"}},
        "unsigned": {"age": 3},
    }))
}

#[test]
fn templates_become_signed_events_of_ours_in_every_version() {
    let key = key_from_seed(JOINING_SEED);
    let joining = ServerName::parse(JOINING).unwrap();
    let dave = UserId::parse(format!("@dave:{JOINING}")).unwrap();
    for version in room_version::SUPPORTED {
        let room = room(version, json!({"join_rule": "public"}));
        let template = join_template(&room, &dave, json!({"membership": "join"}));
        let pdu = build_from_template(version, template.clone(), &joining, &key).unwrap();
        let json = pdu.json();

        assert_eq!(pdu.sender(), &*dave);
        assert_eq!(pdu.origin_server_ts().get(), UInt::from(5_000u32));
        assert!(!json.contains_key("unsigned"), "{version}");
        let origin = json.get("origin").and_then(CanonicalJsonValue::as_str);
        if rules_of(version)
            .redaction
            .keep_origin_membership_prev_state
        {
            assert_eq!(origin, Some(JOINING), "{version}");
        } else {
            assert_eq!(origin, None, "{version}");
        }
        // Our event ID (versions 1 and 2) or none (the reference hash names it).
        if paired_references(version) {
            assert_eq!(json["event_id"].as_str(), Some(pdu.event_id().as_str()));
            assert_eq!(pdu.event_id().server_name(), Some(&*joining));
        } else {
            assert!(!json.contains_key("event_id"), "{version}");
            assert_eq!(pdu.event_id(), reference_event_id(version, json).unwrap());
        }
        // Only our signature, and it verifies (with the event ID's server in versions 1, 2).
        let signatures = json["signatures"].as_object().unwrap();
        assert_eq!(
            signatures.keys().collect::<Vec<_>>(),
            [JOINING],
            "{version}"
        );
        let verified =
            ruma::signatures::verify_event(&public_keys(JOINING, &key), json, &rules_of(version));
        assert_eq!(verified.unwrap(), Verified::All, "{version}");
        // The references came through as the resident wrote them.
        assert_eq!(json["prev_events"], template["prev_events"], "{version}");
        assert_eq!(json["auth_events"], template["auth_events"], "{version}");

        // The resident accepts it: same ID on receipt, and the auth rules allow the join.
        let received = Pdu::from_federation(version.clone(), json.clone()).unwrap();
        assert_eq!(received.event_id(), pdu.event_id());
        auth::check(&received, &room.main.state, |id| room.get(id)).unwrap();

        // Without a timestamp, now.
        let mut undated = template.clone();
        undated.remove("origin_server_ts");
        let dated = build_from_template(version, undated, &joining, &key).unwrap();
        assert!(u64::from(dated.origin_server_ts().get()) > 1_600_000_000_000);
    }
}

#[test]
fn templates_are_checked_before_signing() {
    let key = key_from_seed(JOINING_SEED);
    let joining = ServerName::parse(JOINING).unwrap();
    let dave = UserId::parse(format!("@dave:{JOINING}")).unwrap();
    let v11 = room(&RoomVersionId::V11, json!({"join_rule": "public"}));
    let template = join_template(&v11, &dave, json!({"membership": "join"}));
    let build = |version: &RoomVersionId, mutate: &dyn Fn(&mut CanonicalJsonObject)| {
        let mut template = template.clone();
        mutate(&mut template);
        build_from_template(version, template, &joining, &key)
    };
    assert!(build(&RoomVersionId::V11, &|_| {}).is_ok());
    // Someone else's user: we would sign for another server.
    let result = build(&RoomVersionId::V11, &|t| {
        set(t, "sender", json!("@eve:elsewhere.test"))
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField {
            field: "sender",
            ..
        })
    ));
    let result = build(&RoomVersionId::V11, &|t| {
        t.remove("sender");
    });
    assert!(matches!(result, Err(Error::MissingField("sender"))));
    // A room ID of the wrong format for the version.
    let result = build(&RoomVersionId::V12, &|_| {});
    assert!(matches!(
        result,
        Err(Error::InvalidField {
            field: "room_id",
            ..
        })
    ));
    // References of the wrong format, too many, a content that is no object, no depth.
    let result = build(&RoomVersionId::V1, &|_| {});
    assert!(result.is_err());
    let too_many: Vec<String> = (0..21).map(|i| format!("$e{i}")).collect();
    let result = build(&RoomVersionId::V11, &|t| {
        set(t, "prev_events", json!(too_many))
    });
    assert!(matches!(
        result,
        Err(Error::InvalidField { field: "pdu", .. })
    ));
    let result = build(&RoomVersionId::V11, &|t| set(t, "content", json!("join")));
    assert!(result.is_err());
    let result = build(&RoomVersionId::V11, &|t| {
        t.remove("depth");
    });
    assert!(result.is_err());
    let result = build(&RoomVersionId::V11, &|t| {
        set(
            t,
            "content",
            json!({"membership": "join", "pad": "x".repeat(MAX_PDU_BYTES)}),
        );
    });
    assert!(matches!(result, Err(Error::TooLarge { .. })));
}

// --- Redaction of each family ----------------------------------------------------------------

/// A state event of alice's with no references (so that versions 1 and 2 build it too).
fn state_event(kind: &str, state_key: &str, content: Value) -> EventTemplate {
    EventTemplate {
        room_id: Some(owned_room_id!("!opaque:roost.test")),
        sender: owned_user_id!("@alice:roost.test"),
        kind: TimelineEventType::from(kind),
        state_key: Some(state_key.to_owned()),
        content,
        prev_events: vec![],
        auth_events: vec![],
        depth: UInt::from(3u32),
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(1_000u32)),
        redacts: None,
    }
}

fn redacted(version: &RoomVersionId, template: EventTemplate) -> (Value, CanonicalJsonObject) {
    let pdu = build_event(version, template, server_name!("roost.test"), &spec_key()).unwrap();
    let redacted = pdu.redacted().unwrap();
    assert_eq!(redacted.event_id(), pdu.event_id());
    let content = serde_json::from_str(redacted.content().get()).unwrap();
    (content, redacted.into_json())
}

#[test]
fn redaction_follows_each_family() {
    let aliases = || {
        state_event(
            "m.room.aliases",
            "roost.test",
            json!({"aliases": ["#a:roost.test"]}),
        )
    };
    let join_rules = || {
        state_event(
            "m.room.join_rules",
            "",
            json!({"join_rule": "restricted", "allow": [], "x": 1}),
        )
    };
    let member = || {
        state_event(
            "m.room.member",
            "@alice:roost.test",
            json!({"membership": "join", "join_authorised_via_users_server": "@bob:roost.test", "displayname": "A"}),
        )
    };
    let create = || {
        state_event(
            "m.room.create",
            "",
            json!({"creator": "@alice:roost.test", "m.federate": false}),
        )
    };

    // Version 1 keeps the event ID and `origin`, and the aliases; version 6 drops the aliases.
    let (content, json) = redacted(&RoomVersionId::V1, aliases());
    assert_eq!(content, json!({"aliases": ["#a:roost.test"]}));
    assert!(json.contains_key("event_id") && json.contains_key("origin"));
    assert_eq!(
        redacted(&RoomVersionId::V3, aliases()).0,
        json!({"aliases": ["#a:roost.test"]})
    );
    assert_eq!(redacted(&RoomVersionId::V6, aliases()).0, json!({}));

    // Version 8 keeps the `allow` of restricted join rules.
    assert_eq!(
        redacted(&RoomVersionId::V6, join_rules()).0,
        json!({"join_rule": "restricted"})
    );
    for version in [RoomVersionId::V8, RoomVersionId::V9] {
        let expected = json!({"join_rule": "restricted", "allow": []});
        assert_eq!(redacted(&version, join_rules()).0, expected, "{version}");
    }

    // Version 9 keeps who authorised a restricted join.
    assert_eq!(
        redacted(&RoomVersionId::V8, member()).0,
        json!({"membership": "join"})
    );
    let expected =
        json!({"membership": "join", "join_authorised_via_users_server": "@bob:roost.test"});
    assert_eq!(redacted(&RoomVersionId::V9, member()).0, expected);

    // Version 11 keeps the whole create content and drops `origin`.
    let (content, json) = redacted(&RoomVersionId::V10, create());
    assert_eq!(content, json!({"creator": "@alice:roost.test"}));
    assert!(json.contains_key("origin"));
    let (content, json) = redacted(&RoomVersionId::V11, create());
    assert_eq!(
        content,
        json!({"creator": "@alice:roost.test", "m.federate": false})
    );
    assert!(!json.contains_key("origin"));
}

#[test]
fn redaction_events_name_their_target_where_the_version_says() {
    let mut v1 = room(&RoomVersionId::V1, json!({"join_rule": "public"}));
    let target = say(&mut v1, &bob(), "oops").unwrap();
    let mut template = v1
        .template(&v1.main, 9_000, &bob(), "m.room.redaction", None, json!({}))
        .unwrap();
    template.redacts = Some(target.clone());
    let redaction = v1.sign(template).unwrap();
    assert_eq!(redaction.json()["redacts"].as_str(), Some(target.as_str()));
    assert_eq!(redaction.redacts(), Some(&*target));
    let received = Pdu::from_federation(RoomVersionId::V1, redaction.json().clone()).unwrap();
    assert_eq!(received.redacts(), Some(&*target));
}

// --- Auth rules of each family ---------------------------------------------------------------

#[test]
fn string_power_levels_are_accepted_until_version_10() {
    for version in FAMILIES {
        let mut room = room(&version, json!({"join_rule": "public"}));
        let content = power_levels(&version, json!({ bob().as_str(): "50" }));
        let result = room.send(&alice(), "m.room.power_levels", Some(""), content);
        let integers_only = rules_of(&version).authorization.integer_power_levels;
        assert_eq!(result.is_err(), integers_only, "{version}: {result:?}");
    }
}

#[test]
fn aliases_events_are_special_until_version_6() {
    for version in FAMILIES {
        let mut room = room(&version, json!({"join_rule": "public"}));
        // Bob has power 0; state events need 50 unless the aliases special case applies.
        let content = json!({"aliases": ["#b:roost.test"]});
        let result = room.send(&bob(), "m.room.aliases", Some(SERVER), content);
        let special = rules_of(&version).authorization.special_case_room_aliases;
        assert_eq!(result.is_ok(), special, "{version}: {result:?}");
    }
}

#[test]
fn knocking_needs_version_7_and_restricted_joins_version_8() {
    let dave = user("dave");
    for version in FAMILIES {
        let rules = rules_of(&version).authorization;

        let mut knock = room(&version, json!({"join_rule": "knock"}));
        let result = join(&mut knock, &dave, json!({"membership": "knock"}));
        assert_eq!(result.is_ok(), rules.knocking, "{version}: {result:?}");

        let allow = json!([{"type": "m.room_membership", "room_id": "!other:roost.test"}]);
        let mut room = room(&version, json!({"join_rule": "restricted", "allow": allow}));
        let content = json!({"membership": "join", "join_authorised_via_users_server": alice()});
        let result = join(&mut room, &dave, content);
        assert_eq!(
            result.is_ok(),
            rules.restricted_join_rule,
            "{version}: {result:?}"
        );
        if rules.restricted_join_rule {
            // The authorising user must be able to invite: bob, at 0 with `invite` 0, may;
            // a user who is not in the room may not.
            let erin = user("erin");
            let content = json!({"membership": "join", "join_authorised_via_users_server": erin});
            let result = join(&mut room, &user("frank"), content);
            assert!(matches!(result, Err(Error::Unauthorized(_))), "{version}");
        }
    }
}
