//! Spaces and room previews: `GET /rooms/{roomId}/hierarchy` and the room summary
//! (`GET /room_summary/{roomIdOrAlias}`, also served at `GET /rooms/{roomId}/summary`). Rooms
//! this server is not in are described by other servers (`service::spaces`,
//! `Services::room_summary`).

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};

use ruma::OwnedServerName;

use super::directory::resolve_any_alias;
use crate::api::extract::{AppState, Auth, MaybeAuth, Path, Query, parse_room_id};
use crate::error::{Error, Result};
use crate::service::spaces::{HierarchyRequest, MAX_DEPTH, MAX_LIMIT};

#[derive(Deserialize)]
pub struct HierarchyQuery {
    from: Option<String>,
    limit: Option<u64>,
    max_depth: Option<u64>,
    suggested_only: Option<bool>,
}

/// `GET /rooms/{roomId}/hierarchy`: one page of the space tree under a room, depth first.
pub async fn hierarchy(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    Query(query): Query<HierarchyQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let limit = match query.limit {
        Some(0) => {
            return Err(Error::InvalidParam(
                "limit must be greater than zero".into(),
            ));
        }
        Some(n) => n.min(MAX_LIMIT),
        None => MAX_LIMIT,
    };
    let request = HierarchyRequest {
        root: &room_id,
        suggested_only: query.suggested_only.unwrap_or(false),
        max_depth: query.max_depth.unwrap_or(MAX_DEPTH).min(MAX_DEPTH),
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
        from: query.from.as_deref(),
    };
    let page = state.space_hierarchy(&auth.user_id, &request).await?;
    let mut body = json!({ "rooms": page.rooms });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    Ok(Json(body))
}

/// The `via` servers of a summary request (malformed ones are refused).
fn parse_via(raw: Option<&str>) -> Result<Vec<OwnedServerName>> {
    let mut servers = Vec::new();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if key == "via" {
            servers
                .push(OwnedServerName::try_from(value.as_ref()).map_err(|e| {
                    Error::InvalidParam(format!("invalid server name in via: {e}"))
                })?);
        }
    }
    Ok(servers)
}

/// `GET /room_summary/{roomIdOrAlias}` and `GET /rooms/{roomId}/summary`: a room's summary with
/// the requester's membership, for rooms they may preview (anyone, for public, knockable and
/// world-readable rooms). Other rooms answer 404, as unknown ones do. A room this server is not
/// in is asked of the `via` servers (for an alias, also the servers its resolution named).
pub async fn summary(
    State(state): State<AppState>,
    MaybeAuth(auth): MaybeAuth,
    Path(room): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let mut via = parse_via(raw.as_deref())?;
    let room_id = if room.starts_with('#') {
        let (room_id, servers) = resolve_any_alias(&state, &room).await?;
        via.extend(servers);
        room_id
    } else {
        parse_room_id(&room)?
    };
    let user = auth.as_ref().map(|a| a.user_id.as_ref());
    state.room_summary(&room_id, user, &via).await.map(Json)
}
