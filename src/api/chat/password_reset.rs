//! Chat API password reset: `POST /password/forgot` e-mails a single-use code to the address,
//! `POST /password/reset` trades the code for a new password and logs every device out, as a
//! Matrix password reset does.
//!
//! Only verified addresses (those bound to the account) receive a code, and the answer to
//! `/password/forgot` is the same 202, after the same work, whether or not a message was sent,
//! so that it does not tell which addresses have accounts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;

use super::error::{ChatError, ChatResult};
use super::extract::ChatJson;
use crate::api::Routes;
use crate::api::extract::{AppState, ClientIp};
use crate::service::ratelimit::Limit;
use crate::service::threepid::normalize_email;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/password/forgot", post(forgot))
        .route("/password/reset", post(reset))
}

#[derive(Deserialize)]
struct ForgotBody {
    email: String,
}

#[derive(Deserialize)]
struct ResetBody {
    token: String,
    new_password: String,
}

/// The longest token looked up (codes have 32 characters).
const MAX_TOKEN_LEN: usize = 255;

fn invalid_token() -> ChatError {
    ChatError::new(
        StatusCode::BAD_REQUEST,
        "invalid_token",
        "the code is incorrect, used or expired",
    )
}

/// The message that carries the code.
fn reset_message(server: &str, user: &str, code: &str, minutes: u64) -> String {
    format!(
        "Hello,\n\n\
         Someone, hopefully you, asked to reset the password of {user} on {server}. \
         To choose a new password, enter this code in your app:\n\n\
         Code: {code}\n\n\
         The code works once and expires in {minutes} minutes. Resetting the password signs \
         you out on every device. If you did not ask for this, ignore this message: your \
         password stays as it is.\n"
    )
}

async fn forgot(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<ForgotBody>,
) -> ChatResult<StatusCode> {
    state.rate_limits.check(Limit::EmailRequestPerIp, &ip)?;
    let email = normalize_email(&body.email)
        .map_err(|_| ChatError::invalid("email is not a valid e-mail address"))?;
    if !state.mailer.enabled() {
        return Err(ChatError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "e-mail is not configured on this server",
        ));
    }
    state
        .rate_limits
        .check(Limit::EmailRequestPerAddress, &email)?;
    let owner = match state.threepids.user_for_email(&email)? {
        Some(user) if state.is_active_user(&user)? => Some(user),
        _ => None,
    };
    let lifetime_secs = state.config.auth.email_token_lifetime_secs;
    let code = match &owner {
        Some(user) => Some(
            state
                .chat
                .password_resets
                .issue(user, lifetime_secs * 1000)?,
        ),
        None => None,
    };
    // Both ways wait for the disk, so that the time taken does not tell them apart.
    state.store.durable().await?;
    if let (Some(user), Some(code)) = (owner, code) {
        let text = reset_message(
            &state.config.server_name,
            user.localpart(),
            &code,
            lifetime_secs / 60,
        );
        state
            .mailer
            .send_in_background(&email, "Reset your password", text)?;
    }
    Ok(StatusCode::ACCEPTED)
}

async fn reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<ResetBody>,
) -> ChatResult<StatusCode> {
    state.rate_limits.check(Limit::LoginPerIp, &ip)?;
    if body.token.is_empty() || body.token.len() > MAX_TOKEN_LEN {
        return Err(invalid_token());
    }
    // Checked before the code is used up, so that a refused password does not spend it.
    crate::service::password::check_policy(&state.config.password, &body.new_password)?;
    let resets = &state.chat.password_resets;
    let code = body.token.trim();
    // The code is used up only once the password has changed, so a failure on the way leaves
    // it to retry; the claim keeps a concurrent second use out meanwhile.
    let (user_id, _claim) = resets.claim(code)?.ok_or_else(invalid_token)?;
    if !state.is_active_user(&user_id)? {
        return Err(invalid_token());
    }
    state
        .change_password(&user_id, &body.new_password, None, true)
        .await?;
    resets.redeem(code)?;
    resets.revoke_all(&user_id)?;
    state.store.durable().await?;
    tracing::info!(user = %user_id, "password reset by e-mail");
    Ok(StatusCode::NO_CONTENT)
}
