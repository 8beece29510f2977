//! One-time and fallback keys: counts for `/sync` and `/keys/upload`, and claiming.
//!
//! Each one-time key goes to exactly one claimer: claiming removes the key from the store
//! atomically, and a claimer that loses the race for a key takes the next one. When a device has
//! no one-time key of the algorithm left, its fallback key is handed out (and stays, marked used,
//! until the device uploads a new one).

use std::collections::BTreeMap;

use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Keys, device_key, device_prefix};
use crate::error::Result;

/// A stored fallback key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fallback {
    pub key_id: String,
    pub key: Value,
    pub used: bool,
}

/// How many times a claim tries the next key after losing a race for one.
const MAX_CLAIM_ATTEMPTS: usize = 64;

impl Keys {
    /// Unclaimed one-time keys of a device, per algorithm. `signed_curve25519` is always listed
    /// (zero included), as clients read its absence as "unknown".
    pub fn one_time_key_counts(
        &self,
        user: &UserId,
        device: &str,
    ) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        let prefix = device_prefix(user, device);
        for item in self.one_time.scan_prefix(&prefix) {
            let (key, _) = item?;
            let key_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            if let Some((algorithm, _)) = key_id.split_once(':') {
                *counts.entry(algorithm.to_owned()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// The algorithms for which the device has a fallback key that was not handed out yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &str) -> Result<Vec<String>> {
        let prefix = device_prefix(user, device);
        let mut out = Vec::new();
        for item in self.fallback.scan_prefix(&prefix) {
            let (key, value) = item?;
            let fallback: Fallback = serde_json::from_slice(&value)?;
            if !fallback.used {
                out.push(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
            }
        }
        Ok(out)
    }

    /// Claims one key of `algorithm` for a device: a one-time key if one is left (removed, so
    /// that nobody else gets it), else the fallback key. Answers `(key ID, key)`.
    pub fn claim(
        &self,
        user: &UserId,
        device: &str,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>> {
        let mut prefix = device_prefix(user, device);
        prefix.extend_from_slice(algorithm.as_bytes());
        prefix.push(b':');
        let device_len = device_prefix(user, device).len();
        for _ in 0..MAX_CLAIM_ATTEMPTS {
            let Some(first) = self.one_time.scan_prefix(&prefix).next() else {
                break;
            };
            let (key, _) = first?;
            // Another claimer may take it first: then try the next one.
            if let Some(value) = self.one_time.take(&key)? {
                let key_id = String::from_utf8_lossy(&key[device_len..]).into_owned();
                return Ok(Some((key_id, serde_json::from_slice(&value)?)));
            }
        }
        let fallback_key = device_key(user, device, algorithm);
        let Some(raw) = self.fallback.get(&fallback_key)? else {
            return Ok(None);
        };
        let mut fallback: Fallback = serde_json::from_slice(&raw)?;
        if !fallback.used {
            fallback.used = true;
            // Only the flag changes; a concurrent new upload wins over it.
            let updated = serde_json::to_vec(&fallback)?;
            self.fallback
                .compare_and_swap(&fallback_key, Some(raw.as_ref()), Some(updated))?;
        }
        Ok(Some((fallback.key_id, fallback.key)))
    }
}
