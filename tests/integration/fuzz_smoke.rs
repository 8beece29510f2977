//! The short form of fuzzing that runs on every `cargo test`: each target of `roost::fuzzing` gets
//! its committed seed corpus (`fuzz/corpus/<target>/`, crash regressions included) and a bounded
//! number of deterministic mutations of it (seeded RNG: bit flips, byte changes, insertions of
//! dictionary tokens, deletions, truncations, duplications and splices). The long,
//! coverage-guided form is `cargo fuzz` (see `docs/fuzzing.md`).
//!
//! `ROOST_FUZZ_SMOKE_MUTATIONS` changes the number of mutations per target (default 3,000) and
//! `ROOST_FUZZ_SMOKE_SEED` the RNG seed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

const DEFAULT_MUTATIONS: usize = 3_000;
const DEFAULT_SEED: u64 = 0x005e_ed0f_2005;

/// Tokens worth inserting: JSON structure, the edges of canonical JSON, and the fields and
/// values the targets branch on.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\\",
    "\0",
    "null",
    "true",
    "false",
    "-",
    "0",
    "-0",
    "1.5",
    "1e3",
    "9007199254740991",
    "9007199254740992",
    "-9007199254740992",
    "18446744073709551615",
    "18446744073709551616",
    "\\u0000",
    "\\ud800",
    "\\u00e9",
    "é",
    "\u{1F600}",
    "*",
    ".",
    "\\.",
    "s",
    "+",
    "\"type\"",
    "\"content\"",
    "\"state_key\"",
    "\"redacts\"",
    "\"room_id\"",
    "\"sender\"",
    "\"signatures\"",
    "\"hashes\"",
    "\"m.room.create\"",
    "\"m.room.member\"",
    "\"m.room.redaction\"",
    "\"m.room.power_levels\"",
    "\"membership\"",
    "\"third_party_invite\"",
    "\"join_authorised_via_users_server\"",
    "\"@alice:roost.test\"",
    "\"event_fields\"",
    "\"types\"",
    "\"not_types\"",
    "\"limit\"",
    "\"room\"",
    "\"timeline\"",
];

/// Bytes that change a JSON document's structure, or a token's or a pattern's meaning.
const STRUCTURAL: &[u8] = b"{}[]\":,\\0*.s-";

/// splitmix64: small, deterministic and the same on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// The seed files of a target, in name order.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

/// One to four mutations of a seed.
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut data = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(8) {
            // Flip one bit.
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            // Replace one byte with a random or a structural one.
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = match rng.below(3) {
                    0 => rng.next() as u8,
                    _ => STRUCTURAL[rng.below(STRUCTURAL.len())],
                };
            }
            // Insert a dictionary token.
            2 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                data.splice(at..at, token.iter().copied());
            }
            // Delete a run of bytes.
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                data.drain(at..end);
            }
            // Truncate.
            4 if len > 0 => data.truncate(rng.below(len)),
            // Duplicate a run of bytes in place.
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let run = data[at..end].to_vec();
                let to = rng.below(len + 1);
                data.splice(to..to, run);
            }
            // Splice: this one's head, another seed's tail.
            6 => {
                let other = &seeds[rng.below(seeds.len())].1;
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // Insert a random byte.
            _ => {
                let at = rng.below(len + 1);
                data.insert(at, rng.next() as u8);
            }
        }
    }
    data
}

/// Runs one input; on a panic, keeps the input in the temporary directory and fails with where.
fn run_one(target: &str, run: fn(&[u8]), label: &str, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| run(input))).is_err() {
        let path = std::env::temp_dir().join(format!("roost-fuzz-smoke-{target}-{label}"));
        let _ = std::fs::write(&path, input);
        panic!(
            "fuzz target {target} failed on {label} (input kept in {}): {:?}",
            path.display(),
            String::from_utf8_lossy(input)
        );
    }
}

fn smoke(target: &str) {
    let run = roost::fuzzing::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .unwrap();
    let seeds = corpus(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    for (name, data) in &seeds {
        run_one(target, run, name, data);
    }
    let mutations = env_or("ROOST_FUZZ_SMOKE_MUTATIONS", DEFAULT_MUTATIONS);
    let mut rng = Rng(env_or("ROOST_FUZZ_SMOKE_SEED", DEFAULT_SEED));
    for n in 0..mutations {
        let input = mutate(&mut rng, &seeds);
        run_one(target, run, &format!("mutation-{n}"), &input);
    }
}

#[test]
fn canonical_json() {
    smoke("canonical_json");
}

#[test]
fn pdu() {
    smoke("pdu");
}

#[test]
fn sync_token() {
    smoke("sync_token");
}

#[test]
fn filter() {
    smoke("filter");
}

#[test]
fn every_target_has_a_corpus() {
    for (target, _) in roost::fuzzing::TARGETS {
        assert!(
            corpus_dir(target).is_dir(),
            "fuzz/corpus/{target} is missing"
        );
    }
}

/// Rewrites the signed seeds of the `pdu` corpus (`signed-*.json`): events of room versions 10,
/// 11 and 12 built by the server's own code and signed with the key of the specification's test
/// vectors, whose public half the `pdu` target verifies with.
/// `cargo test --test integration fuzz_smoke::write_signed_pdu_seeds -- --ignored`
#[test]
#[ignore = "writes files into fuzz/corpus/pdu"]
fn write_signed_pdu_seeds() {
    use roost::core::pdu::{EventTemplate, build_event};
    use ruma::events::TimelineEventType;
    use ruma::serde::{Base64, base64::Standard};
    use ruma::signatures::Ed25519KeyPair;
    use ruma::{
        MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomVersionId, UInt, UserId,
    };
    use serde_json::json;

    // The seed of the specification's test key, wrapped in the PKCS#8 v1 DER ruma reads.
    let seed = Base64::<Standard, Vec<u8>>::parse("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
        .unwrap()
        .into_inner();
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    let key = Ed25519KeyPair::from_der(&der, "1".to_owned()).unwrap();
    assert_eq!(
        Base64::<Standard, _>::new(key.public_key().to_vec()),
        roost::fuzzing::public_keys()[roost::fuzzing::PDU_SERVER]["ed25519:1"]
    );
    let server = ruma::ServerName::parse(roost::fuzzing::PDU_SERVER).unwrap();
    let alice = UserId::parse("@alice:roost.test").unwrap();
    let prev: OwnedEventId = "$Fpa9AHUOq5E4Tlj9V0Lc73Tz8Z0kSHo3vD2MNM1JDPc"
        .try_into()
        .unwrap();
    let build = |version: &RoomVersionId,
                 room_id: Option<OwnedRoomId>,
                 kind: &str,
                 state_key: Option<&str>,
                 content: serde_json::Value,
                 redacts: Option<OwnedEventId>| {
        let create = kind == "m.room.create";
        build_event(
            version,
            EventTemplate {
                room_id,
                sender: alice.clone(),
                kind: TimelineEventType::from(kind),
                state_key: state_key.map(str::to_owned),
                content,
                prev_events: if create { vec![] } else { vec![prev.clone()] },
                auth_events: if create { vec![] } else { vec![prev.clone()] },
                depth: UInt::from(if create { 0u32 } else { 3 }),
                origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(1_700_000_000u32)),
                redacts,
            },
            &server,
            &key,
        )
        .unwrap()
    };
    let mut seeds = Vec::new();
    for version in [RoomVersionId::V10, RoomVersionId::V11] {
        let v = version.as_str();
        let room: OwnedRoomId = "!opaque:roost.test".try_into().unwrap();
        let room = || Some(room.clone());
        let mut create_content = json!({ "room_version": v });
        if version == RoomVersionId::V10 {
            create_content["creator"] = json!(alice);
        }
        seeds.push((
            format!("v{v}-create"),
            build(
                &version,
                room(),
                "m.room.create",
                Some(""),
                create_content,
                None,
            ),
        ));
        seeds.push((
            format!("v{v}-message"),
            build(
                &version,
                room(),
                "m.room.message",
                None,
                json!({ "msgtype": "m.text", "body": "hello \u{e9}\n" }),
                None,
            ),
        ));
        seeds.push((
            format!("v{v}-redaction"),
            build(
                &version,
                room(),
                "m.room.redaction",
                None,
                json!({ "reason": "spam" }),
                Some(prev.clone()),
            ),
        ));
        seeds.push((
            format!("v{v}-power-levels"),
            build(
                &version,
                room(),
                "m.room.power_levels",
                Some(""),
                json!({ "users": { alice.as_str(): 100 }, "state_default": 50, "events": {} }),
                None,
            ),
        ));
    }
    let v12 = RoomVersionId::V12;
    let create = build(
        &v12,
        None,
        "m.room.create",
        Some(""),
        json!({ "room_version": "12" }),
        None,
    );
    let room = create.room_id().to_owned();
    seeds.push(("v12-create".into(), create));
    seeds.push((
        "v12-restricted-join".into(),
        build(
            &v12,
            Some(room.clone()),
            "m.room.member",
            Some(alice.as_str()),
            json!({ "membership": "join", "join_authorised_via_users_server": alice }),
            None,
        ),
    ));
    seeds.push((
        "v12-invite".into(),
        build(
            &v12,
            Some(room),
            "m.room.member",
            Some("@bob:roost.test"),
            json!({ "membership": "invite", "third_party_invite": {
                "display_name": "bob", "signed": { "mxid": "@bob:roost.test", "token": "t",
                "signatures": {} } } }),
            None,
        ),
    ));
    let dir = corpus_dir("pdu");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pdu) in seeds {
        let text = serde_json::to_string(pdu.json()).unwrap();
        std::fs::write(dir.join(format!("signed-{name}.json")), text).unwrap();
    }
}
