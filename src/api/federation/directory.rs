//! Our published room directory for other servers: `GET` and `POST /publicRooms` (the rooms
//! published here only, never those we know of other servers' directories). Pages are offsets
//! into the ordered, filtered list, as for our clients.

use axum::Json;
use axum::extract::{RawQuery, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use crate::api::extract::AppState;
use crate::error::{Error, Result};
use crate::service::rooms::alias::RoomSummary;

/// The largest page answered (also the page size when the request gives no limit or 0).
const MAX_PAGE: usize = 500;

/// What a directory request asks for.
#[derive(Default, Deserialize)]
pub struct DirectoryRequest {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<Filter>,
    include_all_networks: Option<bool>,
    third_party_instance_id: Option<String>,
}

#[derive(Default, Deserialize)]
pub struct Filter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

/// `GET /_matrix/federation/v1/publicRooms?limit=&since=&include_all_networks=&third_party_instance_id=`
pub async fn public_rooms(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    _signed: Signed,
) -> Result<Json<Value>> {
    let mut request = DirectoryRequest::default();
    for (key, value) in url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                request.limit = Some(value.parse().map_err(|_| {
                    Error::InvalidParam("limit must be a non-negative integer".into())
                })?)
            }
            "since" => request.since = Some(value.into_owned()),
            "include_all_networks" => {
                request.include_all_networks = Some(match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(Error::InvalidParam(
                            "include_all_networks must be true or false".into(),
                        ));
                    }
                })
            }
            "third_party_instance_id" => request.third_party_instance_id = Some(value.into_owned()),
            _ => {}
        }
    }
    directory_page(&state, request).map(Json)
}

/// `POST /_matrix/federation/v1/publicRooms` with a filter.
pub async fn public_rooms_filtered(
    State(state): State<AppState>,
    signed: Signed,
) -> Result<Json<Value>> {
    let request: DirectoryRequest = if signed.has_body() {
        signed.json()?
    } else {
        DirectoryRequest::default()
    };
    directory_page(&state, request).map(Json)
}

fn batch_token(offset: usize) -> String {
    format!("o{offset}")
}

fn parse_batch_token(raw: &str) -> Result<usize> {
    raw.strip_prefix('o')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::InvalidParam("invalid pagination token".into()))
}

/// Whether a room passes the search term and room-type filters.
fn matches(room: &RoomSummary, filter: &Filter) -> bool {
    let term = filter
        .generic_search_term
        .as_deref()
        .map(str::trim)
        .unwrap_or("");
    let term_ok = term.is_empty() || room.matches_term(term);
    let type_ok = match &filter.room_types {
        Some(types) if !types.is_empty() => types.contains(&room.room_type),
        _ => true,
    };
    term_ok && type_ok
}

/// One page of the directory.
fn directory_page(state: &AppState, request: DirectoryRequest) -> Result<Value> {
    if request.include_all_networks == Some(true) && request.third_party_instance_id.is_some() {
        return Err(Error::InvalidParam(
            "third_party_instance_id can only be used if include_all_networks is false".into(),
        ));
    }
    let offset = request
        .since
        .as_deref()
        .map(parse_batch_token)
        .transpose()?;
    let limit = match request.limit {
        None | Some(0) => MAX_PAGE,
        Some(n) => usize::try_from(n).map_or(MAX_PAGE, |n| n.min(MAX_PAGE)),
    };
    let all = state.rooms.public_room_summaries()?;
    let total = all.len();
    let filter = request.filter.unwrap_or_default();
    // No third-party network is bridged here: a specific one lists nothing.
    let rooms: Vec<RoomSummary> = if request.third_party_instance_id.is_some() {
        Vec::new()
    } else {
        all.into_iter()
            .filter(|room| matches(room, &filter))
            .collect()
    };
    let start = offset.unwrap_or(0).min(rooms.len());
    let end = start.saturating_add(limit).min(rooms.len());
    let mut body = json!({
        "chunk": rooms[start..end],
        "total_room_count_estimate": total,
    });
    if end < rooms.len() {
        body["next_batch"] = json!(batch_token(end));
    }
    if start > 0 {
        body["prev_batch"] = json!(batch_token(start.saturating_sub(limit)));
    }
    Ok(body)
}
