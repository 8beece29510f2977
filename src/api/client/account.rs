//! whoami, password change and reset, deactivation.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, MaybeAuth};
use crate::error::{Error, Result};
use crate::service::threepid::Purpose;
use crate::service::uia::{self, UiaRequest};

pub async fn whoami(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let guest = state.accounts.get(&auth.user_id)?.is_some_and(|a| a.guest);
    Ok(Json(json!({
        "user_id": auth.user_id,
        "device_id": auth.device_id,
        "is_guest": guest,
    })))
}

#[derive(Deserialize)]
pub struct PasswordBody {
    new_password: String,
    logout_devices: Option<bool>,
    auth: Option<Value>,
}

/// With an access token: UIA by password. Without: password reset, UIA by a validated e-mail.
pub async fn change_password(
    State(state): State<AppState>,
    MaybeAuth(auth): MaybeAuth,
    JsonBody(body, _): JsonBody<PasswordBody>,
) -> Result<Json<Value>> {
    crate::service::password::check_policy(&state.config.password, &body.new_password)?;
    let logout_devices = body.logout_devices.unwrap_or(true);
    match auth {
        Some(auth) => {
            state
                .confirm_with_password("change_password", &auth.user_id, body.auth.as_ref())
                .await?;
            state
                .change_password(
                    &auth.user_id,
                    &body.new_password,
                    Some(&auth.device_id),
                    logout_devices,
                )
                .await?;
        }
        None => {
            if !state.mailer.enabled() {
                return Err(Error::MissingToken);
            }
            let completed = state
                .user_interactive_auth(UiaRequest {
                    purpose: "reset_password",
                    flows: vec![vec![uia::EMAIL]],
                    auth: body.auth.as_ref(),
                    user: None,
                    email_purpose: Purpose::PasswordReset,
                })
                .await?;
            let email = completed
                .email
                .ok_or_else(|| Error::internal("e-mail stage without an address"))?;
            let user_id = state
                .threepids
                .user_for_email(&email)?
                .filter(|u| state.is_active_user(u).unwrap_or(false))
                .ok_or_else(|| {
                    Error::ThreepidNotFound("no active account has this address".into())
                })?;
            state
                .change_password(&user_id, &body.new_password, None, logout_devices)
                .await?;
        }
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeactivateBody {
    auth: Option<Value>,
}

pub async fn deactivate(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<DeactivateBody>,
) -> Result<Json<Value>> {
    state
        .confirm_with_password("deactivate", &auth.user_id, body.auth.as_ref())
        .await?;
    state.deactivate_account(&auth.user_id).await?;
    tracing::info!(user = %auth.user_id, "deactivated");
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
