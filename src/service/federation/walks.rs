//! Walks over a room's DAG that other servers ask for: `/backfill` (back from given events,
//! deepest first) and `/get_missing_events` (breadth-first back from the latest events, stopping
//! at the earliest ones), and the event closest to a time (`/timestamp_to_event`). Each serves
//! only what the asking server may see (see [`super::served`]) and looks at a bounded number of
//! events whatever the peer asks.

use std::collections::{BinaryHeap, HashSet, VecDeque};

use ruma::{OwnedEventId, RoomId, UInt};
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
/// The most timeline entries `/timestamp_to_event` looks at, from where the time falls.
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
    /// (which follows the local clock) from the stream position where `ts` falls (see
    /// [`Services::timeline_position_of`]), at most a bounded number of entries.
    pub fn closest_event_for_server(
        &self,
        reader: &mut ServerReader<'_>,
        ts: u64,
        forwards: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        const BATCH: usize = 200;
        let Some(boundary) = self.timeline_position_of(reader.room_id, ts, forwards)? else {
            return Ok(None);
        };
        // Forwards: on from the entries stamped before `ts`; backwards: back from `high`, the
        // last entry that may be stamped at or before it.
        let mut cursor = if forwards {
            boundary.low
        } else {
            boundary.high.saturating_add(1)
        };
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

    /// Where `ts` falls in the room's timeline: a binary search over stream positions, by the
    /// `origin_server_ts` of the first entry after each probed position, for the last entry
    /// stamped before `ts` (`forwards`: earlier than `ts`; backwards: not later than `ts`).
    /// Stream order follows the local clock, so stamps rise with it (events of other servers
    /// may be a little out of order). At most 64 probes, each one seek; `None` for an empty
    /// timeline.
    fn timeline_position_of(
        &self,
        room_id: &RoomId,
        ts: u64,
        forwards: bool,
    ) -> Result<Option<Boundary>> {
        let Some((last, _)) = self
            .rooms
            .timeline_range(room_id, 0, u64::MAX, true, 1)?
            .pop()
        else {
            return Ok(None);
        };
        let before_ts = |event_ts: u64| {
            if forwards {
                event_ts < ts
            } else {
                event_ts <= ts
            }
        };
        // The entries up to `low` are before `ts`, those after `high` are not (0 and `last`
        // hold trivially: no entry is at 0, none after `last`).
        let (mut low, mut high) = (0, last);
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            // The first entry after `mid`; with none up to `high`, every entry after `mid` is
            // after `ts` already.
            let probe = self
                .rooms
                .timeline_range(room_id, mid, high.saturating_add(1), false, 1)?
                .pop();
            let Some((pos, id)) = probe else {
                high = mid;
                continue;
            };
            // An entry that cannot be read counts as before `ts`: the scan starts past it.
            let stamped = self
                .rooms
                .pdu(&id)?
                .map(|pdu| u64::from(pdu.origin_server_ts().0));
            // Either way the interval halves at least, so this ends.
            if stamped.is_none_or(before_ts) {
                low = pos;
            } else {
                high = mid;
            }
        }
        Ok(Some(Boundary { low, high }))
    }
}

/// Where a time falls in a room's timeline (see [`Services::timeline_position_of`]): the entries
/// at or before `low` come before it, those after `high` do not; between them lies at most the
/// entry at `high`.
struct Boundary {
    low: u64,
    high: u64,
}
