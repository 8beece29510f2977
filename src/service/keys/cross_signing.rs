//! Cross-signing: a user's master, self-signing and user-signing keys, and the signatures users
//! publish on their own devices, their own master key and other users' master keys.
//!
//! Signatures are stored apart from the keys they sign (target user, target key, signer), so
//! that a signature on another user's master key is shown only to the signer, as clients expect.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Keys, changes};
use crate::core::keys as checks;
use crate::error::{Error, Result};
use crate::storage::keys;

/// A user's cross-signing keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CrossSigningKeys {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_signing: Option<Value>,
}

/// What `POST /keys/device_signing/upload` carries.
#[derive(Debug, Default)]
pub struct CrossSigningUpload {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

impl CrossSigningUpload {
    pub fn is_empty(&self) -> bool {
        self.master.is_none() && self.self_signing.is_none() && self.user_signing.is_none()
    }
}

/// The one public key of a cross-signing key: `(key ID, public key)`, checked to be
/// `ed25519:<key>` → `<key>` for `user` with the given usage.
pub fn public_key(key: &Value, user: &UserId, usage: &str) -> Result<(String, String)> {
    let bad = |why: &str| Error::InvalidParam(format!("{usage} key: {why}"));
    let object = key.as_object().ok_or_else(|| bad("not an object"))?;
    if object.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(bad("user_id must be the uploader's"));
    }
    let usages = object
        .get("usage")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("usage must be an array"))?;
    if !usages.iter().any(|u| u.as_str() == Some(usage)) {
        return Err(bad("usage does not name it"));
    }
    let keys = object
        .get("keys")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("keys must be an object"))?;
    let mut entries = keys.iter();
    let (Some((key_id, value)), None) = (entries.next(), entries.next()) else {
        return Err(bad("keys must hold exactly one key"));
    };
    let public = value
        .as_str()
        .ok_or_else(|| bad("the key must be a string"))?;
    if key_id.strip_prefix("ed25519:") != Some(public) {
        return Err(bad("the key ID must be ed25519:<the public key>"));
    }
    Ok((key_id.clone(), public.to_owned()))
}

/// Checks that `object` carries `signer`'s valid signature by `key_id` (public key `public`).
fn check_signed(object: &Value, signer: &UserId, key_id: &str, public: &str) -> Result<()> {
    let signature = object
        .get("signatures")
        .and_then(|s| s.get(signer.as_str()))
        .and_then(|s| s.get(key_id))
        .and_then(Value::as_str)
        .ok_or_else(|| Error::InvalidSignature(format!("no signature by {key_id}")))?;
    checks::verify(object, public, signature)
        .map_err(|e| Error::InvalidSignature(format!("signature by {key_id}: {e}")))
}

/// `object` without `signatures` and `unsigned`: what a signature covers.
fn signed_part(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("signatures");
        map.remove("unsigned");
    }
    object
}

fn signature_key(target: &UserId, key_id: &str, signer: &UserId) -> Vec<u8> {
    let mut key = keys::pair(target.as_str(), key_id);
    key.push(keys::SEP);
    key.extend_from_slice(signer.as_bytes());
    key
}

impl Keys {
    pub fn cross_signing_keys(&self, user: &UserId) -> Result<CrossSigningKeys> {
        match self.cross_signing.get(user.as_bytes())? {
            Some(raw) => Ok(serde_json::from_slice(&raw)?),
            None => Ok(CrossSigningKeys::default()),
        }
    }

    /// Whether an upload needs user-interactive auth: only when a master key exists and the
    /// upload brings any key that differs from the stored ones.
    pub fn cross_signing_upload_needs_auth(
        &self,
        user: &UserId,
        upload: &CrossSigningUpload,
    ) -> Result<bool> {
        let stored = self.cross_signing_keys(user)?;
        if stored.master.is_none() {
            return Ok(false);
        }
        let differs = |new: &Option<Value>, old: &Option<Value>| new.is_some() && new != old;
        Ok(differs(&upload.master, &stored.master)
            || differs(&upload.self_signing, &stored.self_signing)
            || differs(&upload.user_signing, &stored.user_signing))
    }

    /// Stores new cross-signing keys: each checked, the self-signing and user-signing keys signed
    /// by the master key (the new one, or the stored one). A new master key drops the keys it
    /// did not sign. Says whether anything changed.
    pub async fn upload_cross_signing(
        &self,
        user: &UserId,
        upload: CrossSigningUpload,
        device_ids: &[String],
    ) -> Result<bool> {
        let stored = self.cross_signing_keys(user)?;
        let master = match &upload.master {
            Some(master) => Some(master.clone()),
            None => stored.master.clone(),
        };
        let Some(master) = master else {
            return Err(Error::MissingParam("no master key is available".into()));
        };
        let (master_id, master_public) = public_key(&master, user, "master")?;
        let mut next = CrossSigningKeys {
            master: Some(master.clone()),
            ..Default::default()
        };
        if upload.master.is_none() || upload.master == stored.master {
            next.self_signing = stored.self_signing.clone();
            next.user_signing = stored.user_signing.clone();
        }
        let mut new_ids = vec![master_public.clone()];
        for (new, usage, slot) in [
            (&upload.self_signing, "self_signing", &mut next.self_signing),
            (&upload.user_signing, "user_signing", &mut next.user_signing),
        ] {
            if let Some(key) = new {
                let (_, public) = public_key(key, user, usage)?;
                check_signed(key, user, &master_id, &master_public)?;
                new_ids.push(public);
                *slot = Some(key.clone());
            }
        }
        if new_ids.iter().any(|id| device_ids.contains(id)) {
            return Err(Error::Forbidden(
                "a cross-signing key may not share its ID with a device".into(),
            ));
        }
        if next == stored {
            return Ok(false);
        }
        let value = serde_json::to_vec(&next)?;
        self.record_change(user, |t| {
            t[0].put(user.as_bytes(), value.clone())?;
            Ok(())
        })
        .await?;
        Ok(true)
    }

    /// Publishes signatures: on the signer's own devices (by their self-signing key), on their own
    /// master key (by one of their devices) and on other users' master keys (by their
    /// user-signing key). Each signed object must match the stored key apart from its
    /// signatures; the master keys of users of other servers are those in `remote_masters`
    /// (as their servers published them). Answers the failures per user and key ID; returns
    /// the users whose keys gained signatures.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        body: &Map<String, Value>,
        remote_masters: &BTreeMap<OwnedUserId, Value>,
    ) -> Result<(Map<String, Value>, Vec<OwnedUserId>)> {
        let mut failures = Map::new();
        let mut changed = Vec::new();
        let own = self.cross_signing_keys(signer)?;
        for (target, objects) in body {
            let Ok(target_id) = OwnedUserId::try_from(target.as_str()) else {
                failures.insert(
                    target.clone(),
                    json!({ "*": { "errcode": "M_INVALID_PARAM", "error": "not a user ID" } }),
                );
                continue;
            };
            let Some(objects) = objects.as_object() else {
                return Err(Error::BadJson(format!("{target}: expected an object")));
            };
            let mut user_failures = Map::new();
            for (key_id, object) in objects {
                match self
                    .store_signature(signer, &own, &target_id, key_id, object, remote_masters)
                    .await
                {
                    Ok(()) => {
                        if !changed.contains(&target_id) {
                            changed.push(target_id.clone());
                        }
                    }
                    Err(e) => {
                        let (_, code) = e.status_and_code();
                        user_failures.insert(
                            key_id.clone(),
                            json!({ "errcode": code, "error": e.to_string() }),
                        );
                    }
                }
            }
            if !user_failures.is_empty() {
                failures.insert(target.clone(), Value::Object(user_failures));
            }
        }
        Ok((failures, changed))
    }

    async fn store_signature(
        &self,
        signer: &UserId,
        own: &CrossSigningKeys,
        target: &UserId,
        key_id: &str,
        object: &Value,
        remote_masters: &BTreeMap<OwnedUserId, Value>,
    ) -> Result<()> {
        let not_found = || Error::NotFound(format!("no key {key_id} of {target}"));
        // What the object claims to be, and which of the signer's keys may sign it.
        let (stored, signing_key): (Value, Option<(String, String)>) = if target == signer {
            let target_keys = self.cross_signing_keys(target)?;
            if let Some(device_keys) = self.device_keys(target, key_id)? {
                let ssk = own.self_signing.as_ref().ok_or_else(|| {
                    Error::InvalidSignature("upload a self-signing key first".into())
                })?;
                (device_keys, Some(public_key(ssk, signer, "self_signing")?))
            } else if let Some(master) = target_keys.master.filter(|m| {
                public_key(m, target, "master").is_ok_and(|(_, public)| public == key_id)
            }) {
                // Signed by one of the signer's devices.
                (master, None)
            } else {
                return Err(not_found());
            }
        } else {
            let master = match remote_masters.get(target) {
                Some(master) => Some(master.clone()),
                None => self.cross_signing_keys(target)?.master,
            };
            let master = master
                .filter(|m| public_key(m, target, "master").is_ok_and(|(_, p)| p == key_id))
                .ok_or_else(not_found)?;
            let usk = own
                .user_signing
                .as_ref()
                .ok_or_else(|| Error::InvalidSignature("upload a user-signing key first".into()))?;
            (master, Some(public_key(usk, signer, "user_signing")?))
        };
        if signed_part(&stored) != signed_part(object) {
            return Err(Error::InvalidParam(
                "the signed object does not match the stored key".into(),
            ));
        }
        let signatures = object
            .get("signatures")
            .and_then(|s| s.get(signer.as_str()))
            .and_then(Value::as_object)
            .ok_or_else(|| Error::InvalidSignature("no signature by the uploader".into()))?;
        let mut verified = Map::new();
        for (sig_key_id, sig_value) in signatures {
            let public = match &signing_key {
                Some((id, public)) if id == sig_key_id => public.clone(),
                Some(_) => continue,
                None => {
                    // A device of the signer signing their master key.
                    let Some(device) = sig_key_id.strip_prefix("ed25519:") else {
                        continue;
                    };
                    let Some(device_keys) = self.device_keys(signer, device)? else {
                        continue;
                    };
                    let Some(public) = device_keys
                        .get("keys")
                        .and_then(|k| k.get(sig_key_id))
                        .and_then(Value::as_str)
                    else {
                        continue;
                    };
                    public.to_owned()
                }
            };
            check_signed(object, signer, sig_key_id, &public)?;
            verified.insert(sig_key_id.clone(), sig_value.clone());
        }
        if verified.is_empty() {
            return Err(Error::InvalidSignature(
                "no signature by a key allowed to sign this".into(),
            ));
        }
        let key = signature_key(target, key_id, signer);
        let mut all: Map<String, Value> = match self.signatures.get(&key)? {
            Some(raw) => serde_json::from_slice(&raw)?,
            None => Map::new(),
        };
        all.extend(verified);
        let value = serde_json::to_vec(&all)?;
        // The target's own signatures change what everyone sees; a signature on someone else's
        // master key is seen by the signer alone, whose devices must refetch.
        let announce = if target == signer { target } else { signer };
        self.record_change(announce, |t| {
            t[1].put(&key, value.clone())?;
            Ok(())
        })
        .await
    }

    /// The signatures on a user's key to show to `viewer`: the key owner's own, and the
    /// viewer's. Keyed by signer.
    pub fn signatures_for(
        &self,
        target: &UserId,
        key_id: &str,
        viewer: &UserId,
    ) -> Result<BTreeMap<String, Map<String, Value>>> {
        let mut out = BTreeMap::new();
        for signer in [target, viewer] {
            if let Some(raw) = self.signatures.get(signature_key(target, key_id, signer))? {
                out.insert(signer.to_string(), serde_json::from_slice(&raw)?);
            }
        }
        Ok(out)
    }

    /// Runs `write` over (cross-signing, signatures) and records a key change of `user` in the
    /// same transaction, then waits for durability.
    async fn record_change(
        &self,
        user: &UserId,
        write: impl Fn(
            &[crate::storage::TxTree<'_>],
        ) -> std::result::Result<(), crate::storage::TxError<Error>>,
    ) -> Result<()> {
        let trees = [
            &self.cross_signing,
            &self.signatures,
            &self.changes,
            &self.last_change,
            &self.store_meta,
        ];
        self.store.sequencer().commit(
            || -> Result<((), u64)> {
                let position = self.store.transact(&trees, |t| {
                    write(t)?;
                    changes::record::<Error>(user, &t[2], &t[3], &t[4])
                })?;
                Ok(((), position))
            },
            |_| {},
        )?;
        self.store.durable().await?;
        Ok(())
    }
}

/// Adds stored signatures to a key object for a viewer.
pub fn with_signatures(mut key: Value, extra: BTreeMap<String, Map<String, Value>>) -> Value {
    if extra.is_empty() {
        return key;
    }
    if let Some(object) = key.as_object_mut() {
        let signatures = object.entry("signatures").or_insert_with(|| json!({}));
        if let Some(signatures) = signatures.as_object_mut() {
            for (signer, sigs) in extra {
                let entry = signatures.entry(signer).or_insert_with(|| json!({}));
                if let Some(entry) = entry.as_object_mut() {
                    entry.extend(sigs);
                }
            }
        }
    }
    key
}
