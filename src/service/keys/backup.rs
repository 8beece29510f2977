//! Server-side key backup (`/room_keys`): backup versions of a user, and the encrypted session
//! keys stored in each. The server stores opaque `session_data`; it only compares the metadata
//! the specification's replacement rules need.

use std::cmp::Ordering;

use ruma::{RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Keys;
use crate::error::{Error, Result};
use crate::storage::{TxError, abort, keys};

/// The algorithms a backup may use.
const ALGORITHMS: &[&str] = &["m.megolm_backup.v1.curve25519-aes-sha2"];

/// A stored backup version.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Version {
    algorithm: String,
    auth_data: Value,
    /// Keys stored in it.
    count: u64,
    /// Bumped whenever its keys change.
    etag: u64,
}

/// One backed-up session key: `first_message_index`, `forwarded_count`, `is_verified` and the
/// opaque `session_data`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyBackupData {
    pub first_message_index: u64,
    pub forwarded_count: u64,
    pub is_verified: bool,
    pub session_data: Map<String, Value>,
}

impl KeyBackupData {
    /// Whether this key should replace `old` by the specification's rules: a verified key beats
    /// an unverified one, then the lower first message index, then the lower forwarded count.
    fn better_than(&self, old: &KeyBackupData) -> bool {
        match (self.is_verified, old.is_verified) {
            (true, false) => return true,
            (false, true) => return false,
            _ => {}
        }
        match self.first_message_index.cmp(&old.first_message_index) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.forwarded_count < old.forwarded_count,
        }
    }
}

/// Which keys a backup request covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Room(&'a RoomId),
    Session(&'a RoomId, &'a str),
}

fn version_key(user: &UserId, version: u64) -> Vec<u8> {
    let mut key = keys::prefix(user.as_str());
    key.extend_from_slice(&keys::u64_be(version));
    key
}

/// The prefix of the keys a scope covers in a version (`user SEP version [room SEP [session]]`).
fn scope_prefix(user: &UserId, version: u64, scope: Scope<'_>) -> Vec<u8> {
    let mut key = version_key(user, version);
    key.push(keys::SEP);
    match scope {
        Scope::All => {}
        Scope::Room(room) => {
            key.extend_from_slice(room.as_bytes());
            key.push(keys::SEP);
        }
        Scope::Session(room, session) => {
            key.extend_from_slice(room.as_bytes());
            key.push(keys::SEP);
            key.extend_from_slice(session.as_bytes());
        }
    }
    key
}

/// Parses a version as handed out (a decimal number); anything else names no backup.
fn parse_version(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

fn check_algorithm(algorithm: &str, auth_data: &Value) -> Result<()> {
    if !ALGORITHMS.contains(&algorithm) {
        return Err(Error::InvalidParam(format!(
            "unsupported backup algorithm {algorithm}"
        )));
    }
    if !auth_data.is_object() {
        return Err(Error::BadJson("auth_data must be an object".into()));
    }
    Ok(())
}

impl Keys {
    /// The user's latest backup version.
    fn latest_version(&self, user: &UserId) -> Result<Option<(u64, Version)>> {
        let start = version_key(user, 0);
        let end = version_key(user, u64::MAX);
        for item in self.backup_versions.range(&start, &end).rev() {
            let (key, value) = item?;
            if let Some(version) = keys::read_u64_be(&key[start.len() - 8..]) {
                return Ok(Some((version, serde_json::from_slice(&value)?)));
            }
        }
        Ok(None)
    }

    fn version(&self, user: &UserId, raw: &str) -> Result<Option<(u64, Version)>> {
        let Some(number) = parse_version(raw) else {
            return Ok(None);
        };
        match self.backup_versions.get(version_key(user, number))? {
            Some(value) => Ok(Some((number, serde_json::from_slice(&value)?))),
            None => Ok(None),
        }
    }

    /// Creates a backup version; it becomes the latest.
    pub async fn create_backup(
        &self,
        user: &UserId,
        algorithm: &str,
        auth_data: Value,
    ) -> Result<String> {
        check_algorithm(algorithm, &auth_data)?;
        let _guard = self.lock_user(user).await?;
        let trees = [&self.backup_versions];
        let number = self.store.transact(&trees, |t| {
            // Numbers only grow, even after deletions: the largest ever given is kept apart.
            let counter_key = keys::prefix(user.as_str());
            let last = t[0]
                .get(&counter_key)?
                .and_then(|v| keys::read_u64_be(&v))
                .unwrap_or(0);
            let number = last + 1;
            t[0].put(&counter_key, keys::u64_be(number).to_vec())?;
            let version = Version {
                algorithm: algorithm.to_owned(),
                auth_data: auth_data.clone(),
                count: 0,
                etag: 0,
            };
            let value = serde_json::to_vec(&version).map_err(|e| abort(Error::from(e)))?;
            t[0].put(version_key(user, number), value)?;
            Ok(number)
        })?;
        self.store.durable().await?;
        Ok(number.to_string())
    }

    /// A backup version's description (`None`: the latest).
    pub fn backup_info(&self, user: &UserId, version: Option<&str>) -> Result<Value> {
        let found = match version {
            Some(raw) => self.version(user, raw)?,
            None => self.latest_version(user)?,
        };
        let (number, info) =
            found.ok_or_else(|| Error::NotFound("no such backup version".into()))?;
        Ok(json!({
            "algorithm": info.algorithm,
            "auth_data": info.auth_data,
            "count": info.count,
            "etag": info.etag.to_string(),
            "version": number.to_string(),
        }))
    }

    /// Replaces a version's `auth_data` (the algorithm cannot change).
    pub async fn update_backup(
        &self,
        user: &UserId,
        version: &str,
        algorithm: &str,
        auth_data: Value,
    ) -> Result<()> {
        check_algorithm(algorithm, &auth_data)?;
        let _guard = self.lock_user(user).await?;
        let (number, mut info) = self
            .version(user, version)?
            .ok_or_else(|| Error::NotFound("no such backup version".into()))?;
        if info.algorithm != algorithm {
            return Err(Error::InvalidParam(
                "the algorithm of a backup cannot change".into(),
            ));
        }
        info.auth_data = auth_data;
        self.backup_versions
            .put(version_key(user, number), serde_json::to_vec(&info)?)?;
        self.store.durable().await?;
        Ok(())
    }

    /// Deletes a backup version, then its keys. Deleting a version that was deleted before
    /// succeeds, as the specification asks.
    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let _guard = self.lock_user(user).await?;
        let Some((number, _)) = self.version(user, version)? else {
            let last_given = self
                .backup_versions
                .get(keys::prefix(user.as_str()))?
                .and_then(|v| keys::read_u64_be(&v))
                .unwrap_or(0);
            return match parse_version(version) {
                Some(n) if n >= 1 && n <= last_given => Ok(()),
                _ => Err(Error::NotFound("no such backup version".into())),
            };
        };
        // The version goes first: once it is gone no request can add keys to it.
        self.backup_versions.delete(version_key(user, number))?;
        for item in self
            .backup_keys
            .scan_prefix(scope_prefix(user, number, Scope::All))
        {
            self.backup_keys.delete(item?.0)?;
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Stores session keys in the latest version (only the latest takes keys), each replacing a
    /// stored one only when the replacement rules prefer it. Answers the version's `etag` and
    /// `count`.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        sessions: Vec<(ruma::OwnedRoomId, String, KeyBackupData)>,
    ) -> Result<Value> {
        let _guard = self.lock_user(user).await?;
        let latest = self.latest_version(user)?;
        let number = match (&latest, parse_version(version)) {
            (Some((latest, _)), Some(asked)) if *latest == asked => asked,
            _ => {
                return Err(Error::WrongRoomKeysVersion {
                    current_version: latest.map(|(n, _)| n.to_string()),
                });
            }
        };
        let mut encoded = Vec::with_capacity(sessions.len());
        for (room, session, data) in &sessions {
            encoded.push((
                scope_prefix(user, number, Scope::Session(room, session)),
                data.clone(),
            ));
        }
        let trees = [&self.backup_versions, &self.backup_keys];
        let info = self.store.transact(&trees, |t| {
            let key = version_key(user, number);
            let Some(raw) = t[0].get(&key)? else {
                return Err(abort(Error::NotFound("the backup was deleted".into())));
            };
            let mut info: Version =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            let mut changed = false;
            for (stored_key, data) in &encoded {
                let old = match t[1].get(stored_key)? {
                    Some(raw) => Some(
                        serde_json::from_slice::<KeyBackupData>(&raw)
                            .map_err(|e| abort(Error::from(e)))?,
                    ),
                    None => None,
                };
                if old.as_ref().is_some_and(|old| !data.better_than(old)) {
                    continue;
                }
                if old.is_none() {
                    info.count += 1;
                }
                let value = serde_json::to_vec(data).map_err(|e| abort(Error::from(e)))?;
                t[1].put(stored_key, value)?;
                changed = true;
            }
            if changed {
                info.etag += 1;
                let value = serde_json::to_vec(&info).map_err(|e| abort(Error::from(e)))?;
                t[0].put(&key, value)?;
            }
            Ok::<_, TxError<Error>>(info)
        })?;
        self.store.durable().await?;
        Ok(json!({ "etag": info.etag.to_string(), "count": info.count }))
    }

    /// The keys of a version in a scope: `(room, session, key)`.
    pub fn get_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: Scope<'_>,
    ) -> Result<Vec<(String, String, Value)>> {
        let (number, _) = self
            .version(user, version)?
            .ok_or_else(|| Error::NotFound("no such backup version".into()))?;
        let base = scope_prefix(user, number, Scope::All).len();
        let mut out = Vec::new();
        for item in self
            .backup_keys
            .scan_prefix(scope_prefix(user, number, scope))
        {
            let (key, value) = item?;
            let rest = &key[base..];
            let Some(at) = rest.iter().position(|b| *b == keys::SEP) else {
                continue;
            };
            let (Ok(room), Ok(session)) = (
                std::str::from_utf8(&rest[..at]),
                std::str::from_utf8(&rest[at + 1..]),
            ) else {
                continue;
            };
            if let Scope::Session(_, wanted) = scope
                && session != wanted
            {
                continue;
            }
            out.push((
                room.to_owned(),
                session.to_owned(),
                serde_json::from_slice(&value)?,
            ));
        }
        Ok(out)
    }

    /// Deletes the keys of a version in a scope; answers the version's `etag` and `count`.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        scope: Scope<'_>,
    ) -> Result<Value> {
        let _guard = self.lock_user(user).await?;
        let (number, _) = self
            .version(user, version)?
            .ok_or_else(|| Error::NotFound("no such backup version".into()))?;
        let mut doomed = Vec::new();
        for item in self
            .backup_keys
            .scan_prefix(scope_prefix(user, number, scope))
        {
            let (key, _) = item?;
            if let Scope::Session(room, session) = scope
                && key != scope_prefix(user, number, Scope::Session(room, session))
            {
                continue;
            }
            doomed.push(key);
        }
        let trees = [&self.backup_versions, &self.backup_keys];
        let info = self.store.transact(&trees, |t| {
            let key = version_key(user, number);
            let Some(raw) = t[0].get(&key)? else {
                return Err(abort(Error::NotFound("the backup was deleted".into())));
            };
            let mut info: Version =
                serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
            let mut removed = 0;
            for stored_key in &doomed {
                if t[1].get(stored_key)?.is_some() {
                    t[1].delete(stored_key)?;
                    removed += 1;
                }
            }
            if removed > 0 {
                info.count = info.count.saturating_sub(removed);
                info.etag += 1;
                let value = serde_json::to_vec(&info).map_err(|e| abort(Error::from(e)))?;
                t[0].put(&key, value)?;
            }
            Ok::<_, TxError<Error>>(info)
        })?;
        self.store.durable().await?;
        Ok(json!({ "etag": info.etag.to_string(), "count": info.count }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verified: bool, index: u64, forwarded: u64) -> KeyBackupData {
        KeyBackupData {
            first_message_index: index,
            forwarded_count: forwarded,
            is_verified: verified,
            session_data: Map::new(),
        }
    }

    #[test]
    fn replacement_rules() {
        assert!(key(true, 9, 9).better_than(&key(false, 0, 0)));
        assert!(!key(false, 0, 0).better_than(&key(true, 9, 9)));
        assert!(key(false, 1, 9).better_than(&key(false, 2, 0)));
        assert!(!key(false, 2, 0).better_than(&key(false, 1, 9)));
        assert!(key(false, 1, 0).better_than(&key(false, 1, 1)));
        assert!(!key(false, 1, 1).better_than(&key(false, 1, 1)));
    }

    #[test]
    fn versions_are_decimal_numbers() {
        assert_eq!(parse_version("12"), Some(12));
        for bad in ["", "-1", "1.0", "abc", "99999999999999999999"] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }
}
