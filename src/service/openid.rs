//! OpenID tokens: a client asks for one (`POST /user/{userId}/openid/request_token`) and hands
//! it to a third-party service, which asks us who it belongs to
//! (`GET /_matrix/federation/v1/openid/userinfo`). A token proves the user's identity and
//! nothing else: it is good for that one question, for an hour. Tokens are stored by their
//! SHA-256 only, so the store never holds one that could be used.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::Services;
use crate::error::{Error, Result};
use crate::storage::{Tree, trees};
use crate::util::{now_ms, random_string, sha256_hex};

/// How long an OpenID token is good for.
pub const OPENID_TOKEN_LIFETIME_MS: u64 = 3_600_000;
/// The length of a token (alphanumeric, from the OS-seeded RNG).
const TOKEN_LEN: usize = 32;
/// The most expired tokens removed when a new one is made.
const MAX_PURGE: usize = 100;

#[derive(Serialize, Deserialize)]
struct TokenRecord {
    user_id: OwnedUserId,
    expires_at: u64,
}

/// A new OpenID token and how long it is good for.
pub struct OpenIdToken {
    pub access_token: String,
    pub expires_in_ms: u64,
}

impl Services {
    fn openid_tokens(&self) -> Result<Tree> {
        Ok(self.store.tree(trees::OPENIDTOKEN_USERID)?)
    }

    /// A new OpenID token for `user`.
    pub async fn request_openid_token(&self, user: &UserId) -> Result<OpenIdToken> {
        let tokens = self.openid_tokens()?;
        let now = now_ms();
        self.purge_expired_openid_tokens(&tokens, now)?;
        let token = random_string(TOKEN_LEN);
        let record = TokenRecord {
            user_id: user.to_owned(),
            expires_at: now + OPENID_TOKEN_LIFETIME_MS,
        };
        tokens.put(sha256_hex(&token), serde_json::to_vec(&record)?)?;
        self.store.durable().await?;
        Ok(OpenIdToken {
            access_token: token,
            expires_in_ms: OPENID_TOKEN_LIFETIME_MS,
        })
    }

    /// The user an OpenID token was made for; 401 `M_UNKNOWN_TOKEN` when it is unknown or
    /// expired.
    pub fn openid_user(&self, token: &str) -> Result<OwnedUserId> {
        let unknown = || Error::UnknownToken {
            message: "unknown or expired OpenID token".into(),
            soft_logout: false,
        };
        let tokens = self.openid_tokens()?;
        let key = sha256_hex(token);
        let record: TokenRecord = match tokens.get(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => return Err(unknown()),
        };
        if record.expires_at <= now_ms() {
            tokens.delete(&key)?;
            return Err(unknown());
        }
        Ok(record.user_id)
    }

    /// Removes some expired tokens: a bounded number from a random point of the tree on, so
    /// that making a token stays cheap whatever the tree holds, and every part of it is looked
    /// at in time.
    fn purge_expired_openid_tokens(&self, tokens: &Tree, now: u64) -> Result<()> {
        let start = sha256_hex(random_string(TOKEN_LEN));
        let entries = tokens
            .range(start.as_bytes(), b"~")
            .chain(tokens.range(b"", start.as_bytes()))
            .take(MAX_PURGE);
        let mut expired = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let gone = serde_json::from_slice::<TokenRecord>(&value)
                .map_or(true, |record| record.expires_at <= now);
            if gone {
                expired.push(key);
            }
        }
        for key in expired {
            tokens.delete(&key)?;
        }
        Ok(())
    }
}
