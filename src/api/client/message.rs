//! Sending and reading events: send, state, redact, single events, `/messages`, members.
//!
//! Reading follows history visibility (see `service::rooms::visibility`): every event is checked
//! against the room state at that event; room state is the current one while joined (or when the
//! room is world-readable) and the state as it was when the user left otherwise.

use axum::Json;
use axum::extract::State;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, Query};
use crate::api::extract::{ensure_room, parse_event_id, parse_room_id};
use crate::error::{Error, Result};
use std::sync::Arc;

use crate::core::filter::RoomEventFilter;
use crate::core::{Pdu, StateMap};
use crate::service::rooms::EventMeta;
use crate::service::rooms::read::{PageRequest, Viewer};
// Pagination and sync tokens are the same stream positions: `prev_batch` feeds `/messages`.
use crate::service::rooms::visibility::Reader;
use crate::service::rooms::{NewEvent, Txn};
use crate::service::sessions::Authed;
pub(crate) use crate::service::sync::{parse_token, token};

use super::history;
use crate::service::federation::history::parse_history_token;
use crate::service::federation::history_page::HistoryRequest;

/// The largest `limit` `/messages` and `/members` honour.
const MAX_PAGE: usize = 1000;

/// The reader for a room that must exist.
pub(crate) fn reader(state: &AppState, room_id: &RoomId, user: &UserId) -> Result<Reader> {
    ensure_room(state, room_id)?;
    state.rooms.reader(room_id, user)
}

/// The room state the user may read, or 403.
pub(crate) fn readable_state(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
) -> Result<Arc<StateMap>> {
    let reader = reader(state, room_id, user)?;
    state
        .rooms
        .readable_state(room_id, &reader)?
        .ok_or_else(|| Error::Forbidden("you are not a member of this room".into()))
}

/// An event of the room that the reader may see, or 404 (whether it exists or not).
pub(crate) fn visible_event(
    state: &AppState,
    reader: &Reader,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(std::sync::Arc<Pdu>, EventMeta)> {
    let not_found = || Error::NotFound("no such event".into());
    let meta = state.rooms.event_meta(event_id)?.ok_or_else(not_found)?;
    let pdu = state.rooms.pdu(event_id)?.ok_or_else(not_found)?;
    if meta.room_id != room_id || !state.rooms.is_visible(reader, &pdu, &meta)? {
        return Err(not_found());
    }
    Ok((pdu, meta))
}

/// The viewer of a request: its user and device, and the users they ignore.
pub(crate) fn viewer<'a>(state: &AppState, auth: &'a Authed) -> Result<Viewer<'a>> {
    Ok(Viewer::new(
        &auth.user_id,
        &auth.device_id,
        state.account_data.ignored_users(&auth.user_id)?,
    ))
}

fn check_event_type(kind: &str) -> Result<()> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(Error::InvalidParam("invalid event type".into()));
    }
    Ok(())
}

pub async fn send(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, kind, txn_id)): Path<(String, String, String)>,
    JsonBody(_, content): JsonBody<Value>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    check_event_type(&kind)?;
    ensure_room(&state, &room_id)?;
    let event = NewEvent::message(TimelineEventType::from(kind), content);
    let txn = Txn {
        device_id: auth.device_id.clone(),
        txn_id,
    };
    let event_id = state
        .rooms
        .append(&room_id, &auth.user_id, event, Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// The path of a state event; routes without `{state_key}` mean the empty state key.
#[derive(Deserialize)]
pub struct StatePath {
    room: String,
    kind: String,
    #[serde(default)]
    state_key: String,
}

pub async fn put_state(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(path): Path<StatePath>,
    JsonBody(_, content): JsonBody<Value>,
) -> Result<Json<Value>> {
    let StatePath {
        room,
        kind,
        state_key,
    } = path;
    put_state_inner(state, auth, room, kind, state_key, content).await
}

async fn put_state_inner(
    state: AppState,
    auth: Authed,
    room: String,
    kind: String,
    state_key: String,
    content: Value,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    check_event_type(&kind)?;
    if kind == "m.room.create" {
        return Err(Error::Forbidden(
            "a room has exactly one create event".into(),
        ));
    }
    if kind == "m.room.member" && UserId::parse(&state_key).is_err() {
        return Err(Error::InvalidParam(
            "the state key of a member event is a user ID".into(),
        ));
    }
    ensure_room(&state, &room_id)?;
    let event = NewEvent::state(StateEventType::from(kind), state_key, content);
    let event_id = state
        .rooms
        .append(&room_id, &auth.user_id, event, None)
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

#[derive(Deserialize)]
pub struct StateQuery {
    format: Option<String>,
}

pub async fn get_state(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(path): Path<StatePath>,
    Query(query): Query<StateQuery>,
) -> Result<Json<Value>> {
    get_state_inner(state, auth, path.room, path.kind, path.state_key, query).await
}

async fn get_state_inner(
    state: AppState,
    auth: Authed,
    room: String,
    kind: String,
    state_key: String,
    query: StateQuery,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let whole_event = match query.format.as_deref() {
        Some("event") => true,
        None | Some("content") => false,
        Some(other) => return Err(Error::InvalidParam(format!("unknown format {other}"))),
    };
    let readable = readable_state(&state, &room_id, &auth.user_id)?;
    let entry = (StateEventType::from(kind), state_key);
    let event_id = readable
        .get(&entry)
        .cloned()
        .ok_or_else(|| Error::NotFound("no such state event".into()))?;
    let event = state
        .rooms
        .client_event(&event_id, &viewer(&state, &auth)?)?
        .ok_or_else(|| Error::NotFound("no such state event".into()))?;
    if whole_event {
        Ok(Json(event))
    } else {
        Ok(Json(event["content"].clone()))
    }
}

pub async fn all_state(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let readable = readable_state(&state, &room_id, &auth.user_id)?;
    let ids = stream_order(&state, &readable, |_| true)?;
    Ok(Json(Value::Array(
        state.rooms.client_events(&ids, &viewer(&state, &auth)?)?,
    )))
}

/// State entries as stream entries, oldest first, filtered.
pub(crate) fn stream_order(
    state: &AppState,
    readable: &StateMap,
    keep: impl Fn(&(StateEventType, String)) -> bool,
) -> Result<Vec<(u64, OwnedEventId)>> {
    let mut out = Vec::new();
    for (entry, event_id) in readable.iter() {
        if keep(entry)
            && let Some(meta) = state.rooms.event_meta(event_id)?
        {
            out.push((meta.stream_pos, event_id.clone()));
        }
    }
    out.sort();
    Ok(out)
}

pub async fn get_event(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, event)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    visible_event(&state, &reader, &room_id, &event_id)?;
    let not_found = || Error::NotFound("no such event".into());
    let event = state
        .rooms
        .client_event(&event_id, &viewer(&state, &auth)?)?
        .ok_or_else(not_found)?;
    Ok(Json(event))
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    from: Option<String>,
    to: Option<String>,
    dir: Option<String>,
    limit: Option<usize>,
    filter: Option<String>,
}

pub(crate) fn parse_filter(raw: Option<&str>) -> Result<RoomEventFilter> {
    match raw {
        Some(raw) => crate::util::from_json_object(raw.as_bytes())
            .map_err(|e| Error::BadJson(format!("invalid filter: {e}"))),
        None => Ok(RoomEventFilter::default()),
    }
}

/// `/messages`: tokens are stream positions; `b` returns events before `from`, newest first, `f`
/// events after it, oldest first. Only events the user may see and the filter passes are returned.
pub async fn messages(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<MessagesQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    if !state.rooms.may_read_history(&room_id, &reader)? {
        return Err(Error::Forbidden("you are not a member of this room".into()));
    }
    let backwards = match query.dir.as_deref() {
        Some("b") => true,
        Some("f") => false,
        _ => return Err(Error::InvalidParam("dir must be b or f".into())),
    };
    let mut filter = parse_filter(query.filter.as_deref())?;
    // Events of users the reader ignores are hidden.
    filter.not_senders.extend(
        state
            .account_data
            .ignored_users(&auth.user_id)?
            .iter()
            .map(|u| u.to_string()),
    );
    let limit = query
        .limit
        .or(filter.limit)
        .unwrap_or(10)
        .clamp(1, MAX_PAGE);
    // Beyond the start of the timeline: the history backfilled from other servers.
    if let Some(order) = query.from.as_deref().and_then(parse_history_token) {
        let request = HistoryRequest {
            from: order,
            backwards,
            limit,
            filter: &filter,
        };
        return history::messages_in_history(&state, &room_id, &reader, &auth, request).await;
    }
    let from = query.from.as_deref().map(parse_token).transpose()?;
    let to = query.to.as_deref().map(parse_token).transpose()?;
    let mut page = state.rooms.paginate(
        &room_id,
        &reader,
        &viewer(&state, &auth)?,
        PageRequest {
            from,
            to,
            backwards,
            limit,
            filter: &filter,
        },
    )?;
    let start = match (from, backwards) {
        (Some(f), _) => f,
        (None, true) => state.rooms.stream_position()?.saturating_add(1),
        (None, false) => 0,
    };
    let end = match page.end {
        Some(end) => Some(token(end)),
        // The start of the timeline: the history before it follows.
        None if backwards && to.is_none() => {
            let request = HistoryRequest {
                from: 0,
                backwards,
                limit,
                filter: &filter,
            };
            let viewer = viewer(&state, &auth)?;
            history::continue_into_history(&state, &room_id, &reader, &viewer, &mut page, request)
                .await?
        }
        None => None,
    };
    let mut body = json!({ "start": token(start), "chunk": page.chunk });
    if let Some(end) = end {
        body["end"] = json!(end);
    }
    if filter.lazy_load_members && !page.senders.is_empty() {
        let readable = state
            .rooms
            .readable_state(&room_id, &reader)?
            .unwrap_or_default();
        let ids = stream_order(&state, &readable, |(kind, key)| {
            *kind == StateEventType::RoomMember && page.senders.iter().any(|s| s.as_str() == key)
        })?;
        body["state"] = json!(state.rooms.client_events(&ids, &viewer(&state, &auth)?)?);
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct MembersQuery {
    at: Option<String>,
    membership: Option<String>,
    not_membership: Option<String>,
}

pub async fn members(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<MembersQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let mut readable = readable_state(&state, &room_id, &auth.user_id)?;
    if let Some(at) = query.at.as_deref() {
        // The membership as of a pagination token (the state after the last event before it),
        // never later than the reader may see.
        let reader = reader(&state, &room_id, &auth.user_id)?;
        let position = parse_token(at)?;
        let latest = state.rooms.timeline_range(&room_id, 0, position, true, 1)?;
        if let Some((_, event_id)) = latest.first()
            && let Ok((pdu, meta)) = visible_event(&state, &reader, &room_id, event_id)
        {
            readable = state.rooms.state_after(&meta, &pdu)?;
        }
    }
    let ids = stream_order(&state, &readable, |(kind, _)| {
        *kind == StateEventType::RoomMember
    })?;
    let chunk: Vec<Value> = state
        .rooms
        .client_events(&ids, &viewer(&state, &auth)?)?
        .into_iter()
        .filter(|event| {
            let membership = event["content"]["membership"].as_str();
            query
                .membership
                .as_deref()
                .is_none_or(|m| membership == Some(m))
                && query
                    .not_membership
                    .as_deref()
                    .is_none_or(|m| membership != Some(m))
        })
        .collect();
    Ok(Json(json!({ "chunk": chunk })))
}

pub async fn joined_members(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    if reader.membership.as_deref() != Some("join") && !state.rooms.is_world_readable(&room_id)? {
        return Err(Error::Forbidden("you are not a member of this room".into()));
    }
    let mut joined = serde_json::Map::new();
    for (user, _) in state.rooms.members(&room_id, Some("join"))? {
        let member = state
            .rooms
            .state_event(&room_id, &StateEventType::RoomMember, &user)?;
        let content: Value = match member {
            Some(pdu) => serde_json::from_str(pdu.content().get())?,
            None => Value::Null,
        };
        joined.insert(
            user,
            json!({
                "display_name": content.get("displayname"),
                "avatar_url": content.get("avatar_url"),
            }),
        );
    }
    Ok(Json(json!({ "joined": joined })))
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

pub async fn redact(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, event, txn_id)): Path<(String, String, String)>,
    JsonBody(body, _): JsonBody<RedactBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let target = parse_event_id(&event)?;
    ensure_room(&state, &room_id)?;
    let mut content = serde_json::Map::new();
    if let Some(reason) = body.reason {
        content.insert("reason".into(), json!(reason));
    }
    let event = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content: Value::Object(content),
        redacts: Some(target),
    };
    let txn = Txn {
        device_id: auth.device_id.clone(),
        txn_id,
    };
    let event_id = state
        .rooms
        .append(&room_id, &auth.user_id, event, Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}
