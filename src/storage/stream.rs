//! The global stream position: one counter that orders everything a client syncs (room events,
//! account data, receipts, …). Every change takes the next position inside its own transaction,
//! so positions and data commit together and a reader never sees a position without its data.

use super::{StorageError, Store, TxError, TxTree, keys, trees};

const KEY: &[u8] = b"stream_position";

/// Takes the next position; `meta` is the `meta` tree inside the caller's transaction.
pub fn next<E>(meta: &TxTree<'_>) -> Result<u64, TxError<E>> {
    let pos = meta
        .get(KEY)?
        .and_then(|v| keys::read_u64_be(&v))
        .unwrap_or(0)
        + 1;
    meta.put(KEY, keys::u64_be(pos).to_vec())?;
    Ok(pos)
}

/// The latest position taken.
pub fn current(store: &Store) -> Result<u64, StorageError> {
    Ok(store
        .tree(trees::META)?
        .get(KEY)?
        .and_then(|v| keys::read_u64_be(&v))
        .unwrap_or(0))
}

/// Orders commits that take stream positions, so that every position up to [`Sequencer::upto`]
/// is committed *and* known to the in-memory indexes updated under the same lock. A sync that
/// answers with `upto` as its token can then never skip a change that commits late.
#[derive(Default)]
pub struct Sequencer {
    lock: std::sync::Mutex<()>,
    upto: std::sync::atomic::AtomicU64,
}

impl Sequencer {
    pub fn new(start: u64) -> Self {
        Self {
            lock: std::sync::Mutex::new(()),
            upto: std::sync::atomic::AtomicU64::new(start),
        }
    }

    /// Runs `commit` (a transaction that takes one position and returns it) and `index` (the
    /// in-memory bookkeeping for that position) as one step.
    pub fn commit<R, E>(
        &self,
        commit: impl FnOnce() -> Result<(R, u64), E>,
        index: impl FnOnce(u64),
    ) -> Result<R, E> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let (result, position) = commit()?;
        index(position);
        self.upto
            .fetch_max(position, std::sync::atomic::Ordering::SeqCst);
        Ok(result)
    }

    /// Every position up to this one is committed and indexed.
    pub fn upto(&self) -> u64 {
        self.upto.load(std::sync::atomic::Ordering::SeqCst)
    }
}
