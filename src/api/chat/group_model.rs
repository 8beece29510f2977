//! Groups as the Chat API sees them. A group is a room the user is joined to or invited to that
//! is not one of their direct chats; everything about it is read from the room's current state:
//! the name, topic and picture from `m.room.name`, `m.room.topic` and `m.room.avatar`, the roles
//! from `m.room.power_levels` (admin = power level 100 or more, which room version 12 creators
//! always have) and the members from the membership index.

use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::events::room::power_levels::UserPowerLevel;
use ruma::{Int, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::error::{ChatError, ChatResult};
use super::model::{media_url, user_summary};
use crate::api::extract::{AppState, parse_room_id};
use crate::core::StateMap;
use crate::error::Error;
use crate::service::chat::friends::Friendship;
use crate::service::rooms::power::Powers;

/// The power level that makes a member an admin.
pub const ADMIN_LEVEL: i64 = 100;

/// The caller's membership in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Membership {
    Join,
    Invite,
}

impl Membership {
    fn parse(raw: Option<&str>) -> Option<Self> {
        match raw? {
            "join" => Some(Self::Join),
            "invite" => Some(Self::Invite),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Invite => "invite",
        }
    }
}

/// Whether `user` and `peer` are friends (both in their direct chat, neither blocking the
/// other).
pub fn are_friends(state: &AppState, user: &UserId, peer: &UserId) -> ChatResult<bool> {
    Ok(
        matches!(state.friendship(user, peer)?, Friendship::Friends(_))
            && !state.blocked_between(user, peer)?,
    )
}

/// 403 `not_friends` unless `peer` is a friend of `user`.
pub fn ensure_friends(state: &AppState, user: &UserId, peer: &UserId) -> ChatResult<()> {
    if are_friends(state, user, peer)? {
        return Ok(());
    }
    Err(ChatError::new(
        axum::http::StatusCode::FORBIDDEN,
        "not_friends",
        format!("{peer} is not your friend: only friends can be added to a group"),
    ))
}

/// The group `raw` names, with the caller's membership: 400 for a malformed ID, 404 unless the
/// caller is joined or invited (and did not forget it) and it is not one of their direct chats.
pub fn member_group(
    state: &AppState,
    user: &UserId,
    raw: &str,
) -> ChatResult<(OwnedRoomId, Membership)> {
    let room_id = parse_room_id(raw)?;
    let membership = group_membership(state, user, &room_id)?
        .ok_or_else(|| ChatError::not_found("no such group"))?;
    Ok((room_id, membership))
}

/// The caller's membership of a room when it is one of their groups. Not a group: a direct
/// chat of theirs, and an invite that is not one to a group — one from a user the caller blocks
/// (hidden, as `/sync` hides it) or one marked `is_direct` (a Matrix client's direct-chat
/// invite, which is a friend request, not a group).
pub fn group_membership(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
) -> ChatResult<Option<Membership>> {
    let membership = Membership::parse(state.rooms.membership(room_id, user)?.as_deref());
    if membership.is_none()
        || state.rooms.is_forgotten(room_id, user)?
        || state.dm_peer(user, room_id)?.is_some()
        || (membership == Some(Membership::Invite) && !is_group_invite(state, user, room_id)?)
    {
        return Ok(None);
    }
    Ok(membership)
}

/// Whether `user`'s pending invite to `room_id` is one to show as a group invite: not sent by a
/// user `user` blocks (ignores), and not marked `is_direct`.
fn is_group_invite(state: &AppState, user: &UserId, room_id: &RoomId) -> ChatResult<bool> {
    let Some(invite) =
        state
            .rooms
            .state_event(room_id, &StateEventType::RoomMember, user.as_str())?
    else {
        return Ok(false);
    };
    if state
        .account_data
        .ignored_users(user)?
        .contains(invite.sender())
    {
        return Ok(false);
    }
    let is_direct = serde_json::from_str::<Map<String, Value>>(invite.content().get())
        .ok()
        .and_then(|content| content.get("is_direct").and_then(Value::as_bool))
        .unwrap_or(false);
    Ok(!is_direct)
}

/// One room's current state, read once: its power facts and what the Group object shows.
pub struct GroupState {
    pub room_id: OwnedRoomId,
    pub state: Arc<StateMap>,
    pub powers: Powers,
}

impl GroupState {
    pub fn load(state: &AppState, room_id: &RoomId) -> ChatResult<Self> {
        let info = state
            .rooms
            .info(room_id)?
            .ok_or_else(|| ChatError::not_found("no such group"))?;
        let current = state.rooms.current_state(room_id)?;
        let powers = Powers::load(&state.rooms, &info.room_version, &current)?;
        Ok(Self {
            room_id: room_id.to_owned(),
            state: current,
            powers,
        })
    }

    /// Whether `user` has an admin's power level.
    pub fn is_admin(&self, user: &UserId) -> ChatResult<bool> {
        Ok(self.powers.user(user)? >= Int::new_saturating(ADMIN_LEVEL))
    }

    /// Whether `user` is an admin whatever the power levels say: a creator of a room of version
    /// 12 or later, whose power is infinite.
    pub fn is_permanent_admin(&self, user: &UserId) -> ChatResult<bool> {
        Ok(matches!(self.powers.user(user)?, UserPowerLevel::Infinite))
    }

    fn role(&self, user: &UserId) -> ChatResult<&'static str> {
        Ok(if self.is_admin(user)? {
            "admin"
        } else {
            "member"
        })
    }

    /// The content of a state event with an empty state key (redaction applied).
    pub fn content(
        &self,
        state: &AppState,
        kind: StateEventType,
    ) -> ChatResult<Map<String, Value>> {
        Ok(state
            .rooms
            .state_content(&self.state, &kind)?
            .unwrap_or_default())
    }

    /// The joined and invited members: (user, membership).
    pub fn members(&self, state: &AppState) -> ChatResult<Vec<(OwnedUserId, Membership)>> {
        let mut out = Vec::new();
        for (user, membership) in state.rooms.members(&self.room_id, None)? {
            if let (Some(membership), Ok(user)) = (
                Membership::parse(Some(&membership)),
                OwnedUserId::try_from(user),
            ) {
                out.push((user, membership));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The joined admins.
    pub fn joined_admins(&self, state: &AppState) -> ChatResult<Vec<OwnedUserId>> {
        let mut out = Vec::new();
        for (user, membership) in self.members(state)? {
            if membership == Membership::Join && self.is_admin(&user)? {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// The Group object, as `viewer` (a member) sees it: `{id, name, topic, picture_url,
    /// created_at, created_by, my_role, my_membership, members: [{user, role, membership}]}`.
    pub fn to_json(&self, state: &AppState, viewer: &UserId) -> ChatResult<Value> {
        let text = |kind: StateEventType, field: &str| -> ChatResult<Option<String>> {
            Ok(self
                .content(state, kind)?
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned))
        };
        let name = text(StateEventType::RoomName, "name")?.unwrap_or_default();
        let topic = text(StateEventType::RoomTopic, "topic")?;
        let picture_url = text(StateEventType::RoomAvatar, "url")?.and_then(|u| media_url(&u));
        let create = state
            .rooms
            .state_event(&self.room_id, &StateEventType::RoomCreate, "")?
            .ok_or_else(|| Error::internal("room without a create event"))?;
        let created_at: u64 = create.origin_server_ts().0.into();
        let mut members = Vec::new();
        let mut my_membership = None;
        for (user, membership) in self.members(state)? {
            if user == viewer {
                my_membership = Some(membership);
            }
            members.push(json!({
                "user": user_summary(state, &user)?,
                "role": self.role(&user)?,
                "membership": membership.as_str(),
            }));
        }
        let my_membership = my_membership.ok_or_else(|| ChatError::not_found("no such group"))?;
        Ok(json!({
            "id": self.room_id,
            "name": name,
            "topic": topic,
            "picture_url": picture_url,
            "created_at": created_at,
            "created_by": create.sender(),
            "my_role": self.role(viewer)?,
            "my_membership": my_membership.as_str(),
            "members": members,
        }))
    }
}

/// The Group object of `room_id` for `viewer`.
pub fn group_json(state: &AppState, room_id: &RoomId, viewer: &UserId) -> ChatResult<Value> {
    GroupState::load(state, room_id)?.to_json(state, viewer)
}

/// 403 unless `user` is a joined admin of the group.
pub fn ensure_admin(
    group: &GroupState,
    user: &UserId,
    membership: Membership,
    action: &str,
) -> ChatResult<()> {
    if membership != Membership::Join {
        return Err(ChatError::forbidden(format!(
            "accept the invitation to the group before you {action}"
        )));
    }
    if !group.is_admin(user)? {
        return Err(ChatError::forbidden(format!(
            "only the group's admins can {action}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_of_groups_are_join_and_invite() {
        assert_eq!(Membership::parse(Some("join")), Some(Membership::Join));
        assert_eq!(Membership::parse(Some("invite")), Some(Membership::Invite));
        assert_eq!(Membership::parse(Some("leave")), None);
        assert_eq!(Membership::parse(Some("ban")), None);
        assert_eq!(Membership::parse(None), None);
    }
}
