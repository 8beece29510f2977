//! Group commit: writers wait for a flush that covers their write; one background task flushes on
//! demand (woken by a notification, never on a timer), so concurrent writers share one fsync.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use tokio::sync::{Notify, watch};

use super::Shared;

#[derive(Debug, Clone, thiserror::Error)]
#[error("flushing the database failed: {0}")]
pub struct DurabilityError(String);

#[derive(Clone, Copy, Default)]
struct Flushed {
    /// Every ticket up to this one is covered by a finished flush attempt.
    upto: u64,
    /// The last attempt covering tickets up to `upto` failed.
    failed_upto: u64,
}

pub struct GroupCommit {
    db: sled::Db,
    /// Told when a flush fails; also keeps the store's close signal back until a flush in
    /// progress has let go of the database.
    shared: Arc<Shared>,
    tickets: AtomicU64,
    wake: Arc<Notify>,
    flushed: watch::Sender<Flushed>,
    started: OnceLock<()>,
    /// Flushes done so far (for metrics and tests).
    flush_count: AtomicU64,
}

impl GroupCommit {
    pub fn new(db: sled::Db, shared: Arc<Shared>) -> Arc<Self> {
        let (flushed, _) = watch::channel(Flushed::default());
        Arc::new(Self {
            db,
            shared,
            tickets: AtomicU64::new(0),
            wake: Arc::new(Notify::new()),
            flushed,
            started: OnceLock::new(),
            flush_count: AtomicU64::new(0),
        })
    }

    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::Relaxed)
    }

    pub async fn wait(self: &Arc<Self>) -> Result<(), DurabilityError> {
        self.started.get_or_init(|| {
            let weak = Arc::downgrade(self);
            tokio::spawn(flusher(weak, self.wake.clone()));
        });
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut rx = self.flushed.subscribe();
        self.wake.notify_one();
        let state = *rx
            .wait_for(|f| f.upto >= ticket)
            .await
            .map_err(|_| DurabilityError("the flusher stopped".into()))?;
        if state.failed_upto >= ticket {
            return Err(DurabilityError("see the server log".into()));
        }
        Ok(())
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        // Let the flusher notice that the store is gone.
        self.wake.notify_one();
    }
}

async fn flusher(this: Weak<GroupCommit>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(gc) = this.upgrade() else { return };
        let target = gc.tickets.load(Ordering::SeqCst);
        let (db, shared) = (gc.db.clone(), gc.shared.clone());
        let result = tokio::task::spawn_blocking(move || {
            let result = db.flush();
            drop(db);
            drop(shared);
            result
        })
        .await;
        gc.flush_count.fetch_add(1, Ordering::Relaxed);
        let ok = match result {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                gc.shared.fail(&e);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "database flush failed");
                false
            }
        };
        gc.flushed.send_modify(|f| {
            f.upto = f.upto.max(target);
            if !ok {
                f.failed_upto = target;
            }
        });
    }
}
