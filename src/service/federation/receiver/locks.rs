//! Asynchronous locks by key (a room, an origin server), made on first use and dropped when
//! nobody holds or waits for them, so that the map stays as small as the work in progress.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// One lock per key.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds the lock of one key; releases it (and forgets it when unused) on drop.
pub struct KeyedGuard<'a, K: Eq + Hash + Clone> {
    locks: &'a KeyedLocks<K>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: &K) -> KeyedGuard<'_, K> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key.clone()).or_default().clone()
        };
        KeyedGuard {
            locks: self,
            key: key.clone(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// How many keys have a lock now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyedGuard<'_, K> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Only the map holds it: nobody waits (a waiter clones it under this same map lock).
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_forgotten_when_free() {
        let locks: Arc<KeyedLocks<String>> = Arc::new(KeyedLocks::default());
        let first = locks.lock(&"a".to_owned()).await;
        // Another key is free.
        drop(locks.lock(&"b".to_owned()).await);
        assert_eq!(locks.len(), 1);
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _second = locks.lock(&"a".to_owned()).await;
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);
    }
}
