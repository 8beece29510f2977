//! One worker per destination with work: a task spawned when something is queued for a
//! destination that has none, which sends one transaction at a time and ends once the queue is
//! empty. It sleeps on a [`Notify`] (new work, or [`Sender::wake`]) and, while the destination
//! is in backoff, on a timer for that destination alone; nothing polls the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ruma::{OwnedServerName, ServerName};
use serde_json::Value;
use tokio::sync::Notify;

use super::Sender;
use super::batch::{self, QueuedEdu};
use super::queue::{Outcome, PduEntry, PendingTxn};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::util::now_ms;

/// What a worker listens to.
#[derive(Default)]
pub(super) struct Handle {
    /// New work, or a wake-up from [`Sender::wake`].
    notify: Notify,
    /// The destination contacted us: its backoff ends.
    woken: AtomicBool,
}

impl Handle {
    pub(super) fn wake(&self, end_backoff: bool) {
        if end_backoff {
            self.woken.store(true, Ordering::SeqCst);
        }
        self.notify.notify_one();
    }
}

/// What a worker does after one step.
enum Step {
    /// Send the next transaction.
    Next,
    /// Wait for a wake-up, or until this time (ms since the epoch).
    Wait(u64),
    /// Nothing is queued: the worker ends.
    Done,
}

/// How long a worker waits after an error of its own (the store), not of the destination.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

impl Sender {
    /// Makes sure a worker runs for `destination` and tells it there is new work. Before the
    /// sender is started (and in the command-line tools), the queue waits for the next start.
    pub(super) fn kick(&self, destination: &ServerName) {
        let Some(services) = self.services.get() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = workers.get(destination) {
            handle.wake(false);
            return;
        }
        let handle = Arc::new(Handle::default());
        workers.insert(destination.to_owned(), handle.clone());
        runtime.spawn(run(services.clone(), destination.to_owned(), handle));
    }

    /// Ends a worker that found nothing to send, unless work arrived meanwhile (queueing adds
    /// the entry before it looks for a worker under the same lock, so no work is left behind).
    fn retire(&self, destination: &ServerName, handle: &Arc<Handle>) -> Result<bool> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if self.queue.has_work(destination)? {
            return Ok(false);
        }
        if workers
            .get(destination)
            .is_some_and(|current| Arc::ptr_eq(current, handle))
        {
            workers.remove(destination);
        }
        Ok(true)
    }
}

/// The worker of one destination.
async fn run(services: Weak<Services>, destination: OwnedServerName, handle: Arc<Handle>) {
    loop {
        let step = {
            let Some(services) = services.upgrade() else {
                return;
            };
            match services.send_step(&destination, &handle).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(%destination, error = %e, "the federation sender failed; retrying");
                    Step::Wait(now_ms().saturating_add(RETRY_AFTER_ERROR.as_millis() as u64))
                }
            }
        };
        match step {
            Step::Next => {}
            Step::Done => return,
            Step::Wait(until) => {
                let wait = Duration::from_millis(until.saturating_sub(now_ms()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = handle.notify.notified() => {}
                }
            }
        }
    }
}

impl Services {
    /// One step of a destination's worker: wait out its backoff, or send one transaction and
    /// record how it went.
    async fn send_step(&self, destination: &ServerName, handle: &Arc<Handle>) -> Result<Step> {
        let sender = &self.federation.sender;
        if handle.woken.swap(false, Ordering::SeqCst) && sender.queue.clear_backoff(destination)? {
            tracing::info!(%destination, "the destination contacted us: retrying at once");
        }
        let now = now_ms();
        let state = sender.queue.state(destination)?;
        if state.in_backoff(now) {
            if sender.retire(destination, handle)? {
                return Ok(Step::Done);
            }
            return Ok(Step::Wait(state.backoff_until_ms));
        }
        let Some(txn) = sender.queue.next_batch(destination, now)? else {
            return Ok(if sender.retire(destination, handle)? {
                Step::Done
            } else {
                Step::Next
            });
        };
        // The transaction's ID and entries are on disk before it goes out: a retry after a
        // crash sends the same ID, which the destination de-duplicates.
        self.store.durable().await?;
        let (pdus, edus) = sender.queue.contents(destination, &txn)?;
        let body = self.transaction_body(destination, &pdus, &edus)?;
        if body["pdus"].as_array().is_none_or(Vec::is_empty)
            && body["edus"].as_array().is_none_or(Vec::is_empty)
        {
            sender
                .queue
                .finish(destination, &txn, Outcome::Emptied, now_ms())?;
            return Ok(Step::Next);
        }
        let path = format!("/_matrix/federation/v1/send/{}", txn.txn_id);
        // The services are held while the request runs; a store that fails meanwhile is being
        // replaced, and must not wait for a slow destination to be let go.
        let failed = self.store.failed();
        let answer = tokio::select! {
            answer = self.federation.put(destination, &path, &body, Limit::Small) => answer,
            () = failed => {
                return Err(Error::internal("the database failed while a transaction was sent"));
            }
        };
        self.record(destination, &txn, answer, pdus.len(), edus.len())
    }

    /// The body of a transaction: the events as stored (an event no longer in the store is left
    /// out) and the EDUs as they stand now.
    fn transaction_body(
        &self,
        destination: &ServerName,
        pdus: &[PduEntry],
        edus: &[QueuedEdu],
    ) -> Result<Value> {
        let now = now_ms();
        let mut events = Vec::with_capacity(pdus.len());
        for entry in pdus {
            match self.rooms.pdu(&entry.event_id)? {
                Some(pdu) => events.push(batch::pdu_for_wire(serde_json::to_value(pdu.json())?)),
                None => {
                    tracing::warn!(%destination, event_id = %entry.event_id, "a queued event is gone; not sent")
                }
            }
        }
        let edus = edus.iter().map(|edu| edu.to_wire(now)).collect();
        Ok(batch::transaction_body(
            self.federation.server_name(),
            now,
            events,
            edus,
        ))
    }

    /// Records a transaction's answer: delivered (entries leave the queue), refused for good
    /// (entries dropped), or failed (backoff, the same transaction is retried).
    fn record(
        &self,
        destination: &ServerName,
        txn: &PendingTxn,
        answer: Result<Value>,
        pdus: usize,
        edus: usize,
    ) -> Result<Step> {
        let queue = &self.federation.sender.queue;
        match answer {
            Ok(answer) => {
                for (event_id, error) in batch::pdu_errors(&answer) {
                    tracing::warn!(%destination, %event_id, %error, "the destination refused an event");
                }
                queue.finish(destination, txn, Outcome::Delivered, now_ms())?;
                tracing::debug!(%destination, txn_id = %txn.txn_id, pdus, edus, "transaction delivered");
                Ok(Step::Next)
            }
            Err(e) if refused_for_good(&e) => {
                tracing::warn!(%destination, txn_id = %txn.txn_id, error = %e, "the destination refused the transaction; its entries are dropped");
                queue.finish(destination, txn, Outcome::Refused(&e.to_string()), now_ms())?;
                Ok(Step::Next)
            }
            Err(e) => {
                let state = queue.failed(destination, &e.to_string(), now_ms())?;
                tracing::info!(
                    %destination,
                    failures = state.failures,
                    retry_in_ms = state.backoff_until_ms.saturating_sub(now_ms()),
                    error = %e,
                    "sending a transaction failed"
                );
                Ok(Step::Wait(state.backoff_until_ms))
            }
        }
    }
}

/// Whether the destination refused the transaction itself, so that sending it again would get
/// the same answer: 400 (malformed, more than the limits) or 413 (too large). Every other
/// failure (unreachable, 401, 403, 5xx, …) is retried after the backoff.
fn refused_for_good(error: &Error) -> bool {
    matches!(
        error,
        Error::Remote {
            status: 400 | 413,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_malformed_or_oversized_transactions_are_given_up() {
        let remote = |status| Error::Remote {
            server: "b.example".into(),
            status,
            errcode: "M_UNKNOWN".into(),
            message: "no".into(),
        };
        assert!(refused_for_good(&remote(400)));
        assert!(refused_for_good(&remote(413)));
        for status in [401, 403, 404, 429, 500, 502, 503] {
            assert!(!refused_for_good(&remote(status)), "{status}");
        }
        assert!(!refused_for_good(&Error::Unreachable("down".into())));
    }
}
