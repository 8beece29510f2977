//! Restricted joins of local users (`restricted` and `knock_restricted` join rules): whether the
//! user meets an `allow` condition, and which local member authorises the join through
//! `join_authorised_via_users_server`, as the auth rules require.

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::Rooms;
use super::power::Powers;
use crate::core::StateMap;
use crate::error::{Error, Result};

/// The allow condition this server can check: membership of another room.
const ROOM_MEMBERSHIP: &str = "m.room_membership";

impl Rooms {
    /// The local member to name in `join_authorised_via_users_server` when `user` joins
    /// `room_id` without an invite and the join rule is `restricted` or `knock_restricted`.
    ///
    /// `None` when the join needs no authoriser (another join rule, or the user is invited or
    /// joined already). 403 when the user is not joined to any room the `allow` conditions name,
    /// or when no local member may invite.
    pub fn join_authoriser(&self, room_id: &RoomId, user: &UserId) -> Result<Option<OwnedUserId>> {
        let info = self
            .info(room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        let state = self.current_state(room_id)?;
        let Some(allowed_rooms) = self.allowed_rooms(&state)? else {
            return Ok(None);
        };
        if matches!(
            self.membership(room_id, user)?.as_deref(),
            Some("join" | "invite")
        ) {
            return Ok(None);
        }
        if !self.is_joined_to_any(user, &allowed_rooms)? {
            return Err(Error::Forbidden(
                "this room is restricted to members of other rooms, and you are in none of them"
                    .into(),
            ));
        }
        let powers = Powers::load(self, &info.room_version, &state)?;
        self.local_inviter(room_id, &powers)?
            .map(Some)
            .ok_or_else(|| {
                Error::Forbidden("no member of this room on this server can let you in".into())
            })
    }

    /// The rooms named by the `m.room_membership` allow conditions when the join rule of `state`
    /// is `restricted` or `knock_restricted`; `None` for other join rules.
    pub(crate) fn allowed_rooms(&self, state: &StateMap) -> Result<Option<Vec<OwnedRoomId>>> {
        let Some(event_id) = state.get(&(StateEventType::RoomJoinRules, String::new())) else {
            return Ok(None);
        };
        let join_rules = self
            .pdu(event_id)?
            .ok_or_else(|| Error::internal(format!("state names missing event {event_id}")))?;
        let content: Value = serde_json::from_str(join_rules.content().get())?;
        Ok(restricted_allow(&content))
    }

    /// Whether `user` is joined to one of `rooms`.
    pub(crate) fn is_joined_to_any(&self, user: &UserId, rooms: &[OwnedRoomId]) -> Result<bool> {
        for room in rooms {
            if self.membership(room, user)?.as_deref() == Some("join") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A joined member of `room_id` on this server with the power to invite.
    fn local_inviter(&self, room_id: &RoomId, powers: &Powers) -> Result<Option<OwnedUserId>> {
        for (member, _) in self.members(room_id, Some("join"))? {
            let Ok(member) = OwnedUserId::try_from(member) else {
                continue;
            };
            if *member.server_name() == *self.server_name && powers.may_invite(&member)? {
                return Ok(Some(member));
            }
        }
        Ok(None)
    }
}

/// The rooms named by the `m.room_membership` allow conditions of join-rules content whose rule is
/// `restricted` or `knock_restricted`; `None` for other rules. Malformed conditions are skipped.
fn restricted_allow(content: &Value) -> Option<Vec<OwnedRoomId>> {
    match content.get("join_rule").and_then(Value::as_str) {
        Some("restricted" | "knock_restricted") => {}
        _ => return None,
    }
    let conditions = content.get("allow").and_then(Value::as_array);
    Some(
        conditions
            .into_iter()
            .flatten()
            .filter(|condition| {
                condition.get("type").and_then(Value::as_str) == Some(ROOM_MEMBERSHIP)
            })
            .filter_map(|condition| condition.get("room_id")?.as_str())
            .filter_map(|room_id| OwnedRoomId::try_from(room_id).ok())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn allow_conditions_of_restricted_rules() {
        let content = json!({
            "join_rule": "knock_restricted",
            "allow": [
                { "type": "m.room_membership", "room_id": "!a:x" },
                { "type": "m.room_membership", "room_id": "not a room" },
                { "type": "org.example.other", "room_id": "!b:x" },
                "garbage",
            ],
        });
        let rooms = restricted_allow(&content).unwrap();
        assert_eq!(rooms, vec![OwnedRoomId::try_from("!a:x").unwrap()]);
        assert_eq!(
            restricted_allow(&json!({ "join_rule": "restricted" })),
            Some(Vec::new())
        );
        assert_eq!(restricted_allow(&json!({ "join_rule": "public" })), None);
    }
}
