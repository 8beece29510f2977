//! Reporting content to the server's administrators: events, rooms and users.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path};
use crate::api::extract::{parse_event_id, parse_room_id, parse_user_id};
use crate::error::Result;

#[derive(Deserialize)]
pub struct EventReportBody {
    reason: Option<String>,
    /// From -100 (most offensive) to 0; no longer in the specification, still accepted.
    score: Option<i64>,
}

#[derive(Deserialize)]
pub struct ReportBody {
    reason: String,
}

/// `POST /rooms/{roomId}/report/{eventId}`: for members of the room, about an event they can see.
pub async fn report_event(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, event)): Path<(String, String)>,
    JsonBody(body, _): JsonBody<EventReportBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    state
        .report_event(&auth.user_id, &room_id, &event_id, body.reason, body.score)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /rooms/{roomId}/report`: about a room this server knows.
pub async fn report_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<ReportBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    state
        .report_room(&auth.user_id, &room_id, body.reason)
        .await?;
    Ok(Json(json!({})))
}

/// `POST /users/{userId}/report`: about a user of this server.
pub async fn report_user(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(user): Path<String>,
    JsonBody(body, _): JsonBody<ReportBody>,
) -> Result<Json<Value>> {
    let user_id = parse_user_id(&user)?;
    state
        .report_user(&auth.user_id, &user_id, body.reason)
        .await?;
    Ok(Json(json!({})))
}
