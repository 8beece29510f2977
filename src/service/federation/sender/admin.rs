//! What administrators see of the outgoing queue: each destination with its queued PDUs and
//! EDUs, failures, backoff and last success (`roost federation destinations`).

use ruma::OwnedServerName;
use serde::Serialize;

use super::queue::Queue;
use crate::error::Result;
use crate::service::reports::format_utc;
use crate::storage::Store;
use crate::util::now_ms;

/// One destination as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationInfo {
    pub destination: OwnedServerName,
    pub queued_pdus: u64,
    pub queued_edus: u64,
    /// Whether a transaction is in flight (sent, or to be sent again, with the same ID).
    pub in_flight: bool,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No attempt before this time (ms since the epoch), if in backoff now.
    pub backoff_until_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub last_error: Option<String>,
    pub transactions_sent: u64,
    pub pdus_sent: u64,
    pub edus_sent: u64,
    pub pdus_dropped: u64,
    pub edus_dropped: u64,
}

impl DestinationInfo {
    /// Tab-separated: destination, queued PDUs and EDUs, failures, backoff end, last success,
    /// last error.
    pub fn line(&self) -> String {
        let time = |ms: Option<u64>| ms.map_or_else(|| "-".to_owned(), format_utc);
        format!(
            "{}\tpdus {}\tedus {}\tfailures {}\tbackoff until {}\tlast success {}\tlast error {}",
            self.destination,
            self.queued_pdus,
            self.queued_edus,
            self.failures,
            time(self.backoff_until_ms),
            time(self.last_success_ms),
            self.last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| format!("{e:?}")),
        )
    }
}

impl Queue {
    /// Every destination ever queued for, by name.
    pub fn infos(&self) -> Result<Vec<DestinationInfo>> {
        let now = now_ms();
        Ok(self
            .destinations()?
            .into_iter()
            .map(|(destination, state, in_flight)| DestinationInfo {
                destination,
                queued_pdus: state.queued_pdus,
                queued_edus: state.queued_edus,
                in_flight,
                failures: state.failures,
                backoff_until_ms: state.in_backoff(now).then_some(state.backoff_until_ms),
                last_success_ms: state.last_success_ms,
                last_failure_ms: state.last_failure_ms,
                last_error: state.last_error,
                transactions_sent: state.transactions_sent,
                pdus_sent: state.pdus_sent,
                edus_sent: state.edus_sent,
                pdus_dropped: state.pdus_dropped,
                edus_dropped: state.edus_dropped,
            })
            .collect())
    }
}

/// The destinations of the store of a stopped server (the command-line view).
pub fn destinations_in(store: &Store) -> Result<Vec<DestinationInfo>> {
    Queue::new(store)?.infos()
}
