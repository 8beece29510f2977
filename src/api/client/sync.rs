//! `GET /sync`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::Value;

use crate::api::extract::{AppState, PassiveAuth, Query};
use crate::core::filter::Filter;
use crate::error::{Error, Result};
use crate::service::presence::PresenceState;
use crate::service::sync::{SyncRequest, parse_token};

#[derive(Deserialize)]
pub struct SyncQuery {
    since: Option<String>,
    filter: Option<String>,
    #[serde(default)]
    full_state: bool,
    set_presence: Option<String>,
    timeout: Option<u64>,
}

pub async fn sync(
    State(state): State<AppState>,
    PassiveAuth(auth): PassiveAuth,
    Query(query): Query<SyncQuery>,
) -> Result<Json<Value>> {
    match query.set_presence.as_deref() {
        None | Some("online" | "offline" | "unavailable") => {}
        Some(other) => return Err(Error::InvalidParam(format!("unknown presence {other}"))),
    }
    let filter = match query.filter.as_deref() {
        Some(raw) => state.filters.resolve(&auth.user_id, raw)?,
        None => Filter::default(),
    };
    let since = query.since.as_deref().map(parse_token).transpose()?;
    // Before presence: a refused request changes nothing.
    state.check_since(since)?;
    // Syncing marks the user online unless `set_presence` says otherwise.
    let set_presence = query
        .set_presence
        .as_deref()
        .map(PresenceState::parse)
        .transpose()?;
    state.presence.on_sync(&auth.user_id, set_presence).await?;
    let response = state
        .sync(SyncRequest {
            user_id: auth.user_id,
            device_id: auth.device_id,
            since,
            full_state: query.full_state,
            filter,
            timeout: Duration::from_millis(query.timeout.unwrap_or(0)),
            ignored: Default::default(),
        })
        .await?;
    Ok(Json(response))
}
