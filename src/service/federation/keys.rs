//! Server signing keys: ours as we publish them (`GET /_matrix/key/v2/server`), and other
//! servers' keys, fetched from them (or from a notary) and kept with their validity.
//!
//! A key is good for an event when it was valid at the event's `origin_server_ts` (room versions
//! 5 on; earlier versions ignore `valid_until_ts`), and for a request when it is valid now. Old
//! keys (`old_verify_keys`) are good for anything signed before they expired.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::Ed25519KeyPair;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::signing_key::SigningKey;
use crate::storage::{Store, Tree, keys, trees};
use crate::util::now_ms;

/// How long the keys we publish are valid: peers refetch them after this.
pub const PUBLISHED_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// After a failed fetch of a server's keys, the next one waits this long, so that requests
/// naming keys nobody published cannot make us hammer a server (or a notary).
const REFETCH_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// The longest a key of another server is trusted from when we fetch it, whatever
/// `valid_until_ts` it claims (room versions 5 on: "the lesser of `valid_until_ts` and 7 days
/// into the future"), so that a key published as valid for years is checked again.
pub const MAX_REMOTE_KEY_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// The most servers whose failed key fetch is remembered: requests from made-up origins each
/// make a fetch fail, and must not grow the memory of failures without end.
const MAX_FAILED_SERVERS: usize = 10_000;

/// The largest key response read.
pub(super) const MAX_KEY_RESPONSE_BYTES: usize = 256 * 1024;

/// One public key of another server, as cached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Unpadded standard base64 of the ed25519 public key.
    pub key: String,
    /// Until when the server said the key is valid (for current keys).
    pub valid_until_ts: u64,
    /// When the key expired (for old keys): it is good for anything signed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_ts: Option<u64>,
}

impl KeyRecord {
    /// Whether the key may verify something signed at `ts` (`None`: validity does not matter,
    /// as for events of room versions before 5).
    pub fn good_at(&self, ts: Option<u64>) -> bool {
        match (ts, self.expired_ts) {
            (None, _) => true,
            (Some(ts), Some(expired)) => ts < expired,
            (Some(ts), None) => ts <= self.valid_until_ts,
        }
    }
}

/// Our keys and the cache of other servers' keys.
pub struct ServerKeys {
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    /// server, key ID → [`KeyRecord`].
    cache: Tree,
    /// server → its latest key response as it signed it (what we answer as a notary).
    responses: Tree,
    /// Servers whose keys are being fetched: concurrent lookups wait for one fetch. Weak, so
    /// that a lock nobody holds any more is dropped (see [`ServerKeys::fetch_lock`]).
    inflight: Mutex<HashMap<OwnedServerName, Weak<tokio::sync::Mutex<()>>>>,
    /// When a fetch of a server's keys last failed (within [`REFETCH_AFTER_FAILURE`], at most
    /// [`MAX_FAILED_SERVERS`] servers).
    failed: Mutex<HashMap<OwnedServerName, Instant>>,
}

impl ServerKeys {
    pub fn new(
        store: &Store,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
    ) -> Result<Self> {
        Ok(Self {
            server_name,
            signing_key,
            cache: store.tree(trees::SERVER_KEYID_KEY)?,
            responses: store.tree(trees::SERVERNAME_KEYRESPONSE)?,
            inflight: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        })
    }

    /// Our key response (`GET /_matrix/key/v2/server`): the current key, the old ones, valid for
    /// [`PUBLISHED_VALIDITY`], signed by the current key.
    pub fn own_response(&self) -> Result<CanonicalJsonObject> {
        let pair = &self.signing_key.pair;
        let mut old = serde_json::Map::new();
        for old_key in &self.signing_key.old_keys {
            old.insert(
                old_key.key_id.clone(),
                json!({ "key": old_key.public_key, "expired_ts": old_key.expired_ts }),
            );
        }
        let response = json!({
            "server_name": self.server_name,
            "verify_keys": {
                self.signing_key.key_id.clone(): {
                    "key": STANDARD_NO_PAD.encode(pair.public_key()),
                },
            },
            "old_verify_keys": old,
            "valid_until_ts": now_ms() + PUBLISHED_VALIDITY.as_millis() as u64,
        });
        self.sign(response)
    }

    /// Signs a JSON object with our current key (adds to its `signatures`).
    pub fn sign(&self, value: Value) -> Result<CanonicalJsonObject> {
        let mut object = to_object(value)?;
        ruma::signatures::sign_json(
            self.server_name.as_str(),
            &self.signing_key.pair,
            &mut object,
        )
        .map_err(Error::internal)?;
        Ok(object)
    }

    /// The key pair requests and events are signed with.
    pub fn pair(&self) -> &Ed25519KeyPair {
        &self.signing_key.pair
    }

    /// A cached key of another server.
    pub fn cached(&self, server: &ServerName, key_id: &str) -> Result<Option<KeyRecord>> {
        match self.cache.get(keys::pair(server.as_str(), key_id))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Our own public keys as a record, so that our own signatures verify like anyone's.
    pub fn own_record(&self, key_id: &str) -> Option<KeyRecord> {
        if key_id == self.signing_key.key_id {
            return Some(KeyRecord {
                key: STANDARD_NO_PAD.encode(self.signing_key.pair.public_key()),
                valid_until_ts: u64::MAX,
                expired_ts: None,
            });
        }
        self.signing_key
            .old_keys
            .iter()
            .find(|old| old.key_id == key_id)
            .map(|old| KeyRecord {
                key: old.public_key.clone(),
                valid_until_ts: old.expired_ts,
                expired_ts: Some(old.expired_ts),
            })
    }

    /// The latest key response of a server, as it signed it.
    pub fn stored_response(&self, server: &ServerName) -> Result<Option<CanonicalJsonObject>> {
        match self.responses.get(server.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Checks a key response of `server` (its own, or relayed by a notary) and stores it: it must
    /// name the server, be signed by every current key it lists, and those keys replace what we
    /// had, valid for at most [`MAX_REMOTE_KEY_VALIDITY`] from now. Returns the keys it holds.
    pub fn accept_response(
        &self,
        server: &ServerName,
        response: &CanonicalJsonObject,
    ) -> Result<BTreeMap<String, KeyRecord>> {
        let parsed: KeyResponse = serde_json::from_value(
            serde_json::to_value(response).map_err(|e| Error::Unauthorized(e.to_string()))?,
        )
        .map_err(|e| Error::Unauthorized(format!("bad key response from {server}: {e}")))?;
        if parsed.server_name != server.as_str() {
            return Err(Error::Unauthorized(format!(
                "the key response for {server} names {}",
                parsed.server_name
            )));
        }
        if parsed.verify_keys.is_empty() {
            return Err(Error::Unauthorized(format!(
                "the key response of {server} lists no key"
            )));
        }
        // Kept until the lesser of what the server claims and seven days from now; the signed
        // response itself (kept for notary answers) stays as the server signed it.
        let valid_until_ts = parsed
            .valid_until_ts
            .min(now_ms().saturating_add(MAX_REMOTE_KEY_VALIDITY.as_millis() as u64));
        let mut records = BTreeMap::new();
        for (key_id, key) in &parsed.verify_keys {
            records.insert(
                key_id.clone(),
                KeyRecord {
                    key: key.key.clone(),
                    valid_until_ts,
                    expired_ts: None,
                },
            );
        }
        // Self-signed by every key it lists, and only ed25519 keys count.
        let own: BTreeMap<String, ruma::serde::Base64> = records
            .iter()
            .filter(|(id, _)| id.starts_with("ed25519:"))
            .map(|(id, record)| Ok((id.clone(), parse_key(&record.key)?)))
            .collect::<Result<_>>()?;
        if own.is_empty() {
            return Err(Error::Unauthorized(format!(
                "the key response of {server} has no ed25519 key"
            )));
        }
        let only_server = only_signatures_of(response, server.as_str());
        let map = BTreeMap::from([(server.as_str().to_owned(), own)]);
        ruma::signatures::verify_json(&map, &only_server).map_err(|e| {
            Error::Unauthorized(format!(
                "the key response of {server} is not self-signed: {e}"
            ))
        })?;
        for (key_id, old) in &parsed.old_verify_keys {
            records.entry(key_id.clone()).or_insert(KeyRecord {
                key: old.key.clone(),
                valid_until_ts: old.expired_ts,
                expired_ts: Some(old.expired_ts),
            });
        }
        // A cache: each key stands on its own, so no transaction is needed.
        for (key_id, record) in &records {
            self.cache.put(
                keys::pair(server.as_str(), key_id),
                serde_json::to_vec(record)?,
            )?;
        }
        // Keep the newest response for notary answers.
        let newer = match self.stored_response(server)? {
            Some(old) => valid_until(&old) <= parsed.valid_until_ts,
            None => true,
        };
        if newer {
            self.responses
                .put(server.as_bytes(), serde_json::to_vec(&only_server)?)?;
        }
        Ok(records)
    }

    /// The lock that makes concurrent lookups of one server's keys share one fetch. The map
    /// keeps it only while someone holds it: locks of finished fetches are forgotten whenever a
    /// new one is made, so the map holds no more servers than are being fetched at once (each
    /// request with a new `X-Matrix` origin starts a fetch).
    pub(super) fn fetch_lock(&self, server: &ServerName) -> Arc<tokio::sync::Mutex<()>> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lock) = inflight.get(server).and_then(Weak::upgrade) {
            return lock;
        }
        inflight.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        inflight.insert(server.to_owned(), Arc::downgrade(&lock));
        lock
    }

    /// Whether a fetch of the server's keys failed too recently to try again.
    pub(super) fn recently_failed(&self, server: &ServerName) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .get(server)
            .is_some_and(|at| at.elapsed() < REFETCH_AFTER_FAILURE)
    }

    /// Remembers a failed fetch of the server's keys, or forgets it after one that worked.
    /// Failures past their retry window are dropped when one is added, and at most
    /// [`MAX_FAILED_SERVERS`] are kept (the oldest goes first).
    pub(super) fn record_failure(&self, server: &ServerName, failed: bool) {
        let mut map = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            map.remove(server);
            return;
        }
        let now = Instant::now();
        map.retain(|_, at| now.duration_since(*at) < REFETCH_AFTER_FAILURE);
        if map.len() >= MAX_FAILED_SERVERS
            && !map.contains_key(server)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(name, _)| name.clone())
        {
            map.remove(&oldest);
        }
        map.insert(server.to_owned(), now);
    }
}

/// A key response, as far as we read it (the signed object itself is kept as it came).
#[derive(Deserialize)]
struct KeyResponse {
    server_name: String,
    #[serde(default)]
    verify_keys: BTreeMap<String, VerifyKey>,
    #[serde(default)]
    old_verify_keys: BTreeMap<String, OldVerifyKey>,
    valid_until_ts: u64,
}

#[derive(Deserialize)]
struct VerifyKey {
    key: String,
}

#[derive(Deserialize)]
struct OldVerifyKey {
    key: String,
    expired_ts: u64,
}

/// A base64 public key (padded or not).
pub fn parse_key(key: &str) -> Result<ruma::serde::Base64> {
    ruma::serde::Base64::parse(key)
        .map_err(|e| Error::Unauthorized(format!("a public key is not base64: {e}")))
}

/// The object with only `server`'s signatures (notaries add their own beside it).
fn only_signatures_of(object: &CanonicalJsonObject, server: &str) -> CanonicalJsonObject {
    let mut object = object.clone();
    if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
        signatures.retain(|name, _| name == server);
    }
    object
}

fn valid_until(object: &CanonicalJsonObject) -> u64 {
    match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => 0,
    }
}

/// A JSON value as a canonical JSON object.
pub fn to_object(value: Value) -> Result<CanonicalJsonObject> {
    match CanonicalJsonValue::try_from(value) {
        Ok(CanonicalJsonValue::Object(object)) => Ok(object),
        Ok(_) => Err(Error::BadJson("expected a JSON object".into())),
        Err(e) => Err(Error::BadJson(format!("not canonical JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_follows_the_spec() {
        let current = KeyRecord {
            key: String::new(),
            valid_until_ts: 1_000,
            expired_ts: None,
        };
        assert!(current.good_at(None));
        assert!(current.good_at(Some(1_000)));
        assert!(!current.good_at(Some(1_001)));
        let old = KeyRecord {
            key: String::new(),
            valid_until_ts: 500,
            expired_ts: Some(500),
        };
        assert!(old.good_at(Some(499)));
        assert!(!old.good_at(Some(500)));
    }

    fn keys_in(dir: &std::path::Path) -> ServerKeys {
        let store = Store::open_with_cache(&dir.join("db"), 1 << 20).unwrap();
        let key = Arc::new(SigningKey::load_or_create(dir).unwrap());
        ServerKeys::new(&store, ruma::server_name!("a.test").to_owned(), key).unwrap()
    }

    #[test]
    fn our_response_is_accepted_as_a_peer_would() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_in(dir.path());
        let response = keys.own_response().unwrap();
        let other = tempfile::tempdir().unwrap();
        let peer = keys_in(other.path());
        let records = peer
            .accept_response(ruma::server_name!("a.test"), &response)
            .unwrap();
        assert_eq!(records.len(), 1);
        assert!(
            peer.stored_response(ruma::server_name!("a.test"))
                .unwrap()
                .is_some()
        );
        // Claimed for another server, or tampered with: refused.
        assert!(
            peer.accept_response(ruma::server_name!("b.test"), &response)
                .is_err()
        );
        let mut tampered = response.clone();
        tampered.insert(
            "valid_until_ts".into(),
            CanonicalJsonValue::Integer(1u32.into()),
        );
        assert!(
            peer.accept_response(ruma::server_name!("a.test"), &tampered)
                .is_err()
        );
    }

    #[test]
    fn remote_keys_are_kept_for_at_most_seven_days() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_in(dir.path());
        let mut response: Value = CanonicalJsonValue::Object(keys.own_response().unwrap()).into();
        // The same keys, claimed valid for a year, signed again.
        let year = 365 * 24 * 3600 * 1000;
        response["valid_until_ts"] = json!(now_ms() + year);
        response.as_object_mut().unwrap().remove("signatures");
        let response = keys.sign(response).unwrap();
        let other = tempfile::tempdir().unwrap();
        let peer = keys_in(other.path());
        let before = now_ms();
        let records = peer
            .accept_response(ruma::server_name!("a.test"), &response)
            .unwrap();
        let week = MAX_REMOTE_KEY_VALIDITY.as_millis() as u64;
        let (key_id, record) = records.iter().next().unwrap();
        assert!(record.valid_until_ts >= before + week, "{record:?}");
        assert!(record.valid_until_ts <= now_ms() + week, "{record:?}");
        let cached = peer
            .cached(ruma::server_name!("a.test"), key_id)
            .unwrap()
            .unwrap();
        assert_eq!(cached.valid_until_ts, record.valid_until_ts);
        assert!(!cached.good_at(Some(before + 8 * 24 * 3600 * 1000)));
        // What we relay as a notary stays as the server signed it.
        let stored = peer
            .stored_response(ruma::server_name!("a.test"))
            .unwrap()
            .unwrap();
        assert_eq!(valid_until(&stored), valid_until(&response));
        // A shorter validity is kept as it is.
        let short = keys.own_response().unwrap();
        let records = peer
            .accept_response(ruma::server_name!("a.test"), &short)
            .unwrap();
        assert_eq!(
            records.values().next().unwrap().valid_until_ts,
            valid_until(&short)
        );
    }

    #[test]
    fn fetch_locks_are_shared_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_in(dir.path());
        let first = keys.fetch_lock(ruma::server_name!("b.test"));
        let again = keys.fetch_lock(ruma::server_name!("b.test"));
        assert!(
            Arc::ptr_eq(&first, &again),
            "one fetch per server at a time"
        );
        drop((first, again));
        for i in 0..100 {
            let server = OwnedServerName::try_from(format!("s{i}.test")).unwrap();
            drop(keys.fetch_lock(&server));
        }
        let held = keys.fetch_lock(ruma::server_name!("c.test"));
        let inflight = keys.inflight.lock().unwrap();
        assert_eq!(inflight.len(), 1, "only the fetch under way is kept");
        assert!(inflight.contains_key(ruma::server_name!("c.test")));
        drop(held);
    }

    #[test]
    fn failures_expire_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys_in(dir.path());
        let long_ago = Instant::now()
            .checked_sub(REFETCH_AFTER_FAILURE + Duration::from_secs(1))
            .unwrap();
        keys.failed
            .lock()
            .unwrap()
            .insert(ruma::server_name!("old.test").to_owned(), long_ago);
        keys.record_failure(ruma::server_name!("new.test"), true);
        assert!(keys.recently_failed(ruma::server_name!("new.test")));
        assert!(
            !keys
                .failed
                .lock()
                .unwrap()
                .contains_key(ruma::server_name!("old.test")),
            "past its retry window"
        );
        for i in 0..MAX_FAILED_SERVERS + 10 {
            let server = OwnedServerName::try_from(format!("s{i}.test")).unwrap();
            keys.record_failure(&server, true);
        }
        assert_eq!(keys.failed.lock().unwrap().len(), MAX_FAILED_SERVERS);
        keys.record_failure(ruma::server_name!("s5.test"), false);
        assert!(!keys.recently_failed(ruma::server_name!("s5.test")));
    }
}
