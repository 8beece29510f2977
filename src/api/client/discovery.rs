//! Server discovery and description: versions, well-known, capabilities, health.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth};
use crate::error::{Error, Result};

/// The spec versions whose account, device and profile modules this server follows.
pub const SPEC_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11",
];

pub async fn versions() -> Json<Value> {
    Json(json!({ "versions": SPEC_VERSIONS, "unstable_features": {} }))
}

pub async fn well_known_client(State(state): State<AppState>) -> Json<Value> {
    let base = state
        .config
        .well_known
        .client_base_url
        .clone()
        .unwrap_or_else(|| state.config.public_baseurl());
    Json(json!({ "m.homeserver": { "base_url": base } }))
}

pub async fn well_known_server(State(state): State<AppState>) -> Result<Json<Value>> {
    match &state.config.well_known.server {
        Some(server) => Ok(Json(json!({ "m.server": server }))),
        None => Err(Error::NotFound("no server delegation is configured".into())),
    }
}

pub async fn capabilities(State(state): State<AppState>, _auth: Auth) -> Json<Value> {
    let email = state.mailer.enabled();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.3pid_changes": { "enabled": email },
            "m.get_login_token": { "enabled": false },
            "m.room_versions": {
                "default": crate::core::room_version::DEFAULT.as_str(),
                "available": crate::core::room_version::CREATABLE
                    .iter()
                    .map(|v| (v.as_str().to_owned(), json!("stable")))
                    .collect::<serde_json::Map<_, _>>(),
            },
        }
    }))
}

/// Liveness and store health: 200 when the store answers.
pub async fn health(State(state): State<AppState>) -> Result<Json<Value>> {
    state.accounts.exists(ruma::user_id!("@health:localhost"))?;
    Ok(Json(json!({ "status": "ok" })))
}
