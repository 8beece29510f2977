//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! and cross-signing: `/keys/device_signing/upload`, `/keys/signatures/upload`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::message::parse_token;
use crate::api::extract::{AppState, Auth, JsonBody, Query, parse_user_id};
use crate::error::{Error, Result};
use crate::service::federation::e2ee::local_keys::check_algorithms;
use crate::service::federation::e2ee::remote_claim::{Claim, check_claim};
use crate::service::federation::e2ee::remote_query::client_timeout;
use crate::service::keys::Upload;
use crate::service::keys::cross_signing::CrossSigningUpload;

/// The most users or devices one query or claim may name.
const MAX_TARGETS: usize = 1000;

#[derive(Deserialize)]
pub struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: Option<Map<String, Value>>,
    #[serde(default)]
    fallback_keys: Option<Map<String, Value>>,
}

pub async fn upload(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<UploadBody>,
) -> Result<Json<Value>> {
    let uploaded = state
        .keys
        .upload(
            &auth.user_id,
            &auth.device_id,
            Upload {
                device_keys: body.device_keys.filter(|v| !v.is_null()),
                one_time_keys: body.one_time_keys.unwrap_or_default(),
                fallback_keys: body.fallback_keys.unwrap_or_default(),
            },
        )
        .await?;
    if uploaded.device_keys_changed {
        state.announce_key_change(&auth.user_id)?;
        state
            .federate_device_change(&auth.user_id, &auth.device_id, false)
            .await;
    }
    Ok(Json(
        json!({ "one_time_key_counts": uploaded.one_time_key_counts }),
    ))
}

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    /// How long other servers may take to answer (ms).
    timeout: Option<u64>,
}

/// The device keys of users (all their devices, or those listed), each with the device's
/// display name, and their cross-signing keys (the user-signing key only to its owner), with the
/// signatures the owner and the requester published. Users of other servers are answered from
/// the cache of their device lists or asked of their servers; a server that cannot be asked is
/// listed under `failures`.
pub async fn query(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<QueryBody>,
) -> Result<Json<Value>> {
    if body.device_keys.len() > MAX_TARGETS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_TARGETS} users per query"
        )));
    }
    let mut device_keys = Map::new();
    let mut failures = Map::new();
    let mut master_keys = Map::new();
    let mut self_signing_keys = Map::new();
    let mut user_signing_keys = Map::new();
    let mut remote = BTreeMap::new();
    for (user, devices) in &body.device_keys {
        let user_id = parse_user_id(user)?;
        if user_id.server_name() != state.config.server_name.as_str() {
            remote.insert(user_id, devices.clone());
            continue;
        }
        let keys = state.local_user_keys(&user_id, devices, &auth.user_id)?;
        device_keys.insert(user_id.to_string(), Value::Object(keys.devices));
        if let Some(master) = keys.master_key {
            master_keys.insert(user_id.to_string(), master);
        }
        if let Some(ssk) = keys.self_signing_key {
            self_signing_keys.insert(user_id.to_string(), ssk);
        }
        if let Some(usk) = keys.user_signing_key {
            user_signing_keys.insert(user_id.to_string(), usk);
        }
    }
    if !remote.is_empty() {
        let answers = state
            .query_remote_keys(&auth.user_id, &remote, client_timeout(body.timeout))
            .await?;
        device_keys.extend(answers.device_keys);
        master_keys.extend(answers.master_keys);
        self_signing_keys.extend(answers.self_signing_keys);
        failures.extend(answers.failures);
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "failures": failures,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
    })))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
    /// How long other servers may take to answer (ms).
    timeout: Option<u64>,
}

/// One key per (user, device, algorithm): a one-time key, or the fallback key when none is left.
/// Keys of users of other servers are claimed from their servers; a server that cannot be asked
/// is listed under `failures`.
pub async fn claim(
    State(state): State<AppState>,
    Auth(_auth): Auth,
    JsonBody(body, _): JsonBody<ClaimBody>,
) -> Result<Json<Value>> {
    let targets: usize = body.one_time_keys.values().map(BTreeMap::len).sum();
    if targets > MAX_TARGETS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_TARGETS} devices per claim"
        )));
    }
    let mut claimed = Map::new();
    let mut local = Vec::new();
    let mut remote = Claim::new();
    for (user, devices) in &body.one_time_keys {
        let user_id = parse_user_id(user)?;
        if user_id.server_name() != state.config.server_name.as_str() {
            remote.insert(user_id, devices.clone());
        } else {
            local.push((user_id, devices));
        }
    }
    check_claim(&remote)?;
    for (_, devices) in &local {
        check_algorithms(devices.values())?;
    }
    for (user_id, devices) in local {
        let for_user = state.claim_local_keys(&user_id, devices)?;
        if !for_user.is_empty() {
            claimed.insert(user_id.to_string(), Value::Object(for_user));
        }
    }
    // A claimed key must stay claimed after a crash, or it could be handed out twice.
    if !claimed.is_empty() {
        state.store.durable().await?;
    }
    let mut failures = Map::new();
    if !remote.is_empty() {
        let answers = state
            .claim_remote_keys(remote, client_timeout(body.timeout))
            .await;
        claimed.extend(answers.one_time_keys);
        failures = answers.failures;
    }
    Ok(Json(
        json!({ "one_time_keys": claimed, "failures": failures }),
    ))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    from: String,
    to: String,
}

/// Users whose device lists changed between two sync tokens, and users no longer sharing a room.
pub async fn changes(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<ChangesQuery>,
) -> Result<Json<Value>> {
    let from = parse_token(&query.from)?;
    let to = parse_token(&query.to)?.min(state.store.sequencer().upto());
    let lists = state.device_list_changes(&auth.user_id, from, to)?;
    Ok(Json(
        json!({ "changed": lists.changed, "left": lists.left }),
    ))
}

#[derive(Deserialize)]
pub struct DeviceSigningBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<Value>,
}

/// Publishes cross-signing keys. The first upload, and an upload of the keys already stored, need
/// no user-interactive auth; replacing keys does.
pub async fn upload_device_signing(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<DeviceSigningBody>,
) -> Result<Json<Value>> {
    // The auth decision and the write see the same stored keys.
    let _guard = state.keys.lock_user(&auth.user_id).await?;
    let upload = CrossSigningUpload {
        master: body.master_key.filter(|v| !v.is_null()),
        self_signing: body.self_signing_key.filter(|v| !v.is_null()),
        user_signing: body.user_signing_key.filter(|v| !v.is_null()),
    };
    if state
        .keys
        .cross_signing_upload_needs_auth(&auth.user_id, &upload)?
    {
        state
            .confirm_with_password("device_signing_upload", &auth.user_id, body.auth.as_ref())
            .await?;
    }
    let device_ids: Vec<String> = state
        .devices
        .list(&auth.user_id)?
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    if state
        .keys
        .upload_cross_signing(&auth.user_id, upload, &device_ids)
        .await?
    {
        state.announce_key_change(&auth.user_id)?;
        state.federate_signing_keys(&auth.user_id).await;
    }
    Ok(Json(json!({})))
}

/// Publishes signatures on keys; each one that cannot be accepted is reported in `failures`.
pub async fn upload_signatures(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(_, body): JsonBody<Value>,
) -> Result<Json<Value>> {
    let body = body
        .as_object()
        .ok_or_else(|| Error::BadJson("expected an object".into()))?;
    let mut objects = 0;
    for (user, keys) in body {
        let keys = keys
            .as_object()
            .ok_or_else(|| Error::BadJson(format!("{user}: expected an object of keys")))?;
        if keys.values().any(|k| !k.is_object()) {
            return Err(Error::BadJson(format!(
                "{user}: every signed key must be an object"
            )));
        }
        objects += keys.len();
    }
    if objects > MAX_TARGETS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_TARGETS} keys per upload"
        )));
    }
    let _guard = state.keys.lock_user(&auth.user_id).await?;
    // Users of other servers: their master keys as their servers published them.
    let mut remote_masters = BTreeMap::new();
    for user in body.keys() {
        if let Ok(user) = OwnedUserId::try_from(user.as_str())
            && user.server_name() != state.config.server_name.as_str()
            && let Some(master) = state.cached_device_list(&user)?.and_then(|l| l.master_key)
        {
            remote_masters.insert(user, master);
        }
    }
    let (failures, changed) = state
        .keys
        .upload_signatures(&auth.user_id, body, &remote_masters)
        .await?;
    // A signature on someone else's key is news for the signer's devices only.
    let mut announced = std::collections::BTreeSet::new();
    for user in changed {
        let announce = if user == auth.user_id {
            user
        } else {
            auth.user_id.clone()
        };
        if announced.insert(announce.clone()) {
            state.announce_key_change(&announce)?;
        }
    }
    // Other servers hear of new signatures on the signer's own devices and master key.
    if let Some(own) = body.get(auth.user_id.as_str()).and_then(Value::as_object) {
        let refused = failures
            .get(auth.user_id.as_str())
            .and_then(Value::as_object);
        for key_id in own.keys() {
            if refused.is_some_and(|r| r.contains_key(key_id)) {
                continue;
            }
            if state.devices.get(&auth.user_id, key_id)?.is_some() {
                state
                    .federate_device_change(&auth.user_id, key_id, false)
                    .await;
            } else {
                state.federate_signing_keys(&auth.user_id).await;
            }
        }
    }
    Ok(Json(json!({ "failures": failures })))
}
