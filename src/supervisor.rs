//! Serving through storage failures. Every request goes through [`dispatch`] to the router of the
//! services in use.
//!
//! When the disk refuses a write (full, read-only, failing), sled refuses every later write and
//! flush until the database is reopened, so requests that write answer 503 (reads keep working).
//! The supervisor then reopens the database in-process, as a restart would: it takes the services
//! out of use (requests answer 503 meanwhile), ends their long polls, waits for the requests in
//! flight to let go of the database, opens it again (sled recovers what is on disk, which is
//! everything that was acknowledged) and builds fresh services on it, so no in-memory index can
//! remember a write that was lost. If the disk still refuses writes, the next write fails again
//! and the cycle repeats.
//!
//! A reopen is attempted only when a request meets the failed store (or the closed one), and at
//! most once per [`RETRY_INTERVAL`]: nothing polls the disk on a timer.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::Config;
use crate::error::Error;
use crate::service::Services;
use crate::storage::StorageError;
use crate::{StartError, api};

/// The least time between the starts of two reopen attempts.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long requests in flight may keep the failed database open before an attempt gives up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// An open that finds the database still locked (sled's last writes of the closed instance) is
/// tried again this many times, this far apart.
const LOCK_RETRIES: u32 = 40;
const LOCK_RETRY_DELAY: Duration = Duration::from_millis(50);

enum Slot {
    Serving {
        router: Router,
        services: Arc<Services>,
    },
    /// The database is closed (being reopened, or the last attempt failed).
    Reopening,
}

pub(crate) struct Supervisor {
    /// The configuration the services are built from again.
    config: Config,
    slot: RwLock<Slot>,
    /// Signalled by requests that met a failed (or closed) store.
    demand: Notify,
}

impl Supervisor {
    pub(crate) fn new(config: Config, services: Arc<Services>) -> Arc<Self> {
        Arc::new(Self {
            config,
            slot: RwLock::new(Slot::Serving {
                router: api::router(services.clone()),
                services,
            }),
            demand: Notify::new(),
        })
    }

    /// The services in use; `None` while the database is being reopened.
    pub(crate) fn services(&self) -> Option<Arc<Services>> {
        match &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Slot::Serving { services, .. } => Some(services.clone()),
            Slot::Reopening => None,
        }
    }

    fn current(&self) -> Option<(Router, Arc<Services>)> {
        match &*self.slot.read().unwrap_or_else(|e| e.into_inner()) {
            Slot::Serving { router, services } => Some((router.clone(), services.clone())),
            Slot::Reopening => None,
        }
    }

    /// The router every listener serves: it hands each request to the services in use.
    pub(crate) fn front(self: &Arc<Self>) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    /// Watches the store until `stop` is set.
    pub(crate) fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|stopped| *stopped) => {}
                _ = this.supervise() => {}
            }
        })
    }

    async fn supervise(&self) {
        let mut last_attempt: Option<Instant> = None;
        loop {
            // Wait for the store in use to fail; none is in use after a failed attempt.
            let failed = self.services().map(|s| s.store.failed());
            if let Some(failed) = failed {
                failed.await;
            }
            self.demand.notified().await;
            if let Some(at) = last_attempt {
                tokio::time::sleep_until(at + RETRY_INTERVAL).await;
            }
            last_attempt = Some(Instant::now());
            self.reopen().await;
        }
    }

    async fn reopen(&self) {
        let previous = std::mem::replace(
            &mut *self.slot.write().unwrap_or_else(|e| e.into_inner()),
            Slot::Reopening,
        );
        if let Slot::Serving { router, services } = previous {
            tracing::warn!(
                failure = services.store.failure().as_deref().unwrap_or("unknown"),
                "closing the database to reopen it"
            );
            // Long polls answer now instead of holding the database until their timeout.
            services.notifier.close();
            let closed = services.store.closed();
            drop(router);
            drop(services);
            if tokio::time::timeout(CLOSE_TIMEOUT, closed).await.is_err() {
                tracing::error!(
                    "requests in flight still hold the failed database; \
                     the next request tries again"
                );
                return;
            }
        }
        match self.open().await {
            Ok(services) => {
                *self.slot.write().unwrap_or_else(|e| e.into_inner()) = Slot::Serving {
                    router: api::router(services.clone()),
                    services,
                };
                tracing::warn!("the database was reopened; serving again");
            }
            Err(e) => {
                tracing::error!(error = %e, "reopening the database failed; the next request tries again");
            }
        }
    }

    async fn open(&self) -> Result<Arc<Services>, StartError> {
        let mut retries = 0;
        loop {
            match crate::open_services(self.config.clone()) {
                Err(StartError::Storage(StorageError::Locked { .. })) if retries < LOCK_RETRIES => {
                    retries += 1;
                    tokio::time::sleep(LOCK_RETRY_DELAY).await;
                }
                other => return other,
            }
        }
    }
}

/// Hands the request to the services in use, or answers 503 while the database is reopened; a
/// request that met a failed store asks for a reopen.
async fn dispatch(State(supervisor): State<Arc<Supervisor>>, request: Request) -> Response {
    let Some((router, services)) = supervisor.current() else {
        supervisor.demand.notify_one();
        return Error::Storage(StorageError::Reopening).into_response();
    };
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if services.store.has_failed() {
        supervisor.demand.notify_one();
    }
    response
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;

    fn config(data_dir: &Path) -> Config {
        let mut config = Config {
            listen: vec!["127.0.0.1:0".into()],
            data_dir: data_dir.to_path_buf(),
            log_level: "warn".into(),
            ..Config::default()
        };
        config.rate_limits.enabled = false;
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_store_is_reopened_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let server = crate::start(config(dir.path())).await.unwrap();
        let base = server.base_url();
        let http = reqwest::Client::new();
        let registered: Value = http
            .post(format!("{base}/_matrix/client/v3/register"))
            .json(&json!({
                "username": "alice",
                "password": "correct horse battery",
                "auth": { "type": "m.login.dummy" },
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = registered["access_token"].as_str().unwrap().to_owned();
        let whoami = || {
            http.get(format!("{base}/_matrix/client/v3/account/whoami"))
                .bearer_auth(&token)
                .send()
        };

        let failed = server.services();
        failed.store.fail_for_tests("disk full");
        let closed = failed.store.closed();
        drop(failed);
        // Reads still work on the failed store; the request that meets it asks for a reopen,
        // which closes the database once requests let go of it.
        assert_eq!(whoami().await.unwrap().status(), 200);
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the failed database is closed");
        let mut reopened = None;
        for _ in 0..200 {
            let status = whoami().await.unwrap().status();
            assert!(status == 200 || status == 503, "{status}");
            if status == 200
                && let Some(services) = server.try_services()
            {
                reopened = Some(services);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reopened = reopened.expect("serving again");
        assert!(!reopened.store.has_failed());
        drop(reopened);
        server.shutdown().await.unwrap();
    }
}
