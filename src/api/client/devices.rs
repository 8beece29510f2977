//! Devices: list, get, rename, delete (with user-interactive auth).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Path};
use crate::error::{Error, Result};
use crate::service::devices::Device;

fn device_json(d: &Device) -> Value {
    json!({
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
    })
}

pub async fn list(State(state): State<AppState>, Auth(auth): Auth) -> Result<Json<Value>> {
    let devices: Vec<Value> = state
        .devices
        .list(&auth.user_id)?
        .iter()
        .map(device_json)
        .collect();
    Ok(Json(json!({ "devices": devices })))
}

pub async fn get_one(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(device_id): Path<String>,
) -> Result<Json<Value>> {
    let device = state
        .devices
        .get(&auth.user_id, &device_id)?
        .ok_or_else(|| Error::NotFound("no such device".into()))?;
    Ok(Json(device_json(&device)))
}

#[derive(Deserialize)]
pub struct UpdateBody {
    display_name: Option<String>,
}

pub async fn update(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(device_id): Path<String>,
    JsonBody(body, _): JsonBody<UpdateBody>,
) -> Result<Json<Value>> {
    state
        .devices
        .set_display_name(&auth.user_id, &device_id, body.display_name)?;
    state.store.durable().await?;
    state
        .federate_device_change(&auth.user_id, &device_id, false)
        .await;
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
pub struct DeleteBody {
    auth: Option<Value>,
}

pub async fn delete_one(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Path(device_id): Path<String>,
    JsonBody(body, _): JsonBody<DeleteBody>,
) -> Result<Json<Value>> {
    if state.devices.get(&auth.user_id, &device_id)?.is_none() {
        return Err(Error::NotFound("no such device".into()));
    }
    delete(&state, &auth, vec![device_id], body.auth.as_ref()).await
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<Value>,
}

pub async fn delete_many(
    State(state): State<AppState>,
    Auth(auth): Auth,
    JsonBody(body, _): JsonBody<DeleteManyBody>,
) -> Result<Json<Value>> {
    delete(&state, &auth, body.devices, body.auth.as_ref()).await
}

async fn delete(
    state: &AppState,
    auth: &crate::service::sessions::Authed,
    devices: Vec<String>,
    uia_auth: Option<&Value>,
) -> Result<Json<Value>> {
    state
        .confirm_with_password("delete_devices", &auth.user_id, uia_auth)
        .await?;
    state
        .remove_devices(&auth.user_id, Some(&devices), None)
        .await?;
    Ok(Json(json!({})))
}
