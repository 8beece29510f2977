//! Walks over a room's DAG that other servers ask for: `/backfill` (back from given events,
//! deepest first) and `/get_missing_events` (breadth-first back from the latest events, stopping
//! at the earliest ones), and the event closest to a time (`/timestamp_to_event`). Each serves
//! only what the asking server may see (see [`super::served`]) and looks at a bounded number of
//! events whatever the peer asks.

use std::collections::{BinaryHeap, HashSet, VecDeque};

use ruma::{OwnedEventId, UInt};
use serde_json::Value;

use super::served::{ServerReader, ServerView};
use crate::error::Result;
use crate::service::Services;

/// The most events a `/backfill` answer holds.
pub const MAX_BACKFILL_LIMIT: usize = 100;
/// The most events a `/get_missing_events` answer holds, and how many when not told.
pub const MAX_MISSING_EVENTS_LIMIT: usize = 20;
pub const DEFAULT_MISSING_EVENTS_LIMIT: usize = 10;
/// The most events one walk looks at (hidden and unknown ones included).
const MAX_WALK: usize = 2_000;
/// The most timeline entries `/timestamp_to_event` looks at.
const MAX_TIMESTAMP_SCAN: usize = 10_000;

/// What `/get_missing_events` asks for.
pub struct MissingEventsRequest {
    pub earliest_events: Vec<OwnedEventId>,
    pub latest_events: Vec<OwnedEventId>,
    pub limit: usize,
    pub min_depth: u64,
}

impl Services {
    /// The events `v` and those before them, deepest first (a topological order back in time),
    /// at most `limit`. Events the server may not see are left out, their prev events still
    /// walked; soft-failed and rejected ones too.
    pub fn backfill_events(
        &self,
        reader: &mut ServerReader<'_>,
        v: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Value>> {
        let limit = limit.min(MAX_BACKFILL_LIMIT);
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut heap: BinaryHeap<(UInt, OwnedEventId)> = BinaryHeap::new();
        for id in v {
            if seen.insert(id.clone())
                && let Some(pdu) = self.rooms.pdu(id)?
                && pdu.room_id() == reader.room_id
            {
                heap.push((pdu.depth(), id.clone()));
            }
        }
        let mut out = Vec::new();
        let mut walked = 0;
        while let Some((_, id)) = heap.pop() {
            if out.len() >= limit || walked >= MAX_WALK {
                break;
            }
            walked += 1;
            let Some(pdu) = self.rooms.pdu(&id)? else {
                continue;
            };
            if pdu.rejected() {
                continue;
            }
            if let Some(servable) = self.servable_event(reader.room_id, &id)? {
                let view = self.server_view(reader, &servable)?;
                if let Some(json) = self.served_as(&servable, view)? {
                    out.push(json);
                }
            }
            for prev in pdu.prev_events() {
                if seen.insert(prev.clone())
                    && let Some(prev_pdu) = self.rooms.pdu(prev)?
                    && prev_pdu.room_id() == reader.room_id
                {
                    heap.push((prev_pdu.depth(), prev.clone()));
                }
            }
        }
        Ok(out)
    }

    /// The events before `latest_events` the server lacks: a breadth-first walk of their prev
    /// events, not into `earliest_events` nor below `min_depth`, at most `limit`, oldest first.
    pub fn missing_events(
        &self,
        reader: &mut ServerReader<'_>,
        request: &MissingEventsRequest,
    ) -> Result<Vec<Value>> {
        let limit = request.limit.min(MAX_MISSING_EVENTS_LIMIT);
        let mut seen: HashSet<OwnedEventId> = request
            .earliest_events
            .iter()
            .chain(&request.latest_events)
            .cloned()
            .collect();
        let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
        for id in &request.latest_events {
            if let Some(pdu) = self.rooms.pdu(id)?
                && pdu.room_id() == reader.room_id
            {
                queue.extend(pdu.prev_events().iter().cloned());
            }
        }
        let mut found = Vec::new();
        let mut walked = 0;
        while let Some(id) = queue.pop_front() {
            if found.len() >= limit || walked >= MAX_WALK {
                break;
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            walked += 1;
            let Some(pdu) = self.servable_event(reader.room_id, &id)? else {
                continue;
            };
            if u64::from(pdu.depth()) < request.min_depth {
                continue;
            }
            let view = self.server_view(reader, &pdu)?;
            if let Some(json) = self.served_as(&pdu, view)? {
                found.push((pdu.depth(), json));
            }
            queue.extend(pdu.prev_events().iter().cloned());
        }
        found.sort_by_key(|(depth, _)| *depth);
        Ok(found.into_iter().map(|(_, json)| json).collect())
    }

    /// The event of the timeline closest to `ts` that the server may see fully: the first at or
    /// after it (`forwards`), or the last at or before it. Walks the timeline in stream order
    /// (which follows the local clock), at most a bounded number of entries.
    pub fn closest_event_for_server(
        &self,
        reader: &mut ServerReader<'_>,
        ts: u64,
        forwards: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        const BATCH: usize = 200;
        let mut cursor = if forwards { 0 } else { u64::MAX };
        let mut scanned = 0;
        while scanned < MAX_TIMESTAMP_SCAN {
            let (after, before) = if forwards {
                (cursor, u64::MAX)
            } else {
                (0, cursor)
            };
            let entries =
                self.rooms
                    .timeline_range(reader.room_id, after, before, !forwards, BATCH)?;
            let exhausted = entries.len() < BATCH;
            for (pos, id) in entries {
                cursor = pos;
                scanned += 1;
                let Some(pdu) = self.servable_event(reader.room_id, &id)? else {
                    continue;
                };
                let event_ts: u64 = pdu.origin_server_ts().0.into();
                let on_side = if forwards {
                    event_ts >= ts
                } else {
                    event_ts <= ts
                };
                if on_side && self.server_view(reader, &pdu)? == ServerView::Full {
                    return Ok(Some((id, event_ts)));
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(None)
    }
}
