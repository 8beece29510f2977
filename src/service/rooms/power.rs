//! Power-level questions the auth rules do not answer by themselves.

use ruma::events::StateEventType;
use ruma::state_res::events::{RoomCreateEvent, RoomPowerLevelsEvent, RoomPowerLevelsIntField};
use ruma::{RoomVersionId, UserId};

use super::Rooms;
use crate::core::{StateMap, room_version};
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
    let rules = room_version::rules(version)?.authorization;
    let fetch = |kind: StateEventType| -> Result<Option<crate::core::Pdu>> {
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
    if rules.explicitly_privilege_room_creators && creators.contains(user) {
        return Ok(true);
    }
    let Some(levels) = fetch(StateEventType::RoomPowerLevels)? else {
        let power = if creators.contains(user) {
            DEFAULT_CREATOR_POWER
        } else {
            0
        };
        return Ok(power >= i64::from(RoomPowerLevelsIntField::Redact.default_value()));
    };
    let levels = RoomPowerLevelsEvent::new(levels);
    let power = levels
        .user_power_level(user, &rules)
        .map_err(Error::internal)?;
    let needed = levels
        .get_as_int_or_default(RoomPowerLevelsIntField::Redact, &rules)
        .map_err(Error::internal)?;
    Ok(power >= needed)
}
