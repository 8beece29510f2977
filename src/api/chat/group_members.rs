//! Chat API: the members of a group. Each action is a Matrix event in the group's room: joining
//! accepts the invite, adding invites, removing kicks, leaving leaves (and forgets the room), and
//! promoting or demoting edits `m.room.power_levels`. Admin rights are checked first for a clear
//! 403; the Matrix auth rules then decide the rest (an admin cannot remove or demote another
//! admin of the same level, nobody can demote a room version 12 creator).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ruma::events::StateEventType;
use ruma::{RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson, ChatPath};
use super::group_model::{
    ADMIN_LEVEL, GroupState, Membership, ensure_admin, ensure_friends, group_json, member_group,
};
use super::users::{existing_user, parse_user};
use crate::api::client::rooms::member_profile;
use crate::api::extract::AppState;
use crate::service::federation::membership::JoinRequest;
use crate::service::rooms::NewEvent;
use crate::service::rooms::create::member_event;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TargetBody {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminBody {
    user_id: String,
    admin: bool,
}

async fn set_membership(
    state: &AppState,
    room_id: &RoomId,
    sender: &UserId,
    target: &UserId,
    membership: &str,
    extra: Map<String, Value>,
) -> ChatResult<()> {
    state
        .rooms
        .append(
            room_id,
            sender,
            member_event(target, membership, extra),
            None,
        )
        .await?;
    Ok(())
}

/// The user a body names, who must be in the group (joined or invited): 404 otherwise.
fn member_target(state: &AppState, room_id: &RoomId, raw: &str) -> ChatResult<ruma::OwnedUserId> {
    let target = parse_user(state, raw)?;
    match state.rooms.membership(room_id, &target)?.as_deref() {
        Some("join" | "invite") => Ok(target),
        _ => Err(ChatError::not_found(format!(
            "{target} is not a member of this group"
        ))),
    }
}

/// `POST /groups/{id}/join` → 200 Group: accepts the invitation (already joined: nothing to do).
/// An invitation to a group of another server is accepted through that server (federation).
pub(super) async fn join(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    if membership == Membership::Invite {
        let profile = member_profile(&state, user)?;
        if state.is_remote_room(&room_id)? {
            state
                .join_remote(JoinRequest {
                    user: user.clone(),
                    room_id: room_id.clone(),
                    servers: Vec::new(),
                    content: profile,
                })
                .await?;
        } else {
            set_membership(&state, &room_id, user, user, "join", profile).await?;
        }
    }
    Ok(Json(group_json(&state, &room_id, user)?))
}

/// `POST /groups/{id}/add` {user_id} → 200 Group: an admin invites a friend of theirs.
pub(super) async fn add(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<TargetBody>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    let group = GroupState::load(&state, &room_id)?;
    ensure_admin(&group, user, membership, "add members")?;
    let target = existing_user(&state, &body.user_id)?;
    if let Some(current @ ("join" | "invite")) =
        state.rooms.membership(&room_id, &target)?.as_deref()
    {
        let what = if current == "join" {
            "a member"
        } else {
            "invited"
        };
        return Err(ChatError::new(
            StatusCode::CONFLICT,
            "already_member",
            format!("{target} is already {what}"),
        ));
    }
    ensure_friends(&state, user, &target)?;
    let profile = member_profile(&state, &target)?;
    set_membership(&state, &room_id, user, &target, "invite", profile).await?;
    Ok(Json(group_json(&state, &room_id, user)?))
}

/// `POST /groups/{id}/remove` {user_id} → 200 Group: an admin removes a member (or withdraws an
/// invitation). The auth rules refuse removing an admin of the same level (403).
pub(super) async fn remove(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<TargetBody>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    let group = GroupState::load(&state, &room_id)?;
    ensure_admin(&group, user, membership, "remove members")?;
    let target = member_target(&state, &room_id, &body.user_id)?;
    if target == *user {
        return Err(ChatError::invalid(
            "to leave the group, use POST /groups/{id}/leave",
        ));
    }
    set_membership(&state, &room_id, user, &target, "leave", Map::new()).await?;
    Ok(Json(group_json(&state, &room_id, user)?))
}

/// `POST /groups/{id}/leave` → 204: leaves the group (or declines the invitation) and forgets
/// it, so it no longer shows anywhere for the caller.
pub(super) async fn leave(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    if membership == Membership::Invite && state.is_remote_room(&room_id)? {
        // Declined through the group's server, which holds the room.
        state.leave_remote(&room_id, user, Map::new()).await?;
    } else {
        set_membership(&state, &room_id, user, user, "leave", Map::new()).await?;
    }
    state.rooms.forget(&room_id, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /groups/{id}/admins` {user_id, admin} → 200 Group: an admin promotes a member to admin
/// (power level 100) or demotes an admin (back to the default level). Demoting the group's last
/// joined admin is 409 `last_admin`; what the auth rules refuse (demoting another admin of the
/// same level, or a room version 12 creator) is 403.
pub(super) async fn set_admin(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<AdminBody>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    let group = GroupState::load(&state, &room_id)?;
    ensure_admin(&group, user, membership, "change who is an admin")?;
    let target = member_target(&state, &room_id, &body.user_id)?;
    if group.is_admin(&target)? == body.admin {
        return Ok(Json(group_json(&state, &room_id, user)?));
    }
    let mut levels = group.content(&state, StateEventType::RoomPowerLevels)?;
    let users_default = levels
        .get("users_default")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut users = match levels.remove("users") {
        Some(Value::Object(users)) => users,
        _ => Map::new(),
    };
    if body.admin {
        users.insert(target.to_string(), json!(ADMIN_LEVEL));
    } else {
        if group.joined_admins(&state)? == [target.clone()] {
            return Err(ChatError::new(
                StatusCode::CONFLICT,
                "last_admin",
                "the group's last admin cannot be demoted: promote someone else first",
            ));
        }
        if group.is_permanent_admin(&target)? {
            return Err(ChatError::forbidden(
                "the group's creator is always an admin",
            ));
        }
        if users_default < ADMIN_LEVEL {
            users.remove(target.as_str());
        } else {
            users.insert(target.to_string(), json!(0));
        }
    }
    levels.insert("users".into(), Value::Object(users));
    let event = NewEvent::state(StateEventType::RoomPowerLevels, "", Value::Object(levels));
    state.rooms.append(&room_id, user, event, None).await?;
    Ok(Json(group_json(&state, &room_id, user)?))
}
