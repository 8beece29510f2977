//! Chat API sessions: `POST /login` (by username or e-mail, with the TOTP second factor when it
//! is on), `POST /login/mfa`, `POST /logout` and `POST /token/refresh`. A login is a Matrix
//! login: a new device with a refreshable session, the same rate limits, and the same
//! second-factor challenges (a Chat API `mfa_token` is a Matrix login challenge session).
//!
//! Wrong credentials answer 401 `invalid_credentials`, the same for an unknown user, an unknown
//! address and a wrong password, after the same password-hashing time.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson};
use super::signup::email_owner;
use super::totp::{check_code_shape, second_factor_ok};
use crate::api::Routes;
use crate::api::extract::{AppState, ClientIp};
use crate::error::Error;
use crate::service::password;
use crate::service::ratelimit::Limit;
use crate::service::threepid::normalize_email;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/login", post(login))
        .route("/login/mfa", post(login_mfa))
        .route("/logout", post(logout))
        .route("/token/refresh", post(refresh))
}

/// The longest login name (an e-mail address may have 254 characters, a user ID 255 bytes).
const MAX_LOGIN_LEN: usize = 255;
/// The longest password accepted at login (the policy allows 1024 bytes at most).
const MAX_PASSWORD_LEN: usize = 1024;
/// The longest token accepted (challenge sessions and refresh tokens are much shorter).
const MAX_TOKEN_LEN: usize = 512;

#[derive(Deserialize)]
struct LoginBody {
    /// A username, a full user ID, or an e-mail address.
    login: String,
    password: String,
    #[serde(default)]
    device_name: Option<String>,
    /// The second factor sent along with the password (skips the `mfa_token` step).
    #[serde(default)]
    totp_code: Option<String>,
}

#[derive(Deserialize)]
struct MfaBody {
    mfa_token: String,
    code: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

fn invalid_credentials() -> ChatError {
    ChatError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "wrong login or password",
    )
}

fn invalid_code() -> ChatError {
    ChatError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_code",
        "the code is wrong or was already used",
    )
}

/// Checks the display name of a new device (at most 256 characters).
pub(super) fn check_device_name(name: Option<&str>) -> ChatResult<()> {
    match name {
        Some(n) if n.chars().count() > crate::service::devices::MAX_DISPLAY_NAME_LEN => Err(
            ChatError::invalid("device_name may have at most 256 characters"),
        ),
        Some(n) if n.chars().any(char::is_control) => Err(ChatError::invalid(
            "device_name may not contain control characters",
        )),
        _ => Ok(()),
    }
}

/// The Tokens object: `{user_id, username, device_id, access_token, refresh_token,
/// expires_in_ms}`.
fn tokens_object(
    user_id: &UserId,
    device_id: &str,
    tokens: &crate::service::sessions::IssuedTokens,
) -> Value {
    json!({
        "user_id": user_id,
        "username": user_id.localpart(),
        "device_id": device_id,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_in_ms": tokens.expires_in_ms,
    })
}

/// Logs a new device of `user_id` in (with a refreshable session) and answers the Tokens
/// object.
pub(super) async fn issue_tokens(
    state: &AppState,
    user_id: &UserId,
    device_name: Option<String>,
    ip: &str,
) -> ChatResult<Value> {
    let logged_in = state
        .log_in_device(user_id, None, device_name, true, Some(ip.to_owned()))
        .await?;
    Ok(tokens_object(
        user_id,
        &logged_in.device_id,
        &logged_in.tokens,
    ))
}

/// The local user a login name names, if any: a full user ID, an e-mail address (verified or
/// given at sign-up), or a username.
fn resolve_login(state: &AppState, login: &str) -> ChatResult<Option<OwnedUserId>> {
    if login.starts_with('@') {
        return Ok(UserId::parse(login)
            .ok()
            .filter(|u| u.server_name() == state.config.server_name.as_str()));
    }
    if login.contains('@') {
        let Ok(email) = normalize_email(login) else {
            return Ok(None);
        };
        return Ok(email_owner(state, &email)?.map(|(user, _)| user));
    }
    Ok(state.accounts.user_id_for_login(login).ok())
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<LoginBody>,
) -> ChatResult<Json<Value>> {
    state.rate_limits.check(Limit::LoginPerIp, &ip)?;
    if body.login.trim().is_empty() || body.login.len() > MAX_LOGIN_LEN {
        return Err(ChatError::invalid(
            "login must be a username, user ID or e-mail address",
        ));
    }
    if body.password.len() > MAX_PASSWORD_LEN {
        return Err(ChatError::invalid("password is too long"));
    }
    check_device_name(body.device_name.as_deref())?;
    if let Some(code) = &body.totp_code {
        check_code_shape(code)?;
    }
    let Some(user_id) = resolve_login(&state, body.login.trim())? else {
        // Spend the time a real check would, then fail like a wrong password.
        password::verify(&body.password, None).await?;
        return Err(invalid_credentials());
    };
    state
        .rate_limits
        .check(Limit::LoginPerAccount, user_id.as_str())?;
    let account = state.accounts.get(&user_id)?;
    let stored = account.as_ref().and_then(|a| a.password_hash.clone());
    if !password::verify(&body.password, stored).await? {
        return Err(invalid_credentials());
    }
    if account.as_ref().is_some_and(|a| a.deactivated) {
        return Err(Error::UserDeactivated.into());
    }
    if state.mfa.is_enabled(&user_id)? {
        match &body.totp_code {
            Some(code) => {
                if !second_factor_ok(&state, &ip, &user_id, code).await? {
                    return Err(invalid_code());
                }
            }
            None => {
                let lifetime_secs = state.config.auth.uia_session_lifetime_secs;
                let mfa_token = state.mfa.open_challenge(
                    user_id,
                    None,
                    body.device_name,
                    true,
                    Duration::from_secs(lifetime_secs),
                )?;
                return Ok(Json(json!({
                    "mfa_required": true,
                    "mfa_token": mfa_token,
                    "expires_in_ms": lifetime_secs * 1000,
                })));
            }
        }
    }
    Ok(Json(
        issue_tokens(&state, &user_id, body.device_name, &ip).await?,
    ))
}

/// The second step of a login with TOTP on: the `mfa_token` of the first step and a current
/// code (or an unused recovery code). A challenge allows a few wrong codes, then it is gone.
async fn login_mfa(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<MfaBody>,
) -> ChatResult<Json<Value>> {
    state.rate_limits.check(Limit::LoginPerIp, &ip)?;
    if body.mfa_token.len() > MAX_TOKEN_LEN {
        return Err(ChatError::invalid("mfa_token is too long"));
    }
    check_code_shape(&body.code)?;
    let challenge = match state.mfa.peek_challenge(&body.mfa_token) {
        Ok(challenge) => challenge,
        Err(Error::Forbidden(_)) => {
            return Err(ChatError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_mfa_token",
                "unknown or expired mfa_token: log in again",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let checked = second_factor_ok(&state, &ip, &challenge.user_id, &body.code).await;
    let passed = matches!(checked, Ok(true));
    state.mfa.finish_challenge(&body.mfa_token, passed)?;
    if !checked? {
        return Err(invalid_code());
    }
    Ok(Json(
        issue_tokens(&state, &challenge.user_id, challenge.display_name, &ip).await?,
    ))
}

/// Removes the device of the session, as Matrix logout does: its tokens stop working at once.
async fn logout(State(state): State<AppState>, ChatAuth(auth): ChatAuth) -> ChatResult<StatusCode> {
    state
        .remove_devices(&auth.user_id, Some(&[auth.device_id]), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Trades a refresh token for new tokens; the old refresh token stops working.
async fn refresh(
    State(state): State<AppState>,
    ChatJson(body): ChatJson<RefreshBody>,
) -> ChatResult<Json<Value>> {
    if body.refresh_token.len() > MAX_TOKEN_LEN {
        return Err(ChatError::unauthorized("unknown refresh token"));
    }
    let tokens = state.sessions.refresh(&body.refresh_token).await?;
    // The new access token names the user and device of the session.
    let authed = state.sessions.authenticate(&tokens.access_token)?;
    Ok(Json(tokens_object(
        &authed.user_id,
        &authed.device_id,
        &tokens,
    )))
}
