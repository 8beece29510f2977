//! The server's ed25519 signing key: generated on first start, kept in the data directory.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::Ed25519KeyPair;

use crate::error::{Error, Result};
use crate::util::random_string;

const FILE: &str = "signing.key";

/// Keys this server signed with before, one per line: `ed25519 <version> <base64 public key>
/// <expired_ts>`. Published as `old_verify_keys`, so that what they signed still verifies.
const OLD_FILE: &str = "signing.key.old";

pub struct SigningKey {
    pub key_id: String,
    pub pair: Ed25519KeyPair,
    /// Keys no longer used to sign, with when they stopped being used.
    pub old_keys: Vec<OldKey>,
}

/// A key this server no longer signs with.
#[derive(Debug, Clone)]
pub struct OldKey {
    pub key_id: String,
    /// Unpadded standard base64.
    pub public_key: String,
    pub expired_ts: u64,
}

impl SigningKey {
    /// The file holds one line: `ed25519 <version> <base64 PKCS#8 document>`.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let der = Ed25519KeyPair::generate();
                let version = random_string(6);
                let line = format!("ed25519 {version} {}\n", STANDARD_NO_PAD.encode(&der));
                write_private(&path, &line)?;
                line
            }
            Err(e) => return Err(Error::internal(format!("{}: {e}", path.display()))),
        };
        let mut parts = text.split_whitespace();
        let (Some("ed25519"), Some(version), Some(doc)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::internal(format!("{} is malformed", path.display())));
        };
        let der = STANDARD_NO_PAD
            .decode(doc)
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        let pair = Ed25519KeyPair::from_der(&der, version.to_owned())
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        Ok(Self {
            key_id: format!("ed25519:{version}"),
            pair,
            old_keys: read_old_keys(&data_dir.join(OLD_FILE))?,
        })
    }

    /// Replaces the signing key with a new one; the current key is kept as an old key that
    /// expired now. The server must be restarted to use it.
    pub fn rotate(data_dir: &Path) -> Result<String> {
        let current = Self::load_or_create(data_dir)?;
        let line = format!(
            "{} {} {}\n",
            current.key_id.replacen(':', " ", 1),
            STANDARD_NO_PAD.encode(current.pair.public_key()),
            crate::util::now_ms()
        );
        append(&data_dir.join(OLD_FILE), &line)?;
        let path = data_dir.join(FILE);
        let retired = data_dir.join(format!("{FILE}.retired-{}", crate::util::now_ms()));
        std::fs::rename(&path, &retired)
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        Ok(Self::load_or_create(data_dir)?.key_id)
    }
}

fn read_old_keys(path: &Path) -> Result<Vec<OldKey>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::internal(format!("{}: {e}", path.display()))),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            match parts.as_slice() {
                ["ed25519", version, key, expired] => Ok(OldKey {
                    key_id: format!("ed25519:{version}"),
                    public_key: (*key).to_owned(),
                    expired_ts: expired.parse().map_err(|_| {
                        Error::internal(format!("{}: bad expiry `{expired}`", path.display()))
                    })?,
                }),
                _ => Err(Error::internal(format!("{} is malformed", path.display()))),
            }
        })
        .collect()
}

fn append(path: &Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    file.write_all(line.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::internal(format!("{}: {e}", path.display())))
}
