//! Chat API: groups. A group is a private Matrix room (preset `private_chat`) whose power levels
//! keep managing it to admins (power level 100); creating, renaming and re-picturing one are
//! state events, so Matrix clients in the room see the same group. Member actions (join, add,
//! remove, leave, promote and demote) are in [`super::group_members`].

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ruma::events::StateEventType;
use ruma::{OwnedUserId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson, ChatPath};
use super::fields::nullable;
use super::file_model::{image_dimensions, mxc_uri, own_image};
use super::group_members;
use super::group_model::{
    ADMIN_LEVEL, GroupState, ensure_admin, ensure_friends, group_json, group_membership,
    member_group,
};
use super::users::existing_user;
use crate::api::Routes;
use crate::api::client::rooms::member_profile;
use crate::api::extract::AppState;
use crate::core::room_version;
use crate::service::rooms::NewEvent;
use crate::service::rooms::create::{CreateRoom, Preset};

/// Lengths of the group's texts, in characters.
const MAX_NAME_CHARS: usize = 100;
const MAX_TOPIC_CHARS: usize = 1000;

/// The most members a group can be created with in one request (more can be added later).
const MAX_INITIAL_MEMBERS: usize = 100;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/groups", get(list).post(create))
        .route("/groups/{id}", get(get_one).put(update))
        .route("/groups/{id}/join", post(group_members::join))
        .route("/groups/{id}/add", post(group_members::add))
        .route("/groups/{id}/remove", post(group_members::remove))
        .route("/groups/{id}/leave", post(group_members::leave))
        .route("/groups/{id}/admins", post(group_members::set_admin))
}

/// The power levels of a new group: the room's details, its members and its power levels are
/// the admins' to change (the Matrix auth rules then refuse the same things to Matrix clients
/// that the Chat API refuses); everyone may talk, and take part in calls.
fn group_power_levels() -> Map<String, Value> {
    let admin = ADMIN_LEVEL;
    let content = json!({
        "invite": admin,
        "kick": admin,
        "ban": admin,
        "redact": admin,
        "state_default": admin,
        "events_default": 0,
        "users_default": 0,
        "events": {
            "m.room.name": admin,
            "m.room.topic": admin,
            "m.room.avatar": admin,
            "m.room.power_levels": admin,
            "m.room.history_visibility": admin,
            "m.room.canonical_alias": admin,
            "m.room.join_rules": admin,
            "m.room.tombstone": admin,
            "m.room.server_acl": admin,
            "m.room.encryption": admin,
            "m.call.member": 0,
            "org.matrix.msc3401.call.member": 0,
        },
    });
    match content {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A group name: 1 to 100 characters once trimmed, no control characters.
fn check_name(name: &str) -> ChatResult<String> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ChatError::invalid(format!(
            "name: 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ChatError::invalid("name: control characters"));
    }
    Ok(name.to_owned())
}

/// A topic: at most 1000 characters (empty means none), no control characters but line breaks
/// and tabs (a topic may have paragraphs, unlike a name).
fn check_topic(topic: &str) -> ChatResult<String> {
    if topic.chars().count() > MAX_TOPIC_CHARS {
        return Err(ChatError::invalid(format!(
            "topic: at most {MAX_TOPIC_CHARS} characters"
        )));
    }
    if topic
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ChatError::invalid(
            "topic: control characters (other than line breaks and tabs)",
        ));
    }
    Ok(topic.to_owned())
}

/// The `m.room.avatar` content for a picture the caller uploaded: an image of theirs.
async fn picture_content(state: &AppState, user: &UserId, file_id: &str) -> ChatResult<Value> {
    let (record, content) = own_image(state, user, "picture_file_id", file_id)?;
    let dimensions = image_dimensions(state, &content).await;
    let mut info = json!({ "mimetype": content.content_type, "size": content.size });
    if let Some(d) = dimensions {
        info["w"] = json!(d.width);
        info["h"] = json!(d.height);
    }
    Ok(json!({ "url": mxc_uri(state, &record.media_id), "info": info }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    name: String,
    topic: Option<String>,
    picture_file_id: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

/// The users to invite: existing friends of the creator, each once, the creator left out.
fn initial_members(
    state: &AppState,
    creator: &UserId,
    raw: &[String],
) -> ChatResult<Vec<OwnedUserId>> {
    if raw.len() > MAX_INITIAL_MEMBERS {
        return Err(ChatError::invalid(format!(
            "members: at most {MAX_INITIAL_MEMBERS} at creation (add more later)"
        )));
    }
    let mut members: Vec<OwnedUserId> = Vec::new();
    for raw in raw {
        let user = existing_user(state, raw)?;
        if user == creator || members.contains(&user) {
            continue;
        }
        ensure_friends(state, creator, &user)?;
        members.push(user);
    }
    Ok(members)
}

/// `POST /groups` {name, topic?, picture_file_id?, members?} → 201 Group. The creator is its
/// first admin; the members (friends of the creator) are invited and join with
/// `POST /groups/{id}/join`.
async fn create(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<CreateBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    let user = &auth.user_id;
    let name = check_name(&body.name)?;
    let topic = body
        .topic
        .as_deref()
        .map(check_topic)
        .transpose()?
        .filter(|t| !t.is_empty());
    let mut initial_state = Vec::new();
    if let Some(file_id) = &body.picture_file_id {
        let content = picture_content(&state, user, file_id).await?;
        initial_state.push(NewEvent::state(StateEventType::RoomAvatar, "", content));
    }
    let invite = initial_members(&state, user, &body.members)?;
    let room_id = state
        .rooms
        .create_room(CreateRoom {
            creator: user.clone(),
            creator_profile: member_profile(&state, user)?,
            room_version: room_version::DEFAULT,
            preset: Preset::PrivateChat,
            creation_content: Map::new(),
            power_level_content_override: group_power_levels(),
            initial_state,
            name: Some(name),
            topic,
            invite,
            remote_invite: Vec::new(),
            is_direct: false,
            alias: None,
            publish: false,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(group_json(&state, &room_id, user)?),
    ))
}

/// `GET /groups` → `{groups: [Group]}`: the groups the caller is in or invited to, the newest
/// first.
async fn list(State(state): State<AppState>, ChatAuth(auth): ChatAuth) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let mut groups = Vec::new();
    for membership in ["join", "invite"] {
        for room_id in state.rooms.rooms_of(user, membership)? {
            if group_membership(&state, user, &room_id)?.is_some() {
                groups.push(group_json(&state, &room_id, user)?);
            }
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g["created_at"].as_u64().unwrap_or(0)));
    Ok(Json(json!({ "groups": groups })))
}

/// `GET /groups/{id}` → Group.
async fn get_one(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<Json<Value>> {
    let (room_id, _) = member_group(&state, &auth.user_id, &id)?;
    Ok(Json(group_json(&state, &room_id, &auth.user_id)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateBody {
    #[serde(default, deserialize_with = "nullable")]
    name: Option<Option<String>>,
    /// `null` or `""` removes the topic.
    #[serde(default, deserialize_with = "nullable")]
    topic: Option<Option<String>>,
    /// `null` removes the picture.
    #[serde(default, deserialize_with = "nullable")]
    picture_file_id: Option<Option<String>>,
}

/// `PUT /groups/{id}` {name?, topic?, picture_file_id?} → 200 Group (admins only). Each change
/// is one state event; a field equal to what the group already has sends nothing.
async fn update(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<UpdateBody>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (room_id, membership) = member_group(&state, user, &id)?;
    let group = GroupState::load(&state, &room_id)?;
    ensure_admin(&group, user, membership, "change its details")?;
    if body.name.is_none() && body.topic.is_none() && body.picture_file_id.is_none() {
        return Err(ChatError::invalid(
            "give at least one of name, topic and picture_file_id",
        ));
    }
    let mut changes = Vec::new();
    let current = |kind: StateEventType, field: &str| -> ChatResult<Option<Value>> {
        Ok(group.content(&state, kind)?.get(field).cloned())
    };
    match body.name {
        Some(None) => return Err(ChatError::invalid("name: a group always has a name")),
        Some(Some(name)) => {
            let name = check_name(&name)?;
            if current(StateEventType::RoomName, "name")? != Some(json!(name)) {
                changes.push((StateEventType::RoomName, json!({ "name": name })));
            }
        }
        None => {}
    }
    if let Some(topic) = body.topic {
        let topic = check_topic(topic.as_deref().unwrap_or_default())?;
        let now = current(StateEventType::RoomTopic, "topic")?;
        if now.as_ref().and_then(Value::as_str).unwrap_or_default() != topic {
            changes.push((StateEventType::RoomTopic, json!({ "topic": topic })));
        }
    }
    if let Some(picture) = body.picture_file_id {
        let content = match picture {
            Some(file_id) => picture_content(&state, user, &file_id).await?,
            None => json!({}),
        };
        if current(StateEventType::RoomAvatar, "url")? != content.get("url").cloned() {
            changes.push((StateEventType::RoomAvatar, content));
        }
    }
    for (kind, content) in changes {
        state
            .rooms
            .append(&room_id, user, NewEvent::state(kind, "", content), None)
            .await?;
    }
    Ok(Json(group_json(&state, &room_id, user)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            check_name("  Study group ").ok().as_deref(),
            Some("Study group")
        );
        assert!(check_name("   ").is_err());
        assert!(check_name(&"n".repeat(101)).is_err());
        assert!(check_name(&"ü".repeat(100)).is_ok());
        assert!(check_name("a\u{0}b").is_err());
    }

    #[test]
    fn topics_are_bounded() {
        assert!(check_topic("").is_ok());
        assert!(check_topic("line one\n\tline two").is_ok());
        assert!(check_topic("a\u{0}b").is_err());
        assert!(check_topic("a\rb").is_err());
        assert!(check_topic("a\u{1b}[31mb").is_err());
        assert!(check_topic(&"t".repeat(1000)).is_ok());
        assert!(check_topic(&"t".repeat(1001)).is_err());
    }

    #[test]
    fn group_power_levels_keep_management_to_admins() {
        let levels = group_power_levels();
        for key in ["invite", "kick", "ban", "state_default"] {
            assert_eq!(levels[key], json!(ADMIN_LEVEL), "{key}");
        }
        assert_eq!(levels["events"]["m.room.name"], json!(ADMIN_LEVEL));
        assert_eq!(levels["events_default"], json!(0));
    }

    #[test]
    fn null_and_absent_fields_differ() {
        let body: UpdateBody = serde_json::from_value(json!({"topic": null})).expect("parses");
        assert!(matches!(body.topic, Some(None)));
        assert!(body.name.is_none() && body.picture_file_id.is_none());
        assert!(serde_json::from_value::<UpdateBody>(json!({"colour": "red"})).is_err());
    }
}
