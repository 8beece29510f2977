//! Outgoing requests to other homeservers, signed with the `X-Matrix` authorization scheme
//! (origin, destination, key, signature over method, URI, origin, destination and body).

use axum::http::{self, HeaderValue, Method, header};
use ruma::ServerName;
use ruma::api::federation::authentication::{ServerSignaturesInput, XMatrix};
use serde_json::Value;

use super::Federation;
use crate::error::{Error, Result};

/// How large a JSON answer of another server may be, by what the request asks for: a peer must
/// not make us read and parse tens of MiB where a few KiB are due. Beyond the limit the answer
/// is an error (`Error::Unreachable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// One event (`/event`), an event template (`make_join`, `make_leave`, `make_knock`), a
    /// query (`/query/*`), a user's devices or keys, a transaction's or invite's answer: 1 MiB.
    Small,
    /// A batch of events or event IDs (`/get_missing_events`, `/backfill`, `/state_ids`,
    /// `/event_auth`, a knock's description of the room): 8 MiB.
    Batch,
    /// A room's whole state and auth chain (`send_join`, `/state`): 64 MiB, as the answer for a
    /// big room is several MiB.
    RoomState,
}

impl Limit {
    /// The limit in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Limit::Small => 1 << 20,
            Limit::Batch => 8 << 20,
            Limit::RoomState => 64 << 20,
        }
    }
}

impl Federation {
    /// A signed `GET`; the JSON answer, at most `limit` large.
    pub async fn get(
        &self,
        destination: &ServerName,
        path_and_query: &str,
        limit: Limit,
    ) -> Result<Value> {
        self.json(destination, Method::GET, path_and_query, None, limit)
            .await
    }

    /// A signed `PUT` with a JSON body; the JSON answer, at most `limit` large.
    pub async fn put(
        &self,
        destination: &ServerName,
        path: &str,
        body: &Value,
        limit: Limit,
    ) -> Result<Value> {
        self.json(destination, Method::PUT, path, Some(body), limit)
            .await
    }

    /// A signed `POST` with a JSON body; the JSON answer, at most `limit` large.
    pub async fn post(
        &self,
        destination: &ServerName,
        path: &str,
        body: &Value,
        limit: Limit,
    ) -> Result<Value> {
        self.json(destination, Method::POST, path, Some(body), limit)
            .await
    }

    async fn json(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        limit: Limit,
    ) -> Result<Value> {
        let response = self
            .request_raw(destination, method, path_and_query, body, limit.bytes())
            .await?;
        let status = response.status();
        let value: Option<Value> = serde_json::from_slice(response.body()).ok();
        if !status.is_success() {
            return Err(remote_error(destination, status.as_u16(), value.as_ref()));
        }
        value.ok_or_else(|| {
            Error::Unreachable(format!(
                "{destination} answered {path_and_query} with no JSON"
            ))
        })
    }

    /// A signed request whose answer (any status) is returned as it came.
    pub async fn request_raw(
        &self,
        destination: &ServerName,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        max_body: usize,
    ) -> Result<http::Response<Vec<u8>>> {
        if !self.enabled {
            return Err(Error::Forbidden(
                "federation is disabled on this server".into(),
            ));
        }
        if self.is_us(destination) {
            return Err(Error::internal(format!(
                "a federation request to ourselves ({path_and_query})"
            )));
        }
        let bytes = match body {
            Some(body) => serde_json::to_vec(body).map_err(Error::internal)?,
            None => Vec::new(),
        };
        let mut builder = http::Request::builder().method(method).uri(path_and_query);
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let mut request = builder.body(bytes).map_err(|e| {
            Error::internal(format!("cannot build the request {path_and_query}: {e}"))
        })?;
        let authorization = XMatrix::try_from_http_request(
            &request,
            ServerSignaturesInput::new(
                self.server_name.clone(),
                destination.to_owned(),
                self.keys.pair(),
            ),
        )
        .map_err(|e| Error::internal(format!("cannot sign {path_and_query}: {e}")))?;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, HeaderValue::from(&authorization));
        self.transport.send(destination, request, max_body).await
    }
}

/// A refusal from another server, with its Matrix error when it sent one.
pub fn remote_error(server: &ServerName, status: u16, body: Option<&Value>) -> Error {
    let field = |name: &str| {
        body.and_then(|b| b.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Error::Remote {
        server: server.to_string(),
        status,
        errcode: field("errcode").unwrap_or_else(|| "M_UNKNOWN".into()),
        message: field("error").unwrap_or_else(|| format!("HTTP {status}")),
    }
}
