//! Rooms this server follows through other servers.
//!
//! Two ways a room's events arrive here without going through the append path:
//!
//! - a remote join ([`Rooms::bootstrap_remote_room`]): a resident server gave us the room's state
//!   and auth chain, already verified. They are stored as *outliers* (events known without a
//!   place in our timeline: no timeline entry, `stream_pos` 0), the state before our join becomes
//!   a snapshot, the members it names are indexed, and our join is persisted on top of it as the
//!   room's only forward extremity. From there the room works like any other: clients sync it,
//!   new events from other servers follow our join, local users send after it.
//! - a member event of a room we take no part in ([`Rooms::record_remote_membership`]): an
//!   invite another server sent us, our rejection of it, a knock of ours. It is put into the
//!   room's current state (creating a placeholder room record when the room is unknown) so that
//!   `/sync` shows it, but the room's forward extremities do not change: we do not follow its DAG.

use std::collections::HashMap;
use std::sync::Arc;

use ruma::events::TimelineEventType;
use ruma::{OwnedEventId, RoomId, RoomVersionId};

use super::outlier::{EventState, OUTLIER_POSITION, OffTimeline, Standing};
use super::{AppendEffects, EventMeta, RoomInfo, Rooms, StatePlan, member_change, member_target};
use crate::core::{Pdu, StateMap};
use crate::error::{Error, Result};

/// A room as a resident server gave it to us on join, once verified.
pub struct RemoteRoom {
    /// The state before our join: `(type, state_key)` → event ID, every ID in `events`.
    pub state: StateMap,
    /// The state events and their auth chain (rejected ones marked as such).
    pub events: Vec<Pdu>,
    /// Our join, authorised against `state`.
    pub join: Pdu,
}

impl Rooms {
    /// Whether a user of this server is joined to the room: then we are resident and follow its
    /// DAG; otherwise its events reach us only through other servers.
    pub fn is_resident(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self
            .members(room_id, Some("join"))?
            .iter()
            .filter_map(|(user, _)| <&ruma::UserId>::try_from(user.as_str()).ok())
            .any(|user| user.server_name() == self.server_name))
    }

    /// Creates (or re-creates, when we had left it) a room we join through another server: see
    /// the module documentation. When another local user's join made us resident meanwhile, the
    /// join is added like any other received event.
    pub async fn bootstrap_remote_room(&self, room: RemoteRoom) -> Result<()> {
        let room_id = room.join.room_id().to_owned();
        let version = room.join.room_version().clone();
        let lock = self.room_lock(&room_id)?;
        let guard = lock.lock().await;
        if self.pdus.contains(room.join.event_id().as_bytes())? {
            drop(guard);
            return self.store.durable().await.map_err(Into::into);
        }
        if let Some(info) = self.info(&room_id)?
            && info.room_version != version
        {
            return Err(Error::BadJson(format!(
                "{room_id} is known here as a room of version {}",
                info.room_version
            )));
        }
        // The state before our join, as of the events it follows.
        let before_id = self.store.generate_id()?;
        let before_snapshot = self.snapshots.derive_to(None, &room.state)?;
        let outlier_state = OutlierState {
            id: before_id,
            snapshot: &before_snapshot,
            after: room.join.prev_events(),
        };
        if self.is_resident(&room_id)? {
            drop(guard);
            self.store_outliers(&room.events, Some(outlier_state))?;
            return self.ingest(room.join).await;
        }
        self.store_outliers(&room.events, Some(outlier_state))?;
        self.snapshots
            .remember(before_id, Arc::new(room.state.clone()))?;
        self.forget_interested(&room_id)?;
        // Every membership the state names is indexed with our join, in its transaction.
        let by_id: HashMap<&ruma::EventId, &Pdu> =
            room.events.iter().map(|e| (e.event_id(), e)).collect();
        let members: Vec<(String, String)> = room
            .state
            .values()
            .filter_map(|id| by_id.get(&**id).copied())
            .filter_map(member_change)
            .filter(|(user, _)| Some(user.as_str()) != room.join.state_key())
            .chain(member_change(&room.join))
            .collect();

        let entry = room
            .join
            .state_entry()
            .ok_or_else(|| Error::internal("a join event without a state key"))?;
        let (after_snapshot, after) = self.snapshots.derive(
            Some((before_id, &room.state)),
            &[(entry, room.join.event_id().to_owned())],
        )?;
        let after_id = self.store.generate_id()?;
        let depth = room
            .events
            .iter()
            .map(|e| u64::from(e.depth()))
            .max()
            .unwrap_or(0);
        let mut info = RoomInfo {
            room_version: version,
            snapshot: Some(before_id),
            extremities: Vec::new(),
            depth,
        };
        let plan = StatePlan {
            before: Some(before_id),
            after: Some(after_id),
            current: Some(after_id),
            new: vec![(after_id, after_snapshot, after)],
            extremities: vec![room.join.event_id().to_owned()],
        };
        let effects = AppendEffects {
            members: Some(members),
            ..AppendEffects::default()
        };
        self.persist_with(&mut info, &room.join, plan, None, effects)?;
        drop(guard);
        self.store.durable().await?;
        self.announce(&room_id, member_target(&room.join).as_deref())
    }

    /// Adds a member event of a room we take no part in to the room's current state (see the
    /// module documentation), creating a placeholder room record when the room is unknown.
    ///
    /// `context` (for a new placeholder only) is the verified state the other server described
    /// the room with (`invite_room_state`, `knock_room_state`): it becomes the state before the
    /// event, so that the invite or knock shows the room's name, topic and creator. Nothing here
    /// is authorised against the room's rules, which we cannot know without its state: callers
    /// pass only events whose signatures they checked (invites) or that we built ourselves and a
    /// resident server accepted (knocks, rejections).
    pub async fn record_remote_membership(&self, pdu: Pdu, context: Vec<Pdu>) -> Result<()> {
        if *pdu.kind() != TimelineEventType::RoomMember {
            return Err(Error::internal("only member events are recorded this way"));
        }
        let room_id = pdu.room_id().to_owned();
        let lock = self.room_lock(&room_id)?;
        let guard = lock.lock().await;
        if self.pdus.contains(pdu.event_id().as_bytes())? {
            drop(guard);
            return self.store.durable().await.map_err(Into::into);
        }
        if self.is_resident(&room_id)? {
            return Err(Error::internal(
                "this server takes part in the room: its member events come through its DAG",
            ));
        }
        let mut info = match self.info(&room_id)? {
            Some(info) if info.room_version != *pdu.room_version() => {
                return Err(Error::BadJson(format!(
                    "{room_id} is known here as a room of version {}",
                    info.room_version
                )));
            }
            Some(info) => info,
            None => {
                let mut info = RoomInfo {
                    room_version: pdu.room_version().clone(),
                    snapshot: None,
                    extremities: Vec::new(),
                    depth: 0,
                };
                let state: StateMap = context
                    .iter()
                    .filter(|e| e.room_id() == room_id && !e.rejected())
                    .filter_map(|e| Some((e.state_entry()?, e.event_id().to_owned())))
                    .collect();
                if !state.is_empty() {
                    let id = self.store.generate_id()?;
                    let snapshot = self.snapshots.derive_to(None, &state)?;
                    self.store_outliers(
                        &context,
                        Some(OutlierState {
                            id,
                            snapshot: &snapshot,
                            after: &[],
                        }),
                    )?;
                    self.snapshots.remember(id, Arc::new(state))?;
                    info.snapshot = Some(id);
                }
                info
            }
        };
        let before = match info.snapshot {
            Some(id) => self.snapshots.state(id)?,
            None => Arc::new(StateMap::new()),
        };
        let entry = pdu
            .state_entry()
            .ok_or_else(|| Error::internal("a member event without a state key"))?;
        let (snapshot, after) = self.snapshots.derive(
            info.snapshot.map(|id| (id, &*before)),
            &[(entry, pdu.event_id().to_owned())],
        )?;
        let after_id = self.store.generate_id()?;
        let plan = StatePlan {
            before: info.snapshot,
            after: Some(after_id),
            current: Some(after_id),
            new: vec![(after_id, snapshot, after)],
            extremities: info.extremities.clone(),
        };
        self.persist(&mut info, &pdu, plan, None)?;
        drop(guard);
        self.store.durable().await?;
        self.announce(&room_id, member_target(&pdu).as_deref())
    }

    /// Stores events beside the timeline (those not stored yet), in one transaction, as
    /// [`super::outlier`] describes them: valid ones as outliers, with an [`EventMeta`] at
    /// [`OUTLIER_POSITION`], rejected ones with their standing only. When `state` is given, its
    /// snapshot is written too and is the state after the events it names.
    fn store_outliers(&self, events: &[Pdu], state: Option<OutlierState<'_>>) -> Result<()> {
        let mut encoded: HashMap<OwnedEventId, Encoded> = HashMap::new();
        for pdu in events {
            if encoded.contains_key(pdu.event_id())
                || self.pdus.contains(pdu.event_id().as_bytes())?
            {
                continue;
            }
            let after = state
                .as_ref()
                .filter(|s| !pdu.rejected() && s.after.iter().any(|id| id == pdu.event_id()))
                .map(|s| s.id);
            let (standing, meta) = match pdu.rejected() {
                true => (Standing::Rejected, None),
                false => {
                    let meta = EventMeta {
                        room_id: pdu.room_id().to_owned(),
                        stream_pos: OUTLIER_POSITION,
                        state_before: None,
                        state_after: after,
                        txn: None,
                    };
                    (Standing::Outlier, Some(serde_json::to_vec(&meta)?))
                }
            };
            let record = OffTimeline {
                room_id: pdu.room_id().to_owned(),
                standing,
                state: after.map(|after| EventState {
                    before: None,
                    after: Some(after),
                }),
            };
            encoded.insert(
                pdu.event_id().to_owned(),
                Encoded {
                    pdu: serde_json::to_vec(pdu)?,
                    meta,
                    record: serde_json::to_vec(&record)?,
                },
            );
        }
        let trees = [
            &self.pdus,
            &self.meta,
            &self.off_timeline,
            self.snapshots.tree(),
        ];
        self.store.transact(&trees, |t| {
            for (event_id, event) in &encoded {
                t[0].put(event_id.as_bytes(), event.pdu.clone())?;
                if let Some(meta) = &event.meta {
                    t[1].put(event_id.as_bytes(), meta.clone())?;
                }
                t[2].put(event_id.as_bytes(), event.record.clone())?;
            }
            if let Some(state) = &state {
                super::state::put_snapshot::<Error>(&t[3], state.id, state.snapshot)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Drops the cached list of users a room's events concern, after its members changed
    /// outside [`Rooms::persist`].
    fn forget_interested(&self, room_id: &RoomId) -> Result<()> {
        self.interested_cache()?.remove(room_id);
        Ok(())
    }

    /// The version of a room we know (resident or not).
    pub fn room_version(&self, room_id: &RoomId) -> Result<Option<RoomVersionId>> {
        Ok(self.info(room_id)?.map(|info| info.room_version))
    }
}

/// One event as [`Rooms::store_outliers`] writes it.
struct Encoded {
    pdu: Vec<u8>,
    meta: Option<Vec<u8>>,
    record: Vec<u8>,
}

/// A snapshot written with outliers: its ID, its content, and the events after which the room
/// had that state (their `state_after`).
struct OutlierState<'a> {
    id: u64,
    snapshot: &'a super::state::Snapshot,
    after: &'a [OwnedEventId],
}
