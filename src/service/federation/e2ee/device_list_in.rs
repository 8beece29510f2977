//! `m.device_list_update` and `m.signing_key_update` from other servers, about their own users.
//!
//! Only users one of our users shares a room with are followed; updates about others are
//! ignored. An update applies to the cached list when it follows what the list reflects;
//! otherwise (a gap) the whole list is fetched again with `/user/devices`. When nothing is
//! cached yet, nothing is kept, but our users are still told that the keys changed: their
//! clients' next query fetches the list. Keys that fail the checks refuse the EDU.

use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::Value;

use super::cache::{Applied, DeviceUpdate};
use super::resync::RESYNC_TIMEOUT;
use super::validate;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::receiver::Peer;

/// The most `prev_id`s one update may name (a server sending updates one at a time names one).
pub const MAX_PREV_IDS: usize = 100;

/// The content of an `m.device_list_update`.
#[derive(Debug, Deserialize)]
pub struct DeviceListUpdateContent {
    pub user_id: OwnedUserId,
    pub device_id: String,
    #[serde(default)]
    pub device_display_name: Option<String>,
    pub stream_id: u64,
    #[serde(default)]
    pub prev_id: Option<Vec<u64>>,
    #[serde(default)]
    pub deleted: Option<bool>,
    #[serde(default)]
    pub keys: Option<Value>,
}

/// The content of an `m.signing_key_update`.
#[derive(Debug, Deserialize)]
pub struct SigningKeyUpdateContent {
    pub user_id: OwnedUserId,
    #[serde(default)]
    pub master_key: Option<Value>,
    #[serde(default)]
    pub self_signing_key: Option<Value>,
}

impl DeviceListUpdateContent {
    /// The update, its fields checked.
    pub fn check(self) -> Result<DeviceUpdate> {
        validate::device_id(&self.device_id)?;
        let prev_id = self.prev_id.unwrap_or_default();
        if prev_id.len() > MAX_PREV_IDS {
            return Err(Error::InvalidParam(format!(
                "at most {MAX_PREV_IDS} prev_ids"
            )));
        }
        let deleted = self.deleted.unwrap_or(false);
        let keys = match self.keys.filter(|k| !k.is_null()) {
            Some(keys) if !deleted => {
                validate::device_keys(&keys, &self.user_id, &self.device_id)?;
                Some(keys)
            }
            _ => None,
        };
        Ok(DeviceUpdate {
            device_id: self.device_id,
            display_name: validate::display_name(self.device_display_name),
            stream_id: self.stream_id,
            prev_id,
            deleted,
            keys,
        })
    }
}

impl Peer<'_> {
    pub async fn receive_device_list_update(&self, content: DeviceListUpdateContent) -> Result<()> {
        self.check_own_user(&content.user_id)?;
        let user = content.user_id.clone();
        let update = content.check()?;
        self.services.apply_device_list_update(&user, update).await
    }

    pub async fn receive_signing_key_update(&self, content: SigningKeyUpdateContent) -> Result<()> {
        self.check_own_user(&content.user_id)?;
        self.services.apply_signing_key_update(content).await
    }
}

impl Services {
    /// Applies a checked device-list update of remote user `user` (see the module's doc).
    pub async fn apply_device_list_update(
        &self,
        user: &UserId,
        update: DeviceUpdate,
    ) -> Result<()> {
        let _guard = self.federation.e2ee.locks.lock(&user.to_owned()).await;
        if !self.shares_a_room_with_us(user)? {
            // Not followed: a list kept from an earlier shared room can no longer be trusted.
            self.federation.e2ee.remote.delete(user.as_bytes())?;
            return Ok(());
        }
        let Some(mut list) = self.stored_device_list(user)? else {
            return self.announce_remote_change(user).await;
        };
        match list.apply(&update) {
            Applied::Applied => self.store_device_list(user, Some(&list), true).await,
            Applied::AlreadySeen => Ok(()),
            Applied::Gap => self.resync_or_forget(user).await,
        }
    }

    /// Applies an `m.signing_key_update` of a remote user: the new master key (a self-signing
    /// key it did not sign is dropped) and self-signing key, which must be signed by the
    /// master key. Either being invalid refuses the update.
    pub async fn apply_signing_key_update(&self, update: SigningKeyUpdateContent) -> Result<()> {
        let user = &update.user_id;
        if let Some(master) = &update.master_key {
            validate::master_key(master, user)?;
        }
        let _guard = self.federation.e2ee.locks.lock(user).await;
        if !self.shares_a_room_with_us(user)? {
            self.federation.e2ee.remote.delete(user.as_bytes())?;
            return Ok(());
        }
        let Some(mut list) = self.stored_device_list(user)? else {
            return self.announce_remote_change(user).await;
        };
        if let Some(master) = update.master_key {
            list.master_key = Some(master);
        }
        if let Some(self_signing) = update.self_signing_key {
            let Some(master) = &list.master_key else {
                // Nothing to check it against: ask for the whole list.
                return self.resync_or_forget(user).await;
            };
            validate::self_signing_key(&self_signing, user, master)?;
            list.self_signing_key = Some(self_signing);
        }
        // A self-signing key the (new) master key did not sign is not theirs any more.
        let (master, self_signing) = validate::cross_signing_keys(
            user,
            list.master_key.take(),
            list.self_signing_key.take(),
        );
        list.master_key = master;
        list.self_signing_key = self_signing;
        self.store_device_list(user, Some(&list), true).await
    }

    /// Fetches a remote user's list again; when that fails, forgets what we had (the next
    /// query asks their server). Either way our users are told the keys changed. Call it
    /// holding the user's lock.
    async fn resync_or_forget(&self, user: &UserId) -> Result<()> {
        match self.resync_device_list(user, RESYNC_TIMEOUT, true).await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.store_device_list(user, None, true).await?;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn content(value: Value) -> DeviceListUpdateContent {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn updates_are_checked() {
        let base = json!({ "user_id": "@a:x", "device_id": "D", "stream_id": 2 });
        let update = content(base.clone()).check().unwrap();
        assert!(update.prev_id.is_empty());
        assert!(!update.deleted);
        // A deletion carries no keys, whatever was sent.
        let mut deleted = base.clone();
        deleted["deleted"] = json!(true);
        deleted["keys"] = json!({ "junk": 1 });
        assert!(content(deleted).check().unwrap().keys.is_none());
        // Keys that are not the device's own, validly signed, refuse the update.
        let mut bad_keys = base.clone();
        bad_keys["keys"] = json!({ "user_id": "@a:x", "device_id": "OTHER" });
        assert!(content(bad_keys).check().is_err());
        let mut bad_device = base.clone();
        bad_device["device_id"] = json!("");
        assert!(content(bad_device).check().is_err());
        let mut many = base;
        many["prev_id"] = json!((0..=MAX_PREV_IDS as u64).collect::<Vec<_>>());
        assert!(content(many).check().is_err());
        // Malformed contents do not parse.
        for bad in [
            json!({ "user_id": "not a user", "device_id": "D", "stream_id": 1 }),
            json!({ "user_id": "@a:x", "device_id": "D", "stream_id": -1 }),
            json!({ "user_id": "@a:x", "device_id": "D", "stream_id": 1, "prev_id": ["x"] }),
        ] {
            assert!(
                serde_json::from_value::<DeviceListUpdateContent>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
