//! History around a point: `/context`, `/timestamp_to_event`, forgetting a room, and
//! `/messages` beyond the start of a room's timeline (the history backfilled from other
//! servers, with `h<order>` tokens).

use axum::Json;
use axum::extract::State;
use ruma::RoomId;
use ruma::events::StateEventType;
use serde::Deserialize;
use serde_json::{Value, json};

use super::message::{parse_filter, reader, stream_order, token, viewer, visible_event};
use crate::api::extract::{AppState, Auth, JsonBody, Path, Query};
use crate::api::extract::{parse_event_id, parse_room_id};
use crate::error::{Error, Result};
use crate::service::federation::history::history_token;
use crate::service::federation::history_page::HistoryRequest;
use crate::service::rooms::read::{Page, PageRequest, Viewer};
use crate::service::rooms::visibility::Reader;
use crate::service::sessions::Authed;

#[derive(Deserialize)]
pub struct ContextQuery {
    limit: Option<usize>,
    filter: Option<String>,
}

/// The largest `limit` `/context` honours.
const MAX_CONTEXT: usize = 100;

/// Events before and after an event, with the state at the event.
pub async fn context(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((room, event)): Path<(String, String)>,
    Query(query): Query<ContextQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    let (pdu, meta) = visible_event(&state, &reader, &room_id, &event_id)?;
    let not_found = || Error::NotFound("no such event".into());
    let filter = parse_filter(query.filter.as_deref())?;
    let limit = query.limit.or(filter.limit).unwrap_or(10).min(MAX_CONTEXT);
    let v = viewer(&state, &auth)?;
    // `limit` is shared between both sides, as the specification describes.
    let before_limit = limit / 2 + limit % 2;
    let after_limit = limit / 2;
    let page = |backwards: bool, size: usize| -> Result<_> {
        if size == 0 {
            return Ok(None);
        }
        state
            .rooms
            .paginate(
                &room_id,
                &reader,
                &v,
                PageRequest {
                    from: Some(meta.stream_pos),
                    to: None,
                    backwards,
                    limit: size,
                    filter: &filter,
                },
            )
            .map(Some)
    };
    let before = page(true, before_limit)?;
    let after = page(false, after_limit)?;
    let event = state
        .rooms
        .client_event(&event_id, &v)?
        .ok_or_else(not_found)?;
    let state_ids = match state.rooms.readable_state(&room_id, &reader)? {
        Some(_) => {
            let at_event = state.rooms.state_after(&meta, &pdu)?;
            stream_order(&state, &at_event, |(kind, key)| {
                !filter.lazy_load_members
                    || *kind != StateEventType::RoomMember
                    || key == pdu.sender().as_str()
            })?
        }
        None => Vec::new(),
    };
    let start = before
        .as_ref()
        .and_then(|p| p.end)
        .unwrap_or(meta.stream_pos);
    let end = after
        .as_ref()
        .and_then(|p| p.end)
        .unwrap_or(meta.stream_pos);
    Ok(Json(json!({
        "event": event,
        "events_before": before.map(|p| p.chunk).unwrap_or_default(),
        "events_after": after.map(|p| p.chunk).unwrap_or_default(),
        "start": token(start),
        "end": token(end),
        "state": state.rooms.client_events(&state_ids, &v)?,
    })))
}

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// The visible event closest to a time: the first at or after it (`f`), or the last at or
/// before it (`b`).
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<TimestampQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    if !state.rooms.may_read_history(&room_id, &reader)? {
        return Err(Error::Forbidden("you are not a member of this room".into()));
    }
    let forwards = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        _ => return Err(Error::InvalidParam("dir must be f or b".into())),
    };
    let found = state
        .rooms
        .closest_to_timestamp(&room_id, &reader, query.ts, forwards)?
        .ok_or_else(|| Error::NotFound("no event found".into()))?;
    Ok(Json(json!({
        "event_id": found.event_id(),
        "origin_server_ts": found.origin_server_ts(),
    })))
}

pub async fn forget(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(_, _): JsonBody<Value>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    state.rooms.forget(&room_id, &auth.user_id).await?;
    Ok(Json(json!({})))
}

/// A backwards `/messages` page that reached the start of the timeline goes on into the history
/// before it (fetched from other servers as needed) while the page has room; returns the token
/// to continue from, if there may be more.
pub(crate) async fn continue_into_history(
    state: &AppState,
    room_id: &RoomId,
    reader: &Reader,
    viewer: &Viewer<'_>,
    page: &mut Page,
    request: HistoryRequest<'_>,
) -> Result<Option<String>> {
    let left = request.limit.saturating_sub(page.chunk.len());
    if left == 0 {
        return Ok(Some(history_token(request.from)));
    }
    let more = state
        .history_page(
            room_id,
            reader,
            viewer,
            HistoryRequest {
                limit: left,
                ..request
            },
        )
        .await?;
    page.chunk.extend(more.chunk);
    page.senders.extend(more.senders);
    Ok(more.end.map(history_token))
}

/// `/messages` from a token of the history before the timeline: back in time through it, or
/// forwards through it and on into the timeline.
pub(crate) async fn messages_in_history(
    state: &AppState,
    room_id: &RoomId,
    reader: &Reader,
    auth: &Authed,
    request: HistoryRequest<'_>,
) -> Result<Json<Value>> {
    let v = viewer(state, auth)?;
    let (from, backwards, limit, filter) = (
        request.from,
        request.backwards,
        request.limit,
        request.filter,
    );
    let mut page = state.history_page(room_id, reader, &v, request).await?;
    let mut end = page.end.map(history_token);
    if !backwards && page.end.is_none() && page.chunk.len() < limit {
        // The newest of the history reached: the timeline follows, from its start.
        let timeline = state.rooms.paginate(
            room_id,
            reader,
            &v,
            PageRequest {
                from: Some(0),
                to: None,
                backwards: false,
                limit: limit - page.chunk.len(),
                filter,
            },
        )?;
        page.chunk.extend(timeline.chunk);
        page.senders.extend(timeline.senders);
        end = timeline.end.map(token);
    }
    let mut body = json!({ "start": history_token(from), "chunk": page.chunk });
    if let Some(end) = end {
        body["end"] = json!(end);
    }
    if filter.lazy_load_members && !page.senders.is_empty() {
        let readable = state
            .rooms
            .readable_state(room_id, reader)?
            .unwrap_or_default();
        let ids = stream_order(state, &readable, |(kind, key)| {
            *kind == StateEventType::RoomMember && page.senders.iter().any(|s| s.as_str() == key)
        })?;
        body["state"] = json!(state.rooms.client_events(&ids, &v)?);
    }
    Ok(Json(body))
}
