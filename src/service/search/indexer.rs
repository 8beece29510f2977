//! The indexer: a thread that keeps the index up to date with the timeline.
//!
//! It waits on the queue the room service fills, takes everything queued and indexes it. A
//! commit (then a reload of the reader, and the progress stored) follows a drained batch when a
//! search is waiting for it, when [`COMMIT_WINDOW`] has passed since the first change not yet
//! committed, or when [`MAX_UNCOMMITTED`] changes wait. A commit has a fixed cost (a segment of
//! its own, written and synced, merged later) of a few milliseconds of CPU whether it holds one
//! message or a thousand, so committing every batch of a busy server would cost more than the
//! indexing itself; searches do not wait for the window, they ask for a commit. With nothing to
//! commit the thread sleeps on the queue alone (no timer).
//!
//! At start it first indexes, from the timeline, what it had not reached before the last stop.
//! When the index fails (a full disk, say), the writer is dropped and made again after a growing
//! pause, and what was lost is indexed again from the timeline; a document indexed twice
//! replaces itself.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{IndexMessage, SearchIndex, schema};
use crate::error::{Error, Result};
use crate::service::Services;
use ruma::EventId;
use serde_json::Value;
use tantivy::indexer::IndexWriterOptions;
use tantivy::{IndexWriter, TantivyDocument, Term};

/// Messages taken from the queue at once.
const BATCH: usize = 1024;
/// The longest a change waits for its commit when no search asks for it.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(250);
/// A commit follows at the latest when this many changes wait.
const MAX_UNCOMMITTED: usize = 10_000;
/// Timeline entries read at once while catching up.
const CHUNK: usize = 1000;
/// While catching up, a commit after this many changes (so that a crash loses little work).
const COMMIT_EVERY: usize = 20_000;
/// The pause before the first new start of a failed indexer; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(60);

fn engine_error(e: tantivy::TantivyError) -> Error {
    Error::internal(format!("search index: {e}"))
}

/// How long the rebuild waits for a writer of a server that just stopped to let go of the index.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// A writer with one indexing thread and one merging thread.
fn writer(index: &SearchIndex, budget: usize) -> tantivy::Result<IndexWriter> {
    let options = IndexWriterOptions::builder()
        .memory_budget_per_thread(budget)
        .num_worker_threads(1)
        .num_merge_threads(1)
        .build();
    index.index.writer_with_options(options)
}

fn open_writer(index: &SearchIndex, budget: usize) -> Result<IndexWriter> {
    writer(index, budget).map_err(engine_error)
}

/// [`open_writer`], waiting up to [`LOCK_WAIT`] for another writer to let go of the index.
fn open_writer_waiting(index: &SearchIndex, budget: usize) -> Result<IndexWriter> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match writer(index, budget) {
            Err(tantivy::TantivyError::LockFailure(..)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other.map_err(engine_error),
        }
    }
}

/// What indexing one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Unchanged,
    /// A document was added.
    Added,
    /// A redaction deleted its target's document.
    Deleted,
}

fn commit(index: &SearchIndex, writer: &mut IndexWriter) -> Result<()> {
    writer.commit().map_err(engine_error)?;
    index.reader.reload().map_err(engine_error)
}

impl Services {
    /// Starts the indexer thread (when search is enabled).
    pub fn spawn_search_indexer(self: &Arc<Self>) {
        let Ok(index) = self.search.index().cloned() else {
            return;
        };
        let Some(receiver) = self.search.take_receiver() else {
            return;
        };
        let services = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("search-indexer".into())
            .spawn(move || run(&services, &index, receiver));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the search indexer");
        }
    }

    /// Indexes one event (or, for a redaction, deletes the document of its target); `upsert`
    /// first deletes a document the event may already have.
    fn index_event(
        &self,
        index: &SearchIndex,
        writer: &IndexWriter,
        event_id: &EventId,
        position: u64,
        upsert: bool,
    ) -> Result<Change> {
        let fields = &index.fields;
        let Some(pdu) = self.rooms.pdu(event_id)? else {
            return Ok(Change::Unchanged);
        };
        if let Some(target) = pdu.redacts() {
            writer.delete_term(Term::from_field_text(fields.event_id, target.as_str()));
            return Ok(Change::Deleted);
        }
        if !schema::concerns_index(pdu.kind())
            || pdu.rejected()
            || self.rooms.redacted_by(event_id)?.is_some()
        {
            return Ok(Change::Unchanged);
        }
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some((key, text)) = schema::searchable_text(pdu.kind(), pdu.state_key(), &content)
        else {
            return Ok(Change::Unchanged);
        };
        if upsert {
            writer.delete_term(Term::from_field_text(fields.event_id, event_id.as_str()));
        }
        let mut doc = TantivyDocument::default();
        doc.add_text(fields.event_id, event_id.as_str());
        doc.add_text(fields.room_id, pdu.room_id().as_str());
        doc.add_text(fields.sender, pdu.sender().as_str());
        doc.add_text(fields.kind, pdu.kind().to_string());
        doc.add_u64(fields.position, position);
        doc.add_text(fields.text(key), text);
        writer.add_document(doc).map_err(engine_error)?;
        Ok(Change::Added)
    }

    /// Indexes the events of `room` after `from` up to `upto`; returns how many documents were
    /// added and how many deleted.
    fn index_room_range(
        &self,
        index: &SearchIndex,
        writer: &IndexWriter,
        room: &ruma::RoomId,
        from: u64,
        upto: u64,
        upsert: bool,
    ) -> Result<(usize, usize)> {
        let (mut added, mut deleted) = (0, 0);
        let mut after = from;
        loop {
            let entries =
                self.rooms
                    .timeline_range(room, after, upto.saturating_add(1), false, CHUNK)?;
            for (position, event_id) in &entries {
                match self.index_event(index, writer, event_id, *position, upsert)? {
                    Change::Added => added += 1,
                    Change::Deleted => deleted += 1,
                    Change::Unchanged => {}
                }
                after = *position;
            }
            if entries.len() < CHUNK {
                return Ok((added, deleted));
            }
        }
    }

    /// Rebuilds the index from the store (`roost search rebuild`, with the server stopped):
    /// every document is replaced in one commit. Returns how many events were indexed.
    pub fn rebuild_search_index(&self) -> Result<usize> {
        let index = self.search.index()?.clone();
        let mut writer = open_writer_waiting(&index, self.search.writer_budget)?;
        writer.delete_all_documents().map_err(engine_error)?;
        let upto = self.store.sequencer().upto();
        let mut indexed = 0;
        for room in self.rooms.room_ids()? {
            indexed += self
                .index_room_range(&index, &writer, &room, 0, upto, false)?
                .0;
        }
        commit(&index, &mut writer)?;
        writer.wait_merging_threads().map_err(engine_error)?;
        self.search.set_progress(upto)?;
        Ok(indexed)
    }
}

/// The indexer thread: serves the queue, starting again after a failure, until the services
/// are gone.
fn run(services: &Weak<Services>, index: &SearchIndex, receiver: Receiver<IndexMessage>) {
    let mut delay = RETRY_FIRST;
    loop {
        match serve(services, index, &receiver, &mut delay) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "the search indexer failed; starting it again"
                );
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MAX);
                if services.strong_count() == 0 {
                    return;
                }
            }
        }
    }
}

/// What the indexer holds between commits.
struct Pending {
    /// Everything at or before this position is committed (and published).
    committed: u64,
    /// Everything at or before this position is indexed.
    indexed: u64,
    /// Changes not committed yet, and when the first of them was made.
    changes: usize,
    since: Option<Instant>,
    /// A search waits for a position that is indexed but not committed.
    wanted: u64,
}

impl Pending {
    fn commit_due(&self) -> bool {
        self.changes > 0
            && (self.wanted > self.committed
                || self.changes >= MAX_UNCOMMITTED
                || self.since.is_some_and(|s| s.elapsed() >= COMMIT_WINDOW))
    }
}

impl Services {
    /// Indexes one drained batch of the queue.
    fn index_messages(
        &self,
        index: &SearchIndex,
        writer: &IndexWriter,
        batch: &[IndexMessage],
        pending: &mut Pending,
    ) -> Result<()> {
        for message in batch {
            match message {
                IndexMessage::Commit(position) => pending.wanted = pending.wanted.max(*position),
                IndexMessage::Event(job) if job.position > pending.indexed => {
                    let change =
                        self.index_event(index, writer, &job.event_id, job.position, false)?;
                    if change != Change::Unchanged {
                        pending.changes += 1;
                        pending.since.get_or_insert_with(Instant::now);
                    }
                    pending.indexed = job.position;
                }
                // Indexed while catching up.
                IndexMessage::Event(_) => {}
            }
        }
        Ok(())
    }

    /// Commits what is due (or, with no change waiting, publishes the progress).
    fn settle(
        &self,
        index: &SearchIndex,
        writer: &mut IndexWriter,
        pending: &mut Pending,
    ) -> Result<()> {
        if pending.commit_due() {
            commit(index, writer)?;
            pending.changes = 0;
            pending.since = None;
        }
        if pending.changes == 0 && pending.indexed > pending.committed {
            self.search.set_progress(pending.indexed)?;
            pending.committed = pending.indexed;
        }
        Ok(())
    }
}

/// Catches up, then indexes what is queued. `Ok` when the services are gone.
fn serve(
    services: &Weak<Services>,
    index: &SearchIndex,
    receiver: &Receiver<IndexMessage>,
    delay: &mut Duration,
) -> Result<()> {
    let budget = match services.upgrade() {
        Some(s) => s.search.writer_budget,
        None => return Ok(()),
    };
    // After a restart of the services in this process, the previous writer may not have let go
    // of the index yet: that is a failure like any other, and the next attempt follows shortly.
    let mut writer = open_writer(index, budget)?;
    let Some(progress) = catch_up(services, index, &mut writer)? else {
        return Ok(());
    };
    *delay = RETRY_FIRST;
    let mut pending = Pending {
        committed: progress,
        indexed: progress,
        changes: 0,
        since: None,
        wanted: 0,
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // With changes waiting, no longer than until their commit is due.
        let first = match pending.since {
            None => receiver.recv().ok(),
            Some(since) => {
                match receiver.recv_timeout(COMMIT_WINDOW.saturating_sub(since.elapsed())) {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
        };
        let disconnected = first.is_none() && pending.since.is_none();
        if disconnected {
            return Ok(());
        }
        batch.extend(first);
        while batch.len() < BATCH
            && let Ok(message) = receiver.try_recv()
        {
            batch.push(message);
        }
        let Some(services) = services.upgrade() else {
            return Ok(());
        };
        // A panic costs the uncommitted changes and the writer, as an error does; the events are
        // indexed again from the timeline.
        let indexed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            services.index_messages(index, &writer, &batch, &mut pending)?;
            services.settle(index, &mut writer, &mut pending)
        }));
        batch.clear();
        match indexed {
            Ok(result) => result?,
            Err(_) => return Err(Error::internal("indexing a batch panicked")),
        }
    }
}

/// Indexes the events appended after the stored progress; returns the position indexed up to
/// (`None` when the services are gone).
fn catch_up(
    services: &Weak<Services>,
    index: &SearchIndex,
    writer: &mut IndexWriter,
) -> Result<Option<u64>> {
    let Some(first) = services.upgrade() else {
        return Ok(None);
    };
    let from = first.search.stored_progress()?;
    let upto = first.store.sequencer().upto();
    if from >= upto {
        return Ok(Some(from));
    }
    let rooms = first.rooms.room_ids()?;
    drop(first);
    let started = std::time::Instant::now();
    let (mut pending, mut changed) = (0, 0);
    for room in rooms {
        // The services are not held between rooms, so a reopen of the store is not kept waiting
        // for a long catch-up.
        let Some(services) = services.upgrade() else {
            return Ok(None);
        };
        let (added, deleted) = services.index_room_range(index, writer, &room, from, upto, true)?;
        pending += added + deleted;
        changed += added + deleted;
        if pending >= COMMIT_EVERY {
            commit(index, writer)?;
            pending = 0;
        }
    }
    if pending > 0 {
        commit(index, writer)?;
    }
    let Some(services) = services.upgrade() else {
        return Ok(None);
    };
    services.search.set_progress(upto)?;
    tracing::info!(
        events = changed,
        from,
        upto,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "search index caught up"
    );
    Ok(Some(upto))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_come_when_asked_for_when_the_window_ends_or_when_much_waits() {
        let mut pending = Pending {
            committed: 10,
            indexed: 12,
            changes: 2,
            since: Some(Instant::now()),
            wanted: 0,
        };
        assert!(!pending.commit_due());
        // A search waits for what is indexed.
        pending.wanted = 12;
        assert!(pending.commit_due());
        pending.wanted = 10;
        assert!(!pending.commit_due());
        pending.changes = MAX_UNCOMMITTED;
        assert!(pending.commit_due());
        pending.changes = 1;
        pending.since = Instant::now().checked_sub(COMMIT_WINDOW);
        assert!(pending.commit_due());
        // Nothing to commit: nothing is due, whoever asks.
        pending.changes = 0;
        pending.wanted = 100;
        assert!(!pending.commit_due());
    }
}
