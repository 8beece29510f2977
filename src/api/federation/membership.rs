//! Membership handshakes other servers run with us: `make_join`/`send_join` (v2),
//! `make_leave`/`send_leave` (v2), `make_knock`/`send_knock` and `invite` (v2). Each handler
//! parses the path and query, takes the signed request and hands it to the membership service.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ruma::{CanonicalJsonObject, RoomVersionId};
use serde_json::{Value, json};

use super::auth::Signed;
use crate::api::extract::{AppState, Path, parse_event_id, parse_room_id, parse_user_id};
use crate::error::{Error, Result};
use crate::service::federation::membership::{HandshakeError, InviteRequest};

/// The answer of a refused handshake, with the Server-Server API's own error codes.
impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (errcode, room_version) = match self {
            HandshakeError::IncompatibleRoomVersion(version) => {
                ("M_INCOMPATIBLE_ROOM_VERSION", Some(version))
            }
            HandshakeError::UnableToAuthoriseJoin(_) => ("M_UNABLE_TO_AUTHORISE_JOIN", None),
            HandshakeError::UnableToGrantJoin(_) => ("M_UNABLE_TO_GRANT_JOIN", None),
            HandshakeError::Other(e) => return e.into_response(),
        };
        let mut body = json!({ "errcode": errcode, "error": message });
        if let Some(version) = room_version {
            body["room_version"] = json!(version);
        }
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

/// The `ver` parameters of a template request (repeated; `1` when there is none, as the
/// specification says).
fn versions(query: Option<&str>) -> Vec<RoomVersionId> {
    let versions: Vec<RoomVersionId> = url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(key, _)| key == "ver")
        .filter_map(|(_, value)| RoomVersionId::try_from(value.as_ref()).ok())
        .collect();
    if versions.is_empty() {
        vec![RoomVersionId::V1]
    } else {
        versions
    }
}

/// The `omit_members` parameter: `true` or `false` (absent: `false`).
fn omit_members(query: Option<&str>) -> Result<bool> {
    let mut omit = false;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if key == "omit_members" {
            omit = match value.as_ref() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(Error::InvalidParam(
                        "omit_members must be true or false".into(),
                    ));
                }
            };
        }
    }
    Ok(omit)
}

/// The answer of a template request.
fn template_answer(version: RoomVersionId, event: CanonicalJsonObject) -> Json<Value> {
    Json(json!({ "room_version": version, "event": event }))
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
pub async fn make_join(
    State(state): State<AppState>,
    Path((room, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> Result<Json<Value>, HandshakeError> {
    let room_id = parse_room_id(&room)?;
    let user = parse_user_id(&user)?;
    let versions = versions(query.as_deref());
    let (version, event) = state
        .make_join(&signed.origin, &room_id, &user, &versions)
        .await?;
    Ok(template_answer(version, event))
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
pub async fn send_join(
    State(state): State<AppState>,
    Path((room, event)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> Result<Json<Value>, HandshakeError> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let omit = omit_members(query.as_deref())?;
    let pdu = signed.json::<CanonicalJsonObject>()?;
    let answer = state
        .send_join(&signed.origin, &room_id, &event_id, pdu, omit)
        .await?;
    Ok(Json(answer))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub async fn make_leave(
    State(state): State<AppState>,
    Path((room, user)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let user = parse_user_id(&user)?;
    let (version, event) = state.make_leave(&signed.origin, &room_id, &user).await?;
    Ok(template_answer(version, event))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub async fn send_leave(
    State(state): State<AppState>,
    Path((room, event)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let pdu = signed.json::<CanonicalJsonObject>()?;
    state
        .send_leave(&signed.origin, &room_id, &event_id, pdu)
        .await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
pub async fn make_knock(
    State(state): State<AppState>,
    Path((room, user)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> Result<Json<Value>, HandshakeError> {
    let room_id = parse_room_id(&room)?;
    let user = parse_user_id(&user)?;
    let versions = versions(query.as_deref());
    let (version, event) = state
        .make_knock(&signed.origin, &room_id, &user, &versions)
        .await?;
    Ok(template_answer(version, event))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
pub async fn send_knock(
    State(state): State<AppState>,
    Path((room, event)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let pdu = signed.json::<CanonicalJsonObject>()?;
    let room_state = state
        .send_knock(&signed.origin, &room_id, &event_id, pdu)
        .await?;
    Ok(Json(json!({ "knock_room_state": room_state })))
}

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub async fn invite(
    State(state): State<AppState>,
    Path((room, event)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>, HandshakeError> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let request = signed.json::<InviteRequest>()?;
    let event = state
        .receive_invite(&signed.origin, &room_id, &event_id, request)
        .await?;
    Ok(Json(json!({ "event": event })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_repeated_parameters_defaulting_to_one() {
        assert_eq!(versions(None), vec![RoomVersionId::V1]);
        assert_eq!(
            versions(Some("ver=10&ver=12&other=3")),
            vec![RoomVersionId::V10, RoomVersionId::V12]
        );
    }

    #[test]
    fn omit_members_is_a_boolean() {
        assert!(!omit_members(None).unwrap());
        assert!(omit_members(Some("omit_members=true")).unwrap());
        assert!(!omit_members(Some("omit_members=false")).unwrap());
        assert!(omit_members(Some("omit_members=yes")).is_err());
    }
}
