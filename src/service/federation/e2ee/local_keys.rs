//! A local user's public keys as one viewer may see them: the device keys (each with the
//! device's display name under `unsigned`), the master and self-signing keys, and the
//! user-signing key for its owner only. Signatures shown are the owner's and the viewer's.
//! Clients (`/keys/query`) and other servers (`/user/keys/query`, `/user/devices`, where the
//! viewer is the owner: other servers' users see the owner's signatures only) read it alike.
//! Claims of local one-time keys are shared the same way.

use std::collections::BTreeMap;

use ruma::UserId;
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::keys::cross_signing::{public_key, with_signatures};

/// A local user's keys for a viewer.
#[derive(Debug, Default)]
pub struct LocalUserKeys {
    /// Device ID → device keys (with `unsigned.device_display_name` when the device has one).
    pub devices: Map<String, Value>,
    /// Device ID → display name, for the devices listed.
    pub display_names: Map<String, Value>,
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    /// Only when the viewer is the owner.
    pub user_signing_key: Option<Value>,
}

impl Services {
    /// The keys of local user `user` for `viewer`: every device with uploaded keys, or those
    /// of `devices` when it is not empty.
    pub fn local_user_keys(
        &self,
        user: &UserId,
        devices: &[String],
        viewer: &UserId,
    ) -> Result<LocalUserKeys> {
        let mut out = LocalUserKeys::default();
        for (device_id, mut keys) in self.keys.all_device_keys(user)? {
            if !devices.is_empty() && !devices.contains(&device_id) {
                continue;
            }
            let Some(device) = self.devices.get(user, &device_id)? else {
                continue;
            };
            if let Some(name) = device.display_name {
                out.display_names
                    .insert(device_id.clone(), Value::String(name.clone()));
                if let Some(object) = keys.as_object_mut()
                    && let Some(unsigned) = object
                        .entry("unsigned")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                {
                    unsigned.insert("device_display_name".into(), json!(name));
                }
            }
            let signatures = self.keys.signatures_for(user, &device_id, viewer)?;
            out.devices
                .insert(device_id, with_signatures(keys, signatures));
        }
        let cross_signing = self.keys.cross_signing_keys(user)?;
        if let Some(master) = cross_signing.master {
            let signatures = match public_key(&master, user, "master") {
                Ok((_, public)) => self.keys.signatures_for(user, &public, viewer)?,
                Err(_) => Default::default(),
            };
            out.master_key = Some(with_signatures(master, signatures));
        }
        out.self_signing_key = cross_signing.self_signing;
        if user == viewer {
            out.user_signing_key = cross_signing.user_signing;
        }
        Ok(out)
    }

    /// Claims one key per device of local user `user` (device ID → algorithm): a one-time key,
    /// or the fallback key when none is left. Devices without a key are left out. The caller
    /// makes the claims durable before answering, or a key could be handed out twice.
    pub fn claim_local_keys(
        &self,
        user: &UserId,
        devices: &BTreeMap<String, String>,
    ) -> Result<Map<String, Value>> {
        check_algorithms(devices.values())?;
        let mut claimed = Map::new();
        for (device_id, algorithm) in devices {
            if let Some((key_id, key)) = self.keys.claim(user, device_id, algorithm)? {
                claimed.insert(device_id.clone(), json!({ key_id: key }));
            }
        }
        Ok(claimed)
    }
}

/// Checks the algorithms of a claim before any key is taken.
pub fn check_algorithms<'a>(algorithms: impl IntoIterator<Item = &'a String>) -> Result<()> {
    for algorithm in algorithms {
        if algorithm.is_empty() || algorithm.len() > 255 || algorithm.contains(':') {
            return Err(Error::InvalidParam(format!(
                "{algorithm:?} is not a key algorithm"
            )));
        }
    }
    Ok(())
}
