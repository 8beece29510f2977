//! End-to-end encryption key distribution over raw HTTP: device keys, one-time and fallback keys,
//! claims, and device-list changes in `/sync` and `/keys/changes`.

use base64::Engine;
use ruma::CanonicalJsonObject;
use ruma::signatures::Ed25519KeyPair;
use serde_json::{Value, json};

use crate::common::{TestServer, User, create_room, errcode, join, spawn_long_poll, user};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

/// The device ID behind a user's token.
pub(crate) async fn device_of(server: &TestServer, u: &User) -> String {
    let (_, body) = server
        .get("/_matrix/client/v3/account/whoami", Some(&u.token))
        .await;
    body["device_id"].as_str().unwrap().to_owned()
}

/// Device keys for `user`/`device`, self-signed by a new ed25519 key.
pub(crate) fn device_keys(user: &str, device: &str) -> Value {
    let pair = Ed25519KeyPair::from_der(&Ed25519KeyPair::generate(), device.to_owned()).unwrap();
    let keys = json!({
        "user_id": user,
        "device_id": device,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {
            format!("curve25519:{device}"): B64.encode([7u8; 32]),
            format!("ed25519:{device}"): B64.encode(pair.public_key()),
        },
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(keys).unwrap();
    ruma::signatures::sign_json(user, &pair, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

fn otks(prefix: &str, n: usize) -> Value {
    let mut keys = serde_json::Map::new();
    for i in 0..n {
        keys.insert(
            format!("signed_curve25519:{prefix}{i}"),
            json!({ "key": format!("key-{prefix}-{i}") }),
        );
    }
    Value::Object(keys)
}

async fn upload(server: &TestServer, u: &User, body: Value) -> (u16, Value) {
    server
        .post("/_matrix/client/v3/keys/upload", Some(&u.token), body)
        .await
}

async fn sync_token(server: &TestServer, u: &User) -> String {
    let (_, body) = server.get("/_matrix/client/v3/sync", Some(&u.token)).await;
    body["next_batch"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn device_keys_are_checked_stored_and_queried() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let device = device_of(&server, &alice).await;
    let keys = device_keys(&alice.id, &device);

    // Refused: another user's or device's keys, a broken signature, a wrong shape.
    for (bad, label) in [
        (device_keys(&bob.id, &device), "other user"),
        (device_keys(&alice.id, "OTHERDEVICE"), "other device"),
        (
            {
                let mut k = keys.clone();
                k["keys"][format!("curve25519:{device}")] = json!("tampered");
                k
            },
            "tampered",
        ),
        (json!({ "user_id": alice.id }), "no keys"),
        (json!("keys"), "not an object"),
    ] {
        let (status, body) = upload(&server, &alice, json!({ "device_keys": bad })).await;
        assert_eq!(status, 400, "{label}: {body}");
        assert!(
            ["M_INVALID_PARAM", "M_BAD_JSON"].contains(&errcode(&body)),
            "{label}: {body}"
        );
    }
    let (status, body) = upload(&server, &alice, json!({ "device_keys": keys })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 0);
    // The same keys again are fine; different ones for the same device are not.
    assert_eq!(
        upload(&server, &alice, json!({ "device_keys": keys }))
            .await
            .0,
        200
    );
    let (status, body) = upload(
        &server,
        &alice,
        json!({ "device_keys": device_keys(&alice.id, &device) }),
    )
    .await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");

    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            &format!("/_matrix/client/v3/devices/{device}"),
            Some(&alice.token),
            Some(json!({ "display_name": "phone" })),
        )
        .await;
    assert_eq!(status, 200);
    // Bob downloads them, with the device's display name.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({ "device_keys": { alice.id.clone(): [] }, "timeout": 10000 }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let got = &body["device_keys"][&alice.id][&device];
    assert_eq!(got["keys"], keys["keys"]);
    assert_eq!(got["signatures"], keys["signatures"]);
    assert_eq!(got["unsigned"]["device_display_name"], "phone", "{got}");
    // Asking for a device that has no keys gives nothing for it.
    let (_, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({ "device_keys": { alice.id.clone(): ["NOPE"], bob.id.clone(): [] } }),
        )
        .await;
    assert_eq!(body["device_keys"][&alice.id], json!({}));
    assert_eq!(body["device_keys"][&bob.id], json!({}));
    for bad in [
        json!({ "device_keys": { "not-a-user": [] } }),
        json!({ "device_keys": [] }),
        json!({}),
    ] {
        let (status, body) = server
            .post(
                "/_matrix/client/v3/keys/query",
                Some(&bob.token),
                bad.clone(),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Logging the device out removes its keys.
    let (status, _) = server
        .post("/_matrix/client/v3/logout", Some(&alice.token), json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&bob.token),
            json!({ "device_keys": { alice.id.clone(): [] } }),
        )
        .await;
    assert_eq!(body["device_keys"][&alice.id], json!({}));
}

#[tokio::test]
async fn one_time_keys_go_to_one_claimer_each_then_the_fallback_key() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let device = device_of(&server, &alice).await;
    let (status, body) = upload(
        &server,
        &alice,
        json!({
            "device_keys": device_keys(&alice.id, &device),
            "one_time_keys": otks("A", 5),
            "fallback_keys": { "signed_curve25519:FB": { "key": "fallback", "fallback": true } },
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 5);
    // Reusing a key ID for another key is refused, and nothing of that upload is kept.
    let mut clash = otks("B", 2);
    clash["signed_curve25519:A0"] = json!({ "key": "different" });
    let (status, body) = upload(&server, &alice, json!({ "one_time_keys": clash })).await;
    assert_eq!((status, errcode(&body)), (400, "M_INVALID_PARAM"), "{body}");
    let (_, body) = upload(&server, &alice, json!({})).await;
    assert_eq!(body["one_time_key_counts"]["signed_curve25519"], 5);
    for bad in [
        json!({ "one_time_keys": { "nocolon": "k" } }),
        json!({ "one_time_keys": { "signed_curve25519:X": 5 } }),
        json!({ "one_time_keys": [] }),
        json!({ "fallback_keys": { "signed_curve25519:X": { "key": 1 } } }),
    ] {
        let (status, body) = upload(&server, &alice, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // Sync reports the counts and the unused fallback key.
    let (_, sync) = server
        .get("/_matrix/client/v3/sync", Some(&alice.token))
        .await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 5);
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Twenty claimers at once for five keys: each key is given once, then the fallback key.
    let mut claimers = Vec::new();
    for i in 0..20 {
        let claimer = user(&server, &format!("claimer{i}")).await;
        let http = server.http.clone();
        let url = server.url("/_matrix/client/v3/keys/claim");
        let body = json!({ "one_time_keys": { alice.id.clone(): { device.clone(): "signed_curve25519" } } });
        claimers.push(tokio::spawn(async move {
            let answer: Value = http
                .post(url)
                .bearer_auth(claimer.token)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            answer
        }));
    }
    let mut given = Vec::new();
    for claimer in claimers {
        let answer = claimer.await.unwrap();
        let keys = answer["one_time_keys"][&alice.id][&device]
            .as_object()
            .unwrap_or_else(|| panic!("no key: {answer}"))
            .clone();
        assert_eq!(keys.len(), 1);
        given.push(keys.keys().next().unwrap().clone());
    }
    given.sort();
    let fallback_claims = given
        .iter()
        .filter(|k| *k == "signed_curve25519:FB")
        .count();
    assert_eq!(fallback_claims, 15, "{given:?}");
    let mut one_time: Vec<_> = given
        .iter()
        .filter(|k| *k != "signed_curve25519:FB")
        .collect();
    one_time.dedup();
    assert_eq!(
        one_time.len(),
        5,
        "every one-time key exactly once: {given:?}"
    );

    let (_, sync) = server
        .get("/_matrix/client/v3/sync", Some(&alice.token))
        .await;
    assert_eq!(sync["device_one_time_keys_count"]["signed_curve25519"], 0);
    assert_eq!(sync["device_unused_fallback_key_types"], json!([]));
    // A new fallback key is unused again.
    upload(
        &server,
        &alice,
        json!({ "fallback_keys": { "signed_curve25519:FB2": { "key": "fallback2", "fallback": true } } }),
    )
    .await;
    let (_, sync) = server
        .get("/_matrix/client/v3/sync", Some(&alice.token))
        .await;
    assert_eq!(
        sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );

    // Claims for unknown devices or algorithms give nothing; bad ones are refused.
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            Some(&alice.token),
            json!({ "one_time_keys": { alice.id.clone(): { "NOPE": "signed_curve25519", device.clone(): "other_alg" } } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["one_time_keys"], json!({}));
    let (status, _) = server
        .post(
            "/_matrix/client/v3/keys/claim",
            Some(&alice.token),
            json!({ "one_time_keys": { alice.id.clone(): { device.clone(): "" } } }),
        )
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn key_changes_reach_exactly_those_who_share_a_room() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);

    // Bob is waiting; Alice uploads keys for her device: Bob wakes and hears of it, Carol does not.
    let bob_since = sync_token(&server, &bob).await;
    let carol_since = sync_token(&server, &carol).await;
    let waiting = spawn_long_poll(
        &server,
        &bob.token,
        &format!("since={bob_since}&timeout=10000"),
    );
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let device = device_of(&server, &alice).await;
    upload(
        &server,
        &alice,
        json!({ "device_keys": device_keys(&alice.id, &device) }),
    )
    .await;
    let (elapsed, body) = waiting.await.unwrap();
    assert!(
        elapsed < std::time::Duration::from_secs(5),
        "woken, not timed out"
    );
    assert_eq!(body["device_lists"]["changed"], json!([alice.id]), "{body}");
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={carol_since}&timeout=0"),
            Some(&carol.token),
        )
        .await;
    assert_eq!(body["device_lists"]["changed"], json!([]));

    // /keys/changes over the same range agrees; over an empty range nothing changed.
    let now = body["next_batch"].as_str().unwrap().to_owned();
    let (status, changes) = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={bob_since}&to={now}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(status, 200, "{changes}");
    assert_eq!(changes["changed"], json!([alice.id]));
    let (_, changes) = server
        .get(
            &format!("/_matrix/client/v3/keys/changes?from={now}&to={now}"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(changes["changed"], json!([]));
    // Re-uploading the same keys is no change.
    let bob_since = sync_token(&server, &bob).await;
    upload(
        &server,
        &alice,
        json!({ "device_keys": device_keys(&alice.id, &device) }),
    )
    .await;
    upload(&server, &alice, json!({ "one_time_keys": otks("C", 3) })).await;
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={bob_since}&timeout=0"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(body["device_lists"]["changed"], json!([]));

    // Carol joins: she must now track Alice and Bob, and they her.
    let alice_since = sync_token(&server, &alice).await;
    let carol_since = sync_token(&server, &carol).await;
    assert_eq!(join(&server, &carol, &room).await.0, 200);
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={carol_since}&timeout=0"),
            Some(&carol.token),
        )
        .await;
    let mut changed: Vec<String> =
        serde_json::from_value(body["device_lists"]["changed"].clone()).unwrap();
    changed.sort();
    assert!(
        changed.contains(&alice.id) && changed.contains(&bob.id),
        "{changed:?}"
    );
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={alice_since}&timeout=0"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(body["device_lists"]["changed"], json!([carol.id]));

    // Bob leaves: Alice and Carol no longer share a room with him.
    let alice_since = sync_token(&server, &alice).await;
    let (status, _) = server
        .post(
            &format!("/_matrix/client/v3/rooms/{room}/leave"),
            Some(&bob.token),
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={alice_since}&timeout=0"),
            Some(&alice.token),
        )
        .await;
    assert_eq!(body["device_lists"]["left"], json!([bob.id]), "{body}");
    assert_eq!(body["device_lists"]["changed"], json!([]));

    for query in ["from=s1", "to=s1", "from=x&to=s1", "from=s1&to=y"] {
        let (status, _) = server
            .get(
                &format!("/_matrix/client/v3/keys/changes?{query}"),
                Some(&bob.token),
            )
            .await;
        assert_eq!(status, 400, "{query}");
    }
}

/// An ed25519 key pair whose key ID is its own public key (as cross-signing keys are named).
fn cross_signing_pair() -> (Ed25519KeyPair, String) {
    let der = Ed25519KeyPair::generate();
    let public = B64.encode(
        Ed25519KeyPair::from_der(&der, "x".into())
            .unwrap()
            .public_key(),
    );
    (
        Ed25519KeyPair::from_der(&der, public.clone()).unwrap(),
        public,
    )
}

/// A cross-signing key object, signed by `signer` when given.
fn cross_signing_key(
    user: &str,
    usage: &str,
    public: &str,
    signer: Option<&Ed25519KeyPair>,
) -> Value {
    let key = json!({ "user_id": user, "usage": [usage], "keys": { format!("ed25519:{public}"): public } });
    sign(user, key, signer)
}

fn sign(user: &str, object: Value, signer: Option<&Ed25519KeyPair>) -> Value {
    let Some(signer) = signer else {
        return object;
    };
    let mut object: CanonicalJsonObject = serde_json::from_value(object).unwrap();
    ruma::signatures::sign_json(user, signer, &mut object).unwrap();
    serde_json::to_value(object).unwrap()
}

async fn query_keys(server: &TestServer, viewer: &User, of: &User) -> Value {
    let (status, body) = server
        .post(
            "/_matrix/client/v3/keys/query",
            Some(&viewer.token),
            json!({ "device_keys": { of.id.clone(): [] } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn cross_signing_keys_and_signatures() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let carol = user(&server, "carol").await;
    let room = create_room(&server, &alice, json!({ "preset": "public_chat" })).await;
    assert_eq!(join(&server, &bob, &room).await.0, 200);
    let device = device_of(&server, &alice).await;
    let (device_pair, device_public) = {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, device.clone()).unwrap();
        let public = B64.encode(pair.public_key());
        (pair, public)
    };
    let alice_device_keys = sign(
        &alice.id,
        json!({
            "user_id": alice.id, "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": { format!("curve25519:{device}"): B64.encode([9u8; 32]),
                      format!("ed25519:{device}"): device_public },
        }),
        Some(&device_pair),
    );
    assert_eq!(
        upload(&server, &alice, json!({ "device_keys": alice_device_keys }))
            .await
            .0,
        200
    );

    let (master, master_pub) = cross_signing_pair();
    let (ssk, ssk_pub) = cross_signing_pair();
    let (usk, usk_pub) = cross_signing_pair();
    let master_key = cross_signing_key(&alice.id, "master", &master_pub, None);
    let ssk_key = cross_signing_key(&alice.id, "self_signing", &ssk_pub, Some(&master));
    let usk_key = cross_signing_key(&alice.id, "user_signing", &usk_pub, Some(&master));
    let device_signing = "/_matrix/client/v3/keys/device_signing/upload";

    // Refused: a self-signing key not signed by the master key, keys of someone else, nothing.
    let (other, _) = cross_signing_pair();
    for (body, code) in [
        (
            json!({ "master_key": master_key, "self_signing_key":
                cross_signing_key(&alice.id, "self_signing", &ssk_pub, Some(&other)) }),
            "M_INVALID_SIGNATURE",
        ),
        (
            json!({ "master_key": cross_signing_key(&bob.id, "master", &master_pub, None) }),
            "M_INVALID_PARAM",
        ),
        (json!({ "self_signing_key": ssk_key }), "M_MISSING_PARAM"),
    ] {
        let (status, answer) = server.post(device_signing, Some(&alice.token), body).await;
        assert_eq!((status, errcode(&answer)), (400, code), "{answer}");
    }

    // The first upload needs no password; Bob learns of it.
    let bob_since = sync_token(&server, &bob).await;
    let all = json!({ "master_key": master_key, "self_signing_key": ssk_key, "user_signing_key": usk_key });
    let (status, answer) = server
        .post(device_signing, Some(&alice.token), all.clone())
        .await;
    assert_eq!(status, 200, "{answer}");
    let (_, body) = server
        .get(
            &format!("/_matrix/client/v3/sync?since={bob_since}&timeout=0"),
            Some(&bob.token),
        )
        .await;
    assert_eq!(body["device_lists"]["changed"], json!([alice.id]));
    // The same keys again: still no password (the request is idempotent).
    assert_eq!(
        server.post(device_signing, Some(&alice.token), all).await.0,
        200
    );
    // New keys: the password is asked for.
    let (new_master, new_master_pub) = cross_signing_pair();
    let replace = json!({
        "master_key": cross_signing_key(&alice.id, "master", &new_master_pub, None),
        "self_signing_key": cross_signing_key(&alice.id, "self_signing", &ssk_pub, Some(&new_master)),
    });
    let (status, answer) = server
        .post(device_signing, Some(&alice.token), replace.clone())
        .await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["flows"].is_array(), "{answer}");

    // Others see the master and self-signing keys; only Alice sees her user-signing key.
    let seen_by_bob = query_keys(&server, &bob, &alice).await;
    assert_eq!(
        seen_by_bob["master_keys"][&alice.id]["keys"],
        master_key["keys"]
    );
    assert_eq!(
        seen_by_bob["self_signing_keys"][&alice.id]["keys"],
        ssk_key["keys"]
    );
    assert_eq!(seen_by_bob["user_signing_keys"], json!({}));
    let seen_by_alice = query_keys(&server, &alice, &alice).await;
    assert_eq!(
        seen_by_alice["user_signing_keys"][&alice.id]["keys"],
        usk_key["keys"]
    );

    // Alice signs her device with her self-signing key, and her master key with her device.
    let signatures = "/_matrix/client/v3/keys/signatures/upload";
    let device_now = seen_by_alice["device_keys"][&alice.id][&device].clone();
    let mut to_sign = device_now.clone();
    to_sign.as_object_mut().unwrap().remove("signatures");
    to_sign.as_object_mut().unwrap().remove("unsigned");
    let signed_device = sign(&alice.id, to_sign, Some(&ssk));
    let signed_master = sign(&alice.id, master_key.clone(), Some(&device_pair));
    let (status, answer) = server
        .post(
            signatures,
            Some(&alice.token),
            json!({ alice.id.clone(): { device.clone(): signed_device, master_pub.clone(): signed_master } }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["failures"], json!({}), "{answer}");
    let seen_by_bob = query_keys(&server, &bob, &alice).await;
    let device_sigs = &seen_by_bob["device_keys"][&alice.id][&device]["signatures"][&alice.id];
    assert!(
        device_sigs[format!("ed25519:{ssk_pub}")].is_string(),
        "{device_sigs}"
    );
    assert!(
        device_sigs[format!("ed25519:{device}")].is_string(),
        "{device_sigs}"
    );
    let master_sigs = &seen_by_bob["master_keys"][&alice.id]["signatures"][&alice.id];
    assert!(
        master_sigs[format!("ed25519:{device}")].is_string(),
        "{master_sigs}"
    );

    // Bob's master key, signed by Alice's user-signing key: only Alice sees that signature.
    let (bob_master, bob_master_pub) = cross_signing_pair();
    let _ = bob_master;
    let bob_master_key = cross_signing_key(&bob.id, "master", &bob_master_pub, None);
    assert_eq!(
        server
            .post(
                device_signing,
                Some(&bob.token),
                json!({ "master_key": bob_master_key })
            )
            .await
            .0,
        200
    );
    let signed = sign(&alice.id, bob_master_key.clone(), Some(&usk));
    let forged = sign(&alice.id, bob_master_key.clone(), Some(&other));
    let (status, answer) = server
        .post(
            signatures,
            Some(&alice.token),
            json!({ bob.id.clone(): { bob_master_pub.clone(): signed } }),
        )
        .await;
    assert_eq!((status, &answer["failures"]), (200, &json!({})), "{answer}");
    let by_alice = query_keys(&server, &alice, &bob).await;
    assert!(
        by_alice["master_keys"][&bob.id]["signatures"][&alice.id][format!("ed25519:{usk_pub}")]
            .is_string()
    );
    let by_carol = query_keys(&server, &carol, &bob).await;
    assert!(
        by_carol["master_keys"][&bob.id]["signatures"]
            .get(&alice.id)
            .is_none()
    );

    // Failures are reported per key: a forged signature, an unknown key, a changed object.
    let mut changed_object = bob_master_key.clone();
    changed_object["usage"] = json!(["master", "extra"]);
    let changed_object = sign(&alice.id, changed_object, Some(&usk));
    let (status, answer) = server
        .post(
            signatures,
            Some(&carol.token),
            json!({ bob.id.clone(): { bob_master_pub.clone(): forged } }),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["failures"][&bob.id][&bob_master_pub]["errcode"], "M_INVALID_SIGNATURE",
        "{answer}"
    );
    let (_, answer) = server
        .post(
            signatures,
            Some(&alice.token),
            json!({ bob.id.clone(): { "nokey": {}, bob_master_pub.clone(): changed_object } }),
        )
        .await;
    assert_eq!(
        answer["failures"][&bob.id]["nokey"]["errcode"], "M_NOT_FOUND",
        "{answer}"
    );
    assert_eq!(
        answer["failures"][&bob.id][&bob_master_pub]["errcode"], "M_INVALID_PARAM",
        "{answer}"
    );
}

fn backup_key(index: u64, forwarded: u64, verified: bool, marker: &str) -> Value {
    json!({ "first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
        "session_data": { "ephemeral": marker, "ciphertext": "c", "mac": "m" } })
}

#[tokio::test]
async fn key_backup_versions_and_replacement_rules() {
    let server = TestServer::start().await;
    let alice = user(&server, "alice").await;
    let bob = user(&server, "bob").await;
    let room = "!room:localhost";
    let algorithm = "m.megolm_backup.v1.curve25519-aes-sha2";
    let call = |method: reqwest::Method, path: String, u: &User, body: Option<Value>| {
        let token = u.token.clone();
        let server = &server;
        async move { server.call(method, &path, Some(&token), body).await }
    };
    use reqwest::Method;

    let (status, body) = call(
        Method::GET,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        None,
    )
    .await;
    assert_eq!((status, errcode(&body)), (404, "M_NOT_FOUND"));
    let (status, body) = call(
        Method::POST,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        Some(json!({ "algorithm": "m.other", "auth_data": {} })),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        Method::POST,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        Some(json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk1" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v1 = body["version"].as_str().unwrap().to_owned();
    let (_, info) = call(
        Method::GET,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        None,
    )
    .await;
    assert_eq!(info["version"], v1.as_str());
    assert_eq!(info["count"], 0);
    assert_eq!(info["auth_data"]["public_key"], "pk1");
    let first_etag = info["etag"].clone();

    // Store a key; a worse one does not replace it, a better one does.
    let session_path = format!("/_matrix/client/v3/room_keys/keys/{room}/sess1?version={v1}");
    let (status, body) = call(
        Method::PUT,
        session_path.clone(),
        &alice,
        Some(backup_key(5, 1, false, "first")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 1);
    assert_ne!(body["etag"], first_etag);
    let etag = body["etag"].clone();
    let (_, body) = call(
        Method::PUT,
        session_path.clone(),
        &alice,
        Some(backup_key(9, 0, false, "worse")),
    )
    .await;
    assert_eq!(
        (body["count"].clone(), body["etag"].clone()),
        (json!(1), etag.clone())
    );
    let (_, got) = call(Method::GET, session_path.clone(), &alice, None).await;
    assert_eq!(got["session_data"]["ephemeral"], "first");
    let (_, body) = call(
        Method::PUT,
        session_path.clone(),
        &alice,
        Some(backup_key(9, 9, true, "verified")),
    )
    .await;
    assert_ne!(body["etag"], etag);
    let (_, got) = call(Method::GET, session_path.clone(), &alice, None).await;
    assert_eq!(got["session_data"]["ephemeral"], "verified");

    // Whole rooms and the whole backup at once.
    let (status, body) = call(
        Method::PUT,
        format!("/_matrix/client/v3/room_keys/keys/{room}?version={v1}"),
        &alice,
        Some(json!({ "sessions": { "sess2": backup_key(0, 0, false, "two") } })),
    )
    .await;
    assert_eq!((status, body["count"].clone()), (200, json!(2)), "{body}");
    let (_, body) = call(
        Method::PUT,
        format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
        &alice,
        Some(json!({ "rooms": { "!other:localhost": { "sessions": { "sess3": backup_key(0, 0, false, "three") } } } })),
    )
    .await;
    assert_eq!(body["count"], 3, "{body}");
    let (_, all) = call(
        Method::GET,
        format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(
        all["rooms"][room]["sessions"]["sess2"]["session_data"]["ephemeral"],
        "two"
    );
    assert_eq!(
        all["rooms"]["!other:localhost"]["sessions"]["sess3"]["session_data"]["ephemeral"],
        "three"
    );
    let (_, in_room) = call(
        Method::GET,
        format!("/_matrix/client/v3/room_keys/keys/{room}?version={v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(in_room["sessions"].as_object().unwrap().len(), 2);
    let (status, _) = call(
        Method::GET,
        format!("/_matrix/client/v3/room_keys/keys/{room}/sess?version={v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 404, "a prefix of a session ID is not that session");
    // Nobody else sees Alice's backup.
    let (status, _) = call(
        Method::GET,
        format!("/_matrix/client/v3/room_keys/version/{v1}"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, 404);

    // A new version: keys for the old one are refused with the current version named.
    let (_, body) = call(
        Method::POST,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        Some(json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk2" } })),
    )
    .await;
    let v2 = body["version"].as_str().unwrap().to_owned();
    let (status, body) = call(
        Method::PUT,
        session_path.clone(),
        &alice,
        Some(backup_key(0, 0, true, "late")),
    )
    .await;
    assert_eq!(
        (status, errcode(&body)),
        (403, "M_WRONG_ROOM_KEYS_VERSION"),
        "{body}"
    );
    assert_eq!(body["current_version"], v2.as_str());
    // The old version is still readable; the new one's auth data can be updated, not its algorithm.
    let (_, old) = call(
        Method::GET,
        format!("/_matrix/client/v3/room_keys/version/{v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(old["count"], 3);
    let (status, _) = call(
        Method::PUT,
        format!("/_matrix/client/v3/room_keys/version/{v2}"),
        &alice,
        Some(
            json!({ "algorithm": algorithm, "auth_data": { "public_key": "pk2b" }, "version": v2 }),
        ),
    )
    .await;
    assert_eq!(status, 200);
    for bad in [
        json!({ "algorithm": "m.other", "auth_data": {} }),
        json!({ "algorithm": algorithm, "auth_data": {}, "version": v1 }),
        json!({ "algorithm": algorithm, "auth_data": "x" }),
    ] {
        let (status, body) = call(
            Method::PUT,
            format!("/_matrix/client/v3/room_keys/version/{v2}"),
            &alice,
            Some(bad.clone()),
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (_, info) = call(
        Method::GET,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        None,
    )
    .await;
    assert_eq!(info["auth_data"]["public_key"], "pk2b");

    // Deleting keys by session, room and all.
    let (_, body) = call(Method::DELETE, session_path.clone(), &alice, None).await;
    assert_eq!(body["count"], 2, "{body}");
    let (_, body) = call(
        Method::DELETE,
        format!("/_matrix/client/v3/room_keys/keys/{room}?version={v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(body["count"], 1, "{body}");
    let (_, body) = call(
        Method::DELETE,
        format!("/_matrix/client/v3/room_keys/keys?version={v1}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(body["count"], 0, "{body}");
    // Deleting the latest version makes the previous one the latest; numbers are never reused.
    let (status, _) = call(
        Method::DELETE,
        format!("/_matrix/client/v3/room_keys/version/{v2}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, info) = call(
        Method::GET,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        None,
    )
    .await;
    assert_eq!(info["version"], v1.as_str());
    // Deleting it again is fine (it was deleted); a version never given is not.
    let (status, _) = call(
        Method::DELETE,
        format!("/_matrix/client/v3/room_keys/version/{v2}"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        Method::DELETE,
        "/_matrix/client/v3/room_keys/version/99".into(),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, body) = call(
        Method::POST,
        "/_matrix/client/v3/room_keys/version".into(),
        &alice,
        Some(json!({ "algorithm": algorithm, "auth_data": {} })),
    )
    .await;
    assert_ne!(body["version"], v2.as_str());
    for (method, path, body) in [
        (
            Method::GET,
            "/_matrix/client/v3/room_keys/version/abc".to_owned(),
            None,
        ),
        (
            Method::GET,
            "/_matrix/client/v3/room_keys/keys".to_owned(),
            None,
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/room_keys/keys/{room}/s?version={v1}"),
            Some(json!({ "first_message_index": -1 })),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/room_keys/keys/{room}/s?version={v1}"),
            Some(
                json!({ "first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": "x" }),
            ),
        ),
        (
            Method::PUT,
            format!("/_matrix/client/v3/room_keys/keys/not-a-room?version={v1}"),
            Some(json!({ "sessions": {} })),
        ),
    ] {
        let (status, answer) = call(method.clone(), path.clone(), &alice, body).await;
        assert!(
            status == 400 || status == 404,
            "{method} {path}: {status} {answer}"
        );
    }
}
