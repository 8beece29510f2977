//! Room creation and the list of joined rooms.

use axum::Json;
use axum::extract::State;
use ruma::events::StateEventType;
use ruma::{OwnedRoomAliasId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, parse_user_id};
use crate::core::room_version;
use crate::error::{Error, Result};
use crate::service::rooms::NewEvent;
use crate::service::rooms::alias::Reservation;
use crate::service::rooms::create::{CreateRoom, Preset};

#[derive(Deserialize)]
pub struct CreateRoomBody {
    #[serde(default)]
    creation_content: Map<String, Value>,
    #[serde(default, deserialize_with = "crate::util::from_objects")]
    initial_state: Vec<InitialState>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    is_direct: bool,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    power_level_content_override: Map<String, Value>,
    preset: Option<String>,
    room_alias_name: Option<String>,
    room_version: Option<String>,
    visibility: Option<String>,
}

#[derive(Deserialize)]
pub struct InitialState {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    state_key: String,
    content: Map<String, Value>,
}

/// Types that `createRoom` sets itself and that `initial_state` may not.
const RESERVED_INITIAL_STATE: &[&str] = &["m.room.create", "m.room.member", "m.room.power_levels"];

/// The display name and avatar a user's member events carry.
pub(crate) fn member_profile(state: &AppState, user_id: &UserId) -> Result<Map<String, Value>> {
    state.profiles.member_content(user_id)
}

pub async fn create_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<CreateRoomBody>,
) -> Result<Json<Value>> {
    let publish = match body.visibility.as_deref() {
        None | Some("private") => false,
        Some("public") => true,
        Some(other) => return Err(Error::InvalidParam(format!("unknown visibility {other}"))),
    };
    let alias = body
        .room_alias_name
        .as_deref()
        .map(|localpart| state.rooms.aliases.alias_from_localpart(localpart))
        .transpose()?;
    let room_version = match body.room_version {
        Some(v) => {
            let v = RoomVersionId::try_from(v.as_str())
                .map_err(|e| Error::BadJson(format!("room_version: {e}")))?;
            if !room_version::is_creatable(&v) {
                return Err(Error::UnsupportedRoomVersion(format!(
                    "room version {v} is not supported"
                )));
            }
            v
        }
        None => room_version::DEFAULT,
    };
    let preset = match body.preset.as_deref() {
        Some(p) => Preset::parse(p)?,
        None if body.visibility.as_deref() == Some("public") => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let mut invite = Vec::new();
    let mut remote_invite = Vec::new();
    for raw in &body.invite {
        let user = parse_user_id(raw)?;
        if user.server_name() != state.config.server_name.as_str() {
            if !state.federation.enabled() {
                return Err(Error::Forbidden(
                    "inviting users of other servers needs federation".into(),
                ));
            }
            if !remote_invite.contains(&user) {
                remote_invite.push(user);
            }
            continue;
        }
        if !state.is_active_user(&user)? {
            return Err(Error::NotFound(format!("{user} does not exist")));
        }
        if user != auth.user_id && !invite.contains(&user) {
            invite.push(user);
        }
    }
    let mut initial_state = Vec::new();
    for entry in body.initial_state {
        if RESERVED_INITIAL_STATE.contains(&entry.kind.as_str()) {
            return Err(Error::InvalidParam(format!(
                "{} cannot be set through initial_state",
                entry.kind
            )));
        }
        initial_state.push(NewEvent::state(
            StateEventType::from(entry.kind),
            entry.state_key,
            Value::Object(entry.content),
        ));
    }
    let auth_user = auth.user_id.clone();
    let room_id = state
        .rooms
        .create_room(CreateRoom {
            creator_profile: member_profile(&state, &auth.user_id)?,
            creator: auth.user_id,
            room_version,
            preset,
            creation_content: body.creation_content,
            power_level_content_override: body.power_level_content_override,
            initial_state,
            name: body.name,
            topic: body.topic,
            invite,
            remote_invite: remote_invite.clone(),
            is_direct: body.is_direct,
            alias: alias.map(|a| reserve_alias(&state, a)).transpose()?,
            publish,
        })
        .await?;
    // Users of other servers are invited once the room exists: their servers must sign.
    for invitee in remote_invite {
        let mut extra = Map::new();
        if body.is_direct {
            extra.insert("is_direct".into(), json!(true));
        }
        if let Err(e) = state
            .invite_remote(&room_id, &auth_user, &invitee, extra)
            .await
        {
            tracing::info!(%room_id, %invitee, error = %e, "could not invite a user of another server");
        }
    }
    Ok(Json(json!({ "room_id": room_id })))
}

/// Holds `createRoom`'s alias until the room exists; a taken alias is `M_ROOM_IN_USE`.
fn reserve_alias(state: &AppState, alias: OwnedRoomAliasId) -> Result<Reservation> {
    state.rooms.aliases.reserve(alias).map_err(|e| match e {
        Error::Conflict(message) => Error::RoomInUse(message),
        other => other,
    })
}

pub async fn joined_rooms(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let rooms = state.rooms.rooms_of(&auth.user_id, "join")?;
    Ok(Json(json!({ "joined_rooms": rooms })))
}
