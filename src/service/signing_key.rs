//! The server's ed25519 signing key: generated on first start, kept in the data directory.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ruma::signatures::Ed25519KeyPair;

use crate::error::{Error, Result};
use crate::util::random_string;

const FILE: &str = "signing.key";

pub struct SigningKey {
    pub key_id: String,
    pub pair: Ed25519KeyPair,
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
        })
    }
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
