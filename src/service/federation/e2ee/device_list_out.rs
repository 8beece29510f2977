//! `m.device_list_update` and `m.signing_key_update` for our users' changes, queued for every
//! other server sharing a room with the user.
//!
//! Each device update takes the next stream ID of its user's sequence and names the one before
//! it in `prev_id`; a server that missed one sees the gap and fetches the whole list
//! (`/user/devices`, which answers the latest stream ID). The stream ID is taken even when no
//! server is to be told, so that a server that shared a room earlier and cached the list sees
//! that it missed something when it hears from us again. Stream IDs are given and the EDUs
//! queued under the user's lock, so that they go out in order.
//!
//! These are called after the change is stored; a failure to queue is logged and does not undo
//! or fail what the user did.

use ruma::UserId;
use serde_json::{Value, json};

use crate::error::Result;
use crate::service::Services;
use crate::service::keys::cross_signing::{public_key, with_signatures};
use crate::storage::keys;

/// An `m.device_list_update` EDU.
pub fn device_list_update_edu(
    user: &UserId,
    device_id: &str,
    stream_id: u64,
    prev_id: Option<u64>,
    deleted: bool,
    device_keys: Option<Value>,
    display_name: Option<String>,
) -> Value {
    let mut content = json!({
        "user_id": user,
        "device_id": device_id,
        "stream_id": stream_id,
        "prev_id": prev_id.into_iter().collect::<Vec<_>>(),
        "deleted": deleted,
    });
    if let Some(device_keys) = device_keys {
        content["keys"] = device_keys;
    }
    if let Some(name) = display_name {
        content["device_display_name"] = json!(name);
    }
    json!({ "edu_type": "m.device_list_update", "content": content })
}

impl Services {
    /// The stream ID of the latest `m.device_list_update` of local user `user` (0: none yet).
    pub fn device_list_stream_id(&self, user: &UserId) -> Result<u64> {
        Ok(self
            .federation
            .e2ee
            .streams
            .get(user.as_bytes())?
            .and_then(|raw| keys::read_u64_be(&raw))
            .unwrap_or(0))
    }

    /// Tells the servers sharing a room with local user `user` that their device changed: its
    /// keys, its display name, or (`deleted`) that it is gone. Devices without keys are of no
    /// interest to other servers until they upload some, except to say they were deleted.
    pub async fn federate_device_change(&self, user: &UserId, device_id: &str, deleted: bool) {
        if let Err(e) = self.queue_device_change(user, device_id, deleted).await {
            tracing::warn!(error = %e, "queueing a device-list update for other servers failed");
        }
    }

    /// [`Services::federate_device_change`] for devices that were deleted.
    pub async fn federate_devices_deleted(&self, user: &UserId, devices: &[String]) {
        for device in devices {
            self.federate_device_change(user, device, true).await;
        }
    }

    async fn queue_device_change(
        &self,
        user: &UserId,
        device_id: &str,
        deleted: bool,
    ) -> Result<()> {
        if !self.federation.enabled() || !self.federation.is_us(user.server_name()) {
            return Ok(());
        }
        let e2ee = &self.federation.e2ee;
        let _guard = e2ee.locks.lock(&user.to_owned()).await;
        let (device_keys, display_name) = if deleted {
            (None, None)
        } else {
            let Some(device_keys) = self.keys.device_keys(user, device_id)? else {
                return Ok(());
            };
            let signatures = self.keys.signatures_for(user, device_id, user)?;
            let name = self
                .devices
                .get(user, device_id)?
                .and_then(|d| d.display_name);
            (Some(with_signatures(device_keys, signatures)), name)
        };
        let prev = self.device_list_stream_id(user)?;
        let stream_id = prev.saturating_add(1);
        e2ee.streams
            .put(user.as_bytes(), keys::u64_be(stream_id).to_vec())?;
        let edu = device_list_update_edu(
            user,
            device_id,
            stream_id,
            (prev > 0).then_some(prev),
            deleted,
            device_keys,
            display_name,
        );
        let servers = self.servers_sharing_a_room_with(user)?;
        self.federation.sender.queue_edu(&servers, &edu)?;
        self.store.durable().await?;
        Ok(())
    }

    /// Tells the servers sharing a room with local user `user` their current master and
    /// self-signing keys (with the signatures the user published on the master key).
    pub async fn federate_signing_keys(&self, user: &UserId) {
        if let Err(e) = self.queue_signing_keys(user).await {
            tracing::warn!(error = %e, "queueing a signing-key update for other servers failed");
        }
    }

    async fn queue_signing_keys(&self, user: &UserId) -> Result<()> {
        if !self.federation.enabled() || !self.federation.is_us(user.server_name()) {
            return Ok(());
        }
        let keys = self.keys.cross_signing_keys(user)?;
        let Some(master) = keys.master else {
            return Ok(());
        };
        let signatures = match public_key(&master, user, "master") {
            Ok((_, public)) => self.keys.signatures_for(user, &public, user)?,
            Err(_) => Default::default(),
        };
        let mut content =
            json!({ "user_id": user, "master_key": with_signatures(master, signatures) });
        if let Some(self_signing) = keys.self_signing {
            content["self_signing_key"] = self_signing;
        }
        let edu = json!({ "edu_type": "m.signing_key_update", "content": content });
        let servers = self.servers_sharing_a_room_with(user)?;
        self.federation.sender.queue_edu(&servers, &edu)?;
        self.store.durable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_list_updates_have_the_specified_shape() {
        let user = ruma::user_id!("@a:x");
        let first = device_list_update_edu(user, "D", 1, None, false, Some(json!({})), None);
        assert_eq!(first["edu_type"], "m.device_list_update");
        assert_eq!(
            first["content"],
            json!({ "user_id": "@a:x", "device_id": "D", "stream_id": 1, "prev_id": [],
                    "deleted": false, "keys": {} })
        );
        let gone = device_list_update_edu(user, "D", 2, Some(1), true, None, Some("n".into()));
        assert_eq!(gone["content"]["prev_id"], json!([1]));
        assert_eq!(gone["content"]["deleted"], true);
        assert_eq!(gone["content"]["device_display_name"], "n");
        assert!(gone["content"].get("keys").is_none());
    }
}
