//! Filters: create and read.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::core::filter::Filter;
use crate::error::{Error, Result};

fn own(auth: &crate::service::sessions::Authed, user: &str) -> Result<ruma::OwnedUserId> {
    let user_id = parse_user_id(user)?;
    if user_id != auth.user_id {
        return Err(Error::Forbidden("you can only use your own filters".into()));
    }
    Ok(user_id)
}

pub async fn create(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(user): Path<String>,
    JsonBody(filter, _): JsonBody<Filter>,
) -> Result<Json<Value>> {
    let user_id = own(&auth, &user)?;
    let filter_id = state.filters.create(&user_id, &filter).await?;
    Ok(Json(json!({ "filter_id": filter_id })))
}

pub async fn get(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path((user, filter_id)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let user_id = own(&auth, &user)?;
    let filter = state
        .filters
        .get(&user_id, &filter_id)?
        .ok_or_else(|| Error::NotFound("no such filter".into()))?;
    Ok(Json(serde_json::to_value(filter)?))
}
