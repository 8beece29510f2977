//! Client config ("account data"), global and per room, and room tags (stored as the room
//! account data type `m.tag`). Users may only read and write their own.

use axum::Json;
use axum::extract::State;
use ruma::OwnedUserId;
use serde_json::{Value, json};

use crate::api::extract::existing_room;
use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::error::{Error, Result};
use crate::service::sessions::Authed;

/// Types the server manages; clients may read them but not set them here.
const SERVER_MANAGED: [&str; 2] = ["m.fully_read", "m.push_rules"];

/// The user in the path, who must be the one making the request.
fn own_user(auth: &Authed, raw: &str) -> Result<OwnedUserId> {
    let user_id = parse_user_id(raw)?;
    if user_id != auth.user_id {
        return Err(Error::Forbidden(
            "you can only access your own account data".into(),
        ));
    }
    Ok(user_id)
}

/// Refuses a type the server manages (405 `M_BAD_JSON`, as the specification requires).
fn refuse_server_managed(kind: &str) -> Result<()> {
    if SERVER_MANAGED.contains(&kind) {
        return Err(Error::ServerManaged(format!(
            "cannot set {kind} through this API"
        )));
    }
    Ok(())
}

fn found(content: Option<Value>) -> Result<Json<Value>> {
    content
        .map(Json)
        .ok_or_else(|| Error::NotFound("account data not found".into()))
}

pub async fn get_global(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, kind)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    if kind == crate::service::push::rules::PUSH_RULES_TYPE {
        return Ok(Json(state.push_rules_content(&user_id)?));
    }
    found(state.account_data.get(&user_id, None, &kind)?)
}

pub async fn set_global(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, kind)): Path<(String, String)>,
    JsonBody(_, content): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    refuse_server_managed(&kind)?;
    state
        .account_data
        .set(&user_id, None, &kind, content)
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, room, kind)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    let room_id = existing_room(&state, &room)?;
    found(state.account_data.get(&user_id, Some(&room_id), &kind)?)
}

pub async fn set_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, room, kind)): Path<(String, String, String)>,
    JsonBody(_, content): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    let room_id = existing_room(&state, &room)?;
    refuse_server_managed(&kind)?;
    state
        .account_data
        .set(&user_id, Some(&room_id), &kind, content)
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_tags(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, room)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    let room_id = existing_room(&state, &room)?;
    let tags = state.account_data.tags(&user_id, &room_id)?;
    Ok(Json(json!({ "tags": tags })))
}

pub async fn set_tag(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
    JsonBody(_, info): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    let room_id = existing_room(&state, &room)?;
    state
        .account_data
        .set_tag(&user_id, &room_id, &tag, info)
        .await?;
    Ok(Json(json!({})))
}

pub async fn delete_tag(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, room, tag)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let user_id = own_user(&auth, &user)?;
    let room_id = existing_room(&state, &room)?;
    state
        .account_data
        .remove_tag(&user_id, &room_id, &tag)
        .await?;
    Ok(Json(json!({})))
}
