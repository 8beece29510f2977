//! Chat API sign-ups that wait for their e-mail code, and the e-mail addresses given at sign-up
//! on servers that do not verify them.
//!
//! A sign-up on a server that requires a verified address keeps the new account's details here
//! (the password only as its argon2 hash) until the code from the e-mail comes back. The e-mail
//! and its code are the Matrix registration validation (`service::threepid`, purpose
//! `Register`), so the message is the same and its link works too; the validation's client
//! secret is generated here and never leaves the server.
//!
//! On a server that does not verify addresses, the address given at sign-up is kept apart from
//! the Matrix e-mail bindings: it identifies the account at login and no other account may use
//! it, but it receives no password resets (nobody proved they read it) and Matrix clients do not
//! see it as a validated address.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::expiring;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, keys, trees};
use crate::util::{now_ms, random_string};

/// A sign-up waiting for its e-mail code.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingSignup {
    pub user_id: OwnedUserId,
    /// Normalised (lower case).
    pub email: String,
    /// argon2id PHC string of the chosen password.
    pub password_hash: String,
    pub display_name: Option<String>,
    /// The display name of the device logged in once the sign-up completes.
    pub device_name: Option<String>,
    /// The registration token given at sign-up, used up when the account is created.
    pub registration_token: Option<String>,
    /// The e-mail validation session and its secret.
    pub sid: String,
    pub client_secret: String,
    pub expires_ts: u64,
    /// The validated address, once the e-mail validation has been taken (it works once): a
    /// completion that failed after that point is retried without it.
    #[serde(default)]
    pub validated_email: Option<String>,
    /// Whether the registration token has been used up for this sign-up.
    #[serde(default)]
    pub token_consumed: bool,
}

/// Single-use things (sign-ups, reset codes) being redeemed right now, by key: the redeemer
/// holds a [`Claim`] from before its checks until the thing is used up or the attempt failed,
/// so a concurrent second redeemer is refused while a failed attempt leaves it usable.
#[derive(Default, Clone)]
pub struct Claims(Arc<Mutex<HashSet<String>>>);

/// A key of [`Claims`], released when dropped.
pub struct Claim {
    claims: Claims,
    key: String,
}

impl Claims {
    /// Claims `key`; `None` while someone else holds it.
    pub fn claim(&self, key: &str) -> Option<Claim> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(key.to_owned()).then(|| Claim {
            claims: self.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = self.claims.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.remove(&self.key);
    }
}

pub struct Signups {
    store: Store,
    /// Pending sign-ups and their expiry index (see `expiring`).
    pending: Tree,
    /// `"u" SEP user` → address and `"e" SEP address` → user. An `"e"` entry without its
    /// `"u"` entry is a reservation of a sign-up still creating its account.
    unverified: Tree,
    /// Sign-up IDs being completed.
    completing: Claims,
}

fn user_key(user_id: &UserId) -> Vec<u8> {
    keys::pair("u", user_id.as_str())
}

fn email_key(email: &str) -> Vec<u8> {
    keys::pair("e", email)
}

fn in_use() -> Error {
    Error::Conflict("this e-mail address is in use".into())
}

impl Signups {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            pending: store.tree(trees::CHAT_SIGNUPID_SIGNUP)?,
            unverified: store.tree(trees::CHAT_UNVERIFIED_EMAIL)?,
            completing: Claims::default(),
        })
    }

    /// Claims the sign-up `id` for completing it; `None` while another request completes it.
    pub fn claim(&self, id: &str) -> Option<Claim> {
        self.completing.claim(id)
    }

    /// Stores the progress of the sign-up `id` (see [`PendingSignup::validated_email`]).
    pub fn update(&self, id: &str, signup: &PendingSignup) -> Result<()> {
        self.pending
            .put(expiring::record_key(id), serde_json::to_vec(signup)?)?;
        Ok(())
    }

    /// Keeps a sign-up until its code comes back or it expires; returns its ID, which only the
    /// client that signed up learns. Expired sign-ups are dropped on the way.
    pub fn insert(&self, signup: &PendingSignup) -> Result<String> {
        expiring::prune(&self.pending, |_, _| Vec::new())?;
        let id = random_string(32);
        let bytes = serde_json::to_vec(signup)?;
        let record = expiring::record_key(&id);
        let index = expiring::expiry_key(signup.expires_ts, &id);
        self.store.transact(&[&self.pending], |t| {
            t[0].put(&record, bytes.clone())?;
            t[0].put(&index, Vec::new())?;
            Ok::<_, crate::storage::TxError<Error>>(())
        })?;
        Ok(id)
    }

    /// The sign-up `id`, unless it is unknown or has expired.
    pub fn get(&self, id: &str) -> Result<Option<PendingSignup>> {
        let Some(raw) = self.pending.get(expiring::record_key(id))? else {
            return Ok(None);
        };
        let signup: PendingSignup = serde_json::from_slice(&raw)?;
        Ok((signup.expires_ts > now_ms()).then_some(signup))
    }

    /// Removes the sign-up `id` (it completed, or can no longer complete).
    pub fn remove(&self, id: &str, signup: &PendingSignup) -> Result<()> {
        self.pending.delete(expiring::record_key(id))?;
        self.pending
            .delete(expiring::expiry_key(signup.expires_ts, id))?;
        Ok(())
    }

    /// The unverified address `user_id` gave at sign-up, if any.
    pub fn unverified_email_of(&self, user_id: &UserId) -> Result<Option<String>> {
        Ok(self
            .unverified
            .get(user_key(user_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The user who gave `email` (normalised) at sign-up without verifying it, if any.
    pub fn user_for_unverified_email(&self, email: &str) -> Result<Option<OwnedUserId>> {
        Ok(self
            .unverified
            .get(email_key(email))?
            .and_then(|v| UserId::parse(String::from_utf8_lossy(&v).as_ref()).ok()))
    }

    /// Reserves `email` (normalised) for `user_id` before their account is created, so that two
    /// sign-ups cannot both take it; `Conflict` when another user has it. Nothing of `user_id`
    /// changes yet: a concurrent sign-up for the same username that loses the race to create
    /// the account must not touch the winner's address (see [`Self::record_unverified`] and
    /// [`Self::release_reservation`]).
    pub fn reserve_unverified(&self, user_id: &UserId, email: &str) -> Result<()> {
        let by_email = email_key(email);
        self.store.transact(&[&self.unverified], |t| {
            if let Some(owner) = t[0].get(&by_email)?
                && owner.as_ref() != user_id.as_bytes()
            {
                return Err(abort(in_use()));
            }
            t[0].put(&by_email, user_id.as_bytes().to_vec())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Drops a reservation of `email` by `user_id` whose account could not be created, unless
    /// the address has meanwhile become that user's (another sign-up for them succeeded).
    pub fn release_reservation(&self, user_id: &UserId, email: &str) -> Result<()> {
        let by_email = email_key(email);
        let by_user = user_key(user_id);
        self.store.transact(&[&self.unverified], |t| {
            let reserved = t[0].get(&by_email)?.as_deref() == Some(user_id.as_bytes());
            let recorded = t[0].get(&by_user)?.as_deref() == Some(email.as_bytes());
            if reserved && !recorded {
                t[0].delete(&by_email)?;
            }
            Ok::<_, crate::storage::TxError<Error>>(())
        })?;
        Ok(())
    }

    /// Records `email` (normalised) as `user_id`'s unverified address, once their account
    /// exists; `Conflict` when another user has it. A previous address of the user is freed.
    pub fn record_unverified(&self, user_id: &UserId, email: &str) -> Result<()> {
        let by_email = email_key(email);
        let by_user = user_key(user_id);
        self.store.transact(&[&self.unverified], |t| {
            if let Some(owner) = t[0].get(&by_email)?
                && owner.as_ref() != user_id.as_bytes()
            {
                return Err(abort(in_use()));
            }
            if let Some(old) = t[0].get(&by_user)?
                && old.as_ref() != email.as_bytes()
            {
                t[0].delete(email_key(&String::from_utf8_lossy(&old)))?;
            }
            t[0].put(&by_email, user_id.as_bytes().to_vec())?;
            t[0].put(&by_user, email.as_bytes().to_vec())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Forgets the unverified address `email` (normalised), whoever gave it: its owner's account
    /// is gone, or someone proved that the address is theirs.
    pub fn release_unverified_email(&self, email: &str) -> Result<()> {
        let by_email = email_key(email);
        self.store.transact(&[&self.unverified], |t| {
            if let Some(owner) = t[0].get(&by_email)? {
                let owner = String::from_utf8_lossy(&owner).into_owned();
                let by_user = keys::pair("u", &owner);
                if t[0].get(&by_user)?.as_deref() == Some(email.as_bytes()) {
                    t[0].delete(by_user)?;
                }
                t[0].delete(&by_email)?;
            }
            Ok::<_, crate::storage::TxError<Error>>(())
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signups() -> (tempfile::TempDir, Signups) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let signups = Signups::new(&store).unwrap();
        (dir, signups)
    }

    fn pending(expires_ts: u64) -> PendingSignup {
        PendingSignup {
            user_id: ruma::user_id!("@a:x").to_owned(),
            email: "a@example.org".into(),
            password_hash: "hash".into(),
            display_name: None,
            device_name: None,
            registration_token: None,
            sid: "sid".into(),
            client_secret: "secret".into(),
            expires_ts,
            validated_email: None,
            token_consumed: false,
        }
    }

    #[test]
    fn pending_signups_expire() {
        let (_d, s) = signups();
        let live = s.insert(&pending(now_ms() + 60_000)).unwrap();
        let dead = s.insert(&pending(now_ms() - 1)).unwrap();
        assert_eq!(s.get(&live).unwrap().unwrap().email, "a@example.org");
        assert!(s.get(&dead).unwrap().is_none());
        assert!(s.get("unknown").unwrap().is_none());
        // The next insert prunes the expired one for good.
        s.insert(&pending(now_ms() + 60_000)).unwrap();
        assert!(
            s.pending
                .get(expiring::record_key(&dead))
                .unwrap()
                .is_none()
        );
        let signup = s.get(&live).unwrap().unwrap();
        s.remove(&live, &signup).unwrap();
        assert!(s.get(&live).unwrap().is_none());
    }

    #[test]
    fn unverified_addresses_are_unique() {
        let (_d, s) = signups();
        let a = ruma::user_id!("@a:x");
        let b = ruma::user_id!("@b:x");
        s.record_unverified(a, "a@example.org").unwrap();
        assert!(matches!(
            s.record_unverified(b, "a@example.org"),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            s.user_for_unverified_email("a@example.org")
                .unwrap()
                .as_deref(),
            Some(a)
        );
        // A new address replaces the old one.
        s.record_unverified(a, "a2@example.org").unwrap();
        assert!(
            s.user_for_unverified_email("a@example.org")
                .unwrap()
                .is_none()
        );
        s.release_unverified_email("a2@example.org").unwrap();
        assert!(s.unverified_email_of(a).unwrap().is_none());
        s.record_unverified(b, "a2@example.org").unwrap();
        assert_eq!(
            s.unverified_email_of(b).unwrap().as_deref(),
            Some("a2@example.org")
        );
    }

    #[test]
    fn a_losing_signup_leaves_the_winner_address() {
        let (_d, s) = signups();
        let a = ruma::user_id!("@a:x");
        // Two sign-ups for @a:x reserve their addresses; the first creates the account.
        s.reserve_unverified(a, "one@example.org").unwrap();
        s.reserve_unverified(a, "two@example.org").unwrap();
        assert!(matches!(
            s.reserve_unverified(ruma::user_id!("@b:x"), "one@example.org"),
            Err(Error::Conflict(_))
        ));
        s.record_unverified(a, "one@example.org").unwrap();
        s.release_reservation(a, "two@example.org").unwrap();
        s.release_reservation(a, "one@example.org").unwrap();
        assert_eq!(
            s.unverified_email_of(a).unwrap().as_deref(),
            Some("one@example.org")
        );
        assert!(
            s.user_for_unverified_email("two@example.org")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn claims_are_exclusive_until_dropped() {
        let claims = Claims::default();
        let first = claims.claim("x");
        assert!(first.is_some());
        assert!(claims.claim("x").is_none());
        drop(first);
        assert!(claims.claim("x").is_some());
    }
}
