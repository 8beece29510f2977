//! `GET /ws`: the Chat API's real-time stream over a WebSocket.
//!
//! The protocol (`docs/chat-api.md` has the guide):
//!
//! - **Authentication**: `Authorization: Bearer <access token>` on the upgrade request, or, for
//!   clients that cannot set headers (browsers), the first client frame
//!   `{"type": "auth", "token": "<access token>"}` within 10 seconds. A missing, malformed,
//!   unknown or revoked token closes the connection with code 4001, and so does the end of the
//!   session (logout) while connected, or the expiry of the access token it authenticated with
//!   (checked at every step and heartbeat, and timed): a connection never outlives its token,
//!   the client refreshes it and resumes with its cursor.
//! - **Cursor**: every stream frame carries a `cursor` (a sync token: `/sync` accepts it as
//!   `since` too). A connection without `?cursor=` starts now: its first frame is `ready` with
//!   the current cursor. `?cursor=<last cursor seen>` resumes: the frames of everything after it
//!   follow the `ready` frame, then the live ones. A frame's cursor is the one after which
//!   resuming loses nothing; resuming may repeat a few frames already seen (the last step's),
//!   so clients de-duplicate by message, reaction and event IDs. Heartbeat `ping` frames carry
//!   the latest cursor too, so a client learns it even when nothing it sees happens.
//! - **Server frames**: `{"type", "cursor", "data"}`, see [`render`] for each type's `data`;
//!   `ready` has `{user_id, device_id, resumed, heartbeat_ms}`.
//! - **Heartbeats**: every 30 seconds a `{"type": "ping", "cursor"}` frame and a WebSocket ping.
//!   Clients answer `{"type": "pong"}` (or anything else); a client silent for two intervals is
//!   dropped with code 4002.
//! - **Client frames**: `typing`, `read`, `pong`, `ping` (see [`client_frames`]); an unknown or
//!   invalid frame is answered with `{"type": "error", "data": {"code", "message"}}` and the
//!   connection stays open.
//! - **Slow consumers**: the frames waiting for a client are a short queue. The stream is read
//!   from the store as the client takes frames, so a backlog never piles up in memory; a client
//!   that takes nothing for 10 seconds while frames wait is closed with code 4008
//!   ("slow consumer") and resumes with its cursor.
//! - **Other closes**: 1001 when the server stops, 1011 on an internal error.

mod client_frames;
mod connection;
mod producer;
mod render;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::ChatQuery;
use crate::api::Routes;
use crate::api::extract::{AppState, ClientIp};
use crate::service::sync::parse_token;

/// The largest frame a client may send: its frames are small JSON objects.
const MAX_CLIENT_FRAME: usize = 64 << 10;

pub(super) fn routes(routes: Routes) -> Routes {
    routes.route("/ws", get(open))
}

#[derive(Deserialize)]
struct OpenQuery {
    cursor: Option<String>,
}

/// How the upgrade request authenticates.
enum HeaderAuth {
    /// No `Authorization` header: the first frame must authenticate.
    Absent,
    /// A bearer token, not yet checked.
    Bearer(String),
    /// An `Authorization` header that is not a bearer token.
    Malformed,
}

/// Checks the cursor, then upgrades; the token is checked on the open connection, so that every
/// authentication failure ends the same way (close code 4001) whichever way the token came.
async fn open(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ChatQuery(query): ChatQuery<OpenQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ChatResult<Response> {
    let upgrade = upgrade.map_err(|_| {
        ChatError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "GET /ws opens a WebSocket: send a WebSocket upgrade request",
        )
    })?;
    let cursor = match query.cursor.as_deref() {
        Some(raw) => {
            let position = parse_token(raw)
                .map_err(|_| ChatError::invalid("cursor is not a cursor of this stream"))?;
            state.check_since(Some(position))?;
            Some(position)
        }
        None => None,
    };
    let auth = match headers.get(header::AUTHORIZATION) {
        None => HeaderAuth::Absent,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, token)| scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
            .map_or(HeaderAuth::Malformed, |(_, token)| {
                HeaderAuth::Bearer(token.trim().to_owned())
            }),
    };
    Ok(upgrade
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| connection::run(state, socket, auth, cursor, ip)))
}

/// A stream frame: `{"type", "cursor", "data"}`.
fn frame(kind: &str, cursor: &str, data: Value) -> String {
    json!({ "type": kind, "cursor": cursor, "data": data }).to_string()
}

/// The answer to a client frame that failed: `{"type": "error", "data": {"code", "message"}}`.
fn error_frame(error: &ChatError) -> String {
    json!({
        "type": "error",
        "data": { "code": error.code, "message": error.message },
    })
    .to_string()
}
