//! Chat API profile of the caller: `GET /profile` and `PUT /profile`. The display name and
//! avatar are the Matrix profile (and, as when a Matrix client changes them, are carried into
//! the user's member event in every joined room); the status message is the Matrix presence
//! status message.

use axum::Json;
use axum::extract::State;
use axum::routing::get;
use ruma::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson};
use super::fields::nullable;
use super::file_model::{mxc_uri, own_image};
use super::signup::email_of;
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::service::presence::PresenceState;

pub(super) fn routes(routes: Routes) -> Routes {
    routes.route("/profile", get(get_profile).put(put_profile))
}

/// The longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 256;
/// The longest status message, in characters.
pub const MAX_STATUS_CHARS: usize = 256;

/// `PUT /profile`: absent fields stay as they are; `null` (or an empty string, for the display
/// name and the status message) clears.
#[derive(Deserialize)]
struct ProfileUpdate {
    #[serde(default, deserialize_with = "nullable")]
    display_name: Option<Option<String>>,
    /// A media ID the caller uploaded (an image).
    #[serde(default, deserialize_with = "nullable")]
    avatar_file_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    status_message: Option<Option<String>>,
}

/// 400 unless `name` has 1 to 256 characters (not all blank) and no control characters.
pub(super) fn check_display_name(name: &str) -> ChatResult<()> {
    if name.trim().is_empty() {
        return Err(ChatError::invalid("display_name may not be empty"));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(ChatError::invalid(format!(
            "display_name may have at most {MAX_DISPLAY_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::invalid(
            "display_name may not contain control characters",
        ));
    }
    Ok(())
}

fn check_status(status: &str) -> ChatResult<()> {
    if status.chars().count() > MAX_STATUS_CHARS {
        return Err(ChatError::invalid(format!(
            "status_message may have at most {MAX_STATUS_CHARS} characters"
        )));
    }
    if status.chars().any(char::is_control) {
        return Err(ChatError::invalid(
            "status_message may not contain control characters",
        ));
    }
    Ok(())
}

/// The `mxc://` URI of the caller's uploaded image `file_id` (400 for anything else, as every
/// `*_file_id` field answers).
fn avatar_mxc(state: &AppState, user_id: &UserId, file_id: &str) -> ChatResult<String> {
    let (record, _) = own_image(state, user_id, "avatar_file_id", file_id)?;
    Ok(mxc_uri(state, &record.media_id))
}

/// The caller's profile: `{user_id, username, display_name, avatar_url, status_message, email,
/// email_verified, mfa_enabled}`.
fn profile_object(state: &AppState, user_id: &UserId) -> ChatResult<Value> {
    let mut profile = super::model::user_summary(state, user_id)?;
    let status = if state.presence.enabled() {
        state.presence.get(user_id)?.and_then(|p| p.status_msg)
    } else {
        None
    };
    let (email, verified) = email_of(state, user_id)?;
    profile["status_message"] = json!(status);
    profile["email"] = json!(email);
    profile["email_verified"] = json!(verified);
    profile["mfa_enabled"] = json!(state.mfa.is_enabled(user_id)?);
    Ok(profile)
}

async fn get_profile(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
) -> ChatResult<Json<Value>> {
    Ok(Json(profile_object(&state, &auth.user_id)?))
}

async fn put_profile(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(update): ChatJson<ProfileUpdate>,
) -> ChatResult<Json<Value>> {
    let user_id = &auth.user_id;
    // Everything is checked before anything changes.
    // An empty display name clears it, as `null` does.
    let display_name = update
        .display_name
        .map(|name| name.filter(|n| !n.is_empty()));
    if let Some(Some(name)) = &display_name {
        check_display_name(name)?;
    }
    let avatar = match &update.avatar_file_id {
        Some(Some(file_id)) => Some(Some(avatar_mxc(&state, user_id, file_id)?)),
        Some(None) => Some(None),
        None => None,
    };
    if let Some(status) = &update.status_message {
        if !state.presence.enabled() {
            return Err(ChatError::forbidden(
                "presence (and so the status message) is disabled on this server",
            ));
        }
        if let Some(status) = status {
            check_status(status)?;
        }
    }

    let mut profile_changed = false;
    if let Some(name) = display_name {
        let value = name.map_or(Value::Null, |n| json!(n.trim()));
        state.profiles.set_field(user_id, "displayname", value)?;
        profile_changed = true;
    }
    if let Some(mxc) = avatar {
        state
            .profiles
            .set_field(user_id, "avatar_url", json!(mxc))?;
        profile_changed = true;
    }
    if profile_changed {
        state.store.durable().await?;
        // As the Matrix profile endpoints do: members of the user's rooms see the change.
        state.propagate_profile(user_id).await;
    }
    if let Some(status) = update.status_message {
        // Only the message changes: the presence stays what it is (a user never seen is
        // online, since this request comes from them).
        let presence = state
            .presence
            .get(user_id)?
            .map_or(PresenceState::Online, |p| p.presence);
        let status = status.filter(|s| !s.is_empty());
        state.presence.set(user_id, presence, status).await?;
    }
    Ok(Json(profile_object(&state, user_id)?))
}
