//! TURN credentials: coturn's "TURN REST API" scheme (`use-auth-secret`). The username is
//! `<expiry unix time>:<user ID>` and the password base64(HMAC-SHA1(shared secret, username)):
//! the TURN server recomputes the password with the same secret and refuses the username once
//! its time has passed, so nothing is stored or sent between the two servers.

use base64::Engine;
use hmac::{KeyInit, Mac};
use ruma::UserId;
use serde::Serialize;

use crate::config::TurnConfig;

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Credentials for the configured TURN server.
#[derive(Debug, Clone, Serialize)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    /// How long they stay valid, in seconds.
    pub ttl_secs: u64,
}

/// Credentials valid from `now_secs` (unix time) for `ttl_secs`; `None` when no TURN server
/// is configured.
pub fn credentials(config: &TurnConfig, user: &UserId, now_secs: u64) -> Option<TurnCredentials> {
    let secret = config.shared_secret.as_deref()?;
    if config.uris.is_empty() {
        return None;
    }
    let expiry = now_secs.saturating_add(config.ttl_secs);
    let username = format!("{expiry}:{user}");
    // HMAC takes keys of any length.
    let mut mac = HmacSha1::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Some(TurnCredentials {
        username,
        password,
        uris: config.uris.clone(),
        ttl_secs: config.ttl_secs,
    })
}

/// The present as unix time in seconds.
pub fn now_secs() -> u64 {
    crate::util::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_base64_hmac_sha1_of_the_username() {
        let config = TurnConfig {
            uris: vec!["turn:turn.example.org:3478?transport=udp".into()],
            shared_secret: Some("north".into()),
            ttl_secs: 600,
        };
        let user = ruma::user_id!("@alice:example.org");
        let creds = credentials(&config, user, 1_700_000_000).unwrap();
        assert_eq!(creds.username, "1700000600:@alice:example.org");
        // python3 -c 'import hmac,hashlib,base64; print(base64.b64encode(hmac.new(b"north",
        //   b"1700000600:@alice:example.org", hashlib.sha1).digest()).decode())'
        assert_eq!(creds.password, "gdic0V2MZf+LtqT7i2kJKJOaCVI=");
        assert_eq!(creds.ttl_secs, 600);
        assert_eq!(creds.uris, config.uris);
    }

    #[test]
    fn nothing_without_a_server() {
        let user = ruma::user_id!("@alice:example.org");
        assert!(credentials(&TurnConfig::default(), user, 0).is_none());
        let no_uris = TurnConfig {
            shared_secret: Some("s".into()),
            ..TurnConfig::default()
        };
        assert!(credentials(&no_uris, user, 0).is_none());
    }
}
