//! The durable per-destination queue: PDUs and EDUs waiting for each remote server, the
//! transaction in flight, and each destination's counts, failures and backoff.
//!
//! - `destination_pos_pdu`: destination, stream position → room and event ID. Keyed by the
//!   event's stream position, so queueing the same event twice keeps one entry, and a
//!   destination gets its events in the order they were appended.
//! - `destination_id_edu`: destination, queue ID → [`QueuedEdu`].
//! - `destination_txn`: destination → [`PendingTxn`], the entries of the transaction in flight
//!   and its ID, written (and flushed) before it is sent: a retry, after a failure or a restart,
//!   sends the same ID with the same entries, which the receiver de-duplicates.
//! - `destination_state`: destination → [`DestinationState`].
//!
//! Every change of entries and counts is one transaction, so counts never drift from entries.

use std::collections::BTreeMap;

use ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, ServerName};
use serde::{Deserialize, Serialize};

use super::backoff;
use super::batch::{self, QueuedEdu};
use crate::error::{Error, Result};
use crate::storage::{Bytes, StorageError, Store, Tree, TxError, TxTree, abort, keys, trees};

/// Queued PDUs beyond which a destination's queue keeps only the latest event of each room.
pub const MAX_QUEUED_PDUS: u64 = 10_000;
/// EDUs of a destination in backoff beyond which presence updates are no longer queued for it.
pub const MAX_EPHEMERAL_BACKLOG: u64 = 1_000;
/// The longest error text kept with a destination.
const MAX_ERROR_CHARS: usize = 300;
/// Entries deleted per transaction when a queue is compacted.
const COMPACTION_CHUNK: usize = 1_000;
/// The key in the `meta` tree of the fan-out's progress: every event up to this stream position
/// has been queued for its destinations.
const FANOUT_KEY: &str = "federation_fanout_upto";

/// What is known about one destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DestinationState {
    pub queued_pdus: u64,
    pub queued_edus: u64,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No attempt before this time (ms since the epoch; 0: none).
    pub backoff_until_ms: u64,
    pub last_success_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub last_error: Option<String>,
    pub transactions_sent: u64,
    pub pdus_sent: u64,
    pub edus_sent: u64,
    /// Events given up by compaction or refused with the transaction that carried them.
    pub pdus_dropped: u64,
    /// EDUs given up: stale typing, presence beyond the backlog, a refused transaction.
    pub edus_dropped: u64,
    /// The queue is compacted when it holds more PDUs than this (0: [`MAX_QUEUED_PDUS`]).
    pub compact_above: u64,
}

impl DestinationState {
    /// Whether no attempt may be made at `now_ms`.
    pub fn in_backoff(&self, now_ms: u64) -> bool {
        self.backoff_until_ms > now_ms
    }

    /// Whether the PDU queue has grown past its bound.
    pub fn overflowing(&self) -> bool {
        self.queued_pdus > self.compact_above.max(MAX_QUEUED_PDUS)
    }
}

/// The transaction in flight to a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTxn {
    pub txn_id: String,
    /// Stream positions of its PDU entries.
    pub pdus: Vec<u64>,
    /// Queue IDs of its EDU entries.
    pub edus: Vec<u64>,
}

/// A queued event.
#[derive(Debug, Clone, PartialEq)]
pub struct PduEntry {
    pub position: u64,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
}

/// One event queued for one destination by the fan-out.
#[derive(Debug, Clone)]
pub struct NewPdu {
    pub destination: OwnedServerName,
    pub position: u64,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
}

/// How a transaction ended.
pub enum Outcome<'a> {
    /// The destination answered 200.
    Delivered,
    /// The destination refused the transaction itself (malformed, too large): sending it again
    /// would get the same answer, so its entries are dropped.
    Refused(&'a str),
    /// Nothing of it was left to send (compaction dropped its entries).
    Emptied,
}

/// How an EDU type may be given up for a destination that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Keep {
    /// Receipts, device lists, to-device messages: always queued.
    Always,
    /// Presence: not queued for a destination in backoff with a long backlog.
    UnlessBacklogged,
    /// Typing: worthless later, not queued for a destination in backoff.
    WhileReachable,
}

fn keep_policy(edu_type: &str) -> Keep {
    match edu_type {
        "m.typing" => Keep::WhileReachable,
        "m.presence" => Keep::UnlessBacklogged,
        _ => Keep::Always,
    }
}

/// The queue trees.
#[derive(Clone)]
pub struct Queue {
    store: Store,
    pdus: Tree,
    edus: Tree,
    states: Tree,
    txns: Tree,
    meta: Tree,
}

fn entry_key(destination: &ServerName, id: u64) -> Vec<u8> {
    let mut key = keys::prefix(destination.as_str());
    key.extend_from_slice(&keys::u64_be(id));
    key
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(StorageError::Corrupt(format!("federation queue: {what}")))
}

/// The queue ID at the end of an entry key.
fn entry_id(key: &[u8]) -> Result<u64> {
    key.len()
        .checked_sub(8)
        .and_then(|at| keys::read_u64_be(&key[at..]))
        .ok_or_else(|| corrupt("short entry key"))
}

fn parse_pdu_value(position: u64, value: &[u8]) -> Result<PduEntry> {
    let at = value
        .iter()
        .position(|b| *b == keys::SEP)
        .ok_or_else(|| corrupt("PDU entry without a separator"))?;
    let text = |bytes: &[u8]| {
        std::str::from_utf8(bytes)
            .map_err(corrupt)
            .map(str::to_owned)
    };
    Ok(PduEntry {
        position,
        room_id: OwnedRoomId::try_from(text(&value[..at])?).map_err(corrupt)?,
        event_id: OwnedEventId::try_from(text(&value[at + 1..])?).map_err(corrupt)?,
    })
}

fn read_state(
    t: &TxTree<'_>,
    destination: &ServerName,
) -> std::result::Result<DestinationState, TxError<Error>> {
    match t.get(destination.as_bytes())? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| abort(corrupt(e))),
        None => Ok(DestinationState::default()),
    }
}

fn write_state(
    t: &TxTree<'_>,
    destination: &ServerName,
    state: &DestinationState,
) -> std::result::Result<(), TxError<Error>> {
    let bytes = serde_json::to_vec(state).map_err(|e| abort(Error::internal(e)))?;
    t.put(destination.as_bytes(), bytes)
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

impl Queue {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            pdus: store.tree(trees::DESTINATION_POS_PDU)?,
            edus: store.tree(trees::DESTINATION_ID_EDU)?,
            states: store.tree(trees::DESTINATION_STATE)?,
            txns: store.tree(trees::DESTINATION_TXN)?,
            meta: store.tree(trees::META)?,
        })
    }

    /// The fan-out's stored progress, if it ever ran.
    pub fn progress(&self) -> Result<Option<u64>> {
        Ok(self
            .meta
            .get(FANOUT_KEY)?
            .and_then(|bytes| keys::read_u64_be(&bytes)))
    }

    /// Stores the fan-out's progress without queueing anything.
    pub fn set_progress(&self, position: u64) -> Result<()> {
        self.meta.put(FANOUT_KEY, keys::u64_be(position).to_vec())?;
        Ok(())
    }

    /// A destination's state (the default for one never queued for).
    pub fn state(&self, destination: &ServerName) -> Result<DestinationState> {
        match self.states.get(destination.as_bytes())? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(corrupt),
            None => Ok(DestinationState::default()),
        }
    }

    /// Every destination ever queued for, with its state and whether a transaction is in
    /// flight.
    pub fn destinations(&self) -> Result<Vec<(OwnedServerName, DestinationState, bool)>> {
        let mut out = Vec::new();
        for item in self.states.iter() {
            let (key, value) = item?;
            let name = std::str::from_utf8(&key)
                .ok()
                .and_then(|name| OwnedServerName::try_from(name).ok())
                .ok_or_else(|| corrupt("bad destination key"))?;
            let state = serde_json::from_slice(&value).map_err(corrupt)?;
            let in_flight = self.txns.contains(&key)?;
            out.push((name, state, in_flight));
        }
        Ok(out)
    }

    /// Whether anything waits for the destination.
    pub fn has_work(&self, destination: &ServerName) -> Result<bool> {
        let prefix = keys::prefix(destination.as_str());
        Ok(self.txns.contains(destination.as_bytes())?
            || self.pdus.scan_prefix(&prefix).next().transpose()?.is_some()
            || self.edus.scan_prefix(&prefix).next().transpose()?.is_some())
    }

    /// Queues events for their destinations and stores the fan-out's progress (if given), in one
    /// transaction: after a crash, either both are there or the fan-out queues them again.
    /// Returns the destinations queued for, with their new state.
    pub fn enqueue_pdus(
        &self,
        entries: &[NewPdu],
        progress: Option<u64>,
    ) -> Result<Vec<(OwnedServerName, DestinationState)>> {
        let trees = [&self.pdus, &self.states, &self.meta];
        let touched = self.store.transact(&trees, |t| {
            let mut touched: BTreeMap<&ServerName, DestinationState> = BTreeMap::new();
            for entry in entries {
                let key = entry_key(&entry.destination, entry.position);
                if t[0].get(&key)?.is_some() {
                    continue;
                }
                t[0].put(
                    &key,
                    keys::pair(entry.room_id.as_str(), entry.event_id.as_str()),
                )?;
                let state = match touched.entry(&entry.destination) {
                    std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(read_state(&t[1], &entry.destination)?)
                    }
                };
                state.queued_pdus += 1;
            }
            for (destination, state) in &touched {
                write_state(&t[1], destination, state)?;
            }
            if let Some(progress) = progress {
                t[2].put(FANOUT_KEY, keys::u64_be(progress).to_vec())?;
            }
            Ok(touched
                .into_iter()
                .map(|(d, s)| (d.to_owned(), s))
                .collect::<Vec<_>>())
        })?;
        Ok(touched)
    }

    /// Queues one EDU for each destination, except where its type is given up for a destination
    /// that keeps failing (see [`Keep`]). Returns the destinations it was queued for.
    pub fn enqueue_edu(
        &self,
        destinations: &[OwnedServerName],
        edu: &QueuedEdu,
    ) -> Result<Vec<OwnedServerName>> {
        if destinations.is_empty() {
            return Ok(Vec::new());
        }
        let id = self.store.generate_id()?;
        let bytes = serde_json::to_vec(edu)?;
        let keep = keep_policy(&edu.edu_type);
        let trees = [&self.edus, &self.states];
        let queued = self.store.transact(&trees, |t| {
            let mut queued = Vec::new();
            for destination in destinations {
                let mut state = read_state(&t[1], destination)?;
                let failing = state.in_backoff(edu.queued_ms);
                let give_up = match keep {
                    Keep::Always => false,
                    Keep::WhileReachable => failing,
                    Keep::UnlessBacklogged => failing && state.queued_edus >= MAX_EPHEMERAL_BACKLOG,
                };
                if give_up {
                    state.edus_dropped += 1;
                } else {
                    t[0].put(entry_key(destination, id), bytes.clone())?;
                    state.queued_edus += 1;
                    queued.push(destination.clone());
                }
                write_state(&t[1], destination, &state)?;
            }
            Ok(queued)
        })?;
        Ok(queued)
    }

    /// The transaction to send next: the one in flight if there is one (a retry sends it
    /// again, same ID and entries), else a new one of the oldest entries, stored (and flushed
    /// by the caller) before it is sent. `None` when nothing waits. Stale EDUs met on the way
    /// are dropped.
    pub fn next_batch(&self, destination: &ServerName, now_ms: u64) -> Result<Option<PendingTxn>> {
        if let Some(bytes) = self.txns.get(destination.as_bytes())? {
            return serde_json::from_slice(&bytes).map(Some).map_err(corrupt);
        }
        let prefix = keys::prefix(destination.as_str());
        let pdus = self
            .pdus
            .scan_prefix(&prefix)
            .take(batch::MAX_PDUS)
            .map(|item| entry_id(&item?.0))
            .collect::<Result<Vec<u64>>>()?;
        let mut candidates = Vec::new();
        for item in self
            .edus
            .scan_prefix(&prefix)
            .take(batch::MAX_EDUS + batch::MAX_EDUS_SCANNED)
        {
            let (key, value) = item?;
            // An entry that does not parse is dropped like a stale one.
            let stale =
                serde_json::from_slice::<QueuedEdu>(&value).map_or(true, |edu| edu.stale(now_ms));
            candidates.push((entry_id(&key)?, value.len(), stale));
        }
        let pick = batch::pick_edus(candidates);
        if !pick.drop.is_empty() {
            self.drop_edus(destination, &pick.drop)?;
        }
        if pdus.is_empty() && pick.send.is_empty() {
            return Ok(None);
        }
        let txn = PendingTxn {
            txn_id: batch::txn_id(now_ms, self.store.generate_id()?),
            pdus,
            edus: pick.send,
        };
        self.txns
            .put(destination.as_bytes(), serde_json::to_vec(&txn)?)?;
        Ok(Some(txn))
    }

    /// The entries of a transaction that are still queued (compaction may have dropped some).
    pub fn contents(
        &self,
        destination: &ServerName,
        txn: &PendingTxn,
    ) -> Result<(Vec<PduEntry>, Vec<QueuedEdu>)> {
        let mut pdus = Vec::with_capacity(txn.pdus.len());
        for position in &txn.pdus {
            if let Some(value) = self.pdus.get(entry_key(destination, *position))? {
                pdus.push(parse_pdu_value(*position, &value)?);
            }
        }
        let mut edus = Vec::with_capacity(txn.edus.len());
        for id in &txn.edus {
            if let Some(value) = self.edus.get(entry_key(destination, *id))? {
                match serde_json::from_slice(&value) {
                    Ok(edu) => edus.push(edu),
                    Err(e) => {
                        tracing::warn!(%destination, error = %e, "dropping an unreadable queued EDU")
                    }
                }
            }
        }
        Ok((pdus, edus))
    }

    /// Ends the transaction in flight: its entries leave the queue and the destination's state
    /// records the outcome, in one transaction.
    pub fn finish(
        &self,
        destination: &ServerName,
        txn: &PendingTxn,
        outcome: Outcome<'_>,
        now_ms: u64,
    ) -> Result<DestinationState> {
        let trees = [&self.pdus, &self.edus, &self.states, &self.txns];
        let state = self.store.transact(&trees, |t| {
            let mut state = read_state(&t[2], destination)?;
            let removed_pdus = remove_entries(&t[0], destination, &txn.pdus)?;
            let removed_edus = remove_entries(&t[1], destination, &txn.edus)?;
            state.queued_pdus = state.queued_pdus.saturating_sub(removed_pdus);
            state.queued_edus = state.queued_edus.saturating_sub(removed_edus);
            if !matches!(outcome, Outcome::Emptied) {
                // The destination answered: it is up.
                state.failures = 0;
                state.backoff_until_ms = 0;
            }
            match outcome {
                Outcome::Delivered => {
                    state.last_success_ms = Some(now_ms);
                    state.transactions_sent += 1;
                    state.pdus_sent += removed_pdus;
                    state.edus_sent += removed_edus;
                }
                Outcome::Refused(error) => {
                    state.last_failure_ms = Some(now_ms);
                    state.last_error = Some(shorten(error));
                    state.pdus_dropped += removed_pdus;
                    state.edus_dropped += removed_edus;
                }
                Outcome::Emptied => {}
            }
            write_state(&t[2], destination, &state)?;
            t[3].delete(destination.as_bytes())?;
            Ok(state)
        })?;
        Ok(state)
    }

    /// Records a failed attempt: the transaction stays in flight, the next attempt waits for
    /// the backoff.
    pub fn failed(
        &self,
        destination: &ServerName,
        error: &str,
        now_ms: u64,
    ) -> Result<DestinationState> {
        let state = self.store.transact(&[&self.states], |t| {
            let mut state = read_state(&t[0], destination)?;
            state.failures = state.failures.saturating_add(1);
            state.backoff_until_ms = backoff::next_attempt_ms(now_ms, state.failures);
            state.last_failure_ms = Some(now_ms);
            state.last_error = Some(shorten(error));
            write_state(&t[0], destination, &state)?;
            Ok(state)
        })?;
        Ok(state)
    }

    /// Ends a destination's backoff (it contacted us, so it is up). Says whether it had one.
    pub fn clear_backoff(&self, destination: &ServerName) -> Result<bool> {
        // Called on every request a server sends us: a plain read decides in the usual case.
        let current = self.state(destination)?;
        if current.failures == 0 && current.backoff_until_ms == 0 {
            return Ok(false);
        }
        let cleared = self.store.transact(&[&self.states], |t| {
            let mut state = read_state(&t[0], destination)?;
            if state.failures == 0 && state.backoff_until_ms == 0 {
                return Ok(false);
            }
            state.failures = 0;
            state.backoff_until_ms = 0;
            write_state(&t[0], destination, &state)?;
            Ok(true)
        })?;
        Ok(cleared)
    }

    /// Keeps only the latest queued event of each room for a destination whose queue grew past
    /// its bound; the next bound is twice what remains (at least [`MAX_QUEUED_PDUS`]), so a
    /// destination sharing very many rooms is not compacted on every event. Returns how many
    /// events were given up.
    pub fn compact(&self, destination: &ServerName) -> Result<u64> {
        let prefix = keys::prefix(destination.as_str());
        let mut entries = Vec::new();
        for item in self.pdus.scan_prefix(&prefix) {
            let (key, value) = item?;
            let entry = parse_pdu_value(entry_id(&key)?, &value)?;
            entries.push((entry.position, entry.room_id));
        }
        let drop = batch::superseded(&entries);
        let mut removed = 0;
        for chunk in drop.chunks(COMPACTION_CHUNK) {
            removed += self.drop_entries(&self.pdus, destination, chunk, true)?;
        }
        let trees = [&self.states];
        self.store.transact(&trees, |t| {
            let mut state = read_state(&t[0], destination)?;
            state.compact_above = MAX_QUEUED_PDUS.max(state.queued_pdus.saturating_mul(2));
            write_state(&t[0], destination, &state)
        })?;
        Ok(removed)
    }

    fn drop_edus(&self, destination: &ServerName, ids: &[u64]) -> Result<u64> {
        self.drop_entries(&self.edus, destination, ids, false)
    }

    /// Removes entries of one tree and counts them as dropped, in one transaction.
    fn drop_entries(
        &self,
        tree: &Tree,
        destination: &ServerName,
        ids: &[u64],
        pdus: bool,
    ) -> Result<u64> {
        let trees = [tree, &self.states];
        let removed = self.store.transact(&trees, |t| {
            let removed = remove_entries(&t[0], destination, ids)?;
            let mut state = read_state(&t[1], destination)?;
            if pdus {
                state.queued_pdus = state.queued_pdus.saturating_sub(removed);
                state.pdus_dropped += removed;
            } else {
                state.queued_edus = state.queued_edus.saturating_sub(removed);
                state.edus_dropped += removed;
            }
            write_state(&t[1], destination, &state)?;
            Ok(removed)
        })?;
        Ok(removed)
    }
}

/// Deletes the entries that are still there; how many were.
fn remove_entries(
    tree: &TxTree<'_>,
    destination: &ServerName,
    ids: &[u64],
) -> std::result::Result<u64, TxError<Error>> {
    let mut removed = 0;
    for id in ids {
        let key = entry_key(destination, *id);
        let present: Option<Bytes> = tree.get(&key)?;
        if present.is_some() {
            tree.delete(&key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
