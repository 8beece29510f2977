//! Devices of a user: display name, last-seen IP and time, the session that owns the device.

use ruma::UserId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};
use crate::util::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<u64>,
    pub created_ts: u64,
    /// The login session whose tokens act for this device.
    pub session_id: Option<String>,
}

/// Last-seen updates are written at most this often per device (they are not worth a write per
/// request).
const LAST_SEEN_GRANULARITY_MS: u64 = 60_000;

pub const MAX_DISPLAY_NAME_LEN: usize = 256;

pub struct Devices {
    pub(crate) tree: Tree,
}

impl Devices {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            tree: store.tree(trees::USERDEVICEID_DEVICE)?,
        })
    }

    pub fn key(user_id: &UserId, device_id: &str) -> Vec<u8> {
        keys::pair(user_id.as_str(), device_id)
    }

    pub fn get(&self, user_id: &UserId, device_id: &str) -> Result<Option<Device>> {
        match self.tree.get(Self::key(user_id, device_id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn list(&self, user_id: &UserId) -> Result<Vec<Device>> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(keys::prefix(user_id.as_str())) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    pub fn set_display_name(
        &self,
        user_id: &UserId,
        device_id: &str,
        name: Option<String>,
    ) -> Result<()> {
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_DISPLAY_NAME_LEN)
        {
            return Err(Error::InvalidParam("the display name is too long".into()));
        }
        let mut device = self
            .get(user_id, device_id)?
            .ok_or_else(|| Error::NotFound("no such device".into()))?;
        device.display_name = name;
        self.tree
            .put(Self::key(user_id, device_id), serde_json::to_vec(&device)?)?;
        Ok(())
    }

    /// Records that the device was used from `ip` now (throttled; not flushed on its own).
    pub fn touch(&self, user_id: &UserId, device_id: &str, ip: &str) -> Result<()> {
        let Some(mut device) = self.get(user_id, device_id)? else {
            return Ok(());
        };
        let now = now_ms();
        let fresh = device
            .last_seen_ts
            .is_some_and(|ts| now.saturating_sub(ts) < LAST_SEEN_GRANULARITY_MS);
        if fresh && device.last_seen_ip.as_deref() == Some(ip) {
            return Ok(());
        }
        device.last_seen_ip = Some(ip.to_owned());
        device.last_seen_ts = Some(now);
        self.tree
            .put(Self::key(user_id, device_id), serde_json::to_vec(&device)?)?;
        Ok(())
    }
}
