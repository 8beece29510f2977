//! End-to-end encryption key distribution: device keys, one-time and fallback keys, and the
//! stream of key changes that tells other users' clients to download keys again.
//!
//! The server never sees private keys. It checks what is uploaded (owner, device, signature),
//! hands public keys to whoever asks, gives each one-time key to exactly one claimer, and records
//! every change to a user's devices at a stream position so that `/sync` can report it in
//! `device_lists`.

pub mod backup;
pub mod changes;
pub mod cross_signing;
pub mod one_time;

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{Map, Value};

use crate::core::keys as checks;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};

/// What an upload did.
pub struct Uploaded {
    /// Unclaimed one-time keys of the device per algorithm.
    pub one_time_key_counts: BTreeMap<String, u64>,
    /// Whether the device's identity keys are new (others must learn of them).
    pub device_keys_changed: bool,
}

/// What `POST /keys/upload` carries.
#[derive(Debug, Default)]
pub struct Upload {
    pub device_keys: Option<Value>,
    pub one_time_keys: Map<String, Value>,
    pub fallback_keys: Map<String, Value>,
}

pub struct Keys {
    store: Store,
    /// user, device → the device keys as uploaded (signatures included).
    device_keys: Tree,
    /// user, device, `<algorithm>:<id>` → an unclaimed one-time key.
    one_time: Tree,
    /// user, device, algorithm → the fallback key (`{key_id, key, used}`).
    fallback: Tree,
    /// stream position → the user whose devices or keys changed there.
    changes: Tree,
    /// user → the stream position of their latest change (its entry in `changes`).
    last_change: Tree,
    /// user → their cross-signing keys.
    cross_signing: Tree,
    /// target user, key ID, signer → the signer's signatures on that key.
    signatures: Tree,
    /// user, version → a key backup version (and user → the last version number given).
    backup_versions: Tree,
    /// user, version, room, session → a backed-up session key.
    backup_keys: Tree,
    store_meta: Tree,
    /// Per user: serialises the writes whose checks read what they replace (uploads, key
    /// changes, backups), so that two concurrent requests cannot both pass a check.
    locks: std::sync::Mutex<
        std::collections::HashMap<ruma::OwnedUserId, std::sync::Arc<tokio::sync::Mutex<()>>>,
    >,
}

/// The most unclaimed one-time keys one device may hold.
pub const MAX_ONE_TIME_KEYS: u64 = 10_000;

/// `user SEP device SEP`: the prefix of a device's one-time and fallback keys.
fn device_prefix(user: &UserId, device: &str) -> Vec<u8> {
    let mut key = keys::pair(user.as_str(), device);
    key.push(keys::SEP);
    key
}

fn device_key(user: &UserId, device: &str, last: &str) -> Vec<u8> {
    let mut key = device_prefix(user, device);
    key.extend_from_slice(last.as_bytes());
    key
}

impl Keys {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            device_keys: store.tree(trees::USERID_DEVICEID_DEVICEKEYS)?,
            one_time: store.tree(trees::USERID_DEVICEID_KEYID_ONETIMEKEY)?,
            fallback: store.tree(trees::USERID_DEVICEID_ALGORITHM_FALLBACKKEY)?,
            changes: store.tree(trees::STREAMPOS_USERID_KEYCHANGE)?,
            last_change: store.tree(trees::USERID_KEYCHANGEPOS)?,
            cross_signing: store.tree(trees::USERID_CROSSSIGNINGKEYS)?,
            signatures: store.tree(trees::USERID_KEYID_SIGNER_SIGNATURES)?,
            backup_versions: store.tree(trees::USERID_VERSION_KEYBACKUP)?,
            backup_keys: store.tree(trees::USERID_VERSION_ROOMID_SESSIONID_BACKUPKEY)?,
            store_meta: store.tree(trees::META)?,
            locks: Default::default(),
        })
    }

    /// Takes the user's key lock (see [`Keys::locks`]).
    pub async fn lock_user(&self, user: &UserId) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        let lock = self
            .locks
            .lock()
            .map_err(|_| Error::internal("key locks poisoned"))?
            .entry(user.to_owned())
            .or_default()
            .clone();
        Ok(lock.lock_owned().await)
    }

    /// The device keys of a device, as uploaded.
    pub fn device_keys(&self, user: &UserId, device: &str) -> Result<Option<Value>> {
        match self.device_keys.get(keys::pair(user.as_str(), device))? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw)?)),
            None => Ok(None),
        }
    }

    /// Every device of a user with uploaded keys: device ID → keys.
    pub fn all_device_keys(&self, user: &UserId) -> Result<BTreeMap<String, Value>> {
        let mut out = BTreeMap::new();
        for item in self.device_keys.scan_prefix(keys::prefix(user.as_str())) {
            let (key, value) = item?;
            if let Some(device) = keys::second(&key) {
                out.insert(device.to_owned(), serde_json::from_slice(&value)?);
            }
        }
        Ok(out)
    }

    /// Stores what a device uploads, all or nothing, and answers the one-time key counts.
    /// Device keys must be the uploader's, correctly self-signed, and may not change once
    /// uploaded; a one-time key ID may not be reused for another key.
    pub async fn upload(&self, user: &UserId, device: &str, upload: Upload) -> Result<Uploaded> {
        let _guard = self.lock_user(user).await?;
        let invalid = |e: checks::Invalid| Error::InvalidParam(e.0);
        let mut new_device_keys = None;
        if let Some(device_keys) = &upload.device_keys {
            checks::check_device_keys(device_keys, user.as_str(), device).map_err(invalid)?;
            match self.device_keys(user, device)? {
                Some(old) if !same_identity(&old, device_keys) => {
                    return Err(Error::InvalidParam(
                        "this device already has different identity keys; log in as a new \
                         device instead"
                            .into(),
                    ));
                }
                Some(old) if old == *device_keys => {}
                _ => new_device_keys = Some(serde_json::to_vec(device_keys)?),
            }
        }
        let mut one_time = Vec::new();
        for (key_id, key) in &upload.one_time_keys {
            checks::check_one_time_key(key_id, key).map_err(invalid)?;
            let stored_key = device_key(user, device, key_id);
            match self.one_time.get(&stored_key)? {
                Some(old) if serde_json::from_slice::<Value>(&old)? != *key => {
                    return Err(Error::InvalidParam(format!(
                        "one-time key {key_id} already exists with other content"
                    )));
                }
                Some(_) => {}
                None => one_time.push((stored_key, serde_json::to_vec(key)?)),
            }
        }
        if !one_time.is_empty() {
            let held: u64 = self.one_time_key_counts(user, device)?.values().sum();
            if held + one_time.len() as u64 > MAX_ONE_TIME_KEYS {
                return Err(Error::InvalidParam(format!(
                    "a device may hold at most {MAX_ONE_TIME_KEYS} unclaimed one-time keys"
                )));
            }
        }
        let mut fallback = Vec::new();
        let mut algorithms = std::collections::HashSet::new();
        for (key_id, key) in &upload.fallback_keys {
            checks::check_one_time_key(key_id, key).map_err(invalid)?;
            let (algorithm, _) = checks::split_key_id(key_id).map_err(invalid)?;
            if !algorithms.insert(algorithm) {
                return Err(Error::InvalidParam(format!(
                    "at most one fallback key per algorithm ({algorithm})"
                )));
            }
            let stored_key = device_key(user, device, algorithm);
            let unchanged = match self.fallback.get(&stored_key)? {
                Some(old) => {
                    let old: one_time::Fallback = serde_json::from_slice(&old)?;
                    old.key_id == *key_id && old.key == *key
                }
                None => false,
            };
            if !unchanged {
                let entry = one_time::Fallback {
                    key_id: key_id.clone(),
                    key: key.clone(),
                    used: false,
                };
                fallback.push((stored_key, serde_json::to_vec(&entry)?));
            }
        }
        let device_keys_key = keys::pair(user.as_str(), device);
        let trees = [
            &self.device_keys,
            &self.one_time,
            &self.fallback,
            &self.changes,
            &self.last_change,
            &self.store_meta,
        ];
        let changed = new_device_keys.is_some();
        self.store.sequencer().commit(
            || -> Result<((), u64)> {
                let position = self.store.transact(&trees, |t| {
                    for (key, value) in &one_time {
                        t[1].put(key, value.clone())?;
                    }
                    for (key, value) in &fallback {
                        t[2].put(key, value.clone())?;
                    }
                    let Some(device_keys) = &new_device_keys else {
                        return Ok(None);
                    };
                    t[0].put(&device_keys_key, device_keys.clone())?;
                    changes::record::<Error>(user, &t[3], &t[4], &t[5]).map(Some)
                })?;
                Ok((
                    (),
                    position.unwrap_or_else(|| self.store.sequencer().upto()),
                ))
            },
            |_| {},
        )?;
        self.store.durable().await?;
        Ok(Uploaded {
            one_time_key_counts: self.one_time_key_counts(user, device)?,
            device_keys_changed: changed,
        })
    }

    /// Forgets the keys of deleted devices and records the change (their owner's contacts must
    /// stop encrypting for them). Says whether anything changed.
    pub async fn remove_devices(&self, user: &UserId, devices: &[String]) -> Result<bool> {
        let _guard = self.lock_user(user).await?;
        let mut doomed = Vec::new();
        for device in devices {
            // Signatures on the device's keys go with it (its ID may be used again).
            for item in self.signatures.scan_prefix(device_prefix(user, device)) {
                doomed.push((6, item?.0));
            }
            for item in self.one_time.scan_prefix(device_prefix(user, device)) {
                doomed.push((1, item?.0));
            }
            for item in self.fallback.scan_prefix(device_prefix(user, device)) {
                doomed.push((2, item?.0));
            }
        }
        let had_keys: Vec<Vec<u8>> = devices
            .iter()
            .map(|d| keys::pair(user.as_str(), d))
            .filter(|k| self.device_keys.contains(k).unwrap_or(true))
            .collect();
        if doomed.is_empty() && had_keys.is_empty() {
            return Ok(false);
        }
        let trees = [
            &self.device_keys,
            &self.one_time,
            &self.fallback,
            &self.changes,
            &self.last_change,
            &self.store_meta,
            &self.signatures,
        ];
        self.store.sequencer().commit(
            || -> Result<((), u64)> {
                let position = self.store.transact(&trees, |t| {
                    for (tree, key) in &doomed {
                        t[*tree].delete(key)?;
                    }
                    for key in &had_keys {
                        t[0].delete(key)?;
                    }
                    changes::record::<Error>(user, &t[3], &t[4], &t[5])
                })?;
                Ok(((), position))
            },
            |_| {},
        )?;
        self.store.durable().await?;
        Ok(true)
    }
}

/// Whether two uploads of a device's keys name the same identity (algorithms and keys; the
/// signatures may differ, as others add theirs).
fn same_identity(old: &Value, new: &Value) -> bool {
    old.get("keys") == new.get("keys") && old.get("algorithms") == new.get("algorithms")
}
