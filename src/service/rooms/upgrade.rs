//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a replacement room of the new version with the
//! old room's transferable state, then a tombstone in the old room, which is also restricted.
//!
//! The old room's lock is held throughout, so its state cannot change between the permission
//! check and the tombstone; the check comes first, so a refused upgrade creates nothing.

use std::sync::Arc;

use ruma::events::room::power_levels::UserPowerLevel;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::AuthorizationRules;
use ruma::state_res::events::RoomPowerLevelsIntField;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use super::create::{CreateRoom, Preset};
use super::power::Powers;
use super::{NewEvent, RoomInfo, Rooms};
use crate::core::{StateMap, room_version};
use crate::error::{Error, Result};

/// An upgrade a local user asks for, its fields validated by the handler.
pub struct UpgradeRoom {
    pub room_id: OwnedRoomId,
    pub user: OwnedUserId,
    /// Content of the user's member event in the new room besides `membership`.
    pub user_profile: Map<String, Value>,
    pub new_version: RoomVersionId,
    /// Further creators of the new room; only room versions with additional creators (12 on)
    /// use them.
    pub additional_creators: Vec<OwnedUserId>,
}

/// The state copied to the replacement room besides the power levels (the specification's
/// recommended list; membership is not transferable). Local aliases and the directory entry
/// move to the replacement room too.
const TRANSFERRED: &[StateEventType] = &[
    StateEventType::RoomServerAcl,
    StateEventType::RoomEncryption,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomTopic,
    StateEventType::RoomGuestAccess,
    StateEventType::RoomHistoryVisibility,
    StateEventType::RoomJoinRules,
    StateEventType::RoomCanonicalAlias,
];

/// Keys of the old room's create event that the replacement room keeps.
const KEPT_CREATE_KEYS: &[&str] = &["type", "m.federate"];

/// The integer fields of a power-levels event.
const INT_FIELDS: [RoomPowerLevelsIntField; 7] = [
    RoomPowerLevelsIntField::UsersDefault,
    RoomPowerLevelsIntField::EventsDefault,
    RoomPowerLevelsIntField::StateDefault,
    RoomPowerLevelsIntField::Ban,
    RoomPowerLevelsIntField::Kick,
    RoomPowerLevelsIntField::Redact,
    RoomPowerLevelsIntField::Invite,
];

/// The `events_default` and `invite` an upgraded room gets at least (or `users_default + 1` if
/// higher), so that ordinary members can no longer talk or invite there.
const CLOSED_LEVEL: i64 = 50;

/// The level, at least, that a user with infinite power in the old room (a room version 12
/// creator) keeps in a replacement room of an older version.
const CREATOR_LEVEL: i64 = 100;

const TOMBSTONE_BODY: &str = "This room has been replaced";

/// The power levels of a replacement room.
#[derive(Debug, PartialEq)]
struct NewLevels {
    /// The content of the first power-levels event.
    initial: Map<String, Value>,
    /// The content sent after the copied state, when the upgrading user needed a temporary raise
    /// to send that state.
    restore: Option<Map<String, Value>>,
}

impl Rooms {
    /// Upgrades a room: checks that the user may send `m.room.tombstone` in it, creates the
    /// replacement room, sends the tombstone and restricts the old room. Answers the new room's
    /// ID.
    pub async fn upgrade_room(&self, request: UpgradeRoom) -> Result<OwnedRoomId> {
        let new_rules = room_version::rules(&request.new_version)?.authorization;
        let lock = self.room_lock(&request.room_id)?;
        let _guard = lock.lock().await;
        let mut info = self
            .info(&request.room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        let state = match info.snapshot {
            Some(id) => self.snapshots.state(id)?,
            None => Arc::new(StateMap::new()),
        };
        let powers = Powers::load(self, &info.room_version, &state)?;
        let power = self.check_may_upgrade(&request, &powers)?;
        let create = self.replacement_request(&request, &info, &state, power, &new_rules)?;
        let new_room = self.create_room(create).await?;
        self.close_old_room(&mut info, &request, &new_room, &state)?;
        self.aliases.move_room(&request.room_id, &new_room)?;
        self.store.durable().await?;
        self.announce(&request.room_id, None)?;
        Ok(new_room)
    }

    /// The user's power in the old room, if they may send `m.room.tombstone` there (joined, with
    /// the tombstone's level); 403 otherwise.
    fn check_may_upgrade(&self, request: &UpgradeRoom, powers: &Powers) -> Result<UserPowerLevel> {
        if self.membership(&request.room_id, &request.user)?.as_deref() != Some("join") {
            return Err(Error::Forbidden("you are not in this room".into()));
        }
        let power = powers.user(&request.user)?;
        let needed = powers.event_level(&TimelineEventType::RoomTombstone, Some(""))?;
        if power < needed {
            return Err(Error::Forbidden(format!(
                "upgrading this room needs power level {needed} (to send m.room.tombstone)"
            )));
        }
        Ok(power)
    }

    /// The `createRoom` request of the replacement room: the old create event's `type` and
    /// `m.federate`, the predecessor, the additional creators, the power levels and the
    /// transferred state.
    fn replacement_request(
        &self,
        request: &UpgradeRoom,
        info: &RoomInfo,
        state: &StateMap,
        power: UserPowerLevel,
        new_rules: &AuthorizationRules,
    ) -> Result<CreateRoom> {
        let old_create = self
            .state_content(state, &StateEventType::RoomCreate)?
            .unwrap_or_default();
        let mut creation_content: Map<String, Value> = KEPT_CREATE_KEYS
            .iter()
            .filter_map(|key| Some((key.to_string(), old_create.get(*key)?.clone())))
            .collect();
        let mut predecessor = json!({ "room_id": request.room_id });
        if let Some(last) = info.extremities.last() {
            predecessor["event_id"] = json!(last);
        }
        creation_content.insert("predecessor".into(), predecessor);
        if new_rules.additional_room_creators && !request.additional_creators.is_empty() {
            creation_content.insert(
                "additional_creators".into(),
                json!(request.additional_creators),
            );
        }
        let old_levels = self
            .state_content(state, &StateEventType::RoomPowerLevels)?
            .unwrap_or_default();
        let levels = replacement_levels(old_levels, request, power, new_rules);
        let mut initial_state = self.transferred_state(state)?;
        if let Some(restore) = levels.restore {
            initial_state.push(NewEvent::state(
                StateEventType::RoomPowerLevels,
                "",
                Value::Object(restore),
            ));
        }
        Ok(CreateRoom {
            creator: request.user.clone(),
            creator_profile: request.user_profile.clone(),
            room_version: request.new_version.clone(),
            preset: Preset::PrivateChat,
            creation_content,
            power_level_content_override: levels.initial,
            initial_state,
            name: None,
            topic: None,
            invite: Vec::new(),
            remote_invite: Vec::new(),
            is_direct: false,
            alias: None,
            publish: false,
        })
    }

    /// The [`TRANSFERRED`] state of the old room, as events for the new one.
    fn transferred_state(&self, state: &StateMap) -> Result<Vec<NewEvent>> {
        let mut events = Vec::new();
        for kind in TRANSFERRED {
            if let Some(content) = self.state_content(state, kind)? {
                events.push(NewEvent::state(kind.clone(), "", Value::Object(content)));
            }
        }
        Ok(events)
    }

    /// Sends the tombstone to the old room, then raises its `events_default` and `invite` if
    /// the user may change its power levels (the specification says "if possible").
    fn close_old_room(
        &self,
        info: &mut RoomInfo,
        request: &UpgradeRoom,
        new_room: &RoomId,
        state: &StateMap,
    ) -> Result<()> {
        let tombstone = NewEvent::state(
            StateEventType::RoomTombstone,
            "",
            json!({ "body": TOMBSTONE_BODY, "replacement_room": new_room }),
        );
        self.append_locked(info, Some(&request.room_id), &request.user, tombstone, None)?;
        let Some(closed) = self
            .state_content(state, &StateEventType::RoomPowerLevels)?
            .and_then(closed_levels)
        else {
            return Ok(());
        };
        let event = NewEvent::state(StateEventType::RoomPowerLevels, "", Value::Object(closed));
        match self.append_locked(info, Some(&request.room_id), &request.user, event, None) {
            Err(Error::Forbidden(reason)) => {
                tracing::info!(%reason, "the upgraded room's power levels stay as they were");
                Ok(())
            }
            other => other.map(drop),
        }
    }
}

/// The power levels of the replacement room, from the old room's: the upgrading user keeps their
/// level. From room version 12 on the creators (the user and the additional creators) have
/// infinite power and are taken out of `users`; before, a user whose level is below one the
/// copied state needs is raised for the copy and put back afterwards.
fn replacement_levels(
    old: Map<String, Value>,
    request: &UpgradeRoom,
    power: UserPowerLevel,
    rules: &AuthorizationRules,
) -> NewLevels {
    let mut content = with_explicit_defaults(old);
    if rules.explicitly_privilege_room_creators {
        let mut creators = vec![&request.user];
        if rules.additional_room_creators {
            creators.extend(&request.additional_creators);
        }
        if let Some(users) = content.get_mut("users").and_then(Value::as_object_mut) {
            for creator in creators {
                users.remove(creator.as_str());
            }
        }
        return NewLevels {
            initial: content,
            restore: None,
        };
    }
    let level = match power {
        UserPowerLevel::Int(level) => i64::from(level),
        _ => CREATOR_LEVEL.max(highest_level(&content)),
    };
    set_user_level(&mut content, &request.user, level);
    let needed = highest_level(&content);
    if needed <= level {
        return NewLevels {
            initial: content,
            restore: None,
        };
    }
    let mut initial = content.clone();
    set_user_level(&mut initial, &request.user, needed);
    NewLevels {
        initial,
        restore: Some(content),
    }
}

/// Power-levels content with every field the defaults apply to written out, so that the content
/// means the same wherever it is merged.
fn with_explicit_defaults(mut content: Map<String, Value>) -> Map<String, Value> {
    for field in INT_FIELDS {
        let default = i64::from(field.default_value());
        content
            .entry(field.as_str())
            .or_insert_with(|| json!(default));
    }
    for map in ["users", "events"] {
        if !content.get(map).is_some_and(Value::is_object) {
            content.insert(map.into(), json!({}));
        }
    }
    content
}

/// The highest level the content asks for: of its integer fields and of its event types.
fn highest_level(content: &Map<String, Value>) -> i64 {
    let fields = INT_FIELDS
        .iter()
        .filter_map(|field| content.get(field.as_str()));
    let events = content
        .get("events")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|events| events.values());
    fields
        .chain(events)
        .filter_map(Value::as_i64)
        .max()
        .unwrap_or(0)
}

/// Sets `user`'s entry in `users`.
fn set_user_level(content: &mut Map<String, Value>, user: &UserId, level: i64) {
    if let Some(users) = content.get_mut("users").and_then(Value::as_object_mut) {
        users.insert(user.to_string(), json!(level));
    }
}

/// The old room's power levels with `events_default` and `invite` raised to the greater of
/// [`CLOSED_LEVEL`] and `users_default + 1`; `None` if they are that high already.
fn closed_levels(mut content: Map<String, Value>) -> Option<Map<String, Value>> {
    let users_default = content
        .get("users_default")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let floor = CLOSED_LEVEL.max(users_default.saturating_add(1));
    let mut changed = false;
    for field in [
        RoomPowerLevelsIntField::EventsDefault,
        RoomPowerLevelsIntField::Invite,
    ] {
        let current = content
            .get(field.as_str())
            .and_then(Value::as_i64)
            .unwrap_or_else(|| i64::from(field.default_value()));
        if current < floor {
            content.insert(field.as_str().into(), json!(floor));
            changed = true;
        }
    }
    changed.then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str, additional: &[&str]) -> UpgradeRoom {
        UpgradeRoom {
            room_id: OwnedRoomId::try_from("!old:example.org").unwrap(),
            user: OwnedUserId::try_from(user).unwrap(),
            user_profile: Map::new(),
            new_version: RoomVersionId::V12,
            additional_creators: additional
                .iter()
                .map(|u| OwnedUserId::try_from(*u).unwrap())
                .collect(),
        }
    }

    fn rules(version: RoomVersionId) -> AuthorizationRules {
        room_version::rules(&version).unwrap().authorization
    }

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn v12_creators_leave_the_users_map() {
        let old = object(json!({ "users": { "@a:x": 100, "@b:x": 50, "@c:x": 20 } }));
        let levels = replacement_levels(
            old,
            &request("@a:x", &["@b:x"]),
            UserPowerLevel::Int(100.into()),
            &rules(RoomVersionId::V12),
        );
        assert_eq!(levels.initial["users"], json!({ "@c:x": 20 }));
        assert_eq!(levels.initial["state_default"], json!(50));
        assert_eq!(levels.restore, None);
    }

    #[test]
    fn a_lower_user_is_raised_for_the_copy_and_put_back() {
        let old = object(json!({
            "users": { "@a:x": 100, "@b:x": 50 },
            "events": { "m.room.tombstone": 50, "m.room.power_levels": 100 },
        }));
        let levels = replacement_levels(
            old,
            &request("@b:x", &[]),
            UserPowerLevel::Int(50.into()),
            &rules(RoomVersionId::V11),
        );
        assert_eq!(levels.initial["users"]["@b:x"], json!(100));
        let restore = levels.restore.unwrap();
        assert_eq!(restore["users"], json!({ "@a:x": 100, "@b:x": 50 }));
        assert_eq!(restore["events"], levels.initial["events"]);
    }

    #[test]
    fn an_infinite_creator_gets_the_highest_level_in_older_versions() {
        let old = object(json!({ "users": {}, "events": { "m.room.tombstone": 150 } }));
        let levels = replacement_levels(
            old,
            &request("@a:x", &["@b:x"]),
            UserPowerLevel::Infinite,
            &rules(RoomVersionId::V11),
        );
        assert_eq!(levels.initial["users"], json!({ "@a:x": 150 }));
        assert_eq!(levels.restore, None);
    }

    #[test]
    fn closing_raises_events_default_and_invite() {
        let closed = closed_levels(object(json!({ "users_default": 60, "invite": 70 }))).unwrap();
        assert_eq!(
            (&closed["events_default"], &closed["invite"]),
            (&json!(61), &json!(70))
        );
        let already = object(json!({ "events_default": 50, "invite": 50 }));
        assert_eq!(closed_levels(already), None);
    }
}
