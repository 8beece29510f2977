//! Server-side key backup: `/room_keys/version[/{version}]` and
//! `/room_keys/keys[/{roomId}[/{sessionId}]]`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, Query, parse_room_id};
use crate::error::{Error, Result};
use crate::service::keys::backup::{KeyBackupData, Scope};

#[derive(Deserialize)]
pub struct VersionBody {
    algorithm: String,
    auth_data: Value,
    version: Option<String>,
}

pub async fn create_version(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<VersionBody>,
) -> Result<Json<Value>> {
    let version = state
        .keys
        .create_backup(&auth.user_id, &body.algorithm, body.auth_data)
        .await?;
    Ok(Json(json!({ "version": version })))
}

pub async fn latest_version(
    State(state): State<AppState>,
    Auth(auth): Auth,
) -> Result<Json<Value>> {
    Ok(Json(state.keys.backup_info(&auth.user_id, None)?))
}

pub async fn get_version(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    Ok(Json(state.keys.backup_info(&auth.user_id, Some(&version))?))
}

pub async fn update_version(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(version): Path<String>,
    JsonBody(body, _): JsonBody<VersionBody>,
) -> Result<Json<Value>> {
    if body.version.as_ref().is_some_and(|v| *v != version) {
        return Err(Error::InvalidParam(
            "the version in the body differs from the one in the path".into(),
        ));
    }
    state
        .keys
        .update_backup(&auth.user_id, &version, &body.algorithm, body.auth_data)
        .await?;
    Ok(Json(json!({})))
}

pub async fn delete_version(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(version): Path<String>,
) -> Result<Json<Value>> {
    state.keys.delete_backup(&auth.user_id, &version).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: String,
}

#[derive(Deserialize)]
pub struct SessionsBody {
    sessions: BTreeMap<String, KeyBackupData>,
}

#[derive(Deserialize)]
pub struct RoomsBody {
    rooms: BTreeMap<String, SessionsBody>,
}

/// The most session keys one request may store.
const MAX_SESSIONS: usize = 10_000;

fn check_session_id(session: &str) -> Result<()> {
    if session.is_empty() || session.len() > 255 || session.contains(char::is_control) {
        return Err(Error::InvalidParam("invalid session ID".into()));
    }
    Ok(())
}

async fn put(
    state: &AppState,
    auth: &crate::service::sessions::Authed,
    version: &str,
    entries: Vec<(ruma::OwnedRoomId, String, KeyBackupData)>,
) -> Result<Json<Value>> {
    if entries.len() > MAX_SESSIONS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_SESSIONS} session keys per request"
        )));
    }
    for (_, session, _) in &entries {
        check_session_id(session)?;
    }
    Ok(Json(
        state
            .keys
            .put_backup_keys(&auth.user_id, version, entries)
            .await?,
    ))
}

pub async fn put_all(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<VersionQuery>,
    JsonBody(body, _): JsonBody<RoomsBody>,
) -> Result<Json<Value>> {
    let mut entries = Vec::new();
    for (room, sessions) in body.rooms {
        let room_id = parse_room_id(&room)?;
        for (session, data) in sessions.sessions {
            entries.push((room_id.clone(), session, data));
        }
    }
    put(&state, &auth, &query.version, entries).await
}

pub async fn put_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<VersionQuery>,
    JsonBody(body, _): JsonBody<SessionsBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let entries = body
        .sessions
        .into_iter()
        .map(|(session, data)| (room_id.clone(), session, data))
        .collect();
    put(&state, &auth, &query.version, entries).await
}

pub async fn put_session(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, session)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
    JsonBody(data, _): JsonBody<KeyBackupData>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    put(
        &state,
        &auth,
        &query.version,
        vec![(room_id, session, data)],
    )
    .await
}

/// Groups `(room, session, key)` entries as `{room: {"sessions": {session: key}}}`.
fn by_room(entries: Vec<(String, String, Value)>) -> Map<String, Value> {
    let mut rooms = Map::new();
    for (room, session, key) in entries {
        let sessions = rooms
            .entry(room)
            .or_insert_with(|| json!({ "sessions": {} }));
        sessions["sessions"][session] = key;
    }
    rooms
}

pub async fn get_all(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let entries = state
        .keys
        .get_backup_keys(&auth.user_id, &query.version, Scope::All)?;
    Ok(Json(json!({ "rooms": by_room(entries) })))
}

pub async fn get_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let entries =
        state
            .keys
            .get_backup_keys(&auth.user_id, &query.version, Scope::Room(&room_id))?;
    let sessions: Map<String, Value> = entries.into_iter().map(|(_, s, k)| (s, k)).collect();
    Ok(Json(json!({ "sessions": sessions })))
}

pub async fn get_session(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, session)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    check_session_id(&session)?;
    state
        .keys
        .get_backup_keys(
            &auth.user_id,
            &query.version,
            Scope::Session(&room_id, &session),
        )?
        .into_iter()
        .next()
        .map(|(_, _, key)| Json(key))
        .ok_or_else(|| Error::NotFound("no such session key in the backup".into()))
}

pub async fn delete_all(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    Ok(Json(
        state
            .keys
            .delete_backup_keys(&auth.user_id, &query.version, Scope::All)
            .await?,
    ))
}

pub async fn delete_room(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    Ok(Json(
        state
            .keys
            .delete_backup_keys(&auth.user_id, &query.version, Scope::Room(&room_id))
            .await?,
    ))
}

pub async fn delete_session(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, session)): Path<(String, String)>,
    Query(query): Query<VersionQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    check_session_id(&session)?;
    Ok(Json(
        state
            .keys
            .delete_backup_keys(
                &auth.user_id,
                &query.version,
                Scope::Session(&room_id, &session),
            )
            .await?,
    ))
}
