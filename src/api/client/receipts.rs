//! Receipts and read markers: `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}` and
//! `POST /rooms/{roomId}/read_markers`.

use axum::Json;
use axum::extract::State;
use ruma::OwnedEventId;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path};
use crate::api::extract::{parse_event_id, parse_room_id};
use crate::error::{Error, Result};
use crate::service::receipts::ReadMarkers;

/// An optional string field of the body, as an event ID.
fn event_id_field(body: &Value, field: &str) -> Result<Option<OwnedEventId>> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(raw)) => parse_event_id(raw).map(Some),
        Some(_) => Err(Error::BadJson(format!("{field} must be an event ID"))),
    }
}

/// Sends a receipt (`m.read`, `m.read.private`, optionally with `thread_id`) or moves the
/// fully read marker (`m.fully_read`).
pub async fn send_receipt(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, receipt_type, event)): Path<(String, String, String)>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let thread = match body.get("thread_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(thread)) => Some(thread.as_str()),
        Some(_) => {
            return Err(Error::InvalidParam(
                "thread_id must be a non-empty string".into(),
            ));
        }
    };
    state
        .send_receipt(&auth.user_id, &room_id, &receipt_type, &event_id, thread)
        .await?;
    Ok(Json(json!({})))
}

/// Moves the fully read marker and, optionally, the read receipts.
pub async fn set_read_markers(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let fully_read = event_id_field(&body, "m.fully_read")?;
    let read = event_id_field(&body, "m.read")?;
    let read_private = event_id_field(&body, "m.read.private")?;
    let markers = ReadMarkers {
        fully_read: fully_read.as_deref(),
        read: read.as_deref(),
        read_private: read_private.as_deref(),
    };
    state
        .set_read_markers(&auth.user_id, &room_id, markers)
        .await?;
    Ok(Json(json!({})))
}
