//! What other servers ask of our users' keys: `GET /user/devices/{userId}`,
//! `POST /user/keys/query` and `POST /user/keys/claim`. Only our own users are answered for:
//! a request naming a user of another server is refused whole (400 `M_INVALID_PARAM`), as no
//! server may be used to relay another's keys. An unknown local user has no devices.

use std::collections::BTreeMap;

use ruma::{OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::local_keys::check_algorithms;
use crate::error::{Error, Result};
use crate::service::Services;

/// The most users (query) or devices (claim) one request may name.
pub const MAX_TARGETS: usize = 1000;

impl Services {
    fn check_ours(&self, user: &UserId) -> Result<()> {
        if self.federation.is_us(user.server_name()) {
            Ok(())
        } else {
            Err(Error::InvalidParam(format!(
                "{user} is not a user of this server"
            )))
        }
    }

    /// `GET /user/devices/{userId}`: the devices with keys, their display names, the master
    /// and self-signing keys, and the stream ID of the latest `m.device_list_update` sent for
    /// the user, which the asking server matches against the `prev_id` of the next one. Read
    /// under the user's update lock, so that the stream ID and the devices agree.
    pub async fn serve_user_devices(&self, user: &UserId) -> Result<Value> {
        self.check_ours(user)?;
        let _guard = self.federation.e2ee.locks.lock(&user.to_owned()).await;
        let stream_id = self.device_list_stream_id(user)?;
        let keys = self.local_user_keys(user, &[], user)?;
        let devices: Vec<Value> = keys
            .devices
            .into_iter()
            .map(|(device_id, mut device_keys)| {
                if let Some(object) = device_keys.as_object_mut() {
                    object.remove("unsigned");
                }
                let mut device = json!({ "device_id": device_id, "keys": device_keys });
                if let Some(name) = keys.display_names.get(&device_id) {
                    device["device_display_name"] = name.clone();
                }
                device
            })
            .collect();
        let mut answer = json!({ "user_id": user, "stream_id": stream_id, "devices": devices });
        if let Some(master) = keys.master_key {
            answer["master_key"] = master;
        }
        if let Some(self_signing) = keys.self_signing_key {
            answer["self_signing_key"] = self_signing;
        }
        Ok(answer)
    }

    /// `POST /user/keys/query`: the device keys of our users (all their devices, or those
    /// listed), with display names, and their master and self-signing keys.
    pub fn serve_keys_query(&self, query: &BTreeMap<OwnedUserId, Vec<String>>) -> Result<Value> {
        if query.len() > MAX_TARGETS {
            return Err(Error::InvalidParam(format!(
                "at most {MAX_TARGETS} users per query"
            )));
        }
        for user in query.keys() {
            self.check_ours(user)?;
        }
        let mut device_keys = Map::new();
        let mut master_keys = Map::new();
        let mut self_signing_keys = Map::new();
        for (user, devices) in query {
            let keys = self.local_user_keys(user, devices, user)?;
            device_keys.insert(user.to_string(), Value::Object(keys.devices));
            if let Some(master) = keys.master_key {
                master_keys.insert(user.to_string(), master);
            }
            if let Some(self_signing) = keys.self_signing_key {
                self_signing_keys.insert(user.to_string(), self_signing);
            }
        }
        Ok(json!({
            "device_keys": device_keys,
            "master_keys": master_keys,
            "self_signing_keys": self_signing_keys,
        }))
    }

    /// `POST /user/keys/claim`: one key per device named, taken as for a local claim (a
    /// one-time key goes to one claimer only; the fallback key when none is left). Durable
    /// before it answers.
    pub async fn serve_keys_claim(
        &self,
        claim: &BTreeMap<OwnedUserId, BTreeMap<String, String>>,
    ) -> Result<Value> {
        let targets: usize = claim.values().map(BTreeMap::len).sum();
        if targets > MAX_TARGETS {
            return Err(Error::InvalidParam(format!(
                "at most {MAX_TARGETS} devices per claim"
            )));
        }
        for (user, devices) in claim {
            self.check_ours(user)?;
            check_algorithms(devices.values())?;
        }
        let mut claimed = Map::new();
        for (user, devices) in claim {
            let keys = self.claim_local_keys(user, devices)?;
            if !keys.is_empty() {
                claimed.insert(user.to_string(), Value::Object(keys));
            }
        }
        if !claimed.is_empty() {
            self.store.durable().await?;
        }
        Ok(json!({ "one_time_keys": claimed }))
    }
}
