//! Typing notifications: who is typing in which room, in memory only.
//!
//! Each change of a room's set of typers still takes a global stream position (a tiny
//! transaction on `meta`, not flushed), so that sync tokens order it with everything else; the
//! room remembers the position of its last change. A user types until they say they stopped or
//! their timeout runs out: every start spawns one task that sleeps until that deadline and then
//! removes the entry unless it was renewed meanwhile (nothing re-reads the state on a timer).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::notifier::Notifier;
use super::room_ephemeral::{Audience, EphemeralChanges};
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, keys, stream, trees};

/// How long a user types when the request does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a request may make a user type without renewing it.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Told of every change of a user's typing (room, user, typing), and of every renewal (typing
/// again): the federation sender sends our users' typing to the other servers of the room.
pub type TypingListener = Box<dyn Fn(&RoomId, &UserId, bool) + Send + Sync>;

/// Typing in every room.
pub struct Typing {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    store_meta: Tree,
    /// room, user → membership (the index `rooms` writes), for the joined members to wake.
    room_users: Tree,
    notifier: Arc<Notifier>,
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    changes: Mutex<EphemeralChanges>,
    /// Tells one start (and its expiry task) from the next start of the same user.
    generations: AtomicU64,
    listener: OnceLock<TypingListener>,
}

/// One room's typers.
struct RoomTyping {
    /// User → the generation of their latest start.
    typers: BTreeMap<OwnedUserId, u64>,
    /// The stream position of the last change of `typers`.
    changed_at: u64,
}

/// What a request or an expiry does to a room's typers.
enum Change {
    /// Start typing (or renew) with this generation.
    Start(u64),
    /// Stop typing.
    Stop,
    /// Stop typing if the latest start still has this generation.
    Expire(u64),
}

impl Typing {
    pub fn new(store: &Store, notifier: Arc<Notifier>) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                store_meta: store.tree(trees::META)?,
                room_users: store.tree(trees::ROOMID_USERID_MEMBERSHIP)?,
                changes: Mutex::new(EphemeralChanges::new(stream::current(store)?)),
                store: store.clone(),
                notifier,
                rooms: Mutex::new(HashMap::new()),
                generations: AtomicU64::new(0),
                listener: OnceLock::new(),
            }),
        })
    }

    /// Marks `user` as typing in `room` for `timeout` (capped at [`MAX_TIMEOUT`]), or as no
    /// longer typing when `timeout` is `None`. The user must be joined to the room. A change of
    /// the room's typers wakes its joined members; renewing only moves the deadline.
    pub fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) -> Result<()> {
        let joined = self
            .inner
            .room_users
            .get(keys::pair(room.as_str(), user.as_str()))?
            .is_some_and(|m| m.as_ref() == b"join");
        if !joined {
            return Err(Error::Forbidden("you are not joined to this room".into()));
        }
        let Some(timeout) = timeout else {
            return self.inner.change(room, user, Change::Stop);
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::internal("typing needs the async runtime"))?;
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.change(room, user, Change::Start(generation))?;
        let inner: Weak<Inner> = Arc::downgrade(&self.inner);
        let (room, user) = (room.to_owned(), user.to_owned());
        runtime.spawn(async move {
            tokio::time::sleep(timeout.min(MAX_TIMEOUT)).await;
            // The services are gone when the server stopped: nothing to expire.
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = inner.change(&room, &user, Change::Expire(generation)) {
                tracing::warn!(error = %e, "typing expiry failed");
            }
        });
        Ok(())
    }

    /// Sets the listener told of every change and renewal (once; later calls change nothing).
    pub fn listen(&self, listener: TypingListener) {
        let _ = self.inner.listener.set(listener);
    }

    /// The users typing in `room` and the position of the last change, if anyone ever typed
    /// there since the server started.
    pub fn typers(&self, room: &RoomId) -> Option<(Vec<OwnedUserId>, u64)> {
        let rooms = self.inner.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms
            .get(room)
            .map(|r| (r.typers.keys().cloned().collect(), r.changed_at))
    }

    /// The rooms whose typers changed after `since` (which concerns every member, `user`
    /// among them), if still known.
    pub fn rooms_changed_since(&self, since: u64, user: &UserId) -> Option<HashSet<OwnedRoomId>> {
        self.inner
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(since, user)
    }
}

impl Inner {
    /// Applies a change under the sequencer's lock: when the set of typers changes, it takes a
    /// stream position, records the change and then wakes the room's joined members.
    fn change(&self, room: &RoomId, user: &UserId, change: Change) -> Result<()> {
        let changed = self.store.sequencer().commit(
            || -> Result<(bool, u64)> {
                let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
                let current = rooms.get(room).and_then(|r| r.typers.get(user)).copied();
                let typing = match (&change, current) {
                    // Renewal: a new deadline, the same set of typers.
                    (Change::Start(generation), Some(_)) => {
                        if let Some(r) = rooms.get_mut(room) {
                            r.typers.insert(user.to_owned(), *generation);
                        }
                        return Ok((false, self.store.sequencer().upto()));
                    }
                    (Change::Start(generation), None) => Some(*generation),
                    (Change::Stop, Some(_)) => None,
                    (Change::Expire(generation), Some(latest)) if latest == *generation => None,
                    _ => return Ok((false, self.store.sequencer().upto())),
                };
                let position = self
                    .store
                    .transact::<_, Error>(&[&self.store_meta], |t| stream::next(&t[0]))?;
                let entry = rooms.entry(room.to_owned()).or_insert_with(|| RoomTyping {
                    typers: BTreeMap::new(),
                    changed_at: position,
                });
                match typing {
                    Some(generation) => entry.typers.insert(user.to_owned(), generation),
                    None => entry.typers.remove(user),
                };
                entry.changed_at = position;
                self.changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(position, room, Audience::Everyone);
                Ok((true, position))
            },
            // The bookkeeping is done above, under the same lock.
            |_| {},
        )?;
        if changed {
            self.wake_members(room)?;
        }
        let typing = matches!(change, Change::Start(_));
        if (changed || typing)
            && let Some(listener) = self.listener.get()
        {
            listener(room, user, typing);
        }
        Ok(())
    }

    fn wake_members(&self, room: &RoomId) -> Result<()> {
        let mut members = Vec::new();
        for item in self.room_users.scan_prefix(keys::prefix(room.as_str())) {
            let (key, membership) = item?;
            if membership.as_ref() == b"join"
                && let Some(user) = keys::second(&key)
                && let Ok(user) = OwnedUserId::try_from(user)
            {
                members.push(user);
            }
        }
        self.notifier.notify(
            members.iter().map(|u| u.as_ref()),
            self.store.sequencer().upto(),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn typing_starts_renews_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let notifier = Arc::new(Notifier::default());
        let typing = Typing::new(&store, notifier.clone()).unwrap();
        let room = ruma::room_id!("!r:x");
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        store
            .tree(trees::ROOMID_USERID_MEMBERSHIP)
            .unwrap()
            .put(keys::pair(room.as_str(), alice.as_str()), b"join".to_vec())
            .unwrap();
        let mut waiter = notifier.subscribe(alice);
        assert!(matches!(
            typing.set(room, bob, Some(MAX_TIMEOUT)),
            Err(Error::Forbidden(_))
        ));
        assert!(typing.typers(room).is_none());

        typing
            .set(room, alice, Some(Duration::from_millis(100)))
            .unwrap();
        let (typers, started) = typing.typers(room).unwrap();
        assert_eq!(typers, vec![alice.to_owned()]);
        assert_eq!(*waiter.wait_for(|p| *p >= started).await.unwrap(), started);
        // A renewal moves the deadline, not the stream.
        typing
            .set(room, alice, Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(typing.typers(room).unwrap().1, started);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(typing.typers(room).unwrap().0.len(), 1, "renewed");

        // The expiry wakes the member with the empty list.
        let expired = *waiter.wait_for(|p| *p > started).await.unwrap();
        let (typers, changed_at) = typing.typers(room).unwrap();
        assert!(typers.is_empty() && changed_at == expired);
        let changed = typing.rooms_changed_since(started, alice).unwrap();
        assert!(changed.contains(room));
        assert!(
            typing
                .rooms_changed_since(expired, alice)
                .unwrap()
                .is_empty()
        );
    }
}
