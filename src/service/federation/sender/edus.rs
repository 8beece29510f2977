//! Our users' typing notifications, public read receipts and presence, sent to the servers that
//! share the room (or, for presence, any room) with them.
//!
//! The typing and presence services know nothing of federation: at start-up the sender gives
//! each a listener ([`Typing::listen`](crate::service::typing::Typing::listen),
//! [`Presence::listen`](crate::service::presence::Presence::listen)) that they call after every
//! visible change, whichever path made it (a request, a timeout, an idle timer). Receipts are
//! written by `Services` methods, which call [`Services::federate_receipts`] directly. Each
//! queues an EDU; a failure to queue is logged and never fails what the user did.

use std::collections::BTreeSet;
use std::sync::Arc;

use ruma::{EventId, OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde_json::{Value, json};

use crate::error::Result;
use crate::service::Services;
use crate::service::presence::PresenceView;
use crate::service::receipts::{NewReceipt, ReceiptKey, ReceiptKind};
use crate::service::room_ephemeral::Audience;
use crate::util::now_ms;

/// How often the typing of a user who keeps typing is announced again: servers send no timeout
/// with typing, and receivers forget it after 30 seconds (Roost) or 60 (the reference
/// homeserver) unless it is renewed.
pub const TYPING_KEEPALIVE_MS: u64 = 20_000;

/// An `m.typing` EDU.
pub fn typing_edu(room_id: &RoomId, user_id: &UserId, typing: bool) -> Value {
    json!({
        "edu_type": "m.typing",
        "content": { "room_id": room_id, "user_id": user_id, "typing": typing },
    })
}

/// An `m.receipt` EDU with one public read receipt.
pub fn receipt_edu(
    room_id: &RoomId,
    user_id: &UserId,
    event_id: &EventId,
    ts: u64,
    thread: Option<&str>,
) -> Value {
    let mut data = json!({ "ts": ts });
    if let Some(thread) = thread {
        data["thread_id"] = json!(thread);
    }
    json!({
        "edu_type": "m.receipt",
        "content": {
            room_id.as_str(): {
                "m.read": { user_id.as_str(): { "event_ids": [event_id], "data": data } },
            },
        },
    })
}

/// An `m.presence` EDU with one user's presence.
pub fn presence_edu(user_id: &UserId, view: &PresenceView) -> Value {
    let mut update = json!({
        "user_id": user_id,
        "presence": view.presence.as_str(),
        "currently_active": view.currently_active,
        "last_active_ago": view.last_active_ago.unwrap_or(0),
    });
    if let Some(message) = &view.status_msg {
        update["status_msg"] = json!(message);
    }
    json!({ "edu_type": "m.presence", "content": { "push": [update] } })
}

impl Services {
    /// Gives the typing and presence services the listeners that send our users' changes out.
    pub(super) fn listen_for_edus(self: &Arc<Self>) {
        let services = Arc::downgrade(self);
        self.typing
            .listen(Box::new(move |room_id, user_id, typing| {
                if let Some(services) = services.upgrade() {
                    services.send_typing(room_id, user_id, typing);
                }
            }));
        let services = Arc::downgrade(self);
        self.presence.listen(Box::new(move |user_id| {
            if let Some(services) = services.upgrade() {
                services.send_presence(user_id);
            }
        }));
    }

    /// The other servers with a joined member in the room.
    fn other_servers_in(&self, room_id: &RoomId) -> Result<Vec<OwnedServerName>> {
        let mut servers = self.rooms.servers_in_room(room_id)?;
        servers.remove(self.federation.server_name());
        Ok(servers.into_iter().collect())
    }

    /// A start or stop goes out at once; a renewal only when the last announcement is
    /// [`TYPING_KEEPALIVE_MS`] old.
    fn send_typing(&self, room_id: &RoomId, user_id: &UserId, typing: bool) {
        if !self.is_local(user_id) {
            return;
        }
        let now = now_ms();
        {
            let key = (room_id.to_owned(), user_id.to_owned());
            let mut announced = self
                .federation
                .sender
                .typing_announced
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !typing {
                announced.remove(&key);
            } else if announced
                .get(&key)
                .is_some_and(|at| now.saturating_sub(*at) < TYPING_KEEPALIVE_MS)
            {
                return;
            } else {
                announced.insert(key, now);
            }
        }
        let queued = self.other_servers_in(room_id).and_then(|servers| {
            self.federation
                .sender
                .queue_edu(&servers, &typing_edu(room_id, user_id, typing))
        });
        if let Err(e) = queued {
            tracing::warn!(%room_id, error = %e, "queueing a typing notification for other servers failed");
        }
    }

    fn send_presence(&self, user_id: &UserId) {
        if !self.is_local(user_id) {
            return;
        }
        let queued = (|| -> Result<()> {
            let Some(view) = self.presence.get(user_id)? else {
                return Ok(());
            };
            let mut servers = BTreeSet::new();
            for room_id in self.rooms.rooms_of(user_id, "join")? {
                servers.extend(self.rooms.servers_in_room(&room_id)?);
            }
            servers.remove(self.federation.server_name());
            let servers: Vec<OwnedServerName> = servers.into_iter().collect();
            self.federation
                .sender
                .queue_edu(&servers, &presence_edu(user_id, &view))
        })();
        if let Err(e) = queued {
            tracing::warn!(error = %e, "queueing a presence update for other servers failed");
        }
    }

    /// Sends the public read receipts (`m.read`) of ours among `receipts` that were just
    /// written (`written` is what [`Receipts::write`](crate::service::receipts::Receipts::write)
    /// answered) to the other servers of their rooms.
    pub(crate) fn federate_receipts(
        &self,
        receipts: &[NewReceipt],
        written: &[(OwnedRoomId, Audience)],
    ) {
        if !self.federation.enabled()
            || !written
                .iter()
                .any(|(_, audience)| matches!(audience, Audience::Everyone))
        {
            return;
        }
        for receipt in receipts {
            if receipt.kind != ReceiptKind::Read || !self.is_local(&receipt.user) {
                continue;
            }
            if let Err(e) = self.send_receipt_edu(receipt) {
                tracing::warn!(room_id = %receipt.room_id, error = %e, "queueing a read receipt for other servers failed");
            }
        }
    }

    fn send_receipt_edu(&self, receipt: &NewReceipt) -> Result<()> {
        let key = ReceiptKey {
            kind: receipt.kind,
            user: receipt.user.clone(),
            thread: receipt.thread.clone(),
        };
        // The receipt as stored: it moved to this event only if nothing newer was there.
        let Some(stored) = self.receipts.get(&receipt.room_id, &key)? else {
            return Ok(());
        };
        if stored.event_id != receipt.event_id {
            return Ok(());
        }
        let servers = self.other_servers_in(&receipt.room_id)?;
        let edu = receipt_edu(
            &receipt.room_id,
            &receipt.user,
            &stored.event_id,
            stored.ts,
            receipt.thread.as_deref(),
        );
        self.federation.sender.queue_edu(&servers, &edu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::presence::PresenceState;

    #[test]
    fn edus_have_the_specified_shape() {
        let room = ruma::room_id!("!r:a.example");
        let user = ruma::user_id!("@u:a.example");
        let typing = typing_edu(room, user, true);
        assert_eq!(typing["edu_type"], "m.typing");
        assert_eq!(
            typing["content"],
            json!({"room_id": "!r:a.example", "user_id": "@u:a.example", "typing": true})
        );

        let event = ruma::event_id!("$e");
        let unthreaded = receipt_edu(room, user, event, 7, None);
        assert_eq!(
            unthreaded["content"]["!r:a.example"]["m.read"]["@u:a.example"],
            json!({"event_ids": ["$e"], "data": {"ts": 7}})
        );
        let threaded = receipt_edu(room, user, event, 7, Some("main"));
        assert_eq!(
            threaded["content"]["!r:a.example"]["m.read"]["@u:a.example"]["data"]["thread_id"],
            "main"
        );

        let view = PresenceView {
            presence: PresenceState::Unavailable,
            status_msg: Some("away".into()),
            last_active_ago: Some(1_500),
            currently_active: false,
        };
        let presence = presence_edu(user, &view);
        assert_eq!(presence["edu_type"], "m.presence");
        assert_eq!(
            presence["content"]["push"][0],
            json!({
                "user_id": "@u:a.example",
                "presence": "unavailable",
                "currently_active": false,
                "last_active_ago": 1_500,
                "status_msg": "away",
            })
        );
    }
}
