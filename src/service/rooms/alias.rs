//! Room aliases and the published room directory of local rooms.
//!
//! The alias store maps `#localpart:server` to a room and the user who created the mapping
//! (`alias_roomid`), with the reverse index `roomid_aliases`; `roomid_public` holds the rooms
//! published in the directory. Creating an alias is serialised by one lock, which also covers the
//! aliases that a `createRoom` in progress has reserved, so that an alias checked free before a
//! room is created is still free when the room is done. Every change is one transaction, and
//! the caller's future resolves only once it is durable.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::power::Powers;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{
    OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomAliasId, RoomId, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Rooms;
use crate::error::{Error, Result};
use crate::storage::{Store, Tree, abort, keys, trees};

/// Where an alias points and who made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

type Pending = Arc<Mutex<HashSet<OwnedRoomAliasId>>>;

/// The alias store and the directory visibility flags.
pub struct Aliases {
    store: Store,
    server_name: OwnedServerName,
    alias_room: Tree,
    room_aliases: Tree,
    public: Tree,
    /// Aliases reserved by room creations in progress; its lock serialises alias creation.
    pending: Pending,
}

/// An alias held for a room that is being created; released when dropped.
pub struct Reservation {
    alias: OwnedRoomAliasId,
    pending: Pending,
}

impl Reservation {
    /// The reserved alias.
    pub fn alias(&self) -> &RoomAliasId {
        &self.alias
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pending.remove(&self.alias);
    }
}

/// Parses a room alias from a path or body (`M_INVALID_PARAM` when it is not one).
pub fn parse_alias(raw: &str) -> Result<OwnedRoomAliasId> {
    if raw.len() > crate::core::MAX_ID_BYTES {
        return Err(Error::InvalidParam(format!(
            "invalid room alias: longer than {} bytes",
            crate::core::MAX_ID_BYTES
        )));
    }
    RoomAliasId::parse(raw).map_err(|e| Error::InvalidParam(format!("invalid room alias: {e}")))
}

/// The error for an alias that already exists (409 `M_UNKNOWN`).
fn taken(alias: &RoomAliasId) -> Error {
    Error::Conflict(format!("room alias {alias} already exists"))
}

/// Checks the localpart of an alias this server is asked to create: not empty, and no
/// whitespace, control characters or `:` (stricter than what we accept from elsewhere).
fn check_new_localpart(localpart: &str) -> Result<()> {
    if localpart.is_empty() {
        return Err(Error::InvalidParam(
            "the alias localpart must not be empty".into(),
        ));
    }
    if localpart
        .chars()
        .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::InvalidParam(
            "the alias localpart must not contain ':', whitespace or control characters".into(),
        ));
    }
    Ok(())
}

impl Aliases {
    pub fn new(store: &Store, server_name: OwnedServerName) -> Result<Self> {
        Ok(Self {
            store: store.clone(),
            server_name,
            alias_room: store.tree(trees::ALIAS_ROOMID)?,
            room_aliases: store.tree(trees::ROOMID_ALIASES)?,
            public: store.tree(trees::ROOMID_PUBLIC)?,
            pending: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    fn lock_pending(&self) -> Result<MutexGuard<'_, HashSet<OwnedRoomAliasId>>> {
        self.pending
            .lock()
            .map_err(|_| Error::internal("alias lock poisoned"))
    }

    /// Whether an alias belongs to this server.
    pub fn is_local(&self, alias: &RoomAliasId) -> bool {
        alias.server_name() == self.server_name
    }

    /// Validates an alias this server is asked to create (`PUT /directory/room/{alias}`).
    pub fn new_local_alias(&self, raw: &str) -> Result<OwnedRoomAliasId> {
        let alias = parse_alias(raw)?;
        if !self.is_local(&alias) {
            return Err(Error::InvalidParam(format!(
                "aliases can only be created on this server ({})",
                self.server_name
            )));
        }
        check_new_localpart(alias.alias())?;
        Ok(alias)
    }

    /// The alias `#localpart:our.server` for `createRoom`'s `room_alias_name`.
    pub fn alias_from_localpart(&self, localpart: &str) -> Result<OwnedRoomAliasId> {
        check_new_localpart(localpart)?;
        parse_alias(&format!("#{localpart}:{}", self.server_name))
    }

    /// Where a local alias points, if it exists.
    pub fn resolve(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        match self.alias_room.get(alias.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    /// The local aliases of a room, sorted.
    pub fn list(&self, room_id: &RoomId) -> Result<Vec<OwnedRoomAliasId>> {
        let mut out = Vec::new();
        for item in self
            .room_aliases
            .scan_prefix(keys::prefix(room_id.as_str()))
        {
            let (k, _) = item?;
            if let Some(alias) = keys::second(&k)
                && let Ok(alias) = RoomAliasId::parse(alias)
            {
                out.push(alias);
            }
        }
        Ok(out)
    }

    /// Maps a new alias to a room; [`Error::Conflict`] when it exists or is reserved.
    pub async fn set(&self, alias: &RoomAliasId, record: &AliasRecord) -> Result<()> {
        {
            let pending = self.lock_pending()?;
            if pending.contains(alias) {
                return Err(taken(alias));
            }
            self.write_alias(alias, record, false)?;
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Holds a free alias for a room about to be created ([`Error::Conflict`] if it is taken).
    pub fn reserve(&self, alias: OwnedRoomAliasId) -> Result<Reservation> {
        let mut pending = self.lock_pending()?;
        if pending.contains(&alias) || self.alias_room.contains(alias.as_bytes())? {
            return Err(taken(&alias));
        }
        pending.insert(alias.clone());
        Ok(Reservation {
            alias,
            pending: self.pending.clone(),
        })
    }

    /// Records what `createRoom` asked for once the room exists: the reserved alias (created by
    /// `record.creator`) and the directory visibility, in one transaction. Not yet durable.
    pub fn finish_creation(
        &self,
        reservation: Option<Reservation>,
        record: &AliasRecord,
        publish: bool,
    ) -> Result<()> {
        let alias = reservation.as_ref().map(Reservation::alias);
        // Declared after `reservation`, so released before its drop takes the same lock.
        let _pending = self.lock_pending()?;
        if let Some(alias) = alias {
            self.write_alias(alias, record, publish)
        } else if publish {
            Ok(self.public.put(record.room_id.as_bytes(), Vec::new())?)
        } else {
            Ok(())
        }
    }

    /// Writes a new alias (and optionally the room's public flag) atomically; the caller holds
    /// the pending lock.
    fn write_alias(&self, alias: &RoomAliasId, record: &AliasRecord, publish: bool) -> Result<()> {
        let value = serde_json::to_vec(record)?;
        let room = record.room_id.as_str();
        let trees = [&self.alias_room, &self.room_aliases, &self.public];
        self.store.transact(&trees, |t| {
            if t[0].get(alias.as_bytes())?.is_some() {
                return Err(abort(taken(alias)));
            }
            t[0].put(alias.as_bytes(), value.clone())?;
            t[1].put(keys::pair(room, alias.as_str()), Vec::new())?;
            if publish {
                t[2].put(room.as_bytes(), Vec::new())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Points every alias of `from` at `to` and moves its directory entry, atomically (a room
    /// upgrade hands its addresses to the replacement room).
    pub fn move_room(&self, from: &RoomId, to: &RoomId) -> Result<()> {
        let aliases = self.list(from)?;
        let trees = [&self.alias_room, &self.room_aliases, &self.public];
        self.store.transact(&trees, |t| {
            for alias in &aliases {
                let Some(raw) = t[0].get(alias.as_bytes())? else {
                    continue;
                };
                let mut record: AliasRecord =
                    serde_json::from_slice(&raw).map_err(|e| abort(Error::from(e)))?;
                record.room_id = to.to_owned();
                let value = serde_json::to_vec(&record).map_err(|e| abort(Error::from(e)))?;
                t[0].put(alias.as_bytes(), value)?;
                t[1].delete(keys::pair(from.as_str(), alias.as_str()))?;
                t[1].put(keys::pair(to.as_str(), alias.as_str()), Vec::new())?;
            }
            if t[2].get(from.as_bytes())?.is_some() {
                t[2].delete(from.as_bytes())?;
                t[2].put(to.as_bytes(), Vec::new())?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Removes an alias if it still maps as `expected` (an alias deleted and recreated meanwhile
    /// is left alone).
    pub async fn remove(&self, alias: &RoomAliasId, expected: &AliasRecord) -> Result<()> {
        let trees = [&self.alias_room, &self.room_aliases];
        self.store.transact(&trees, |t| {
            let current = t[0].get(alias.as_bytes())?;
            let current: Option<AliasRecord> = current
                .map(|v| serde_json::from_slice(&v))
                .transpose()
                .map_err(|e| abort(Error::from(e)))?;
            match current {
                None => Err(abort(Error::NotFound(format!(
                    "room alias {alias} not found"
                )))),
                Some(current) if current != *expected => Err(abort(Error::Conflict(format!(
                    "room alias {alias} changed meanwhile; try again"
                )))),
                Some(_) => {
                    t[0].delete(alias.as_bytes())?;
                    t[1].delete(keys::pair(expected.room_id.as_str(), alias.as_str()))
                }
            }
        })?;
        self.store.durable().await?;
        Ok(())
    }

    /// Whether a room is published in the directory.
    pub fn is_public(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.public.contains(room_id.as_bytes())?)
    }

    /// Publishes a room in the directory or hides it.
    pub async fn set_public(&self, room_id: &RoomId, public: bool) -> Result<()> {
        if public {
            self.public.put(room_id.as_bytes(), Vec::new())?;
        } else {
            self.public.delete(room_id.as_bytes())?;
        }
        self.store.durable().await?;
        Ok(())
    }

    /// Every published room.
    pub fn public_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for item in self.public.iter() {
            let (k, _) = item?;
            if let Ok(room) = RoomId::parse(String::from_utf8_lossy(&k).as_ref()) {
                out.push(room);
            }
        }
        Ok(out)
    }
}

/// What the published room directory shows of a room (`PublishedRoomsChunk`).
#[derive(Debug, Clone, Serialize)]
pub struct RoomSummary {
    pub room_id: OwnedRoomId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_alias: Option<OwnedRoomAliasId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_type: Option<String>,
    pub num_joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
}

impl RoomSummary {
    /// Whether the name, topic or canonical alias contains `term`, ignoring case.
    pub fn matches_term(&self, term: &str) -> bool {
        let term = term.to_lowercase();
        [
            self.name.as_deref(),
            self.topic.as_deref(),
            self.canonical_alias.as_ref().map(|a| a.as_str()),
        ]
        .into_iter()
        .flatten()
        .any(|field| field.to_lowercase().contains(&term))
    }
}

/// A string field of an event's content.
fn content_str(content: &Option<Map<String, Value>>, field: &str) -> Option<String> {
    content
        .as_ref()?
        .get(field)?
        .as_str()
        .map(ToOwned::to_owned)
}

/// The power facts of a room's current state.
fn powers(rooms: &Rooms, room_id: &RoomId) -> Result<Powers> {
    let info = rooms
        .info(room_id)?
        .ok_or_else(|| Error::NotFound("no such room".into()))?;
    Powers::load(rooms, &info.room_version, &*rooms.current_state(room_id)?)
}

/// Whether `user` may manage a room's aliases and directory entry: a server admin, a creator
/// of the room, or a member with the power to send `m.room.canonical_alias`.
pub fn may_manage_directory(
    rooms: &Rooms,
    room_id: &RoomId,
    user: &UserId,
    admin: bool,
) -> Result<bool> {
    if admin {
        return Ok(true);
    }
    let powers = powers(rooms, room_id)?;
    let joined = rooms.membership(room_id, user)?.as_deref() == Some("join");
    Ok(powers.creators().contains(user)
        || (joined && powers.may_send(user, &TimelineEventType::RoomCanonicalAlias, Some(""))?))
}

impl Rooms {
    /// Maps a new local alias to a room the creator is joined to (any room for an admin).
    pub async fn create_alias(
        &self,
        alias: &RoomAliasId,
        room_id: &RoomId,
        creator: &UserId,
        admin: bool,
    ) -> Result<()> {
        if self.info(room_id)?.is_none() {
            return Err(Error::NotFound("no such room".into()));
        }
        if !admin && self.membership(room_id, creator)?.as_deref() != Some("join") {
            return Err(Error::Forbidden(
                "you must be in the room to create an alias for it".into(),
            ));
        }
        let record = AliasRecord {
            room_id: room_id.to_owned(),
            creator: creator.to_owned(),
        };
        self.aliases.set(alias, &record).await
    }

    /// Deletes a local alias: allowed for its creator and for those who may manage the room's
    /// directory entry ([`may_manage_directory`]).
    pub async fn delete_alias(
        &self,
        alias: &RoomAliasId,
        user: &UserId,
        admin: bool,
    ) -> Result<()> {
        let record = self
            .aliases
            .resolve(alias)?
            .ok_or_else(|| Error::NotFound(format!("room alias {alias} not found")))?;
        let allowed = admin
            || *record.creator == *user
            || (self.info(&record.room_id)?.is_some()
                && may_manage_directory(self, &record.room_id, user, admin)?);
        if !allowed {
            return Err(Error::Forbidden(
                "only the alias creator or a room moderator may delete this alias".into(),
            ));
        }
        self.aliases.remove(alias, &record).await
    }

    /// Publishes a room in the directory or hides it, for those who may manage it.
    pub async fn set_directory_visibility(
        &self,
        room_id: &RoomId,
        user: &UserId,
        admin: bool,
        public: bool,
    ) -> Result<()> {
        if self.info(room_id)?.is_none() {
            return Err(Error::NotFound("no such room".into()));
        }
        if !may_manage_directory(self, room_id, user, admin)? {
            return Err(Error::Forbidden(
                "you may not change this room's visibility in the directory".into(),
            ));
        }
        self.aliases.set_public(room_id, public).await
    }

    /// What the directory shows of a room, read from its current state.
    pub fn room_summary(&self, room_id: &RoomId) -> Result<RoomSummary> {
        let state = self.current_state(room_id)?;
        let get = |kind: StateEventType| self.state_content(&state, &kind);
        let name = get(StateEventType::RoomName)?;
        let topic = get(StateEventType::RoomTopic)?;
        let alias = get(StateEventType::RoomCanonicalAlias)?;
        let avatar = get(StateEventType::RoomAvatar)?;
        let join_rules = get(StateEventType::RoomJoinRules)?;
        let history = get(StateEventType::RoomHistoryVisibility)?;
        let guests = get(StateEventType::RoomGuestAccess)?;
        let create = get(StateEventType::RoomCreate)?;
        Ok(RoomSummary {
            room_id: room_id.to_owned(),
            name: content_str(&name, "name").filter(|n| !n.is_empty()),
            topic: content_str(&topic, "topic").filter(|t| !t.is_empty()),
            canonical_alias: content_str(&alias, "alias").and_then(|a| RoomAliasId::parse(a).ok()),
            avatar_url: content_str(&avatar, "url").filter(|u| !u.is_empty()),
            join_rule: content_str(&join_rules, "join_rule"),
            room_type: content_str(&create, "type"),
            num_joined_members: self.members(room_id, Some("join"))?.len() as u64,
            world_readable: content_str(&history, "history_visibility").as_deref()
                == Some("world_readable"),
            guest_can_join: content_str(&guests, "guest_access").as_deref() == Some("can_join"),
        })
    }

    /// The summaries of every published room, most joined members first, then by room ID.
    pub fn public_room_summaries(&self) -> Result<Vec<RoomSummary>> {
        let mut out = Vec::new();
        for room_id in self.aliases.public_rooms()? {
            if self.info(&room_id)?.is_some() {
                out.push(self.room_summary(&room_id)?);
            }
        }
        out.sort_by(|a, b| {
            b.num_joined_members
                .cmp(&a.num_joined_members)
                .then_with(|| a.room_id.cmp(&b.room_id))
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aliases() -> (tempfile::TempDir, Aliases) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let server = OwnedServerName::try_from("example.org").unwrap();
        (dir, Aliases::new(&store, server).unwrap())
    }

    fn record(room: &str, user: &str) -> AliasRecord {
        AliasRecord {
            room_id: RoomId::parse(room).unwrap(),
            creator: UserId::parse(user).unwrap(),
        }
    }

    #[test]
    fn new_aliases_are_local_and_well_formed() {
        let (_dir, aliases) = aliases();
        assert!(aliases.new_local_alias("#ok:example.org").is_ok());
        for bad in [
            "ok",
            "#ok",
            "#:example.org",
            "#a b:example.org",
            "#ok:other.org",
        ] {
            assert!(
                matches!(aliases.new_local_alias(bad), Err(Error::InvalidParam(_))),
                "{bad}"
            );
        }
        assert_eq!(
            aliases.alias_from_localpart("room").unwrap().as_str(),
            "#room:example.org"
        );
        for bad in ["", "a:b", "tab\there"] {
            assert!(aliases.alias_from_localpart(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn reservations_hold_aliases_until_the_room_exists() {
        let (_dir, aliases) = aliases();
        let alias = parse_alias("#room:example.org").unwrap();
        let mine = record("!a:example.org", "@alice:example.org");
        let reservation = aliases.reserve(alias.clone()).unwrap();
        // Neither another creation nor a PUT may take a reserved alias.
        assert!(matches!(
            aliases.reserve(alias.clone()),
            Err(Error::Conflict(_))
        ));
        let theirs = record("!b:example.org", "@bob:example.org");
        assert!(matches!(
            aliases.set(&alias, &theirs).await,
            Err(Error::Conflict(_))
        ));
        aliases
            .finish_creation(Some(reservation), &mine, true)
            .unwrap();
        assert_eq!(aliases.resolve(&alias).unwrap(), Some(mine.clone()));
        assert!(aliases.is_public(&mine.room_id).unwrap());
        assert_eq!(aliases.list(&mine.room_id).unwrap(), vec![alias.clone()]);
        // Released, but still taken by the mapping itself.
        assert!(matches!(
            aliases.reserve(alias.clone()),
            Err(Error::Conflict(_))
        ));

        // A removal that expects another mapping changes nothing.
        assert!(matches!(
            aliases.remove(&alias, &theirs).await,
            Err(Error::Conflict(_))
        ));
        aliases.remove(&alias, &mine).await.unwrap();
        assert_eq!(aliases.resolve(&alias).unwrap(), None);
        assert!(aliases.list(&mine.room_id).unwrap().is_empty());
        // A dropped reservation frees the alias.
        drop(aliases.reserve(alias.clone()).unwrap());
        aliases.set(&alias, &theirs).await.unwrap();
    }
}
