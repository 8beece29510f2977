//! Matrix Client-Server endpoints, one file per spec module.

pub mod account;
pub mod devices;
pub mod discovery;
pub mod mfa;
pub mod profile;
pub mod register;
pub mod session;
pub mod threepid;

use serde_json::{Value, json};

use crate::service::lifecycle::LoggedIn;

/// The body of a successful login or registration.
pub(crate) fn login_response(user_id: &str, server_name: &str, logged_in: &LoggedIn) -> Value {
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
