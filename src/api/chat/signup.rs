//! Chat API sign-up: `POST /signup` and, on servers that require a verified e-mail address,
//! `POST /signup/verify`. This is Matrix registration over the same services: the same
//! username grammar, password policy, registration mode and tokens, and the account, profile,
//! device and session a Matrix client would get. The e-mail of a verified sign-up is the Matrix
//! registration e-mail (its code, or its link), and the address ends up bound to the account
//! as a Matrix client's would.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::ChatJson;
use super::login::{check_device_name, issue_tokens};
use super::profile::check_display_name;
use crate::api::Routes;
use crate::api::extract::{AppState, ClientIp};
use crate::config::RegistrationMode;
use crate::error::Error;
use crate::service::chat::signups::PendingSignup;
use crate::service::ratelimit::Limit;
use crate::service::threepid::{Purpose, TokenRequest, normalize_email};
use crate::util::{now_ms, random_string};

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/signup", post(signup))
        .route("/signup/verify", post(verify))
}

#[derive(Deserialize)]
struct SignupBody {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    device_name: Option<String>,
    /// Required when the server's registration mode is `token`.
    #[serde(default)]
    registration_token: Option<String>,
}

#[derive(Deserialize)]
struct VerifyBody {
    signup_id: String,
    /// The code from the e-mail; may be left out once the link in the e-mail has been opened.
    #[serde(default)]
    token: Option<String>,
}

/// The longest signup ID or e-mail code accepted (both are much shorter).
const MAX_SECRET_LEN: usize = 255;

fn email_taken() -> ChatError {
    ChatError::new(
        StatusCode::CONFLICT,
        "email_taken",
        "this e-mail address is already used by another account",
    )
}

/// 403 when the server does not let anyone sign up.
fn ensure_open(state: &AppState) -> ChatResult<RegistrationMode> {
    match state.config.effective_registration() {
        RegistrationMode::Closed => Err(ChatError::new(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "sign-up is disabled on this server",
        )),
        mode => Ok(mode),
    }
}

fn bad_registration_token() -> ChatError {
    ChatError::new(
        StatusCode::FORBIDDEN,
        "invalid_registration_token",
        "the registration token is unknown, used up or expired",
    )
}

/// Who has `email` (normalised), and whether they verified it: the account it is bound to
/// (verified), or the account that gave it unverified at sign-up. An unverified address of an
/// account that is gone is released on the way.
pub(super) fn email_owner(
    state: &AppState,
    email: &str,
) -> ChatResult<Option<(OwnedUserId, bool)>> {
    if let Some(user) = state.threepids.user_for_email(email)? {
        return Ok(Some((user, true)));
    }
    let signups = &state.chat.signups;
    match signups.user_for_unverified_email(email)? {
        Some(user) if state.is_active_user(&user)? => Ok(Some((user, false))),
        Some(_) => {
            signups.release_unverified_email(email)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The address of `user_id` and whether it is verified: the first bound (verified) address, or
/// else the unverified one given at sign-up.
pub(super) fn email_of(state: &AppState, user_id: &UserId) -> ChatResult<(Option<String>, bool)> {
    let mut bound = state.threepids.emails_of(user_id)?;
    bound.sort_by_key(|e| e.added_at);
    if let Some(first) = bound.into_iter().next() {
        return Ok((Some(first.address), true));
    }
    Ok((state.chat.signups.unverified_email_of(user_id)?, false))
}

async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<SignupBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    state.rate_limits.check(Limit::RegisterPerIp, &ip)?;
    let mode = ensure_open(&state)?;
    let user_id = state.accounts.user_id_for_registration(&body.username)?;
    let email = normalize_email(&body.email)
        .map_err(|_| ChatError::invalid("email is not a valid e-mail address"))?;
    crate::service::password::check_policy(&state.config.password, &body.password)?;
    if let Some(name) = &body.display_name {
        check_display_name(name)?;
    }
    check_device_name(body.device_name.as_deref())?;
    match (&body.registration_token, mode) {
        (Some(token), _) if token.len() > MAX_SECRET_LEN => {
            return Err(ChatError::invalid("registration_token is too long"));
        }
        (None, RegistrationMode::Token) => {
            return Err(ChatError::invalid(
                "registration_token is required on this server",
            ));
        }
        (Some(token), RegistrationMode::Token) if !state.regtokens.is_valid(token)? => {
            return Err(bad_registration_token());
        }
        _ => {}
    }
    if state.accounts.exists(&user_id)? {
        return Err(Error::UserInUse.into());
    }
    if state.config.registration_requires_email {
        if state.threepids.user_for_email(&email)?.is_some() {
            return Err(email_taken());
        }
        return start_verification(&state, &ip, user_id, email, body).await;
    }
    if email_owner(&state, &email)?.is_some() {
        return Err(email_taken());
    }
    if mode == RegistrationMode::Token
        && let Some(token) = &body.registration_token
    {
        state
            .regtokens
            .consume(token)
            .map_err(|_| bad_registration_token())?;
    }
    create_account(
        &state,
        &user_id,
        NewPassword::Plain(&body.password),
        body.display_name.as_deref(),
        &email,
        false,
    )
    .await?;
    let mut answer = issue_tokens(&state, &user_id, body.device_name, &ip).await?;
    answer["email"] = json!(email);
    answer["email_verified"] = json!(false);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Keeps the sign-up and e-mails the code: 202 with the sign-up ID the code is sent back with.
async fn start_verification(
    state: &AppState,
    ip: &str,
    user_id: OwnedUserId,
    email: String,
    body: SignupBody,
) -> ChatResult<(StatusCode, Json<Value>)> {
    state.rate_limits.check(Limit::EmailRequestPerIp, ip)?;
    state
        .rate_limits
        .check(Limit::EmailRequestPerAddress, &email)?;
    let password_hash = crate::service::password::hash(&body.password).await?;
    let client_secret = random_string(32);
    let sid = state.threepids.request_token(
        TokenRequest {
            purpose: Purpose::Register,
            email: &email,
            client_secret: &client_secret,
            send_attempt: 1,
        },
        &state.mailer,
    )?;
    let expires_ts = now_ms() + state.config.auth.email_token_lifetime_secs * 1000;
    let signup_id = state.chat.signups.insert(&PendingSignup {
        user_id,
        email: email.clone(),
        password_hash,
        display_name: body.display_name,
        device_name: body.device_name,
        registration_token: body.registration_token,
        sid,
        client_secret,
        expires_ts,
        validated_email: None,
        token_consumed: false,
    })?;
    state.store.durable().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "signup_id": signup_id,
            "email": email,
            "verification_required": true,
            "expires_at": expires_ts,
        })),
    ))
}

async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ChatJson(body): ChatJson<VerifyBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    state.rate_limits.check(Limit::RegisterPerIp, &ip)?;
    if body.signup_id.len() > MAX_SECRET_LEN
        || body
            .token
            .as_ref()
            .is_some_and(|t| t.len() > MAX_SECRET_LEN)
    {
        return Err(ChatError::invalid("signup_id or token is too long"));
    }
    let signups = &state.chat.signups;
    // Held until the sign-up is removed or this attempt fails: the sign-up is used up only
    // once its account exists, so a failure on the way leaves it to retry, and a concurrent
    // second completion is refused meanwhile.
    let _claim = signups.claim(&body.signup_id).ok_or_else(|| {
        ChatError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this sign-up is being completed by another request",
        )
    })?;
    let mut signup = signups
        .get(&body.signup_id)?
        .ok_or_else(|| ChatError::not_found("unknown or expired sign-up"))?;
    let mode = ensure_open(&state)?;
    if let Some(token) = body
        .token
        .as_ref()
        .filter(|_| signup.validated_email.is_none())
    {
        // A wrong (or already used) code is not the end: the link in the same e-mail may have
        // validated the address, which `take_validated` checks.
        match state
            .threepids
            .submit_token(&signup.sid, &signup.client_secret, token)
            .await
        {
            Ok(()) | Err(Error::TokenIncorrect(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Taken since the sign-up began: this sign-up can no longer complete.
    if state.accounts.exists(&signup.user_id)? {
        signups.remove(&body.signup_id, &signup)?;
        return Err(Error::UserInUse.into());
    }
    if state.threepids.user_for_email(&signup.email)?.is_some() {
        signups.remove(&body.signup_id, &signup)?;
        return Err(email_taken());
    }
    // The validation and the registration token work once: what is used up is noted in the
    // sign-up, so that a retry after a later failure does not need them again.
    let email = match signup.validated_email.clone() {
        Some(email) => email,
        None => {
            let email = state
                .threepids
                .take_validated(&signup.sid, &signup.client_secret, Purpose::Register)
                .map_err(|e| match e {
                    Error::ThreepidAuthFailed(_) => ChatError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_token",
                        "the code is incorrect or expired",
                    ),
                    other => other.into(),
                })?;
            signup.validated_email = Some(email.clone());
            signups.update(&body.signup_id, &signup)?;
            email
        }
    };
    if mode == RegistrationMode::Token
        && !signup.token_consumed
        && let Some(token) = &signup.registration_token
    {
        state
            .regtokens
            .consume(token)
            .map_err(|_| bad_registration_token())?;
        signup.token_consumed = true;
        signups.update(&body.signup_id, &signup)?;
    }
    create_account(
        &state,
        &signup.user_id,
        NewPassword::Hashed(signup.password_hash.clone()),
        signup.display_name.as_deref(),
        &email,
        true,
    )
    .await?;
    signups.remove(&body.signup_id, &signup)?;
    let mut answer = issue_tokens(&state, &signup.user_id, signup.device_name, &ip).await?;
    answer["email"] = json!(email);
    answer["email_verified"] = json!(true);
    Ok((StatusCode::CREATED, Json(answer)))
}

/// The password of a new account: as typed, or already hashed (a verified sign-up keeps only
/// the hash while it waits for its code).
enum NewPassword<'a> {
    Plain(&'a str),
    Hashed(String),
}

/// Creates the account with its display name (the username unless given) and its address.
async fn create_account(
    state: &AppState,
    user_id: &UserId,
    password: NewPassword<'_>,
    display_name: Option<&str>,
    email: &str,
    verified: bool,
) -> ChatResult<()> {
    let taken = |e: Error| match e {
        Error::Conflict(_) => email_taken(),
        other => other.into(),
    };
    // The unverified address is reserved first, so that two sign-ups cannot both take it, and
    // becomes the user's only once the account exists: a sign-up that loses the race for the
    // username then leaves the winner's address alone.
    let signups = &state.chat.signups;
    if !verified {
        signups.reserve_unverified(user_id, email).map_err(taken)?;
    }
    let plain = match &password {
        NewPassword::Plain(p) => Some(*p),
        NewPassword::Hashed(_) => None,
    };
    if let Err(e) = state.accounts.create(user_id, plain, false, false).await {
        if !verified {
            signups.release_reservation(user_id, email)?;
        }
        return Err(e.into());
    }
    if !verified {
        signups.record_unverified(user_id, email).map_err(taken)?;
    }
    if let NewPassword::Hashed(hash) = password {
        state
            .accounts
            .update(user_id, |a| a.password_hash = Some(hash.clone()))?;
    }
    let name = display_name.unwrap_or(user_id.localpart()).trim();
    state
        .profiles
        .set_field(user_id, "displayname", json!(name))?;
    if verified {
        state.threepids.bind(user_id, email)?;
        signups.release_unverified_email(email)?;
    }
    state.store.durable().await?;
    tracing::info!(user = %user_id, verified, "signed up through the Chat API");
    Ok(())
}
