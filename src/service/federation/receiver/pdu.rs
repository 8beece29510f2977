//! The PDUs of a transaction: parsed against their room's version, grouped by room (keeping
//! their order), and taken through the checks on receipt of a PDU one room at a time.
//!
//! Every PDU gets its own result; none makes another fail. The PDUs of a room no user of ours is
//! joined to are refused, each with its error. A PDU whose event ID cannot be worked out (not a
//! JSON object, a room we do not know with no `event_id` field) has no key to answer under and
//! is only logged.

use futures_util::future::join_all;
use ruma::{CanonicalJsonObject, OwnedEventId, OwnedRoomId, RoomId};
use serde_json::Value;
use serde_json::value::RawValue;

use super::Peer;
use crate::core::{self, Pdu, room_version};
use crate::error::{Error, Result};
use crate::service::rooms::ingest::Received;

/// The result of one PDU in the answer: `Err` carries the error text.
pub type PduResult = std::result::Result<(), String>;

/// A PDU as parsed from the transaction.
struct Parsed {
    /// The event ID, when it could be worked out.
    event_id: Option<OwnedEventId>,
    /// The event, or why it was dropped.
    pdu: std::result::Result<Pdu, String>,
}

impl Peer<'_> {
    /// Runs every PDU of a transaction through the checks on receipt: rooms side by side, the
    /// events of one room in order.
    pub async fn receive_pdus(&self, raw: &[Box<RawValue>]) -> Vec<(OwnedEventId, PduResult)> {
        let mut results = Vec::new();
        let mut rooms: Vec<(OwnedRoomId, Vec<Pdu>)> = Vec::new();
        for parsed in raw.iter().map(|raw| self.parse(raw)) {
            match (parsed.event_id, parsed.pdu) {
                (Some(_), Ok(pdu)) => match rooms.iter_mut().find(|(r, _)| r == pdu.room_id()) {
                    Some((_, events)) => events.push(pdu),
                    None => rooms.push((pdu.room_id().to_owned(), vec![pdu])),
                },
                (Some(event_id), Err(error)) => {
                    tracing::info!(origin = %self.origin, %event_id, %error, "dropped a PDU");
                    results.push((event_id, Err(error)));
                }
                (None, Err(error)) => {
                    tracing::info!(origin = %self.origin, %error, "dropped an unnamed PDU");
                }
                (None, Ok(_)) => {}
            }
        }
        let per_room = join_all(
            rooms
                .into_iter()
                .map(|(room_id, events)| self.receive_room(room_id, events)),
        )
        .await;
        results.extend(per_room.into_iter().flatten());
        results
    }

    /// The events of one room, in order, under the room's lock.
    async fn receive_room(
        &self,
        room_id: OwnedRoomId,
        events: Vec<Pdu>,
    ) -> Vec<(OwnedEventId, PduResult)> {
        let _room = self.services.federation.receiver.rooms.lock(&room_id).await;
        // A room with no member of ours is not ours to follow: we may know it only from an
        // invite or a knock (a placeholder without a DAG), or have left it. Its events are
        // refused before anything is verified or fetched for them, so that a peer can neither
        // make us pull its history nor replace what we show of the room (the invite itself).
        let refusal = match self.services.rooms.is_resident(&room_id) {
            Ok(true) => None,
            Ok(false) => Some(format!("this server has no member joined to {room_id}")),
            Err(e) => {
                tracing::warn!(%room_id, error = %e, "checking whether we are in a room failed");
                Some("this server could not take the room's events now".to_owned())
            }
        };
        if let Some(error) = refusal {
            tracing::info!(origin = %self.origin, %room_id, %error, "refused the PDUs of a room");
            return events
                .iter()
                .map(|pdu| (pdu.event_id().to_owned(), Err(error.clone())))
                .collect();
        }
        let mut results = Vec::with_capacity(events.len());
        for pdu in events {
            let event_id = pdu.event_id().to_owned();
            let result = match self.receive_pdu(&room_id, pdu).await {
                Ok(Received::Accepted | Received::SoftFailed) => Ok(()),
                Ok(Received::Rejected(reason)) => {
                    tracing::info!(origin = %self.origin, %event_id, %reason, "rejected a PDU");
                    Err(format!("rejected: {reason}"))
                }
                Err(error) => {
                    tracing::info!(origin = %self.origin, %event_id, %error, "failed a PDU");
                    Err(error.to_string())
                }
            };
            results.push((event_id, result));
        }
        results
    }

    /// One PDU of the transaction: the origin must be allowed by the room's server ACL; then
    /// the checks every received event goes through.
    async fn receive_pdu(&self, room_id: &RoomId, pdu: Pdu) -> Result<Received> {
        let services = self.services;
        services
            .federation
            .check_acl(&services.rooms, room_id, self.origin)?;
        self.handle(pdu, true).await
    }

    /// Parses a PDU against the version of its room, which must be known to us: checks 1
    /// (format, size) of the checks on receipt.
    fn parse(&self, raw: &RawValue) -> Parsed {
        let named = |error: String| Parsed {
            event_id: event_id_field(raw),
            pdu: Err(error),
        };
        let Ok(json) = serde_json::from_str::<CanonicalJsonObject>(raw.get()) else {
            return named("the PDU is not a canonical JSON object".into());
        };
        let Some(room_id) = json
            .get("room_id")
            .and_then(|v| v.as_str())
            .and_then(|id| RoomId::parse(id).ok())
        else {
            return named("the PDU has no valid room_id".into());
        };
        let version = match self.services.rooms.info(&room_id) {
            Ok(Some(info)) => info.room_version,
            Ok(None) => return named(format!("{room_id} is not a room this server knows")),
            Err(e) => return named(e.to_string()),
        };
        if !room_version::is_supported(&version) {
            return named(format!("room version {version} is not supported"));
        }
        let event_id = match core::pdu::event_id(&version, &json) {
            Ok(event_id) => event_id,
            Err(e) => return named(format!("the PDU has no valid event ID: {e}")),
        };
        let pdu = Pdu::from_federation(version, json)
            .map_err(|e| format!("the PDU is not a valid event: {}", Error::from(e)));
        Parsed {
            event_id: Some(event_id),
            pdu,
        }
    }
}

/// The `event_id` field of a malformed PDU (room versions 1 and 2 carry one), to answer under.
fn event_id_field(raw: &RawValue) -> Option<OwnedEventId> {
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    OwnedEventId::try_from(value.get("event_id")?.as_str()?).ok()
}
