//! The content repository: uploads (direct, and asynchronous through created media IDs),
//! metadata, quotas, downloads waiting for pending uploads, thumbnails and deletion.
//!
//! Metadata lives in the store, keyed by (server name, media ID) so that remote media can join
//! it later; the bytes live on disk, content-addressed and de-duplicated (see [`files`]). A
//! stored file is shared by every media item with the same SHA-256 (`sha256_refcount`) and
//! removed with the last of them.

pub mod files;
pub mod remote;
pub mod thumbnail;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::Stream;
use ruma::{OwnedServerName, ServerName, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, TxError, abort, keys, trees};
use crate::util::{now_ms, random_string};
use files::{Files, Staged};
use thumbnail::{Method, Plan};

/// Length of generated media IDs (alphanumeric, from the OS-seeded RNG: about 190 bits).
pub const MEDIA_ID_LEN: usize = 32;

/// The longest media ID accepted in a request.
pub const MAX_MEDIA_ID_LEN: usize = 255;

/// How long a download waits for a pending upload unless told otherwise, and at most.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// The longest file name kept from an upload.
const MAX_FILENAME_BYTES: usize = 1024;

/// Thumbnails generated at the same time (each decodes a whole image).
const CONCURRENT_THUMBNAILS: usize = 2;

/// A media item's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaRecord {
    pub server_name: String,
    pub media_id: String,
    pub uploader: String,
    pub created_ts: u64,
    /// `None` while a created media ID waits for its content.
    pub content: Option<Content>,
    /// When a created media ID without content expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_expires_at: Option<u64>,
}

/// The content of an uploaded media item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Content {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    pub uploaded_ts: u64,
    /// Whether the deprecated unauthenticated routes may serve it (decided at upload time).
    pub legacy_access: bool,
}

/// A cached thumbnail.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ThumbRecord {
    content_type: String,
    size: u64,
    width: u32,
    height: u32,
}

/// A file to serve: where it is, its size, its type and a file name.
#[derive(Debug, Clone)]
pub struct Servable {
    pub path: PathBuf,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

/// A thumbnail request.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

enum State {
    Missing,
    Pending { expires_at: u64 },
    Ready(Box<Content>),
}

pub struct Media {
    store: Store,
    config: Arc<Config>,
    server_name: OwnedServerName,
    files: Files,
    media: Tree,
    refcount: Tree,
    usage: Tree,
    user_media: Tree,
    pending: Tree,
    thumbs: Tree,
    /// Serialises moving files into place or removing them with the reference counts that
    /// justify it, so that a file is never removed while a new reference to it is being made.
    content_lock: tokio::sync::Mutex<()>,
    /// Serialises counting a user's pending uploads with creating one.
    create_lock: Mutex<()>,
    /// Downloads waiting for a pending upload, by media key: woken when it completes.
    waiters: Mutex<HashMap<Vec<u8>, watch::Sender<()>>>,
    thumbnail_permits: Semaphore,
    /// One fetch of a remote media item at a time (see [`remote`]).
    remote_fetches: remote::RemoteFetches,
}

fn media_key(server: &str, media_id: &str) -> Vec<u8> {
    keys::pair(server, media_id)
}

fn user_media_key(user: &str, server: &str, media_id: &str) -> Vec<u8> {
    let mut key = keys::prefix(user);
    key.extend_from_slice(&keys::pair(server, media_id));
    key
}

fn thumb_key(sha256: &str, width: u32, height: u32, method: Method, animated: bool) -> Vec<u8> {
    let mut key = keys::prefix(sha256);
    key.extend_from_slice(&width.to_be_bytes());
    key.extend_from_slice(&height.to_be_bytes());
    key.push(method.as_byte());
    key.push(u8::from(animated));
    key
}

fn read_u64(value: Option<crate::storage::Bytes>) -> u64 {
    value.and_then(|v| keys::read_u64_be(&v)).unwrap_or(0)
}

/// Whether `id` may be a media ID: 1 to 255 of `A-Za-z0-9_-` (which also keeps it out of
/// harm's way in paths and keys).
pub fn is_valid_media_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MEDIA_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Splits `mxc://<server-name>/<media-id>` into its parts, both checked.
pub fn parse_mxc(uri: &str) -> Option<(&str, &str)> {
    let (server, media_id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    (ServerName::parse(server).is_ok() && is_valid_media_id(media_id)).then_some((server, media_id))
}

/// The content type to record for an upload's `Content-Type` header: a plausible
/// `type/subtype[; params]` of visible ASCII, otherwise `application/octet-stream`.
pub fn normalise_content_type(header: Option<&str>) -> String {
    const DEFAULT: &str = "application/octet-stream";
    let Some(value) = header.map(str::trim) else {
        return DEFAULT.into();
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let plausible = value.len() <= 255
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !s.contains('/'));
    if plausible {
        value.to_owned()
    } else {
        DEFAULT.into()
    }
}

impl Media {
    pub fn new(store: &Store, config: Arc<Config>, server_name: OwnedServerName) -> Result<Self> {
        Ok(Self {
            files: Files::new(&config.data_dir),
            media: store.tree(trees::MEDIAKEY_MEDIA)?,
            refcount: store.tree(trees::SHA256_REFCOUNT)?,
            usage: store.tree(trees::USERID_MEDIAUSAGE)?,
            user_media: store.tree(trees::USERID_MEDIAKEY)?,
            pending: store.tree(trees::USERID_PENDINGMEDIA)?,
            thumbs: store.tree(trees::SHA256_THUMBNAIL)?,
            store: store.clone(),
            config,
            server_name,
            content_lock: tokio::sync::Mutex::new(()),
            create_lock: Mutex::new(()),
            waiters: Mutex::new(HashMap::new()),
            thumbnail_permits: Semaphore::new(CONCURRENT_THUMBNAILS),
            remote_fetches: Default::default(),
        })
    }

    pub fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    /// The files on disk.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The record of a media item, if any.
    pub fn get(&self, server: &str, media_id: &str) -> Result<Option<MediaRecord>> {
        match self.media.get(media_key(server, media_id))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The bytes of a user's uploads.
    pub fn usage(&self, user: &UserId) -> Result<u64> {
        Ok(read_u64(self.usage.get(user.as_str())?))
    }

    /// How many media items use the stored file with this hash.
    pub fn references(&self, sha256: &str) -> Result<u64> {
        Ok(read_u64(self.refcount.get(sha256)?))
    }

    fn state(&self, server: &str, media_id: &str) -> Result<State> {
        Ok(match self.get(server, media_id)? {
            None => State::Missing,
            Some(MediaRecord {
                content: Some(content),
                ..
            }) => State::Ready(Box::new(content)),
            Some(MediaRecord {
                unused_expires_at, ..
            }) => match unused_expires_at {
                Some(at) if at > now_ms() => State::Pending { expires_at: at },
                _ => State::Missing,
            },
        })
    }

    /// Checks what can be checked before reading an upload's body: its declared size against
    /// the upload limit and the user's quota.
    fn check_size(&self, user: &UserId, declared: Option<u64>) -> Result<()> {
        let limit = self.config.media.max_upload_bytes;
        if let Some(n) = declared {
            if n > limit {
                return Err(Error::TooLarge(format!(
                    "the upload exceeds the limit of {limit} bytes"
                )));
            }
            self.check_quota(self.usage(user)?, n)?;
        }
        Ok(())
    }

    fn check_quota(&self, used: u64, more: u64) -> Result<()> {
        let quota = self.config.media.max_bytes_per_user;
        if quota > 0 && used.saturating_add(more) > quota {
            return Err(Error::Forbidden(format!(
                "this upload would exceed your media quota of {quota} bytes \
                 ({used} bytes used)"
            )));
        }
        Ok(())
    }

    fn check_filename(filename: Option<String>) -> Result<Option<String>> {
        match filename {
            Some(name) if name.len() > MAX_FILENAME_BYTES => Err(Error::InvalidParam(format!(
                "the file name is longer than {MAX_FILENAME_BYTES} bytes"
            ))),
            Some(name) if name.is_empty() => Ok(None),
            other => Ok(other),
        }
    }

    /// `POST /upload`: stores the body as a new media item; returns its media ID.
    pub async fn upload<S, B, E>(
        &self,
        user: &UserId,
        content_type: Option<&str>,
        filename: Option<String>,
        declared: Option<u64>,
        body: S,
    ) -> Result<String>
    where
        S: Stream<Item = std::result::Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let filename = Self::check_filename(filename)?;
        self.check_size(user, declared)?;
        let staged = self
            .files
            .stage(body, self.config.media.max_upload_bytes)
            .await?;
        let media_id = random_string(MEDIA_ID_LEN);
        let server = self.server_name.to_string();
        let content = self.content_of(&staged, content_type, filename);
        self.commit(user, &server, &media_id, staged, content, false)
            .await?;
        Ok(media_id)
    }

    /// `PUT /upload/{serverName}/{mediaId}`: the content of a media ID created earlier by the
    /// same user.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_created<S, B, E>(
        &self,
        user: &UserId,
        server: &str,
        media_id: &str,
        content_type: Option<&str>,
        filename: Option<String>,
        declared: Option<u64>,
        body: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::result::Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let filename = Self::check_filename(filename)?;
        // Checked before reading the body, and again when committing.
        Self::check_created(self.get(server, media_id)?, user)?;
        self.check_size(user, declared)?;
        let staged = self
            .files
            .stage(body, self.config.media.max_upload_bytes)
            .await?;
        let content = self.content_of(&staged, content_type, filename);
        self.commit(user, server, media_id, staged, content, true)
            .await
    }

    /// Whether `user` may upload the content of this created media ID.
    fn check_created(record: Option<MediaRecord>, user: &UserId) -> Result<()> {
        let Some(record) = record else {
            return Err(Error::NotFound("unknown media ID".into()));
        };
        if record.uploader != user.as_str() {
            return Err(Error::Forbidden(
                "this media ID was created by another user".into(),
            ));
        }
        if record.content.is_some() {
            return Err(Error::CannotOverwriteMedia(
                "this media ID already has content".into(),
            ));
        }
        if record.unused_expires_at.is_none_or(|at| at <= now_ms()) {
            return Err(Error::NotFound("this media ID has expired".into()));
        }
        Ok(())
    }

    fn content_of(
        &self,
        staged: &Staged,
        content_type: Option<&str>,
        filename: Option<String>,
    ) -> Content {
        Content {
            sha256: staged.sha256.clone(),
            size: staged.size,
            content_type: normalise_content_type(content_type),
            filename,
            uploaded_ts: now_ms(),
            legacy_access: self.config.media.legacy_unauthenticated_downloads,
        }
    }

    /// Moves the staged file into place and records the media item (its record, the file's
    /// reference, the user's usage and index) in one transaction, then makes it durable and
    /// wakes the downloads waiting for it.
    async fn commit(
        &self,
        user: &UserId,
        server: &str,
        media_id: &str,
        staged: Staged,
        content: Content,
        created: bool,
    ) -> Result<()> {
        let key = media_key(server, media_id);
        let user_key = user_media_key(user.as_str(), server, media_id);
        let sha256 = content.sha256.clone();
        let size = content.size;
        {
            let _guard = self.content_lock.lock().await;
            let target = self.files.content_path(&sha256)?;
            self.files.place(staged.file, &target).await?;
            let now = now_ms();
            let result = self.store.transact(
                &[
                    &self.media,
                    &self.refcount,
                    &self.usage,
                    &self.user_media,
                    &self.pending,
                ],
                |t| {
                    let existing: Option<MediaRecord> = match t[0].get(&key)? {
                        Some(v) => Some(serde_json::from_slice(&v).map_err(|e| abort(e.into()))?),
                        None => None,
                    };
                    let created_ts = if created {
                        let record = existing.clone();
                        Self::check_created(record, user).map_err(abort)?;
                        existing.as_ref().map_or(now, |r| r.created_ts)
                    } else {
                        if existing.is_some() {
                            return Err(abort(Error::internal("media ID collision")));
                        }
                        now
                    };
                    let used = read_u64(t[2].get(user.as_str())?);
                    self.check_quota(used, size).map_err(abort)?;
                    let refs = read_u64(t[1].get(&sha256)?);
                    t[1].put(&sha256, keys::u64_be(refs + 1).to_vec())?;
                    t[2].put(user.as_str(), keys::u64_be(used + size).to_vec())?;
                    let record = MediaRecord {
                        server_name: server.to_owned(),
                        media_id: media_id.to_owned(),
                        uploader: user.to_string(),
                        created_ts,
                        content: Some(content.clone()),
                        unused_expires_at: None,
                    };
                    let value =
                        serde_json::to_vec(&record).map_err(|e| abort(Error::internal(e)))?;
                    t[0].put(&key, value)?;
                    t[3].put(&user_key, Vec::new())?;
                    t[4].delete(&user_key)?;
                    Ok(())
                },
            );
            if let Err(e) = result {
                // The file placed above may be referenced by nothing.
                if self.references(&sha256)? == 0 {
                    self.files.remove(&sha256).await?;
                }
                return Err(e.into());
            }
        }
        self.store.durable().await?;
        self.wake(&key);
        Ok(())
    }

    /// `POST /create`: a new media ID whose content the user uploads later; returns it with its
    /// expiry. 429 `M_LIMIT_EXCEEDED` when the user already has too many pending.
    pub async fn create(&self, user: &UserId) -> Result<(String, u64)> {
        let media_id = random_string(MEDIA_ID_LEN);
        let server = self.server_name.to_string();
        let now = now_ms();
        let expires_at = now + self.config.media.unused_expiry_secs * 1000;
        {
            let _guard = self.create_lock.lock().unwrap_or_else(|e| e.into_inner());
            // The user's pending uploads: expired ones are cleared, the others counted.
            let mut live = Vec::new();
            let mut expired = Vec::new();
            for entry in self.pending.scan_prefix(keys::prefix(user.as_str())) {
                let (k, v) = entry?;
                let at = keys::read_u64_be(&v).unwrap_or(0);
                if at > now {
                    live.push(at);
                } else {
                    expired.push(k.to_vec());
                }
            }
            if live.len() >= self.config.media.max_pending_uploads as usize {
                let earliest = live.iter().min().copied().unwrap_or(now);
                return Err(Error::LimitExceeded {
                    retry_after_ms: earliest.saturating_sub(now).max(1000),
                });
            }
            let record = MediaRecord {
                server_name: server.clone(),
                media_id: media_id.clone(),
                uploader: user.to_string(),
                created_ts: now,
                content: None,
                unused_expires_at: Some(expires_at),
            };
            let value = serde_json::to_vec(&record)?;
            let user_key = user_media_key(user.as_str(), &server, &media_id);
            let prefix_len = keys::prefix(user.as_str()).len();
            self.store
                .transact(&[&self.media, &self.user_media, &self.pending], |t| {
                    for k in &expired {
                        // (user, server, media ID) → the media key (server, media ID).
                        let media = &k[prefix_len..];
                        if let Some(v) = t[0].get(media)? {
                            let old: MediaRecord =
                                serde_json::from_slice(&v).map_err(|e| abort(Error::from(e)))?;
                            if old.content.is_none() {
                                t[0].delete(media)?;
                                t[1].delete(k)?;
                            }
                        }
                        t[2].delete(k)?;
                    }
                    t[0].put(media_key(&server, &media_id), value.clone())?;
                    t[1].put(&user_key, Vec::new())?;
                    t[2].put(&user_key, keys::u64_be(expires_at).to_vec())?;
                    Ok::<_, TxError<Error>>(())
                })?;
        }
        self.store.durable().await?;
        Ok((media_id, expires_at))
    }

    /// Subscribes to the completion of a media item.
    fn subscribe(&self, key: &[u8]) -> Waiter<'_> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let rx = waiters
            .entry(key.to_vec())
            .or_insert_with(|| watch::channel(()).0)
            .subscribe();
        Waiter {
            media: self,
            key: key.to_vec(),
            rx: Some(rx),
        }
    }

    /// Wakes the downloads waiting for a media item.
    fn wake(&self, key: &[u8]) {
        let sender = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(sender) = sender {
            sender.send_replace(());
        }
    }

    /// The content of a local media item, waiting up to `wait` for a created one to be
    /// uploaded: 404 `M_NOT_FOUND` when there is none (or not on the legacy routes when
    /// `legacy` and the item may not be served there), 504 `M_NOT_YET_UPLOADED` after the wait.
    pub async fn content(
        &self,
        server: &str,
        media_id: &str,
        wait: Duration,
        legacy: bool,
    ) -> Result<Content> {
        if server != self.server_name.as_str() {
            // Another server's media, as cached here (fetching it is federation's).
            return self.cached_remote(server, media_id, legacy);
        }
        let key = media_key(server, media_id);
        // Subscribed before looking, so an upload completing in between still wakes us.
        let mut waiter = self.subscribe(&key);
        let content = match self.state(server, media_id)? {
            State::Missing => return Err(Error::NotFound("media not found".into())),
            State::Ready(content) => *content,
            State::Pending { expires_at } => {
                let until_expiry = Duration::from_millis(expires_at.saturating_sub(now_ms()));
                let wait = wait.min(MAX_WAIT).min(until_expiry);
                if let Some(rx) = waiter.rx.as_mut() {
                    let _ = tokio::time::timeout(wait, rx.changed()).await;
                }
                match self.state(server, media_id)? {
                    State::Missing => return Err(Error::NotFound("media not found".into())),
                    State::Ready(content) => *content,
                    State::Pending { .. } => {
                        return Err(Error::NotYetUploaded(
                            "the media has not been uploaded yet".into(),
                        ));
                    }
                }
            }
        };
        drop(waiter);
        if legacy && !content.legacy_access {
            return Err(Error::NotFound(
                "media not found (this media is only served through the authenticated \
                 /_matrix/client/v1/media endpoints)"
                    .into(),
            ));
        }
        Ok(content)
    }

    /// The file of a media item's content.
    pub fn servable(&self, content: &Content) -> Result<Servable> {
        Ok(Servable {
            path: self.files.content_path(&content.sha256)?,
            size: content.size,
            content_type: content.content_type.clone(),
            filename: content.filename.clone(),
        })
    }

    /// A thumbnail of a media item's content: generated once, then served from the cache.
    /// The requested size is snapped down to a fixed set first ([`thumbnail::snap`]), so each
    /// content has a bounded number of cached thumbnails, none larger than asked. 400
    /// `M_UNKNOWN` for content that is not an image we thumbnail, 413 `M_TOO_LARGE` for a source
    /// with too many pixels, 404 `M_NOT_FOUND` if the content is deleted meanwhile.
    pub async fn thumbnail(
        &self,
        content: &Content,
        request: ThumbnailRequest,
    ) -> Result<Servable> {
        let Some(declared) = thumbnail::source_format(&content.content_type) else {
            return Err(Error::Unknown(
                "cannot generate thumbnails of this content type".into(),
            ));
        };
        let (width, height) = (
            thumbnail::snap(request.width),
            thumbnail::snap(request.height),
        );
        let method = request.method;
        // Cached by the (snapped) box asked for, so a cached thumbnail is found without looking
        // at the source; only GIFs are ever animated.
        let wants_animation = request.animated && declared == image::ImageFormat::Gif;
        let key = thumb_key(&content.sha256, width, height, method, wants_animation);
        let name = format!(
            "{width}x{height}-{}{}",
            method.as_byte() as char,
            if wants_animation { "-animated" } else { "" }
        );
        let path = self.files.thumbnail_dir(&content.sha256)?.join(name);
        // Cache hits neither decode nor wait for a permit.
        if let Some(hit) = self.cached_thumbnail(&key, &path).await? {
            return Ok(hit);
        }
        let source = self.files.content_path(&content.sha256)?;
        let max_pixels = self.config.media.thumbnail_max_source_pixels;
        // The header only (cheap): a source that already fits is served without a permit.
        let probe_path = source.clone();
        let (format, dims) =
            tokio::task::spawn_blocking(move || thumbnail::probe(&probe_path, max_pixels))
                .await
                .map_err(Error::internal)??;
        let gif = format == image::ImageFormat::Gif;
        let plan = thumbnail::plan(dims, width, height, method);
        if plan == Plan::Original && !gif {
            return self.servable(content);
        }
        let _permit = self
            .thumbnail_permits
            .acquire()
            .await
            .map_err(Error::internal)?;
        // Another request may have made it while this one waited.
        if let Some(hit) = self.cached_thumbnail(&key, &path).await? {
            return Ok(hit);
        }
        let animated = if wants_animation && gif {
            let path = source.clone();
            tokio::task::spawn_blocking(move || thumbnail::is_animated_gif(&path))
                .await
                .map_err(Error::internal)??
        } else {
            false
        };
        let (out_width, out_height) = match plan {
            // A still thumbnail of an animated source is never the (animated) original.
            Plan::Original if animated => return self.servable(content),
            Plan::Original => dims,
            Plan::Resize { width, height } => (width, height),
        };
        let thumb = tokio::task::spawn_blocking(move || {
            if animated {
                let animation =
                    thumbnail::animated_gif(&source, max_pixels, out_width, out_height, method)?;
                // Too many frames for the pixel budgets: a still thumbnail instead.
                if let Some(animation) = animation {
                    return Ok(animation);
                }
            }
            thumbnail::still(&source, format, max_pixels, out_width, out_height, method)
        })
        .await
        .map_err(Error::internal)??;
        let temp = self.files.stage_bytes(&thumb.bytes).await?;
        let record = ThumbRecord {
            content_type: thumb.content_type.to_owned(),
            size: thumb.bytes.len() as u64,
            width: thumb.width,
            height: thumb.height,
        };
        let value = serde_json::to_vec(&record)?;
        {
            // Under the lock deletion holds: if the last reference went while the thumbnail
            // was made, the content and its thumbnails are gone and this one is dropped too.
            let _guard = self.content_lock.lock().await;
            if self.references(&content.sha256)? == 0 {
                return Err(Error::NotFound("media not found".into()));
            }
            self.files.place(temp, &path).await?;
            self.thumbs.put(&key, value)?;
        }
        Ok(Servable {
            path,
            size: record.size,
            content_type: record.content_type,
            filename: None,
        })
    }

    /// A cached thumbnail, if its record and its file are both there.
    async fn cached_thumbnail(
        &self,
        key: &[u8],
        path: &std::path::Path,
    ) -> Result<Option<Servable>> {
        let Some(v) = self.thumbs.get(key)? else {
            return Ok(None);
        };
        let record: ThumbRecord = serde_json::from_slice(&v)?;
        if !tokio::fs::try_exists(path).await.unwrap_or(false) {
            return Ok(None);
        }
        Ok(Some(Servable {
            path: path.to_owned(),
            size: record.size,
            content_type: record.content_type,
            filename: None,
        }))
    }

    /// Deletes a media item (an admin action): its record, its share of the stored file (the
    /// file and its thumbnails go with the last reference) and its uploader's usage. Returns
    /// whether it existed.
    pub async fn delete(&self, server: &str, media_id: &str) -> Result<bool> {
        let key = media_key(server, media_id);
        let removed = {
            let _guard = self.content_lock.lock().await;
            let outcome = self.store.transact(
                &[
                    &self.media,
                    &self.refcount,
                    &self.usage,
                    &self.user_media,
                    &self.pending,
                ],
                |t| {
                    let Some(v) = t[0].get(&key)? else {
                        return Ok(None);
                    };
                    let record: MediaRecord =
                        serde_json::from_slice(&v).map_err(|e| abort(Error::from(e)))?;
                    let user_key = user_media_key(&record.uploader, server, media_id);
                    t[0].delete(&key)?;
                    t[3].delete(&user_key)?;
                    t[4].delete(&user_key)?;
                    let mut unreferenced = None;
                    if let Some(content) = &record.content {
                        let refs = read_u64(t[1].get(&content.sha256)?);
                        if refs <= 1 {
                            t[1].delete(&content.sha256)?;
                            unreferenced = Some(content.sha256.clone());
                        } else {
                            t[1].put(&content.sha256, keys::u64_be(refs - 1).to_vec())?;
                        }
                        let used = read_u64(t[2].get(record.uploader.as_str())?);
                        let left = used.saturating_sub(content.size);
                        if left == 0 {
                            t[2].delete(record.uploader.as_str())?;
                        } else {
                            t[2].put(record.uploader.as_str(), keys::u64_be(left).to_vec())?;
                        }
                    }
                    Ok::<_, TxError<Error>>(Some(unreferenced))
                },
            )?;
            match outcome {
                None => None,
                Some(unreferenced) => {
                    if let Some(sha256) = &unreferenced {
                        for entry in self.thumbs.scan_prefix(keys::prefix(sha256)) {
                            let (k, _) = entry?;
                            self.thumbs.delete(&k)?;
                        }
                    }
                    self.store.durable().await?;
                    if let Some(sha256) = &unreferenced {
                        self.files.remove(sha256).await?;
                    }
                    Some(())
                }
            }
        };
        // Downloads waiting for it answer 404 now.
        self.wake(&key);
        Ok(removed.is_some())
    }

    /// Deletes every media item a user created or uploaded; returns how many.
    pub async fn delete_user(&self, user: &UserId) -> Result<usize> {
        let prefix = keys::prefix(user.as_str());
        let mut items = Vec::new();
        for entry in self.user_media.scan_prefix(&prefix) {
            let (k, _) = entry?;
            let rest = &k[prefix.len()..];
            let Some(at) = rest.iter().position(|b| *b == keys::SEP) else {
                continue;
            };
            let server = std::str::from_utf8(&rest[..at]);
            let media = std::str::from_utf8(&rest[at + 1..]);
            if let (Ok(server), Ok(media)) = (server, media) {
                items.push((server.to_owned(), media.to_owned()));
            }
        }
        let mut deleted = 0;
        for (server, media_id) in items {
            if self.delete(&server, &media_id).await? {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

/// A download's subscription to a media item's completion; unsubscribes when dropped.
struct Waiter<'a> {
    media: &'a Media,
    key: Vec<u8>,
    rx: Option<watch::Receiver<()>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut waiters = self.media.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if waiters
            .get(&self.key)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            waiters.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_restricted_to_the_safe_alphabet() {
        assert!(is_valid_media_id("AQwafuaFswefuhsfAFAgsw"));
        assert!(is_valid_media_id("a_b-c"));
        assert!(!is_valid_media_id(""));
        assert!(!is_valid_media_id("../etc"));
        assert!(!is_valid_media_id("a.b"));
        assert!(!is_valid_media_id(&"a".repeat(256)));
        let id = random_string(MEDIA_ID_LEN);
        assert!(is_valid_media_id(&id) && id.len() >= 24);
    }

    #[test]
    fn mxc_uris_are_split_and_checked() {
        assert_eq!(
            parse_mxc("mxc://localhost/abc_-1"),
            Some(("localhost", "abc_-1"))
        );
        assert_eq!(
            parse_mxc("mxc://example.org:8448/x"),
            Some(("example.org:8448", "x"))
        );
        for bad in [
            "localhost/abc",
            "mxc://localhost",
            "mxc://localhost/",
            "mxc://bad host/a",
            "mxc://h/a/b",
        ] {
            assert_eq!(parse_mxc(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_types_are_kept_only_when_plausible() {
        assert_eq!(normalise_content_type(Some("image/png")), "image/png");
        assert_eq!(
            normalise_content_type(Some("text/plain; charset=utf-8")),
            "text/plain; charset=utf-8"
        );
        for bad in [
            None,
            Some(""),
            Some("png"),
            Some("a/b/c"),
            Some("text/\u{1}x"),
        ] {
            assert_eq!(normalise_content_type(bad), "application/octet-stream");
        }
    }
}
