//! Login (with the second-factor step), logout and token refresh.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DeviceRequest, log_in};
use crate::api::extract::{AppState, Auth, ClientIp, JsonBody};
use crate::error::{Error, Result};
use crate::service::ratelimit::Limit;

/// The login type of the second step when TOTP is enabled.
pub const TOTP_LOGIN_TYPE: &str = crate::service::uia::TOTP;

pub async fn login_flows() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    kind: String,
    identifier: Option<Value>,
    /// Deprecated form of `identifier`.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    refresh_token: bool,
    /// Second step: the challenge session and the code.
    session: Option<String>,
    code: Option<String>,
    /// One-step form: the code sent along with the password.
    #[serde(rename = "org.roost.totp_code")]
    totp_code: Option<String>,
}

fn invalid_login() -> Error {
    Error::Forbidden("invalid username or password".into())
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body, _): JsonBody<LoginBody>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::LoginPerIp, &ip)?;
    match body.kind.as_str() {
        "m.login.password" => password_login(&state, &ip, body).await,
        TOTP_LOGIN_TYPE => totp_login(&state, &ip, body).await,
        other => Err(Error::Unknown(format!("unsupported login type {other}"))),
    }
}

async fn password_login(state: &AppState, ip: &str, body: LoginBody) -> Result<Json<Value>> {
    let identifier = body.identifier.as_ref();
    let id_type = identifier
        .and_then(|i| i.get("type"))
        .and_then(Value::as_str);
    let user_id = match (id_type, &body.user) {
        (Some("m.id.user"), _) => {
            let user = identifier
                .and_then(|i| i.get("user"))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::BadJson("identifier.user is required".into()))?;
            state.accounts.user_id_for_login(user)?
        }
        (Some("m.id.thirdparty"), _) => {
            let field = |name| identifier.and_then(|i| i.get(name)).and_then(Value::as_str);
            if field("medium") != Some("email") {
                return Err(Error::ThreepidMediumNotSupported(
                    "only e-mail is supported".into(),
                ));
            }
            let address = field("address")
                .ok_or_else(|| Error::BadJson("identifier.address is required".into()))?;
            match state.threepids.user_for_email(address)? {
                Some(u) => u,
                None => {
                    // Spend the time a real check would, then fail like a wrong password.
                    crate::service::password::verify("", None).await?;
                    return Err(invalid_login());
                }
            }
        }
        (Some(other), _) => {
            return Err(Error::BadJson(format!(
                "unsupported identifier type {other}"
            )));
        }
        (None, Some(user)) => state.accounts.user_id_for_login(user)?,
        (None, None) => return Err(Error::BadJson("identifier is required".into())),
    };
    state
        .rate_limits
        .check(Limit::LoginPerAccount, user_id.as_str())?;
    let password = body
        .password
        .as_deref()
        .ok_or_else(|| Error::BadJson("password is required".into()))?;
    let account = state.accounts.get(&user_id)?;
    let stored = account.as_ref().and_then(|a| a.password_hash.clone());
    if !crate::service::password::verify(password, stored).await? {
        return Err(invalid_login());
    }
    if account.as_ref().is_some_and(|a| a.deactivated) {
        return Err(Error::UserDeactivated);
    }
    if state.mfa.is_enabled(&user_id)? {
        match &body.totp_code {
            Some(code) => check_second_factor(state, ip, &user_id, code).await?,
            None => {
                let lifetime = Duration::from_secs(state.config.auth.uia_session_lifetime_secs);
                let session = state.mfa.open_challenge(
                    user_id,
                    body.device_id,
                    body.initial_device_display_name,
                    body.refresh_token,
                    lifetime,
                )?;
                return Err(Error::SecondFactorRequired { session });
            }
        }
    }
    log_in(
        state,
        &user_id,
        DeviceRequest {
            device_id: body.device_id,
            display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
        },
        ip,
    )
    .await
}

async fn check_second_factor(
    state: &AppState,
    ip: &str,
    user_id: &ruma::UserId,
    code: &str,
) -> Result<()> {
    state.rate_limits.check(Limit::TotpPerIp, ip)?;
    state
        .rate_limits
        .check(Limit::TotpPerAccount, user_id.as_str())?;
    if state.mfa.verify(user_id, code).await? {
        Ok(())
    } else {
        Err(Error::Forbidden("invalid or already used code".into()))
    }
}

async fn totp_login(state: &AppState, ip: &str, body: LoginBody) -> Result<Json<Value>> {
    let session = body
        .session
        .as_deref()
        .ok_or_else(|| Error::BadJson("session is required".into()))?;
    let code = body
        .code
        .as_deref()
        .ok_or_else(|| Error::BadJson("code is required".into()))?;
    let challenge = state.mfa.peek_challenge(session)?;
    let checked = check_second_factor(state, ip, &challenge.user_id, code).await;
    if let Err(e) = checked {
        state.mfa.finish_challenge(session, false)?;
        return Err(e);
    }
    state.mfa.finish_challenge(session, true)?;
    log_in(
        state,
        &challenge.user_id,
        DeviceRequest {
            device_id: challenge.device_id,
            display_name: challenge.display_name,
            refresh_token: challenge.refresh_token,
        },
        ip,
    )
    .await
}

pub async fn logout(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    state
        .remove_devices(&auth.user_id, Some(&[auth.device_id]), None)
        .await?;
    Ok(Json(json!({})))
}

pub async fn logout_all(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    state.remove_devices(&auth.user_id, None, None).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body, _): JsonBody<RefreshBody>,
) -> Result<Json<Value>> {
    let tokens = state.sessions.refresh(&body.refresh_token).await?;
    Ok(Json(json!({
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_in_ms": tokens.expires_in_ms,
    })))
}
