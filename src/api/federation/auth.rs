//! Authentication of federation requests: the `X-Matrix` authorization header, verified against
//! the origin's published key, over the method, URI, destination and body of the request.

use axum::body::to_bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{self, header};
use ruma::OwnedServerName;
use ruma::api::federation::authentication::XMatrix;
use serde::de::DeserializeOwned;

use crate::api::extract::AppState;
use crate::error::{Error, Result};

/// The largest federation request body read (a transaction of 50 PDUs and 100 EDUs).
pub const MAX_FEDERATION_BODY_BYTES: usize = 8 << 20;

/// A request another server signed. Put `Path` and `Query` extractors before it: it consumes
/// the body, which is part of what is signed.
pub struct Signed {
    /// The server the request comes from.
    pub origin: OwnedServerName,
    body: Vec<u8>,
}

impl Signed {
    /// The JSON body as `T` (`M_NOT_JSON` or `M_BAD_JSON` otherwise).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        let value = match crate::util::parse_json(&self.body) {
            Ok(value) => value,
            Err(e) if e.is_data() => return Err(Error::BadJson(format!("the body: {e}"))),
            Err(e) => return Err(Error::NotJson(format!("the body is not JSON: {e}"))),
        };
        serde_path_to_error::deserialize(value)
            .map_err(|e| Error::BadJson(format!("{}: {}", e.path(), e.inner())))
    }

    /// Whether the request has a body.
    pub fn has_body(&self) -> bool {
        !self.body.is_empty()
    }
}

impl FromRequest<AppState> for Signed {
    type Rejection = Error;

    async fn from_request(request: Request, state: &AppState) -> Result<Self> {
        let federation = &state.federation;
        if !federation.enabled() {
            return Err(Error::Forbidden(
                "federation is disabled on this server".into(),
            ));
        }
        let (parts, body) = request.into_parts();
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| Error::Unauthorized("the request is not signed (X-Matrix)".into()))
            .and_then(|value| {
                XMatrix::try_from(value)
                    .map_err(|e| Error::Unauthorized(format!("bad X-Matrix authorization: {e}")))
            })?;
        let body = to_bytes(body, MAX_FEDERATION_BODY_BYTES)
            .await
            .map_err(|_| Error::TooLarge("the request body is too large".into()))?
            .to_vec();
        let mut signed = http::Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .body(body)
            .map_err(Error::internal)?;
        federation.verify_request(&authorization, &signed).await?;
        federation.sender.wake(&authorization.origin);
        Ok(Self {
            origin: authorization.origin,
            body: std::mem::take(signed.body_mut()),
        })
    }
}
