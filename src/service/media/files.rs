//! The media files on disk, content-addressed by SHA-256 under `<data_dir>/media`:
//!
//! ```text
//! media/content/ab/cd/abcd…          one file per distinct content (de-duplicated)
//! media/thumbnails/ab/cd/abcd…/…     the cached thumbnails of that content
//! media/tmp/                         uploads and thumbnails being written
//! ```
//!
//! Files are written under `tmp/` (the same file system), synced, then renamed into place, so a
//! content path only ever names a complete file.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// The media directory of a data directory.
pub struct Files {
    root: PathBuf,
}

/// A file under `tmp/`, removed when dropped unless it was moved into place.
pub struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl TempFile {
    fn new(path: PathBuf) -> Self {
        Self { path, armed: true }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// An upload written to a temporary file, with its hash and size.
pub struct Staged {
    pub file: TempFile,
    pub sha256: String,
    pub size: u64,
}

/// Whether `s` is a SHA-256 in lowercase hex (so that it is safe in a path).
fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::internal(format!("media files: {what}: {e}"))
}

impl Files {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            root: data_dir.join("media"),
        }
    }

    fn sharded(&self, kind: &str, sha256: &str) -> Result<PathBuf> {
        if !is_sha256_hex(sha256) {
            return Err(Error::internal(format!("not a SHA-256: {sha256:?}")));
        }
        Ok(self
            .root
            .join(kind)
            .join(&sha256[0..2])
            .join(&sha256[2..4])
            .join(sha256))
    }

    /// Where the content with this hash is stored.
    pub fn content_path(&self, sha256: &str) -> Result<PathBuf> {
        self.sharded("content", sha256)
    }

    /// The directory of the cached thumbnails of this content.
    pub fn thumbnail_dir(&self, sha256: &str) -> Result<PathBuf> {
        self.sharded("thumbnails", sha256)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A new, empty temporary file.
    async fn temp_file(&self) -> Result<(TempFile, tokio::fs::File)> {
        let dir = self.tmp_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io_error("creating the temporary directory", e))?;
        let temp = TempFile::new(dir.join(crate::util::random_string(24)));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp.path())
            .await
            .map_err(|e| io_error("creating a temporary file", e))?;
        Ok((temp, file))
    }

    /// Writes a body to a temporary file while hashing it, chunk by chunk (never whole in
    /// memory); more than `limit` bytes fail with 413 `M_TOO_LARGE` and leave nothing behind.
    pub async fn stage<S, B, E>(&self, mut body: S, limit: u64) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<B, E>> + Unpin,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let (temp, mut file) = self.temp_file().await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                let message = e.to_string();
                // The body limit of the HTTP layer, if one is ever added.
                if message.contains("length limit") {
                    Error::TooLarge(format!("the upload exceeds {limit} bytes"))
                } else {
                    Error::Unknown(format!("the upload was interrupted: {message}"))
                }
            })?;
            let chunk = chunk.as_ref();
            size = size.saturating_add(chunk.len() as u64);
            if size > limit {
                return Err(Error::TooLarge(format!("the upload exceeds {limit} bytes")));
            }
            hasher.update(chunk);
            file.write_all(chunk)
                .await
                .map_err(|e| io_error("writing an upload", e))?;
        }
        file.flush()
            .await
            .map_err(|e| io_error("writing an upload", e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error("syncing an upload", e))?;
        Ok(Staged {
            file: temp,
            sha256: hex::encode(hasher.finalize()),
            size,
        })
    }

    /// Writes `bytes` to a temporary file and syncs it.
    pub async fn stage_bytes(&self, bytes: &[u8]) -> Result<TempFile> {
        let (temp, mut file) = self.temp_file().await?;
        file.write_all(bytes)
            .await
            .map_err(|e| io_error("writing a thumbnail", e))?;
        file.sync_all()
            .await
            .map_err(|e| io_error("syncing a thumbnail", e))?;
        Ok(temp)
    }

    /// Moves a temporary file to `target` (creating its directory), unless `target` already
    /// exists (the same content stored before), in which case the temporary file is dropped.
    pub async fn place(&self, mut temp: TempFile, target: &Path) -> Result<()> {
        if tokio::fs::try_exists(target).await.unwrap_or(false) {
            return Ok(());
        }
        let Some(dir) = target.parent() else {
            return Err(Error::internal("a media path without a directory"));
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| io_error("creating a media directory", e))?;
        tokio::fs::rename(temp.path(), target)
            .await
            .map_err(|e| io_error("moving a file into place", e))?;
        temp.armed = false;
        // The rename itself must survive a crash too.
        if let Ok(dir) = tokio::fs::File::open(dir).await {
            let _ = dir.sync_all().await;
        }
        Ok(())
    }

    /// Removes the content with this hash and its thumbnails.
    pub async fn remove(&self, sha256: &str) -> Result<()> {
        let path = self.content_path(sha256)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing a media file", e)),
        }
        let thumbs = self.thumbnail_dir(sha256)?;
        match tokio::fs::remove_dir_all(&thumbs).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("removing thumbnails", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sharded_and_only_for_hashes() {
        let files = Files::new(Path::new("/data"));
        let sha = "ab".repeat(32);
        assert_eq!(
            files.content_path(&sha).unwrap(),
            Path::new("/data/media/content/ab/ab").join(&sha)
        );
        assert!(files.content_path("../../etc/passwd").is_err());
        assert!(files.content_path(&"AB".repeat(32)).is_err());
    }
}
