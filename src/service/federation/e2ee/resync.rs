//! Fetching a remote user's whole device list from their server (`GET /user/devices/{userId}`):
//! when one of our users first asks for their keys, and when an `m.device_list_update` shows
//! that we missed one. The answer is checked: it must be about the user asked for, devices
//! whose keys fail the checks are left out, and cross-signing keys that fail are dropped.

use std::time::Duration;

use ruma::UserId;
use serde_json::Value;

use super::cache::{RemoteDevice, RemoteDeviceList};
use super::validate;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::membership::encode;
use crate::service::federation::request::Limit;

/// How long fetching one user's device list may take when an update calls for it (a client's
/// query has its own `timeout`).
pub const RESYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The device list in a `/user/devices` answer about `user`, checked.
pub fn parse_user_devices(user: &UserId, answer: &Value) -> Result<RemoteDeviceList> {
    let bad = |why: &str| Error::BadJson(format!("/user/devices of {user}: {why}"));
    if answer.get("user_id").and_then(Value::as_str) != Some(user.as_str()) {
        return Err(bad("about another user"));
    }
    let stream_id = answer
        .get("stream_id")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("stream_id must be a non-negative integer"))?;
    let devices = answer
        .get("devices")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("devices must be an array"))?;
    if devices.len() > validate::MAX_DEVICES_PER_USER {
        return Err(Error::TooLarge(format!(
            "{user} has more than {} devices",
            validate::MAX_DEVICES_PER_USER
        )));
    }
    let mut list = RemoteDeviceList {
        stream_id,
        ..Default::default()
    };
    for device in devices {
        let Some(device_id) = device.get("device_id").and_then(Value::as_str) else {
            continue;
        };
        let Some(keys) = device.get("keys") else {
            continue;
        };
        if let Err(e) = validate::device_keys(keys, user, device_id) {
            tracing::info!(%user, error = %e, "left out a device whose keys fail the checks");
            continue;
        }
        let display_name = device
            .get("device_display_name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        list.devices.insert(
            device_id.to_owned(),
            RemoteDevice {
                keys: Some(keys.clone()),
                display_name: validate::display_name(display_name),
            },
        );
    }
    let (master, self_signing) = validate::cross_signing_keys(
        user,
        answer.get("master_key").cloned(),
        answer.get("self_signing_key").cloned(),
    );
    list.master_key = master;
    list.self_signing_key = self_signing;
    Ok(list)
}

impl Services {
    /// Asks the server of remote user `user` for their device list, within `timeout`. Keeps it
    /// when one of our users shares a room with them (then updates keep it current); with
    /// `announce`, our users' clients are told it changed. Call it holding the user's lock.
    pub(super) async fn resync_device_list(
        &self,
        user: &UserId,
        timeout: Duration,
        announce: bool,
    ) -> Result<RemoteDeviceList> {
        let path = format!(
            "/_matrix/federation/v1/user/devices/{}",
            encode(user.as_str())
        );
        let request = self.federation.get(user.server_name(), &path, Limit::Small);
        let answer = tokio::time::timeout(timeout, request).await.map_err(|_| {
            Error::Unreachable(format!("{} did not answer in time", user.server_name()))
        })??;
        let list = parse_user_devices(user, &answer)?;
        if self.shares_a_room_with_us(user)? {
            self.store_device_list(user, Some(&list), announce).await?;
        } else if announce {
            self.announce_remote_change(user).await?;
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_about_someone_else_or_malformed_are_refused() {
        let user = ruma::user_id!("@a:x");
        let ok = json!({ "user_id": "@a:x", "stream_id": 3, "devices": [
            { "device_id": "D", "keys": { "user_id": "@a:x" } },
            { "keys": {} },
            "junk",
        ] });
        let list = parse_user_devices(user, &ok).unwrap();
        assert_eq!(list.stream_id, 3);
        // Unsigned keys and entries without a device ID are left out.
        assert!(list.devices.is_empty());
        for bad in [
            json!({ "user_id": "@b:x", "stream_id": 3, "devices": [] }),
            json!({ "user_id": "@a:x", "stream_id": -1, "devices": [] }),
            json!({ "user_id": "@a:x", "stream_id": 3, "devices": {} }),
            json!([]),
        ] {
            assert!(parse_user_devices(user, &bad).is_err(), "{bad}");
        }
        let many: Vec<Value> = (0..=validate::MAX_DEVICES_PER_USER)
            .map(|i| json!({ "device_id": format!("D{i}") }))
            .collect();
        let too_many = json!({ "user_id": "@a:x", "stream_id": 1, "devices": many });
        assert!(matches!(
            parse_user_devices(user, &too_many),
            Err(Error::TooLarge(_))
        ));
    }
}
