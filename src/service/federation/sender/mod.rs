//! The outgoing side of federation: our events and EDUs, delivered to every other server that
//! must receive them, in order, once, and despite outages and restarts.
//!
//! - `fanout`: every event of one of our users is queued for the servers in its room; a stored
//!   progress over the stream, written in the same transaction as the queue entries, makes it
//!   survive crashes.
//! - `queue`: the durable per-destination queue (PDUs, EDUs, the transaction in flight, counts,
//!   failures and backoff), in the `destination_*` trees.
//! - `worker`: one task per destination with work, one transaction in flight at a time, at
//!   most 50 PDUs and 100 EDUs each; exponential backoff (`backoff`) on failure.
//! - `batch`: what one transaction holds, without I/O.
//! - `edus`: typing, public read receipts and presence of our users.
//! - `room_servers`: which servers have joined members at a given state.
//! - `admin`: the view of `roost federation destinations`.
//!
//! Nothing is queued or sent while `federation.enabled` is false.

mod admin;
mod backoff;
mod batch;
mod edus;
mod fanout;
mod queue;
mod room_servers;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, ServerName};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::Store;
use crate::util::now_ms;

pub use admin::{DestinationInfo, destinations_in};
pub use backoff::{INITIAL as BACKOFF_INITIAL, MAX as BACKOFF_MAX};
pub use batch::{MAX_EDUS, MAX_PDUS, QueuedEdu};
pub use edus::{presence_edu, receipt_edu, typing_edu};
pub use queue::{DestinationState, MAX_QUEUED_PDUS};

/// The federation sender.
pub struct Sender {
    enabled: bool,
    server_name: OwnedServerName,
    queue: queue::Queue,
    /// The running workers, one per destination with work.
    workers: Mutex<HashMap<OwnedServerName, Arc<worker::Handle>>>,
    /// Set when the sender starts (workers need the other services).
    services: OnceLock<Weak<Services>>,
    /// When each of our users typing in a room was last announced (ms since the epoch), so
    /// that renewals reach other servers before they time the typing out, and no more often.
    typing_announced: Mutex<HashMap<(OwnedRoomId, OwnedUserId), u64>>,
}

impl Sender {
    pub fn new(store: &Store, server_name: OwnedServerName, enabled: bool) -> Result<Self> {
        let queue = queue::Queue::new(store)?;
        if queue.progress()?.is_none() {
            // A new store, or one from before federation: history is not sent.
            queue.set_progress(crate::storage::stream::current(store)?)?;
        }
        Ok(Self {
            enabled,
            server_name,
            queue,
            workers: Mutex::new(HashMap::new()),
            services: OnceLock::new(),
            typing_announced: Mutex::new(HashMap::new()),
        })
    }

    /// Queues one EDU (`{"edu_type": …, "content": {…}}`) for each destination (ours left out)
    /// and wakes their workers. Typing notifications are not queued for a destination in
    /// backoff, nor presence for one with a long backlog; everything else always is. Does
    /// nothing when federation is disabled.
    pub fn queue_edu(&self, destinations: &[OwnedServerName], edu: &Value) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let edu = QueuedEdu::from_json(edu, now_ms())
            .ok_or_else(|| Error::internal("an EDU needs an edu_type and an object content"))?;
        let destinations: Vec<OwnedServerName> = destinations
            .iter()
            .filter(|d| **d != self.server_name)
            .cloned()
            .collect();
        for destination in self.queue.enqueue_edu(&destinations, &edu)? {
            self.kick(&destination);
        }
        Ok(())
    }

    /// `server` contacted us, so it is up: its backoff ends and its queue is retried at once.
    /// Called for every authenticated federation request; cheap when there is no backoff.
    pub fn wake(&self, server: &ServerName) {
        if !self.enabled || server == self.server_name {
            return;
        }
        let running = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server)
            .cloned();
        match running {
            Some(handle) => handle.wake(true),
            None => {
                if let Err(e) = self.queue.clear_backoff(server) {
                    tracing::warn!(%server, error = %e, "clearing a destination's backoff failed");
                }
            }
        }
    }

    /// Every destination ever queued for, with its queue, failures, backoff and last success.
    pub fn destinations(&self) -> Result<Vec<DestinationInfo>> {
        self.queue.infos()
    }

    /// One destination's stored state.
    pub fn destination(&self, server: &ServerName) -> Result<DestinationState> {
        self.queue.state(server)
    }

    /// Every event up to this stream position has been queued for its destinations.
    pub fn fanned_out_upto(&self) -> Result<u64> {
        Ok(self.queue.progress()?.unwrap_or(0))
    }

    /// Whether a worker is running for the destination.
    pub fn is_sending_to(&self, server: &ServerName) -> bool {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(server)
    }
}

impl Services {
    /// Starts the federation sender: a worker for each destination with queued work, the
    /// fan-out of new events, and the listeners of typing and presence changes. With federation
    /// disabled nothing starts, and the fan-out's progress moves to the present: what is
    /// appended while federation is off is never sent (a remote server still fetches it when a
    /// later event refers to it).
    pub fn spawn_federation_sender(self: &Arc<Self>) {
        let sender = &self.federation.sender;
        if !sender.enabled {
            if let Err(e) = sender.queue.set_progress(self.store.sequencer().upto()) {
                tracing::warn!(error = %e, "recording the federation fan-out's progress failed");
            }
            return;
        }
        if sender.services.set(Arc::downgrade(self)).is_err() {
            return;
        }
        self.listen_for_edus();
        match sender.queue.destinations() {
            Ok(destinations) => {
                for (destination, ..) in destinations {
                    match sender.queue.has_work(&destination) {
                        Ok(true) => sender.kick(&destination),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::warn!(%destination, error = %e, "reading a destination queue failed")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the destination queues failed"),
        }
        fanout::spawn(self);
    }
}
