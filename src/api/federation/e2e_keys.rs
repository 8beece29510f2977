//! `POST /_matrix/federation/v1/user/keys/query` and `/user/keys/claim`: another server asks
//! for our users' device keys and claims their one-time keys for its users' clients.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Signed;
use crate::api::extract::AppState;
use crate::error::Result;

#[derive(Deserialize)]
struct QueryBody {
    /// User → the devices asked for (none: all).
    device_keys: BTreeMap<OwnedUserId, Vec<String>>,
}

pub async fn query(State(state): State<AppState>, signed: Signed) -> Result<Json<Value>> {
    let body: QueryBody = signed.json()?;
    Ok(Json(state.serve_keys_query(&body.device_keys)?))
}

#[derive(Deserialize)]
struct ClaimBody {
    /// User → device → algorithm.
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
}

pub async fn claim(State(state): State<AppState>, signed: Signed) -> Result<Json<Value>> {
    let body: ClaimBody = signed.json()?;
    Ok(Json(state.serve_keys_claim(&body.one_time_keys).await?))
}
