//! The storage layer: the only module that knows about sled.
//!
//! The API is narrow on purpose (get, put, delete, prefix scans, atomic multi-tree transactions and
//! a durability barrier) so that another backend could sit behind it later.

mod durability;
pub mod keys;
mod migrations;
pub mod stream;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};
use tokio::sync::watch;

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
    /// room, user → stream position where the user's current run of joins began.
    pub const ROOMID_USERID_JOINEDAT: &str = "roomid_userid_joinedat";
    /// parent event, child's stream position → the child's relation (see `service::rooms::relations`).
    pub const EVENTID_STREAMPOS_RELATION: &str = "eventid_streampos_relation";
    /// thread root → stream position of the thread's latest event.
    pub const THREADROOT_LATESTPOS: &str = "threadroot_latestpos";
    /// room, stream position of a thread's latest event → thread root: threads by activity.
    pub const ROOMID_STREAMPOS_THREADROOT: &str = "roomid_streampos_threadroot";
    /// user, device → the device's identity keys as uploaded.
    pub const USERID_DEVICEID_DEVICEKEYS: &str = "userid_deviceid_devicekeys";
    /// user, device, `<algorithm>:<key id>` → an unclaimed one-time key.
    pub const USERID_DEVICEID_KEYID_ONETIMEKEY: &str = "userid_deviceid_keyid_onetimekey";
    /// user, device, algorithm → the device's fallback key and whether it was used.
    pub const USERID_DEVICEID_ALGORITHM_FALLBACKKEY: &str = "userid_deviceid_algorithm_fallbackkey";
    /// stream position → the user whose devices or keys changed there.
    pub const STREAMPOS_USERID_KEYCHANGE: &str = "streampos_userid_keychange";
    /// user → the stream position of their latest key change.
    pub const USERID_KEYCHANGEPOS: &str = "userid_keychangepos";
    /// user → their master, self-signing and user-signing keys.
    pub const USERID_CROSSSIGNINGKEYS: &str = "userid_crosssigningkeys";
    /// target user, key ID, signing user → the signatures that user published on the key.
    pub const USERID_KEYID_SIGNER_SIGNATURES: &str = "userid_keyid_signer_signatures";
    /// user, backup version → the version's algorithm, auth data, key count and etag.
    pub const USERID_VERSION_KEYBACKUP: &str = "userid_version_keybackup";
    /// user, backup version, room, session → a backed-up session key.
    pub const USERID_VERSION_ROOMID_SESSIONID_BACKUPKEY: &str =
        "userid_version_roomid_sessionid_backupkey";
    /// user, stream position → a notification (see `service::push`).
    pub const USERID_STREAMPOS_NOTIFICATION: &str = "userid_streampos_notification";
    /// user, room, stream position → highlight flag and thread: what unread counts read.
    pub const USERID_ROOMID_STREAMPOS_NOTIFY: &str = "userid_roomid_streampos_notify";
    /// user, app ID, pushkey → pusher.
    pub const USERID_APPID_PUSHKEY_PUSHER: &str = "userid_appid_pushkey_pusher";
    /// user, app ID, pushkey, stream position → a push waiting for its gateway.
    pub const PUSHER_STREAMPOS_PUSH: &str = "pusher_streampos_push";
    pub const USERID_ROOMID_TYPE_ACCOUNTDATA: &str = "userid_roomid_type_accountdata";
    pub const USERID_STREAMPOS_ACCOUNTDATA: &str = "userid_streampos_accountdata";
    pub const USERID_FILTERID_FILTER: &str = "userid_filterid_filter";
    pub const ROOMID_TYPE_USERID_THREAD_RECEIPT: &str = "roomid_type_userid_thread_receipt";
    pub const ROOMID_STREAMPOS_RECEIPT: &str = "roomid_streampos_receipt";
    pub const USERID_PRESENCE: &str = "userid_presence";
    pub const STREAMPOS_USERID_PRESENCE: &str = "streampos_userid_presence";
    pub const USERDEVICEID_STREAMPOS_TODEVICE: &str = "userdeviceid_streampos_todevice";
    pub const USERDEVICETYPETXN_TODEVICE: &str = "userdevicetypetxn_todevice";
    /// E2EE over federation: remote user → their cached device list and cross-signing keys.
    pub const E2EE_USERID_REMOTEDEVICELIST: &str = "e2ee_userid_remotedevicelist";
    /// E2EE over federation: local user → the stream ID of their latest `m.device_list_update`.
    pub const E2EE_USERID_DEVICELISTSTREAM: &str = "e2ee_userid_deviceliststream";
    /// Media metadata by (server name, media ID).
    pub const MEDIAKEY_MEDIA: &str = "mediakey_media";
    /// How many media items share one stored file, by SHA-256 of the content.
    pub const SHA256_REFCOUNT: &str = "sha256_refcount";
    /// The bytes of a user's uploads (quota).
    pub const USERID_MEDIAUSAGE: &str = "userid_mediausage";
    /// Every media item a user created or uploaded (admin deletion), by (user, server, media ID).
    pub const USERID_MEDIAKEY: &str = "userid_mediakey";
    /// Created media IDs still waiting for their content: (user, server, media ID) → expiry.
    pub const USERID_PENDINGMEDIA: &str = "userid_pendingmedia";
    /// Cached thumbnails, by (content SHA-256, width, height, method, animated).
    pub const SHA256_THUMBNAIL: &str = "sha256_thumbnail";
    /// report ID (big-endian) → a content report: reporter, target, reason, score, time.
    pub const REPORTID_REPORT: &str = "reportid_report";
    /// Chat API sign-ups waiting for their e-mail code (see `service::chat::signups`).
    pub const CHAT_SIGNUPID_SIGNUP: &str = "chat_signupid_signup";
    /// Chat API: unverified sign-up e-mail addresses, user → address and address → user.
    pub const CHAT_UNVERIFIED_EMAIL: &str = "chat_unverified_email";
    /// Chat API password-reset codes by their SHA-256 (see `service::chat::password_resets`).
    pub const CHAT_RESETCODE_RESET: &str = "chat_resetcode_reset";
    /// Chat API: user, peer → their direct-message room (written both ways; see `service::chat::friends`).
    pub const USERID_PEERID_DMROOM: &str = "userid_peerid_dmroom";
    /// Chat API: direct-message room → its two users (creator, invitee).
    pub const DMROOM_USERIDS: &str = "dmroom_userids";
    /// Chat API: call ID, room → the call's record (see `service::chat::calls`).
    pub const CALLID_ROOMID_CALL: &str = "callid_roomid_call";
    /// Chat API: user, stream position of the call's invite → call ID, room: the call log.
    pub const USERID_STREAMPOS_CALL: &str = "userid_streampos_call";
    /// Chat API: user, stream position → a notification push rules do not make (friend
    /// accepted, missed call); see `service::chat::notifications`.
    pub const USERID_STREAMPOS_CHATNOTIFICATION: &str = "userid_streampos_chatnotification";
    /// Chat API: user, notification ID → read mark (and the user's "all read up to" position).
    pub const USERID_CHATNOTIFICATIONID_READ: &str = "userid_chatnotificationid_read";
    /// Other servers' public signing keys: server, key ID → key and validity.
    pub const SERVER_KEYID_KEY: &str = "server_keyid_key";
    /// Other servers' latest key responses, as they signed them (served as a notary).
    pub const SERVERNAME_KEYRESPONSE: &str = "servername_keyresponse";
    /// Events stored beside a room's timeline (outliers, soft-failed, rejected) → their standing.
    pub const EVENTID_OFFTIMELINE: &str = "eventid_offtimeline";
    /// Federation: origin, transaction ID → the answer we gave to that incoming transaction.
    pub const FED_TXN_ANSWER: &str = "fed_txn_answer";
    /// Federation: origin, sequence number → transaction ID, to forget the oldest answers.
    pub const FED_TXN_ORDER: &str = "fed_txn_order";
    /// Federation sender: destination, stream position → room and event ID of a queued PDU.
    pub const DESTINATION_POS_PDU: &str = "destination_pos_pdu";
    /// Federation sender: destination, queue ID → a queued EDU.
    pub const DESTINATION_ID_EDU: &str = "destination_id_edu";
    /// Federation sender: destination → queue counts, failures, backoff, last success.
    pub const DESTINATION_STATE: &str = "destination_state";
    /// Federation sender: destination → the transaction in flight (ID and entries).
    pub const DESTINATION_TXN: &str = "destination_txn";
    /// Backfilled history before a room's timeline: room, order (1 = newest) → event ID.
    pub const ROOMID_HISTORYORDER_EVENTID: &str = "roomid_historyorder_eventid";
    /// Backfilled history: event ID → its order before its room's timeline.
    pub const EVENTID_HISTORYORDER: &str = "eventid_historyorder";
    /// Backfilled history: room → the events still to fetch, the next order, retry time.
    pub const ROOMID_BACKFILLFRONTIER: &str = "roomid_backfillfrontier";
    /// OpenID tokens by their SHA-256 → user and expiry.
    pub const OPENIDTOKEN_USERID: &str = "openidtoken_userid";
}

/// Trees that [`Store::digest`] leaves out, because any authenticated request may change them.
pub const DIGEST_EXCLUDED: &[&str] = &[
    // The device's last-seen address and time, written by the access-token extractors.
    trees::USERDEVICEID_DEVICE,
    // The user's latest activity time, written (at most once a minute) by the `Auth` extractor.
    trees::USERID_PRESENCE,
];

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error("cannot open the database at {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "cannot open the database at {path}: it is in use by another process \
         (is the server running?)"
    )]
    Locked { path: String },
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("schema: {0}")]
    Schema(String),
    #[error(transparent)]
    Durability(#[from] DurabilityError),
    /// The database is closed while the server reopens it after a failed write.
    #[error("the database is being reopened after a failed write")]
    Reopening,
}

impl StorageError {
    /// Whether the error means the disk refused a write (full, read-only, I/O error) rather than
    /// a bug or corrupt data: requests then answer 503 and the server reopens the store.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StorageError::Db(sled::Error::Io(_))
                | StorageError::Durability(_)
                | StorageError::Reopening
        )
    }
}

/// What every handle of one open store shares: whether a write has failed, and a signal that
/// fires once the last handle (store, tree or flush in progress) is gone and sled has released
/// the database.
struct Shared {
    failure: Mutex<Option<String>>,
    /// Whether `failure` is set (read on every request).
    has_failed: AtomicBool,
    failed: watch::Sender<bool>,
    /// Dropped last: receivers see the channel close when the store is closed.
    closed: watch::Sender<()>,
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            failure: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            failed: watch::channel(false).0,
            closed: watch::channel(()).0,
        })
    }

    /// Records the first write failure and wakes whoever waits for one.
    fn fail(&self, error: &dyn std::fmt::Display) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            tracing::error!(
                %error,
                "the database refused a write (disk full or not writable?); \
                 refusing writes until it is reopened"
            );
            *failure = Some(error.to_string());
            self.has_failed.store(true, Ordering::SeqCst);
            self.failed.send_replace(true);
        }
    }

    /// Wraps a sled error, recording it when it is an I/O failure.
    fn record(&self, error: sled::Error) -> StorageError {
        let error = StorageError::Db(error);
        if error.is_unavailable() {
            self.fail(&error);
        }
        error
    }

    /// Passes `result` through, recording an I/O failure.
    fn check<T>(&self, result: Result<T, sled::Error>) -> Result<T, StorageError> {
        result.map_err(|e| self.record(e))
    }
}

/// The store: one sled database with named trees.
///
/// When a write fails (disk full, read-only file system, I/O error), sled refuses every later
/// write and flush until the database is reopened; the store records the failure
/// ([`Store::failure`], [`Store::failed`]) so that the server can answer 503 and reopen it.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    durability: Arc<durability::GroupCommit>,
    sequencer: Arc<stream::Sequencer>,
    /// Every stream position up to this one is on disk.
    durable_position: Arc<AtomicU64>,
    /// Declared last so that it is dropped after the sled handles above.
    shared: Arc<Shared>,
}

/// One named tree (key-value map with ordered keys).
#[derive(Clone)]
pub struct Tree {
    inner: sled::Tree,
    /// Declared last so that it is dropped after the sled handle.
    shared: Arc<Shared>,
}

/// The page cache of [`Store::open`] (32 MiB).
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// A value read from the store.
pub type Bytes = sled::IVec;

/// Describes an I/O error met while opening the database, with a hint when the data directory is
/// not writable.
fn io_message(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            format!("{e} (the data directory must be writable by the server)")
        }
        ErrorKind::StorageFull | ErrorKind::FileTooLarge => {
            format!("{e} (free some disk space)")
        }
        _ => e.to_string(),
    }
}

impl Store {
    /// Opens (or creates) the database under `dir` with the default page cache.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens (or creates) the database under `dir`, with a page cache of `cache_bytes`, and
    /// brings its schema up to date.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Open {
            path: dir.display().to_string(),
            message: io_message(&e),
        })?;
        let path = dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| {
                let path = path.display().to_string();
                match e {
                    sled::Error::Io(e) if e.to_string().contains("could not acquire lock") => {
                        StorageError::Locked { path }
                    }
                    sled::Error::Io(e) => StorageError::Open {
                        path,
                        message: io_message(&e),
                    },
                    e => StorageError::Open {
                        path,
                        message: e.to_string(),
                    },
                }
            })?;
        let shared = Shared::new();
        let durability = durability::GroupCommit::new(db.clone(), shared.clone());
        let mut store = Self {
            db,
            durability,
            sequencer: Arc::new(stream::Sequencer::default()),
            durable_position: Arc::new(AtomicU64::new(0)),
            shared,
        };
        migrations::run(&store)?;
        let position = stream::current(&store)?;
        store.sequencer = Arc::new(stream::Sequencer::new(position));
        // Whatever was there when the database was opened is on disk.
        store.durable_position = Arc::new(AtomicU64::new(position));
        Ok(store)
    }

    pub fn tree(&self, name: &str) -> Result<Tree, StorageError> {
        Ok(Tree {
            inner: self.shared.check(self.db.open_tree(name))?,
            shared: self.shared.clone(),
        })
    }

    /// Why the store refuses writes, if a write failed since it was opened.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a write failure as the disk would (for tests of what follows one).
    #[cfg(test)]
    pub(crate) fn fail_for_tests(&self, reason: &str) {
        self.shared.fail(&reason);
    }

    /// Whether a write has failed since the store was opened.
    pub fn has_failed(&self) -> bool {
        self.shared.has_failed.load(Ordering::SeqCst)
    }

    /// Resolves once a write has failed (at once if one already has).
    pub fn failed(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.shared.failed.subscribe();
        async move {
            let _ = rx.wait_for(|failed| *failed).await;
        }
    }

    /// Resolves once every handle of this store (the store, its trees, a flush in progress) is
    /// gone and the database is closed, so that it can be opened again.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + use<> {
        let mut rx = self.shared.closed.subscribe();
        async move { while rx.changed().await.is_ok() {} }
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
            TransactionError::Storage(e) => TxOutcome::Storage(self.shared.record(e)),
        })
    }

    /// Waits until every write made before this call is on disk. Concurrent callers share one
    /// flush (group commit), so acknowledging many writes costs few fsyncs.
    pub async fn durable(&self) -> Result<(), StorageError> {
        // Every position up to `covered` is committed before the flush below starts.
        let covered = self.sequencer.upto();
        self.durability.wait().await?;
        self.durable_position.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until every stream position up to `position` is on disk (at once when it already
    /// is). A position handed to a client as a token must be durable: after a crash the stream
    /// restarts from the last position on disk, and a token beyond it would skip what comes next.
    pub async fn durable_upto(&self, position: u64) -> Result<(), StorageError> {
        if self.durable_position.load(Ordering::SeqCst) >= position {
            return Ok(());
        }
        self.durable().await
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
        self.shared.check(self.db.flush())?;
        Ok(())
    }

    /// A checksum of each tree's keys and values, by tree name, except the trees in
    /// [`DIGEST_EXCLUDED`]: two equal digests mean that nothing else was written in between.
    pub fn digest(&self) -> Result<BTreeMap<String, u32>, StorageError> {
        let mut digest = BTreeMap::new();
        for name in self.db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if !DIGEST_EXCLUDED.contains(&name.as_str()) {
                let checksum = self.db.open_tree(&name)?.checksum()?;
                digest.insert(name, checksum);
            }
        }
        Ok(digest)
    }

    /// A process-unique, monotonically increasing id (not a stream position).
    pub fn generate_id(&self) -> Result<u64, StorageError> {
        self.shared.check(self.db.generate_id())
    }
}

impl Tree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StorageError> {
        self.shared.check(self.inner.get(key))
    }

    pub fn contains(&self, key: impl AsRef<[u8]>) -> Result<bool, StorageError> {
        self.shared.check(self.inner.contains_key(key))
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl Into<Bytes>) -> Result<(), StorageError> {
        self.shared
            .check(self.inner.insert(key.as_ref(), value.into()))?;
        Ok(())
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<(), StorageError> {
        self.shared.check(self.inner.remove(key))?;
        Ok(())
    }

    /// Replaces an entry only if it still holds `old` (`None`: absent); `new` `None` removes it.
    /// Says whether it was replaced.
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<&[u8]>,
        new: Option<impl Into<Bytes>>,
    ) -> Result<bool, StorageError> {
        let result =
            self.shared
                .check(self.inner.compare_and_swap(key, old, new.map(Into::into)))?;
        Ok(result.is_ok())
    }

    /// Removes an entry and returns what it held. Atomic: of concurrent callers taking the same
    /// key, exactly one gets the value.
    pub fn take(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StorageError> {
        self.shared.check(self.inner.remove(key))
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
    ) -> impl DoubleEndedIterator<Item = Result<(Bytes, Bytes), StorageError>> {
        let shared = self.shared.clone();
        self.inner.scan_prefix(prefix).map(move |r| shared.check(r))
    }

    /// Entries with `start <= key < end`, in key order (reversible).
    pub fn range(
        &self,
        start: &[u8],
        end: &[u8],
    ) -> impl DoubleEndedIterator<Item = Result<(Bytes, Bytes), StorageError>> + use<> {
        let shared = self.shared.clone();
        self.inner
            .range(start.to_vec()..end.to_vec())
            .map(move |r| shared.check(r))
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<(Bytes, Bytes), StorageError>> + use<> {
        let shared = self.shared.clone();
        self.inner.iter().map(move |r| shared.check(r))
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

    /// Takes the next stream position in a transaction of its own.
    fn take_position(store: &Store) -> u64 {
        let meta = store.tree(trees::META).unwrap();
        store
            .sequencer()
            .commit(
                || {
                    let position = store
                        .transact::<_, ()>(&[&meta], |t| stream::next(&t[0]))
                        .map_err(|_| ())?;
                    Ok::<_, ()>((position, position))
                },
                |_| {},
            )
            .unwrap()
    }

    #[tokio::test]
    async fn tokens_are_made_durable_only_when_they_are_not_yet() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let start = store.sequencer().upto();
        // Positions on disk when the store was opened need no flush.
        let before = store.flush_count();
        store.durable_upto(start).await.unwrap();
        assert_eq!(store.flush_count(), before);
        // A position taken but not flushed yet needs one.
        let position = take_position(&store);
        store.durable_upto(position).await.unwrap();
        assert_eq!(store.flush_count(), before + 1);
        // Writers' flushes cover the positions committed before them.
        let later = take_position(&store);
        store.durable().await.unwrap();
        let flushes = store.flush_count();
        store.durable_upto(later).await.unwrap();
        assert_eq!(store.flush_count(), flushes);
    }

    #[tokio::test]
    async fn a_failure_is_reported_once_and_the_store_closes_with_its_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        tree.put(b"k", b"v".to_vec()).unwrap();
        store.durable().await.unwrap();
        assert!(!store.has_failed() && store.failure().is_none());
        let failed = store.failed();
        store.fail_for_tests("disk full");
        store.fail_for_tests("a later error");
        failed.await;
        assert!(store.has_failed());
        assert_eq!(store.failure().as_deref(), Some("disk full"));

        // The database stays open while any handle is alive, a tree included.
        let closed = tokio::spawn(store.closed());
        drop(store);
        tokio::task::yield_now().await;
        assert!(!closed.is_finished());
        assert!(matches!(
            Store::open(dir.path()),
            Err(StorageError::Locked { .. })
        ));
        drop(tree);
        closed.await.unwrap();
        // sled's own flusher thread lets go of the file lock shortly after the last handle (the
        // supervisor retries for the same reason): a bounded wait for it.
        let mut reopened = Store::open(dir.path());
        for _ in 0..100 {
            if !matches!(reopened, Err(StorageError::Locked { .. })) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            reopened = Store::open(dir.path());
        }
        let store = reopened.unwrap();
        assert!(!store.has_failed());
        let tree = store.tree("t").unwrap();
        assert_eq!(tree.get(b"k").unwrap().unwrap().as_ref(), b"v");
    }

    #[test]
    fn disk_errors_make_the_storage_unavailable_and_others_do_not() {
        let io = |kind| StorageError::Db(sled::Error::Io(std::io::Error::from(kind)));
        assert!(io(std::io::ErrorKind::StorageFull).is_unavailable());
        assert!(io(std::io::ErrorKind::ReadOnlyFilesystem).is_unavailable());
        assert!(StorageError::Reopening.is_unavailable());
        assert!(!StorageError::Corrupt("x".into()).is_unavailable());
        assert!(!StorageError::Db(sled::Error::Unsupported("x".into())).is_unavailable());
    }

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
