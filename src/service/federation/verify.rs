//! Checking what other servers signed: events, JSON objects and requests. The keys come from
//! the cache, else from the server itself (`GET /_matrix/key/v2/server`), else from the
//! configured notaries (`POST /_matrix/key/v2/query`).

use std::collections::BTreeMap;

use axum::http;
use ruma::api::federation::authentication::XMatrix;
use ruma::serde::Base64;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, RoomVersionId, ServerName};
use serde_json::{Value, json};

use super::Federation;
use super::keys::{MAX_KEY_RESPONSE_BYTES, parse_key, to_object};
use super::request::Limit;
use crate::core::room_version;
use crate::error::{Error, Result};
use crate::util::now_ms;

impl Federation {
    /// The public keys of `server` named `key_ids` that are good at `ts` (`None`: whatever their
    /// validity), fetching what the cache lacks. Keys nobody could give us are left out.
    pub async fn server_keys(
        &self,
        server: &ServerName,
        key_ids: &[String],
        ts: Option<u64>,
    ) -> Result<BTreeMap<String, Base64>> {
        if self.is_us(server) {
            return key_ids
                .iter()
                .filter_map(|id| self.keys.own_record(id).map(|r| (id, r)))
                .filter(|(_, record)| record.good_at(ts))
                .map(|(id, record)| Ok((id.clone(), parse_key(&record.key)?)))
                .collect();
        }
        let found = self.cached_keys(server, key_ids, ts)?;
        if found.len() == key_ids.len() || !self.enabled {
            return Ok(found);
        }
        // One fetch per server at a time; whoever waited finds its result in the cache.
        let lock = self.keys.fetch_lock(server);
        let _fetching = lock.lock().await;
        let found = self.cached_keys(server, key_ids, ts)?;
        if found.len() == key_ids.len() || self.keys.recently_failed(server) {
            return Ok(found);
        }
        if let Err(e) = self.fetch_direct(server).await {
            tracing::info!(%server, error = %e, "cannot fetch the server's keys from it");
        }
        let mut found = self.cached_keys(server, key_ids, ts)?;
        if found.len() < key_ids.len() {
            self.fetch_from_notaries(server, key_ids, ts).await;
            found = self.cached_keys(server, key_ids, ts)?;
        }
        self.keys
            .record_failure(server, found.len() < key_ids.len());
        Ok(found)
    }

    /// Fetches a server's keys from it again (for notary answers that need fresher ones).
    pub async fn refresh_server_keys(&self, server: &ServerName) -> Result<()> {
        if self.is_us(server) || !self.enabled {
            return Ok(());
        }
        let lock = self.keys.fetch_lock(server);
        let _fetching = lock.lock().await;
        if self.keys.recently_failed(server) {
            return Err(Error::Unreachable(format!(
                "{server}'s keys failed to load recently"
            )));
        }
        let result = self.fetch_direct(server).await;
        self.keys.record_failure(server, result.is_err());
        result
    }

    fn cached_keys(
        &self,
        server: &ServerName,
        key_ids: &[String],
        ts: Option<u64>,
    ) -> Result<BTreeMap<String, Base64>> {
        let mut found = BTreeMap::new();
        for key_id in key_ids {
            if let Some(record) = self.keys.cached(server, key_id)?
                && record.good_at(ts)
            {
                found.insert(key_id.clone(), parse_key(&record.key)?);
            }
        }
        Ok(found)
    }

    /// Asks the server for its keys.
    async fn fetch_direct(&self, server: &ServerName) -> Result<()> {
        let request = http::Request::builder()
            .method(http::Method::GET)
            .uri("/_matrix/key/v2/server")
            .body(Vec::new())
            .map_err(Error::internal)?;
        let response = self
            .transport
            .send(server, request, MAX_KEY_RESPONSE_BYTES)
            .await?;
        if !response.status().is_success() {
            return Err(Error::Unreachable(format!(
                "{server} answered its key request with {}",
                response.status()
            )));
        }
        let value: Value = serde_json::from_slice(response.body())
            .map_err(|e| Error::Unreachable(format!("{server} sent bad keys: {e}")))?;
        self.keys.accept_response(server, &to_object(value)?)?;
        Ok(())
    }

    /// Asks the configured notaries for the server's keys; what they vouch for (signed by them
    /// and by the server itself) is cached.
    async fn fetch_from_notaries(&self, server: &ServerName, key_ids: &[String], ts: Option<u64>) {
        for notary in &self.trusted_key_servers {
            if **notary == *server {
                continue;
            }
            let criteria: serde_json::Map<String, Value> = key_ids
                .iter()
                .map(|id| {
                    let value = match ts {
                        Some(ts) => json!({ "minimum_valid_until_ts": ts }),
                        None => json!({}),
                    };
                    (id.clone(), value)
                })
                .collect();
            let body = json!({ "server_keys": { server.as_str(): criteria } });
            let query = self.post(notary, "/_matrix/key/v2/query", &body, Limit::Small);
            let answer = match query.await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::info!(%notary, %server, error = %e, "the notary did not help");
                    continue;
                }
            };
            let Some(responses) = answer.get("server_keys").and_then(Value::as_array) else {
                continue;
            };
            for response in responses {
                if let Err(e) = self.accept_notarised(notary, server, response).await {
                    tracing::info!(%notary, %server, error = %e, "refused notarised keys");
                }
            }
            if self
                .cached_keys(server, key_ids, ts)
                .is_ok_and(|found| found.len() == key_ids.len())
            {
                return;
            }
        }
    }

    /// A key response relayed by a notary: it must carry the notary's signature (checked with
    /// the notary's own keys) and the server's own (checked when it is stored).
    async fn accept_notarised(
        &self,
        notary: &ServerName,
        server: &ServerName,
        response: &Value,
    ) -> Result<()> {
        let object = to_object(response.clone())?;
        let notary_key_ids = signing_key_ids(&object, notary.as_str());
        if notary_key_ids.is_empty() {
            return Err(Error::Unauthorized("not signed by the notary".into()));
        }
        // The notary's own keys come from the notary itself, never from another notary.
        let mut notary_keys = self.cached_keys(notary, &notary_key_ids, Some(now_ms()))?;
        if notary_keys.is_empty() {
            self.fetch_direct(notary).await?;
            notary_keys = self.cached_keys(notary, &notary_key_ids, Some(now_ms()))?;
        }
        let mut only_notary = object.clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = only_notary.get_mut("signatures") {
            signatures.retain(|name, _| name == notary.as_str());
        }
        let map = PublicKeyMap::from([(notary.as_str().to_owned(), notary_keys)]);
        ruma::signatures::verify_json(&map, &only_notary)
            .map_err(|e| Error::Unauthorized(format!("the notary's signature: {e}")))?;
        self.keys.accept_response(server, &object)?;
        Ok(())
    }

    /// Checks an event's signatures (the servers the room version requires) and content hash.
    /// `Verified::Signatures` means the hash did not match: the redacted form must be used.
    pub async fn verify_event(
        &self,
        room_version: &RoomVersionId,
        json: &CanonicalJsonObject,
    ) -> Result<Verified> {
        let rules = room_version::rules(room_version)?;
        let servers =
            ruma::signatures::required_server_signatures_to_verify_event(json, &rules.signatures)
                .map_err(|e| Error::InvalidSignature(e.to_string()))?;
        let ts = if rules.enforce_key_validity {
            match json.get("origin_server_ts") {
                Some(CanonicalJsonValue::Integer(ts)) => {
                    Some(u64::try_from(i64::from(*ts)).unwrap_or(0))
                }
                _ => return Err(Error::InvalidSignature("no origin_server_ts".into())),
            }
        } else {
            None
        };
        let mut map = PublicKeyMap::new();
        for server in servers {
            map.insert(
                server.to_string(),
                self.keys_for_signature(&server, json, ts).await?,
            );
        }
        ruma::signatures::verify_event(&map, json, &rules)
            .map_err(|e| Error::InvalidSignature(e.to_string()))
    }

    /// Checks that `server` signed a JSON object (with a key valid now).
    pub async fn verify_json(&self, server: &ServerName, json: &CanonicalJsonObject) -> Result<()> {
        let keys = self
            .keys_for_signature(server, json, Some(now_ms()))
            .await?;
        let mut only = json.clone();
        if let Some(CanonicalJsonValue::Object(signatures)) = only.get_mut("signatures") {
            signatures.retain(|name, _| name == server.as_str());
        }
        let map = PublicKeyMap::from([(server.to_string(), keys)]);
        ruma::signatures::verify_json(&map, &only)
            .map_err(|e| Error::InvalidSignature(format!("{server}'s signature: {e}")))
    }

    /// Checks the `X-Matrix` signature of an incoming request, addressed to us.
    pub async fn verify_request(
        &self,
        authorization: &XMatrix,
        request: &http::Request<Vec<u8>>,
    ) -> Result<()> {
        if self.is_us(&authorization.origin) {
            return Err(Error::Unauthorized(
                "the request claims to come from this server".into(),
            ));
        }
        if let Some(destination) = &authorization.destination
            && !self.is_us(destination)
        {
            return Err(Error::Unauthorized(format!(
                "the request is addressed to {destination}, not to this server"
            )));
        }
        let key_id = authorization.key.to_string();
        let keys = self
            .server_keys(
                &authorization.origin,
                std::slice::from_ref(&key_id),
                Some(now_ms()),
            )
            .await?;
        if keys.is_empty() {
            return Err(Error::Unauthorized(format!(
                "{} has not published the key {key_id}",
                authorization.origin
            )));
        }
        let map = PublicKeyMap::from([(authorization.origin.to_string(), keys)]);
        authorization
            .verify_request(request, &self.server_name, &map)
            .map_err(|e| Error::Unauthorized(format!("the request signature: {e}")))
    }

    /// The keys of `server` for the signatures it put on `json`; an error when there are none.
    async fn keys_for_signature(
        &self,
        server: &ServerName,
        json: &CanonicalJsonObject,
        ts: Option<u64>,
    ) -> Result<BTreeMap<String, Base64>> {
        let key_ids = signing_key_ids(json, server.as_str());
        if key_ids.is_empty() {
            return Err(Error::InvalidSignature(format!("no signature of {server}")));
        }
        let keys = self.server_keys(server, &key_ids, ts).await?;
        if keys.is_empty() {
            return Err(Error::InvalidSignature(format!(
                "no known key of {server} for its signature"
            )));
        }
        Ok(keys)
    }
}

/// The ed25519 key IDs `entity` signed `object` with.
fn signing_key_ids(object: &CanonicalJsonObject, entity: &str) -> Vec<String> {
    match object.get("signatures") {
        Some(CanonicalJsonValue::Object(signatures)) => match signatures.get(entity) {
            Some(CanonicalJsonValue::Object(by_key)) => by_key
                .keys()
                .filter(|id| id.starts_with("ed25519:"))
                .cloned()
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}
