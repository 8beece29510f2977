//! Chat API two-factor login: `POST /mfa/totp` (enrol), `POST /mfa/totp/confirm` (turn it on
//! with a first code; answers the recovery codes, shown once) and `DELETE /mfa/totp` (turn it
//! off with a code). The same TOTP record as the Matrix endpoints, so a Matrix login asks for
//! the code too. Code attempts are rate-limited per address and per account.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson};
use crate::api::Routes;
use crate::api::extract::{AppState, ClientIp};
use crate::error::Error;
use crate::service::ratelimit::Limit;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/mfa/totp", post(enrol).delete(disable))
        .route("/mfa/totp/confirm", post(confirm))
}

/// The longest code accepted: a 6-digit code or an 11-character recovery code, with room for
/// spaces a user may type.
const MAX_CODE_LEN: usize = 64;

#[derive(Deserialize)]
struct CodeBody {
    code: String,
}

/// 400 unless `code` could be a TOTP or recovery code.
pub(super) fn check_code_shape(code: &str) -> ChatResult<()> {
    if code.trim().is_empty() || code.len() > MAX_CODE_LEN {
        return Err(ChatError::invalid(
            "code must be a 6-digit code or a recovery code",
        ));
    }
    Ok(())
}

/// Checks a second factor of `user_id` (a current code not used before, or an unused recovery
/// code, which is then spent), after taking one attempt from the rate limits.
pub(super) async fn second_factor_ok(
    state: &AppState,
    ip: &str,
    user_id: &UserId,
    code: &str,
) -> ChatResult<bool> {
    state.rate_limits.check(Limit::TotpPerIp, ip)?;
    state
        .rate_limits
        .check(Limit::TotpPerAccount, user_id.as_str())?;
    Ok(state.mfa.verify(user_id, code).await?)
}

/// A wrong code on an authenticated request: 403, since the access token itself is fine.
fn wrong_code() -> ChatError {
    ChatError::new(
        StatusCode::FORBIDDEN,
        "invalid_code",
        "the code is wrong or was already used",
    )
}

fn already_enabled() -> ChatError {
    ChatError::new(
        StatusCode::CONFLICT,
        "mfa_already_enabled",
        "two-factor login is already on; turn it off first",
    )
}

/// Starts enrolment: a new secret (replacing one not yet confirmed) for the user's
/// authenticator app. Two-factor login is on only once a code confirms it.
async fn enrol(State(state): State<AppState>, ChatAuth(auth): ChatAuth) -> ChatResult<Json<Value>> {
    if state.mfa.is_enabled(&auth.user_id)? {
        return Err(already_enabled());
    }
    let enrolment = state.mfa.enroll(&auth.user_id).await?;
    Ok(Json(json!({
        "secret": enrolment.secret,
        "otpauth_uri": enrolment.otpauth_uri,
    })))
}

async fn confirm(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<CodeBody>,
) -> ChatResult<Json<Value>> {
    check_code_shape(&body.code)?;
    if state.mfa.is_enabled(&auth.user_id)? {
        return Err(already_enabled());
    }
    state.rate_limits.check(Limit::TotpPerIp, &ip)?;
    state
        .rate_limits
        .check(Limit::TotpPerAccount, auth.user_id.as_str())?;
    let codes = match state.mfa.confirm(&auth.user_id, &body.code).await {
        Ok(codes) => codes,
        Err(Error::NotFound(_)) => {
            return Err(ChatError::new(
                StatusCode::CONFLICT,
                "mfa_not_enrolled",
                "start with POST /mfa/totp",
            ));
        }
        // Confirmed meanwhile by another request, or a wrong code.
        Err(Error::Forbidden(_)) if state.mfa.is_enabled(&auth.user_id)? => {
            return Err(already_enabled());
        }
        Err(Error::Forbidden(_)) => return Err(wrong_code()),
        Err(e) => return Err(e.into()),
    };
    Ok(Json(json!({ "recovery_codes": codes })))
}

/// Turns two-factor login off; a current code (or a recovery code) proves the user still holds
/// the second factor.
async fn disable(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<CodeBody>,
) -> ChatResult<StatusCode> {
    check_code_shape(&body.code)?;
    if !state.mfa.is_enabled(&auth.user_id)? {
        return Err(ChatError::new(
            StatusCode::CONFLICT,
            "mfa_not_enabled",
            "two-factor login is not on",
        ));
    }
    if !second_factor_ok(&state, &ip, &auth.user_id, &body.code).await? {
        return Err(wrong_code());
    }
    state.mfa.remove(&auth.user_id)?;
    state.store.durable().await?;
    Ok(StatusCode::NO_CONTENT)
}
