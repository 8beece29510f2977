//! Decoded events kept in memory: the events a room's appends and syncs read again and again
//! (its create, power levels and member events, the newest messages) are decoded from JSON once.
//! Bounded by a number of events; the oldest entries are dropped first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ruma::{EventId, OwnedEventId};

use crate::core::Pdu;

/// Events kept decoded by default.
pub const DEFAULT_ENTRIES: usize = 4096;

pub struct EventCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

struct Inner {
    by_id: HashMap<OwnedEventId, Arc<Pdu>>,
    order: VecDeque<OwnedEventId>,
}

impl EventCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                by_id: HashMap::new(),
                order: VecDeque::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The cache holds no invariant a panic could break half-way.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, event_id: &EventId) -> Option<Arc<Pdu>> {
        self.lock().by_id.get(event_id).cloned()
    }

    pub fn insert(&self, pdu: Arc<Pdu>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        let id = pdu.event_id().to_owned();
        if inner.by_id.insert(id.clone(), pdu).is_some() {
            return;
        }
        inner.order.push_back(id);
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_id.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_support::{TestRoom, user};
    use serde_json::json;

    #[test]
    fn bounded_and_oldest_first() {
        let alice = user("alice");
        let mut room = TestRoom::new(ruma::RoomVersionId::V11, &alice);
        let events: Vec<Arc<Pdu>> = (0..3)
            .map(|i| {
                let id = room
                    .send(
                        &alice,
                        "m.room.message",
                        None,
                        json!({ "body": i.to_string() }),
                    )
                    .unwrap();
                Arc::new(room.get(&id).unwrap().clone())
            })
            .collect();
        let cache = EventCache::new(2);
        for pdu in &events {
            cache.insert(pdu.clone());
        }
        assert!(cache.get(events[0].event_id()).is_none());
        assert!(cache.get(events[1].event_id()).is_some());
        assert!(cache.get(events[2].event_id()).is_some());
        // Inserting a cached event again does not grow the cache.
        cache.insert(events[2].clone());
        assert_eq!(cache.lock().order.len(), 2);
    }
}
