//! A room's history from before this server's timeline of it: the events backfilled from other
//! servers (see [`super::backfill`]), in an order of their own.
//!
//! The timeline of a room joined over federation starts at our join (or at an invite); what came
//! before is fetched on demand. Those events have no stream position (they are older than
//! everything a client synced), so they are kept in a separate order, counted back from the
//! start of the timeline: order 1 is the newest event before it, higher orders are older. Each
//! fetched batch is walked back from what we have, so a batch is older than every batch before
//! it, and its events are numbered newest first. `/messages` reads the timeline back to its
//! start, then this order (pagination tokens `h<order>`).
//!
//! Per room a record keeps the *frontier* (the events the oldest ones we have follow but that we
//! lack), the next order to hand out, and a round counter so that two fetches running at once
//! never both write a batch.

use std::collections::BTreeSet;

use ruma::{EventId, OwnedEventId, RoomId};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::outlier::{EventStanding, Standing};
use crate::storage::{Store, Tree, abort, keys, trees};

/// The most events a room's frontier holds (a fork-heavy history may have more; the rest is
/// found again from the events fetched).
pub const MAX_FRONTIER: usize = 50;
/// How many of the first timeline events are looked at for prev events we lack.
const TIMELINE_EDGE: usize = 10;

/// The backfill record of a room.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Frontier {
    /// Events the oldest ones we have follow, that we do not have.
    pub events: Vec<OwnedEventId>,
    /// The order the next backfilled event gets (orders start at 1).
    pub next_order: u64,
    /// Bumped by every write, so that a fetch that started on an older record does not write.
    pub round: u64,
    /// No fetch before this time (ms since the epoch), after one that brought nothing.
    pub retry_after: u64,
}

/// The trees of the backfilled history.
pub struct History {
    store: Store,
    /// room, order → event ID.
    order: Tree,
    /// event ID → order.
    by_event: Tree,
    /// room → [`Frontier`].
    frontier: Tree,
}

fn order_key(room_id: &RoomId, order: u64) -> Vec<u8> {
    let mut key = keys::prefix(room_id.as_str());
    key.extend_from_slice(&keys::u64_be(order));
    key
}

/// A pagination token in the backfilled history.
pub fn history_token(order: u64) -> String {
    format!("h{order}")
}

/// The order a `h<order>` token names; `None` for any other token.
pub fn parse_history_token(raw: &str) -> Option<u64> {
    raw.strip_prefix('h')?.parse().ok()
}

impl History {
    pub fn open(store: &Store) -> Result<Self> {
        Ok(Self {
            order: store.tree(trees::ROOMID_HISTORYORDER_EVENTID)?,
            by_event: store.tree(trees::EVENTID_HISTORYORDER)?,
            frontier: store.tree(trees::ROOMID_BACKFILLFRONTIER)?,
            store: store.clone(),
        })
    }

    /// The order of a backfilled event.
    pub fn order_of(&self, event_id: &EventId) -> Result<Option<u64>> {
        Ok(self
            .by_event
            .get(event_id.as_bytes())?
            .and_then(|v| keys::read_u64_be(&v)))
    }

    /// The room's record as stored (empty when the room was never backfilled).
    pub fn record(&self, room_id: &RoomId) -> Result<Frontier> {
        match self.frontier.get(room_id.as_bytes())? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(Frontier::default()),
        }
    }

    /// Backfilled events of the room beyond `from` (exclusive): older ones when `backwards`
    /// (growing orders), newer ones otherwise (shrinking orders, down to 1), at most `limit`.
    pub fn range(
        &self,
        room_id: &RoomId,
        from: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let (start, end) = if backwards {
            (from.saturating_add(1), u64::MAX)
        } else {
            (1, from)
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let prefix_len = keys::prefix(room_id.as_str()).len();
        let parse = |item: std::result::Result<_, crate::storage::StorageError>| -> Result<_> {
            let (key, value): (crate::storage::Bytes, crate::storage::Bytes) = item?;
            let order = keys::read_u64_be(&key[prefix_len..])
                .ok_or_else(|| Error::internal("bad history key"))?;
            let id = OwnedEventId::try_from(String::from_utf8_lossy(&value).as_ref())
                .map_err(Error::internal)?;
            Ok((order, id))
        };
        let range = self
            .order
            .range(&order_key(room_id, start), &order_key(room_id, end));
        if backwards {
            range.take(limit).map(parse).collect()
        } else {
            range.rev().take(limit).map(parse).collect()
        }
    }

    /// Appends a batch (newest first) behind the room's history and stores the new frontier,
    /// unless another write happened since `round` was read. Returns whether it wrote.
    pub fn append(
        &self,
        room_id: &RoomId,
        round: u64,
        newest_first: &[OwnedEventId],
        frontier: Vec<OwnedEventId>,
    ) -> Result<bool> {
        let trees = [&self.order, &self.by_event, &self.frontier];
        let wrote = self.store.transact(&trees, |t| {
            let mut record: Frontier = match t[2].get(room_id.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| abort(e.into()))?,
                None => Frontier::default(),
            };
            if record.round != round {
                return Ok(false);
            }
            let mut next = record.next_order.max(1);
            for event_id in newest_first {
                if t[1].get(event_id.as_bytes())?.is_some() {
                    continue;
                }
                t[0].put(order_key(room_id, next), event_id.as_bytes().to_vec())?;
                t[1].put(event_id.as_bytes(), keys::u64_be(next).to_vec())?;
                next += 1;
            }
            record.next_order = next;
            record.round += 1;
            record.events = frontier.clone();
            record.retry_after = 0;
            let bytes = serde_json::to_vec(&record).map_err(|e| abort(Error::from(e)))?;
            t[2].put(room_id.as_bytes(), bytes)?;
            Ok(true)
        })?;
        Ok(wrote)
    }

    /// Records that a fetch brought nothing: no new fetch for the room before `retry_after`.
    pub fn postpone(&self, room_id: &RoomId, round: u64, retry_after: u64) -> Result<()> {
        self.store.transact(&[&self.frontier], |t| {
            let mut record: Frontier = match t[0].get(room_id.as_bytes())? {
                Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| abort(e.into()))?,
                None => Frontier::default(),
            };
            if record.round == round {
                record.retry_after = retry_after;
                let bytes = serde_json::to_vec(&record).map_err(|e| abort(Error::from(e)))?;
                t[0].put(room_id.as_bytes(), bytes)?;
            }
            Ok::<_, crate::storage::TxError<Error>>(())
        })?;
        Ok(())
    }
}

impl Services {
    /// The backfilled history's trees.
    pub fn history(&self) -> Result<History> {
        History::open(&self.store)
    }

    /// Whether an event is part of the room's history as clients read it: in the timeline, or
    /// backfilled before it.
    pub fn in_history(&self, history: &History, event_id: &EventId) -> Result<bool> {
        Ok(
            self.rooms.event_standing(event_id)? == Some(EventStanding::Timeline)
                || history.order_of(event_id)?.is_some(),
        )
    }

    /// Whether an event may still join the history: not in it, and not stored as rejected or
    /// soft-failed (those never reach clients).
    fn still_wanted(&self, history: &History, event_id: &EventId) -> Result<bool> {
        if self.in_history(history, event_id)? {
            return Ok(false);
        }
        Ok(!matches!(
            self.rooms.event_standing(event_id)?,
            Some(EventStanding::Beside(
                Standing::Rejected | Standing::SoftFailed
            ))
        ))
    }

    /// The events to backfill next: the stored frontier and the prev events of the first
    /// timeline events that we lack (the timeline may have started anew since the record was
    /// written, a join after an invite), without those now had. Empty: the history is complete.
    pub fn backfill_frontier(
        &self,
        history: &History,
        room_id: &RoomId,
        record: &Frontier,
    ) -> Result<Vec<OwnedEventId>> {
        let mut candidates: BTreeSet<OwnedEventId> = record.events.iter().cloned().collect();
        let edge = self
            .rooms
            .timeline_range(room_id, 0, u64::MAX, false, TIMELINE_EDGE)?;
        for (_, id) in edge {
            if let Some(pdu) = self.rooms.pdu(&id)? {
                candidates.extend(pdu.prev_events().iter().cloned());
            }
        }
        let mut frontier = Vec::new();
        for id in candidates {
            if frontier.len() >= MAX_FRONTIER {
                break;
            }
            if self.still_wanted(history, &id)? {
                frontier.push(id);
            }
        }
        Ok(frontier)
    }

    /// The frontier once a batch is in: the old one and the prev events of the batch, without
    /// what is now had (the batch included) or can never be.
    pub fn next_frontier(
        &self,
        history: &History,
        old: &[OwnedEventId],
        batch: &[crate::core::Pdu],
    ) -> Result<Vec<OwnedEventId>> {
        let added: BTreeSet<&EventId> = batch.iter().map(|pdu| pdu.event_id()).collect();
        let candidates: BTreeSet<OwnedEventId> = old
            .iter()
            .cloned()
            .chain(
                batch
                    .iter()
                    .flat_map(|pdu| pdu.prev_events().iter().cloned()),
            )
            .collect();
        let mut frontier = Vec::new();
        for id in candidates {
            if frontier.len() >= MAX_FRONTIER {
                break;
            }
            if !added.contains(&*id) && self.still_wanted(history, &id)? {
                frontier.push(id);
            }
        }
        Ok(frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> OwnedEventId {
        OwnedEventId::try_from(format!("$e{n}")).unwrap()
    }

    #[test]
    fn tokens_round_trip_and_stay_apart_from_stream_tokens() {
        assert_eq!(parse_history_token(&history_token(42)), Some(42));
        assert_eq!(parse_history_token("s42"), None);
        assert_eq!(parse_history_token("h"), None);
        assert_eq!(parse_history_token("h-1"), None);
    }

    #[test]
    fn batches_are_numbered_back_in_time_and_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let history = History::open(&store).unwrap();
        let room = RoomId::parse("!r:example.org").unwrap();
        let first = [event(3), event(2)];
        assert!(history.append(&room, 0, &first, vec![event(1)]).unwrap());
        // A fetch that read the record before this write does not write.
        assert!(!history.append(&room, 0, &[event(9)], Vec::new()).unwrap());
        let second = [event(2), event(1)];
        assert!(history.append(&room, 1, &second, Vec::new()).unwrap());
        let older = history.range(&room, 0, true, 10).unwrap();
        let ids: Vec<_> = older.iter().map(|(o, id)| (*o, id.clone())).collect();
        assert_eq!(ids, vec![(1, event(3)), (2, event(2)), (3, event(1))]);
        assert_eq!(history.order_of(&event(9)).unwrap(), None);
        // Newer than order 3, newest last read first.
        let newer = history.range(&room, 3, false, 10).unwrap();
        assert_eq!(
            newer.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert!(history.range(&room, 1, false, 10).unwrap().is_empty());
        assert_eq!(history.range(&room, 1, true, 1).unwrap()[0].0, 2);
        let record = history.record(&room).unwrap();
        assert_eq!((record.next_order, record.round), (4, 2));
        assert!(record.events.is_empty());
        history.postpone(&room, 1, 99).unwrap();
        assert_eq!(history.record(&room).unwrap().retry_after, 0, "stale round");
        history.postpone(&room, 2, 99).unwrap();
        assert_eq!(history.record(&room).unwrap().retry_after, 99);
    }
}
