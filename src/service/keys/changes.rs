//! Device-list changes: which users' devices or keys changed between two stream positions, and
//! who must hear of it (`device_lists` in `/sync`, `GET /keys/changes`).
//!
//! A change of a user's keys takes a stream position; the index `changes` maps positions to users
//! (one entry per user: a newer change moves it). A client must also download the keys of users
//! it newly shares a room with, and may stop tracking those it no longer shares one with: those
//! come from the membership events in the client's rooms.

use std::collections::{BTreeSet, HashSet};

use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, UserId};
use serde_json::Value;

use super::Keys;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::storage::{Tree, TxError, TxTree, keys, stream};

/// The most membership events one device-list computation reads per room.
const MAX_MEMBER_EVENTS: usize = 10_000;

/// Records a change of `user`'s keys at the next stream position, inside a transaction over the
/// `changes`, `last_change` and meta trees. Returns the position.
pub fn record<E>(
    user: &UserId,
    changes: &TxTree<'_>,
    last_change: &TxTree<'_>,
    meta: &TxTree<'_>,
) -> std::result::Result<u64, TxError<E>> {
    let position = stream::next(meta)?;
    if let Some(old) = last_change.get(user.as_bytes())?
        && let Some(old) = keys::read_u64_be(&old)
    {
        changes.delete(keys::u64_be(old))?;
    }
    changes.put(keys::u64_be(position), user.as_bytes().to_vec())?;
    last_change.put(user.as_bytes(), keys::u64_be(position).to_vec())?;
    Ok(position)
}

impl Keys {
    /// Records a change of `user`'s keys whose data another service keeps (the federation cache
    /// of a remote user's devices): `write` runs over `tree` in the same transaction, so that
    /// what changed and the change itself are stored together. Returns the change's position.
    pub fn record_change_with(
        &self,
        user: &UserId,
        tree: &Tree,
        write: impl Fn(&TxTree<'_>) -> std::result::Result<(), TxError<Error>>,
    ) -> Result<u64> {
        let trees = [tree, &self.changes, &self.last_change, &self.store_meta];
        self.store.sequencer().commit(
            || -> Result<(u64, u64)> {
                let position = self.store.transact(&trees, |t| {
                    write(&t[0])?;
                    record::<Error>(user, &t[1], &t[2], &t[3])
                })?;
                Ok((position, position))
            },
            |_| {},
        )
    }

    /// The users whose keys changed after `after`, up to and including `upto`.
    pub fn changed_between(&self, after: u64, upto: u64) -> Result<HashSet<OwnedUserId>> {
        let mut out = HashSet::new();
        if upto <= after {
            return Ok(out);
        }
        let end = keys::u64_be(upto.saturating_add(1));
        for item in self.changes.range(&keys::u64_be(after + 1), &end) {
            let (_, user) = item?;
            if let Ok(user) = OwnedUserId::try_from(String::from_utf8_lossy(&user).as_ref()) {
                out.insert(user);
            }
        }
        Ok(out)
    }
}

/// `device_lists` of a sync or `/keys/changes`.
#[derive(Debug, Default)]
pub struct DeviceLists {
    pub changed: BTreeSet<OwnedUserId>,
    pub left: BTreeSet<OwnedUserId>,
}

impl Services {
    /// Wakes everyone who must learn that `user`'s keys changed: the user's own devices and the
    /// members of the rooms they are in.
    pub fn announce_key_change(&self, user: &UserId) -> Result<()> {
        let position = self.store.sequencer().upto();
        let mut audience: HashSet<OwnedUserId> = HashSet::new();
        audience.insert(user.to_owned());
        for room in self.rooms.rooms_of(user, "join")? {
            for (member, _) in self.rooms.members(&room, Some("join"))? {
                if let Ok(member) = OwnedUserId::try_from(member) {
                    audience.insert(member);
                }
            }
        }
        self.notifier.notify_members(&audience, position);
        Ok(())
    }

    /// The device-list changes `user` must hear of between two stream positions: users sharing a
    /// room with them whose keys changed (themselves included), users they newly share a room
    /// with, and users they no longer share any room with.
    pub fn device_list_changes(&self, user: &UserId, since: u64, upto: u64) -> Result<DeviceLists> {
        let mut lists = DeviceLists::default();
        if upto <= since {
            return Ok(lists);
        }
        let my_rooms: HashSet<_> = self.rooms.rooms_of(user, "join")?.into_iter().collect();
        let shares_room = |other: &UserId| -> Result<bool> {
            Ok(self
                .rooms
                .rooms_of(other, "join")?
                .iter()
                .any(|room| my_rooms.contains(room)))
        };
        for changed in self.keys.changed_between(since, upto)? {
            if changed == user || shares_room(&changed)? {
                lists.changed.insert(changed);
            }
        }
        // Membership changes in the rooms the user is or was in since `since`.
        let changed_rooms = self.rooms.rooms_changed_since(since);
        let mut rooms: Vec<_> = my_rooms.iter().cloned().collect();
        for membership in ["leave", "ban"] {
            rooms.extend(self.rooms.rooms_of(user, membership)?);
        }
        for room in rooms {
            if changed_rooms.as_ref().is_some_and(|c| !c.contains(&room)) {
                continue;
            }
            // In a room the user left, nothing after their leave concerns them.
            let end = if my_rooms.contains(&room) {
                upto
            } else {
                match self
                    .rooms
                    .state_event(
                        &room,
                        &ruma::events::StateEventType::RoomMember,
                        user.as_str(),
                    )?
                    .and_then(|pdu| self.rooms.event_meta(pdu.event_id()).ok().flatten())
                {
                    Some(meta) => meta.stream_pos.min(upto),
                    None => continue,
                }
            };
            let events = self.rooms.timeline_range(
                &room,
                since,
                end.saturating_add(1),
                false,
                MAX_MEMBER_EVENTS,
            )?;
            if events.len() == MAX_MEMBER_EVENTS && my_rooms.contains(&room) {
                // Too much happened to look at each event: every member may be new.
                for (member, _) in self.rooms.members(&room, Some("join"))? {
                    if let Ok(member) = OwnedUserId::try_from(member) {
                        lists.changed.insert(member);
                    }
                }
            }
            for (_, event_id) in events {
                let (Some(pdu), Some(meta)) = (
                    self.rooms.pdu(&event_id)?,
                    self.rooms.event_meta(&event_id)?,
                ) else {
                    continue;
                };
                if *pdu.kind() != TimelineEventType::RoomMember {
                    continue;
                }
                let Some(target) = pdu.state_key().and_then(|k| OwnedUserId::try_from(k).ok())
                else {
                    continue;
                };
                let membership = serde_json::from_str::<Value>(pdu.content().get())?
                    .get("membership")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match membership.as_deref() {
                    // A join after a join is a profile change, not a new member.
                    Some("join")
                        if self.rooms.membership_at(&meta, &target)?.as_deref() == Some("join") => {
                    }
                    Some("join") if target == user => {
                        // The user joined: everyone in the room is new to them.
                        for (member, m) in self.rooms.members(&room, Some("join"))? {
                            if m == "join"
                                && let Ok(member) = OwnedUserId::try_from(member)
                            {
                                lists.changed.insert(member);
                            }
                        }
                    }
                    Some("join") => {
                        lists.changed.insert(target);
                    }
                    Some("leave" | "ban") if target == user => {
                        for (member, _) in self.rooms.members(&room, Some("join"))? {
                            if let Ok(member) = OwnedUserId::try_from(member)
                                && member != user
                                && !shares_room(&member)?
                            {
                                lists.left.insert(member);
                            }
                        }
                    }
                    Some("leave" | "ban") => {
                        let still_shared = shares_room(&target)?;
                        lists.left.extend((!still_shared).then_some(target));
                    }
                    _ => {}
                }
            }
        }
        // Whoever is still shared is not "left", and whoever left is not "changed".
        let left: Vec<_> = lists.left.iter().cloned().collect();
        for other in left {
            if shares_room(&other)? {
                lists.left.remove(&other);
            } else {
                lists.changed.remove(&other);
            }
        }
        Ok(lists)
    }
}
