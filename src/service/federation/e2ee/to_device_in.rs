//! `m.direct_to_device` from other servers: to-device messages from one of their users to ours.
//! The sender must be a user of the origin. Messages are delivered like local ones (`*` = every
//! device of the recipient), to our users only, and once: the sender, event type and
//! `message_id` are recorded with the delivery, so that the same EDU sent again (in a later
//! transaction, after a failure) delivers nothing.

use std::collections::BTreeMap;

use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::Value;

use crate::error::Result;
use crate::service::federation::receiver::Peer;
use crate::service::to_device::Messages;

/// The sender device under which messages from other servers are de-duplicated: a remote
/// sender has no device here, and its server makes `message_id` unique.
pub const REMOTE_SENDER_DEVICE: &str = "";

/// The content of an `m.direct_to_device`.
#[derive(Debug, Deserialize)]
pub struct DirectToDeviceContent {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub message_id: String,
    pub messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
}

impl Peer<'_> {
    pub async fn receive_direct_to_device(&self, content: DirectToDeviceContent) -> Result<()> {
        self.check_own_user(&content.sender)?;
        let services = self.services;
        let ours: Messages = content
            .messages
            .into_iter()
            .filter(|(user, _)| services.federation.is_us(user.server_name()))
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        // Everything is addressed to our users: nothing comes back to be sent on.
        services
            .to_device
            .send(
                &content.sender,
                REMOTE_SENDER_DEVICE,
                &content.kind,
                &content.message_id,
                &ours,
            )
            .await?;
        Ok(())
    }
}
