//! Fetching single events from the origin (`GET /_matrix/federation/v1/event/{eventId}`). What
//! comes back is checked before anything uses it: it must be an event of the room's format,
//! the one asked for (its ID is worked out, not read), in the room, and correctly signed.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId, RoomVersionId};
use serde_json::Value;

use super::Peer;
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::service::federation::request::Limit;

/// Events fetched from one server at the same time.
pub const FETCH_CONCURRENCY: usize = 8;

impl Peer<'_> {
    /// One event of the room, checked (checks 1 to 3 of the checks on receipt: a bad content
    /// hash gives the redacted event). Counts against the budget.
    pub async fn fetch_event(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        event_id: &EventId,
    ) -> Result<Pdu> {
        self.budget.fetch_events(1)?;
        let path = format!("/_matrix/federation/v1/event/{}", encode(event_id.as_str()));
        let answer = self
            .services
            .federation
            .get(self.origin, &path, Limit::Small)
            .await?;
        let json = single_pdu(&answer).ok_or_else(|| self.bad_answer("no event in /event"))?;
        let pdu = self.parse_fetched(room_id, version, json)?;
        if pdu.event_id() != event_id {
            return Err(self.bad_answer(&format!("{} instead of {event_id}", pdu.event_id())));
        }
        self.verify(pdu).await
    }

    /// Several events of the room, a few at a time; fails when one cannot be had.
    pub async fn fetch_events(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        event_ids: Vec<OwnedEventId>,
    ) -> Result<Vec<Pdu>> {
        stream::iter(event_ids)
            .map(|event_id| async move { self.fetch_event(room_id, version, &event_id).await })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// An event object from a peer's answer, parsed as an event of the room (format and size).
    pub fn parse_fetched(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        json: CanonicalJsonObject,
    ) -> Result<Pdu> {
        let pdu = Pdu::from_federation(version.clone(), json)
            .map_err(|e| self.bad_answer(&format!("an invalid event: {e}")))?;
        if pdu.room_id() != room_id {
            return Err(self.bad_answer(&format!("{} is an event of another room", pdu.event_id())));
        }
        Ok(pdu)
    }

    /// The error for an answer of the origin we cannot use.
    pub fn bad_answer(&self, what: &str) -> Error {
        Error::Unreachable(format!("{} answered with {what}", self.origin))
    }
}

/// The one PDU of an `/event` answer (a transaction with `pdus: [event]`).
fn single_pdu(answer: &Value) -> Option<CanonicalJsonObject> {
    match answer.get("pdus")?.as_array()?.as_slice() {
        [event] => serde_json::from_value(event.clone()).ok(),
        _ => None,
    }
}

/// A path segment, percent-encoded (event IDs of room version 3 hold `/` and `+`).
pub fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode("$a/b+c:x"), "%24a%2Fb%2Bc%3Ax");
        assert_eq!(encode("!room:example.org"), "%21room%3Aexample.org");
    }

    #[test]
    fn one_pdu_only() {
        let event = serde_json::json!({ "type": "m.room.message" });
        assert!(single_pdu(&serde_json::json!({ "pdus": [event] })).is_some());
        assert!(single_pdu(&serde_json::json!({ "pdus": [event, event] })).is_none());
        assert!(single_pdu(&serde_json::json!({ "pdus": [] })).is_none());
        assert!(single_pdu(&serde_json::json!({ "pdus": [1.5] })).is_none());
        assert!(single_pdu(&serde_json::json!({})).is_none());
    }
}
