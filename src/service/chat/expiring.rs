//! Keys for records that expire (pending sign-ups, password-reset codes): each record sits under
//! `"r" SEP id`, and an index entry `"x" SEP expiry (u64 BE) SEP id` lets expired records be
//! dropped oldest first without reading the others.

use crate::error::Result;
use crate::storage::{Tree, keys};
use crate::util::now_ms;

/// How many expired records one pruning pass removes at most, so that a request never pays for
/// a long backlog at once.
const PRUNE_BATCH: usize = 64;

/// The key of the record `id`.
pub fn record_key(id: &str) -> Vec<u8> {
    keys::pair("r", id)
}

/// The key of the index entry of the record `id` that expires at `expires_ts`.
pub fn expiry_key(expires_ts: u64, id: &str) -> Vec<u8> {
    let mut key = keys::prefix("x");
    key.extend_from_slice(&keys::u64_be(expires_ts));
    key.push(keys::SEP);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Removes up to [`PRUNE_BATCH`] records whose expiry has passed, with their index entries.
/// `extra` names the other keys a record owns (from its ID and stored value), removed with it.
pub fn prune(tree: &Tree, extra: impl Fn(&str, &[u8]) -> Vec<Vec<u8>>) -> Result<()> {
    let start = keys::prefix("x");
    let end = expiry_key(now_ms(), "");
    let expired: Vec<Vec<u8>> = tree
        .range(&start, &end)
        .take(PRUNE_BATCH)
        .map(|item| item.map(|(key, _)| key.to_vec()))
        .collect::<std::result::Result<_, _>>()?;
    // "x" SEP, 8 bytes of expiry, SEP: the ID follows.
    let id_at = start.len() + 9;
    for index_key in expired {
        if let Some(id) = index_key
            .get(id_at..)
            .and_then(|raw| std::str::from_utf8(raw).ok())
        {
            let record = record_key(id);
            if let Some(value) = tree.take(&record)? {
                for key in extra(id, &value) {
                    tree.delete(key)?;
                }
            }
        }
        tree.delete(&index_key)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_sort_by_expiry() {
        assert!(expiry_key(5, "zzz") < expiry_key(6, "aaa"));
        assert!(expiry_key(u64::MAX, "a") > expiry_key(1, ""));
        assert!(expiry_key(0, "a").starts_with(&keys::prefix("x")));
    }

    #[test]
    fn prune_drops_only_expired_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::storage::Store::open(dir.path()).unwrap();
        let tree = store.tree("t").unwrap();
        tree.put(record_key("old"), b"v".to_vec()).unwrap();
        tree.put(expiry_key(1, "old"), Vec::new()).unwrap();
        tree.put(b"other", Vec::new()).unwrap();
        let later = now_ms() + 60_000;
        tree.put(record_key("new"), b"v".to_vec()).unwrap();
        tree.put(expiry_key(later, "new"), Vec::new()).unwrap();
        prune(&tree, |id, _| vec![id.as_bytes().to_vec()]).unwrap();
        assert!(tree.get(record_key("old")).unwrap().is_none());
        assert!(tree.get(expiry_key(1, "old")).unwrap().is_none());
        assert!(tree.get(record_key("new")).unwrap().is_some());
        assert!(tree.get(expiry_key(later, "new")).unwrap().is_some());
    }
}
