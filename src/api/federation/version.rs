//! `GET /_matrix/federation/v1/version`: which implementation this server is. Public, like the
//! key endpoints: peers and administrators ask it before anything is signed.

use axum::Json;
use serde_json::{Value, json};

pub async fn version() -> Json<Value> {
    Json(json!({
        "server": { "name": "roost", "version": env!("CARGO_PKG_VERSION") }
    }))
}
