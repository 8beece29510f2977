//! `PUT /rooms/{roomId}/typing/{userId}`: typing notifications.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::parse_room_id;
use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::error::{Error, Result};
use crate::service::typing::DEFAULT_TIMEOUT;

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    /// Milliseconds; capped by the service.
    timeout: Option<u64>,
}

/// Starts or stops the user's typing in a room; only for oneself, in a room one is joined to.
pub async fn set_typing(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, user)): Path<(String, String)>,
    JsonBody(body, _): JsonBody<TypingBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let user_id = parse_user_id(&user)?;
    if user_id != auth.user_id {
        return Err(Error::Forbidden(
            "you can only set your own typing state".into(),
        ));
    }
    let timeout = body
        .typing
        .then(|| body.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_millis));
    state.typing.set(&room_id, &user_id, timeout)?;
    Ok(Json(json!({})))
}
