//! VoIP: `GET /_matrix/client/v3/voip/turnServer`, the TURN server and time-limited
//! credentials for it (see `service::chat::turn`). Without a configured TURN server the answer
//! is `{}`, as the reference homeserver gives.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth};
use crate::error::Result;
use crate::service::chat::turn;

/// `{username, password, uris, ttl}`, or `{}`.
pub async fn turn_server(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    Ok(Json(
        match turn::credentials(&state.config.turn, &auth.user_id, turn::now_secs()) {
            Some(credentials) => json!({
                "username": credentials.username,
                "password": credentials.password,
                "uris": credentials.uris,
                "ttl": credentials.ttl_secs,
            }),
            None => json!({}),
        },
    ))
}
