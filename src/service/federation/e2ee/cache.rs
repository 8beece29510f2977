//! The cached device lists of remote users.
//!
//! One record per remote user: their devices (keys and display names), their master and
//! self-signing keys, and the `stream_id` of the last `m.device_list_update` the record
//! reflects. A record is taken as current only while one of our users shares a room with the
//! remote user: only then does their server send us updates. A record found otherwise is
//! dropped, and the next query asks their server again.
//!
//! Every write that changes what our users see records a key change of the remote user (in
//! the same transaction), so that `/sync` lists them in `device_lists.changed`.

use std::collections::BTreeMap;

use ruma::UserId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::validate::MAX_DEVICES_PER_USER;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::StorageError;

/// One device of a remote user, as their server described it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RemoteDevice {
    /// The device keys, checked (see [`super::validate::device_keys`]); none when the device
    /// has not uploaded any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A remote user's device list as cached.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RemoteDeviceList {
    /// The stream ID of the last update (or of the snapshot) this reflects.
    pub stream_id: u64,
    pub devices: BTreeMap<String, RemoteDevice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_signing_key: Option<Value>,
}

/// One `m.device_list_update`, its fields checked.
#[derive(Debug, Clone)]
pub struct DeviceUpdate {
    pub device_id: String,
    pub display_name: Option<String>,
    pub stream_id: u64,
    pub prev_id: Vec<u64>,
    pub deleted: bool,
    pub keys: Option<Value>,
}

/// What applying an update to a cached list came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The list changed.
    Applied,
    /// The update is not newer than the list: nothing to do.
    AlreadySeen,
    /// The update follows one we never received (or would grow the list beyond its limit): the
    /// list must be fetched again.
    Gap,
}

impl RemoteDeviceList {
    /// Applies an update when every update it follows (`prev_id`) is reflected here: those are
    /// the stream IDs up to ours, since a snapshot at stream ID N contains every update up to
    /// N. An update without `prev_id` starts a sequence and applies as it is.
    pub fn apply(&mut self, update: &DeviceUpdate) -> Applied {
        if update.stream_id <= self.stream_id {
            return Applied::AlreadySeen;
        }
        if update.prev_id.iter().any(|prev| *prev > self.stream_id) {
            return Applied::Gap;
        }
        if update.deleted {
            self.devices.remove(&update.device_id);
        } else {
            if !self.devices.contains_key(&update.device_id)
                && self.devices.len() >= MAX_DEVICES_PER_USER
            {
                return Applied::Gap;
            }
            self.devices.insert(
                update.device_id.clone(),
                RemoteDevice {
                    keys: update.keys.clone(),
                    display_name: update.display_name.clone(),
                },
            );
        }
        self.stream_id = update.stream_id;
        Applied::Applied
    }
}

fn corrupt(user: &UserId, e: serde_json::Error) -> Error {
    Error::Storage(StorageError::Corrupt(format!(
        "the cached device list of {user}: {e}"
    )))
}

impl Services {
    /// The cached device list of a remote user, whether or not it is current.
    pub(super) fn stored_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceList>> {
        match self.federation.e2ee.remote.get(user.as_bytes())? {
            Some(raw) => Ok(Some(
                serde_json::from_slice(&raw).map_err(|e| corrupt(user, e))?,
            )),
            None => Ok(None),
        }
    }

    /// The cached device list of a remote user when it is current (one of our users shares a
    /// room with them); a record that is not current is dropped.
    pub fn cached_device_list(&self, user: &UserId) -> Result<Option<RemoteDeviceList>> {
        let Some(list) = self.stored_device_list(user)? else {
            return Ok(None);
        };
        if self.shares_a_room_with_us(user)? {
            return Ok(Some(list));
        }
        self.federation.e2ee.remote.delete(user.as_bytes())?;
        Ok(None)
    }

    /// Stores a remote user's device list (`None`: forgets it). With `announce`, records a key
    /// change of the user in the same write and wakes our users who share a room with them, so
    /// that their clients download the keys again. Call it holding the user's lock.
    pub(super) async fn store_device_list(
        &self,
        user: &UserId,
        list: Option<&RemoteDeviceList>,
        announce: bool,
    ) -> Result<()> {
        let tree = &self.federation.e2ee.remote;
        let value = list.map(serde_json::to_vec).transpose()?;
        if announce {
            self.keys.record_change_with(user, tree, |t| match &value {
                Some(value) => t.put(user.as_bytes(), value.clone()),
                None => t.delete(user.as_bytes()),
            })?;
        } else {
            match value {
                Some(value) => tree.put(user.as_bytes(), value)?,
                None => tree.delete(user.as_bytes())?,
            }
        }
        self.store.durable().await?;
        if announce {
            self.announce_key_change(user)?;
        }
        Ok(())
    }

    /// Records that a remote user's keys changed, though we keep nothing of them (we never
    /// fetched their list): our users' clients then fetch the keys again.
    pub(super) async fn announce_remote_change(&self, user: &UserId) -> Result<()> {
        let tree = &self.federation.e2ee.remote;
        self.keys.record_change_with(user, tree, |_| Ok(()))?;
        self.store.durable().await?;
        self.announce_key_change(user)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn update(device: &str, stream_id: u64, prev_id: &[u64], deleted: bool) -> DeviceUpdate {
        DeviceUpdate {
            device_id: device.into(),
            display_name: Some("name".into()),
            stream_id,
            prev_id: prev_id.to_vec(),
            deleted,
            keys: Some(json!({ "device_id": device })),
        }
    }

    #[test]
    fn updates_apply_in_sequence_and_gaps_are_found() {
        let mut list = RemoteDeviceList {
            stream_id: 5,
            ..Default::default()
        };
        assert_eq!(list.apply(&update("A", 6, &[5], false)), Applied::Applied);
        assert_eq!(list.stream_id, 6);
        assert!(list.devices.contains_key("A"));
        // Replayed or older: nothing happens.
        assert_eq!(
            list.apply(&update("A", 6, &[5], true)),
            Applied::AlreadySeen
        );
        assert_eq!(list.apply(&update("A", 3, &[], true)), Applied::AlreadySeen);
        assert!(list.devices.contains_key("A"));
        // One lost in between: the list must be fetched again.
        assert_eq!(list.apply(&update("B", 9, &[8], false)), Applied::Gap);
        assert_eq!(list.stream_id, 6);
        // Following one the snapshot already reflects, or starting a sequence: applied.
        assert_eq!(list.apply(&update("A", 7, &[4, 6], true)), Applied::Applied);
        assert!(list.devices.is_empty());
        assert_eq!(list.apply(&update("C", 20, &[], false)), Applied::Applied);
        assert_eq!(list.stream_id, 20);
    }

    #[test]
    fn the_list_does_not_grow_without_bound() {
        let mut list = RemoteDeviceList::default();
        for i in 0..MAX_DEVICES_PER_USER as u64 {
            let prev = [i];
            assert_eq!(
                list.apply(&update(&format!("D{i}"), i + 1, &prev, false)),
                Applied::Applied
            );
        }
        let next = MAX_DEVICES_PER_USER as u64;
        assert_eq!(
            list.apply(&update("NEW", next + 1, &[next], false)),
            Applied::Gap
        );
        // A known device may still change.
        assert_eq!(
            list.apply(&update("D0", next + 1, &[next], false)),
            Applied::Applied
        );
    }
}
