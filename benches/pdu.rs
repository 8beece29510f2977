//! Hashing, signing and verifying PDUs, and canonical JSON, for events of growing size (the
//! `body` of an `m.room.message` from a few bytes to near the 65,536-byte limit).

use std::collections::BTreeMap;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roost::core::Pdu;
use roost::core::pdu::{
    EventTemplate, build_event, hash_and_sign, reference_event_id, verify_event,
};
use ruma::events::TimelineEventType;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap, Verified};
use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, RoomVersionId,
    ServerName, UInt, UserId,
};
use serde_json::json;

const SERVER: &str = "bench.test";

/// Body sizes in bytes: a short message, a long one, a big one and one near the size limit.
const BODY_SIZES: [usize; 4] = [16, 1_024, 16_384, 60_000];

struct Signer {
    key: Ed25519KeyPair,
    public_keys: PublicKeyMap,
}

fn signer() -> Signer {
    let key = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), "1".into()).unwrap();
    let public = Base64::new(key.public_key().to_vec());
    let public_keys = BTreeMap::from([(
        SERVER.to_owned(),
        BTreeMap::from([("ed25519:1".to_owned(), public)]),
    )]);
    Signer { key, public_keys }
}

fn event_id(n: u8) -> OwnedEventId {
    format!("${}", "A".repeat(42) + &format!("{n:x}"))
        .try_into()
        .unwrap()
}

/// A message as the append path builds it: room version 12, three auth events, one prev event.
fn template(body_len: usize) -> EventTemplate {
    EventTemplate {
        room_id: Some(
            OwnedRoomId::try_from("!ZGVmYXVsdHJvb21pZGZvcmJlbmNobWFya3NvZnJvb3N0").unwrap(),
        ),
        sender: UserId::parse(format!("@alice:{SERVER}")).unwrap(),
        kind: TimelineEventType::RoomMessage,
        state_key: None,
        content: json!({ "msgtype": "m.text", "body": "x".repeat(body_len) }),
        prev_events: vec![event_id(1)],
        auth_events: vec![event_id(2), event_id(3), event_id(4)],
        depth: UInt::from(42u32),
        origin_server_ts: MilliSecondsSinceUnixEpoch(UInt::from(1_700_000_000u32)),
        redacts: None,
    }
}

fn build(signer: &Signer, body_len: usize) -> Pdu {
    let server = ServerName::parse(SERVER).unwrap();
    build_event(
        &RoomVersionId::V12,
        template(body_len),
        &server,
        &signer.key,
    )
    .unwrap()
}

/// The whole of building an event: content hash, signature, event ID (reference hash), parse.
fn pdu_build(c: &mut Criterion) {
    let signer = signer();
    let server = ServerName::parse(SERVER).unwrap();
    let mut group = c.benchmark_group("pdu_build");
    for len in BODY_SIZES {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                build_event(&RoomVersionId::V12, template(len), &server, &signer.key).unwrap()
            })
        });
    }
    group.finish();
}

/// The steps on their own: content hash, content hash + signature, reference hash.
fn pdu_steps(c: &mut Criterion) {
    let signer = signer();
    let server = ServerName::parse(SERVER).unwrap();
    let v12 = RoomVersionId::V12;
    let mut group = c.benchmark_group("pdu_steps");
    for len in BODY_SIZES {
        let pdu = build(&signer, len);
        let mut unsigned: CanonicalJsonObject = pdu.json().clone();
        unsigned.remove("hashes");
        unsigned.remove("signatures");
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("content_hash", len), |b| {
            b.iter(|| ruma::signatures::content_hash(&unsigned).unwrap())
        });
        group.bench_function(BenchmarkId::new("hash_and_sign", len), |b| {
            b.iter_batched_ref(
                || unsigned.clone(),
                |object| hash_and_sign(&v12, &server, &signer.key, object).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("event_id", len), |b| {
            b.iter(|| reference_event_id(&v12, pdu.json()).unwrap())
        });
    }
    group.finish();
}

/// Checking an event received over federation: signatures and content hash.
fn pdu_verify(c: &mut Criterion) {
    let signer = signer();
    let mut group = c.benchmark_group("pdu_verify");
    for len in BODY_SIZES {
        let pdu = build(&signer, len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                let verified =
                    verify_event(&RoomVersionId::V12, pdu.json(), &signer.public_keys).unwrap();
                assert_eq!(verified, Verified::All);
            })
        });
    }
    group.finish();
}

/// Canonical JSON of a whole signed event: serialising (what storage and the size check do) and
/// parsing it back as a canonical JSON object (what loading a stored event does).
fn canonical_json(c: &mut Criterion) {
    let signer = signer();
    let mut group = c.benchmark_group("canonical_json");
    for len in BODY_SIZES {
        let pdu = build(&signer, len);
        let bytes = serde_json::to_vec(pdu.json()).unwrap();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("serialise", bytes.len()), |b| {
            b.iter(|| serde_json::to_vec(pdu.json()).unwrap())
        });
        group.bench_function(BenchmarkId::new("parse", bytes.len()), |b| {
            b.iter(|| serde_json::from_slice::<CanonicalJsonObject>(&bytes).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, pdu_build, pdu_steps, pdu_verify, canonical_json);
criterion_main!(benches);
