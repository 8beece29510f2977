//! Relationships between events: `/relations` (an event's children) and `/threads` (a room's
//! threads by latest activity). Both answer with bundled aggregations on every event.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::message::{parse_token, reader, token, viewer, visible_event};
use crate::api::extract::{AppState, Auth, Path, Query};
use crate::api::extract::{parse_event_id, parse_room_id};
use crate::error::{Error, Result};
use crate::service::rooms::relations::{RECURSION_DEPTH, RelationsRequest};

/// The page size when none is asked for, and the largest honoured.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

#[derive(Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
    dir: Option<String>,
    recurse: Option<bool>,
}

/// The path of `/relations`: the relation type and event type are optional segments.
#[derive(Deserialize)]
pub struct RelationsPath {
    room: String,
    event: String,
    rel_type: Option<String>,
    event_type: Option<String>,
}

/// The children of an event the user may see, newest first unless `dir=f`.
pub async fn relations(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(path): Path<RelationsPath>,
    Query(query): Query<RelationsQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&path.room)?;
    let event_id = parse_event_id(&path.event)?;
    for part in [&path.rel_type, &path.event_type].into_iter().flatten() {
        if part.is_empty() || part.len() > 255 {
            return Err(Error::InvalidParam(
                "relation and event types are 1 to 255 bytes".into(),
            ));
        }
    }
    let backwards = match query.dir.as_deref() {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(Error::InvalidParam("dir must be b or f".into())),
    };
    let limit = match query.limit {
        Some(0) => return Err(Error::InvalidParam("limit must be positive".into())),
        Some(n) => n.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let from = query.from.as_deref().map(parse_token).transpose()?;
    let to = query.to.as_deref().map(parse_token).transpose()?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    // The parent must be visible: otherwise it does not exist for this user.
    visible_event(&state, &reader, &room_id, &event_id)?;
    let viewer = viewer(&state, &auth)?;
    let page = state.rooms.relations_page(
        &event_id,
        &reader,
        &viewer,
        &RelationsRequest {
            rel_type: path.rel_type.as_deref(),
            event_type: path.event_type.as_deref(),
            from,
            to,
            backwards,
            limit,
            recurse: query.recurse.unwrap_or(false),
        },
    )?;
    let mut body = json!({ "chunk": page.chunk });
    if let Some(next) = page.next {
        body["next_batch"] = json!(token(next));
    }
    if let Some(from) = &query.from {
        body["prev_batch"] = json!(from);
    }
    if let Some(recurse) = query.recurse {
        body["recursion_depth"] = json!(if recurse { RECURSION_DEPTH } else { 1 });
    }
    Ok(Json(body))
}

#[derive(Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    limit: Option<usize>,
    from: Option<String>,
}

/// The thread roots of a room, most recently active first.
pub async fn threads(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<ThreadsQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let participated_only = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => {
            return Err(Error::InvalidParam(
                "include must be all or participated".into(),
            ));
        }
    };
    let limit = match query.limit {
        Some(0) => return Err(Error::InvalidParam("limit must be positive".into())),
        Some(n) => n.min(MAX_LIMIT),
        None => DEFAULT_LIMIT,
    };
    let from = query.from.as_deref().map(parse_token).transpose()?;
    let reader = reader(&state, &room_id, &auth.user_id)?;
    if !state.rooms.may_read_history(&room_id, &reader)? {
        return Err(Error::Forbidden("you are not a member of this room".into()));
    }
    let viewer = viewer(&state, &auth)?;
    let (chunk, next) =
        state
            .rooms
            .threads_page(&room_id, &reader, &viewer, from, limit, participated_only)?;
    let mut body = json!({ "chunk": chunk });
    if let Some(next) = next {
        body["next_batch"] = json!(token(next));
    }
    Ok(Json(body))
}
