//! Two-factor (TOTP) enrolment and removal. The login side lives in `session.rs`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, ClientIp, JsonBody};
use crate::error::{Error, Result};
use crate::service::ratelimit::Limit;

pub async fn status(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    Ok(Json(json!({
        "enabled": state.mfa.is_enabled(&auth.user_id)?,
        "recovery_codes_left": state.mfa.remaining_recovery_codes(&auth.user_id)?,
    })))
}

pub async fn enroll(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let enrolment = state.mfa.enroll(&auth.user_id).await?;
    Ok(Json(json!({
        "secret": enrolment.secret,
        "otpauth_uri": enrolment.otpauth_uri,
    })))
}

#[derive(Deserialize)]
pub struct ConfirmBody {
    code: String,
}

pub async fn confirm(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<ConfirmBody>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::TotpPerIp, &ip)?;
    state
        .rate_limits
        .check(Limit::TotpPerAccount, auth.user_id.as_str())?;
    let codes = state.mfa.confirm(&auth.user_id, &body.code).await?;
    Ok(Json(json!({ "recovery_codes": codes })))
}

#[derive(Deserialize)]
pub struct DisableBody {
    password: String,
    code: String,
}

pub async fn disable(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<DisableBody>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::TotpPerIp, &ip)?;
    state
        .rate_limits
        .check(Limit::TotpPerAccount, auth.user_id.as_str())?;
    if !state.mfa.is_enabled(&auth.user_id)? {
        return Err(Error::NotFound("two-factor login is not enabled".into()));
    }
    if !state
        .accounts
        .check_password(&auth.user_id, &body.password)
        .await?
    {
        return Err(Error::Forbidden("invalid password".into()));
    }
    if !state.mfa.verify(&auth.user_id, &body.code).await? {
        return Err(Error::Forbidden("invalid or already used code".into()));
    }
    state.mfa.remove(&auth.user_id)?;
    state.store.durable().await?;
    Ok(Json(json!({})))
}
