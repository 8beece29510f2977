//! Send-to-device messaging: messages from one device to other devices, outside any room,
//! delivered exactly once through `/sync`.
//!
//! `PUT /sendToDevice/{eventType}/{txnId}` stores one copy of the message in each recipient
//! device's inbox, keyed by the stream position the request takes (one per request: a request
//! sends at most one message to each device), in the same transaction as the transaction-ID
//! record that makes retransmissions no-ops. A sync delivers the device's inbox oldest first,
//! at most [`SYNC_LIMIT`] messages; when more wait, the sync's token stops at the last message
//! delivered, so the rest come with the next sync. A client acknowledges messages by sending
//! a later sync the token that followed them: everything in the inbox at or before a sync's
//! `since` is deleted then. A sync with an older token gets the messages again.
//!
//! Messages to users of other servers are not stored here: `send` hands them back, grouped by
//! server, for the federation sender to carry (`m.direct_to_device`); a retransmission hands
//! back nothing.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use ruma::{OwnedServerName, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::devices::Devices;
use crate::service::notifier::Notifier;
use crate::storage::{StorageError, Store, Tree, keys, stream, trees};

/// The device ID that stands for every device of the user.
pub const ALL_DEVICES: &str = "*";
/// The most messages one sync delivers to a device (the specification's recommendation).
pub const SYNC_LIMIT: usize = 100;
/// The longest event type accepted.
pub const MAX_TYPE_BYTES: usize = 255;
/// The longest transaction ID accepted.
pub const MAX_TXN_BYTES: usize = 255;
/// The longest device ID accepted (as for logins).
pub const MAX_DEVICE_ID_BYTES: usize = 255;
/// The largest content of one message, serialized.
pub const MAX_CONTENT_BYTES: usize = 65_536;

/// The messages of one request: recipient → device ID or [`ALL_DEVICES`] → content.
pub type Messages = BTreeMap<OwnedUserId, BTreeMap<String, Value>>;

/// The messages of a request to users of other servers, by server.
pub type RemoteMessages = BTreeMap<OwnedServerName, Messages>;

/// What a sync delivers to a device.
#[derive(Debug, Default)]
pub struct ToDeviceBatch {
    /// `{sender, type, content}` events, oldest first.
    pub events: Vec<Value>,
    /// The sync's new `upto`: lower than asked when more messages wait than one batch holds.
    pub upto: u64,
    /// More messages wait (the next sync should not wait for a change).
    pub limited: bool,
}

/// The inboxes of every device and the transaction IDs of every sender device.
pub struct ToDevice {
    store: Store,
    notifier: Arc<Notifier>,
    server_name: OwnedServerName,
    /// user, device, stream position (u64 BE) → `{sender, type, content}`.
    inbox: Tree,
    /// sender, sender device, event type, txn ID → empty.
    txns: Tree,
    /// `userdeviceid_device`, read in the sending transaction so that a device deleted
    /// meanwhile gets nothing.
    devices: Tree,
    store_meta: Tree,
}

/// `user SEP device SEP`: the prefix of a device's inbox entries and of its transaction IDs.
fn device_prefix(user: &UserId, device: &str) -> Vec<u8> {
    let mut key = keys::pair(user.as_str(), device);
    key.push(keys::SEP);
    key
}

fn inbox_key(user: &UserId, device: &str, position: u64) -> Vec<u8> {
    let mut key = device_prefix(user, device);
    key.extend_from_slice(&keys::u64_be(position));
    key
}

fn txn_key(sender: &UserId, device: &str, kind: &str, txn_id: &str) -> Vec<u8> {
    let mut key = device_prefix(sender, device);
    key.extend_from_slice(kind.as_bytes());
    key.push(keys::SEP);
    key.extend_from_slice(txn_id.as_bytes());
    key
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(StorageError::Corrupt(format!("to-device: {what}")))
}

/// Checks a request before anything is written.
pub fn validate(kind: &str, txn_id: &str, messages: &Messages) -> Result<()> {
    if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(Error::InvalidParam(format!(
            "the event type must have 1 to {MAX_TYPE_BYTES} bytes"
        )));
    }
    if txn_id.is_empty() || txn_id.len() > MAX_TXN_BYTES {
        return Err(Error::InvalidParam(format!(
            "the transaction ID must have 1 to {MAX_TXN_BYTES} bytes"
        )));
    }
    for (user, devices) in messages {
        for (device, content) in devices {
            if device.is_empty() || device.len() > MAX_DEVICE_ID_BYTES {
                return Err(Error::InvalidParam(format!(
                    "invalid device ID for {user}: it must have 1 to {MAX_DEVICE_ID_BYTES} bytes"
                )));
            }
            if !content.is_object() {
                return Err(Error::BadJson(format!(
                    "the message to {user} {device} must be a JSON object"
                )));
            }
            if serde_json::to_vec(content)?.len() > MAX_CONTENT_BYTES {
                return Err(Error::TooLarge(format!(
                    "a message may not exceed {MAX_CONTENT_BYTES} bytes"
                )));
            }
        }
    }
    Ok(())
}

/// How a send ended inside its transaction.
enum Sent {
    /// The transaction ID was used before: nothing was written.
    Retransmission,
    /// Stored for these recipients (none: only the transaction ID was recorded).
    Stored(BTreeSet<OwnedUserId>),
}

impl ToDevice {
    pub fn new(
        store: &Store,
        notifier: Arc<Notifier>,
        server_name: OwnedServerName,
    ) -> Result<Self> {
        Ok(Self {
            inbox: store.tree(trees::USERDEVICEID_STREAMPOS_TODEVICE)?,
            txns: store.tree(trees::USERDEVICETYPETXN_TODEVICE)?,
            devices: store.tree(trees::USERDEVICEID_DEVICE)?,
            store_meta: store.tree(trees::META)?,
            store: store.clone(),
            notifier,
            server_name,
        })
    }

    /// Sends `messages` of type `kind` from `sender`'s device `sender_device`. The same
    /// `(sender device, type, txn ID)` again does nothing. A device named explicitly wins over
    /// [`ALL_DEVICES`] for the same user, so each device gets at most one message. Unknown
    /// users and devices are skipped. Messages to users of other servers are answered, by
    /// server, for federation to carry (none for a retransmission). Durable before it returns;
    /// wakes the recipients' waiting syncs.
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &str,
        kind: &str,
        txn_id: &str,
        messages: &Messages,
    ) -> Result<RemoteMessages> {
        validate(kind, txn_id, messages)?;
        // (recipient, device, event), resolved before the transaction; the transaction checks
        // that each device still exists.
        let mut plan: Vec<(&UserId, String, Vec<u8>)> = Vec::new();
        let mut remote = RemoteMessages::new();
        for (user, devices) in messages {
            if user.server_name() != self.server_name {
                remote
                    .entry(user.server_name().to_owned())
                    .or_default()
                    .insert(user.clone(), devices.clone());
                continue;
            }
            let event = |content: &Value| {
                serde_json::to_vec(&json!({ "sender": sender, "type": kind, "content": content }))
            };
            for (device, content) in devices.iter().filter(|(d, _)| *d != ALL_DEVICES) {
                plan.push((user, device.clone(), event(content)?));
            }
            if let Some(content) = devices.get(ALL_DEVICES) {
                let bytes = event(content)?;
                for item in self.devices.scan_prefix(keys::prefix(user.as_str())) {
                    let (key, _) = item?;
                    let device = keys::second(&key).ok_or_else(|| corrupt("bad device key"))?;
                    if !devices.contains_key(device) {
                        plan.push((user, device.to_owned(), bytes.clone()));
                    }
                }
            }
        }
        let txn = txn_key(sender, sender_device, kind, txn_id);
        let trees = [&self.inbox, &self.txns, &self.devices, &self.store_meta];
        let sent = self.store.sequencer().commit(
            || -> Result<(Sent, u64)> {
                let outcome = self.store.transact(&trees, |t| {
                    if t[1].get(&txn)?.is_some() {
                        return Ok((Sent::Retransmission, None));
                    }
                    t[1].put(&txn, Vec::new())?;
                    let mut live = Vec::new();
                    for (user, device, event) in &plan {
                        if t[2].get(Devices::key(user, device))?.is_some() {
                            live.push((*user, device, event));
                        }
                    }
                    if live.is_empty() {
                        return Ok((Sent::Stored(BTreeSet::new()), None));
                    }
                    let position = stream::next(&t[3])?;
                    let mut recipients = BTreeSet::new();
                    for (user, device, event) in live {
                        t[0].put(inbox_key(user, device, position), event.clone())?;
                        recipients.insert(user.to_owned());
                    }
                    Ok((Sent::Stored(recipients), Some(position)))
                })?;
                // Nothing stored: report a position already committed, so `upto` stays.
                Ok(match outcome {
                    (sent, Some(position)) => (sent, position),
                    (sent, None) => (sent, self.store.sequencer().upto()),
                })
            },
            |_| {},
        )?;
        // A retransmission waits too: the original request may not be durable yet.
        self.store.durable().await?;
        match sent {
            Sent::Stored(recipients) => {
                self.notifier.notify(
                    recipients.iter().map(|u| u.as_ref()),
                    self.store.sequencer().upto(),
                );
                Ok(remote)
            }
            Sent::Retransmission => Ok(RemoteMessages::new()),
        }
    }

    /// The messages a sync delivers to `user`'s `device`. First deletes those at or before
    /// `since` (the client acknowledged them by sending that token), then returns the oldest
    /// waiting ones at or before `upto`, at most [`SYNC_LIMIT`]; when more wait, the batch's
    /// `upto` is the position of the last one returned. Messages from `ignored` senders are
    /// not returned (but count as delivered).
    pub fn for_sync(
        &self,
        user: &UserId,
        device: &str,
        since: Option<u64>,
        upto: u64,
        ignored: &HashSet<OwnedUserId>,
    ) -> Result<ToDeviceBatch> {
        if let Some(since) = since {
            self.acknowledge(user, device, since)?;
        }
        let prefix = device_prefix(user, device);
        let mut batch = ToDeviceBatch {
            upto,
            ..ToDeviceBatch::default()
        };
        let mut last = None;
        for (count, item) in self
            .inbox
            .range(
                &inbox_key(user, device, 0),
                &inbox_key(user, device, upto.saturating_add(1)),
            )
            .enumerate()
        {
            let (key, value) = item?;
            if count == SYNC_LIMIT {
                if let Some(last) = last {
                    batch.upto = last;
                }
                batch.limited = true;
                break;
            }
            let position =
                keys::read_u64_be(&key[prefix.len()..]).ok_or_else(|| corrupt("bad inbox key"))?;
            last = Some(position);
            let event: Value = serde_json::from_slice(&value)?;
            let from_ignored = event["sender"]
                .as_str()
                .is_some_and(|s| ignored.iter().any(|u| u.as_str() == s));
            if !from_ignored {
                batch.events.push(event);
            }
        }
        Ok(batch)
    }

    /// Deletes the device's messages at or before `since`.
    fn acknowledge(&self, user: &UserId, device: &str, since: u64) -> Result<()> {
        let end = inbox_key(user, device, since.saturating_add(1));
        for item in self.inbox.range(&inbox_key(user, device, 0), &end) {
            let (key, _) = item?;
            self.inbox.delete(key)?;
        }
        Ok(())
    }

    /// Forgets deleted devices: their inboxes and the transaction IDs they sent with.
    pub fn remove_devices(&self, user: &UserId, devices: &[String]) -> Result<()> {
        for device in devices {
            let prefix = device_prefix(user, device);
            for tree in [&self.inbox, &self.txns] {
                for item in tree.scan_prefix(&prefix) {
                    let (key, _) = item?;
                    tree.delete(key)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(value: Value) -> Messages {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn requests_are_validated() {
        let ok = messages(json!({ "@b:x": { "D": { "k": 1 }, "*": {} } }));
        assert!(validate("m.x", "t1", &ok).is_ok());
        assert!(matches!(
            validate("", "t1", &ok),
            Err(Error::InvalidParam(_))
        ));
        assert!(matches!(
            validate("m.x", &"t".repeat(256), &ok),
            Err(Error::InvalidParam(_))
        ));
        let not_object = messages(json!({ "@b:x": { "D": [1] } }));
        assert!(matches!(
            validate("m.x", "t1", &not_object),
            Err(Error::BadJson(_))
        ));
        let empty_device = messages(json!({ "@b:x": { "": {} } }));
        assert!(validate("m.x", "t1", &empty_device).is_err());
        let big = messages(json!({ "@b:x": { "D": { "k": "x".repeat(MAX_CONTENT_BYTES) } } }));
        assert!(matches!(
            validate("m.x", "t1", &big),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn keys_keep_devices_apart() {
        let user = ruma::user_id!("@a:x");
        assert!(!inbox_key(user, "DEV2", 1).starts_with(&device_prefix(user, "DEV")));
        assert!(inbox_key(user, "DEV", 256) > inbox_key(user, "DEV", 255));
        assert!(txn_key(user, "DEV", "m.x", "1").starts_with(&device_prefix(user, "DEV")));
        assert_ne!(
            txn_key(user, "DEV", "m.a", "b.c"),
            txn_key(user, "DEV", "m.a.b", "c")
        );
    }
}
