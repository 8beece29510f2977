//! Room creation (`createRoom`): the create event, the creator's join, power levels, the canonical
//! alias, the preset's join rules and visibility, initial state, name, topic and invites, in the
//! specification's order; then the alias mapping and the directory entry.

use std::collections::HashMap;

use ruma::events::StateEventType;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId,
    RoomVersionId, UInt, UserId,
};
use serde_json::{Map, Value, json};

use super::alias::{AliasRecord, Reservation};
use super::{NewEvent, RoomInfo, Rooms};
use crate::core::{self, EventTemplate, Pdu, StateMap, room_version};
use crate::error::{Error, Result};
use crate::util::{now_ms, random_string};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

impl Preset {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "private_chat" => Ok(Self::PrivateChat),
            "trusted_private_chat" => Ok(Self::TrustedPrivateChat),
            "public_chat" => Ok(Self::PublicChat),
            other => Err(Error::InvalidParam(format!("unknown preset {other}"))),
        }
    }
}

/// Everything `createRoom` asks for, validated.
pub struct CreateRoom {
    pub creator: OwnedUserId,
    /// Content of the creator's own member event besides `membership` (display name, avatar).
    pub creator_profile: Map<String, Value>,
    pub room_version: RoomVersionId,
    pub preset: Preset,
    pub creation_content: Map<String, Value>,
    pub power_level_content_override: Map<String, Value>,
    pub initial_state: Vec<NewEvent>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    /// Users of other servers the caller invites once the room exists (their servers must sign
    /// the invite, so no event is made for them here); under `trusted_private_chat` they get the
    /// same power as local invitees.
    pub remote_invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// The alias (reserved beforehand) that maps to the room and becomes its canonical alias.
    pub alias: Option<Reservation>,
    /// Whether to publish the room in the directory.
    pub publish: bool,
}

impl Rooms {
    pub async fn create_room(&self, mut request: CreateRoom) -> Result<OwnedRoomId> {
        // We follow rooms of every supported version, but start new ones (upgrades included)
        // only in the versions without known flaws.
        if !room_version::is_creatable(&request.room_version) {
            return Err(Error::UnsupportedRoomVersion(format!(
                "room version {} is not supported",
                request.room_version
            )));
        }
        let rules = room_version::rules(&request.room_version)?;
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let mut info = RoomInfo {
            room_version: request.room_version.clone(),
            snapshot: None,
            extremities: Vec::new(),
            depth: 0,
        };
        let provisional_id = if v12 {
            None
        } else {
            let id = format!("!{}:{}", random_string(18), self.server_name);
            Some(RoomId::parse(&id).map_err(Error::internal)?)
        };
        self.check_creation(&request, v12, provisional_id.as_deref())?;
        let creator = &request.creator;
        let create = NewEvent::state(
            StateEventType::RoomCreate,
            "",
            Value::Object(create_content(&request, v12)),
        );
        let create =
            self.append_locked(&mut info, provisional_id.as_deref(), creator, create, None)?;
        let room_id = create.room_id().to_owned();
        let lock = self.room_lock(&room_id)?;
        let guard = lock.lock().await;
        for event in follow_up_events(&request, v12) {
            self.append_locked(&mut info, Some(&room_id), creator, event, None)?;
        }
        drop(guard);
        let record = AliasRecord {
            room_id: room_id.clone(),
            creator: creator.clone(),
        };
        self.aliases
            .finish_creation(request.alias.take(), &record, request.publish)?;
        self.store.durable().await?;
        self.announce(&room_id, None)?;
        Ok(room_id)
    }

    /// Builds and authorises every event of the new room in memory, writing nothing, so that a
    /// request refused part of the way (power levels the auth rules reject, an event over the
    /// size limit) is refused before the room exists instead of leaving it half-created.
    fn check_creation(
        &self,
        request: &CreateRoom,
        v12: bool,
        provisional_id: Option<&RoomId>,
    ) -> Result<()> {
        let version = &request.room_version;
        let mut state = StateMap::new();
        let mut built: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut room_id = provisional_id.map(ToOwned::to_owned);
        let mut prev_events = Vec::new();
        let create = NewEvent::state(
            StateEventType::RoomCreate,
            "",
            Value::Object(create_content(request, v12)),
        );
        let events = std::iter::once(create).chain(follow_up_events(request, v12));
        for (depth, event) in (1u64..).zip(events) {
            let mut template = EventTemplate {
                room_id: room_id.clone(),
                sender: request.creator.clone(),
                kind: event.kind,
                state_key: event.state_key,
                content: event.content,
                prev_events: std::mem::take(&mut prev_events),
                auth_events: Vec::new(),
                depth: UInt::try_from(depth).map_err(Error::internal)?,
                origin_server_ts: MilliSecondsSinceUnixEpoch(
                    UInt::try_from(now_ms()).map_err(Error::internal)?,
                ),
                redacts: None,
            };
            template.auth_events = core::auth::select_auth_events(version, &template, &state)?;
            let pdu = core::pdu::build_event(
                version,
                template,
                &self.server_name,
                &self.signing_key.pair,
            )?;
            core::auth::check(&pdu, &state, |id: &EventId| built.get(id).cloned())?;
            if let Some(entry) = pdu.state_entry() {
                state.insert(entry, pdu.event_id().to_owned());
            }
            room_id = Some(pdu.room_id().to_owned());
            prev_events = vec![pdu.event_id().to_owned()];
            built.insert(pdu.event_id().to_owned(), pdu);
        }
        Ok(())
    }
}

fn create_content(request: &CreateRoom, v12: bool) -> Map<String, Value> {
    let mut content = request.creation_content.clone();
    content.insert("room_version".into(), json!(request.room_version.as_str()));
    if v12 {
        content.remove("creator");
        if request.preset == Preset::TrustedPrivateChat {
            // From room version 12 on, the invitees of a trusted private chat get the creator's
            // power by being creators too (power levels may not list creators).
            // A malformed list given in `creation_content` is left for the checks to refuse.
            let listed = content
                .entry("additional_creators")
                .or_insert_with(|| json!([]));
            if let Value::Array(creators) = listed {
                for invitee in request.invite.iter().chain(&request.remote_invite) {
                    let invitee = json!(invitee);
                    if invitee != json!(request.creator) && !creators.contains(&invitee) {
                        creators.push(invitee);
                    }
                }
            }
            if content.get("additional_creators") == Some(&json!([])) {
                content.remove("additional_creators");
            }
        }
    } else {
        content.insert("creator".into(), json!(request.creator));
    }
    content
}

/// The member event `target` gets, with optional extra content.
pub fn member_event(target: &UserId, membership: &str, extra: Map<String, Value>) -> NewEvent {
    let mut content = extra;
    content.insert("membership".into(), json!(membership));
    NewEvent::state(
        StateEventType::RoomMember,
        target.as_str(),
        Value::Object(content),
    )
}

fn power_levels(request: &CreateRoom, v12: bool) -> Map<String, Value> {
    let mut users = Map::new();
    if !v12 {
        // From room version 12 on creators have infinite power and must not be listed.
        users.insert(request.creator.to_string(), json!(100));
    }
    if request.preset == Preset::TrustedPrivateChat && !v12 {
        for invitee in request.invite.iter().chain(&request.remote_invite) {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut content = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 0,
    });
    if let Some(map) = content.as_object_mut() {
        for (k, v) in &request.power_level_content_override {
            map.insert(k.clone(), v.clone());
        }
    }
    match content {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The events after the create event, in the order the specification gives.
fn follow_up_events(request: &CreateRoom, v12: bool) -> Vec<NewEvent> {
    let mut events = vec![
        member_event(&request.creator, "join", request.creator_profile.clone()),
        NewEvent::state(
            StateEventType::RoomPowerLevels,
            "",
            Value::Object(power_levels(request, v12)),
        ),
    ];
    if let Some(alias) = &request.alias {
        events.push(NewEvent::state(
            StateEventType::RoomCanonicalAlias,
            "",
            json!({ "alias": alias.alias() }),
        ));
    }
    let (join_rule, guest_access) = match request.preset {
        Preset::PublicChat => ("public", "forbidden"),
        Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
    };
    let overridden = |kind: &StateEventType| {
        request
            .initial_state
            .iter()
            .any(|e| e.kind.to_string() == kind.to_string() && e.state_key.as_deref() == Some(""))
    };
    for (kind, content) in [
        (
            StateEventType::RoomJoinRules,
            json!({ "join_rule": join_rule }),
        ),
        (
            StateEventType::RoomHistoryVisibility,
            json!({ "history_visibility": "shared" }),
        ),
        (
            StateEventType::RoomGuestAccess,
            json!({ "guest_access": guest_access }),
        ),
    ] {
        if !overridden(&kind) {
            events.push(NewEvent::state(kind, "", content));
        }
    }
    events.extend(request.initial_state.iter().cloned());
    if let Some(name) = &request.name {
        events.push(NewEvent::state(
            StateEventType::RoomName,
            "",
            json!({ "name": name }),
        ));
    }
    if let Some(topic) = &request.topic {
        events.push(NewEvent::state(
            StateEventType::RoomTopic,
            "",
            json!({ "topic": topic }),
        ));
    }
    for invitee in &request.invite {
        let mut extra = Map::new();
        if request.is_direct {
            extra.insert("is_direct".into(), json!(true));
        }
        events.push(member_event(invitee, "invite", extra));
    }
    events
}
