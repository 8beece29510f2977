//! Registration with user-interactive auth, username availability, registration-token validity.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{DeviceRequest, log_in};
use crate::api::extract::{AppState, ClientIp, JsonBody, Query};
use crate::config::RegistrationMode;
use crate::error::{Error, Result};
use crate::service::ratelimit::Limit;
use crate::service::threepid::Purpose;
use crate::service::uia::{self, UiaRequest};

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    #[serde(default)]
    refresh_token: bool,
    auth: Option<Value>,
}

/// The flows this server offers for registration.
fn flows(state: &AppState) -> Result<Vec<Vec<&'static str>>> {
    let email = state.mailer.enabled();
    let requires_email = state.config.registration_requires_email;
    Ok(match state.config.effective_registration() {
        RegistrationMode::Closed => {
            return Err(Error::Forbidden(
                "registration is disabled on this server".into(),
            ));
        }
        RegistrationMode::Open if requires_email => vec![vec![uia::EMAIL]],
        RegistrationMode::Open if email => vec![vec![uia::DUMMY], vec![uia::EMAIL]],
        RegistrationMode::Open => vec![vec![uia::DUMMY]],
        RegistrationMode::Token if requires_email => {
            vec![vec![uia::REGISTRATION_TOKEN, uia::EMAIL]]
        }
        RegistrationMode::Token => vec![vec![uia::REGISTRATION_TOKEN]],
    })
}

pub async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<RegisterQuery>,
    JsonBody(body, _): JsonBody<RegisterBody>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::RegisterPerIp, &ip)?;
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => return register_guest(&state, &ip, body).await,
        Some(_) => return Err(Error::InvalidParam("kind must be user or guest".into())),
    }
    let flows = flows(&state)?;
    // Check what can be checked before any auth stage, so the client learns early.
    let user_id = match &body.username {
        Some(name) => state.accounts.user_id_for_registration(name)?,
        None => state
            .accounts
            .user_id_for_registration(&crate::util::random_string(12).to_lowercase())?,
    };
    if state.accounts.exists(&user_id)? {
        return Err(Error::UserInUse);
    }
    let password = body
        .password
        .as_deref()
        .ok_or_else(|| Error::MissingParam("password is required".into()))?;
    crate::service::password::check_policy(&state.config.password, password)?;

    let completed = state
        .user_interactive_auth(UiaRequest {
            purpose: "register",
            flows,
            auth: body.auth.as_ref(),
            user: None,
            email_purpose: Purpose::Register,
        })
        .await?;

    if let Some(token) = &completed.registration_token {
        state.regtokens.consume(token)?;
    }
    let account = state
        .accounts
        .create(&user_id, Some(password), false, false)
        .await?;
    state
        .profiles
        .set_field(&user_id, "displayname", json!(user_id.localpart()))?;
    if let Some(email) = &completed.email {
        state.threepids.bind(&user_id, email)?;
    }
    state.store.durable().await?;
    tracing::info!(user = %user_id, admin = account.admin, "registered");
    if body.inhibit_login {
        return Ok(Json(json!({ "user_id": user_id })));
    }
    log_in(
        &state,
        &user_id,
        DeviceRequest {
            device_id: body.device_id,
            display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
        },
        &ip,
    )
    .await
}

async fn register_guest(state: &AppState, ip: &str, body: RegisterBody) -> Result<Json<Value>> {
    if !state.config.allow_guests {
        return Err(Error::GuestAccessForbidden);
    }
    let user_id = state.accounts.next_guest_id()?;
    state.accounts.create(&user_id, None, true, false).await?;
    log_in(
        state,
        &user_id,
        DeviceRequest {
            device_id: None,
            display_name: body.initial_device_display_name,
            refresh_token: body.refresh_token,
        },
        ip,
    )
    .await
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

pub async fn available(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<AvailableQuery>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::RegisterPerIp, &ip)?;
    let user_id = state.accounts.user_id_for_registration(&query.username)?;
    if state.accounts.exists(&user_id)? {
        return Err(Error::UserInUse);
    }
    Ok(Json(json!({ "available": true })))
}

#[derive(Deserialize)]
pub struct ValidityQuery {
    token: String,
}

pub async fn token_validity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Query(query): Query<ValidityQuery>,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::RegisterPerIp, &ip)?;
    if state.config.effective_registration() != RegistrationMode::Token {
        return Err(Error::Forbidden(
            "registration tokens are not in use".into(),
        ));
    }
    Ok(Json(
        json!({ "valid": state.regtokens.is_valid(&query.token)? }),
    ))
}
