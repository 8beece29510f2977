//! `GET /_matrix/federation/v1/user/devices/{userId}`: another server fetches the whole device
//! list of one of our users (to fill its cache, or after it missed an `m.device_list_update`).

use axum::Json;
use axum::extract::State;
use serde_json::Value;

use super::auth::Signed;
use crate::api::extract::{AppState, Path, parse_user_id};
use crate::error::Result;

pub async fn user_devices(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    _signed: Signed,
) -> Result<Json<Value>> {
    let user = parse_user_id(&user_id)?;
    Ok(Json(state.serve_user_devices(&user).await?))
}
