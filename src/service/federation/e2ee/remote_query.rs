//! Client `/keys/query` for users of other servers.
//!
//! A user whose device list is cached and current is answered from the cache. The others are
//! asked of their server, one `POST /user/keys/query` per server (all at once, each within
//! the client's `timeout`), for all their devices; a server that fails or does not answer in
//! time is listed in `failures`. What comes back is checked (keys filed under the right user
//! and device, validly self-signed; cross-signing keys consistent); the complete list of a user
//! one of our users shares a room with is cached. Such a list has stream ID 0 ("unknown"), so
//! the first `m.device_list_update` that follows an earlier one makes us fetch the list again
//! with `/user/devices` rather than trust that nothing was missed.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::cache::{RemoteDevice, RemoteDeviceList};
use super::validate;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::service::keys::cross_signing::with_signatures;

/// The most users of one server asked for in one `/user/keys/query`.
const KEY_QUERY_BATCH: usize = 200;

/// The default `timeout` of a client's query or claim (the specification's).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a client may make us wait for other servers.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// The client's `timeout` (milliseconds), bounded.
pub fn client_timeout(timeout_ms: Option<u64>) -> Duration {
    timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TIMEOUT)
        .min(MAX_TIMEOUT)
}

/// The keys of users of other servers, as a client's query answers them.
#[derive(Debug, Default)]
pub struct RemoteKeys {
    pub device_keys: Map<String, Value>,
    pub master_keys: Map<String, Value>,
    pub self_signing_keys: Map<String, Value>,
    /// Server name → why it could not be asked.
    pub failures: Map<String, Value>,
}

/// How a failed server is listed in `failures`.
pub fn failure(error: &Error) -> Value {
    let (_, errcode) = error.status_and_code();
    json!({ "errcode": errcode, "error": error.to_string() })
}

/// The device lists in a `/user/keys/query` answer, for the users asked about, checked: keys
/// not validly signed by their device, or filed under another user or device, are left out.
pub fn parse_keys_answer(
    users: &[OwnedUserId],
    answer: &Value,
) -> BTreeMap<OwnedUserId, RemoteDeviceList> {
    let mut out = BTreeMap::new();
    for user in users {
        let Some(devices) = answer
            .get("device_keys")
            .and_then(|d| d.get(user.as_str()))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let mut list = RemoteDeviceList::default();
        for (device_id, keys) in devices.iter().take(validate::MAX_DEVICES_PER_USER) {
            if let Err(e) = validate::device_keys(keys, user, device_id) {
                tracing::info!(%user, error = %e, "left out a device whose keys fail the checks");
                continue;
            }
            let display_name = keys
                .pointer("/unsigned/device_display_name")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut keys = keys.clone();
            if let Some(object) = keys.as_object_mut() {
                object.remove("unsigned");
            }
            list.devices.insert(
                device_id.clone(),
                RemoteDevice {
                    keys: Some(keys),
                    display_name: validate::display_name(display_name),
                },
            );
        }
        let key_of = |field: &str| {
            answer
                .get(field)
                .and_then(|k| k.get(user.as_str()))
                .cloned()
        };
        let (master, self_signing) =
            validate::cross_signing_keys(user, key_of("master_keys"), key_of("self_signing_keys"));
        list.master_key = master;
        list.self_signing_key = self_signing;
        out.insert(user.clone(), list);
    }
    out
}

impl RemoteKeys {
    /// Adds a remote user's list as `viewer` sees it (the devices asked for, or all).
    fn add(
        &mut self,
        services: &Services,
        user: &UserId,
        list: &RemoteDeviceList,
        devices: &[String],
        viewer: &UserId,
    ) -> Result<()> {
        let mut found = Map::new();
        for (device_id, device) in &list.devices {
            let Some(keys) = &device.keys else {
                continue;
            };
            if !devices.is_empty() && !devices.contains(device_id) {
                continue;
            }
            let mut keys = keys.clone();
            if let Some(name) = &device.display_name
                && let Some(object) = keys.as_object_mut()
            {
                object.insert("unsigned".into(), json!({ "device_display_name": name }));
            }
            found.insert(device_id.clone(), keys);
        }
        self.device_keys
            .insert(user.to_string(), Value::Object(found));
        if let Some(master) = &list.master_key {
            let signatures = match validate::master_key(master, user) {
                Ok(public) => services.keys.signatures_for(user, &public, viewer)?,
                Err(_) => Default::default(),
            };
            self.master_keys.insert(
                user.to_string(),
                with_signatures(master.clone(), signatures),
            );
        }
        if let Some(self_signing) = &list.self_signing_key {
            self.self_signing_keys
                .insert(user.to_string(), self_signing.clone());
        }
        Ok(())
    }
}

impl Services {
    /// The keys of users of other servers for `viewer`'s `/keys/query` (user → the devices
    /// asked for, or none for all), each server within `timeout`.
    pub async fn query_remote_keys(
        &self,
        viewer: &UserId,
        query: &BTreeMap<OwnedUserId, Vec<String>>,
        timeout: Duration,
    ) -> Result<RemoteKeys> {
        let mut out = RemoteKeys::default();
        let mut to_ask: BTreeMap<OwnedServerName, Vec<OwnedUserId>> = BTreeMap::new();
        for (user, devices) in query {
            match self.cached_device_list(user)? {
                Some(list) => out.add(self, user, &list, devices, viewer)?,
                None => to_ask
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .push(user.clone()),
            }
        }
        let answers = join_all(to_ask.into_iter().map(|(server, users)| async move {
            let asked = tokio::time::timeout(timeout, self.ask_keys(&server, &users)).await;
            let answer = asked.unwrap_or_else(|_| {
                Err(Error::Unreachable(format!(
                    "{server} did not answer in time"
                )))
            });
            (server, answer)
        }))
        .await;
        for (server, answer) in answers {
            match answer {
                Ok(lists) => {
                    for (user, list) in &lists {
                        let devices = query.get(user).map(Vec::as_slice).unwrap_or_default();
                        out.add(self, user, list, devices, viewer)?;
                    }
                }
                Err(e) => {
                    tracing::info!(%server, error = %e, "a server could not be asked for keys");
                    out.failures.insert(server.to_string(), failure(&e));
                }
            }
        }
        Ok(out)
    }

    /// Asks `server` for all devices of `users`, [`KEY_QUERY_BATCH`] users per request (so that
    /// each answer stays within its size limit, however big the room); caches the lists of those
    /// one of our users shares a room with.
    async fn ask_keys(
        &self,
        server: &OwnedServerName,
        users: &[OwnedUserId],
    ) -> Result<BTreeMap<OwnedUserId, RemoteDeviceList>> {
        let mut lists = BTreeMap::new();
        for batch in users.chunks(KEY_QUERY_BATCH) {
            lists.extend(self.ask_keys_batch(server, batch).await?);
        }
        Ok(lists)
    }

    /// One `/user/keys/query` to `server` for all devices of `users`.
    async fn ask_keys_batch(
        &self,
        server: &OwnedServerName,
        users: &[OwnedUserId],
    ) -> Result<BTreeMap<OwnedUserId, RemoteDeviceList>> {
        let body: Map<String, Value> = users
            .iter()
            .map(|user| (user.to_string(), json!([])))
            .collect();
        let answer = self
            .federation
            .post(
                server,
                "/_matrix/federation/v1/user/keys/query",
                &json!({ "device_keys": body }),
                // A batch of users with many devices each (and their cross-signing keys) can pass
                // 1 MiB.
                Limit::Batch,
            )
            .await?;
        if !answer.get("device_keys").is_some_and(Value::is_object) {
            return Err(Error::Unreachable(format!(
                "{server} answered a key query without device_keys"
            )));
        }
        let lists = parse_keys_answer(users, &answer);
        for (user, list) in &lists {
            let _guard = self.federation.e2ee.locks.lock(user).await;
            // A list stored meanwhile (by an update or a resync) is at least as recent.
            if self.stored_device_list(user)?.is_none() && self.shares_a_room_with_us(user)? {
                self.store_device_list(user, Some(list), false).await?;
            }
        }
        Ok(lists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_only_what_was_asked_and_checks() {
        let asked = vec![OwnedUserId::try_from("@a:x").unwrap()];
        let answer = json!({
            "device_keys": {
                "@a:x": { "D": { "user_id": "@a:x", "device_id": "D" } },
                "@other:x": {},
            },
            "master_keys": {
                "@a:x": { "user_id": "@a:x", "usage": ["master"], "keys": { "ed25519:K": "K" } },
            },
        });
        let lists = parse_keys_answer(&asked, &answer);
        assert_eq!(lists.len(), 1);
        let list = &lists[&asked[0]];
        assert!(list.devices.is_empty(), "unsigned keys are left out");
        assert!(list.master_key.is_some());
        assert_eq!(list.stream_id, 0);
        assert!(parse_keys_answer(&asked, &json!("junk")).is_empty());
        assert_eq!(client_timeout(None), DEFAULT_TIMEOUT);
        assert_eq!(client_timeout(Some(u64::MAX)), MAX_TIMEOUT);
        assert_eq!(client_timeout(Some(1500)), Duration::from_millis(1500));
    }
}
