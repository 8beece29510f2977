//! Password-reset codes of the Chat API: `POST /password/forgot` e-mails a code to a verified
//! address, `POST /password/reset` trades it for a new password. The code alone identifies the
//! reset (the request carries nothing else), so it is long and random (32 letters and digits,
//! about 190 bits); it is stored only as its SHA-256, works once, and expires.

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::expiring;
use super::signups::{Claim, Claims};
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, TxError, keys, trees};
use crate::util::{now_ms, random_string, sha256_hex};

/// The length of a reset code.
pub const CODE_LEN: usize = 32;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reset {
    user_id: OwnedUserId,
    expires_ts: u64,
}

pub struct PasswordResets {
    store: Store,
    /// `expiring` records by the code's hash, and `"u" SEP user SEP hash` → (): the codes of a
    /// user, all revoked once one of them is used.
    tree: Tree,
    /// Codes being redeemed (by hash).
    redeeming: Claims,
}

fn user_index_key(user_id: &str, hash: &str) -> Vec<u8> {
    let mut key = keys::pair("u", user_id);
    key.push(keys::SEP);
    key.extend_from_slice(hash.as_bytes());
    key
}

impl PasswordResets {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            tree: store.tree(trees::CHAT_RESETCODE_RESET)?,
            redeeming: Claims::default(),
        })
    }

    /// A new code for `user_id`, valid for `lifetime_ms`. Expired codes are dropped on the way.
    pub fn issue(&self, user_id: &UserId, lifetime_ms: u64) -> Result<String> {
        self.prune()?;
        let code = random_string(CODE_LEN);
        let hash = sha256_hex(&code);
        let reset = Reset {
            user_id: user_id.to_owned(),
            expires_ts: now_ms().saturating_add(lifetime_ms),
        };
        let bytes = serde_json::to_vec(&reset)?;
        let record = expiring::record_key(&hash);
        let index = expiring::expiry_key(reset.expires_ts, &hash);
        let by_user = user_index_key(user_id.as_str(), &hash);
        self.store.transact(&[&self.tree], |t| {
            t[0].put(&record, bytes.clone())?;
            t[0].put(&index, Vec::new())?;
            t[0].put(&by_user, Vec::new())?;
            Ok::<_, TxError<Error>>(())
        })?;
        Ok(code)
    }

    /// Claims `code` for a reset: the user it was issued to with the claim, or `None` when it
    /// is unknown, used, expired, or being redeemed by another request. The code stays usable
    /// until [`Self::redeem`], so a reset that fails before the password changes can be retried;
    /// the claim (released when dropped) keeps a second redeemer out meanwhile.
    pub fn claim(&self, code: &str) -> Result<Option<(OwnedUserId, Claim)>> {
        let hash = sha256_hex(code);
        let Some(claim) = self.redeeming.claim(&hash) else {
            return Ok(None);
        };
        let Some(raw) = self.tree.get(expiring::record_key(&hash))? else {
            return Ok(None);
        };
        let reset: Reset = serde_json::from_slice(&raw)?;
        Ok((reset.expires_ts > now_ms()).then_some((reset.user_id, claim)))
    }

    /// Uses up `code`: the user it was issued to, or `None` when it is unknown, used or expired.
    /// Of concurrent callers with the same code, one at most gets the user.
    pub fn redeem(&self, code: &str) -> Result<Option<OwnedUserId>> {
        let hash = sha256_hex(code);
        let record = expiring::record_key(&hash);
        let reset = self.store.transact(&[&self.tree], |t| {
            let Some(raw) = t[0].get(&record)? else {
                return Ok(None);
            };
            let reset: Reset =
                serde_json::from_slice(&raw).map_err(|e| crate::storage::abort(Error::from(e)))?;
            t[0].delete(&record)?;
            t[0].delete(expiring::expiry_key(reset.expires_ts, &hash))?;
            t[0].delete(user_index_key(reset.user_id.as_str(), &hash))?;
            Ok::<_, TxError<Error>>(Some(reset))
        })?;
        Ok(reset.filter(|r| r.expires_ts > now_ms()).map(|r| r.user_id))
    }

    /// Revokes every outstanding code of `user_id` (their password was just reset).
    pub fn revoke_all(&self, user_id: &UserId) -> Result<()> {
        let prefix = {
            let mut p = keys::pair("u", user_id.as_str());
            p.push(keys::SEP);
            p
        };
        let hashes: Vec<String> = self
            .tree
            .scan_prefix(&prefix)
            .map(|item| item.map(|(key, _)| String::from_utf8_lossy(&key[prefix.len()..]).into()))
            .collect::<std::result::Result<_, _>>()?;
        for hash in hashes {
            // The record goes first: a code is usable only while its record exists.
            let record = expiring::record_key(&hash);
            if let Some(raw) = self.tree.take(&record)?
                && let Ok(reset) = serde_json::from_slice::<Reset>(&raw)
            {
                self.tree
                    .delete(expiring::expiry_key(reset.expires_ts, &hash))?;
            }
            self.tree.delete(user_index_key(user_id.as_str(), &hash))?;
        }
        Ok(())
    }

    fn prune(&self) -> Result<()> {
        expiring::prune(&self.tree, |hash, raw| {
            serde_json::from_slice::<Reset>(raw)
                .map(|r| vec![user_index_key(r.user_id.as_str(), hash)])
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resets() -> (tempfile::TempDir, PasswordResets) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let resets = PasswordResets::new(&store).unwrap();
        (dir, resets)
    }

    #[test]
    fn a_code_works_once() {
        let (_d, r) = resets();
        let alice = ruma::user_id!("@alice:x");
        let code = r.issue(alice, 60_000).unwrap();
        assert_eq!(code.len(), CODE_LEN);
        assert!(r.redeem("wrong").unwrap().is_none());
        assert_eq!(r.redeem(&code).unwrap().as_deref(), Some(alice));
        assert!(r.redeem(&code).unwrap().is_none());
        assert!(r.tree.iter().next().is_none(), "nothing left behind");
    }

    #[test]
    fn expired_and_revoked_codes_fail() {
        let (_d, r) = resets();
        let alice = ruma::user_id!("@alice:x");
        let expired = r.issue(alice, 0).unwrap();
        assert!(r.redeem(&expired).unwrap().is_none());
        let first = r.issue(alice, 60_000).unwrap();
        let second = r.issue(alice, 60_000).unwrap();
        r.revoke_all(alice).unwrap();
        assert!(r.redeem(&first).unwrap().is_none());
        assert!(r.redeem(&second).unwrap().is_none());
        assert!(r.tree.iter().next().is_none(), "nothing left behind");
    }
}
