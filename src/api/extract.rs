//! Request extractors: client IP, access-token authentication, and JSON bodies, path parameters
//! and query strings that fail with Matrix errors (`M_NOT_JSON`, `M_BAD_JSON`, `M_TOO_LARGE`,
//! `M_INVALID_PARAM`, `M_MISSING_PARAM`) instead of axum's plain-text ones.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::sessions::Authed;

pub type AppState = Arc<Services>;

/// The client's address: the peer of the connection, or, when the peer is a trusted reverse
/// proxy, the nearest address in `X-Forwarded-For` that is not a trusted proxy.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Some(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
        else {
            return Ok(ClientIp("unknown".into()));
        };
        let config = &state.config;
        if !config.is_trusted_proxy(peer) {
            return Ok(ClientIp(peer.to_string()));
        }
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|part| part.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        let client = forwarded
            .into_iter()
            .rev()
            .find(|ip| !config.is_trusted_proxy(*ip))
            .unwrap_or(peer);
        Ok(ClientIp(client.to_string()))
    }
}

/// The access token of a request, if it carries one. An `Authorization` header that is not a
/// bearer token is refused (`M_MISSING_TOKEN`), rather than read as no token at all, so that a
/// request to an endpoint where the token is optional is never answered anonymously by mistake.
fn bearer_token(parts: &Parts) -> Result<Option<String>> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| Some(token.trim().to_owned()))
            .ok_or(Error::MissingToken);
    }
    // Deprecated, but still sent by some clients.
    let Some(query) = parts.uri.query() else {
        return Ok(None);
    };
    Ok(url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned()))
}

/// Checks the access token (if any) and records the device's last-seen address; when `activity`,
/// the request also counts as presence activity.
pub(crate) async fn authenticate(
    parts: &mut Parts,
    state: &AppState,
    activity: bool,
) -> Result<Option<Authed>> {
    let Some(token) = bearer_token(parts)? else {
        return Ok(None);
    };
    let authed = state.sessions.authenticate(&token)?;
    let ClientIp(ip) = ClientIp::from_request_parts(parts, state).await?;
    state
        .devices
        .touch(&authed.user_id, &authed.device_id, &ip)?;
    if activity {
        state.presence.activity(&authed.user_id).await?;
    }
    tracing::Span::current().record("user", authed.user_id.as_str());
    Ok(Some(authed))
}

/// A request with a valid access token.
pub struct Auth(pub Authed);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        authenticate(parts, state, true)
            .await?
            .map(Auth)
            .ok_or(Error::MissingToken)
    }
}

/// Like [`Auth`], but the request does not count as presence activity: for the handlers that
/// set presence themselves (`/sync` with `set_presence`, `PUT /presence/{userId}/status`).
pub struct PassiveAuth(pub Authed);

impl FromRequestParts<AppState> for PassiveAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        authenticate(parts, state, false)
            .await?
            .map(PassiveAuth)
            .ok_or(Error::MissingToken)
    }
}

/// A request that may carry an access token (if it does, the token must be valid).
pub struct MaybeAuth(pub Option<Authed>);

impl FromRequestParts<AppState> for MaybeAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        Ok(MaybeAuth(authenticate(parts, state, true).await?))
    }
}

/// A JSON object body deserialized into `T`; the raw object is kept for extension fields. An
/// empty body counts as `{}`.
pub struct JsonBody<T>(pub T, pub Value);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self> {
        let limit = state.config.max_request_body_bytes;
        let too_large = || Error::TooLarge(format!("the request body exceeds {limit} bytes"));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large())?;
        let value: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            match crate::util::parse_json(&bytes) {
                Ok(value) => value,
                // Well-formed JSON with a key given twice.
                Err(e) if e.is_data() => {
                    return Err(Error::BadJson(format!("invalid request body: {e}")));
                }
                Err(e) => return Err(Error::NotJson(format!("the body is not valid JSON: {e}"))),
            }
        };
        if !value.is_object() {
            return Err(Error::BadJson("the body must be a JSON object".into()));
        }
        let parsed = serde_json::from_value(value.clone())
            .map_err(|e| Error::BadJson(format!("invalid request body: {e}")))?;
        Ok(JsonBody(parsed, value))
    }
}

/// Path parameters, as axum's `Path` gives them, refused with `M_INVALID_PARAM` when a segment is
/// not UTF-8 once percent-decoded or does not fit the handler's type.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // The route and the handler disagree: a bug, not bad input.
            Err(e @ PathRejection::MissingPathParams(_)) => Err(Error::internal(e.body_text())),
            Err(e) => Err(Error::InvalidParam(e.body_text())),
        }
    }
}

/// The query string deserialized into `T`, as axum's `Query` does (invalid UTF-8 is replaced),
/// refused with `M_MISSING_PARAM` when a required parameter is absent and `M_INVALID_PARAM` when
/// one does not fit its type (or is given twice).
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self> {
        match axum::extract::Query::<T>::try_from_uri(&parts.uri) {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                // serde's own wording for a field that is not there.
                let message = e.body_text();
                if message.contains("missing field") {
                    Err(Error::MissingParam(message))
                } else {
                    Err(Error::InvalidParam(message))
                }
            }
            Err(e) => Err(Error::InvalidParam(e.body_text())),
        }
    }
}

/// Parses an identifier with ruma's `parse`, with `M_INVALID_PARAM` when it is not one (or longer
/// than the specification allows).
fn parse_id<T>(
    what: &str,
    raw: &str,
    parse: impl FnOnce(&str) -> Result<T, ruma::IdParseError>,
) -> Result<T> {
    if raw.len() > crate::core::MAX_ID_BYTES {
        return Err(Error::InvalidParam(format!(
            "invalid {what}: longer than {} bytes",
            crate::core::MAX_ID_BYTES
        )));
    }
    parse(raw).map_err(|e| Error::InvalidParam(format!("invalid {what}: {e}")))
}

/// Parses a room ID from a path or body, with `M_INVALID_PARAM` when it is not one.
pub fn parse_room_id(raw: &str) -> Result<ruma::OwnedRoomId> {
    parse_id("room ID", raw, |raw| ruma::RoomId::parse(raw))
}

/// Parses an event ID from a path or body, with `M_INVALID_PARAM` when it is not one.
pub fn parse_event_id(raw: &str) -> Result<ruma::OwnedEventId> {
    parse_id("event ID", raw, |raw| ruma::EventId::parse(raw))
}

/// 404 `M_NOT_FOUND` unless this server knows the room.
pub fn ensure_room(state: &AppState, room_id: &ruma::RoomId) -> Result<()> {
    if state.rooms.info(room_id)?.is_none() {
        return Err(Error::NotFound("no such room".into()));
    }
    Ok(())
}

/// A room ID from a path, of a room this server knows.
pub fn existing_room(state: &AppState, raw: &str) -> Result<ruma::OwnedRoomId> {
    let room_id = parse_room_id(raw)?;
    ensure_room(state, &room_id)?;
    Ok(room_id)
}

/// Parses a user ID from a path or body, with `M_INVALID_PARAM` when it is not one.
pub fn parse_user_id(raw: &str) -> Result<ruma::OwnedUserId> {
    parse_id("user ID", raw, |raw| ruma::UserId::parse(raw))
}
