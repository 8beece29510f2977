//! Server keys: ours (`GET /_matrix/key/v2/server`) and, as a notary, other servers'
//! (`GET /_matrix/key/v2/query/{serverName}`, `POST /_matrix/key/v2/query`). Public: keys are
//! how requests get authenticated at all.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedServerName, ServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, JsonBody};
use crate::error::{Error, Result};

/// The most servers one notary query may ask about.
const MAX_QUERIED_SERVERS: usize = 100;

pub async fn server(State(services): State<AppState>) -> Result<Json<CanonicalJsonObject>> {
    Ok(Json(services.federation.keys.own_response()?))
}

#[derive(Deserialize)]
pub struct QueryParams {
    minimum_valid_until_ts: Option<u64>,
}

pub async fn query_one(
    State(services): State<AppState>,
    Path(server_name): Path<String>,
    Query(params): Query<QueryParams>,
) -> Result<Json<Value>> {
    let server = ServerName::parse(&server_name)
        .map_err(|_| Error::InvalidParam(format!("`{server_name}` is not a server name")))?;
    let found = notarise(&services, &server, params.minimum_valid_until_ts).await?;
    Ok(Json(
        json!({ "server_keys": found.into_iter().collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
pub struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, Criteria>>,
}

#[derive(Deserialize, Default)]
pub struct Criteria {
    minimum_valid_until_ts: Option<u64>,
}

pub async fn query(
    State(services): State<AppState>,
    JsonBody(body, _): JsonBody<QueryBody>,
) -> Result<Json<Value>> {
    if body.server_keys.len() > MAX_QUERIED_SERVERS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_QUERIED_SERVERS} servers per query"
        )));
    }
    let mut out = Vec::new();
    for (server_name, criteria) in &body.server_keys {
        let server = ServerName::parse(server_name)
            .map_err(|_| Error::InvalidParam(format!("`{server_name}` is not a server name")))?;
        let minimum = criteria
            .values()
            .filter_map(|c| c.minimum_valid_until_ts)
            .max();
        if let Some(response) = notarise(&services, &server, minimum).await? {
            let key_ids = key_ids_of(&response);
            // Only answer for the keys asked about, when some were named.
            if criteria.is_empty() || criteria.keys().any(|id| key_ids.contains(id)) {
                out.push(response);
            }
        }
    }
    Ok(Json(json!({ "server_keys": out })))
}

/// A server's key response countersigned by us: ours as we publish it; another server's from
/// the cache when it is valid long enough, else fetched from that server.
async fn notarise(
    services: &AppState,
    server: &OwnedServerName,
    minimum_valid_until_ts: Option<u64>,
) -> Result<Option<Value>> {
    let federation = &services.federation;
    if federation.is_us(server) {
        return Ok(Some(
            CanonicalJsonValue::Object(federation.keys.own_response()?).into(),
        ));
    }
    let wanted = minimum_valid_until_ts.unwrap_or_else(crate::util::now_ms);
    let fresh = |response: &CanonicalJsonObject| valid_until(response) >= wanted;
    let mut response = federation.keys.stored_response(server)?;
    if !response.as_ref().is_some_and(fresh) && federation.enabled() {
        if let Err(e) = federation.refresh_server_keys(server).await {
            tracing::info!(%server, error = %e, "cannot refresh the server's keys for a notary query");
        }
        response = federation.keys.stored_response(server)?;
    }
    let Some(response) = response else {
        return Ok(None);
    };
    let signed = federation
        .keys
        .sign(CanonicalJsonValue::Object(response).into())?;
    Ok(Some(CanonicalJsonValue::Object(signed).into()))
}

fn valid_until(object: &CanonicalJsonObject) -> u64 {
    match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => 0,
    }
}

fn key_ids_of(response: &Value) -> Vec<String> {
    ["verify_keys", "old_verify_keys"]
        .iter()
        .filter_map(|field| response.get(field).and_then(Value::as_object))
        .flat_map(|keys| keys.keys().cloned())
        .collect()
}
