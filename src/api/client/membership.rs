//! Membership: join (restricted joins included), knock, invite, leave, kick, ban, unban. The auth
//! rules of the room version decide what is allowed; these handlers only shape the member events.

use axum::Json;
use axum::extract::State;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rooms::member_profile;
use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::api::extract::{existing_room, parse_room_id};
use crate::error::{Error, Result};
use crate::service::rooms::create::member_event;

#[derive(Deserialize)]
pub struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

fn with_reason(mut extra: Map<String, Value>, reason: Option<String>) -> Map<String, Value> {
    if let Some(reason) = reason {
        extra.insert("reason".into(), json!(reason));
    }
    extra
}

async fn set_membership(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    extra: Map<String, Value>,
) -> Result<String> {
    let event_id = state
        .rooms
        .append(
            room_id,
            sender,
            member_event(target, membership, extra),
            None,
        )
        .await?;
    Ok(event_id.to_string())
}

pub async fn join_by_id(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    join(&state, &auth.user_id, &room, body.reason).await
}

/// `POST /join/{roomIdOrAlias}`: a room ID, or a local alias resolved to one (`via` and
/// `server_name` do not matter for local aliases; remote ones are unknown without federation).
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    if room.starts_with('#') {
        let room_id = super::directory::resolve_alias(&state, &room)?;
        return join(&state, &auth.user_id, room_id.as_str(), body.reason).await;
    }
    join(&state, &auth.user_id, &room, body.reason).await
}

/// Joins `user` to a room. In a `restricted` or `knock_restricted` room without an invite, a
/// local member with the power to invite is named in `join_authorised_via_users_server` when the
/// user meets an allow condition.
async fn join(
    state: &AppState,
    user: &UserId,
    room: &str,
    reason: Option<String>,
) -> Result<Json<Value>> {
    let room_id = existing_room(state, room)?;
    let mut extra = with_reason(member_profile(state, user)?, reason);
    if let Some(authoriser) = state.rooms.join_authoriser(&room_id, user)? {
        extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
    }
    set_membership(state, &room_id, user, user, "join", extra).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /knock/{roomIdOrAlias}`: asks to be let in. The auth rules decide: the join rule must be
/// `knock` or `knock_restricted`, and the user neither joined, invited nor banned.
pub async fn knock(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = if room.starts_with('#') {
        super::directory::resolve_alias(&state, &room)?
    } else {
        existing_room(&state, &room)?
    };
    let user = &auth.user_id;
    let extra = with_reason(member_profile(&state, user)?, body.reason);
    set_membership(&state, &room_id, user, user, "knock", extra).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn leave(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = existing_room(&state, &room)?;
    let extra = with_reason(Map::new(), body.reason);
    set_membership(
        &state,
        &room_id,
        &auth.user_id,
        &auth.user_id,
        "leave",
        extra,
    )
    .await?;
    Ok(Json(json!({})))
}

pub async fn invite(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = existing_room(&state, &room)?;
    let target = parse_user_id(&body.user_id)?;
    if target.server_name() != state.config.server_name.as_str() {
        return Err(Error::Forbidden(
            "inviting users of other servers needs federation".into(),
        ));
    }
    if !state.is_active_user(&target)? {
        return Err(Error::NotFound(format!("{target} does not exist")));
    }
    let extra = with_reason(member_profile(&state, &target)?, body.reason);
    set_membership(&state, &room_id, &auth.user_id, &target, "invite", extra).await?;
    Ok(Json(json!({})))
}

async fn act_on_member(
    state: AppState,
    auth: crate::service::sessions::Authed,
    room: String,
    body: TargetBody,
    membership: &str,
    require_current: Option<&str>,
) -> Result<Json<Value>> {
    let room_id = existing_room(&state, &room)?;
    let target = parse_user_id(&body.user_id)?;
    if let Some(required) = require_current
        && state.rooms.membership(&room_id, &target)?.as_deref() != Some(required)
    {
        return Err(Error::Forbidden(format!(
            "{target} is not {required} in this room"
        )));
    }
    let extra = with_reason(Map::new(), body.reason);
    set_membership(&state, &room_id, &auth.user_id, &target, membership, extra).await?;
    Ok(Json(json!({})))
}

pub async fn kick(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let target = parse_user_id(&body.user_id)?;
    // Kicking someone who is not in the room (nor invited) is refused, not a no-op.
    match state.rooms.membership(&room_id, &target)?.as_deref() {
        Some("join" | "invite" | "knock") => {}
        _ => return Err(Error::Forbidden(format!("{target} is not in this room"))),
    }
    act_on_member(state, auth, room, body, "leave", None).await
}

pub async fn ban(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    act_on_member(state, auth, room, body, "ban", None).await
}

pub async fn unban(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<TargetBody>,
) -> Result<Json<Value>> {
    act_on_member(state, auth, room, body, "leave", Some("ban")).await
}
