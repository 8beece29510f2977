//! End-to-end encryption keys: `/keys/upload`, `/keys/query`, `/keys/claim`, `/keys/changes`,
//! and cross-signing: `/keys/device_signing/upload`, `/keys/signatures/upload`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::message::parse_token;
use crate::api::extract::{AppState, Auth, JsonBody, Query, parse_user_id};
use crate::error::{Error, Result};
use crate::service::keys::Upload;
use crate::service::keys::cross_signing::{CrossSigningUpload, public_key, with_signatures};

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
    }
    Ok(Json(
        json!({ "one_time_key_counts": uploaded.one_time_key_counts }),
    ))
}

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
    #[allow(dead_code)]
    timeout: Option<u64>,
}

/// The device keys of local users (all their devices, or those listed), each with the device's
/// display name, and their cross-signing keys (the user-signing key only to its owner), with the
/// signatures the owner and the requester published. Remote users are reported under
/// `failures` until federation exists.
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
    for (user, devices) in &body.device_keys {
        let user_id = parse_user_id(user)?;
        if user_id.server_name() != state.config.server_name.as_str() {
            failures.insert(
                user_id.server_name().to_string(),
                json!({ "errcode": "M_UNAVAILABLE", "error": "federation is not available" }),
            );
            continue;
        }
        let mut found = Map::new();
        for (device_id, mut keys) in state.keys.all_device_keys(&user_id)? {
            if !devices.is_empty() && !devices.contains(&device_id) {
                continue;
            }
            let Some(device) = state.devices.get(&user_id, &device_id)? else {
                continue;
            };
            if let Some(name) = device.display_name
                && let Some(object) = keys.as_object_mut()
                && let Some(unsigned) = object
                    .entry("unsigned")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
            {
                unsigned.insert("device_display_name".into(), json!(name));
            }
            let signatures = state
                .keys
                .signatures_for(&user_id, &device_id, &auth.user_id)?;
            found.insert(device_id, with_signatures(keys, signatures));
        }
        device_keys.insert(user_id.to_string(), Value::Object(found));
        let cross_signing = state.keys.cross_signing_keys(&user_id)?;
        if let Some(master) = cross_signing.master {
            let signatures = match public_key(&master, &user_id, "master") {
                Ok((_, public)) => state
                    .keys
                    .signatures_for(&user_id, &public, &auth.user_id)?,
                Err(_) => Default::default(),
            };
            master_keys.insert(user_id.to_string(), with_signatures(master, signatures));
        }
        if let Some(ssk) = cross_signing.self_signing {
            self_signing_keys.insert(user_id.to_string(), ssk);
        }
        if user_id == auth.user_id
            && let Some(usk) = cross_signing.user_signing
        {
            user_signing_keys.insert(user_id.to_string(), usk);
        }
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
    #[allow(dead_code)]
    timeout: Option<u64>,
}

/// One key per (user, device, algorithm): a one-time key, or the fallback key when none is left.
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
    let mut failures = Map::new();
    for (user, devices) in &body.one_time_keys {
        let user_id = parse_user_id(user)?;
        if user_id.server_name() != state.config.server_name.as_str() {
            failures.insert(
                user_id.server_name().to_string(),
                json!({ "errcode": "M_UNAVAILABLE", "error": "federation is not available" }),
            );
            continue;
        }
        let mut for_user = Map::new();
        for (device_id, algorithm) in devices {
            if algorithm.is_empty() || algorithm.len() > 255 || algorithm.contains(':') {
                return Err(Error::InvalidParam(format!(
                    "{algorithm:?} is not a key algorithm"
                )));
            }
            if let Some((key_id, key)) = state.keys.claim(&user_id, device_id, algorithm)? {
                for_user.insert(device_id.clone(), json!({ key_id: key }));
            }
        }
        if !for_user.is_empty() {
            claimed.insert(user_id.to_string(), Value::Object(for_user));
        }
    }
    // A claimed key must stay claimed after a crash, or it could be handed out twice.
    if !claimed.is_empty() {
        state.store.durable().await?;
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
    let (failures, changed) = state.keys.upload_signatures(&auth.user_id, body).await?;
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
    Ok(Json(json!({ "failures": failures })))
}
