//! The room directory: aliases (`/directory/room/{roomAlias}`, `/rooms/{roomId}/aliases`), a
//! room's visibility in the published directory (`/directory/list/room/{roomId}`) and
//! `/publicRooms`. Aliases of other servers are resolved by asking their server, and
//! `/publicRooms?server=<another server>` lists that server's directory (federation).

use axum::Json;
use axum::extract::{RawQuery, State};
use ruma::{OwnedRoomId, OwnedServerName, ServerName, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, MaybeAuth, Path};
use crate::api::extract::{ensure_room, parse_room_id};
use crate::error::{Error, Result};
use crate::service::federation::remote_directory::{DirectoryFilter, RemoteDirectoryRequest};
use crate::service::rooms::alias::{RoomSummary, parse_alias};

/// The largest page `/publicRooms` answers (also the page size when no `limit` is given).
const MAX_PUBLIC_ROOMS_PAGE: usize = 500;

/// Whether the user is a server admin.
fn is_admin(state: &AppState, user: &UserId) -> Result<bool> {
    Ok(state.accounts.get(user)?.is_some_and(|a| a.admin))
}

/// Resolves a room alias (as given in a path) to its room: local aliases only; unknown and
/// remote aliases are `M_NOT_FOUND`, malformed ones `M_INVALID_PARAM`.
pub(crate) fn resolve_alias(state: &AppState, raw: &str) -> Result<OwnedRoomId> {
    let alias = parse_alias(raw)?;
    let not_found = || Error::NotFound(format!("room alias {alias} not found"));
    if !state.rooms.aliases.is_local(&alias) {
        return Err(not_found());
    }
    match state.rooms.aliases.resolve(&alias)? {
        Some(record) if state.rooms.info(&record.room_id)?.is_some() => Ok(record.room_id),
        _ => Err(not_found()),
    }
}

/// Resolves any room alias (as given in a path) to its room and servers in it: ours from the
/// alias mapping, another server's by asking it (federation); unknown ones are `M_NOT_FOUND`.
pub(crate) async fn resolve_any_alias(
    state: &AppState,
    raw: &str,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let alias = parse_alias(raw)?;
    if state.rooms.aliases.is_local(&alias) {
        resolve_alias(state, raw)?;
        return state.query_directory(&alias);
    }
    if !state.federation.enabled() {
        return Err(Error::NotFound(format!("room alias {alias} not found")));
    }
    state.resolve_remote_alias(&alias).await
}

#[derive(Deserialize)]
pub struct SetAliasBody {
    room_id: String,
}

/// `PUT /directory/room/{roomAlias}`: a new local alias for a room the user is in.
pub async fn set_alias(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(alias): Path<String>,
    JsonBody(body, _): JsonBody<SetAliasBody>,
) -> Result<Json<Value>> {
    let alias = state.rooms.aliases.new_local_alias(&alias)?;
    let room_id = parse_room_id(&body.room_id)?;
    let admin = is_admin(&state, &auth.user_id)?;
    state
        .rooms
        .create_alias(&alias, &room_id, &auth.user_id, admin)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /directory/room/{roomAlias}` (no authentication): the room and the servers that know it.
pub async fn get_alias(
    State(state): State<AppState>,
    Path(alias): Path<String>,
) -> Result<Json<Value>> {
    let (room_id, servers) = resolve_any_alias(&state, &alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

/// `DELETE /directory/room/{roomAlias}`: for the alias creator, room moderators and admins.
pub async fn delete_alias(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(alias): Path<String>,
) -> Result<Json<Value>> {
    let alias = parse_alias(&alias)?;
    if !state.rooms.aliases.is_local(&alias) {
        return Err(Error::NotFound(format!("room alias {alias} not found")));
    }
    let admin = is_admin(&state, &auth.user_id)?;
    state
        .rooms
        .delete_alias(&alias, &auth.user_id, admin)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /rooms/{roomId}/aliases`: the local aliases, for members (anyone if world-readable).
pub async fn room_aliases(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let joined = state.rooms.membership(&room_id, &auth.user_id)?.as_deref() == Some("join");
    let exists = state.rooms.info(&room_id)?.is_some();
    if !exists || !(joined || state.rooms.is_world_readable(&room_id)?) {
        return Err(Error::Forbidden("you are not a member of this room".into()));
    }
    let aliases = state.rooms.aliases.list(&room_id)?;
    Ok(Json(json!({ "aliases": aliases })))
}

/// `GET /directory/list/room/{roomId}` (no authentication).
pub async fn get_visibility(
    State(state): State<AppState>,
    Path(room): Path<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    ensure_room(&state, &room_id)?;
    let visibility = if state.rooms.aliases.is_public(&room_id)? {
        "public"
    } else {
        "private"
    };
    Ok(Json(json!({ "visibility": visibility })))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /directory/list/room/{roomId}`: publishes (the default) or hides a room.
pub async fn set_visibility(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(room): Path<String>,
    JsonBody(body, _): JsonBody<VisibilityBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let public = match body.visibility.as_deref() {
        None | Some("public") => true,
        Some("private") => false,
        Some(other) => return Err(Error::InvalidParam(format!("unknown visibility {other}"))),
    };
    let admin = is_admin(&state, &auth.user_id)?;
    state
        .rooms
        .set_directory_visibility(&room_id, &auth.user_id, admin, public)
        .await?;
    Ok(Json(json!({})))
}

/// What a `/publicRooms` request asks for, from the query (GET) or the body (POST).
#[derive(Default)]
struct DirectoryQuery {
    server: Option<String>,
    limit: Option<u64>,
    since: Option<String>,
    /// Whether it came as a `POST` (with a filter, possibly empty).
    filtered: bool,
    search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
    include_all_networks: Option<bool>,
    third_party_instance_id: Option<String>,
}

/// The `server` (and, for GET, `limit` and `since`) query parameters.
fn parse_query(raw: Option<&str>, with_paging: bool) -> Result<DirectoryQuery> {
    let mut query = DirectoryQuery::default();
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "server" => query.server = Some(value.into_owned()),
            "limit" if with_paging => {
                let limit = value.parse().map_err(|_| {
                    Error::InvalidParam("limit must be a non-negative integer".into())
                })?;
                query.limit = Some(limit);
            }
            "since" if with_paging => query.since = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(query)
}

/// `GET /publicRooms`: no authentication for our own directory; another server's is fetched
/// for authenticated users only, so that anonymous requests cannot make this server send
/// requests to others.
pub async fn public_rooms(
    State(state): State<AppState>,
    auth: std::result::Result<MaybeAuth, Error>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>> {
    let query = parse_query(raw.as_deref(), true)?;
    let remote = query
        .server
        .as_deref()
        .is_some_and(|server| server != state.config.server_name);
    // A stale or unknown token does not keep anyone from our own directory, which needs none
    // (as the reference homeserver does); another server's is for valid tokens only.
    let authenticated = match auth {
        Ok(MaybeAuth(auth)) => auth.is_some(),
        Err(e) if remote => return Err(e),
        Err(_) => false,
    };
    list_public_rooms(&state, query, authenticated)
        .await
        .map(Json)
}

#[derive(Deserialize)]
pub struct PublicRoomsBody {
    limit: Option<u64>,
    since: Option<String>,
    filter: Option<PublicRoomsFilter>,
    include_all_networks: Option<bool>,
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize)]
pub struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

/// `POST /publicRooms`: the directory with a filter.
pub async fn public_rooms_filtered(
    State(state): State<AppState>,
    Auth(_): Auth,
    RawQuery(raw): RawQuery,
    JsonBody(body, _): JsonBody<PublicRoomsBody>,
) -> Result<Json<Value>> {
    if body.include_all_networks == Some(true) && body.third_party_instance_id.is_some() {
        return Err(Error::InvalidParam(
            "third_party_instance_id can only be used if include_all_networks is false".into(),
        ));
    }
    let filter = body.filter.unwrap_or(PublicRoomsFilter {
        generic_search_term: None,
        room_types: None,
    });
    let query = DirectoryQuery {
        limit: body.limit,
        since: body.since,
        filtered: true,
        search_term: filter.generic_search_term,
        room_types: filter.room_types,
        include_all_networks: body.include_all_networks,
        third_party_instance_id: body.third_party_instance_id,
        ..parse_query(raw.as_deref(), false)?
    };
    list_public_rooms(&state, query, true).await.map(Json)
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
fn matches(room: &RoomSummary, query: &DirectoryQuery) -> bool {
    let term = query.search_term.as_deref().map(str::trim).unwrap_or("");
    let term_ok = term.is_empty() || room.matches_term(term);
    let type_ok = match &query.room_types {
        Some(types) if !types.is_empty() => types.contains(&room.room_type),
        _ => true,
    };
    term_ok && type_ok
}

/// One page of the directory `query.server` names: ours (tokens are offsets into the ordered,
/// filtered list), or another server's, asked over federation (for authenticated requests).
async fn list_public_rooms(
    state: &AppState,
    query: DirectoryQuery,
    authenticated: bool,
) -> Result<Value> {
    let limit = match query.limit {
        None | Some(0) => MAX_PUBLIC_ROOMS_PAGE,
        Some(n) => {
            usize::try_from(n).map_or(MAX_PUBLIC_ROOMS_PAGE, |n| n.min(MAX_PUBLIC_ROOMS_PAGE))
        }
    };
    if let Some(server) = &query.server {
        let server = ServerName::parse(server)
            .map_err(|e| Error::InvalidParam(format!("invalid server name: {e}")))?;
        if server.as_str() != state.config.server_name {
            if !state.federation.enabled() {
                return Err(Error::NotFound(format!(
                    "the room directory of {server} is not reachable without federation"
                )));
            }
            if !authenticated {
                return Err(Error::MissingToken);
            }
            let request = RemoteDirectoryRequest {
                limit,
                since: query.since,
                filter: query.filtered.then_some(DirectoryFilter {
                    generic_search_term: query.search_term,
                    room_types: query.room_types,
                }),
                include_all_networks: query.include_all_networks,
                third_party_instance_id: query.third_party_instance_id,
            };
            return state
                .federation
                .remote_public_rooms(&server, &request)
                .await;
        }
    }
    let offset = query.since.as_deref().map(parse_batch_token).transpose()?;
    let all = state.rooms.public_room_summaries()?;
    let total = all.len();
    // No third-party networks are bridged here, so a specific one lists nothing.
    let rooms: Vec<RoomSummary> = if query.third_party_instance_id.is_some() {
        Vec::new()
    } else {
        all.into_iter().filter(|r| matches(r, &query)).collect()
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
