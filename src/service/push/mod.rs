//! Push rules, notifications and pushers.
//!
//! Every event appended to a room is queued (in stream order) for the **evaluator**, a task
//! that runs the push rules of each local member of the room (and of an invite's target) with
//! ruma's push-rule evaluation. An event whose actions notify is recorded for that user as a
//! notification: unread counts in `/sync` count these records after the user's read receipts,
//! `GET /notifications` lists them, and each of the user's pushers gets a push queued for its
//! gateway (see [`gateway`]). A redaction removes the records of the event it redacts.
//!
//! `/sync` does not wait for the evaluator: for the events the evaluator has not reached yet it
//! runs the syncing user's rules itself (nothing is written), so that an event and the counts it
//! changes arrive in the same response. `GET /notifications` waits (on a watch channel, never a
//! timer) until the evaluator has caught up. The evaluator's progress is stored; after a restart
//! it evaluates what it had not reached.

pub mod evaluate;
pub mod gateway;
pub mod notifications;
pub mod pushers;
pub mod rules;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ruma::{OwnedEventId, OwnedRoomId};
use tokio::sync::{Notify, mpsc, watch};

use crate::error::Result;
use crate::storage::{Store, Tree, trees};

/// One appended event for the evaluator.
#[derive(Debug)]
pub struct EvalJob {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub position: u64,
}

/// The sending end of the evaluator's queue, held by the room service.
#[derive(Clone)]
pub struct EvalQueue {
    sender: mpsc::UnboundedSender<EvalJob>,
    last_queued: Arc<AtomicU64>,
}

impl EvalQueue {
    /// Queues an event; called in stream order (under the stream sequencer).
    pub fn push(&self, room_id: OwnedRoomId, event_id: OwnedEventId, position: u64) {
        self.last_queued.fetch_max(position, Ordering::SeqCst);
        // A closed queue means the services are being replaced; the new evaluator catches up
        // from its stored progress.
        let _ = self.sender.send(EvalJob {
            room_id,
            event_id,
            position,
        });
    }
}

/// State of the push machinery.
pub struct Push {
    pub(crate) rules: rules::RulesCache,
    queue: EvalQueue,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<EvalJob>>>,
    /// Every event at or before this position has been evaluated.
    evaluated: watch::Sender<u64>,
    /// user, position → notification.
    pub(crate) notifications: Tree,
    /// user, room, position → highlight flag and thread.
    pub(crate) unread: Tree,
    pub(crate) pushers: Tree,
    pub(crate) push_queue: Tree,
    pub(crate) store_meta: Tree,
    /// Wakes the gateway sender when pushes were queued.
    pub(crate) pushes_queued: Arc<Notify>,
    pub(crate) backoff: gateway::Backoff,
    /// The most recently prepared events (see [`evaluate::EventParts`]), newest last.
    prepared: std::sync::Mutex<std::collections::VecDeque<Arc<evaluate::EventParts>>>,
}

/// Prepared events kept: the evaluator and the long polls woken by one message read the same
/// few.
const PREPARED_EVENTS: usize = 32;

/// The key in the `meta` tree of the evaluator's stored progress.
const EVALUATED_KEY: &str = "push_evaluated_upto";
/// How long `/sync` waits for the evaluator at most before answering anyway.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Push {
    pub fn new(store: &Store) -> Result<Self> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let store_meta = store.tree(trees::META)?;
        let current = crate::storage::stream::current(store)?;
        let evaluated_upto = match store_meta.get(EVALUATED_KEY)? {
            Some(bytes) => crate::storage::keys::read_u64_be(&bytes).unwrap_or(0),
            None => {
                // A new store, or one from before push rules: history is not evaluated.
                store_meta.put(
                    EVALUATED_KEY,
                    crate::storage::keys::u64_be(current).to_vec(),
                )?;
                current
            }
        };
        Ok(Self {
            rules: rules::RulesCache::default(),
            queue: EvalQueue {
                sender,
                last_queued: Arc::new(AtomicU64::new(current)),
            },
            receiver: std::sync::Mutex::new(Some(receiver)),
            // Nothing counts as evaluated until the evaluator caught up after a restart.
            evaluated: watch::Sender::new(evaluated_upto),
            notifications: store.tree(trees::USERID_STREAMPOS_NOTIFICATION)?,
            unread: store.tree(trees::USERID_ROOMID_STREAMPOS_NOTIFY)?,
            pushers: store.tree(trees::USERID_APPID_PUSHKEY_PUSHER)?,
            push_queue: store.tree(trees::PUSHER_STREAMPOS_PUSH)?,
            store_meta,
            pushes_queued: Arc::new(Notify::new()),
            backoff: gateway::Backoff::default(),
            prepared: Default::default(),
        })
    }

    /// The prepared parts of a recent event, if still kept.
    pub(crate) fn prepared(&self, event_id: &ruma::EventId) -> Option<Arc<evaluate::EventParts>> {
        let prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        prepared
            .iter()
            .rev()
            .find(|p| p.pdu.event_id() == event_id)
            .cloned()
    }

    pub(crate) fn remember_prepared(&self, parts: Arc<evaluate::EventParts>) {
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared.len() == PREPARED_EVENTS {
            prepared.pop_front();
        }
        prepared.push_back(parts);
    }

    /// The handle the room service queues appended events with.
    pub fn queue(&self) -> EvalQueue {
        self.queue.clone()
    }

    /// The stored progress of the evaluator.
    fn stored_progress(&self) -> Result<u64> {
        Ok(match self.store_meta.get(EVALUATED_KEY)? {
            Some(bytes) => crate::storage::keys::read_u64_be(&bytes).unwrap_or(0),
            None => 0,
        })
    }

    fn set_progress(&self, position: u64) -> Result<()> {
        self.store_progress(position)?;
        self.advance(position);
        Ok(())
    }

    /// Stores the evaluator's progress (done once per batch of events).
    fn store_progress(&self, position: u64) -> Result<()> {
        self.store_meta.put(
            EVALUATED_KEY,
            crate::storage::keys::u64_be(position).to_vec(),
        )?;
        Ok(())
    }

    /// Publishes the evaluator's progress (after each event).
    fn advance(&self, position: u64) {
        self.evaluated.send_if_modified(|upto| {
            let moved = position > *upto;
            *upto = (*upto).max(position);
            moved
        });
    }

    /// Every event at or before this position has been evaluated (and its records written).
    pub fn evaluated_upto(&self) -> u64 {
        *self.evaluated.borrow()
    }

    /// How far up to `position` the records are complete: `position` itself when every event
    /// queued up to it is evaluated, else the evaluator's progress. Readers that must not skip
    /// a record (the chat stream) stop there and read the rest later.
    pub fn evaluated_through(&self, position: u64) -> u64 {
        let target = position.min(self.queue.last_queued.load(Ordering::SeqCst));
        let evaluated = self.evaluated_upto();
        if evaluated >= target {
            position
        } else {
            evaluated
        }
    }

    /// Waits until every event up to `position` that has been queued is evaluated (at most
    /// [`SYNC_WAIT`]).
    pub async fn wait_evaluated(&self, position: u64) {
        let target = position.min(self.queue.last_queued.load(Ordering::SeqCst));
        let mut receiver = self.evaluated.subscribe();
        if *receiver.borrow() >= target {
            return;
        }
        let waited =
            tokio::time::timeout(SYNC_WAIT, receiver.wait_for(|upto| *upto >= target)).await;
        if waited.is_err() {
            tracing::warn!(target, "push evaluation is behind; answering without it");
        }
    }
}
