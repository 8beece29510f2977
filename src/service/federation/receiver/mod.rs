//! Receiving transactions from other servers (`PUT /_matrix/federation/v1/send/{txnId}`).
//!
//! A transaction is processed once per origin and transaction ID ([`transaction`]); its PDUs go
//! through the checks on receipt of a PDU, room by room in the order they came, one room at a
//! time under that room's lock ([`pdu`]); then its EDUs ([`edu`]). What an event references and
//! we lack is fetched from the origin, within the limits of a [`budget::Budget`]:
//!
//! - unknown auth events with `/event/{eventId}`, each checked like any received event and
//!   stored as an outlier ([`auth_chain`]);
//! - missing prev events with `/get_missing_events`, processed like received events, and where
//!   a gap remains, the state at the gap with `/state_ids` and the events it names ([`gaps`]).
//!
//! Every event goes through the same checks ([`check`]) whichever way it came.
//!
//! The last checks (auth against the state before the event, soft failure against the current
//! state) and the bookkeeping of rejected and soft-failed events are the room service's
//! (`Rooms::ingest_remote`, `service::rooms::outlier`).

pub mod auth_chain;
pub mod budget;
pub mod check;
pub mod edu;
pub mod fetch;
pub mod gaps;
pub mod locks;
pub mod order;
pub mod pdu;
pub mod presence;
pub mod receipts;
pub mod transaction;
pub mod typing;

use std::collections::BTreeMap;

use ruma::{OwnedRoomId, OwnedServerName, ServerName};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::Store;
use budget::Budget;
use locks::KeyedLocks;
use transaction::{MAX_TXN_ID_BYTES, Transaction, TransactionLog};

/// The receiving side of federation: answers already given, and the locks that order
/// processing per origin and per room.
pub struct Receiver {
    log: TransactionLog,
    /// One transaction of an origin at a time (a retry waits for the first try's answer).
    origins: KeyedLocks<OwnedServerName>,
    /// One incoming event of a room at a time, fetches included (local appends take the room
    /// service's own lock, held only while an event is written).
    rooms: KeyedLocks<OwnedRoomId>,
}

impl Receiver {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            log: TransactionLog::new(store)?,
            origins: KeyedLocks::default(),
            rooms: KeyedLocks::default(),
        })
    }
}

/// The server a transaction came from, while we process it: the one we ask for what its events
/// reference and we lack.
pub(crate) struct Peer<'a> {
    pub services: &'a Services,
    pub origin: &'a ServerName,
    pub budget: &'a Budget,
}

impl Services {
    /// Processes a transaction `origin` signed (`PUT /send/{txnId}`) and answers with the result
    /// of each PDU: `{"pdus": {event_id: {} | {"error": …}}}`. The same transaction again gets
    /// the same answer without being processed again.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        transaction: Transaction,
    ) -> Result<Value> {
        if txn_id.is_empty() || txn_id.len() > MAX_TXN_ID_BYTES {
            return Err(Error::InvalidParam(format!(
                "a transaction ID has 1 to {MAX_TXN_ID_BYTES} bytes"
            )));
        }
        transaction.check(origin)?;
        let receiver = &self.federation.receiver;
        let _one_at_a_time = receiver.origins.lock(&origin.to_owned()).await;
        if let Some(answer) = receiver.log.answer(origin, txn_id)? {
            return Ok(answer);
        }
        let budget = Budget::default();
        let peer = Peer {
            services: self,
            origin,
            budget: &budget,
        };
        let results = peer.receive_pdus(&transaction.pdus).await;
        peer.receive_edus(&transaction.edus).await;
        let pdus: BTreeMap<String, Value> = results
            .into_iter()
            .map(|(event_id, result)| {
                let value = match result {
                    Ok(()) => json!({}),
                    Err(error) => json!({ "error": error }),
                };
                (event_id.to_string(), value)
            })
            .collect();
        let answer = json!({ "pdus": pdus });
        receiver.log.record(origin, txn_id, &answer)?;
        self.store.durable().await?;
        Ok(answer)
    }
}
