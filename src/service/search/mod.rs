//! Server-side full-text search (`POST /search`), backed by a tantivy index in
//! `data_dir/search`.
//!
//! Every appended event that concerns the index (messages, room names and topics, redactions) is
//! queued in stream order, as for the push evaluator, for the **indexer** (see [`indexer`]): a
//! thread of its own that waits on the queue, drains what is there and indexes it. It commits
//! (and reloads the reader, so searches see what was committed) as soon as a search waits for
//! what it indexed, and otherwise at most [`indexer::COMMIT_WINDOW`] after the first change not
//! committed yet: a commit costs the same for one message as for a thousand. Its progress is
//! stored (`search_indexed_upto` in the `meta` tree); after a restart it indexes from the
//! timeline what it had not reached. A redaction deletes the document of the event it redacts.
//!
//! A search (see [`run`]) looks only in the rooms the user has a membership in, and checks each
//! hit against history visibility at the event before returning it.

pub mod collector;
pub mod indexer;
pub mod query;
pub mod run;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ruma::{OwnedEventId, OwnedRoomId};
use std::sync::mpsc;
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, ReloadPolicy};

use tokio::sync::watch;

use crate::config::Config;
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, trees};

/// The directory of the index under the data directory.
pub const INDEX_DIR: &str = "search";
/// The key in the `meta` tree of the indexer's stored progress.
const INDEXED_KEY: &str = "search_indexed_upto";
/// How long a search waits for the indexer to reach the events appended before it.
const SEARCH_WAIT: Duration = Duration::from_secs(5);

/// One appended event for the indexer.
#[derive(Debug)]
pub struct IndexJob {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub position: u64,
    /// The event a redaction redacts.
    pub redacts: Option<OwnedEventId>,
}

/// What the indexer's queue carries.
#[derive(Debug)]
pub enum IndexMessage {
    /// An appended event, in stream order.
    Event(IndexJob),
    /// A search waits for everything up to this position to be committed.
    Commit(u64),
}

/// The sending end of the indexer's queue, held by the room service.
#[derive(Clone)]
pub struct IndexQueue {
    sender: Option<mpsc::Sender<IndexMessage>>,
    last_queued: Arc<AtomicU64>,
}

impl IndexQueue {
    /// Queues an event if it concerns the index; called in stream order (under the stream
    /// sequencer).
    pub fn push(&self, pdu: &Pdu, position: u64) {
        let Some(sender) = &self.sender else {
            return;
        };
        if !schema::concerns_index(pdu.kind()) {
            return;
        }
        self.last_queued.fetch_max(position, Ordering::SeqCst);
        // A closed queue means the services are being replaced; the new indexer catches up from
        // its stored progress.
        let _ = sender.send(IndexMessage::Event(IndexJob {
            room_id: pdu.room_id().to_owned(),
            event_id: pdu.event_id().to_owned(),
            position,
            redacts: pdu.redacts().map(ToOwned::to_owned),
        }));
    }

    /// Asks the indexer to commit what it indexed up to `position`.
    fn request_commit(&self, position: u64) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(IndexMessage::Commit(position));
        }
    }
}

/// The open index: its schema fields and the reader searches use.
#[derive(Clone)]
pub struct SearchIndex {
    pub index: Index,
    pub reader: IndexReader,
    pub fields: schema::Fields,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it when there is none. An index that cannot be read
    /// (another schema, damaged files) is deleted and a new one made: it is derived data, and
    /// the indexer fills a new one from the timeline. Returns whether it was created.
    pub fn open(dir: &Path) -> Result<(Self, bool)> {
        match Self::open_existing(dir) {
            Ok(opened) => Ok(opened),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    path = %dir.display(),
                    "the search index cannot be opened; making a new one"
                );
                std::fs::remove_dir_all(dir).map_err(|e| index_error(dir, e))?;
                Self::open_existing(dir)
            }
        }
    }

    fn open_existing(dir: &Path) -> Result<(Self, bool)> {
        std::fs::create_dir_all(dir).map_err(|e| index_error(dir, e))?;
        let directory = MmapDirectory::open(dir).map_err(|e| index_error(dir, e))?;
        let created = !Index::exists(&directory).map_err(|e| index_error(dir, e))?;
        let (schema, fields) = schema::schema();
        let index = Index::open_or_create(directory, schema).map_err(|e| index_error(dir, e))?;
        index
            .tokenizers()
            .register(schema::ANALYZER, schema::analyzer());
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| index_error(dir, e))?;
        Ok((
            Self {
                index,
                reader,
                fields,
            },
            created,
        ))
    }
}

fn index_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::internal(format!("search index in {}: {e}", dir.display()))
}

/// The state of search: the index (when enabled), the indexer's queue and its progress.
pub struct Search {
    index: Option<SearchIndex>,
    dir: PathBuf,
    queue: IndexQueue,
    receiver: std::sync::Mutex<Option<mpsc::Receiver<IndexMessage>>>,
    /// Every event at or before this position is indexed.
    indexed: watch::Sender<u64>,
    store_meta: Tree,
    /// The index writer's memory budget, in bytes.
    pub(crate) writer_budget: usize,
}

impl Search {
    pub fn new(config: &Config, store: &Store) -> Result<Self> {
        let store_meta = store.tree(trees::META)?;
        let current = crate::storage::stream::current(store)?;
        let dir = config.data_dir.join(INDEX_DIR);
        let (index, sender, receiver) = if config.search.enabled {
            let (index, created) = SearchIndex::open(&dir)?;
            if created {
                // A new index (first start, or the directory was removed): everything in the
                // store is indexed from the timeline.
                store_meta.put(INDEXED_KEY, keys::u64_be(0).to_vec())?;
            }
            let (sender, receiver) = mpsc::channel();
            (Some(index), Some(sender), Some(receiver))
        } else {
            (None, None, None)
        };
        let search = Self {
            index,
            dir,
            queue: IndexQueue {
                sender,
                last_queued: Arc::new(AtomicU64::new(current)),
            },
            receiver: std::sync::Mutex::new(receiver),
            indexed: watch::Sender::new(0),
            store_meta,
            writer_budget: usize::try_from(config.search.writer_memory_mb << 20)
                .unwrap_or(usize::MAX),
        };
        search.indexed.send_replace(search.stored_progress()?);
        Ok(search)
    }

    /// The handle the room service queues appended events with.
    pub fn queue(&self) -> IndexQueue {
        self.queue.clone()
    }

    /// The open index, or 400 `M_UNKNOWN` when search is turned off.
    pub fn index(&self) -> Result<&SearchIndex> {
        self.index
            .as_ref()
            .ok_or_else(|| Error::Unknown("search is disabled on this server".into()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn take_receiver(&self) -> Option<mpsc::Receiver<IndexMessage>> {
        self.receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The stored progress of the indexer.
    pub(crate) fn stored_progress(&self) -> Result<u64> {
        Ok(match self.store_meta.get(INDEXED_KEY)? {
            Some(bytes) => keys::read_u64_be(&bytes).unwrap_or(0),
            None => 0,
        })
    }

    /// Stores and publishes the indexer's progress (after each commit).
    pub(crate) fn set_progress(&self, position: u64) -> Result<()> {
        self.store_meta
            .put(INDEXED_KEY, keys::u64_be(position).to_vec())?;
        self.indexed.send_if_modified(|upto| {
            let moved = position > *upto;
            *upto = (*upto).max(position);
            moved
        });
        Ok(())
    }

    /// Every event at or before this position is indexed.
    pub fn indexed_upto(&self) -> u64 {
        *self.indexed.borrow()
    }

    /// Waits until every event up to `position` that has been queued is indexed and committed
    /// (at most [`SEARCH_WAIT`]), so that a search finds what was sent before it.
    pub async fn wait_indexed(&self, position: u64) {
        let target = position.min(self.queue.last_queued.load(Ordering::SeqCst));
        let mut receiver = self.indexed.subscribe();
        if *receiver.borrow() >= target {
            return;
        }
        // Queued after the events it waits for, so the indexer has them when it reads this.
        self.queue.request_commit(target);
        let waited =
            tokio::time::timeout(SEARCH_WAIT, receiver.wait_for(|upto| *upto >= target)).await;
        if waited.is_err() {
            tracing::warn!(target, "the search index is behind; searching it as it is");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_index_is_replaced_by_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INDEX_DIR);
        let (_, created) = SearchIndex::open(&path).unwrap();
        assert!(created);
        let (_, created) = SearchIndex::open(&path).unwrap();
        assert!(!created, "an existing index is opened as it is");
        std::fs::write(path.join("meta.json"), b"{ not json").unwrap();
        let (index, created) = SearchIndex::open(&path).unwrap();
        assert!(created);
        assert_eq!(index.reader.searcher().num_docs(), 0);
    }
}
