//! Receipts and read markers.
//!
//! A receipt says that a user got as far as an event: `m.read` (shown to the room),
//! `m.read.private` (shown only to its owner) and `org.roost.delivered` (recorded by the server
//! when `/sync` hands the user's device newer events of others; shown to everyone but its
//! owner, see `spec/extensions.md`). Each (room, type, user, thread) has one receipt, and it only
//! moves forwards: a receipt for an event older than the current one changes nothing.
//!
//! Every write takes the next global stream position in the same transaction as the data and
//! moves the receipt's entry in a per-room position index, so an incremental sync reads the
//! receipts written after its token. The fully read marker is the room account data
//! `m.fully_read`, written through `account_data`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Mutex;

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Services;
use super::room_ephemeral::{Audience, EphemeralChanges};
use super::rooms::visibility::Reader;
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::storage::{StorageError, Store, Tree, abort, keys, stream, trees};
use crate::util::now_ms;

/// The room account data type of the fully read marker.
pub const FULLY_READ: &str = "m.fully_read";
/// The thread ID of the main timeline in threaded receipts.
pub const MAIN_THREAD: &str = "main";

/// The receipt types Roost stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptKind {
    /// `m.read`: read up to an event, shown to the room.
    Read,
    /// `m.read.private`: read up to an event, shown only to its owner.
    ReadPrivate,
    /// `org.roost.delivered`: events up to this one reached one of the owner's devices.
    Delivered,
}

impl ReceiptKind {
    pub const ALL: [ReceiptKind; 3] = [Self::Read, Self::ReadPrivate, Self::Delivered];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "m.read",
            Self::ReadPrivate => "m.read.private",
            Self::Delivered => "org.roost.delivered",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// Who sees a receipt of this type owned by `owner`.
    pub fn audience(self, owner: &UserId) -> Audience {
        match self {
            Self::Read => Audience::Everyone,
            Self::ReadPrivate => Audience::Only(owner.to_owned()),
            Self::Delivered => Audience::AllBut(owner.to_owned()),
        }
    }
}

/// What identifies a receipt in a room: its type, its owner and its thread (`None`:
/// unthreaded; `main` or a thread root's event ID otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReceiptKey {
    pub kind: ReceiptKind,
    pub user: OwnedUserId,
    pub thread: Option<String>,
}

/// A stored receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: OwnedEventId,
    /// When it was written (ms since the epoch).
    pub ts: u64,
    /// The stream position of the write.
    pub position: u64,
    /// The stream position of the event, which orders receipts of one key.
    pub event_pos: u64,
    /// The one user a delivered receipt is for (see [`NewReceipt::recipient`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<OwnedUserId>,
}

/// A receipt to write.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    pub room_id: OwnedRoomId,
    pub kind: ReceiptKind,
    pub user: OwnedUserId,
    pub thread: Option<String>,
    pub event_id: OwnedEventId,
    pub event_pos: u64,
    /// The one user the receipt is for, instead of everyone of its audience: a delivered
    /// receipt is for the sender of the event it is on. Only that user's syncs read it and are
    /// woken by it (a message to a room of a thousand members makes a thousand receipts, which
    /// the other members never look through).
    pub recipient: Option<OwnedUserId>,
}

/// What `POST /read_markers` asks for.
#[derive(Debug, Default)]
pub struct ReadMarkers<'a> {
    pub fully_read: Option<&'a EventId>,
    pub read: Option<&'a EventId>,
    pub read_private: Option<&'a EventId>,
}

/// Receipts of every room, with the index incremental syncs read.
pub struct Receipts {
    store: Store,
    /// room, type, user, thread or empty → [`Receipt`].
    data: Tree,
    /// room, stream position (u64 BE) followed by type, user, thread → empty; receipts for one
    /// recipient under room, [`RECIPIENT_MARK`], recipient, then the same.
    by_position: Tree,
    store_meta: Tree,
    changes: Mutex<EphemeralChanges>,
}

/// `room SEP type SEP user SEP thread-or-empty`: the identity part after the room.
fn identity(key: &ReceiptKey) -> Vec<u8> {
    let mut out = keys::pair(key.kind.as_str(), key.user.as_str());
    out.push(keys::SEP);
    out.extend_from_slice(key.thread.as_deref().unwrap_or("").as_bytes());
    out
}

fn data_key(room: &RoomId, key: &ReceiptKey) -> Vec<u8> {
    let mut out = keys::prefix(room.as_str());
    out.extend_from_slice(&identity(key));
    out
}

/// Starts the index keys of receipts for one recipient, after the room; it sorts after every
/// position (whose first byte stays below it for the first 2^56 positions), so ranges of
/// positions never meet those keys.
const RECIPIENT_MARK: u8 = 0xFF;

/// The index prefix of a room's receipts for everyone, or for one recipient.
fn position_prefix(room: &RoomId, recipient: Option<&UserId>) -> Vec<u8> {
    let mut out = keys::prefix(room.as_str());
    if let Some(recipient) = recipient {
        out.push(RECIPIENT_MARK);
        out.extend_from_slice(&keys::prefix(recipient.as_str()));
    }
    out
}

fn position_key(
    room: &RoomId,
    recipient: Option<&UserId>,
    position: u64,
    key: &ReceiptKey,
) -> Vec<u8> {
    let mut out = position_prefix(room, recipient);
    out.extend_from_slice(&keys::u64_be(position));
    out.extend_from_slice(&identity(key));
    out
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(StorageError::Corrupt(format!("receipts: {what}")))
}

/// Parses the identity part of a key (type, user, thread).
fn parse_identity(raw: &[u8]) -> Result<ReceiptKey> {
    let mut parts = raw.split(|b| *b == keys::SEP);
    let mut next = || {
        parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .ok_or_else(|| corrupt("bad key"))
    };
    let kind = ReceiptKind::parse(next()?).ok_or_else(|| corrupt("unknown type"))?;
    let user = OwnedUserId::try_from(next()?).map_err(corrupt)?;
    let thread = match next()? {
        "" => None,
        thread => Some(thread.to_owned()),
    };
    Ok(ReceiptKey { kind, user, thread })
}

impl Receipts {
    pub fn new(store: &Store) -> Result<Self> {
        let start = stream::current(store)?;
        Ok(Self {
            data: store.tree(trees::ROOMID_TYPE_USERID_THREAD_RECEIPT)?,
            by_position: store.tree(trees::ROOMID_STREAMPOS_RECEIPT)?,
            store_meta: store.tree(trees::META)?,
            store: store.clone(),
            changes: Mutex::new(EphemeralChanges::new(start)),
        })
    }

    /// The receipt of `key` in `room`, if any.
    pub fn get(&self, room: &RoomId, key: &ReceiptKey) -> Result<Option<Receipt>> {
        match self.data.get(data_key(room, key))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The user's read receipts (`m.read` and `m.read.private`, every thread) in `room`.
    pub fn read_receipts(
        &self,
        room: &RoomId,
        user: &UserId,
    ) -> Result<Vec<(ReceiptKey, Receipt)>> {
        let mut out = Vec::new();
        for kind in [ReceiptKind::Read, ReceiptKind::ReadPrivate] {
            let mut prefix = keys::prefix(room.as_str());
            prefix.extend_from_slice(&keys::pair(kind.as_str(), user.as_str()));
            prefix.push(keys::SEP);
            let room_prefix = keys::prefix(room.as_str()).len();
            for item in self.data.scan_prefix(&prefix) {
                let (key, value) = item?;
                out.push((
                    parse_identity(&key[room_prefix..])?,
                    serde_json::from_slice(&value)?,
                ));
            }
        }
        Ok(out)
    }

    /// The receipts of `room` written in `(since, upto]` for everyone or for `viewer`, or all
    /// of them when `since` is `None`. Each key appears once, with its latest receipt.
    pub fn changed_since(
        &self,
        room: &RoomId,
        viewer: &UserId,
        since: Option<u64>,
        upto: u64,
    ) -> Result<Vec<(ReceiptKey, Receipt)>> {
        let prefix = keys::prefix(room.as_str());
        let mut out = Vec::new();
        let Some(since) = since else {
            for item in self.data.scan_prefix(&prefix) {
                let (key, value) = item?;
                out.push((
                    parse_identity(&key[prefix.len()..])?,
                    serde_json::from_slice(&value)?,
                ));
            }
            return Ok(out);
        };
        let (Some(start), Some(end)) = (since.checked_add(1), upto.checked_add(1)) else {
            return Ok(out);
        };
        if start >= end {
            return Ok(out);
        }
        // A receipt rewritten while this reads may show up twice; it is returned once.
        let mut seen = HashSet::new();
        for recipient in [None, Some(viewer)] {
            let prefix = position_prefix(room, recipient);
            let mut from = prefix.clone();
            from.extend_from_slice(&keys::u64_be(start));
            let mut to = prefix.clone();
            to.extend_from_slice(&keys::u64_be(end));
            for item in self.by_position.range(&from, &to) {
                let (key, _) = item?;
                let rest = key
                    .get(prefix.len() + 8..)
                    .ok_or_else(|| corrupt("short index key"))?;
                let receipt_key = parse_identity(rest)?;
                if !seen.insert(receipt_key.clone()) {
                    continue;
                }
                if let Some(receipt) = self.get(room, &receipt_key)? {
                    out.push((receipt_key, receipt));
                }
            }
        }
        Ok(out)
    }

    /// The rooms with receipt changes that concern `user` after `since`, if still known.
    pub fn rooms_changed_since(&self, since: u64, user: &UserId) -> Option<HashSet<OwnedRoomId>> {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since(since, user)
    }

    /// Writes the receipts that move forwards (their event is newer than the current receipt
    /// of the same key) in one transaction at one new stream position. Returns the rooms
    /// changed and for whom; nothing is written (and no position taken) when none moves.
    pub fn write(&self, receipts: &[NewReceipt]) -> Result<Vec<(OwnedRoomId, Audience)>> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let ts = now_ms();
        let trees = [&self.data, &self.by_position, &self.store_meta];
        let written: RefCell<Vec<(OwnedRoomId, Audience)>> = RefCell::new(Vec::new());
        self.store.sequencer().commit(
            || -> Result<((), u64)> {
                let outcome = self.store.transact(&trees, |t| {
                    let mut position = None;
                    let mut changed = Vec::new();
                    for new in receipts {
                        let key = ReceiptKey {
                            kind: new.kind,
                            user: new.user.clone(),
                            thread: new.thread.clone(),
                        };
                        let stored_key = data_key(&new.room_id, &key);
                        let old = match t[0].get(&stored_key)? {
                            Some(bytes) => Some(
                                serde_json::from_slice::<Receipt>(&bytes)
                                    .map_err(|e| abort(Error::from(e)))?,
                            ),
                            None => None,
                        };
                        if old.as_ref().is_some_and(|o| o.event_pos >= new.event_pos) {
                            continue;
                        }
                        let position = match position {
                            Some(p) => p,
                            None => *position.insert(stream::next(&t[2])?),
                        };
                        if let Some(old) = &old {
                            t[1].delete(position_key(
                                &new.room_id,
                                old.recipient.as_deref(),
                                old.position,
                                &key,
                            ))?;
                        }
                        let receipt = Receipt {
                            event_id: new.event_id.clone(),
                            ts,
                            position,
                            event_pos: new.event_pos,
                            recipient: new.recipient.clone(),
                        };
                        let bytes =
                            serde_json::to_vec(&receipt).map_err(|e| abort(Error::internal(e)))?;
                        t[0].put(&stored_key, bytes)?;
                        t[1].put(
                            position_key(&new.room_id, new.recipient.as_deref(), position, &key),
                            Vec::new(),
                        )?;
                        let woken = match &new.recipient {
                            Some(user) => Audience::Only(user.clone()),
                            None => new.kind.audience(&new.user),
                        };
                        changed.push((new.room_id.clone(), woken));
                    }
                    Ok(position.map(|p| (p, changed)))
                })?;
                Ok(match outcome {
                    Some((position, changed)) => {
                        *written.borrow_mut() = changed;
                        ((), position)
                    }
                    // Unchanged: report a position already committed, so `upto` stays.
                    None => ((), self.store.sequencer().upto()),
                })
            },
            |position| {
                let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
                for (room, audience) in written.borrow().iter() {
                    changes.record(position, room, audience.clone());
                }
            },
        )?;
        Ok(written.into_inner())
    }
}

/// The thread root an event's content names with an `m.thread` relation.
pub fn thread_root(content: &Value) -> Option<&str> {
    let relation = content.get("m.relates_to")?;
    if relation.get("rel_type")?.as_str()? != "m.thread" {
        return None;
    }
    relation.get("event_id")?.as_str()
}

/// Checks a receipt's `thread_id` against its event: `main` for an event outside threads, a
/// thread root's event ID for the root or an event in that thread.
fn check_thread(pdu: &Pdu, thread: Option<&str>) -> Result<Option<String>> {
    let Some(thread) = thread else {
        return Ok(None);
    };
    let content: Value = serde_json::from_str(pdu.content().get())?;
    let in_thread = thread_root(&content);
    match thread {
        "" => Err(Error::InvalidParam(
            "thread_id must be a non-empty string".into(),
        )),
        MAIN_THREAD if in_thread.is_some() => Err(Error::InvalidParam(
            "the event is in a thread, not in the main timeline".into(),
        )),
        MAIN_THREAD => Ok(Some(MAIN_THREAD.into())),
        root => {
            EventId::parse(root).map_err(|e| {
                Error::InvalidParam(format!("thread_id must be main or an event ID: {e}"))
            })?;
            if pdu.event_id().as_str() == root || in_thread == Some(root) {
                Ok(Some(root.to_owned()))
            } else {
                Err(Error::InvalidParam(
                    "the event is not in the thread thread_id names".into(),
                ))
            }
        }
    }
}

impl Services {
    /// `POST /rooms/{roomId}/receipt/{receiptType}/{eventId}`: `m.read` and `m.read.private`
    /// (optionally threaded), or `m.fully_read` (the read marker, never threaded).
    pub async fn send_receipt(
        &self,
        user: &UserId,
        room_id: &RoomId,
        receipt_type: &str,
        event_id: &EventId,
        thread: Option<&str>,
    ) -> Result<()> {
        if receipt_type == FULLY_READ {
            if thread.is_some() {
                return Err(Error::InvalidParam(
                    "thread_id does not apply to m.fully_read".into(),
                ));
            }
            let markers = ReadMarkers {
                fully_read: Some(event_id),
                ..Default::default()
            };
            return self.set_read_markers(user, room_id, markers).await;
        }
        let kind = match ReceiptKind::parse(receipt_type) {
            Some(kind @ (ReceiptKind::Read | ReceiptKind::ReadPrivate)) => kind,
            _ => {
                return Err(Error::InvalidParam(format!(
                    "unsupported receipt type {receipt_type}"
                )));
            }
        };
        let reader = self.receipt_reader(room_id, user)?;
        let receipt = self.new_receipt(&reader, room_id, kind, event_id, thread)?;
        let written = self.receipts.write(std::slice::from_ref(&receipt))?;
        self.federate_receipts(std::slice::from_ref(&receipt), &written);
        self.announce_receipts(&written).await
    }

    /// `POST /rooms/{roomId}/read_markers`: moves the fully read marker (room account data
    /// `m.fully_read`, forwards only) and the read receipts given. Every event is checked
    /// before anything is written.
    pub async fn set_read_markers(
        &self,
        user: &UserId,
        room_id: &RoomId,
        markers: ReadMarkers<'_>,
    ) -> Result<()> {
        let reader = self.receipt_reader(room_id, user)?;
        let fully_read = match markers.fully_read {
            Some(event_id) => Some(self.receipt_target(&reader, room_id, event_id)?),
            None => None,
        };
        let mut receipts = Vec::new();
        for (kind, event_id) in [
            (ReceiptKind::Read, markers.read),
            (ReceiptKind::ReadPrivate, markers.read_private),
        ] {
            if let Some(event_id) = event_id {
                receipts.push(self.new_receipt(&reader, room_id, kind, event_id, None)?);
            }
        }
        let written = self.receipts.write(&receipts)?;
        self.federate_receipts(&receipts, &written);
        if let Some((pdu, meta)) = fully_read
            && self.fully_read_position(user, room_id)? < Some(meta.stream_pos)
        {
            self.account_data
                .set(
                    user,
                    Some(room_id),
                    FULLY_READ,
                    json!({ "event_id": pdu.event_id() }),
                )
                .await?;
        }
        self.announce_receipts(&written).await
    }

    /// The stream position of the event the user's fully read marker points at.
    fn fully_read_position(&self, user: &UserId, room_id: &RoomId) -> Result<Option<u64>> {
        let current = self.account_data.get(user, Some(room_id), FULLY_READ)?;
        let Some(event_id) = current
            .as_ref()
            .and_then(|c| c.get("event_id"))
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok())
        else {
            return Ok(None);
        };
        Ok(self.rooms.event_meta(&event_id)?.map(|m| m.stream_pos))
    }

    /// The reader of a room the user must be joined to (404 for an unknown room, 403 when not
    /// joined).
    fn receipt_reader(&self, room_id: &RoomId, user: &UserId) -> Result<Reader> {
        if self.rooms.info(room_id)?.is_none() {
            return Err(Error::NotFound("no such room".into()));
        }
        let reader = self.rooms.reader(room_id, user)?;
        if reader.membership.as_deref() != Some("join") {
            return Err(Error::Forbidden("you are not joined to this room".into()));
        }
        Ok(reader)
    }

    /// An event of the room the reader may see, or 404.
    fn receipt_target(
        &self,
        reader: &Reader,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(std::sync::Arc<Pdu>, super::rooms::EventMeta)> {
        let not_found = || Error::NotFound("no such event".into());
        let meta = self.rooms.event_meta(event_id)?.ok_or_else(not_found)?;
        let pdu = self.rooms.pdu(event_id)?.ok_or_else(not_found)?;
        if meta.room_id != room_id || !self.rooms.is_visible(reader, &pdu, &meta)? {
            return Err(not_found());
        }
        Ok((pdu, meta))
    }

    fn new_receipt(
        &self,
        reader: &Reader,
        room_id: &RoomId,
        kind: ReceiptKind,
        event_id: &EventId,
        thread: Option<&str>,
    ) -> Result<NewReceipt> {
        let (pdu, meta) = self.receipt_target(reader, room_id, event_id)?;
        Ok(NewReceipt {
            room_id: room_id.to_owned(),
            kind,
            user: reader.user_id.clone(),
            thread: check_thread(&pdu, thread)?,
            event_id: event_id.to_owned(),
            event_pos: meta.stream_pos,
            recipient: None,
        })
    }

    /// Waits until written receipts are durable, then wakes the users they concern (the
    /// room's joined members, narrowed by each receipt's audience).
    pub(crate) async fn announce_receipts(
        &self,
        written: &[(OwnedRoomId, Audience)],
    ) -> Result<()> {
        if written.is_empty() {
            return Ok(());
        }
        self.store.durable().await?;
        let position = self.store.sequencer().upto();
        for (room_id, audience) in written {
            let users: Vec<OwnedUserId> = match audience {
                Audience::Only(owner) => vec![owner.clone()],
                _ => self
                    .rooms
                    .members(room_id, Some("join"))?
                    .into_iter()
                    .filter_map(|(u, _)| OwnedUserId::try_from(u).ok())
                    .filter(|u| audience.includes(u))
                    .collect(),
            };
            self.notifier
                .notify(users.iter().map(|u| u.as_ref()), position);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_back() {
        let key = ReceiptKey {
            kind: ReceiptKind::ReadPrivate,
            user: ruma::user_id!("@a:x").to_owned(),
            thread: Some("$root".into()),
        };
        assert_eq!(parse_identity(&identity(&key)).unwrap(), key);
        let unthreaded = ReceiptKey {
            thread: None,
            ..key.clone()
        };
        assert_eq!(parse_identity(&identity(&unthreaded)).unwrap(), unthreaded);
        let room = ruma::room_id!("!r:x");
        assert!(position_key(room, None, 256, &key) > position_key(room, None, 255, &key));
        let bob = ruma::user_id!("@bob:x");
        assert!(
            position_key(room, Some(bob), 0, &key) > position_key(room, None, u64::MAX >> 8, &key)
        );
    }

    #[test]
    fn thread_roots() {
        let threaded = json!({ "m.relates_to": { "rel_type": "m.thread", "event_id": "$r" } });
        assert_eq!(thread_root(&threaded), Some("$r"));
        let reply = json!({ "m.relates_to": { "m.in_reply_to": { "event_id": "$r" } } });
        assert_eq!(thread_root(&reply), None);
        assert_eq!(thread_root(&json!({ "body": "x" })), None);
    }

    #[test]
    fn receipt_kinds() {
        for kind in ReceiptKind::ALL {
            assert_eq!(ReceiptKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(ReceiptKind::parse("m.fully_read"), None);
        let alice = ruma::user_id!("@alice:x");
        let bob = ruma::user_id!("@bob:x");
        assert!(ReceiptKind::ReadPrivate.audience(alice).includes(alice));
        assert!(!ReceiptKind::ReadPrivate.audience(alice).includes(bob));
        assert!(!ReceiptKind::Delivered.audience(alice).includes(alice));
        assert!(ReceiptKind::Delivered.audience(alice).includes(bob));
    }
}
