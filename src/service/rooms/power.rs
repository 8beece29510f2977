//! Power-level questions the auth rules do not answer by themselves.

use std::collections::HashSet;

use ruma::events::room::power_levels::UserPowerLevel;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::AuthorizationRules;
use ruma::state_res::events::{RoomCreateEvent, RoomPowerLevelsEvent, RoomPowerLevelsIntField};
use ruma::{Int, OwnedUserId, RoomVersionId, UserId};

use super::Rooms;
use crate::core::{Pdu, StateMap, room_version};
use crate::error::{Error, Result};

/// Power a user has when the room has no power-levels event: creators 100, others 0.
const DEFAULT_CREATOR_POWER: i64 = 100;

/// Whether `user` may redact events of other users (the `redact` level; room version 12
/// creators always may).
pub fn can_redact_others(
    rooms: &Rooms,
    version: &RoomVersionId,
    state: &StateMap,
    user: &UserId,
) -> Result<bool> {
    let powers = Powers::load(rooms, version, state)?;
    Ok(powers.user(user)? >= powers.field(RoomPowerLevelsIntField::Redact)?)
}

/// The power facts of one room state: its creators and its power-levels event, read once to
/// answer several questions.
pub struct Powers {
    rules: AuthorizationRules,
    creators: HashSet<OwnedUserId>,
    levels: Option<RoomPowerLevelsEvent<std::sync::Arc<Pdu>>>,
}

impl Powers {
    /// Reads the create and power-levels events of `state`, a state of a room of `version`.
    pub fn load(rooms: &Rooms, version: &RoomVersionId, state: &StateMap) -> Result<Self> {
        let rules = room_version::rules(version)?.authorization;
        let fetch = |kind: StateEventType| -> Result<Option<std::sync::Arc<Pdu>>> {
            match state.get(&(kind, String::new())) {
                Some(id) => rooms.pdu(id),
                None => Ok(None),
            }
        };
        let create = fetch(StateEventType::RoomCreate)?
            .ok_or_else(|| Error::internal("room without a create event"))?;
        let creators = RoomCreateEvent::new(create)
            .creators(&rules)
            .map_err(Error::internal)?;
        let levels = fetch(StateEventType::RoomPowerLevels)?.map(RoomPowerLevelsEvent::new);
        Ok(Self {
            rules,
            creators,
            levels,
        })
    }

    /// The creators of the room (the create event's sender or `creator`, plus the
    /// `additional_creators` from room version 12 on).
    pub fn creators(&self) -> &HashSet<OwnedUserId> {
        &self.creators
    }

    /// The power level of `user`: infinite for room version 12 creators; without a
    /// power-levels event, 100 for creators and 0 for everyone else.
    pub fn user(&self, user: &UserId) -> Result<UserPowerLevel> {
        if self.rules.explicitly_privilege_room_creators && self.creators.contains(user) {
            return Ok(UserPowerLevel::Infinite);
        }
        let level = match &self.levels {
            Some(levels) => levels
                .user_power_level(user, &self.rules)
                .map_err(Error::internal)?,
            None if self.creators.contains(user) => Int::new_saturating(DEFAULT_CREATOR_POWER),
            None => RoomPowerLevelsIntField::UsersDefault.default_value(),
        };
        Ok(UserPowerLevel::Int(level))
    }

    /// The level needed to send an event of type `kind` (`state_key` is `Some` for state
    /// events).
    pub fn event_level(&self, kind: &TimelineEventType, state_key: Option<&str>) -> Result<Int> {
        if let Some(levels) = &self.levels {
            return levels
                .event_power_level(kind, state_key, &self.rules)
                .map_err(Error::internal);
        }
        // Without a power-levels event, `state_default` is 0 (not its usual default of 50), as is
        // `events_default`: anyone who may be in the room may send.
        Ok(Int::from(0u8))
    }

    /// The value of an integer field (`invite`, `kick` …), or its default.
    pub fn field(&self, field: RoomPowerLevelsIntField) -> Result<Int> {
        match &self.levels {
            Some(levels) => levels
                .get_as_int_or_default(field, &self.rules)
                .map_err(Error::internal),
            None => Ok(field.default_value()),
        }
    }

    /// Whether `user` has the level to send an event of type `kind`.
    pub fn may_send(
        &self,
        user: &UserId,
        kind: &TimelineEventType,
        state_key: Option<&str>,
    ) -> Result<bool> {
        Ok(self.user(user)? >= self.event_level(kind, state_key)?)
    }

    /// Whether `user` has at least the `invite` level.
    pub fn may_invite(&self, user: &UserId) -> Result<bool> {
        Ok(self.user(user)? >= self.field(RoomPowerLevelsIntField::Invite)?)
    }
}
