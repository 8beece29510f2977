//! The servers with a joined member in a room at a given state snapshot, as the fan-out needs
//! them for every event: counted from the member events the first time a room is met, then
//! derived from the room's previous count by the member entries that changed, so that a message
//! costs a lookup and a state change in a large room a comparison of two state maps, not a read
//! of every member event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ruma::events::StateEventType;
use ruma::{EventId, OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde::Deserialize;

use crate::core::Pdu;
use crate::error::Result;
use crate::service::rooms::Rooms;

/// Joined members per server.
pub type Counts = BTreeMap<OwnedServerName, u32>;

/// Rooms remembered; beyond, the memory is cleared and counts are taken again as needed.
const MAX_ROOMS: usize = 10_000;
/// Snapshots remembered per room (the current one and those just before it).
const SNAPSHOTS_PER_ROOM: usize = 4;

/// The fan-out's memory of recent counts (used by its one task, so no lock).
#[derive(Default)]
pub struct RoomServers {
    by_room: HashMap<OwnedRoomId, Vec<(u64, Arc<Counts>)>>,
}

impl RoomServers {
    /// The servers of `room`'s joined members at `snapshot` (`None`: the empty state before a
    /// create event): remembered, derived from the room's latest remembered snapshot by the
    /// member entries that differ, or counted from the state.
    pub fn at(
        &mut self,
        rooms: &Rooms,
        room: &RoomId,
        snapshot: Option<u64>,
    ) -> Result<Arc<Counts>> {
        let Some(id) = snapshot else {
            return Ok(Arc::default());
        };
        if let Some(hit) = self.get(room, id) {
            return Ok(hit);
        }
        let latest = self
            .by_room
            .get(room)
            .and_then(|known| known.last())
            .cloned();
        let counts = match latest {
            Some((base, base_counts)) => derive(rooms, base, &base_counts, id)?,
            None => {
                let state = rooms.snapshots.state(id)?;
                let mut counts = Counts::new();
                for ((kind, state_key), event_id) in state.iter() {
                    if *kind == StateEventType::RoomMember {
                        let membership = membership_of(rooms, event_id)?;
                        adjust(&mut counts, state_key, None, membership.as_deref());
                    }
                }
                Arc::new(counts)
            }
        };
        self.remember(room, id, counts.clone());
        Ok(counts)
    }

    fn get(&self, room: &RoomId, snapshot: u64) -> Option<Arc<Counts>> {
        self.by_room
            .get(room)?
            .iter()
            .find(|(id, _)| *id == snapshot)
            .map(|(_, counts)| counts.clone())
    }

    fn remember(&mut self, room: &RoomId, snapshot: u64, counts: Arc<Counts>) {
        if self.by_room.len() >= MAX_ROOMS && !self.by_room.contains_key(room) {
            self.by_room.clear();
        }
        let known = self.by_room.entry(room.to_owned()).or_default();
        if known.len() >= SNAPSHOTS_PER_ROOM {
            known.remove(0);
        }
        known.push((snapshot, counts));
    }
}

/// The count at snapshot `to`, from the count `base_counts` at snapshot `base`: adjusted by the
/// member entries that differ between the two states (a comparison of two maps; only the
/// differing member events are read).
fn derive(rooms: &Rooms, base: u64, base_counts: &Arc<Counts>, to: u64) -> Result<Arc<Counts>> {
    let old_state = rooms.snapshots.state(base)?;
    let new_state = rooms.snapshots.state(to)?;
    let mut counts = (**base_counts).clone();
    let mut changed = false;
    for (key, new_id) in new_state.iter() {
        let old_id = old_state.get(key);
        if key.0 != StateEventType::RoomMember || old_id == Some(new_id) {
            continue;
        }
        let old = match old_id {
            Some(id) => membership_of(rooms, id)?,
            None => None,
        };
        let new = membership_of(rooms, new_id)?;
        adjust(&mut counts, &key.1, old.as_deref(), new.as_deref());
        changed = true;
    }
    for (key, old_id) in old_state.iter() {
        if key.0 == StateEventType::RoomMember && !new_state.contains_key(key) {
            let old = membership_of(rooms, old_id)?;
            adjust(&mut counts, &key.1, old.as_deref(), None);
            changed = true;
        }
    }
    Ok(if changed {
        Arc::new(counts)
    } else {
        base_counts.clone()
    })
}

/// The membership a member event sets, if it can be read.
fn membership_of(rooms: &Rooms, event_id: &EventId) -> Result<Option<String>> {
    Ok(rooms.pdu(event_id)?.and_then(|pdu| membership(&pdu)))
}

/// The membership a member event sets.
pub fn membership(pdu: &Pdu) -> Option<String> {
    #[derive(Deserialize)]
    struct Content {
        membership: String,
    }
    serde_json::from_str::<Content>(pdu.content().get())
        .ok()
        .map(|c| c.membership)
}

/// Moves `user`'s server in `counts` from membership `old` to `new`: a join counts, nothing
/// else does.
pub fn adjust(counts: &mut Counts, user: &str, old: Option<&str>, new: Option<&str>) {
    let Ok(user) = <&UserId>::try_from(user) else {
        return;
    };
    let server = user.server_name();
    let was = old == Some("join");
    let is = new == Some("join");
    if was && !is {
        if let Some(count) = counts.get_mut(server) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(server);
            }
        }
    } else if is && !was {
        *counts.entry(server.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_stays_while_any_of_its_members_is_joined() {
        let mut counts = Counts::new();
        adjust(&mut counts, "@a:one", None, Some("join"));
        adjust(&mut counts, "@b:one", Some("invite"), Some("join"));
        adjust(&mut counts, "@c:two", None, Some("join"));
        assert_eq!(counts.len(), 2);
        // A display-name change is a join after a join.
        adjust(&mut counts, "@a:one", Some("join"), Some("join"));
        assert_eq!(counts[ruma::server_name!("one")], 2);
        adjust(&mut counts, "@a:one", Some("join"), Some("leave"));
        assert_eq!(counts[ruma::server_name!("one")], 1);
        adjust(&mut counts, "@b:one", Some("join"), Some("ban"));
        assert!(!counts.contains_key(ruma::server_name!("one")));
        // Invites, knocks and nonsense count for nothing.
        adjust(&mut counts, "@d:three", None, Some("invite"));
        adjust(&mut counts, "@e:three", Some("leave"), Some("knock"));
        adjust(&mut counts, "not a user", None, Some("join"));
        adjust(&mut counts, "@f:four", Some("join"), Some("leave"));
        assert_eq!(
            counts.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["two"]
        );
    }
}
