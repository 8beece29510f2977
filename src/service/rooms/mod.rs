//! Rooms: the append pipeline (build, authorise, persist atomically), the room record, state
//! snapshots, membership indices and the timeline.
//!
//! Appends to one room are serialised by a per-room lock; each event is written in one
//! transaction (the PDU, its metadata, the timeline index, the state snapshot, the room record
//! with its forward extremities, membership indices, the transaction-ID mapping and the global
//! stream position), and the caller awaits durability before answering.

pub mod alias;
pub mod changes;
pub mod create;
pub mod event_cache;
pub mod ingest;
pub mod outlier;
pub mod power;
pub mod read;
pub mod relations;
pub mod remote;
pub mod restricted;
pub mod servers;
pub mod state;
pub mod upgrade;
pub mod visibility;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    UInt, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::core::{self, EventTemplate, Pdu, StateMap};
use crate::error::{Error, Result};
use crate::service::notifier::Notifier;
use crate::service::signing_key::SigningKey;
use crate::storage::{Store, Tree, TxTree, abort, keys, trees};
use crate::util::now_ms;
use changes::RecentChanges;
use state::SnapshotStore;

/// What the room record holds besides its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room_version: RoomVersionId,
    /// The current state's snapshot.
    pub snapshot: Option<u64>,
    /// Forward extremities: the events no other event follows yet.
    pub extremities: Vec<OwnedEventId>,
    /// The largest depth in the room.
    pub depth: u64,
}

/// Per-event facts that are not part of the PDU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room_id: OwnedRoomId,
    /// Global stream position.
    pub stream_pos: u64,
    /// Snapshot of the room state before the event.
    pub state_before: Option<u64>,
    /// Snapshot of the room state after the event (differs for state events).
    #[serde(default)]
    pub state_after: Option<u64>,
    /// `(device, txn id)` of a client that sent it.
    pub txn: Option<(String, String)>,
}

/// An event a local user wants to add.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub state_key: Option<String>,
    pub content: Value,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn state(kind: StateEventType, state_key: impl Into<String>, content: Value) -> Self {
        Self {
            kind: kind.to_string().into(),
            state_key: Some(state_key.into()),
            content,
            redacts: None,
        }
    }

    pub fn message(kind: TimelineEventType, content: Value) -> Self {
        Self {
            kind,
            state_key: None,
            content,
            redacts: None,
        }
    }
}

/// The snapshots one append reads and writes.
struct StatePlan {
    /// Snapshot of the state before the event.
    before: Option<u64>,
    /// Snapshot of the state after the event.
    after: Option<u64>,
    /// The room's current snapshot afterwards.
    current: Option<u64>,
    /// Snapshots to write: ID, snapshot, and the full state to cache.
    new: Vec<(u64, state::Snapshot, StateMap)>,
    /// The forward extremities afterwards.
    extremities: Vec<OwnedEventId>,
}

/// What an append changes beyond what the event itself says; for events of other servers.
#[derive(Default)]
struct AppendEffects {
    /// The `(user, membership)` changes; `None`: the event's own, if it is a member event (state
    /// resolution over a remote event may change other memberships too).
    members: Option<Vec<(String, String)>>,
    /// A redaction that does not take effect (a remote one only does when its sender may redact
    /// the event it names).
    redaction_refused: bool,
}

/// A client transaction: the same `(device, txn)` in a room yields the same event.
#[derive(Debug, Clone)]
pub struct Txn {
    pub device_id: String,
    pub txn_id: String,
}

pub struct Rooms {
    store: Store,
    server_name: OwnedServerName,
    signing_key: Arc<SigningKey>,
    notifier: Arc<Notifier>,
    /// Recent changes, stream position → room, to find the rooms changed since a sync token
    /// without looking at every room of the user.
    changes: Mutex<RecentChanges>,
    /// Per room, the users its events concern (see [`Rooms::interested_users`]).
    interested: Mutex<HashMap<OwnedRoomId, Arc<std::collections::HashSet<ruma::OwnedUserId>>>>,
    pub(crate) pdus: Tree,
    pub(crate) meta: Tree,
    redacted_by: Tree,
    timeline: Tree,
    /// The topological order: room, depth, stream position → event.
    topological: Tree,
    rooms: Tree,
    pub(crate) user_rooms: Tree,
    pub(crate) room_users: Tree,
    txns: Tree,
    forgotten: Tree,
    /// room, user → the stream position where the user's current run of joins began (a join
    /// after a join, such as a display-name change, does not move it).
    joined_at: Tree,
    /// parent, child's stream position → the child's relation.
    relations: Tree,
    /// thread root → stream position of its latest event.
    thread_latest: Tree,
    /// room, stream position of a thread's latest event → the thread root.
    thread_order: Tree,
    store_meta: Tree,
    /// Events stored beside the timeline: outliers, soft-failed and rejected events.
    off_timeline: Tree,
    pub(crate) snapshots: SnapshotStore,
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Recently read and written events, decoded.
    events: event_cache::EventCache,
    /// The timestamp of the last room version 12 create event (see [`Rooms::create_timestamp`]).
    last_create_ts: std::sync::atomic::AtomicU64,
    /// Room aliases and the published room directory.
    pub aliases: alias::Aliases,
    /// Where appended events go for push-rule evaluation.
    push_queue: crate::service::push::EvalQueue,
    /// Where appended events go for the full-text index.
    search_queue: crate::service::search::IndexQueue,
    /// The stream position of the latest persisted event; wakes the federation sender's fan-out.
    pub(crate) appended: tokio::sync::watch::Sender<u64>,
}

/// Maps core errors to API errors.
impl From<core::Error> for Error {
    fn from(e: core::Error) -> Self {
        match e {
            core::Error::TooLarge { size } => Error::TooLarge(format!(
                "the event would be {size} bytes; the limit is {}",
                core::pdu::MAX_PDU_BYTES
            )),
            core::Error::Unauthorized(reason) | core::Error::InvalidSignature(reason) => {
                Error::Forbidden(reason)
            }
            core::Error::UnsupportedRoomVersion(v) => {
                Error::UnsupportedRoomVersion(format!("room version {v} is not supported"))
            }
            core::Error::InvalidField { field, reason } => {
                Error::InvalidParam(format!("{field}: {reason}"))
            }
            core::Error::MissingField(field) => Error::BadJson(format!("{field} is missing")),
            core::Error::CanonicalJson(reason) => Error::BadJson(reason),
            other => Error::internal(other),
        }
    }
}

impl Rooms {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &Store,
        server_name: OwnedServerName,
        signing_key: Arc<SigningKey>,
        notifier: Arc<Notifier>,
        state_cache_entries: usize,
        event_cache_entries: usize,
        push_queue: crate::service::push::EvalQueue,
        search_queue: crate::service::search::IndexQueue,
    ) -> Result<Self> {
        let start = crate::storage::stream::current(store)?;
        let rooms = Self {
            // Before `server_name` moves into its field.
            aliases: alias::Aliases::new(store, server_name.clone())?,
            store: store.clone(),
            server_name,
            signing_key,
            notifier,
            changes: Mutex::new(RecentChanges::new(start)),
            interested: Mutex::new(HashMap::new()),
            pdus: store.tree(trees::EVENTID_PDU)?,
            meta: store.tree(trees::EVENTID_META)?,
            redacted_by: store.tree(trees::EVENTID_REDACTEDBY)?,
            timeline: store.tree(trees::ROOMID_STREAMPOS_EVENTID)?,
            topological: store.tree(trees::ROOMID_DEPTH_STREAMPOS_EVENTID)?,
            rooms: store.tree(trees::ROOMID_ROOM)?,
            user_rooms: store.tree(trees::USERID_ROOMID_MEMBERSHIP)?,
            room_users: store.tree(trees::ROOMID_USERID_MEMBERSHIP)?,
            txns: store.tree(trees::TXN_EVENTID)?,
            forgotten: store.tree(trees::USERID_ROOMID_FORGOTTEN)?,
            joined_at: store.tree(trees::ROOMID_USERID_JOINEDAT)?,
            relations: store.tree(trees::EVENTID_STREAMPOS_RELATION)?,
            thread_latest: store.tree(trees::THREADROOT_LATESTPOS)?,
            thread_order: store.tree(trees::ROOMID_STREAMPOS_THREADROOT)?,
            store_meta: store.tree(trees::META)?,
            off_timeline: store.tree(trees::EVENTID_OFFTIMELINE)?,
            snapshots: SnapshotStore::new(
                store.tree(trees::SNAPSHOTID_SNAPSHOT)?,
                state_cache_entries,
            ),
            locks: Mutex::new(HashMap::new()),
            events: event_cache::EventCache::new(event_cache_entries),
            last_create_ts: std::sync::atomic::AtomicU64::new(0),
            push_queue,
            search_queue,
            appended: tokio::sync::watch::Sender::new(start),
        };
        rooms.index_existing_relations()?;
        Ok(rooms)
    }

    fn room_lock(&self, room_id: &RoomId) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let mut locks = self
            .locks
            .lock()
            .map_err(|_| Error::internal("room locks poisoned"))?;
        Ok(locks.entry(room_id.to_owned()).or_default().clone())
    }

    pub fn info(&self, room_id: &RoomId) -> Result<Option<RoomInfo>> {
        match self.rooms.get(room_id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// An event, from the event cache or the store. Events never change once stored (a
    /// redaction is recorded beside the event), so cached copies never go stale.
    pub fn pdu(&self, event_id: &ruma::EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(hit) = self.events.get(event_id) {
            return Ok(Some(hit));
        }
        match self.pdus.get(event_id.as_bytes())? {
            Some(v) => {
                let pdu = Arc::new(serde_json::from_slice::<Pdu>(&v)?);
                self.events.insert(pdu.clone());
                Ok(Some(pdu))
            }
            None => Ok(None),
        }
    }

    pub fn event_meta(&self, event_id: &ruma::EventId) -> Result<Option<EventMeta>> {
        match self.meta.get(event_id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The redaction event that redacted `event_id`, if any.
    pub fn redacted_by(&self, event_id: &ruma::EventId) -> Result<Option<OwnedEventId>> {
        match self.redacted_by.get(event_id.as_bytes())? {
            Some(v) => Ok(OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref()).ok()),
            None => Ok(None),
        }
    }

    /// The current state of a room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<Arc<StateMap>> {
        match self.info(room_id)?.and_then(|i| i.snapshot) {
            Some(id) => self.snapshots.state(id),
            None => Ok(Arc::new(StateMap::new())),
        }
    }

    /// The PDU holding a current state entry.
    pub fn state_event(
        &self,
        room_id: &RoomId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let state = self.current_state(room_id)?;
        match state.get(&(kind.clone(), state_key.to_owned())) {
            Some(id) => self.pdu(id),
            None => Ok(None),
        }
    }

    /// The content of the `(kind, "")` entry of `state`, redacted if its event was.
    pub(crate) fn state_content(
        &self,
        state: &StateMap,
        kind: &StateEventType,
    ) -> Result<Option<Map<String, Value>>> {
        let Some(event_id) = state.get(&(kind.clone(), String::new())) else {
            return Ok(None);
        };
        let pdu = self
            .pdu(event_id)?
            .ok_or_else(|| Error::internal(format!("state names missing event {event_id}")))?;
        let pdu = match self.redacted_by(event_id)? {
            Some(_) => Arc::new(pdu.redacted()?),
            None => pdu,
        };
        match serde_json::from_str(pdu.content().get())? {
            Value::Object(content) => Ok(Some(content)),
            _ => Ok(None),
        }
    }

    /// The membership of a user in a room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<String>> {
        Ok(self
            .room_users
            .get(keys::pair(room_id.as_str(), user_id.as_str()))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Appends one event from a local user to an existing room.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let lock = self.room_lock(room_id)?;
        let guard = lock.lock().await;
        if let Some(txn) = &txn
            && let Some(existing) = self.txns.get(txn_key(sender, txn, room_id))?
        {
            drop(guard);
            // A retry may overtake the flush of the original request.
            self.store.durable().await?;
            return OwnedEventId::try_from(String::from_utf8_lossy(&existing).as_ref())
                .map_err(Error::internal);
        }
        let mut info = self
            .info(room_id)?
            .ok_or_else(|| Error::NotFound("no such room".into()))?;
        // A room we only know from an invite or a knock (see `remote.rs`) has no events of its
        // own to follow: joining it goes through one of its servers, never through a local
        // append, which would start a second DAG.
        if info.extremities.is_empty() {
            return Err(Error::Forbidden(
                "this server is not in the room: join it through one of its servers".into(),
            ));
        }
        let pdu = self.append_locked(&mut info, Some(room_id), sender, event, txn)?;
        // The next event of the room may be built while this one is being flushed: it can only
        // become durable after this one, and neither is acknowledged before.
        drop(guard);
        self.store.durable().await?;
        self.announce(room_id, member_target(&pdu).as_deref())?;
        Ok(pdu.event_id().to_owned())
    }

    /// The timestamp of a room version 12 create event: now, but never the same as the previous
    /// one. The room ID is the hash of the create event, so two identical requests of one user
    /// in the same millisecond would otherwise make one room ID for two rooms.
    fn create_timestamp(&self) -> u64 {
        let now = now_ms();
        let previous = self
            .last_create_ts
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |last| Some(now.max(last + 1)),
            )
            .unwrap_or(now);
        now.max(previous + 1)
    }

    /// Builds, authorises and persists one event while the room lock is held. `info` is the
    /// room record, updated in place. `room_id` is `None` only for a room version 12 create event.
    fn append_locked(
        &self,
        info: &mut RoomInfo,
        room_id: Option<&RoomId>,
        sender: &UserId,
        event: NewEvent,
        txn: Option<Txn>,
    ) -> Result<Pdu> {
        let state = match info.snapshot {
            Some(id) => self.snapshots.state(id)?,
            None => Arc::new(StateMap::new()),
        };
        let mut template = EventTemplate {
            room_id: room_id.map(ToOwned::to_owned),
            sender: sender.to_owned(),
            kind: event.kind,
            state_key: event.state_key,
            content: event.content,
            prev_events: info
                .extremities
                .iter()
                .take(core::pdu::MAX_PREV_EVENTS)
                .cloned()
                .collect(),
            auth_events: Vec::new(),
            // Another server's event may carry the largest depth there is: stay at it.
            depth: UInt::try_from(info.depth + 1).unwrap_or(UInt::MAX),
            origin_server_ts: MilliSecondsSinceUnixEpoch(
                UInt::try_from(match room_id {
                    Some(_) => now_ms(),
                    None => self.create_timestamp(),
                })
                .map_err(Error::internal)?,
            ),
            redacts: event.redacts,
        };
        template.auth_events =
            core::auth::select_auth_events(&info.room_version, &template, &state)?;
        let fetch = |id: &ruma::EventId| self.pdu(id).ok().flatten();
        // Room versions 1 and 2 reference events with their hashes, read from the store.
        let pdu = core::pdu::build_event_referencing(
            &info.room_version,
            template,
            &self.server_name,
            &self.signing_key.pair,
            fetch,
        )?;
        core::auth::check(&pdu, &state, fetch)?;
        if let Some(redacted) = pdu.redacts() {
            self.check_redaction(&pdu, redacted, &state)?;
        }
        self.check_new_relation(&pdu)?;
        let plan = self.local_plan(info, &pdu, &state)?;
        self.persist(info, &pdu, plan, txn)?;
        Ok(pdu)
    }

    /// A redaction of someone else's event needs the `redact` power level.
    fn check_redaction(
        &self,
        redaction: &Pdu,
        target: &ruma::EventId,
        state: &StateMap,
    ) -> Result<()> {
        let original = self
            .pdu(target)?
            .ok_or_else(|| Error::NotFound("no such event".into()))?;
        if original.room_id() != redaction.room_id() {
            return Err(Error::NotFound("no such event in this room".into()));
        }
        if original.sender() == redaction.sender() {
            return Ok(());
        }
        if power::can_redact_others(self, redaction.room_version(), state, redaction.sender())? {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "you may only redact your own events in this room".into(),
            ))
        }
    }

    /// The snapshots of a local append: the state before is the current state; a state event
    /// makes a new snapshot that becomes current.
    fn local_plan(&self, info: &RoomInfo, pdu: &Pdu, state_before: &StateMap) -> Result<StatePlan> {
        let mut plan = StatePlan {
            before: info.snapshot,
            after: info.snapshot,
            current: info.snapshot,
            new: Vec::new(),
            // Extremities beyond the prev_events cap stay extremities.
            extremities: info
                .extremities
                .iter()
                .filter(|e| !pdu.prev_events().contains(e))
                .cloned()
                .chain(std::iter::once(pdu.event_id().to_owned()))
                .collect(),
        };
        if let Some(entry) = pdu.state_entry() {
            let parent = info.snapshot.map(|id| (id, state_before));
            let (snapshot, full) = self
                .snapshots
                .derive(parent, &[(entry, pdu.event_id().to_owned())])?;
            let id = self.store.generate_id()?;
            plan.after = Some(id);
            plan.current = Some(id);
            plan.new.push((id, snapshot, full));
        }
        Ok(plan)
    }

    /// Writes everything one event changes in one transaction.
    /// Returns the event's stream position.
    fn persist(
        &self,
        info: &mut RoomInfo,
        pdu: &Pdu,
        plan: StatePlan,
        txn: Option<Txn>,
    ) -> Result<u64> {
        self.persist_with(info, pdu, plan, txn, AppendEffects::default())
    }

    /// [`Rooms::persist`] with the effects of a remote event.
    fn persist_with(
        &self,
        info: &mut RoomInfo,
        pdu: &Pdu,
        plan: StatePlan,
        txn: Option<Txn>,
        effects: AppendEffects,
    ) -> Result<u64> {
        let room_id = pdu.room_id().to_owned();
        let event_id = pdu.event_id().to_owned();
        let mut new_info = info.clone();
        new_info.extremities = plan.extremities.clone();
        new_info.depth = info.depth.max(u64::from(pdu.depth()));
        new_info.snapshot = plan.current;
        let memberships: Vec<(String, String)> = match effects.members {
            Some(members) => members,
            None => member_change(pdu).into_iter().collect(),
        };
        let pdu_bytes = serde_json::to_vec(pdu)?;
        let info_bytes = serde_json::to_vec(&new_info)?;
        let txn_key = txn.as_ref().map(|t| txn_key(pdu.sender(), t, &room_id));
        let relation_write = match effects.redaction_refused {
            false => self.relation_write(pdu)?,
            true => self.relation_write(pdu)?.without_removal(),
        };
        let trees = [
            &self.pdus,
            &self.meta,
            &self.timeline,
            &self.rooms,
            &self.user_rooms,
            &self.room_users,
            &self.txns,
            &self.store_meta,
            self.snapshots.tree(),
            &self.redacted_by,
            &self.forgotten,
            &self.topological,
            &self.joined_at,
            &self.relations,
            &self.thread_latest,
            &self.thread_order,
            &self.off_timeline,
        ];
        let transaction = || -> Result<((), u64)> {
            let pos = self.store.transact(&trees, |t| {
                let pos = crate::storage::stream::next(&t[7])?;
                let meta = EventMeta {
                    room_id: room_id.clone(),
                    stream_pos: pos,
                    state_before: plan.before,
                    state_after: plan.after,
                    txn: txn
                        .as_ref()
                        .map(|t| (t.device_id.clone(), t.txn_id.clone())),
                };
                let meta = serde_json::to_vec(&meta).map_err(|e| abort(Error::internal(e)))?;
                t[0].put(event_id.as_bytes(), pdu_bytes.clone())?;
                t[1].put(event_id.as_bytes(), meta)?;
                t[2].put(timeline_key(&room_id, pos), event_id.as_bytes().to_vec())?;
                t[11].put(
                    topological_key(&room_id, u64::from(pdu.depth()), pos),
                    event_id.as_bytes().to_vec(),
                )?;
                t[3].put(room_id.as_bytes(), info_bytes.clone())?;
                for (user, membership) in &memberships {
                    let key = keys::pair(room_id.as_str(), user);
                    let was_joined = t[5].get(&key)?.is_some_and(|m| m.as_ref() == b"join");
                    if membership == "join" && !was_joined {
                        t[12].put(&key, keys::u64_be(pos).to_vec())?;
                    }
                    set_membership(&t[4], &t[5], &room_id, user, membership)?;
                    // A new membership (a rejoin, an invite) un-forgets the room.
                    t[10].delete(keys::pair(user, room_id.as_str()))?;
                }
                if let Some(key) = &txn_key {
                    t[6].put(key, event_id.as_bytes().to_vec())?;
                }
                for (id, snapshot, _) in &plan.new {
                    state::put_snapshot::<Error>(&t[8], *id, snapshot)?;
                }
                // An event stored beside the timeline before (an outlier) now joins it.
                t[16].delete(event_id.as_bytes())?;
                if !effects.redaction_refused
                    && let Some(target) = pdu.redacts()
                {
                    t[9].put(target.as_bytes(), event_id.as_bytes().to_vec())?;
                }
                Self::apply_relation_write(&relation_write, &room_id, pos, &t[13], &t[14], &t[15])?;
                Ok(pos)
            })?;
            Ok(((), pos))
        };
        let mut position = 0;
        self.store.sequencer().commit(transaction, |pos| {
            position = pos;
            if !memberships.is_empty()
                && let Ok(mut cache) = self.interested.lock()
                && let Some(users) = cache.get_mut(&room_id)
            {
                let users = Arc::make_mut(users);
                for (user, membership) in &memberships {
                    let Ok(user) = ruma::OwnedUserId::try_from(user.as_str()) else {
                        continue;
                    };
                    if interested(membership) {
                        users.insert(user);
                    } else {
                        users.remove(&user);
                    }
                }
            }
            self.changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(pos, &room_id);
            self.push_queue.push(room_id.clone(), event_id.clone(), pos);
            self.search_queue.push(pdu, pos);
            self.appended.send_replace(pos);
        })?;
        for (id, _, full) in plan.new {
            self.snapshots.remember(id, Arc::new(full))?;
        }
        *info = new_info;
        Ok(position)
    }

    /// Wakes the users an event in `room_id` concerns: its members (joined, invited, knocking)
    /// and, for a member event, its target.
    pub(crate) fn announce(&self, room_id: &RoomId, target: Option<&UserId>) -> Result<()> {
        let position = self.store.sequencer().upto();
        let members = self.interested_users(room_id)?;
        self.notifier.notify_members(&members, position);
        if let Some(target) = target {
            self.notifier.notify([target], position);
        }
        Ok(())
    }

    /// The users a room's events concern (joined, invited, knocking), cached in memory and kept
    /// current by [`Rooms::persist`], so that waking them does not read the member list.
    fn interested_users(
        &self,
        room_id: &RoomId,
    ) -> Result<Arc<std::collections::HashSet<ruma::OwnedUserId>>> {
        if let Some(cached) = self.interested_cache()?.get(room_id) {
            return Ok(cached.clone());
        }
        let users: std::collections::HashSet<ruma::OwnedUserId> = self
            .members(room_id, None)?
            .into_iter()
            .filter(|(_, m)| interested(m))
            .filter_map(|(u, _)| ruma::OwnedUserId::try_from(u).ok())
            .collect();
        let users = Arc::new(users);
        self.interested_cache()?
            .insert(room_id.to_owned(), users.clone());
        Ok(users)
    }

    fn interested_cache(
        &self,
    ) -> Result<
        std::sync::MutexGuard<
            '_,
            HashMap<OwnedRoomId, Arc<std::collections::HashSet<ruma::OwnedUserId>>>,
        >,
    > {
        self.interested
            .lock()
            .map_err(|_| Error::internal("member cache poisoned"))
    }

    /// The rooms changed after a stream position, if still known (see [`RecentChanges`]).
    pub fn rooms_changed_since(
        &self,
        since: u64,
    ) -> Option<std::collections::HashSet<OwnedRoomId>> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(since)
    }

    /// Where the user's current membership as a joined member began (0 when unknown).
    pub fn joined_at(&self, room_id: &RoomId, user_id: &UserId) -> Result<u64> {
        Ok(self
            .joined_at
            .get(keys::pair(room_id.as_str(), user_id.as_str()))?
            .and_then(|v| keys::read_u64_be(&v))
            .unwrap_or(0))
    }

    /// The ID of every room the server knows.
    pub fn room_ids(&self) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for item in self.rooms.iter() {
            let (key, _) = item?;
            if let Ok(room) = OwnedRoomId::try_from(String::from_utf8_lossy(&key).as_ref()) {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// The rooms a user is in with the given membership.
    pub fn rooms_of(&self, user_id: &UserId, membership: &str) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for item in self.user_rooms.scan_prefix(keys::prefix(user_id.as_str())) {
            let (k, v) = item?;
            if v.as_ref() == membership.as_bytes()
                && let Some(room) = keys::second(&k)
                && let Ok(room) = OwnedRoomId::try_from(room)
            {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// The members of a room with the given membership.
    pub fn members(
        &self,
        room_id: &RoomId,
        membership: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for item in self.room_users.scan_prefix(keys::prefix(room_id.as_str())) {
            let (k, v) = item?;
            let m = String::from_utf8_lossy(&v).into_owned();
            if membership.is_none_or(|want| want == m)
                && let Some(user) = keys::second(&k)
            {
                out.push((user.to_owned(), m));
            }
        }
        Ok(out)
    }

    /// Event IDs of a room's timeline strictly between two stream positions, in order
    /// (`backwards`: newest first), at most `limit`. Seeks directly to the range.
    pub fn timeline_range(
        &self,
        room_id: &RoomId,
        after: u64,
        before: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        if before <= after.saturating_add(1) {
            return Ok(Vec::new());
        }
        let start = timeline_key(room_id, after + 1);
        let end = timeline_key(room_id, before);
        let prefix_len = start.len() - 8;
        let parse = |item: Result<(crate::storage::Bytes, crate::storage::Bytes), _>| {
            let (k, v) = item?;
            let pos = keys::read_u64_be(&k[prefix_len..])
                .ok_or_else(|| Error::internal("bad timeline key"))?;
            let id = OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref())
                .map_err(Error::internal)?;
            Ok((pos, id))
        };
        let range = self.timeline.range(&start, &end);
        if backwards {
            range.rev().take(limit).map(parse).collect()
        } else {
            range.take(limit).map(parse).collect()
        }
    }

    /// Events of a room in topological order (depth, then stream position), oldest first, from
    /// depth `from_depth` on, at most `limit`: `(depth, event)`.
    pub fn topological(
        &self,
        room_id: &RoomId,
        from_depth: u64,
        limit: usize,
    ) -> Result<Vec<(u64, OwnedEventId)>> {
        let start = topological_key(room_id, from_depth, 0);
        let end = topological_key(room_id, u64::MAX, u64::MAX);
        let prefix_len = start.len() - 16;
        self.topological
            .range(&start, &end)
            .take(limit)
            .map(|item| {
                let (k, v) = item?;
                let depth = keys::read_u64_be(&k[prefix_len..prefix_len + 8])
                    .ok_or_else(|| Error::internal("bad topological key"))?;
                let id = OwnedEventId::try_from(String::from_utf8_lossy(&v).as_ref())
                    .map_err(Error::internal)?;
                Ok((depth, id))
            })
            .collect()
    }

    /// The latest global stream position.
    pub fn stream_position(&self) -> Result<u64> {
        Ok(crate::storage::stream::current(&self.store)?)
    }
}

fn txn_key(sender: &UserId, txn: &Txn, room_id: &RoomId) -> Vec<u8> {
    let mut k = keys::pair(sender.as_str(), &txn.device_id);
    k.push(keys::SEP);
    k.extend_from_slice(room_id.as_bytes());
    k.push(keys::SEP);
    k.extend_from_slice(txn.txn_id.as_bytes());
    k
}

fn topological_key(room_id: &RoomId, depth: u64, pos: u64) -> Vec<u8> {
    let mut k = keys::prefix(room_id.as_str());
    k.extend_from_slice(&keys::u64_be(depth));
    k.extend_from_slice(&keys::u64_be(pos));
    k
}

fn timeline_key(room_id: &RoomId, pos: u64) -> Vec<u8> {
    let mut k = keys::prefix(room_id.as_str());
    k.extend_from_slice(&keys::u64_be(pos));
    k
}

/// Whether a membership makes a user one the room's events concern.
fn interested(membership: &str) -> bool {
    matches!(membership, "join" | "invite" | "knock")
}

/// The user a member event is about.
fn member_target(pdu: &Pdu) -> Option<ruma::OwnedUserId> {
    if *pdu.kind() != TimelineEventType::RoomMember {
        return None;
    }
    ruma::OwnedUserId::try_from(pdu.state_key()?).ok()
}

/// The `(user, membership)` an `m.room.member` event sets.
fn member_change(pdu: &Pdu) -> Option<(String, String)> {
    if *pdu.kind() != TimelineEventType::RoomMember {
        return None;
    }
    let user = pdu.state_key()?.to_owned();
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    let membership = content.get("membership")?.as_str()?.to_owned();
    Some((user, membership))
}

fn set_membership(
    user_rooms: &TxTree<'_>,
    room_users: &TxTree<'_>,
    room_id: &RoomId,
    user: &str,
    membership: &str,
) -> std::result::Result<(), crate::storage::TxError<Error>> {
    user_rooms.put(
        keys::pair(user, room_id.as_str()),
        membership.as_bytes().to_vec(),
    )?;
    room_users.put(
        keys::pair(room_id.as_str(), user),
        membership.as_bytes().to_vec(),
    )
}
