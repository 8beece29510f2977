//! The JSON objects of the Chat API that several endpoints share, built from the Matrix data.

use ruma::UserId;
use serde_json::{Value, json};

use crate::api::extract::AppState;
use crate::error::Result;

/// The HTTP path that downloads an `mxc://server/media` URI (authenticated media), or `None`
/// when `mxc` is not one.
pub fn media_url(mxc: &str) -> Option<String> {
    let rest = mxc.strip_prefix("mxc://")?;
    let (server, media) = rest.split_once('/')?;
    if server.is_empty() || media.is_empty() || media.contains('/') {
        return None;
    }
    Some(format!(
        "/_matrix/client/v1/media/download/{server}/{media}"
    ))
}

/// `{user_id, username, display_name, avatar_url}` from the user's global profile.
pub fn user_summary(state: &AppState, user_id: &UserId) -> Result<Value> {
    let profile = state.profiles.get(user_id)?;
    let display_name = profile.get("displayname").and_then(Value::as_str);
    let avatar_url = profile
        .get("avatar_url")
        .and_then(Value::as_str)
        .and_then(media_url);
    Ok(json!({
        "user_id": user_id,
        "username": user_id.localpart(),
        "display_name": display_name,
        "avatar_url": avatar_url,
    }))
}

// The Message, MessageStatus and message File objects live beside their helpers.
pub use super::message_model::{chat_type, file_object, message, message_status};
