//! The storage layer: the only module that knows about sled.
//!
//! The API is narrow on purpose (get, put, delete, prefix scans, atomic multi-tree transactions and
//! a durability barrier) so that another backend could sit behind it later.

mod durability;
pub mod keys;
mod migrations;
pub mod stream;

use std::path::Path;
use std::sync::Arc;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

pub use durability::DurabilityError;

/// Names of the trees, after what they map.
pub mod trees {
    pub const META: &str = "meta";
    pub const USERID_ACCOUNT: &str = "userid_account";
    pub const USERID_PROFILE: &str = "userid_profile";
    pub const USERID_TOTP: &str = "userid_totp";
    pub const USERDEVICEID_DEVICE: &str = "userdeviceid_device";
    pub const SESSIONID_SESSION: &str = "sessionid_session";
    pub const EMAIL_USERID: &str = "email_userid";
    pub const USERID_EMAILS: &str = "userid_emails";
    pub const EMAILSID_VALIDATION: &str = "emailsid_validation";
    pub const REGTOKEN_INFO: &str = "regtoken_info";
    pub const EVENTID_PDU: &str = "eventid_pdu";
    pub const EVENTID_META: &str = "eventid_meta";
    pub const EVENTID_REDACTEDBY: &str = "eventid_redactedby";
    pub const ROOMID_STREAMPOS_EVENTID: &str = "roomid_streampos_eventid";
    pub const ROOMID_DEPTH_STREAMPOS_EVENTID: &str = "roomid_depth_streampos_eventid";
    pub const ROOMID_ROOM: &str = "roomid_room";
    pub const SNAPSHOTID_SNAPSHOT: &str = "snapshotid_snapshot";
    pub const USERID_ROOMID_MEMBERSHIP: &str = "userid_roomid_membership";
    pub const ROOMID_USERID_MEMBERSHIP: &str = "roomid_userid_membership";
    pub const TXN_EVENTID: &str = "userdevicetxn_eventid";
    pub const ALIAS_ROOMID: &str = "alias_roomid";
    pub const ROOMID_ALIASES: &str = "roomid_aliases";
    pub const ROOMID_PUBLIC: &str = "roomid_public";
    pub const USERID_ROOMID_FORGOTTEN: &str = "userid_roomid_forgotten";
    pub const USERID_ROOMID_TYPE_ACCOUNTDATA: &str = "userid_roomid_type_accountdata";
    pub const USERID_STREAMPOS_ACCOUNTDATA: &str = "userid_streampos_accountdata";
    pub const USERID_FILTERID_FILTER: &str = "userid_filterid_filter";
    pub const ROOMID_TYPE_USERID_THREAD_RECEIPT: &str = "roomid_type_userid_thread_receipt";
    pub const ROOMID_STREAMPOS_RECEIPT: &str = "roomid_streampos_receipt";
    pub const USERID_PRESENCE: &str = "userid_presence";
    pub const STREAMPOS_USERID_PRESENCE: &str = "streampos_userid_presence";
    pub const USERDEVICEID_STREAMPOS_TODEVICE: &str = "userdeviceid_streampos_todevice";
    pub const USERDEVICETYPETXN_TODEVICE: &str = "userdevicetypetxn_todevice";
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("cannot open the database at {path}: {message}")]
    Open { path: String, message: String },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error(transparent)]
    Durability(#[from] DurabilityError),
}

/// The store: one sled database with named trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    durability: Arc<durability::GroupCommit>,
    sequencer: Arc<stream::Sequencer>,
}

/// One named tree (key-value map with ordered keys).
#[derive(Clone)]
pub struct Tree {
    inner: sled::Tree,
}

/// A value read from the store.
pub type Bytes = sled::IVec;

impl Store {
    /// Opens (or creates) the database under `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: dir.display().to_string(),
            message: e.to_string(),
        })?;
        let path = dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| StorageError::Open {
                path: path.display().to_string(),
                message: match e.to_string() {
                    m if m.contains("could not acquire lock") => {
                        "it is in use by another process (is the server running?)".into()
                    }
                    m => m,
                },
            })?;
        let durability = durability::GroupCommit::new(db.clone());
        let mut store = Self {
            db,
            durability,
            sequencer: Arc::new(stream::Sequencer::default()),
        };
        migrations::run(&store)?;
        store.sequencer = Arc::new(stream::Sequencer::new(stream::current(&store)?));
        Ok(store)
    }

    pub fn tree(&self, name: &str) -> Result<Tree, StorageError> {
        Ok(Tree {
            inner: self.db.open_tree(name)?,
        })
    }

    /// Runs `f` atomically over `trees` (it may run more than once on conflict). An `Err` from
    /// `f` (built with [`abort`]) aborts the transaction and leaves the store unchanged.
    pub fn transact<R, E>(
        &self,
        trees: &[&Tree],
        f: impl Fn(&[TxTree<'_>]) -> Result<R, TxError<E>>,
    ) -> Result<R, TxOutcome<E>> {
        let inner: Vec<&sled::Tree> = trees.iter().map(|t| &t.inner).collect();
        let result = inner
            .as_slice()
            .transaction(|view: &Vec<TransactionalTree>| {
                let wrapped: Vec<TxTree<'_>> = view.iter().map(|t| TxTree { inner: t }).collect();
                f(&wrapped).map_err(|e| match e {
                    TxError::Abort(e) => ConflictableTransactionError::Abort(e),
                    TxError::Storage(e) => ConflictableTransactionError::Storage(e),
                    TxError::Conflict => ConflictableTransactionError::Conflict,
                })
            });
        result.map_err(|e| match e {
            TransactionError::Abort(e) => TxOutcome::Aborted(e),
            TransactionError::Storage(e) => TxOutcome::Storage(StorageError::Db(e)),
        })
    }

    /// Waits until every write made before this call is on disk. Concurrent callers share one
    /// flush (group commit), so acknowledging many writes costs few fsyncs.
    pub async fn durable(&self) -> Result<(), StorageError> {
        Ok(self.durability.wait().await?)
    }

    /// The commit sequencer of the global stream position.
    pub fn sequencer(&self) -> &stream::Sequencer {
        &self.sequencer
    }

    /// How many group-commit flushes have run.
    pub fn flush_count(&self) -> u64 {
        self.durability.flush_count()
    }

    /// Flushes synchronously (CLI and shutdown).
    pub fn flush_blocking(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }

    /// A process-unique, monotonically increasing id (not a stream position).
    pub fn generate_id(&self) -> Result<u64, StorageError> {
        Ok(self.db.generate_id()?)
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StorageError> {
        Ok(self.inner.get(key)?)
    }

    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool, StorageError> {
        Ok(self.inner.contains_key(key)?)
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<(), StorageError> {
        self.inner.insert(key.as_ref(), value.into())?;
        Ok(())
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), StorageError> {
        self.inner.remove(key)?;
        Ok(())
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = Result<(Bytes, Bytes), StorageError>> {
        self.inner
            .scan_prefix(prefix)
            .map(|r| r.map_err(StorageError::from))
    }

    /// Entries with `start <= key < end`, in key order (reversible).
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Bytes, Bytes), StorageError>> + use<> {
        self.inner
            .range(start.to_vec()..end.to_vec())
            .map(|r| r.map_err(StorageError::from))
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<(Bytes, Bytes), StorageError>> + use<> {
        self.inner.iter().map(|r| r.map_err(StorageError::from))
    }
}

/// A tree inside a transaction.
pub struct TxTree<'a> {
    inner: &'a TransactionalTree,
}

/// Why a transaction body stopped: an abort with the caller's error, or a storage problem.
pub enum TxError<E> {
    Abort(E),
    Storage(sled::Error),
    Conflict,
}

impl<E> From<sled::transaction::UnabortableTransactionError> for TxError<E> {
    fn from(e: sled::transaction::UnabortableTransactionError) -> Self {
        match e {
            sled::transaction::UnabortableTransactionError::Conflict => TxError::Conflict,
            sled::transaction::UnabortableTransactionError::Storage(e) => TxError::Storage(e),
        }
    }
}

/// Aborts a transaction with the caller's error.
pub fn abort<E>(e: E) -> TxError<E> {
    TxError::Abort(e)
}

/// How a failed transaction ended.
#[derive(Debug)]
pub enum TxOutcome<E> {
    Aborted(E),
    Storage(StorageError),
}

impl<'a> TxTree<'a> {
    pub fn get<E>(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, TxError<E>> {
        Ok(self.inner.get(key)?)
    }

    pub fn put<E>(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<(), TxError<E>> {
        self.inner.insert(key.as_ref(), value.into())?;
        Ok(())
    }

    pub fn delete<E>(&self, key: impl AsRef<[u8]>) -> Result<(), TxError<E>> {
        self.inner.remove(key.as_ref())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_writers_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        let writers: Vec<_> = (0u32..64)
            .map(|i| {
                let (store, tree) = (store.clone(), tree.clone());
                tokio::spawn(async move {
                    tree.put(i.to_be_bytes(), b"v".to_vec()).unwrap();
                    store.durable().await.unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        assert!(store.flush_count() >= 1);
        assert!(store.flush_count() < 64, "{} flushes", store.flush_count());
        // A later write still gets its own flush.
        tree.put(b"late", b"v".to_vec()).unwrap();
        let before = store.flush_count();
        store.durable().await.unwrap();
        assert!(store.flush_count() > before);
    }

    #[test]
    fn aborted_transactions_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (store.tree("a").unwrap(), store.tree("b").unwrap());
        let result: Result<(), TxOutcome<&str>> = store.transact(&[&a, &b], |t| {
            t[0].put(b"k", b"1".to_vec())?;
            t[1].put(b"k", b"1".to_vec())?;
            Err(abort("no"))
        });
        assert!(matches!(result, Err(TxOutcome::Aborted("no"))));
        assert!(a.get(b"k").unwrap().is_none() && b.get(b"k").unwrap().is_none());
        store
            .transact::<_, ()>(&[&a, &b], |t| {
                t[0].put(b"k", b"1".to_vec())?;
                t[1].put(b"k", b"2".to_vec())
            })
            .unwrap();
        assert_eq!(b.get(b"k").unwrap().unwrap().as_ref(), b"2");
    }
}
