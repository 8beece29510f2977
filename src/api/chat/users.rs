//! Chat API: users. This module adds the routes of every `[users]` endpoint (sign-up, sessions,
//! profile, password reset, two-factor login, blocking) and serves `GET /users/{id}` (another
//! user's public profile, with their presence when the caller may see it) and `GET /uptime`.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use ruma::OwnedUserId;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatPath};
use super::model::user_summary;
use super::{blocks, login, password_reset, profile, signup, totp};
use crate::api::Routes;
use crate::api::extract::{AppState, parse_user_id};
use crate::service::presence::PresenceState;
use crate::util::now_ms;

pub(super) fn routes(routes: Routes) -> Routes {
    let routes = signup::routes(routes);
    let routes = login::routes(routes);
    let routes = profile::routes(routes);
    let routes = password_reset::routes(routes);
    let routes = totp::routes(routes);
    let routes = blocks::routes(routes);
    routes
        .route("/users/{id}", get(get_user))
        .route("/uptime", get(uptime))
}

/// A user named in a path or body: a full user ID (`@alice:server`), or a bare username of this
/// server (`alice`, compared in lower case as usernames are). 400 when it is neither: a bare
/// username must follow the username grammar (full IDs may be historical ones of other servers).
pub(crate) fn parse_user(state: &AppState, raw: &str) -> ChatResult<OwnedUserId> {
    let raw = raw.trim();
    let invalid = || ChatError::invalid(format!("{raw:?} is not a user ID or username"));
    if raw.starts_with('@') {
        return parse_user_id(raw).map_err(|_| invalid());
    }
    if raw.is_empty() || raw.contains(':') {
        return Err(invalid());
    }
    let user = parse_user_id(&format!(
        "@{}:{}",
        raw.to_lowercase(),
        state.config.server_name
    ))
    .map_err(|_| invalid())?;
    user.validate_strict().map_err(|_| invalid())?;
    Ok(user)
}

/// Like [`parse_user`], for a user who must have an active account on this server (404
/// otherwise). Takes a user ID already parsed as well as raw text.
pub(crate) fn existing_user(state: &AppState, raw: impl AsRef<str>) -> ChatResult<OwnedUserId> {
    let user_id = parse_user(state, raw.as_ref())?;
    if user_id.server_name() != state.config.server_name.as_str()
        || !state.is_active_user(&user_id)?
    {
        return Err(ChatError::not_found("no such user"));
    }
    Ok(user_id)
}

/// `GET /users/{id}`: UserSummary plus `status_message`, `presence`, `online` and
/// `last_seen_at`, which are `null` unless the caller may see the user's presence: it is
/// themselves, or they share a joined room (as for Matrix presence), and neither blocks the
/// other. `blocked` says whether the caller blocks them.
async fn get_user(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<Json<Value>> {
    let user_id = existing_user(&state, &id)?;
    let mut body = user_summary(&state, &user_id)?;
    let visible = state.presence.enabled()
        && state.presence_visible(&auth.user_id, &user_id)?
        && !state.blocked_between(&auth.user_id, &user_id)?;
    let (mut status, mut presence, mut online, mut last_seen) = (None, None, None, None);
    if visible {
        let view = state.presence.get(&user_id)?;
        let state_now = view.as_ref().map_or(PresenceState::Offline, |v| v.presence);
        presence = Some(state_now.as_str());
        online = Some(state_now == PresenceState::Online);
        last_seen = view
            .as_ref()
            .and_then(|v| v.last_active_ago)
            .map(|ago| now_ms().saturating_sub(ago));
        status = view.and_then(|v| v.status_msg);
    }
    body["status_message"] = json!(status);
    body["presence"] = json!(presence);
    body["online"] = json!(online);
    body["last_seen_at"] = json!(last_seen);
    body["blocked"] = json!(
        state
            .account_data
            .ignored_users(&auth.user_id)?
            .contains(&user_id)
    );
    Ok(Json(body))
}

/// `GET /uptime` (no token): `{status: "ok", started_at, uptime_ms, version}`, once the store
/// answers a read (otherwise the error says why, as `/health` does).
async fn uptime(State(state): State<AppState>) -> ChatResult<Json<Value>> {
    state.accounts.exists(ruma::user_id!("@health:localhost"))?;
    let started = state.chat.started_at;
    let started_at = started
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let uptime_ms = started.elapsed().map_or(0, |d| d.as_millis() as u64);
    Ok(Json(json!({
        "status": "ok",
        "started_at": started_at,
        "uptime_ms": uptime_ms,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}
