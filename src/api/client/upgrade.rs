//! Room upgrades: `POST /rooms/{roomId}/upgrade`.

use axum::Json;
use axum::extract::State;
use ruma::{OwnedUserId, RoomVersionId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rooms::member_profile;
use crate::api::extract::parse_room_id;
use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::core::room_version;
use crate::error::{Error, Result};
use crate::service::rooms::upgrade::UpgradeRoom;

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<String>,
}

/// `POST /rooms/{roomId}/upgrade`: replaces the room with one of `new_version` and answers
/// `{"replacement_room": …}`.
pub async fn upgrade(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<UpgradeBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let new_version = parse_version(&body.new_version)?;
    let additional_creators = parse_creators(&body.additional_creators, &auth.user_id)?;
    let replacement = state
        .rooms
        .upgrade_room(UpgradeRoom {
            user_profile: member_profile(&state, &auth.user_id)?,
            room_id,
            user: auth.user_id,
            new_version,
            additional_creators,
        })
        .await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}

/// A room version we create rooms in; 400 `M_UNSUPPORTED_ROOM_VERSION` otherwise.
fn parse_version(raw: &str) -> Result<RoomVersionId> {
    let version =
        RoomVersionId::try_from(raw).map_err(|e| Error::BadJson(format!("new_version: {e}")))?;
    if !room_version::is_creatable(&version) {
        return Err(Error::UnsupportedRoomVersion(format!(
            "room version {version} is not supported"
        )));
    }
    Ok(version)
}

/// The additional creators as user IDs, without duplicates and without the upgrading user.
fn parse_creators(raw: &[String], user: &UserId) -> Result<Vec<OwnedUserId>> {
    let mut creators: Vec<OwnedUserId> = Vec::new();
    for id in raw {
        let id = parse_user_id(id)?;
        if id != user && !creators.contains(&id) {
            creators.push(id);
        }
    }
    Ok(creators)
}
