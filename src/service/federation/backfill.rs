//! Backfilling: fetching a room's history from before our timeline from servers in the room
//! (`GET /_matrix/federation/v1/backfill/{roomId}`), when a client reads back that far.
//!
//! One round asks one server at a time (at most a few) for the events before the room's
//! frontier (see [`super::history`]). What comes back is trusted no more than a transaction:
//!
//! - only events reachable back from the frontier through their `prev_events` are kept (a peer
//!   cannot slip unrelated events into the history);
//! - each, oldest first, has its signatures and content hash checked (a bad hash keeps the
//!   redacted event), its auth events fetched when unknown and checked (check 4), the state
//!   before it worked out from its prev events (fetched with `/state_ids` where they are missing,
//!   as at a gap) and the auth rules run against it (check 5);
//! - what fails is stored as rejected (never served) or left out; what passes is stored beside
//!   the timeline with its state, then the batch is appended to the history, newest first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ruma::{CanonicalJsonObject, OwnedEventId, OwnedServerName, RoomId, RoomVersionId};
use serde_json::Value;

use super::history::{Frontier, History};
use super::receiver::Peer;
use super::receiver::budget::Budget;
use super::receiver::fetch::encode;
use super::receiver::order::dependencies_first;
use crate::core::{self, Pdu, StateMap, pdu::MAX_PREV_EVENTS};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::federation::request::Limit;
use crate::service::rooms::outlier::{EventStanding, Standing};
use crate::util::now_ms;

/// The fewest and most events one `/backfill` asks for.
const MIN_BATCH: usize = 20;
const MAX_BATCH: usize = 100;
/// The most servers one round asks.
const MAX_SERVERS_PER_ROUND: usize = 3;
/// How long one server gets to answer and have its batch checked.
const SERVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a room is left alone after a round that brought nothing.
const RETRY_AFTER_MS: u64 = 30_000;

impl Services {
    /// One round of backfill of `room_id`, asking for about `wanted` events: `Ok(true)` when the
    /// history grew. Nothing is asked when the history is complete, when no other server is in
    /// the room, or shortly after a round that brought nothing.
    pub async fn backfill_round(&self, room_id: &RoomId, wanted: usize) -> Result<bool> {
        if !self.federation.enabled() {
            return Ok(false);
        }
        let Some(version) = self.rooms.room_version(room_id)? else {
            return Ok(false);
        };
        let history = self.history()?;
        let record = history.record(room_id)?;
        let frontier = self.backfill_frontier(&history, room_id, &record)?;
        if frontier.is_empty() || record.retry_after > now_ms() {
            return Ok(false);
        }
        let limit = wanted.clamp(MIN_BATCH, MAX_BATCH);
        for server in self.backfill_servers(room_id)? {
            let attempt = self.backfill_from(&server, room_id, &version, &frontier, limit);
            let batch = match tokio::time::timeout(SERVER_TIMEOUT, attempt).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::info!(%server, %room_id, error = %e, "backfill failed");
                    continue;
                }
                Err(_) => {
                    tracing::info!(%server, %room_id, "backfill timed out");
                    continue;
                }
            };
            if batch.is_empty() {
                continue;
            }
            return self.append_history(&history, room_id, &record, &frontier, batch);
        }
        history.postpone(room_id, record.round, now_ms() + RETRY_AFTER_MS)?;
        Ok(false)
    }

    /// The servers to ask for a room's history: those in the room (the server named in the
    /// room ID first, it was there from the start), not ourselves, at most a few.
    fn backfill_servers(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let in_room = self.rooms.servers_in_room(room_id)?;
        let creator = room_id
            .server_name()
            .filter(|server| in_room.contains(*server))
            .map(ToOwned::to_owned);
        let mut servers: Vec<OwnedServerName> = creator.into_iter().collect();
        for server in in_room {
            if !servers.contains(&server) {
                servers.push(server);
            }
        }
        servers.retain(|server| !self.federation.is_us(server));
        servers.truncate(MAX_SERVERS_PER_ROUND);
        Ok(servers)
    }

    /// Appends a checked batch (oldest first) to the history with the frontier it leaves.
    fn append_history(
        &self,
        history: &History,
        room_id: &RoomId,
        record: &Frontier,
        frontier: &[OwnedEventId],
        batch: Vec<Pdu>,
    ) -> Result<bool> {
        let next = self.next_frontier(history, frontier, &batch)?;
        let newest_first: Vec<OwnedEventId> = batch
            .iter()
            .rev()
            .map(|pdu| pdu.event_id().to_owned())
            .collect();
        // Another round that wrote meanwhile brought at least as much.
        history.append(room_id, record.round, &newest_first, next)?;
        Ok(true)
    }

    /// Asks `server` for the events before `frontier` and takes each through the checks;
    /// returns those that joined the history, oldest first.
    async fn backfill_from(
        &self,
        server: &OwnedServerName,
        room_id: &RoomId,
        version: &RoomVersionId,
        frontier: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<Pdu>> {
        let budget = Budget::default();
        let peer = Peer {
            services: self,
            origin: server,
            budget: &budget,
        };
        let mut path = format!(
            "/_matrix/federation/v1/backfill/{}?limit={limit}",
            encode(room_id.as_str())
        );
        for id in frontier {
            path.push_str("&v=");
            path.push_str(&encode(id.as_str()));
        }
        let answer = self.federation.get(server, &path, Limit::Batch).await?;
        let events = parse_batch(&peer, room_id, version, &answer, limit)?;
        let history = self.history()?;
        let mut fresh = Vec::with_capacity(events.len());
        for pdu in events {
            if !self.in_history(&history, pdu.event_id())? {
                fresh.push(pdu);
            }
        }
        let wanted = reachable(frontier, fresh);
        let mut placed = Vec::new();
        for pdu in dependencies_first(wanted, |pdu| pdu.prev_events()) {
            let event_id = pdu.event_id().to_owned();
            match self.place_backfilled(&peer, pdu).await {
                Ok(Some(pdu)) => placed.push(pdu),
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(%server, %event_id, error = %e, "left out a backfilled event");
                }
            }
        }
        Ok(placed)
    }

    /// Takes one backfilled event through the checks and stores it with the state before it.
    /// `Ok(Some)`: it may join the history (the stored form); `Ok(None)`: it was rejected, or is
    /// stored as an event that never reaches clients.
    async fn place_backfilled(&self, peer: &Peer<'_>, pdu: Pdu) -> Result<Option<Pdu>> {
        let rooms = &self.rooms;
        let event_id = pdu.event_id().to_owned();
        // The room the peer gave the event for (checked when the batch was parsed).
        let room_id = pdu.room_id().to_owned();
        let (pdu, stored) = match rooms.event_standing(&event_id)? {
            Some(EventStanding::Beside(Standing::Outlier)) => match rooms.pdu(&event_id)? {
                Some(stored) => ((*stored).clone(), true),
                None => return Ok(None),
            },
            Some(_) => return Ok(None),
            None => {
                let pdu = peer.verify(pdu).await?;
                peer.fetch_auth_events(&pdu).await?;
                if let Err(reason) = rooms.check_against_auth_events(&pdu)? {
                    tracing::info!(%event_id, %reason, "rejected a backfilled event");
                    rooms.store_outlier(&pdu.with_rejected(true)).await?;
                    return Ok(None);
                }
                (pdu, false)
            }
        };
        let state_before = match self.state_before_event(&pdu)? {
            Some((_, state)) => state,
            None => {
                peer.fill_prev_events(&pdu, false).await?;
                Arc::new(self.state_from_prevs(&pdu)?.ok_or_else(|| {
                    Error::NotFound(format!("the state before {event_id} is unknown"))
                })?)
            }
        };
        let fetch = |id: &ruma::EventId| rooms.pdu(id).ok().flatten();
        match core::auth::check(&pdu, &state_before, fetch) {
            Ok(()) => {}
            Err(core::Error::Unauthorized(reason)) => {
                tracing::info!(%event_id, %reason, "rejected a backfilled event");
                if !stored {
                    rooms.store_outlier(&pdu.with_rejected(true)).await?;
                }
                return Ok(None);
            }
            Err(core::Error::EventNotFound(id)) => {
                return Err(Error::NotFound(format!("the event {id} is unknown")));
            }
            Err(e) => return Err(e.into()),
        }
        if rooms.state_after_event(&event_id)?.is_none() {
            rooms
                .store_gap_event(&room_id, &pdu, (*state_before).clone())
                .await?;
        }
        Ok(Some(pdu))
    }

    /// The state before an event from the states after its prev events (resolved when they
    /// differ); `None` when one of them is unknown.
    fn state_from_prevs(&self, pdu: &Pdu) -> Result<Option<StateMap>> {
        let mut states: Vec<StateMap> = Vec::new();
        for prev in pdu.prev_events().iter().take(MAX_PREV_EVENTS) {
            let Some(snapshot) = self.rooms.state_after_event(prev)? else {
                return Ok(None);
            };
            let state = match snapshot {
                Some(id) => (*self.rooms.snapshots.state(id)?).clone(),
                None => StateMap::new(),
            };
            if !states.contains(&state) {
                states.push(state);
            }
        }
        match states.len() {
            0 => Ok(None),
            1 => Ok(states.pop()),
            _ => {
                let fetch = |id: &ruma::EventId| self.rooms.pdu(id).ok().flatten();
                Ok(Some(core::state::resolve(
                    pdu.room_version(),
                    &states,
                    fetch,
                )?))
            }
        }
    }
}

/// The events of a batch reachable back from the frontier through prev events within the batch:
/// what a peer adds that is not history before what we have is left out.
fn reachable(frontier: &[OwnedEventId], events: Vec<Pdu>) -> Vec<Pdu> {
    let mut by_id: HashMap<OwnedEventId, Pdu> = events
        .into_iter()
        .map(|pdu| (pdu.event_id().to_owned(), pdu))
        .collect();
    let mut reached: HashSet<OwnedEventId> = HashSet::new();
    let mut stack: Vec<OwnedEventId> = frontier.to_vec();
    while let Some(id) = stack.pop() {
        let Some(pdu) = by_id.get(&id) else {
            continue;
        };
        if reached.insert(id) {
            stack.extend(pdu.prev_events().iter().cloned());
        }
    }
    by_id.retain(|id, _| reached.contains(id));
    by_id.into_values().collect()
}

/// The events of a `/backfill` answer (a transaction), parsed as events of the room; at most
/// `limit` are looked at, malformed ones are left out.
fn parse_batch(
    peer: &Peer<'_>,
    room_id: &RoomId,
    version: &RoomVersionId,
    answer: &Value,
    limit: usize,
) -> Result<Vec<Pdu>> {
    let pdus = answer
        .get("pdus")
        .and_then(Value::as_array)
        .ok_or_else(|| peer.bad_answer("no pdus in /backfill"))?;
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for raw in pdus.iter().take(limit) {
        let parsed = serde_json::from_value::<CanonicalJsonObject>(raw.clone())
            .map_err(|e| peer.bad_answer(&format!("an event that is not canonical JSON: {e}")))
            .and_then(|json| peer.parse_fetched(room_id, version, json));
        match parsed {
            Ok(pdu) if seen.insert(pdu.event_id().to_owned()) => events.push(pdu),
            Ok(_) => {}
            Err(e) => {
                tracing::info!(origin = %peer.origin, error = %e, "skipped a backfilled event")
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use ruma::RoomVersionId;
    use serde_json::json;

    use super::*;
    use crate::core::test_support::{TestRoom, user};

    #[test]
    fn only_history_behind_the_frontier_is_kept() {
        let alice = user("alice");
        let mut room = TestRoom::new(RoomVersionId::V12, &alice);
        let mut ids = Vec::new();
        for i in 0..5 {
            let body = json!({ "msgtype": "m.text", "body": format!("m{i}") });
            ids.push(room.send(&alice, "m.room.message", None, body).unwrap());
        }
        let all: Vec<Pdu> = room.pdus.values().cloned().collect();
        let kept = |frontier: &[OwnedEventId]| -> HashSet<OwnedEventId> {
            reachable(frontier, all.clone())
                .iter()
                .map(|pdu| pdu.event_id().to_owned())
                .collect()
        };
        // From the third message back: it, the two before, the join and the create event.
        let from_m2 = kept(&ids[2..3]);
        assert_eq!(from_m2.len(), 5);
        assert!(from_m2.contains(&ids[2]) && !from_m2.contains(&ids[3]));
        assert!(from_m2.contains(&room.create_event_id()));
        // Events the frontier does not lead to are not history we asked for.
        assert!(kept(&[]).is_empty());
        let unknown = OwnedEventId::try_from("$unknown").unwrap();
        assert!(kept(&[unknown]).is_empty());
    }
}
