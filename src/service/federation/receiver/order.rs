//! Ordering fetched events so that each comes after the events it depends on (its auth events
//! when authorising a batch of outliers, its prev events when processing pulled events). A peer's
//! `depth` cannot be trusted for that; the references can.

use std::collections::HashMap;

use ruma::OwnedEventId;

use crate::core::Pdu;

/// `events` ordered so that every event comes after those of the batch it references through
/// `edges`. References outside the batch are ignored; a cycle (which valid events cannot form,
/// their IDs being hashes of what they reference) is broken anywhere.
pub fn dependencies_first(events: Vec<Pdu>, edges: impl Fn(&Pdu) -> &[OwnedEventId]) -> Vec<Pdu> {
    let index: HashMap<OwnedEventId, usize> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id().to_owned(), i))
        .collect();
    // 0: not seen, 1: being visited, 2: placed.
    let mut mark = vec![0u8; events.len()];
    let mut order = Vec::with_capacity(events.len());
    for start in 0..events.len() {
        if mark[start] != 0 {
            continue;
        }
        mark[start] = 1;
        let mut stack = vec![(start, 0usize)];
        while let Some((node, next)) = stack.last_mut() {
            let references = edges(&events[*node]);
            if let Some(reference) = references.get(*next) {
                *next += 1;
                if let Some(&child) = index.get(reference)
                    && mark[child] == 0
                {
                    mark[child] = 1;
                    stack.push((child, 0));
                }
            } else {
                mark[*node] = 2;
                order.push(*node);
                stack.pop();
            }
        }
    }
    let mut slots: Vec<Option<Pdu>> = events.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;
    use serde_json::json;

    use super::*;
    use crate::core::test_support::{TestRoom, user};

    #[test]
    fn auth_events_come_first_whatever_the_input_order() {
        let alice = user("alice");
        let mut room = TestRoom::new(RoomVersionId::V11, &alice);
        let topic = room
            .send(&alice, "m.room.topic", Some(""), json!({ "topic": "t" }))
            .unwrap();
        let message = room
            .send(&alice, "m.room.message", None, json!({ "body": "hi" }))
            .unwrap();
        // Newest first: the worst order for the walk.
        let mut events: Vec<Pdu> = room.pdus.values().cloned().collect();
        events.sort_by_key(|e| std::cmp::Reverse(e.depth()));
        let ordered = dependencies_first(events.clone(), |e| e.auth_events());
        let position = |id: &ruma::EventId| {
            ordered
                .iter()
                .position(|e| e.event_id() == id)
                .expect("every event is kept")
        };
        assert_eq!(ordered.len(), events.len());
        for event in &ordered {
            for auth in event.auth_events() {
                assert!(position(auth) < position(event.event_id()));
            }
        }
        let by_prev = dependencies_first(events, |e| e.prev_events());
        let at = |id: &ruma::EventId| by_prev.iter().position(|e| e.event_id() == id).unwrap();
        assert!(at(&topic) < at(&message));
    }
}
