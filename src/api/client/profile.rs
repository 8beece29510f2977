//! Profiles: the whole profile and single fields (displayname, avatar_url, extended fields).
//! Reading a profile needs no access token, as in the specification.

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::error::{Error, Result};

/// A user's profile: ours from the store, another server's user's by asking their server
/// (only `field` of it when given).
async fn profile_of(
    state: &AppState,
    raw_user: &str,
    field: Option<&str>,
) -> Result<Map<String, Value>> {
    let user_id = parse_user_id(raw_user)?;
    if user_id.server_name() != state.config.server_name.as_str() {
        if !state.federation.enabled() {
            return Err(Error::NotFound(
                "profiles of other servers are not available".into(),
            ));
        }
        return state.remote_profile(&user_id, field).await;
    }
    if !state.is_active_user(&user_id)? {
        return Err(Error::NotFound("no such user".into()));
    }
    state.profiles.get(&user_id)
}

pub async fn get_all(
    State(state): State<AppState>,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(Value::Object(profile_of(&state, &user, None).await?)))
}

pub async fn get_field(
    State(state): State<AppState>,
    Path((user, field)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let profile = profile_of(&state, &user, Some(&field)).await?;
    let value = profile
        .get(&field)
        .ok_or_else(|| Error::NotFound(format!("{field} is not set")))?;
    Ok(Json(json!({ field: value })))
}

fn own_profile(auth: &crate::service::sessions::Authed, user: &str) -> Result<ruma::OwnedUserId> {
    let user_id = parse_user_id(user)?;
    if user_id != auth.user_id {
        return Err(Error::Forbidden(
            "you can only change your own profile".into(),
        ));
    }
    Ok(user_id)
}

pub async fn set_field(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, field)): Path<(String, String)>,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user_id = own_profile(&auth, &user)?;
    let value = body
        .get(&field)
        .cloned()
        .ok_or_else(|| Error::MissingParam(format!("the body must contain {field}")))?;
    state.profiles.set_field(&user_id, &field, value)?;
    state.store.durable().await?;
    if matches!(field.as_str(), "displayname" | "avatar_url") {
        state.propagate_profile(&user_id).await;
    }
    Ok(Json(json!({})))
}

pub async fn delete_field(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, field)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = own_profile(&auth, &user)?;
    state.profiles.set_field(&user_id, &field, Value::Null)?;
    state.store.durable().await?;
    if matches!(field.as_str(), "displayname" | "avatar_url") {
        state.propagate_profile(&user_id).await;
    }
    Ok(Json(json!({})))
}
