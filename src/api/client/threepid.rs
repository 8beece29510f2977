//! E-mail: token requests for registration, password reset and adding an address; token
//! submission (link or JSON); the addresses of an account.

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, ClientIp, JsonBody, Query};
use crate::error::{Error, Result};
use crate::service::ratelimit::Limit;
use crate::service::threepid::{Purpose, SUBMIT_PATH, TokenRequest, normalize_email};

#[derive(Deserialize)]
pub struct RequestTokenBody {
    client_secret: String,
    email: String,
    send_attempt: u64,
}

async fn request_token(
    state: &AppState,
    ip: &str,
    purpose: Purpose,
    body: RequestTokenBody,
) -> Result<Json<Value>> {
    state.rate_limits.check(Limit::EmailRequestPerIp, ip)?;
    let email = normalize_email(&body.email)?;
    state
        .rate_limits
        .check(Limit::EmailRequestPerAddress, &email)?;
    let sid = state.threepids.request_token(
        TokenRequest {
            purpose,
            email: &email,
            client_secret: &body.client_secret,
            send_attempt: body.send_attempt,
        },
        &state.mailer,
    )?;
    state.store.durable().await?;
    Ok(Json(json!({
        "sid": sid,
        "submit_url": format!("{}{SUBMIT_PATH}", state.config.public_baseurl()),
    })))
}

pub async fn request_token_register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body, _): JsonBody<RequestTokenBody>,
) -> Result<Json<Value>> {
    if state.config.effective_registration() == crate::config::RegistrationMode::Closed {
        return Err(Error::Forbidden(
            "registration is disabled on this server".into(),
        ));
    }
    request_token(&state, &ip, Purpose::Register, body).await
}

pub async fn request_token_password(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body, _): JsonBody<RequestTokenBody>,
) -> Result<Json<Value>> {
    request_token(&state, &ip, Purpose::PasswordReset, body).await
}

/// No access token is needed (as in the specification); the address is only bound by
/// `/account/3pid/add`, which needs one.
pub async fn request_token_add(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(body, _): JsonBody<RequestTokenBody>,
) -> Result<Json<Value>> {
    request_token(&state, &ip, Purpose::AddEmail, body).await
}

#[derive(Deserialize)]
pub struct SubmitToken {
    sid: String,
    client_secret: String,
    token: String,
}

/// The link in the e-mail.
pub async fn submit_link(
    State(state): State<AppState>,
    Query(q): Query<SubmitToken>,
) -> Result<Html<&'static str>> {
    state
        .threepids
        .submit_token(&q.sid, &q.client_secret, &q.token)
        .await?;
    Ok(Html(
        "<!doctype html><title>Address confirmed</title>\
         <p>Your e-mail address is confirmed. You can return to your app.</p>",
    ))
}

/// The `submit_url` for clients that let the user type the code.
pub async fn submit_json(
    State(state): State<AppState>,
    JsonBody(q, _): JsonBody<SubmitToken>,
) -> Result<Json<Value>> {
    state
        .threepids
        .submit_token(&q.sid, &q.client_secret, &q.token)
        .await?;
    Ok(Json(json!({ "success": true })))
}

pub async fn list(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let threepids: Vec<Value> = state
        .threepids
        .emails_of(&auth.user_id)?
        .into_iter()
        .map(|e| {
            json!({
                "medium": "email",
                "address": e.address,
                "added_at": e.added_at,
                "validated_at": e.validated_at,
            })
        })
        .collect();
    Ok(Json(json!({ "threepids": threepids })))
}

#[derive(Deserialize)]
pub struct AddBody {
    client_secret: String,
    sid: String,
    auth: Option<Value>,
}

pub async fn add(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<AddBody>,
) -> Result<Json<Value>> {
    state
        .confirm_with_password("add_3pid", &auth.user_id, body.auth.as_ref())
        .await?;
    let email =
        state
            .threepids
            .take_validated(&body.sid, &body.client_secret, Purpose::AddEmail)?;
    state.threepids.bind(&auth.user_id, &email)?;
    state.store.durable().await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    medium: String,
    address: String,
}

pub async fn delete(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    if body.medium != "email" {
        return Err(Error::ThreepidMediumNotSupported(
            "only e-mail is supported".into(),
        ));
    }
    if !state.threepids.unbind(&auth.user_id, &body.address)? {
        return Err(Error::ThreepidNotFound(
            "this address is not on your account".into(),
        ));
    }
    state.store.durable().await?;
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })))
}
