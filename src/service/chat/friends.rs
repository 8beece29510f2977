//! Friends: a friend request is an invite to a direct-message room, and a friendship is that
//! room with both users joined.
//!
//! Nothing but the room's memberships says who is friends with whom: the only thing stored here
//! is which room is the direct chat of which two users, indexed (user, peer) → room both ways
//! and room → users. So a Matrix client that joins the invited room accepts the request exactly
//! as `POST /friends/accept` does, and leaving the room (from either API) ends the friendship.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use ruma::events::StateEventType;
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::core::room_version;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::create::{CreateRoom, Preset, member_event};
use crate::storage::{Store, Tree, keys, trees};

/// The account data type where Matrix clients look for direct chats: peer → room IDs.
pub const DIRECT_TYPE: &str = "m.direct";

/// Stripes of the lock that serialises changes to one pair's friendship (two users asking each
/// other at the same moment must not make two rooms).
const LOCK_STRIPES: usize = 64;

/// Where a user stands with a peer, derived from the memberships of their direct chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Friendship {
    /// No direct chat, or one that either of them left.
    None,
    /// The user asked (joined the room) and the peer is invited.
    Outgoing(OwnedRoomId),
    /// The peer asked: the user is invited.
    Incoming(OwnedRoomId),
    /// Both joined.
    Friends(OwnedRoomId),
}

impl Friendship {
    /// The direct chat, when there is a request or a friendship.
    pub fn room(&self) -> Option<&RoomId> {
        match self {
            Friendship::None => None,
            Friendship::Outgoing(room) | Friendship::Incoming(room) | Friendship::Friends(room) => {
                Some(room)
            }
        }
    }
}

/// Why a friend-request action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A user cannot befriend themselves.
    ToSelf,
    /// One of the two blocks (ignores) the other.
    Blocked,
    AlreadyFriends,
    /// The user already asked and waits for the peer.
    RequestPending,
    /// There is no request (or friendship) to act on.
    NothingToDo,
}

/// What `POST /friends/add` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Added {
    /// A new request: the direct chat was created and the peer invited.
    Requested(OwnedRoomId),
    /// The peer had already asked: the request was accepted instead.
    Accepted(OwnedRoomId),
}

/// The direct-chat index.
pub struct Friends {
    store: Store,
    /// user, peer → room ID.
    by_pair: Tree,
    /// room ID → `[creator, invitee]` (JSON).
    by_room: Tree,
    locks: Vec<tokio::sync::Mutex<()>>,
}

impl Friends {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            by_pair: store.tree(trees::USERID_PEERID_DMROOM)?,
            by_room: store.tree(trees::DMROOM_USERIDS)?,
            locks: (0..LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        })
    }

    /// The latest direct chat between `user` and `peer`, if one was ever made.
    pub fn room_for(&self, user: &UserId, peer: &UserId) -> Result<Option<OwnedRoomId>> {
        match self.by_pair.get(keys::pair(user.as_str(), peer.as_str()))? {
            Some(raw) => Ok(Some(
                OwnedRoomId::try_from(String::from_utf8_lossy(&raw).as_ref())
                    .map_err(Error::internal)?,
            )),
            None => Ok(None),
        }
    }

    /// The two users of a direct chat (its creator first), if `room` is one.
    pub fn users_of(&self, room: &RoomId) -> Result<Option<(OwnedUserId, OwnedUserId)>> {
        match self.by_room.get(room.as_bytes())? {
            Some(raw) => Ok(Some(serde_json::from_slice(&raw)?)),
            None => Ok(None),
        }
    }

    /// Every peer `user` has a direct chat with (current or ended), with that room.
    pub fn peers(&self, user: &UserId) -> Result<Vec<(OwnedUserId, OwnedRoomId)>> {
        let mut out = Vec::new();
        for item in self.by_pair.scan_prefix(keys::prefix(user.as_str())) {
            let (key, value) = item?;
            let (Some(peer), Ok(room)) = (
                keys::second(&key).and_then(|p| OwnedUserId::try_from(p).ok()),
                OwnedRoomId::try_from(String::from_utf8_lossy(&value).as_ref()),
            ) else {
                continue;
            };
            out.push((peer, room));
        }
        Ok(out)
    }

    /// Records `room` as the direct chat of `creator` and `invitee`, both ways, atomically.
    fn record(&self, creator: &UserId, invitee: &UserId, room: &RoomId) -> Result<()> {
        let users = serde_json::to_vec(&(creator, invitee))?;
        let room_bytes = room.as_bytes().to_vec();
        self.store
            .transact(&[&self.by_pair, &self.by_room], |t| {
                t[0].put::<Error>(
                    keys::pair(creator.as_str(), invitee.as_str()),
                    room_bytes.clone(),
                )?;
                t[0].put(
                    keys::pair(invitee.as_str(), creator.as_str()),
                    room_bytes.clone(),
                )?;
                t[1].put(room.as_bytes(), users.clone())
            })
            .map_err(Error::from)
    }

    /// The lock of the pair's friendship, the same whichever of the two asks.
    async fn lock(&self, a: &UserId, b: &UserId) -> tokio::sync::MutexGuard<'_, ()> {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        let mut hasher = DefaultHasher::new();
        (first, second).hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        self.locks[stripe].lock().await
    }
}

impl Services {
    /// Where `user` stands with `peer`: derived from both memberships of their latest direct
    /// chat, whichever API (or Matrix client) changed them.
    pub fn friendship(&self, user: &UserId, peer: &UserId) -> Result<Friendship> {
        let Some(room) = self.chat.friends.room_for(user, peer)? else {
            return Ok(Friendship::None);
        };
        let mine = self.rooms.membership(&room, user)?;
        let theirs = self.rooms.membership(&room, peer)?;
        Ok(match (mine.as_deref(), theirs.as_deref()) {
            (Some("join"), Some("join")) => Friendship::Friends(room),
            (Some("join"), Some("invite")) => Friendship::Outgoing(room),
            (Some("invite"), Some("join")) => Friendship::Incoming(room),
            _ => Friendship::None,
        })
    }

    /// The peer of `user` when `room_id` is a direct chat between them (current or ended).
    pub fn dm_peer(&self, user: &UserId, room_id: &RoomId) -> Result<Option<OwnedUserId>> {
        Ok(match self.chat.friends.users_of(room_id)? {
            Some((a, b)) if a == user => Some(b),
            Some((a, b)) if b == user => Some(a),
            _ => None,
        })
    }

    /// The friends of `user` with their direct chats, leaving out users either of them blocks.
    pub fn friends_of(&self, user: &UserId) -> Result<Vec<(OwnedUserId, OwnedRoomId)>> {
        let mut out = Vec::new();
        for (peer, _) in self.chat.friends.peers(user)? {
            if let Friendship::Friends(room) = self.friendship(user, &peer)?
                && !self.blocked_between(user, &peer)?
            {
                out.push((peer, room));
            }
        }
        Ok(out)
    }

    /// The pending requests of `user` (incoming and outgoing), leaving out blocked users.
    pub fn friend_requests(&self, user: &UserId) -> Result<Vec<(OwnedUserId, Friendship)>> {
        let mut out = Vec::new();
        for (peer, _) in self.chat.friends.peers(user)? {
            let friendship = self.friendship(user, &peer)?;
            if matches!(
                friendship,
                Friendship::Incoming(_) | Friendship::Outgoing(_)
            ) && !self.blocked_between(user, &peer)?
            {
                out.push((peer, friendship));
            }
        }
        Ok(out)
    }

    /// Whether either user blocks (ignores, `m.ignored_user_list`) the other.
    pub fn blocked_between(&self, a: &UserId, b: &UserId) -> Result<bool> {
        Ok(self.account_data.ignored_users(a)?.contains(b)
            || self.account_data.ignored_users(b)?.contains(a))
    }

    /// `POST /friends/add`: creates the direct chat and invites `peer`, or accepts when `peer`
    /// already asked. `peer` must be an existing local user (the caller checks).
    pub async fn add_friend(
        &self,
        user: &UserId,
        peer: &UserId,
    ) -> Result<std::result::Result<Added, Refused>> {
        if user == peer {
            return Ok(Err(Refused::ToSelf));
        }
        self.adopt_direct_invites(user).await?;
        let _guard = self.chat.friends.lock(user, peer).await;
        if self.blocked_between(user, peer)? {
            return Ok(Err(Refused::Blocked));
        }
        match self.friendship(user, peer)? {
            Friendship::Friends(_) => return Ok(Err(Refused::AlreadyFriends)),
            Friendship::Outgoing(_) => return Ok(Err(Refused::RequestPending)),
            Friendship::Incoming(room) => {
                self.join_direct(user, peer, &room).await?;
                return Ok(Ok(Added::Accepted(room)));
            }
            Friendship::None => {}
        }
        // A chat that ended (declined, removed) is left behind; a new request is a new room.
        if let Some(old) = self.chat.friends.room_for(user, peer)? {
            self.leave_direct(user, &old, true).await?;
        }
        // Both members are administrators of their chat, as Matrix clients make DMs; the peer
        // through the power levels rather than as a creator (what `trusted_private_chat` makes
        // of invitees from room version 12 on), so that the request can still be withdrawn.
        let version = room_version::DEFAULT;
        let mut admins = Map::new();
        admins.insert(peer.to_string(), json!(100));
        if !room_version::rules(&version)?
            .authorization
            .explicitly_privilege_room_creators
        {
            admins.insert(user.to_string(), json!(100));
        }
        let mut power = Map::new();
        power.insert("users".into(), Value::Object(admins));
        let room = self
            .rooms
            .create_room(CreateRoom {
                creator: user.to_owned(),
                creator_profile: self.profiles.member_content(user)?,
                room_version: version,
                preset: Preset::PrivateChat,
                creation_content: Map::new(),
                power_level_content_override: power,
                initial_state: Vec::new(),
                name: None,
                topic: None,
                invite: vec![peer.to_owned()],
                remote_invite: Vec::new(),
                is_direct: true,
                alias: None,
                publish: false,
            })
            .await?;
        self.chat.friends.record(user, peer, &room)?;
        self.store.durable().await?;
        self.mark_direct(user, peer, &room).await;
        Ok(Ok(Added::Requested(room)))
    }

    /// `POST /friends/accept`: joins the direct chat `peer` invited `user` to.
    pub async fn accept_friend(
        &self,
        user: &UserId,
        peer: &UserId,
    ) -> Result<std::result::Result<OwnedRoomId, Refused>> {
        self.adopt_direct_invites(user).await?;
        let _guard = self.chat.friends.lock(user, peer).await;
        if self.blocked_between(user, peer)? {
            return Ok(Err(Refused::Blocked));
        }
        match self.friendship(user, peer)? {
            Friendship::Incoming(room) => {
                self.join_direct(user, peer, &room).await?;
                Ok(Ok(room))
            }
            Friendship::Friends(_) => Ok(Err(Refused::AlreadyFriends)),
            _ => Ok(Err(Refused::NothingToDo)),
        }
    }

    /// `POST /friends/decline`: rejects the invite of an incoming request.
    pub async fn decline_friend(
        &self,
        user: &UserId,
        peer: &UserId,
    ) -> Result<std::result::Result<(), Refused>> {
        self.adopt_direct_invites(user).await?;
        let _guard = self.chat.friends.lock(user, peer).await;
        match self.friendship(user, peer)? {
            Friendship::Incoming(room) => {
                self.leave_direct(user, &room, false).await?;
                Ok(Ok(()))
            }
            _ => Ok(Err(Refused::NothingToDo)),
        }
    }

    /// `POST /friends/remove`: ends a friendship or withdraws an outgoing request. The user
    /// leaves and forgets the chat (a pending invite is withdrawn first), so that neither side
    /// counts as a friend any more.
    pub async fn remove_friend(
        &self,
        user: &UserId,
        peer: &UserId,
    ) -> Result<std::result::Result<(), Refused>> {
        let _guard = self.chat.friends.lock(user, peer).await;
        match self.friendship(user, peer)? {
            Friendship::Outgoing(room) => {
                // Withdraw the invite so that the peer's clients stop showing it. The auth rules
                // may refuse (the peer's power level): leaving still ends the request.
                let withdraw = member_event(peer, "leave", Map::new());
                if let Err(e) = self.rooms.append(&room, user, withdraw, None).await {
                    tracing::debug!(error = %e, "withdrawing a friend request's invite failed");
                }
                self.leave_direct(user, &room, true).await?;
                Ok(Ok(()))
            }
            Friendship::Friends(room) => {
                self.leave_direct(user, &room, true).await?;
                Ok(Ok(()))
            }
            _ => Ok(Err(Refused::NothingToDo)),
        }
    }

    /// Makes the direct-chat invites `user` got from Matrix clients friend requests: an invite
    /// marked `is_direct` from a local user who is the only other member of the room, between
    /// two users with no request or friendship yet, is indexed as their direct chat (the inviter
    /// asked). Invites are few, so looking at them all costs little.
    pub async fn adopt_direct_invites(&self, user: &UserId) -> Result<()> {
        for room in self.rooms.rooms_of(user, "invite")? {
            if self.chat.friends.users_of(&room)?.is_some() {
                continue;
            }
            let Some(invite) =
                self.rooms
                    .state_event(&room, &StateEventType::RoomMember, user.as_str())?
            else {
                continue;
            };
            let content: Value = serde_json::from_str(invite.content().get())?;
            let inviter = invite.sender();
            if content.get("is_direct") != Some(&Value::Bool(true))
                || inviter == user
                || inviter.server_name() != self.config.server_name.as_str()
            {
                continue;
            }
            let members = self.rooms.members(&room, None)?;
            let only_the_two = members.len() == 2
                && members
                    .iter()
                    .any(|(u, m)| u == inviter.as_str() && m == "join");
            if !only_the_two {
                continue;
            }
            let _guard = self.chat.friends.lock(user, inviter).await;
            if self.friendship(user, inviter)? == Friendship::None
                && self.chat.friends.users_of(&room)?.is_none()
            {
                self.chat.friends.record(inviter, user, &room)?;
                self.store.durable().await?;
            }
        }
        Ok(())
    }

    /// Joins `user` to the direct chat and lists it in their `m.direct`.
    async fn join_direct(&self, user: &UserId, peer: &UserId, room: &RoomId) -> Result<()> {
        let join = member_event(user, "join", self.profiles.member_content(user)?);
        self.rooms.append(room, user, join, None).await?;
        self.mark_direct(user, peer, room).await;
        Ok(())
    }

    /// Leaves a direct chat (if still in it) and optionally forgets it.
    async fn leave_direct(&self, user: &UserId, room: &RoomId, forget: bool) -> Result<()> {
        if matches!(
            self.rooms.membership(room, user)?.as_deref(),
            Some("join" | "invite" | "knock")
        ) {
            let leave = member_event(user, "leave", Map::new());
            self.rooms.append(room, user, leave, None).await?;
        }
        if forget && self.rooms.membership(room, user)?.is_some() {
            self.rooms.forget(room, user).await?;
        }
        Ok(())
    }

    /// Adds `room` to `user`'s `m.direct` under `peer`, so that Matrix clients show it as a
    /// direct chat. Best effort: the friends index is what the Chat API goes by, and the room
    /// already exists and is indexed when this runs, so failing the request here would leave a
    /// friendship the client cannot retry (a second request is `request_pending`). A failure is
    /// logged: only Matrix clients miss it (they show the room as a group of two).
    async fn mark_direct(&self, user: &UserId, peer: &UserId, room: &RoomId) {
        let marked = self
            .account_data
            .update_server_managed(user, DIRECT_TYPE, |old| {
                let mut content = old.and_then(Value::as_object).cloned().unwrap_or_default();
                let rooms = content.entry(peer.to_string()).or_insert_with(|| json!([]));
                if !rooms.is_array() {
                    *rooms = json!([]);
                }
                let Some(list) = rooms.as_array_mut() else {
                    return Ok(None);
                };
                if list.iter().any(|r| r.as_str() == Some(room.as_str())) {
                    return Ok(None);
                }
                list.push(json!(room));
                Ok(Some(Value::Object(content)))
            })
            .await;
        if let Err(error) = marked {
            tracing::warn!(user = %user, room = %room, %error, "could not list a direct chat in m.direct");
        }
    }

    /// When `user`'s membership in `room` last changed (ms since the epoch): the time of their
    /// current member event.
    pub fn membership_changed_at(&self, room: &RoomId, user: &UserId) -> Result<Option<u64>> {
        Ok(self
            .rooms
            .state_event(room, &StateEventType::RoomMember, user.as_str())?
            .map(|pdu| pdu.origin_server_ts().0.into()))
    }

    /// When `user`'s current run of joins of `room` began (ms since the epoch): the time of the
    /// join that made them a member, which later profile changes (joins again) do not move.
    pub fn joined_since(&self, room: &RoomId, user: &UserId) -> Result<Option<u64>> {
        let position = self.rooms.joined_at(room, user)?;
        if position == 0 {
            return Ok(None);
        }
        let entries =
            self.rooms
                .timeline_range(room, position - 1, position.saturating_add(1), false, 1)?;
        let Some((_, event_id)) = entries.first() else {
            return Ok(None);
        };
        Ok(self
            .rooms
            .pdu(event_id)?
            .map(|pdu| pdu.origin_server_ts().0.into()))
    }
}
