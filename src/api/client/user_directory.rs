//! The user directory: `POST /user_directory/search`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody};
use crate::error::Result;
use crate::service::user_directory::DEFAULT_LIMIT;

#[derive(Deserialize)]
pub struct SearchBody {
    search_term: String,
    limit: Option<u64>,
}

/// `POST /user_directory/search`: the users the requester may find whose user ID or display name
/// matches the term, at most `limit` (default 10, lowered to `user_directory.max_limit`).
pub async fn search(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let limit = body
        .limit
        .unwrap_or(DEFAULT_LIMIT)
        .min(state.config.user_directory.max_limit);
    let found = state.search_user_directory(
        &auth.user_id,
        &body.search_term,
        usize::try_from(limit).unwrap_or(usize::MAX),
    )?;
    Ok(Json(json!({
        "results": found.results,
        "limited": found.limited,
    })))
}
