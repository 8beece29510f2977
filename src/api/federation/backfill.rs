//! History for other servers: `GET /backfill/{roomId}?v=&limit=` and
//! `POST /get_missing_events/{roomId}`.

use axum::Json;
use axum::extract::{RawQuery, State};
use ruma::OwnedEventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use super::events::transaction;
use crate::api::extract::{AppState, Path, parse_event_id, parse_room_id};
use crate::error::{Error, Result};
use crate::service::federation::walks::{
    DEFAULT_MISSING_EVENTS_LIMIT, MAX_BACKFILL_LIMIT, MissingEventsRequest,
};

/// The most events a request may start from (`v`, `latest_events`, `earliest_events`).
const MAX_START_EVENTS: usize = 100;

/// The `v` (repeated) and `limit` parameters of a backfill request.
fn backfill_query(raw: Option<&str>) -> Result<(Vec<OwnedEventId>, usize)> {
    let mut v = Vec::new();
    let mut limit = None;
    for (key, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "v" => {
                if v.len() == MAX_START_EVENTS {
                    return Err(Error::InvalidParam(format!(
                        "at most {MAX_START_EVENTS} events in v"
                    )));
                }
                v.push(parse_event_id(&value)?);
            }
            "limit" => {
                let n: usize = value.parse().map_err(|_| {
                    Error::InvalidParam("limit must be a non-negative integer".into())
                })?;
                limit = Some(n);
            }
            _ => {}
        }
    }
    if v.is_empty() {
        return Err(Error::MissingParam("v: the events to backfill from".into()));
    }
    let limit = limit.ok_or_else(|| Error::MissingParam("limit".into()))?;
    Ok((v, limit.min(MAX_BACKFILL_LIMIT)))
}

/// `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`
pub async fn backfill(
    State(state): State<AppState>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let (v, limit) = backfill_query(query.as_deref())?;
    let mut reader = state.server_reader(&signed.origin, &room_id)?;
    state.check_may_read_room(&reader)?;
    let pdus = state.backfill_events(&mut reader, &v, limit)?;
    Ok(transaction(&state, pdus))
}

#[derive(Deserialize)]
pub struct MissingEventsBody {
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    limit: Option<u64>,
    min_depth: Option<u64>,
}

fn event_ids(field: &str, raw: &[String]) -> Result<Vec<OwnedEventId>> {
    if raw.len() > MAX_START_EVENTS {
        return Err(Error::InvalidParam(format!(
            "at most {MAX_START_EVENTS} events in {field}"
        )));
    }
    raw.iter().map(|id| parse_event_id(id)).collect()
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(state): State<AppState>,
    Path(room): Path<String>,
    signed: Signed,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room)?;
    let body: MissingEventsBody = signed.json()?;
    let request = MissingEventsRequest {
        earliest_events: event_ids("earliest_events", &body.earliest_events)?,
        latest_events: event_ids("latest_events", &body.latest_events)?,
        limit: body.limit.map_or(DEFAULT_MISSING_EVENTS_LIMIT, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        }),
        min_depth: body.min_depth.unwrap_or(0),
    };
    let mut reader = state.server_reader(&signed.origin, &room_id)?;
    state.check_may_read_room(&reader)?;
    let events = state.missing_events(&mut reader, &request)?;
    Ok(Json(json!({ "events": events })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_parameters() {
        let (v, limit) = backfill_query(Some("v=%24a%3Ax&v=%24b%3Ax&limit=500")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(limit, MAX_BACKFILL_LIMIT);
        assert!(matches!(
            backfill_query(Some("limit=5")),
            Err(Error::MissingParam(_))
        ));
        assert!(matches!(
            backfill_query(Some("v=%24a%3Ax")),
            Err(Error::MissingParam(_))
        ));
        assert!(matches!(
            backfill_query(Some("v=%24a%3Ax&limit=-1")),
            Err(Error::InvalidParam(_))
        ));
        assert!(matches!(
            backfill_query(Some("v=not-an-event&limit=1")),
            Err(Error::InvalidParam(_))
        ));
    }
}
