//! Client config ("account data"): JSON objects a user stores per event type, globally or for one
//! room, synced to all their devices. Room tags are the room account data type `m.tag`, and the
//! ignored users are the global type `m.ignored_user_list`.
//!
//! Every write takes the next global stream position in the same transaction as the data, so an
//! incremental sync reads "what changed after position P" from a per-user index ordered by
//! position. Rewriting a type moves its index entry, so each changed type is read once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::{Error, Result};
use crate::service::notifier::Notifier;
use crate::storage::{StorageError, Store, Tree, abort, keys, stream, trees};

/// The largest content of one type, serialized.
pub const MAX_CONTENT_BYTES: usize = 65_536;
/// The longest event type accepted.
pub const MAX_TYPE_BYTES: usize = 255;
/// The longest tag name (the specification's limit).
pub const MAX_TAG_BYTES: usize = 255;
/// The room account data type that holds the room's tags.
pub const TAG_TYPE: &str = "m.tag";
/// The global account data type that lists the ignored users.
pub const IGNORED_USERS_TYPE: &str = "m.ignored_user_list";

/// The account data changed after a stream position, as events (`{"type", "content"}`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AccountDataChanges {
    /// Global account data.
    pub global: Vec<Value>,
    /// Room account data, per room.
    pub rooms: BTreeMap<OwnedRoomId, Vec<Value>>,
}

/// What one type's entry holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    /// The stream position of the latest write.
    position: u64,
    content: Value,
}

/// Account data of every user, with the index incremental syncs read.
pub struct AccountData {
    store: Store,
    notifier: Arc<Notifier>,
    /// user, room or empty, type → [`Stored`].
    data: Tree,
    /// user, stream position (u64 BE) → `[room or "", type]`: the latest write of each type.
    by_position: Tree,
    store_meta: Tree,
}

/// `user SEP room-or-empty SEP type`.
fn data_key(user: &UserId, room: Option<&RoomId>, kind: &str) -> Vec<u8> {
    let mut key = keys::pair(user.as_str(), room.map_or("", |r| r.as_str()));
    key.push(keys::SEP);
    key.extend_from_slice(kind.as_bytes());
    key
}

/// Splits the part of a data key after the user's prefix into `(room or "", type)`.
fn split_data_key(rest: &[u8]) -> Option<(&str, &str)> {
    let at = rest.iter().position(|b| *b == keys::SEP)?;
    let room = std::str::from_utf8(&rest[..at]).ok()?;
    let kind = std::str::from_utf8(&rest[at + 1..]).ok()?;
    Some((room, kind))
}

/// `user SEP position`.
fn position_key(user: &UserId, position: u64) -> Vec<u8> {
    let mut key = keys::prefix(user.as_str());
    key.extend_from_slice(&keys::u64_be(position));
    key
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Storage(StorageError::Corrupt(format!("account data: {what}")))
}

/// The event a sync returns for one type.
fn event(kind: &str, content: Value) -> Value {
    json!({ "type": kind, "content": content })
}

impl AccountData {
    pub fn new(store: &Store, notifier: Arc<Notifier>) -> Result<Self> {
        Ok(Self {
            data: store.tree(trees::USERID_ROOMID_TYPE_ACCOUNTDATA)?,
            by_position: store.tree(trees::USERID_STREAMPOS_ACCOUNTDATA)?,
            store_meta: store.tree(trees::META)?,
            store: store.clone(),
            notifier,
        })
    }

    /// Stores `content` as the user's account data of type `kind` (for `room`, or global). The
    /// content must be a JSON object of at most [`MAX_CONTENT_BYTES`]; `m.tag` and
    /// `m.ignored_user_list` must also have their specified shape (`{}` clears any type).
    pub async fn set(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: Value,
    ) -> Result<()> {
        validate(room, kind, &content)?;
        self.update(user, room, kind, |_| Ok(Some(content.clone())))
            .await
    }

    /// The user's account data of type `kind` (for `room`, or global), if set.
    pub fn get(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Option<Value>> {
        match self.data.get(data_key(user, room, kind))? {
            Some(bytes) => Ok(Some(serde_json::from_slice::<Stored>(&bytes)?.content)),
            None => Ok(None),
        }
    }

    /// The account data written after stream position `since` (each changed type once, with
    /// its latest content), or all of it when `since` is `None` (an initial sync).
    pub fn changes_since(&self, user: &UserId, since: Option<u64>) -> Result<AccountDataChanges> {
        let mut changes = AccountDataChanges::default();
        let mut add = |room: &str, kind: &str, content: Value| -> Result<()> {
            if room.is_empty() {
                changes.global.push(event(kind, content));
            } else {
                let room = OwnedRoomId::try_from(room).map_err(corrupt)?;
                changes
                    .rooms
                    .entry(room)
                    .or_default()
                    .push(event(kind, content));
            }
            Ok(())
        };
        let prefix = keys::prefix(user.as_str());
        let Some(since) = since else {
            for item in self.data.scan_prefix(&prefix) {
                let (key, value) = item?;
                let (room, kind) =
                    split_data_key(&key[prefix.len()..]).ok_or_else(|| corrupt("bad key"))?;
                add(
                    room,
                    kind,
                    serde_json::from_slice::<Stored>(&value)?.content,
                )?;
            }
            return Ok(changes);
        };
        let Some(start) = since.checked_add(1) else {
            return Ok(changes);
        };
        // Every index key of the user is the prefix and 8 bytes, so it sorts below 9 × 0xFF.
        let mut end = prefix.clone();
        end.extend_from_slice(&[keys::SEP; 9]);
        // The index is read while writes go on: a type rewritten meanwhile may show up twice,
        // and is returned once, with its latest content.
        let mut seen = HashSet::new();
        for item in self.by_position.range(&position_key(user, start), &end) {
            let (_, value) = item?;
            let (room, kind): (String, String) = serde_json::from_slice(&value)?;
            if !seen.insert((room.clone(), kind.clone())) {
                continue;
            }
            let room_id = match room.as_str() {
                "" => None,
                r => Some(<&RoomId>::try_from(r).map_err(corrupt)?),
            };
            if let Some(content) = self.get(user, room_id, &kind)? {
                add(&room, &kind, content)?;
            }
        }
        Ok(changes)
    }

    /// The users `user` ignores (`m.ignored_user_list`).
    pub fn ignored_users(&self, user: &UserId) -> Result<HashSet<OwnedUserId>> {
        let Some(content) = self.get(user, None, IGNORED_USERS_TYPE)? else {
            return Ok(HashSet::new());
        };
        Ok(content
            .get("ignored_users")
            .and_then(Value::as_object)
            .map(|users| {
                users
                    .keys()
                    .filter_map(|u| OwnedUserId::try_from(u.as_str()).ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The user's tags on `room` (the `tags` of its `m.tag` account data): tag → `{order?}`.
    pub fn tags(&self, user: &UserId, room: &RoomId) -> Result<Map<String, Value>> {
        Ok(self
            .get(user, Some(room), TAG_TYPE)?
            .as_ref()
            .and_then(|content| content.get("tags"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default())
    }

    /// Adds (or replaces) the tag `tag` on `room`; `info` is `{order?}` with `order` in 0..=1.
    pub async fn set_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: Value,
    ) -> Result<()> {
        validate_tag(tag, &info)?;
        self.update(user, Some(room), TAG_TYPE, |old| {
            let mut content = old.cloned().unwrap_or_else(|| json!({}));
            let tags = tags_of(&mut content)?;
            tags.insert(tag.to_owned(), info.clone());
            validate(Some(room), TAG_TYPE, &content)?;
            Ok(Some(content))
        })
        .await
    }

    /// Removes the tag `tag` from `room` (nothing changes when it is not there).
    pub async fn remove_tag(&self, user: &UserId, room: &RoomId, tag: &str) -> Result<()> {
        check_tag_name(tag)?;
        self.update(user, Some(room), TAG_TYPE, |old| {
            let Some(mut content) = old.cloned() else {
                return Ok(None);
            };
            Ok(tags_of(&mut content)?.remove(tag).map(|_| content))
        })
        .await
    }

    /// Rewrites a global type the server manages (such as `m.push_rules`), bypassing the
    /// checks of client writes.
    pub(crate) async fn update_server_managed(
        &self,
        user: &UserId,
        kind: &str,
        change: impl Fn(Option<&Value>) -> Result<Option<Value>>,
    ) -> Result<()> {
        self.update(user, None, kind, change).await
    }

    /// Rewrites one type atomically: `change` gets the current content and returns the new one
    /// (`None`: leave it as it is). A write takes the next stream position, moves the type's
    /// index entry there, waits for durability and wakes the user's waiting requests.
    async fn update(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        change: impl Fn(Option<&Value>) -> Result<Option<Value>>,
    ) -> Result<()> {
        let key = data_key(user, room, kind);
        let index_entry = serde_json::to_vec(&(room.map_or("", |r| r.as_str()), kind))?;
        let trees = [&self.data, &self.by_position, &self.store_meta];
        let written = self.store.sequencer().commit(
            || -> Result<(bool, u64)> {
                let position = self.store.transact(&trees, |t| {
                    let old = match t[0].get(&key)? {
                        Some(bytes) => Some(
                            serde_json::from_slice::<Stored>(&bytes)
                                .map_err(|e| abort(Error::from(e)))?,
                        ),
                        None => None,
                    };
                    let Some(content) = change(old.as_ref().map(|s| &s.content)).map_err(abort)?
                    else {
                        return Ok(None);
                    };
                    let position = stream::next(&t[2])?;
                    if let Some(old) = &old {
                        t[1].delete(position_key(user, old.position))?;
                    }
                    let stored = serde_json::to_vec(&Stored { position, content })
                        .map_err(|e| abort(Error::internal(e)))?;
                    t[0].put(&key, stored)?;
                    t[1].put(position_key(user, position), index_entry.clone())?;
                    Ok(Some(position))
                })?;
                // Unchanged: report a position already committed, so `upto` stays as it is.
                Ok(match position {
                    Some(position) => (true, position),
                    None => (false, self.store.sequencer().upto()),
                })
            },
            |_| {},
        )?;
        if written {
            self.store.durable().await?;
            self.notifier.notify([user], self.store.sequencer().upto());
        }
        Ok(())
    }
}

/// The `tags` object of `m.tag` content, created if missing.
fn tags_of(content: &mut Value) -> Result<&mut Map<String, Value>> {
    content
        .as_object_mut()
        .ok_or_else(|| Error::BadJson("m.tag content must be an object".into()))?
        .entry("tags")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::BadJson("tags must be an object".into()))
}

/// Checks the type and the content of one write.
fn validate(room: Option<&RoomId>, kind: &str, content: &Value) -> Result<()> {
    if kind.is_empty() || kind.len() > MAX_TYPE_BYTES {
        return Err(Error::InvalidParam(format!(
            "the type must have 1 to {MAX_TYPE_BYTES} bytes"
        )));
    }
    let Some(object) = content.as_object() else {
        return Err(Error::BadJson("the content must be a JSON object".into()));
    };
    if serde_json::to_vec(content)?.len() > MAX_CONTENT_BYTES {
        return Err(Error::TooLarge(format!(
            "account data may not exceed {MAX_CONTENT_BYTES} bytes"
        )));
    }
    match (room, kind) {
        (Some(_), TAG_TYPE) => match object.get("tags") {
            None => Ok(()),
            Some(Value::Object(tags)) => tags
                .iter()
                .try_for_each(|(tag, info)| validate_tag(tag, info)),
            Some(_) => Err(Error::BadJson("tags must be an object".into())),
        },
        (None, IGNORED_USERS_TYPE) if !object.is_empty() => match object.get("ignored_users") {
            Some(Value::Object(users)) => users.iter().try_for_each(|(user, info)| {
                UserId::parse(user).map_err(|e| {
                    Error::BadJson(format!("ignored_users: {user} is not a user ID: {e}"))
                })?;
                if info.is_object() {
                    Ok(())
                } else {
                    Err(Error::BadJson(
                        "ignored_users must map user IDs to objects".into(),
                    ))
                }
            }),
            _ => Err(Error::BadJson("ignored_users must be an object".into())),
        },
        _ => Ok(()),
    }
}

fn check_tag_name(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES {
        return Err(Error::InvalidParam(format!(
            "a tag name must have 1 to {MAX_TAG_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A tag name has 1 to [`MAX_TAG_BYTES`] bytes; its info is an object whose `order`, if given,
/// is a number in 0..=1.
fn validate_tag(tag: &str, info: &Value) -> Result<()> {
    check_tag_name(tag)?;
    let Some(info) = info.as_object() else {
        return Err(Error::BadJson(format!("the tag {tag} must be an object")));
    };
    match info.get("order") {
        None => Ok(()),
        Some(order) => match order.as_f64() {
            Some(n) if (0.0..=1.0).contains(&n) => Ok(()),
            Some(_) => Err(Error::InvalidParam(
                "order must be a number between 0 and 1".into(),
            )),
            None => Err(Error::BadJson("order must be a number".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back() {
        let user = ruma::user_id!("@a:x");
        let room = ruma::room_id!("!r:x");
        let prefix = keys::prefix(user.as_str());
        let key = data_key(user, Some(room), "m.tag");
        assert_eq!(
            split_data_key(&key[prefix.len()..]),
            Some(("!r:x", "m.tag"))
        );
        let key = data_key(user, None, "a.b");
        assert_eq!(split_data_key(&key[prefix.len()..]), Some(("", "a.b")));
        assert!(position_key(user, 256) > position_key(user, 255));
    }

    #[test]
    fn validates_known_types() {
        let room = Some(ruma::room_id!("!r:x"));
        assert!(validate(None, "x.y", &json!({ "a": 1 })).is_ok());
        assert!(matches!(
            validate(None, "x.y", &json!([1])),
            Err(Error::BadJson(_))
        ));
        assert!(matches!(
            validate(None, "", &json!({})),
            Err(Error::InvalidParam(_))
        ));
        let big = json!({ "a": "x".repeat(MAX_CONTENT_BYTES) });
        assert!(matches!(
            validate(None, "x.y", &big),
            Err(Error::TooLarge(_))
        ));
        assert!(
            validate(
                room,
                TAG_TYPE,
                &json!({ "tags": { "u.a": { "order": 0.5 } } })
            )
            .is_ok()
        );
        assert!(
            validate(
                room,
                TAG_TYPE,
                &json!({ "tags": { "u.a": { "order": 2 } } })
            )
            .is_err()
        );
        assert!(validate(room, TAG_TYPE, &json!({ "tags": [] })).is_err());
        let ignored = |users: Value| validate(None, IGNORED_USERS_TYPE, &users);
        assert!(ignored(json!({})).is_ok());
        assert!(ignored(json!({ "ignored_users": { "@b:x": {} } })).is_ok());
        assert!(ignored(json!({ "ignored_users": { "b": {} } })).is_err());
        assert!(ignored(json!({ "ignored_users": [] })).is_err());
        assert!(ignored(json!({ "other": 1 })).is_err());
    }

    #[test]
    fn tag_orders() {
        assert!(validate_tag("u.a", &json!({})).is_ok());
        assert!(validate_tag("u.a", &json!({ "order": 0 })).is_ok());
        assert!(validate_tag("u.a", &json!({ "order": 1.0 })).is_ok());
        assert!(validate_tag("u.a", &json!({ "order": -0.1 })).is_err());
        assert!(validate_tag("u.a", &json!({ "order": "0.1" })).is_err());
        assert!(validate_tag(&"t".repeat(256), &json!({})).is_err());
    }
}
