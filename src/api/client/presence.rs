//! Presence: `PUT` and `GET /presence/{userId}/status`. Users set only their own presence and
//! see the presence of users they share a room with. With presence disabled both answer 403
//! `M_FORBIDDEN`, as other homeservers do (the specification does not say).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, PassiveAuth, Path, parse_user_id};
use crate::error::{Error, Result};
use crate::service::presence::PresenceState;

#[derive(Deserialize)]
pub struct SetPresenceBody {
    presence: String,
    /// `null` or absent clears the message.
    #[serde(default)]
    status_msg: Option<String>,
}

fn require_enabled(state: &AppState) -> Result<()> {
    if state.presence.enabled() {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "presence is disabled on this server".into(),
        ))
    }
}

/// `PUT /presence/{userId}/status`: sets the caller's presence and status message. Not counted
/// as activity by the extractor: setting presence is itself the activity.
pub async fn set_status(
    State(state): State<AppState>,
    PassiveAuth(auth): PassiveAuth,
    Path(user): Path<String>,
    JsonBody(body, _): JsonBody<SetPresenceBody>,
) -> Result<Json<Value>> {
    require_enabled(&state)?;
    let user_id = parse_user_id(&user)?;
    if user_id != auth.user_id {
        return Err(Error::Forbidden(
            "you cannot set the presence of another user".into(),
        ));
    }
    let presence = PresenceState::parse(&body.presence)?;
    state
        .presence
        .set(&user_id, presence, body.status_msg)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /presence/{userId}/status`: the user's presence, for themselves and for users who share
/// a room with them (403 for everyone else). A user never seen is `offline`.
pub async fn get_status(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    require_enabled(&state)?;
    let user_id = parse_user_id(&user)?;
    if !state.presence_visible(&auth.user_id, &user_id)? {
        return Err(Error::Forbidden(
            "you are not allowed to see their presence".into(),
        ));
    }
    Ok(Json(match state.presence.get(&user_id)? {
        Some(view) => view.content(),
        None => json!({ "presence": PresenceState::Offline.as_str() }),
    }))
}
