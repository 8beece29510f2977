//! What a client may send on the stream, besides `auth` (see `connection`):
//!
//! - `{"type": "typing", "chat_id": "!room", "typing": true|false}`: starts (for 30 seconds,
//!   renewed by sending it again) or stops the user's typing in a chat they are joined to, as
//!   `PUT /rooms/{roomId}/typing/{userId}` does.
//! - `{"type": "read", "message_id": "$event"}`: a read receipt (`m.read`) up to that message,
//!   as `POST /messages/{id}/read` and the Matrix receipt endpoint do.
//! - `{"type": "pong"}`: the answer to the server's `ping` (any frame counts as a sign of life).
//! - `{"type": "ping"}`: answered with `{"type": "pong"}`.
//!
//! Anything else, or a frame with a missing or malformed field, is answered with an `error`
//! frame; a chat the user is not in is `not_found`, as in the REST API.

use ruma::UserId;
use serde_json::{Value, json};

use super::super::error::{ChatError, ChatResult};
use super::super::messages::visible_message;
use super::error_frame;
use crate::api::extract::{AppState, parse_room_id};
use crate::error::Error;
use crate::service::receipts::ReceiptKind;
use crate::service::typing::DEFAULT_TIMEOUT;

/// Handles one text frame of an authenticated client; returns the frame to answer with, if any.
pub(super) async fn handle(state: &AppState, user: &UserId, text: &str) -> Option<String> {
    match handle_frame(state, user, text).await {
        Ok(reply) => reply,
        Err(error) => Some(error_frame(&error)),
    }
}

async fn handle_frame(state: &AppState, user: &UserId, text: &str) -> ChatResult<Option<String>> {
    let frame: Value = serde_json::from_str(text)
        .map_err(|_| ChatError::invalid("a frame must be a JSON object"))?;
    if !frame.is_object() {
        return Err(ChatError::invalid("a frame must be a JSON object"));
    }
    match frame["type"].as_str() {
        Some("typing") => {
            typing(state, user, &frame)?;
            Ok(None)
        }
        Some("read") => {
            read(state, user, &frame).await?;
            Ok(None)
        }
        Some("pong") => {
            state.presence.on_sync(user, None).await?;
            Ok(None)
        }
        Some("ping") => Ok(Some(json!({ "type": "pong" }).to_string())),
        Some("auth") => Err(ChatError::invalid(
            "this connection is already authenticated",
        )),
        Some(other) => Err(ChatError::invalid(format!(
            "unknown frame type {:?}",
            other.chars().take(64).collect::<String>()
        ))),
        None => Err(ChatError::invalid("a frame needs a string field type")),
    }
}

/// A required string field of a frame.
fn string_field<'a>(frame: &'a Value, field: &str) -> ChatResult<&'a str> {
    frame[field]
        .as_str()
        .ok_or_else(|| ChatError::invalid(format!("{field} must be a string")))
}

fn typing(state: &AppState, user: &UserId, frame: &Value) -> ChatResult<()> {
    let room_id = parse_room_id(string_field(frame, "chat_id")?)?;
    let typing = frame["typing"]
        .as_bool()
        .ok_or_else(|| ChatError::invalid("typing must be true or false"))?;
    state
        .typing
        .set(&room_id, user, typing.then_some(DEFAULT_TIMEOUT))
        .map_err(|e| match e {
            // Not joined: for the Chat API, a chat one is not in does not exist.
            Error::Forbidden(_) => ChatError::not_found("no such chat"),
            other => other.into(),
        })
}

async fn read(state: &AppState, user: &UserId, frame: &Value) -> ChatResult<()> {
    let (event_id, _, meta) = visible_message(state, user, string_field(frame, "message_id")?)?;
    state
        .send_receipt(
            user,
            &meta.room_id,
            ReceiptKind::Read.as_str(),
            &event_id,
            None,
        )
        .await?;
    Ok(())
}
