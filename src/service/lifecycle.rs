//! Account lifecycle steps that span several services: logging a device in, removing devices,
//! changing a password, deactivating an account. Each writes atomically and durably.

use ruma::UserId;

use super::Services;
use super::devices::{Device, Devices};
use super::sessions::{IssuedTokens, Sessions};
use crate::error::{Error, Result};
use crate::storage::abort;
use crate::util::{now_ms, random_string};

/// The outcome of a successful login or registration.
pub struct LoggedIn {
    pub device_id: String,
    pub tokens: IssuedTokens,
}

impl Services {
    /// Creates (or takes over) a device and a new session for it. A device ID that already exists
    /// for the user keeps its display name unless a new one is given; its old session is revoked.
    pub async fn log_in_device(
        &self,
        user_id: &UserId,
        device_id: Option<String>,
        display_name: Option<String>,
        refreshable: bool,
        ip: Option<String>,
    ) -> Result<LoggedIn> {
        let device_id = match device_id {
            Some(d) if d.is_empty() || d.len() > 255 => {
                return Err(Error::InvalidParam("invalid device_id".into()));
            }
            Some(d) => d,
            None => random_string(10).to_uppercase(),
        };
        if display_name
            .as_ref()
            .is_some_and(|n| n.chars().count() > super::devices::MAX_DISPLAY_NAME_LEN)
        {
            return Err(Error::InvalidParam(
                "initial_device_display_name is too long".into(),
            ));
        }
        let session_id = Sessions::new_session_id();
        let (session, tokens) =
            self.sessions
                .new_session(user_id, &device_id, &session_id, refreshable)?;
        let session_bytes = serde_json::to_vec(&session)?;
        let device_key = Devices::key(user_id, &device_id);
        self.store
            .transact(&[&self.devices.tree, &self.sessions.tree], |t| {
                let (devices, sessions) = (&t[0], &t[1]);
                let existing: Option<Device> = match devices.get(&device_key)? {
                    Some(raw) => {
                        Some(serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?)
                    }
                    None => None,
                };
                if let Some(old) = existing.as_ref().and_then(|d| d.session_id.as_ref()) {
                    sessions.delete(old.as_bytes())?;
                }
                let device = Device {
                    device_id: device_id.clone(),
                    display_name: display_name
                        .clone()
                        .or_else(|| existing.as_ref().and_then(|d| d.display_name.clone())),
                    last_seen_ip: ip.clone(),
                    last_seen_ts: Some(now_ms()),
                    created_ts: existing.as_ref().map_or_else(now_ms, |d| d.created_ts),
                    session_id: Some(session_id.clone()),
                };
                let bytes = serde_json::to_vec(&device).map_err(|e| abort(Error::internal(e)))?;
                devices.put(&device_key, bytes)?;
                sessions.put(session_id.as_bytes(), session_bytes.clone())?;
                Ok(())
            })?;
        self.store.durable().await?;
        Ok(LoggedIn { device_id, tokens })
    }

    /// Deletes devices (and so their sessions and tokens). `None` deletes every device of the
    /// user except `keep`.
    pub async fn remove_devices(
        &self,
        user_id: &UserId,
        which: Option<&[String]>,
        keep: Option<&str>,
    ) -> Result<()> {
        let targets: Vec<String> = match which {
            Some(list) => list.to_vec(),
            None => self
                .devices
                .list(user_id)?
                .into_iter()
                .map(|d| d.device_id)
                .filter(|d| Some(d.as_str()) != keep)
                .collect(),
        };
        self.store
            .transact(&[&self.devices.tree, &self.sessions.tree], |t| {
                let (devices, sessions) = (&t[0], &t[1]);
                for device_id in &targets {
                    let key = Devices::key(user_id, device_id);
                    if let Some(raw) = devices.get(&key)? {
                        let device: Device =
                            serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
                        if let Some(sid) = device.session_id {
                            sessions.delete(sid.as_bytes())?;
                        }
                        devices.delete(&key)?;
                    }
                }
                Ok(())
            })?;
        // After the devices are gone, so that no new message can reach their inboxes.
        self.to_device.remove_devices(user_id, &targets)?;
        // Their keys go too, and the user's contacts learn that the device list changed.
        if self.keys.remove_devices(user_id, &targets).await? {
            self.announce_key_change(user_id)?;
            self.federate_devices_deleted(user_id, &targets).await;
        }
        // A logged-out device gets no more pushes.
        for pusher in self.pushers(user_id)? {
            if pusher
                .device_id
                .as_ref()
                .is_some_and(|d| targets.contains(d))
            {
                self.delete_pusher(user_id, &pusher.app_id, &pusher.pushkey)?;
            }
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Sets a new password; unless `keep_devices`, every other device is logged out.
    pub async fn change_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        keep_device: Option<&str>,
        logout_devices: bool,
    ) -> Result<()> {
        super::password::check_policy(&self.config.password, new_password)?;
        self.accounts.set_password(user_id, new_password).await?;
        if logout_devices {
            self.remove_devices(user_id, None, keep_device).await?;
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Deactivates an account: it can no longer log in, every device and token is revoked, its
    /// e-mail addresses are released and two-factor data removed. The user ID stays taken.
    pub async fn deactivate_account(&self, user_id: &UserId) -> Result<()> {
        self.accounts.update(user_id, |a| a.deactivated = true)?;
        self.remove_devices(user_id, None, None).await?;
        for email in self.threepids.emails_of(user_id)? {
            self.threepids.unbind(user_id, &email.address)?;
        }
        self.mfa.remove(user_id)?;
        self.profiles.clear(user_id)?;
        for pusher in self.pushers(user_id)? {
            self.delete_pusher(user_id, &pusher.app_id, &pusher.pushkey)?;
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Whether `user_id` is a local account that exists and is active.
    pub fn is_active_user(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.accounts.get(user_id)?.is_some_and(|a| !a.deactivated))
    }
}
