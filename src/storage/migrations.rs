//! Schema version and migrations. The version lives in the `meta` tree; a store written by a newer
//! Roost is refused rather than misread.

use super::{StorageError, Store, keys, trees};

/// The schema this build writes.
pub const CURRENT: u64 = 1;
const KEY: &[u8] = b"schema_version";

/// Migrations from version `n` to `n + 1`, indexed by `n - 1`.
const MIGRATIONS: &[Migration] = &[];

type Migration = fn(&Store) -> Result<(), StorageError>;

pub fn run(store: &Store) -> Result<(), StorageError> {
    let meta = store.tree(trees::META)?;
    let found = match meta.get(KEY)? {
        None => {
            // A fresh store starts at the current schema.
            meta.put(KEY, keys::u64_be(CURRENT).to_vec())?;
            store.flush_blocking()?;
            return Ok(());
        }
        Some(v) => {
            keys::read_u64_be(&v).ok_or_else(|| StorageError::Corrupt("schema_version".into()))?
        }
    };
    if found > CURRENT {
        return Err(StorageError::Schema(format!(
            "the data directory has schema {found}, newer than this build ({CURRENT}); \
             run a newer roost"
        )));
    }
    for version in found..CURRENT {
        let step = MIGRATIONS
            .get((version - 1) as usize)
            .ok_or_else(|| StorageError::Schema(format!("no migration from {version}")))?;
        tracing::info!(from = version, to = version + 1, "migrating the store");
        step(store)?;
        meta.put(KEY, keys::u64_be(version + 1).to_vec())?;
        store.flush_blocking()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_store_gets_current_version_and_newer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let meta = store.tree(trees::META).unwrap();
            assert_eq!(
                keys::read_u64_be(&meta.get(KEY).unwrap().unwrap()),
                Some(CURRENT)
            );
            meta.put(KEY, keys::u64_be(CURRENT + 1).to_vec()).unwrap();
            store.flush_blocking().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
