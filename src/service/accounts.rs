//! Accounts: user IDs, password hashes, deactivation, admin flags.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, keys, trees};
use crate::util::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub created_ts: u64,
    /// argon2id PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<String>,
    pub deactivated: bool,
    pub admin: bool,
    pub guest: bool,
}

pub struct Accounts {
    store: Store,
    config: Arc<Config>,
    pub(crate) accounts: Tree,
    meta: Tree,
}

const USER_COUNT: &[u8] = b"user_count";

impl Accounts {
    pub fn new(store: &Store, config: Arc<Config>) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            config,
            accounts: store.tree(trees::USERID_ACCOUNT)?,
            meta: store.tree(trees::META)?,
        })
    }

    /// Turns a requested username (a localpart, or a full user ID on this server) into a user ID,
    /// enforcing the localpart grammar. Usernames are case-folded to lower case.
    pub fn user_id_for_registration(&self, username: &str) -> Result<OwnedUserId> {
        let localpart = match username.strip_prefix('@') {
            Some(rest) => {
                let (local, server) = rest.split_once(':').ok_or_else(|| {
                    Error::InvalidUsername("a user ID has the form @localpart:server".into())
                })?;
                if server != self.config.server_name {
                    return Err(Error::InvalidUsername(
                        "the user ID must be on this server".into(),
                    ));
                }
                local
            }
            None => username,
        }
        .to_lowercase();
        if localpart.is_empty() {
            return Err(Error::InvalidUsername(
                "the username must not be empty".into(),
            ));
        }
        if localpart.starts_with('_') {
            return Err(Error::InvalidUsername(
                "usernames starting with '_' are reserved".into(),
            ));
        }
        if !localpart.bytes().all(
            |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'),
        ) {
            return Err(Error::InvalidUsername(
                "usernames may only contain a-z, 0-9 and . _ = - / +".into(),
            ));
        }
        let id = format!("@{localpart}:{}", self.config.server_name);
        if id.len() > 255 {
            return Err(Error::InvalidUsername("the user ID is too long".into()));
        }
        UserId::parse(&id).map_err(|e| Error::InvalidUsername(e.to_string()))
    }

    /// Resolves a login identifier (localpart or full user ID) to a local user ID, without the
    /// registration grammar (historical IDs may be looser).
    pub fn user_id_for_login(&self, user: &str) -> Result<OwnedUserId> {
        let id = if user.starts_with('@') {
            user.to_owned()
        } else {
            format!("@{}:{}", user.to_lowercase(), self.config.server_name)
        };
        let id = UserId::parse(&id).map_err(|e| Error::InvalidParam(e.to_string()))?;
        if id.server_name() != self.config.server_name.as_str() {
            return Err(Error::Forbidden("invalid username or password".into()));
        }
        Ok(id)
    }

    pub fn get(&self, user_id: &UserId) -> Result<Option<Account>> {
        match self.accounts.get(user_id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.accounts.contains(user_id.as_bytes())?)
    }

    /// Creates the account atomically; `UserInUse` if the ID exists (deactivated IDs stay taken).
    /// Returns the account (with `admin` set for the first user when configured).
    pub async fn create(
        &self,
        user_id: &UserId,
        password: Option<&str>,
        guest: bool,
        admin: bool,
    ) -> Result<Account> {
        let password_hash = match password {
            Some(p) => Some(super::password::hash(p).await?),
            None => None,
        };
        let first_user_admin = self.config.first_user_admin;
        let account = self.store.transact(&[&self.accounts, &self.meta], |t| {
            let (accounts, meta) = (&t[0], &t[1]);
            if accounts.get(user_id.as_bytes())?.is_some() {
                return Err(abort(Error::UserInUse));
            }
            let count = meta
                .get(USER_COUNT)?
                .and_then(|v| keys::read_u64_be(&v))
                .unwrap_or(0);
            let account = Account {
                created_ts: now_ms(),
                password_hash: password_hash.clone(),
                deactivated: false,
                admin: admin || (first_user_admin && count == 0 && !guest),
                guest,
            };
            let bytes = serde_json::to_vec(&account).map_err(|e| abort(Error::internal(e)))?;
            accounts.put(user_id.as_bytes(), bytes)?;
            meta.put(USER_COUNT, keys::u64_be(count + 1).to_vec())?;
            Ok(account)
        })?;
        Ok(account)
    }

    /// Applies `change` to the stored account atomically.
    pub fn update(&self, user_id: &UserId, change: impl Fn(&mut Account)) -> Result<Account> {
        let account = self.store.transact(&[&self.accounts], |t| {
            let Some(raw) = t[0].get(user_id.as_bytes())? else {
                return Err(abort(Error::NotFound("no such user".into())));
            };
            let mut account: Account =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            change(&mut account);
            let bytes = serde_json::to_vec(&account).map_err(|e| abort(Error::internal(e)))?;
            t[0].put(user_id.as_bytes(), bytes)?;
            Ok(account)
        })?;
        Ok(account)
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let hash = super::password::hash(password).await?;
        self.update(user_id, |a| a.password_hash = Some(hash.clone()))?;
        Ok(())
    }

    /// Checks a user's password; unknown and deactivated users never match.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let stored = self
            .get(user_id)?
            .filter(|a| !a.deactivated)
            .and_then(|a| a.password_hash);
        super::password::verify(password, stored).await
    }

    pub fn list(&self) -> Result<Vec<(String, Account)>> {
        let mut out = Vec::new();
        for item in self.accounts.iter() {
            let (k, v) = item?;
            out.push((
                String::from_utf8_lossy(&k).into_owned(),
                serde_json::from_slice(&v)?,
            ));
        }
        Ok(out)
    }

    /// A fresh numeric localpart for a guest.
    pub fn next_guest_id(&self) -> Result<OwnedUserId> {
        loop {
            let n = self.store.generate_id()?;
            let id = format!("@{}:{}", n + 1, self.config.server_name);
            let id = UserId::parse(&id).map_err(Error::internal)?;
            if !self.exists(&id)? {
                return Ok(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = Accounts::new(&store, Arc::new(Config::default())).unwrap();
        (dir, a)
    }

    #[tokio::test]
    async fn first_user_admin_when_configured() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = Config {
            first_user_admin: true,
            ..Config::default()
        };
        let a = Accounts::new(&store, Arc::new(config)).unwrap();
        let first = a.user_id_for_registration("first").unwrap();
        let second = a.user_id_for_registration("second").unwrap();
        assert!(
            a.create(&first, Some("password1"), false, false)
                .await
                .unwrap()
                .admin
        );
        assert!(
            !a.create(&second, Some("password1"), false, false)
                .await
                .unwrap()
                .admin
        );
    }

    #[test]
    fn localpart_grammar() {
        let (_d, a) = accounts();
        assert_eq!(
            a.user_id_for_registration("Alice").unwrap(),
            "@alice:localhost"
        );
        assert_eq!(
            a.user_id_for_registration("@bob:localhost").unwrap(),
            "@bob:localhost"
        );
        for bad in [
            "",
            "a b",
            "é",
            "_bridge",
            "@x:elsewhere",
            "a:b",
            &"x".repeat(260),
        ] {
            assert!(
                matches!(
                    a.user_id_for_registration(bad),
                    Err(Error::InvalidUsername(_))
                ),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn create_is_unique() {
        let (_d, a) = accounts();
        let id = a.user_id_for_registration("carol").unwrap();
        a.create(&id, Some("password1"), false, false)
            .await
            .unwrap();
        assert!(matches!(
            a.create(&id, Some("password1"), false, false).await,
            Err(Error::UserInUse)
        ));
        assert!(a.check_password(&id, "password1").await.unwrap());
        a.update(&id, |acc| acc.deactivated = true).unwrap();
        assert!(!a.check_password(&id, "password1").await.unwrap());
    }
}
