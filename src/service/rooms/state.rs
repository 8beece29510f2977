//! Room state as snapshots with deltas. A snapshot names its parent and the entries it changes;
//! every [`FULL_SNAPSHOT_EVERY`]-th snapshot in a chain holds the whole state, so reading any state
//! walks a bounded chain and appending a state event writes only what changed (amortised).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ruma::OwnedEventId;
use ruma::events::StateEventType;
use serde::{Deserialize, Serialize};

use crate::core::StateMap;
use crate::error::{Error, Result};
use crate::storage::{Tree, TxError, TxTree, keys};

/// Chains of deltas are cut with a full copy this often.
pub const FULL_SNAPSHOT_EVERY: u32 = 64;

/// State entries kept decoded in memory by default, summed over the cached snapshots.
pub const DEFAULT_CACHE_ENTRIES: usize = 200_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The snapshot this one changes; `None` for a full snapshot.
    pub parent: Option<u64>,
    /// How many deltas lie between this snapshot and the last full one.
    pub chain: u32,
    /// `(type, state_key, event_id)` entries set by this snapshot.
    pub entries: Vec<(String, String, OwnedEventId)>,
}

pub struct SnapshotStore {
    tree: Tree,
    cache: Mutex<SnapshotCache>,
}

/// Decoded snapshots, bounded by the number of state entries they hold together (a snapshot of
/// a large room costs as much as many small ones); the oldest are dropped first.
struct SnapshotCache {
    by_id: HashMap<u64, Arc<StateMap>>,
    order: VecDeque<u64>,
    entries: usize,
    budget: usize,
}

impl SnapshotCache {
    fn get(&self, id: u64) -> Option<Arc<StateMap>> {
        self.by_id.get(&id).cloned()
    }

    fn insert(&mut self, id: u64, state: Arc<StateMap>) {
        if state.len() > self.budget || self.by_id.contains_key(&id) {
            return;
        }
        self.entries += state.len();
        self.by_id.insert(id, state);
        self.order.push_back(id);
        while self.entries > self.budget {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(evicted) = self.by_id.remove(&oldest) {
                self.entries -= evicted.len();
            }
        }
    }
}

impl SnapshotStore {
    /// `cache_entries` bounds the state entries kept decoded in memory.
    pub fn new(tree: Tree, cache_entries: usize) -> Self {
        Self {
            tree,
            cache: Mutex::new(SnapshotCache {
                by_id: HashMap::new(),
                order: VecDeque::new(),
                entries: 0,
                budget: cache_entries,
            }),
        }
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    fn load_snapshot(&self, id: u64) -> Result<Snapshot> {
        let raw = self
            .tree
            .get(keys::u64_be(id))?
            .ok_or_else(|| Error::internal(format!("state snapshot {id} is missing")))?;
        Ok(serde_json::from_slice(&raw)?)
    }

    /// The full state a snapshot stands for.
    pub fn state(&self, id: u64) -> Result<Arc<StateMap>> {
        if let Some(hit) = self.lock()?.get(id) {
            return Ok(hit);
        }
        let mut chain = Vec::new();
        let mut next = Some(id);
        while let Some(current) = next {
            if let Some(hit) = self.lock()?.get(current) {
                chain.push(Err(hit));
                break;
            }
            let snapshot = self.load_snapshot(current)?;
            next = snapshot.parent;
            chain.push(Ok(snapshot));
        }
        let mut state = StateMap::new();
        for link in chain.into_iter().rev() {
            match link {
                Err(cached) => state = (*cached).clone(),
                Ok(snapshot) => {
                    for (kind, key, event_id) in snapshot.entries {
                        state.insert((StateEventType::from(kind), key), event_id);
                    }
                }
            }
        }
        let state = Arc::new(state);
        self.remember(id, state.clone())?;
        Ok(state)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SnapshotCache>> {
        self.cache
            .lock()
            .map_err(|_| Error::internal("snapshot cache poisoned"))
    }

    pub fn remember(&self, id: u64, state: Arc<StateMap>) -> Result<()> {
        self.lock()?.insert(id, state);
        Ok(())
    }

    /// The snapshot that sets `changes` on top of `parent` (whose full state is `parent_state`):
    /// a delta, or a full copy when the chain is long.
    pub fn derive(
        &self,
        parent: Option<(u64, &StateMap)>,
        changes: &[((StateEventType, String), OwnedEventId)],
    ) -> Result<(Snapshot, StateMap)> {
        let mut full = parent.map(|(_, s)| s.clone()).unwrap_or_default();
        for (entry, event_id) in changes {
            full.insert(entry.clone(), event_id.clone());
        }
        let chain = match parent {
            Some((id, _)) => self.load_snapshot(id)?.chain + 1,
            None => 0,
        };
        let snapshot = if parent.is_none() || chain >= FULL_SNAPSHOT_EVERY {
            Snapshot {
                parent: None,
                chain: 0,
                entries: full
                    .iter()
                    .map(|((k, s), e)| (k.to_string(), s.clone(), e.clone()))
                    .collect(),
            }
        } else {
            Snapshot {
                parent: parent.map(|(id, _)| id),
                chain,
                entries: changes
                    .iter()
                    .map(|((k, s), e)| (k.to_string(), s.clone(), e.clone()))
                    .collect(),
            }
        };
        Ok((snapshot, full))
    }
}

impl SnapshotStore {
    /// The snapshot for an arbitrary `target` state: a delta on `parent` when `target` only adds
    /// or changes entries, a full copy when it drops some (deltas cannot remove entries).
    pub fn derive_to(
        &self,
        parent: Option<(u64, &StateMap)>,
        target: &StateMap,
    ) -> Result<Snapshot> {
        let delta = parent.and_then(|(_, base)| {
            if base.keys().all(|k| target.contains_key(k)) {
                Some(
                    target
                        .iter()
                        .filter(|(k, v)| base.get(*k) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>(),
                )
            } else {
                None
            }
        });
        match delta {
            Some(changes) => Ok(self.derive(parent, &changes)?.0),
            None => Ok(self
                .derive(
                    None,
                    &target
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<Vec<_>>(),
                )?
                .0),
        }
    }
}

/// Writes a snapshot inside a transaction.
pub fn put_snapshot<E: From<Error>>(
    tree: &TxTree<'_>,
    id: u64,
    snapshot: &Snapshot,
) -> std::result::Result<(), TxError<E>> {
    let bytes = serde_json::to_vec(snapshot)
        .map_err(|e| crate::storage::abort(E::from(Error::internal(e))))?;
    tree.put(keys::u64_be(id), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_of(n: usize) -> Arc<StateMap> {
        Arc::new(
            (0..n)
                .map(|i| {
                    (
                        (StateEventType::RoomMember, format!("@u{i}:x")),
                        OwnedEventId::try_from(format!("$e{i}")).unwrap(),
                    )
                })
                .collect(),
        )
    }

    #[test]
    fn cache_is_bounded_by_entries_and_drops_the_oldest_first() {
        let mut cache = SnapshotCache {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            entries: 0,
            budget: 10,
        };
        cache.insert(1, state_of(4));
        cache.insert(2, state_of(4));
        assert_eq!(cache.entries, 8);
        cache.insert(3, state_of(4));
        assert!(cache.get(1).is_none(), "the oldest snapshot goes first");
        assert!(cache.get(2).is_some() && cache.get(3).is_some());
        assert_eq!(cache.entries, 8);
        cache.insert(4, state_of(11));
        assert!(
            cache.get(4).is_none(),
            "a snapshot over the whole budget is not cached"
        );
        assert_eq!(cache.entries, 8);
    }
}
