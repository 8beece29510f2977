//! Queries other servers make about our aliases and users: `GET /query/directory` and
//! `GET /query/profile`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use crate::api::extract::{AppState, Query, parse_user_id};
use crate::error::Result;
use crate::service::rooms::alias::parse_alias;

#[derive(Deserialize)]
pub struct DirectoryQuery {
    room_alias: String,
}

/// `GET /_matrix/federation/v1/query/directory?room_alias=`
pub async fn directory(
    State(state): State<AppState>,
    Query(query): Query<DirectoryQuery>,
    _signed: Signed,
) -> Result<Json<Value>> {
    let alias = parse_alias(&query.room_alias)?;
    let (room_id, servers) = state.query_directory(&alias)?;
    Ok(Json(json!({ "room_id": room_id, "servers": servers })))
}

#[derive(Deserialize)]
pub struct ProfileQuery {
    user_id: String,
    field: Option<String>,
}

/// `GET /_matrix/federation/v1/query/profile?user_id=&field=`
pub async fn profile(
    State(state): State<AppState>,
    Query(query): Query<ProfileQuery>,
    _signed: Signed,
) -> Result<Json<Value>> {
    let user = parse_user_id(&query.user_id)?;
    let profile = state.query_profile(&user, query.field.as_deref())?;
    Ok(Json(Value::Object(profile)))
}
