//! Registration tokens (`m.login.registration_token`), managed from the CLI.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, trees};
use crate::util::{now_ms, random_string};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    pub token: String,
    /// `None`: unlimited.
    pub uses_allowed: Option<u64>,
    pub completed: u64,
    /// Milliseconds since the epoch; `None`: never expires.
    pub expiry_time: Option<u64>,
}

impl TokenInfo {
    pub fn is_valid(&self) -> bool {
        self.uses_allowed.is_none_or(|n| self.completed < n)
            && self.expiry_time.is_none_or(|t| t > now_ms())
    }
}

pub struct RegistrationTokens {
    store: Store,
    tree: Tree,
}

/// The grammar of the spec: 1 to 64 characters of `[A-Za-z0-9._~-]`.
pub fn is_valid_token_syntax(token: &str) -> bool {
    (1..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

impl RegistrationTokens {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::REGTOKEN_INFO)?,
        })
    }

    pub fn create(
        &self,
        token: Option<String>,
        uses_allowed: Option<u64>,
        expiry_time: Option<u64>,
    ) -> Result<TokenInfo> {
        let token = token.unwrap_or_else(|| random_string(16));
        if !is_valid_token_syntax(&token) {
            return Err(Error::InvalidParam(
                "tokens are 1-64 characters of A-Z a-z 0-9 . _ ~ -".into(),
            ));
        }
        let info = TokenInfo {
            token: token.clone(),
            uses_allowed,
            completed: 0,
            expiry_time,
        };
        let bytes = serde_json::to_vec(&info)?;
        self.store.transact(&[&self.tree], |t| {
            if t[0].get(token.as_bytes())?.is_some() {
                return Err(abort(Error::InvalidParam(
                    "that token exists already".into(),
                )));
            }
            t[0].put(token.as_bytes(), bytes.clone())?;
            Ok(())
        })?;
        self.store.flush_blocking()?;
        Ok(info)
    }

    pub fn get(&self, token: &str) -> Result<Option<TokenInfo>> {
        match self.tree.get(token.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn is_valid(&self, token: &str) -> Result<bool> {
        Ok(is_valid_token_syntax(token) && self.get(token)?.is_some_and(|i| i.is_valid()))
    }

    /// Uses the token once, atomically; fails if it has no uses left or has expired.
    pub fn consume(&self, token: &str) -> Result<()> {
        self.store.transact(&[&self.tree], |t| {
            let Some(raw) = t[0].get(token.as_bytes())? else {
                return Err(abort(Error::Unauthorized(
                    "invalid registration token".into(),
                )));
            };
            let mut info: TokenInfo =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            if !info.is_valid() {
                return Err(abort(Error::Unauthorized(
                    "the registration token is used up or expired".into(),
                )));
            }
            info.completed += 1;
            let bytes = serde_json::to_vec(&info).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(token.as_bytes(), bytes)?;
            Ok(())
        })?;
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (_, v) = item?;
            out.push(serde_json::from_slice(&v)?);
        }
        Ok(out)
    }

    pub fn delete(&self, token: &str) -> Result<bool> {
        let existed = self.tree.contains(token.as_bytes())?;
        self.tree.delete(token.as_bytes())?;
        self.store.flush_blocking()?;
        Ok(existed)
    }
}
