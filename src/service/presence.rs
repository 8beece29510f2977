//! Presence: whether a user is `online`, `unavailable` (idle) or `offline`, with an optional
//! status message and the time of their last activity, shown to the users who share a room
//! with them (`GET`/`PUT /presence/{userId}/status` and the `presence` section of `/sync`).
//!
//! The state of users seen since start-up lives in memory, so that counting a request as
//! activity costs a map update; the last activity time is written to the store at most once a
//! minute. A change of presence or status message takes the next global stream position in the
//! same transaction as the record, moves the user's entry in the position index (one entry per
//! user, like account data) and wakes the users who share a room with them.
//!
//! Idle and offline are automatic: each user who is not offline has one tokio task that sleeps
//! until their deadline (`idle_after_secs` after the last activity for `unavailable`,
//! `offline_after_secs` more for `offline`). When it wakes it re-reads the in-memory state: if
//! the user was active meanwhile it sleeps until the new deadline, otherwise it makes the
//! change. Nothing re-reads the store on a timer. The tasks hold only a weak reference, so they
//! end when the services are dropped; start-up restores them from the store.
//!
//! Presence is aggregated per user, not per device: a client that syncs with
//! `set_presence=unavailable` makes the user unavailable even if another device is active (the
//! next activity of that device makes them online again).

mod remote;

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Services;
use crate::config::PresenceConfig;
use crate::core::filter::RoomEventFilter;
use crate::error::{Error, Result};
use crate::service::notifier::Notifier;
use crate::storage::{StorageError, Store, Tree, abort, keys, stream, trees};
use crate::util::now_ms;

/// The event type of presence updates.
pub const EVENT_TYPE: &str = "m.presence";
/// The longest status message accepted, in characters.
pub const MAX_STATUS_MSG_CHARS: usize = 1024;
/// The last activity time is written to the store at most this often per user.
const PERSIST_ACTIVE_EVERY_MS: u64 = 60_000;
/// How long a timer waits before retrying after a storage error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(10);

/// A user's presence state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceState {
    Online,
    Unavailable,
    Offline,
}

impl PresenceState {
    /// Parses `online`, `unavailable` or `offline` (400 `M_INVALID_PARAM` otherwise).
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "online" => Ok(Self::Online),
            "unavailable" => Ok(Self::Unavailable),
            "offline" => Ok(Self::Offline),
            other => Err(Error::InvalidParam(format!(
                "presence must be online, unavailable or offline, not {other}"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }
}

/// A user's presence as stored in `userid_presence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    presence: PresenceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_msg: Option<String>,
    /// Milliseconds since the epoch of the last activity, if any was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_active_ts: Option<u64>,
    /// The stream position of the latest change (0: none yet).
    #[serde(default)]
    position: u64,
}

impl Record {
    /// The presence of a user never seen.
    fn unknown() -> Self {
        Self {
            presence: PresenceState::Offline,
            status_msg: None,
            last_active_ts: None,
            position: 0,
        }
    }
}

/// A user's presence as reported to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceView {
    pub presence: PresenceState,
    pub status_msg: Option<String>,
    /// Milliseconds since the last activity, if any was seen.
    pub last_active_ago: Option<u64>,
    /// Online users are active: without activity they become unavailable after the idle time.
    pub currently_active: bool,
}

impl PresenceView {
    /// The content of an `m.presence` event, which is also the body of
    /// `GET /presence/{userId}/status`.
    pub fn content(&self) -> Value {
        let mut content = json!({
            "presence": self.presence.as_str(),
            "currently_active": self.currently_active,
        });
        if let Some(ago) = self.last_active_ago {
            content["last_active_ago"] = json!(ago);
        }
        if let Some(msg) = &self.status_msg {
            content["status_msg"] = json!(msg);
        }
        content
    }
}

/// The in-memory state of a user seen since start-up.
struct Live {
    record: Record,
    /// `record.last_active_ts` as last written to the store.
    persisted_active: Option<u64>,
    /// The last request that keeps the user from going offline: activity, and also syncs with
    /// `set_presence=unavailable` (the client is there, the user is idle). Not persisted.
    seen_ts: u64,
    /// Whether a timer task watches this user.
    timer: bool,
}

/// Told of every visible change of a user's presence: the federation sender sends our users'
/// changes to the servers that share a room with them.
pub type PresenceListener = Box<dyn Fn(&UserId) + Send + Sync>;

/// The presence of every user; see the module documentation.
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    idle_ms: u64,
    offline_ms: u64,
    store: Store,
    notifier: Arc<Notifier>,
    /// user → [`Record`].
    records: Tree,
    /// stream position (u64 BE) → user: the latest change of each user.
    by_position: Tree,
    store_meta: Tree,
    /// The rooms' membership indices (user, room → membership and room, user → membership),
    /// read to find whom a change concerns.
    user_rooms: Tree,
    room_users: Tree,
    live: Mutex<HashMap<OwnedUserId, Live>>,
    listener: OnceLock<PresenceListener>,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(StorageError::Corrupt(format!("presence: {what}")))
}

impl Presence {
    pub fn new(store: &Store, notifier: Arc<Notifier>, config: &PresenceConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                idle_ms: config.idle_after_secs.saturating_mul(1000),
                offline_ms: config.offline_after_secs.saturating_mul(1000),
                records: store.tree(trees::USERID_PRESENCE)?,
                by_position: store.tree(trees::STREAMPOS_USERID_PRESENCE)?,
                store_meta: store.tree(trees::META)?,
                user_rooms: store.tree(trees::USERID_ROOMID_MEMBERSHIP)?,
                room_users: store.tree(trees::ROOMID_USERID_MEMBERSHIP)?,
                store: store.clone(),
                notifier,
                live: Mutex::new(HashMap::new()),
                listener: OnceLock::new(),
            }),
        })
    }

    /// Sets the listener told of every visible change (once; later calls change nothing).
    pub fn listen(&self, listener: PresenceListener) {
        let _ = self.inner.listener.set(listener);
    }

    /// Whether presence is enabled (`presence.enabled`).
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// Starts the idle/offline timers of the users the store has as online or unavailable (a
    /// server start). Returns how many were started. Needs a tokio runtime.
    pub fn restore_timers(&self) -> Result<usize> {
        if !self.inner.enabled {
            return Ok(0);
        }
        let mut live = self.inner.lock();
        let mut started = 0;
        for item in self.inner.records.iter() {
            let (key, value) = item?;
            let record: Record = serde_json::from_slice(&value)?;
            if record.presence == PresenceState::Offline {
                continue;
            }
            let user = std::str::from_utf8(&key)
                .ok()
                .and_then(|u| OwnedUserId::try_from(u).ok())
                .ok_or_else(|| corrupt("bad user ID key"))?;
            if live.contains_key(&user) {
                continue;
            }
            let timer = self.inner.spawn_timer(user.clone());
            started += usize::from(timer);
            live.insert(
                user,
                Live {
                    persisted_active: record.last_active_ts,
                    seen_ts: record.last_active_ts.unwrap_or(0),
                    record,
                    timer,
                },
            );
        }
        Ok(started)
    }

    /// Counts a request of `user` as activity (every authenticated request but `/sync` and
    /// `PUT /presence`, which set presence themselves): an unavailable user becomes online. The
    /// activity time itself stays in memory and is stored at most once a minute.
    pub async fn activity(&self, user: &UserId) -> Result<()> {
        self.change(user, |live, now| {
            live.record.last_active_ts = Some(now);
            live.seen_ts = now;
            if live.record.presence == PresenceState::Unavailable {
                live.record.presence = PresenceState::Online;
            }
        })
        .await
    }

    /// Applies `/sync`'s `set_presence` (absent means `online`): `online` counts as activity and
    /// makes the user online, `unavailable` makes them unavailable (without counting as
    /// activity), `offline` changes nothing.
    pub async fn on_sync(&self, user: &UserId, set_presence: Option<PresenceState>) -> Result<()> {
        match set_presence.unwrap_or(PresenceState::Online) {
            PresenceState::Offline => Ok(()),
            PresenceState::Online => {
                self.change(user, |live, now| {
                    live.record.last_active_ts = Some(now);
                    live.seen_ts = now;
                    live.record.presence = PresenceState::Online;
                })
                .await
            }
            PresenceState::Unavailable => {
                self.change(user, |live, now| {
                    live.seen_ts = now;
                    live.record.presence = PresenceState::Unavailable;
                })
                .await
            }
        }
    }

    /// Sets the user's presence and status message (`PUT /presence/{userId}/status`; `None`
    /// clears the message). Counts as activity, as the specification says.
    pub async fn set(
        &self,
        user: &UserId,
        presence: PresenceState,
        status_msg: Option<String>,
    ) -> Result<()> {
        if status_msg
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_STATUS_MSG_CHARS)
        {
            return Err(Error::InvalidParam(format!(
                "status_msg may not exceed {MAX_STATUS_MSG_CHARS} characters"
            )));
        }
        self.change(user, move |live, now| {
            live.record.presence = presence;
            live.record.status_msg = status_msg;
            live.record.last_active_ts = Some(now);
            live.seen_ts = now;
        })
        .await
    }

    /// The user's presence, or `None` when they were never seen.
    pub fn get(&self, user: &UserId) -> Result<Option<PresenceView>> {
        let record = self.inner.lock().get(user).map(|live| live.record.clone());
        let record = match record {
            Some(record) => record,
            None => match self.inner.records.get(user.as_str())? {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => return Ok(None),
            },
        };
        let now = now_ms();
        Ok(Some(PresenceView {
            presence: record.presence,
            currently_active: record.presence == PresenceState::Online,
            last_active_ago: record.last_active_ts.map(|ts| now.saturating_sub(ts)),
            status_msg: record.status_msg,
        }))
    }

    /// The users whose presence changed in `(since, upto]`, oldest change first. A user who
    /// changed again after `upto` is left out: the next sync reports them.
    pub fn changed_between(&self, since: u64, upto: u64) -> Result<Vec<OwnedUserId>> {
        let Some(start) = since.checked_add(1) else {
            return Ok(Vec::new());
        };
        let end = upto.saturating_add(1);
        if start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for item in self
            .inner
            .by_position
            .range(&keys::u64_be(start), &keys::u64_be(end))
        {
            let (_, user) = item?;
            let user = std::str::from_utf8(&user)
                .ok()
                .and_then(|u| OwnedUserId::try_from(u).ok())
                .ok_or_else(|| corrupt("bad user ID in the position index"))?;
            out.push(user);
        }
        Ok(out)
    }

    /// Runs `change` on the user's state; publishes a visible change (durably, then wakes the
    /// users it concerns). Does nothing while presence is disabled.
    async fn change(&self, user: &UserId, change: impl FnOnce(&mut Live, u64)) -> Result<()> {
        if !self.inner.enabled {
            return Ok(());
        }
        if self.inner.update(user, change)? {
            self.inner.publish(user).await?;
        }
        Ok(())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<OwnedUserId, Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored state of a user not in memory.
    fn load(&self, user: &UserId) -> Result<Live> {
        let record = match self.records.get(user.as_str())? {
            Some(bytes) => serde_json::from_slice(&bytes)?,
            None => Record::unknown(),
        };
        Ok(Live {
            persisted_active: record.last_active_ts,
            seen_ts: record.last_active_ts.unwrap_or(0),
            record,
            timer: false,
        })
    }

    /// Applies `change` to the user's state under the lock. A change of presence or status
    /// message is committed at the next stream position (returns `true`: publish it); a newer
    /// activity time is written at most once a minute. On a storage error the in-memory state
    /// is put back, so a failed request changes nothing. Starts the user's timer if needed.
    fn update(
        self: &Arc<Self>,
        user: &UserId,
        change: impl FnOnce(&mut Live, u64),
    ) -> Result<bool> {
        let now = now_ms();
        let mut live = self.lock();
        let entry = match live.entry(user.to_owned()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.load(user)?),
        };
        let (saved, saved_seen) = (entry.record.clone(), entry.seen_ts);
        change(entry, now);
        let visible =
            saved.presence != entry.record.presence || saved.status_msg != entry.record.status_msg;
        let stale = entry.record.last_active_ts != entry.persisted_active
            && match (entry.persisted_active, entry.record.last_active_ts) {
                (Some(stored), Some(active)) => {
                    active.saturating_sub(stored) >= PERSIST_ACTIVE_EVERY_MS
                }
                _ => true,
            };
        let written = if visible {
            self.commit(user, saved.position, &entry.record).map(Some)
        } else if stale {
            serde_json::to_vec(&entry.record)
                .map_err(Error::internal)
                .and_then(|bytes| Ok(self.records.put(user.as_str(), bytes)?))
                .map(|()| None)
        } else {
            Ok(None)
        };
        match written {
            Err(e) => {
                entry.record = saved;
                entry.seen_ts = saved_seen;
                return Err(e);
            }
            Ok(Some(position)) => {
                entry.record.position = position;
                entry.persisted_active = entry.record.last_active_ts;
            }
            Ok(None) if stale => entry.persisted_active = entry.record.last_active_ts,
            Ok(None) => {}
        }
        if entry.record.presence != PresenceState::Offline && !entry.timer {
            entry.timer = self.spawn_timer(user.to_owned());
        }
        Ok(visible)
    }

    /// Writes the record at the next stream position and moves the user's index entry there.
    fn commit(&self, user: &UserId, old_position: u64, record: &Record) -> Result<u64> {
        let trees = [&self.records, &self.by_position, &self.store_meta];
        self.store.sequencer().commit(
            || -> Result<(u64, u64)> {
                let position = self.store.transact(&trees, |t| {
                    let position = stream::next(&t[2])?;
                    if old_position > 0 {
                        t[1].delete(keys::u64_be(old_position))?;
                    }
                    t[1].put(keys::u64_be(position), user.as_str().as_bytes().to_vec())?;
                    let mut stored = record.clone();
                    stored.position = position;
                    let bytes =
                        serde_json::to_vec(&stored).map_err(|e| abort(Error::internal(e)))?;
                    t[0].put(user.as_str(), bytes)?;
                    Ok(position)
                })?;
                Ok((position, position))
            },
            |_| {},
        )
    }

    /// Waits until the change is durable, then wakes the user and everyone who shares a joined
    /// room with them.
    async fn publish(&self, user: &UserId) -> Result<()> {
        self.store.durable().await?;
        let audience = self.audience(user)?;
        self.notifier.notify(
            audience.iter().map(|u| u.as_ref()),
            self.store.sequencer().upto(),
        );
        if let Some(listener) = self.listener.get() {
            listener(user);
        }
        Ok(())
    }

    /// The user and the joined members of their joined rooms.
    fn audience(&self, user: &UserId) -> Result<HashSet<OwnedUserId>> {
        let mut out = HashSet::from([user.to_owned()]);
        for item in self.user_rooms.scan_prefix(keys::prefix(user.as_str())) {
            let (key, membership) = item?;
            let Some(room) = keys::second(&key) else {
                continue;
            };
            if membership.as_ref() != b"join" {
                continue;
            }
            for member in self.room_users.scan_prefix(keys::prefix(room)) {
                let (key, membership) = member?;
                if membership.as_ref() == b"join"
                    && let Some(member) = keys::second(&key)
                    && let Ok(member) = OwnedUserId::try_from(member)
                {
                    out.insert(member);
                }
            }
        }
        Ok(out)
    }

    /// Spawns the user's timer task; `false` when there is no runtime (CLI).
    fn spawn_timer(self: &Arc<Self>, user: OwnedUserId) -> bool {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(watch(Arc::downgrade(self), user));
                true
            }
            Err(_) => false,
        }
    }

    /// When the user's next automatic change is due (ms since the epoch); `None` when offline.
    fn deadline(&self, live: &Live) -> Option<u64> {
        let active = live.record.last_active_ts.unwrap_or(live.seen_ts);
        match live.record.presence {
            PresenceState::Online => Some(active.saturating_add(self.idle_ms)),
            PresenceState::Unavailable => Some(self.offline_deadline(live)),
            PresenceState::Offline => None,
        }
    }

    /// When an unavailable user becomes offline.
    fn offline_deadline(&self, live: &Live) -> u64 {
        let active = live.record.last_active_ts.unwrap_or(live.seen_ts);
        active
            .max(live.seen_ts)
            .saturating_add(self.idle_ms)
            .saturating_add(self.offline_ms)
    }

    /// The automatic change due at `now`, if any (straight to offline when both are due).
    fn expire(&self, live: &mut Live, now: u64) {
        let active = live.record.last_active_ts.unwrap_or(live.seen_ts);
        if live.record.presence != PresenceState::Offline && now >= self.offline_deadline(live) {
            live.record.presence = PresenceState::Offline;
        } else if live.record.presence == PresenceState::Online
            && now >= active.saturating_add(self.idle_ms)
        {
            live.record.presence = PresenceState::Unavailable;
        }
    }

    /// Milliseconds until the user's deadline, or `None` when the timer should end (the user is
    /// offline or gone from memory). An offline user leaves memory once their last activity
    /// time is stored.
    fn time_to_deadline(&self, user: &UserId) -> Option<u64> {
        let mut live = self.lock();
        let entry = live.get_mut(user)?;
        if let Some(at) = self.deadline(entry) {
            return Some(at.saturating_sub(now_ms()));
        }
        entry.timer = false;
        if entry.persisted_active != entry.record.last_active_ts {
            let written = serde_json::to_vec(&entry.record)
                .map_err(Error::internal)
                .and_then(|bytes| Ok(self.records.put(user.as_str(), bytes)?));
            if let Err(e) = written {
                tracing::warn!(error = %e, "storing the last activity time failed");
                return None;
            }
        }
        live.remove(user);
        None
    }
}

/// The timer of one user: sleeps until their deadline, makes the change that is due (if they
/// were not active meanwhile) and goes back to sleep until the next one; ends when they are
/// offline or the services are gone.
async fn watch(inner: Weak<Inner>, user: OwnedUserId) {
    loop {
        let wait = match inner.upgrade() {
            Some(strong) => match strong.time_to_deadline(&user) {
                Some(ms) => Duration::from_millis(ms),
                None => return,
            },
            None => return,
        };
        tokio::time::sleep(wait).await;
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let result = match strong.update(&user, |live, now| strong.expire(live, now)) {
            Ok(true) => strong.publish(&user).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "automatic presence change failed");
            drop(strong);
            tokio::time::sleep(RETRY_AFTER_ERROR).await;
        }
    }
}

impl Services {
    /// Whether `viewer` may see `user`'s presence: their own, or they share a joined room.
    pub fn presence_visible(&self, viewer: &UserId, user: &UserId) -> Result<bool> {
        if viewer == user {
            return Ok(true);
        }
        let theirs: HashSet<OwnedRoomId> = self.rooms.rooms_of(user, "join")?.into_iter().collect();
        Ok(self
            .rooms
            .rooms_of(viewer, "join")?
            .iter()
            .any(|room| theirs.contains(room)))
    }

    /// The `m.presence` events of a sync for `user`: the presence of the user and of everyone
    /// who shares a joined room with them that changed in `(since, upto]`; on an initial sync
    /// (`since` is `None`) everyone's who is not offline, and the user's own. Ignored users are
    /// left out; `filter` selects by type and sender and limits the count.
    pub fn presence_events(
        &self,
        user: &UserId,
        since: Option<u64>,
        upto: u64,
        filter: &RoomEventFilter,
        ignored: &HashSet<OwnedUserId>,
    ) -> Result<Vec<Value>> {
        if !self.presence.enabled() {
            return Ok(Vec::new());
        }
        let changed = match since {
            Some(since) => Some(self.presence.changed_between(since, upto)?),
            None => None,
        };
        if changed.as_ref().is_some_and(Vec::is_empty) {
            return Ok(Vec::new());
        }
        let my_rooms: HashSet<OwnedRoomId> =
            self.rooms.rooms_of(user, "join")?.into_iter().collect();
        let candidates: Vec<OwnedUserId> = match changed {
            Some(changed) => {
                let mut out = Vec::new();
                for other in changed {
                    if other == user
                        || self
                            .rooms
                            .rooms_of(&other, "join")?
                            .iter()
                            .any(|room| my_rooms.contains(room))
                    {
                        out.push(other);
                    }
                }
                out
            }
            None => {
                let mut all = BTreeSet::from([user.to_owned()]);
                for room in &my_rooms {
                    for (member, _) in self.rooms.members(room, Some("join"))? {
                        if let Ok(member) = OwnedUserId::try_from(member) {
                            all.insert(member);
                        }
                    }
                }
                all.into_iter().collect()
            }
        };
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut events = Vec::new();
        for other in candidates {
            if events.len() >= limit {
                break;
            }
            if ignored.contains(&other) || !filter.matches("", other.as_str(), EVENT_TYPE, false) {
                continue;
            }
            let Some(view) = self.presence.get(&other)? else {
                continue;
            };
            if since.is_none() && view.presence == PresenceState::Offline && other != user {
                continue;
            }
            events.push(json!({ "type": EVENT_TYPE, "sender": other, "content": view.content() }));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(idle_secs: u64, offline_secs: u64) -> (tempfile::TempDir, Arc<Inner>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let config = PresenceConfig {
            enabled: true,
            idle_after_secs: idle_secs,
            offline_after_secs: offline_secs,
        };
        let presence = Presence::new(&store, Arc::new(Notifier::default()), &config).unwrap();
        (dir, presence.inner)
    }

    fn live(presence: PresenceState, active: u64, seen: u64) -> Live {
        Live {
            record: Record {
                presence,
                status_msg: None,
                last_active_ts: Some(active),
                position: 0,
            },
            persisted_active: Some(active),
            seen_ts: seen,
            timer: false,
        }
    }

    #[test]
    fn states_parse_and_print() {
        for state in [
            PresenceState::Online,
            PresenceState::Unavailable,
            PresenceState::Offline,
        ] {
            assert_eq!(PresenceState::parse(state.as_str()).unwrap(), state);
        }
        assert!(matches!(
            PresenceState::parse("busy"),
            Err(Error::InvalidParam(_))
        ));
    }

    #[test]
    fn deadlines_follow_the_last_activity() {
        let (_dir, inner) = inner(10, 100);
        let mut user = live(PresenceState::Online, 1_000, 1_000);
        assert_eq!(inner.deadline(&user), Some(11_000));
        inner.expire(&mut user, 10_999);
        assert_eq!(user.record.presence, PresenceState::Online);
        inner.expire(&mut user, 11_000);
        assert_eq!(user.record.presence, PresenceState::Unavailable);
        assert_eq!(inner.deadline(&user), Some(111_000));
        // A sync as unavailable keeps the user from going offline.
        user.seen_ts = 50_000;
        assert_eq!(inner.deadline(&user), Some(160_000));
        inner.expire(&mut user, 160_000);
        assert_eq!(user.record.presence, PresenceState::Offline);
        assert_eq!(inner.deadline(&user), None);
        // Long past both deadlines: straight to offline.
        let mut user = live(PresenceState::Online, 1_000, 1_000);
        inner.expire(&mut user, 1_000_000);
        assert_eq!(user.record.presence, PresenceState::Offline);
    }

    #[test]
    fn changes_take_positions_and_move_the_index() {
        let (_dir, inner) = inner(300, 1800);
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        let presence = Presence {
            inner: inner.clone(),
        };
        let online = |live: &mut Live, now: u64| {
            live.record.presence = PresenceState::Online;
            live.record.last_active_ts = Some(now);
        };
        // No runtime here: no timers, but the writes happen.
        assert!(inner.update(alice, online).unwrap());
        assert!(inner.update(bob, online).unwrap());
        assert!(!inner.update(alice, online).unwrap(), "no visible change");
        assert!(
            inner
                .update(alice, |l, _| l.record.status_msg = Some("hi".into()))
                .unwrap()
        );
        let changed = presence.changed_between(0, u64::MAX).unwrap();
        assert_eq!(changed, vec![bob.to_owned(), alice.to_owned()]);
        let view = presence.get(alice).unwrap().unwrap();
        assert_eq!(view.presence, PresenceState::Online);
        assert_eq!(view.status_msg.as_deref(), Some("hi"));
        assert!(presence.get(ruma::user_id!("@carol:x")).unwrap().is_none());
        // The record survives leaving memory.
        inner.lock().clear();
        let stored = presence.get(alice).unwrap().unwrap();
        assert_eq!(
            (stored.presence, stored.status_msg),
            (view.presence, view.status_msg)
        );
        assert!(stored.last_active_ago.is_some());
    }
}
