//! Send-to-device messaging: `PUT /sendToDevice/{eventType}/{txnId}`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::error::Result;
use crate::service::to_device::Messages;

#[derive(Deserialize)]
pub struct SendBody {
    /// User ID → device ID or `*` → message content.
    messages: BTreeMap<String, BTreeMap<String, Value>>,
}

/// Stores one message per recipient device (messages to users of other servers go to their
/// servers); a retransmission (same device, event type and transaction ID) answers `{}` again
/// without sending anything.
pub async fn send(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((kind, txn_id)): Path<(String, String)>,
    JsonBody(body, _): JsonBody<SendBody>,
) -> Result<Json<Value>> {
    let mut messages = Messages::new();
    for (user, devices) in body.messages {
        messages.insert(parse_user_id(&user)?, devices);
    }
    let remote = state
        .to_device
        .send(&auth.user_id, &auth.device_id, &kind, &txn_id, &messages)
        .await?;
    state.federate_to_device(&auth.user_id, &kind, remote).await;
    Ok(Json(json!({})))
}
