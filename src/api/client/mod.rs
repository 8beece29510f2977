//! Matrix Client-Server endpoints, one file per spec module.

pub mod account;
pub mod account_data;
pub mod backup;
pub mod devices;
pub mod directory;
pub mod discovery;
pub mod filter;
pub mod history;
pub mod keys;
pub mod membership;
pub mod message;
pub mod mfa;
pub mod openid;
pub mod presence;
pub mod profile;
pub mod push;
pub mod receipts;
pub mod register;
pub mod relations;
pub mod report;
pub mod rooms;
pub mod search;
pub mod session;
pub mod spaces;
pub mod sync;
pub mod threepid;
pub mod to_device;
pub mod typing;
pub mod upgrade;
pub mod user_directory;
pub mod voip;

use axum::Json;
use ruma::UserId;
use serde_json::{Value, json};

use crate::api::extract::AppState;
use crate::error::Result;
use crate::service::lifecycle::LoggedIn;

/// What a client asked for the device of a new login.
pub(crate) struct DeviceRequest {
    pub device_id: Option<String>,
    pub display_name: Option<String>,
    pub refresh_token: bool,
}

/// Logs a device in and answers with the login response.
pub(crate) async fn log_in(
    state: &AppState,
    user_id: &UserId,
    device: DeviceRequest,
    ip: &str,
) -> Result<Json<Value>> {
    let logged_in = state
        .log_in_device(
            user_id,
            device.device_id,
            device.display_name,
            device.refresh_token,
            Some(ip.to_owned()),
        )
        .await?;
    Ok(Json(login_response(
        user_id.as_str(),
        &state.config.server_name,
        &logged_in,
    )))
}

/// The body of a successful login or registration.
fn login_response(user_id: &str, server_name: &str, logged_in: &LoggedIn) -> Value {
    let mut body = json!({
        "user_id": user_id,
        "access_token": logged_in.tokens.access_token,
        "device_id": logged_in.device_id,
        "home_server": server_name,
    });
    if let Some(rt) = &logged_in.tokens.refresh_token {
        body["refresh_token"] = json!(rt);
    }
    if let Some(ms) = logged_in.tokens.expires_in_ms {
        body["expires_in_ms"] = json!(ms);
    }
    body
}
