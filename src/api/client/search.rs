//! `POST /search`: server-side full-text search (see `service::search`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::extract::{AppState, Auth, JsonBody, Query};
use crate::error::{Error, Result};
use crate::service::search::run::{SearchBody, plan};

#[derive(Deserialize)]
pub struct SearchQuery {
    next_batch: Option<String>,
}

/// Searches the categories asked for; only `room_events` is known, others are ignored.
pub async fn search(
    State(state): State<AppState>,
    Auth(auth): Auth,
    Query(query): Query<SearchQuery>,
    JsonBody(body, _): JsonBody<SearchBody>,
) -> Result<Json<Value>> {
    let mut categories = Map::new();
    if let Some(criteria) = body.search_categories.room_events {
        state.search.index()?;
        let plan = plan(&criteria, query.next_batch.as_deref())?;
        // Whatever was sent before the search is found by it.
        state
            .search
            .wait_indexed(state.store.sequencer().upto())
            .await;
        let services = state.clone();
        let room_events = tokio::task::spawn_blocking(move || {
            services.search_room_events(&auth.user_id, &auth.device_id, &plan)
        })
        .await
        .map_err(Error::internal)??;
        categories.insert("room_events".into(), room_events);
    }
    Ok(Json(json!({ "search_categories": categories })))
}
