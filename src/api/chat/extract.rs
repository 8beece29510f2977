//! The extractors of the Chat API: the same authentication, bodies, paths and queries as the
//! Matrix API, failing with the Chat API's error shape.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ChatError;
use crate::api::extract::{self, AppState};
use crate::service::sessions::Authed;

/// A request with a valid access token (`Authorization: Bearer <JWT>`); it counts as activity
/// for presence ("last seen").
pub struct ChatAuth(pub Authed);

impl FromRequestParts<AppState> for ChatAuth {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ChatError> {
        extract::authenticate(parts, state, true)
            .await?
            .map(ChatAuth)
            .ok_or_else(|| ChatError::unauthorized("an access token is required"))
    }
}

/// A JSON object body (an empty body counts as `{}`), deserialized into `T`; unknown fields are
/// ignored unless `T` says otherwise.
pub struct ChatJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ChatJson<T> {
    type Rejection = ChatError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ChatError> {
        let extract::JsonBody(value, _) = extract::JsonBody::<T>::from_request(req, state).await?;
        Ok(ChatJson(value))
    }
}

/// Path parameters.
pub struct ChatPath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ChatPath<T> {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ChatError> {
        let extract::Path(value) = extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ChatPath(value))
    }
}

/// The query string.
pub struct ChatQuery<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for ChatQuery<T> {
    type Rejection = ChatError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ChatError> {
        let extract::Query(value) = extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ChatQuery(value))
    }
}
