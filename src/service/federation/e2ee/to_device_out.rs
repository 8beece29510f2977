//! To-device messages from our users to users of other servers: one `m.direct_to_device` EDU
//! per destination server (several when the messages are large), each with a `message_id` of
//! its own that the receiver de-duplicates on, queued durably by the federation sender.

use ruma::UserId;
use serde_json::{Value, json};

use crate::service::Services;
use crate::service::to_device::{Messages, RemoteMessages};
use crate::util::random_string;

/// The size an `m.direct_to_device` EDU is kept under when its messages can be split (a single
/// message larger than that goes alone): receivers limit what one EDU may carry.
pub const MAX_EDU_MESSAGES_BYTES: usize = 60 * 1024;

/// The length of the `message_id`s we make (the specification allows 32).
const MESSAGE_ID_LEN: usize = 16;

/// Splits one server's messages into groups each under [`MAX_EDU_MESSAGES_BYTES`] (but for a
/// single message larger than that).
pub fn split(messages: Messages) -> Vec<Messages> {
    let mut groups = Vec::new();
    let mut current = Messages::new();
    let mut size = 0;
    for (user, devices) in messages {
        for (device, content) in devices {
            let entry = serde_json::to_vec(&content).map_or(0, |v| v.len())
                + user.as_str().len()
                + device.len()
                + 8;
            if !current.is_empty() && size + entry > MAX_EDU_MESSAGES_BYTES {
                groups.push(std::mem::take(&mut current));
                size = 0;
            }
            size += entry;
            current
                .entry(user.clone())
                .or_default()
                .insert(device, content);
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// An `m.direct_to_device` EDU.
pub fn direct_to_device_edu(
    sender: &UserId,
    kind: &str,
    message_id: &str,
    messages: &Messages,
) -> Value {
    json!({
        "edu_type": "m.direct_to_device",
        "content": { "sender": sender, "type": kind, "message_id": message_id, "messages": messages },
    })
}

impl Services {
    /// Queues the messages `sender` (a local user) addressed to users of other servers. A
    /// failure is logged: the local part of the request is already delivered.
    pub async fn federate_to_device(&self, sender: &UserId, kind: &str, remote: RemoteMessages) {
        if remote.is_empty() || !self.federation.enabled() {
            return;
        }
        for (server, messages) in remote {
            for group in split(messages) {
                let edu =
                    direct_to_device_edu(sender, kind, &random_string(MESSAGE_ID_LEN), &group);
                if let Err(e) = self
                    .federation
                    .sender
                    .queue_edu(std::slice::from_ref(&server), &edu)
                {
                    tracing::warn!(%server, error = %e, "queueing to-device messages for another server failed");
                }
            }
        }
        if let Err(e) = self.store.durable().await {
            tracing::warn!(error = %e, "storing queued to-device messages failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ruma::OwnedUserId;

    use super::*;

    #[test]
    fn large_batches_are_split_and_nothing_is_lost() {
        let big = json!({ "pad": "x".repeat(MAX_EDU_MESSAGES_BYTES / 3) });
        let mut messages = Messages::new();
        for user in ["@a:x", "@b:x"] {
            let user = OwnedUserId::try_from(user).unwrap();
            let devices: BTreeMap<String, Value> =
                (0..3).map(|i| (format!("D{i}"), big.clone())).collect();
            messages.insert(user, devices);
        }
        let groups = split(messages);
        assert!(groups.len() >= 2, "{}", groups.len());
        let total: usize = groups
            .iter()
            .flat_map(|g| g.values())
            .map(BTreeMap::len)
            .sum();
        assert_eq!(total, 6);
        // One message larger than the limit goes alone.
        let huge = json!({ "pad": "x".repeat(MAX_EDU_MESSAGES_BYTES * 2) });
        let one = Messages::from([(
            OwnedUserId::try_from("@a:x").unwrap(),
            BTreeMap::from([("D".to_owned(), huge)]),
        )]);
        assert_eq!(split(one).len(), 1);
        assert!(split(Messages::new()).is_empty());

        let edu = direct_to_device_edu(ruma::user_id!("@s:y"), "m.x", "id1", &Messages::new());
        assert_eq!(edu["edu_type"], "m.direct_to_device");
        assert_eq!(edu["content"]["message_id"], "id1");
        assert_eq!(edu["content"]["type"], "m.x");
    }
}
