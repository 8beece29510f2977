//! `GET /_matrix/federation/v1/openid/userinfo?access_token=`: who an OpenID token belongs to.
//! Third-party services call it (not homeservers), so it is not signed; the token is the proof.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Query};
use crate::error::{Error, Result};

#[derive(Deserialize)]
pub struct UserInfoQuery {
    access_token: String,
}

/// `GET /_matrix/federation/v1/openid/userinfo`
pub async fn userinfo(
    State(state): State<AppState>,
    Query(query): Query<UserInfoQuery>,
) -> Result<Json<Value>> {
    if !state.federation.enabled() {
        return Err(Error::Forbidden(
            "federation is disabled on this server".into(),
        ));
    }
    let user = state.openid_user(&query.access_token)?;
    Ok(Json(json!({ "sub": user })))
}
