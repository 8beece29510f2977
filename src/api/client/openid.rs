//! `POST /user/{userId}/openid/request_token`: a token a third-party service can exchange with
//! us (`/_matrix/federation/v1/openid/userinfo`) for the user's ID, proving who they are
//! without access to their account.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path, parse_user_id};
use crate::error::{Error, Result};

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`
pub async fn request_token(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(user): Path<String>,
    JsonBody(_, _): JsonBody<Value>,
) -> Result<Json<Value>> {
    let user = parse_user_id(&user)?;
    if user != auth.user_id {
        return Err(Error::Forbidden(
            "you may only request OpenID tokens for yourself".into(),
        ));
    }
    let token = state.request_openid_token(&user).await?;
    Ok(Json(json!({
        "access_token": token.access_token,
        "token_type": "Bearer",
        "matrix_server_name": state.federation.server_name(),
        "expires_in": token.expires_in_ms / 1000,
    })))
}
