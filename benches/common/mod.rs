//! Set-up shared by the micro-benchmarks: the real services on a temporary store, and rooms built
//! through them.
//!
//! The store goes to `ROOST_BENCH_DIR` if set, else to `/dev/shm` where it exists (so that the
//! disk's flush latency does not drown the CPU cost being measured), else to the temporary
//! directory.

#![allow(dead_code)] // Each bench uses its own part.

use std::path::PathBuf;
use std::sync::Arc;

use roost::Config;
use roost::service::Services;
use roost::service::rooms::NewEvent;
use roost::service::rooms::create::{CreateRoom, Preset};
use roost::storage::Store;
use ruma::events::{StateEventType, TimelineEventType};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, json};
use tempfile::TempDir;

/// The server name of the benchmark server.
pub const SERVER: &str = "bench.test";

/// The state entries of a room `room` creates before any `initial_state`: create, the creator's
/// member event, power levels, join rules, history visibility, guest access.
pub const BASE_STATE: usize = 6;

/// The services on a fresh store; keep the directory alive as long as them.
pub struct Bench {
    pub services: Arc<Services>,
    pub runtime: tokio::runtime::Runtime,
    _dir: TempDir,
}

impl Bench {
    pub fn new() -> Self {
        let dir = match std::env::var_os("ROOST_BENCH_DIR").map(PathBuf::from) {
            Some(dir) => tempfile::tempdir_in(dir),
            None if std::path::Path::new("/dev/shm").is_dir() => tempfile::tempdir_in("/dev/shm"),
            None => tempfile::tempdir(),
        }
        .unwrap();
        let config = Config {
            server_name: SERVER.into(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let services = runtime.block_on(async {
            let store = Store::open(&config.data_dir).unwrap();
            Services::build(config, store).unwrap()
        });
        Self {
            services,
            runtime,
            _dir: dir,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A public room (default room version) by `creator` with `state_entries` entries of
    /// current state in all (at least [`BASE_STATE`]): the extra ones are custom state events
    /// with distinct state keys, sent as `initial_state` of `createRoom`.
    pub fn room_with_state(&self, creator: &UserId, state_entries: usize) -> OwnedRoomId {
        let extra = state_entries.saturating_sub(BASE_STATE);
        let initial_state = (0..extra)
            .map(|i| {
                NewEvent::state(
                    StateEventType::from("org.roost.bench.entry"),
                    format!("key-{i}"),
                    json!({ "value": i }),
                )
            })
            .collect();
        let room_id = self
            .block_on(self.services.rooms.create_room(CreateRoom {
                creator: creator.to_owned(),
                creator_profile: Map::new(),
                room_version: RoomVersionId::V12,
                preset: Preset::PublicChat,
                creation_content: Map::new(),
                power_level_content_override: Map::new(),
                initial_state,
                name: None,
                topic: None,
                invite: Vec::new(),
                remote_invite: Vec::new(),
                is_direct: false,
                alias: None,
                publish: false,
            }))
            .unwrap();
        let state = self.services.rooms.current_state(&room_id).unwrap();
        assert_eq!(state.len(), state_entries.max(BASE_STATE));
        room_id
    }

    /// Joins `count` users (`@member-<i>`) to a public room, one append each.
    pub fn join_members(&self, room_id: &RoomId, count: usize) -> Vec<OwnedUserId> {
        let members: Vec<OwnedUserId> = (0..count).map(|i| user(&format!("member-{i}"))).collect();
        self.block_on(async {
            for member in &members {
                self.services
                    .rooms
                    .append(
                        room_id,
                        member,
                        roost::service::rooms::create::member_event(member, "join", Map::new()),
                        None,
                    )
                    .await
                    .unwrap();
            }
        });
        members
    }

    /// Sends a text message.
    pub fn send_text(&self, room_id: &RoomId, sender: &UserId, body: &str) {
        self.block_on(
            self.services
                .rooms
                .append(room_id, sender, text(body), None),
        )
        .unwrap();
    }
}

/// A user of the benchmark server.
pub fn user(localpart: &str) -> OwnedUserId {
    UserId::parse(format!("@{localpart}:{SERVER}")).unwrap()
}

/// An `m.room.message` of type `m.text`.
pub fn text(body: &str) -> NewEvent {
    NewEvent::message(
        TimelineEventType::RoomMessage,
        json!({ "msgtype": "m.text", "body": body }),
    )
}
