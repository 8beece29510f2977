//! Retrieving events: `GET /event/{eventId}`, `/state/{roomId}`, `/state_ids/{roomId}`,
//! `/event_auth/{roomId}/{eventId}` and `/timestamp_to_event/{roomId}`. What the asking server
//! may see follows `service::federation::served`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use crate::api::extract::{AppState, Path, Query, parse_event_id, parse_room_id};
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::service::federation::served::{ServerReader, ServerView};
use crate::util::now_ms;

/// A transaction holding the given PDUs, as `/event` and `/backfill` answer.
pub fn transaction(state: &AppState, pdus: Vec<Value>) -> Json<Value> {
    Json(json!({
        "origin": state.federation.server_name(),
        "origin_server_ts": now_ms(),
        "pdus": pdus,
    }))
}

/// `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event(
    State(state): State<AppState>,
    Path(event): Path<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let event_id = parse_event_id(&event)?;
    let not_found = || Error::NotFound("no such event".into());
    let room_id = state
        .rooms
        .pdu(&event_id)?
        .ok_or_else(not_found)?
        .room_id()
        .to_owned();
    let mut reader = state.server_reader(&signed.origin, &room_id)?;
    let pdu = state
        .servable_event(&room_id, &event_id)?
        .ok_or_else(not_found)?;
    let view = state.server_view(&mut reader, &pdu)?;
    let json = state
        .served_as(&pdu, view)?
        .ok_or_else(|| forbidden(&reader))?;
    Ok(transaction(&state, vec![json]))
}

#[derive(Deserialize)]
pub struct AtEvent {
    event_id: String,
}

/// The event a state request is about, which the server must be allowed to see, and the state
/// before it (404 when we do not know it).
fn state_at(
    state: &AppState,
    room: &str,
    event: &str,
    origin: &ruma::ServerName,
) -> Result<(Arc<Pdu>, Arc<crate::core::StateMap>)> {
    let room_id = parse_room_id(room)?;
    let event_id = parse_event_id(event)?;
    let mut reader = state.server_reader(origin, &room_id)?;
    let pdu = state
        .servable_event(&room_id, &event_id)?
        .ok_or_else(|| Error::NotFound(format!("no event {event_id} in this room")))?;
    if state.server_view(&mut reader, &pdu)? == ServerView::Hidden {
        return Err(forbidden(&reader));
    }
    let (_, before) = state
        .state_before_event(&pdu)?
        .ok_or_else(|| Error::NotFound(format!("the state at {event_id} is not known here")))?;
    Ok((pdu, before))
}

/// The state events of a state map that may be served, in a stable order.
fn state_events(state: &AppState, map: &crate::core::StateMap) -> Result<Vec<Arc<Pdu>>> {
    let mut ids: Vec<_> = map.values().collect();
    ids.sort();
    let mut events = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(pdu) = state.rooms.pdu(id)?
            && !pdu.rejected()
        {
            events.push(pdu);
        }
    }
    Ok(events)
}

/// `GET /_matrix/federation/v1/state/{roomId}?event_id=`: the state before the event, and the
/// auth chain of that state.
pub async fn room_state(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<AtEvent>,
    signed: Signed,
) -> Result<Json<Value>> {
    let (_, before) = state_at(&state, &room, &query.event_id, &signed.origin)?;
    let events = state_events(&state, &before)?;
    let chain = state.auth_chain(events.iter().map(|pdu| &**pdu))?;
    let serve = |pdus: &[Arc<Pdu>]| -> Result<Vec<Value>> {
        pdus.iter()
            .map(|pdu| {
                serde_json::to_value(state.served_event(pdu, false)?).map_err(Error::internal)
            })
            .collect()
    };
    Ok(Json(json!({
        "pdus": serve(&events)?,
        "auth_chain": serve(&chain)?,
    })))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`: the same, as event IDs.
pub async fn room_state_ids(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<AtEvent>,
    signed: Signed,
) -> Result<Json<Value>> {
    let (_, before) = state_at(&state, &room, &query.event_id, &signed.origin)?;
    let events = state_events(&state, &before)?;
    let chain = state.auth_chain(events.iter().map(|pdu| &**pdu))?;
    let ids = |pdus: &[Arc<Pdu>]| -> Vec<Value> {
        pdus.iter().map(|pdu| json!(pdu.event_id())).collect()
    };
    Ok(Json(json!({
        "pdu_ids": ids(&events),
        "auth_chain_ids": ids(&chain),
    })))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`: the auth chain of an event.
pub async fn event_auth(
    State(state): State<AppState>,
    Path((room, event)): Path<(String, String)>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let event_id = parse_event_id(&event)?;
    let mut reader = state.server_reader(&signed.origin, &room_id)?;
    let pdu = state
        .servable_event(&room_id, &event_id)?
        .ok_or_else(|| Error::NotFound(format!("no event {event_id} in this room")))?;
    if state.server_view(&mut reader, &pdu)? == ServerView::Hidden {
        return Err(forbidden(&reader));
    }
    let chain = state
        .auth_chain([&*pdu])?
        .iter()
        .map(|pdu| serde_json::to_value(state.served_event(pdu, false)?).map_err(Error::internal))
        .collect::<Result<Vec<Value>>>()?;
    Ok(Json(json!({ "auth_chain": chain })))
}

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: u64,
    dir: String,
}

/// `GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=`
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    Path(room): Path<String>,
    Query(query): Query<TimestampQuery>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let forwards = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        _ => return Err(Error::InvalidParam("dir must be f or b".into())),
    };
    let mut reader = state.server_reader(&signed.origin, &room_id)?;
    state.check_may_read_room(&reader)?;
    let (event_id, ts) = state
        .closest_event_for_server(&mut reader, query.ts, forwards)?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no event {} {}",
                if forwards {
                    "at or after"
                } else {
                    "at or before"
                },
                query.ts
            ))
        })?;
    Ok(Json(
        json!({ "event_id": event_id, "origin_server_ts": ts }),
    ))
}

/// The refusal of a read the server may not make.
pub fn forbidden(reader: &ServerReader<'_>) -> Error {
    Error::Forbidden(format!(
        "{} may not read this in {}",
        reader.origin, reader.room_id
    ))
}
