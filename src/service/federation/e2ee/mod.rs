//! End-to-end encryption across servers: other servers' users' device keys, one-time keys,
//! cross-signing keys and to-device messages.
//!
//! - `local_keys`: a local user's keys as shown to a viewer (client `/keys/query` and the
//!   federation `/user/keys/query` share it).
//! - `served`: what we answer other servers (`/user/devices`, `/user/keys/query`,
//!   `/user/keys/claim`), for our users only.
//! - `cache`: the cached device lists of remote users (one record per user, with the stream ID of
//!   the last `m.device_list_update` it reflects), valid while one of our users shares a room
//!   with the remote user, because only then does their server send us updates.
//! - `resync`: fetching a remote user's whole device list (`/user/devices`) into the cache.
//! - `remote_query`, `remote_claim`: client `/keys/query` and `/keys/claim` for users of other
//!   servers, one request per server, within the client's `timeout`.
//! - `device_list_out`, `device_list_in`: `m.device_list_update` and `m.signing_key_update`,
//!   both ways.
//! - `to_device_out`, `to_device_in`: `m.direct_to_device`, both ways.
//! - `validate`: the checks on keys other servers send (nothing unsigned or mislabelled is kept).

pub mod cache;
pub mod device_list_in;
pub mod device_list_out;
pub mod local_keys;
pub mod remote_claim;
pub mod remote_query;
pub mod resync;
pub mod served;
pub mod to_device_in;
pub mod to_device_out;
pub mod validate;

use std::collections::BTreeSet;

use ruma::{OwnedServerName, OwnedUserId, UserId};

use super::receiver::locks::KeyedLocks;
use crate::error::Result;
use crate::service::Services;
use crate::storage::{Store, Tree, trees};

/// The state of E2EE across servers.
pub struct E2ee {
    /// Remote user → their cached device list ([`cache::RemoteDeviceList`]).
    remote: Tree,
    /// Local user → the stream ID of their latest `m.device_list_update` (u64 BE).
    streams: Tree,
    /// One writer per user at a time: of a remote user's cache entry (an update must not be
    /// overwritten by an older resync), or of a local user's update stream (stream IDs go out
    /// in the order they are given, and `/user/devices` reads a stream ID that matches the
    /// devices it lists).
    locks: KeyedLocks<OwnedUserId>,
}

impl E2ee {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            remote: store.tree(trees::E2EE_USERID_REMOTEDEVICELIST)?,
            streams: store.tree(trees::E2EE_USERID_DEVICELISTSTREAM)?,
            locks: KeyedLocks::default(),
        })
    }
}

impl Services {
    /// The other servers with a joined member in a room where `user` is joined: those that
    /// must hear of the user's device changes.
    pub fn servers_sharing_a_room_with(&self, user: &UserId) -> Result<Vec<OwnedServerName>> {
        let mut servers = BTreeSet::new();
        for room in self.rooms.rooms_of(user, "join")? {
            servers.extend(self.rooms.servers_in_room(&room)?);
        }
        servers.remove(self.federation.server_name());
        Ok(servers.into_iter().collect())
    }

    /// Whether one of our users shares a room with `user` (a user of another server): only
    /// then does their server send us their device-list updates, and only then is a cached
    /// device list kept current.
    pub fn shares_a_room_with_us(&self, user: &UserId) -> Result<bool> {
        let us = self.federation.server_name();
        for room in self.rooms.rooms_of(user, "join")? {
            if self.rooms.servers_in_room(&room)?.contains(us) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
