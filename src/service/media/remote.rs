//! Media of other servers, cached in the content repository once fetched (the fetching is
//! federation's, see `service::federation::remote_media`): a record under the remote server's
//! name and the media ID, with no uploader (it counts against no user's quota), sharing the
//! content-addressed files with every other item of the same bytes. The second download of an
//! item is served from here without asking its server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::stream;

use super::{Content, Media, MediaRecord, media_key, normalise_content_type, read_u64};
use crate::error::{Error, Result};
use crate::service::federation::receiver::locks::{KeyedGuard, KeyedLocks};
use crate::storage::{TxError, abort, keys};
use crate::util::now_ms;

/// How long a failed fetch is answered from memory: the downloads that waited for it (and
/// those right after) get its error instead of each trying the server again.
const FAILURE_MEMORY: Duration = Duration::from_secs(10);
/// The most failures remembered at once.
const MAX_FAILURES: usize = 10_000;

/// The fetches of remote media in progress, one per item, and the recent failures.
#[derive(Default)]
pub struct RemoteFetches {
    locks: KeyedLocks<Vec<u8>>,
    failures: Mutex<HashMap<Vec<u8>, (Instant, Error)>>,
}

/// The same error again, for another download of the same item.
fn replay(error: &Error) -> Error {
    match error {
        Error::NotFound(message) => Error::NotFound(message.clone()),
        Error::TooLarge(message) => Error::TooLarge(message.clone()),
        Error::Remote {
            server,
            status,
            errcode,
            message,
        } => Error::Remote {
            server: server.clone(),
            status: *status,
            errcode: errcode.clone(),
            message: message.clone(),
        },
        other => Error::Unreachable(other.to_string()),
    }
}

/// A remote media item as its server sent it.
pub struct FetchedMedia {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

impl Media {
    /// The cached content of another server's media item: 404 when it is not cached (or not on
    /// the legacy routes when `legacy` and it may not be served there).
    pub(super) fn cached_remote(
        &self,
        server: &str,
        media_id: &str,
        legacy: bool,
    ) -> Result<Content> {
        let content = self
            .get(server, media_id)?
            .and_then(|record| record.content)
            .ok_or_else(|| Error::NotFound("media not found".into()))?;
        if legacy && !content.legacy_access {
            return Err(Error::NotFound("media not found".into()));
        }
        Ok(content)
    }

    /// Waits for the right to fetch a remote media item: one fetch per item at a time, so that
    /// concurrent downloads share it (whoever waited finds it cached).
    pub async fn lock_remote(&self, server: &str, media_id: &str) -> KeyedGuard<'_, Vec<u8>> {
        self.remote_fetches
            .locks
            .lock(&media_key(server, media_id))
            .await
    }

    /// The error of a fetch of this item that failed moments ago, if any.
    pub fn recent_remote_failure(&self, server: &str, media_id: &str) -> Option<Error> {
        let failures = self
            .remote_fetches
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures
            .get(&media_key(server, media_id))
            .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
            .map(|(_, error)| replay(error))
    }

    /// Remembers that a fetch of this item failed (see [`FAILURE_MEMORY`]).
    pub fn record_remote_failure(&self, server: &str, media_id: &str, error: &Error) {
        let mut failures = self
            .remote_fetches
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (at, _)| at.elapsed() < FAILURE_MEMORY);
        if failures.len() < MAX_FAILURES {
            failures.insert(media_key(server, media_id), (Instant::now(), replay(error)));
        }
    }

    /// Caches a remote media item (unless it is cached already) and returns its content.
    pub async fn cache_remote(
        &self,
        server: &str,
        media_id: &str,
        fetched: FetchedMedia,
    ) -> Result<Content> {
        if server == self.server_name.as_str() {
            return Err(Error::internal("our own media is not cached as remote"));
        }
        let limit = self.config.media.max_upload_bytes;
        let body = stream::iter([Ok::<_, std::convert::Infallible>(fetched.bytes)]);
        let staged = self.files.stage(body, limit).await?;
        let filename = Self::check_filename(fetched.filename).unwrap_or(None);
        let content = Content {
            sha256: staged.sha256.clone(),
            size: staged.size,
            content_type: normalise_content_type(fetched.content_type.as_deref()),
            filename,
            uploaded_ts: now_ms(),
            legacy_access: self.config.media.legacy_unauthenticated_downloads,
        };
        let key = media_key(server, media_id);
        let sha256 = content.sha256.clone();
        let guard = self.content_lock.lock().await;
        let target = self.files.content_path(&sha256)?;
        self.files.place(staged.file, &target).await?;
        let result = self.store.transact(&[&self.media, &self.refcount], |t| {
            if let Some(existing) = t[0].get(&key)? {
                let record: MediaRecord =
                    serde_json::from_slice(&existing).map_err(|e| abort(Error::from(e)))?;
                if let Some(content) = record.content {
                    return Ok(content);
                }
            }
            let refs = read_u64(t[1].get(&sha256)?);
            t[1].put(&sha256, keys::u64_be(refs + 1).to_vec())?;
            let record = MediaRecord {
                server_name: server.to_owned(),
                media_id: media_id.to_owned(),
                uploader: String::new(),
                created_ts: content.uploaded_ts,
                content: Some(content.clone()),
                unused_expires_at: None,
            };
            let value = serde_json::to_vec(&record).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(&key, value)?;
            Ok::<_, TxError<Error>>(content.clone())
        });
        let stored = match result {
            Ok(stored) => stored,
            Err(e) => {
                if self.references(&sha256)? == 0 {
                    self.files.remove(&sha256).await?;
                }
                return Err(e.into());
            }
        };
        if stored.sha256 != sha256 && self.references(&sha256)? == 0 {
            // Cached meanwhile with other bytes: the file placed above is nobody's.
            self.files.remove(&sha256).await?;
        }
        drop(guard);
        self.store.durable().await?;
        Ok(stored)
    }
}
