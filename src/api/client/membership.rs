//! Membership: join (restricted joins included), knock, invite, leave, kick, ban, unban. The auth
//! rules of the room version decide what is allowed; these handlers only shape the member events.

use axum::Json;
use axum::extract::{RawQuery, State};
use ruma::{OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::rooms::member_profile;
use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::api::extract::{ensure_room, existing_room, parse_room_id};
use crate::error::{Error, Result};
use crate::service::federation::membership::JoinRequest;
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
    let room_id = parse_room_id(&room)?;
    join(&state, &auth.user_id, room_id, Vec::new(), body.reason).await
}

/// `POST /join/{roomIdOrAlias}`: a room ID (with the servers to join it through in `via`, or
/// the deprecated `server_name`), or an alias, resolved by its server.
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let (room_id, mut servers) = room_or_alias(&state, &room).await?;
    servers.splice(0..0, via_servers(query.as_deref()));
    join(&state, &auth.user_id, room_id, servers, body.reason).await
}

/// A room ID, or the room an alias names with the servers its server says are in the room.
async fn room_or_alias(state: &AppState, raw: &str) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    if raw.starts_with('#') {
        super::directory::resolve_any_alias(state, raw).await
    } else {
        Ok((parse_room_id(raw)?, Vec::new()))
    }
}

/// The `via` (and deprecated `server_name`) query parameters; malformed names are skipped.
fn via_servers(query: Option<&str>) -> Vec<OwnedServerName> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "via" || key == "server_name")
        .filter_map(|(_, value)| OwnedServerName::try_from(value.as_ref()).ok())
        .collect()
}

/// Joins `user` to a room: through another server (`servers` first) when no user of ours is in
/// it, else here. In a `restricted` or `knock_restricted` room without an invite, a local member
/// with the power to invite is named in `join_authorised_via_users_server` when the user meets
/// an allow condition.
async fn join(
    state: &AppState,
    user: &UserId,
    room_id: OwnedRoomId,
    servers: Vec<OwnedServerName>,
    reason: Option<String>,
) -> Result<Json<Value>> {
    if state.is_remote_room(&room_id)? {
        state
            .join_remote(JoinRequest {
                user: user.to_owned(),
                room_id: room_id.clone(),
                servers,
                content: with_reason(member_profile(state, user)?, reason),
            })
            .await?;
        return Ok(Json(json!({ "room_id": room_id })));
    }
    ensure_room(state, &room_id)?;
    let mut extra = with_reason(member_profile(state, user)?, reason);
    if let Some(authoriser) = state.rooms.join_authoriser(&room_id, user)? {
        extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
    }
    set_membership(state, &room_id, user, user, "join", extra).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /knock/{roomIdOrAlias}`: asks to be let in (through another server, `via` first, when
/// no user of ours is in the room). The auth rules decide: the join rule must be `knock` or
/// `knock_restricted`, and the user neither joined, invited nor banned.
pub async fn knock(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    JsonBody(body, _): JsonBody<ReasonBody>,
) -> Result<Json<Value>> {
    let (room_id, mut servers) = room_or_alias(&state, &room).await?;
    servers.splice(0..0, via_servers(query.as_deref()));
    let user = &auth.user_id;
    let extra = with_reason(member_profile(&state, user)?, body.reason);
    if state.is_remote_room(&room_id)? {
        state.knock_remote(&room_id, user, servers, extra).await?;
        return Ok(Json(json!({ "room_id": room_id })));
    }
    ensure_room(&state, &room_id)?;
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
    // An invite or a knock in a room no user of ours is in is withdrawn through its servers.
    if matches!(
        state.rooms.membership(&room_id, &auth.user_id)?.as_deref(),
        Some("invite" | "knock")
    ) && state.is_remote_room(&room_id)?
    {
        state.leave_remote(&room_id, &auth.user_id, extra).await?;
        return Ok(Json(json!({})));
    }
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
        if !state.federation.enabled() {
            return Err(Error::Forbidden(
                "inviting users of other servers needs federation".into(),
            ));
        }
        let extra = with_reason(Map::new(), body.reason);
        state
            .invite_remote(&room_id, &auth.user_id, &target, extra)
            .await?;
        return Ok(Json(json!({})));
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
