//! `m.receipt` EDUs: read receipts of users of the origin. Per room, the room must be known and
//! the origin allowed by its server ACL (else every receipt of that room is ignored); per user,
//! they must be joined, and the receipt must name an event of the room's timeline. Receipts go
//! into the receipts service, like local ones, and only ever move forwards.

use ruma::api::federation::transactions::edu::{ReceiptContent, ReceiptData};
use ruma::events::receipt::ReceiptThread;
use ruma::{EventId, RoomId, UserId};
use serde_json::Value;

use super::Peer;
use crate::error::Result;
use crate::service::receipts::{MAIN_THREAD, NewReceipt, ReceiptKind, thread_root};
use crate::service::rooms::outlier::EventStanding;

impl Peer<'_> {
    pub async fn receive_receipts(&self, content: ReceiptContent) -> Result<()> {
        let services = self.services;
        let mut receipts = Vec::new();
        for (room_id, map) in &content.receipts {
            if services.rooms.info(room_id)?.is_none()
                || services
                    .federation
                    .check_acl(&services.rooms, room_id, self.origin)
                    .is_err()
            {
                continue;
            }
            for (user, data) in &map.read {
                if let Some(receipt) = self.receipt(room_id, user, data)? {
                    receipts.push(receipt);
                }
            }
        }
        let written = services.receipts.write(&receipts)?;
        services.announce_receipts(&written).await
    }

    /// The receipt to write for one user, if it is one we take.
    fn receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        data: &ReceiptData,
    ) -> Result<Option<NewReceipt>> {
        let rooms = &self.services.rooms;
        if self.check_own_user(user).is_err()
            || rooms.membership(room_id, user)?.as_deref() != Some("join")
        {
            return Ok(None);
        }
        // The latest event named that is in the room's timeline.
        let mut target = None;
        for event_id in data.event_ids.iter().rev() {
            if rooms.event_standing(event_id)? == Some(EventStanding::Timeline)
                && let Some(meta) = rooms.event_meta(event_id)?
                && meta.room_id == room_id
            {
                target = Some((event_id.clone(), meta.stream_pos));
                break;
            }
        }
        let Some((event_id, event_pos)) = target else {
            return Ok(None);
        };
        let Some(thread) = self.thread(&event_id, &data.data.thread)? else {
            return Ok(None);
        };
        Ok(Some(NewReceipt {
            room_id: room_id.to_owned(),
            kind: ReceiptKind::Read,
            user: user.to_owned(),
            thread,
            event_id,
            event_pos,
            recipient: None,
        }))
    }

    /// The receipt's thread as stored (`Some(None)`: unthreaded), when it fits the event: `main`
    /// for an event outside threads, a root for the root or an event of its thread.
    fn thread(&self, event_id: &EventId, thread: &ReceiptThread) -> Result<Option<Option<String>>> {
        let root = match thread {
            ReceiptThread::Unthreaded => return Ok(Some(None)),
            ReceiptThread::Main => None,
            ReceiptThread::Thread(root) => Some(root.clone()),
            _ => return Ok(None),
        };
        let Some(pdu) = self.services.rooms.pdu(event_id)? else {
            return Ok(None);
        };
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let in_thread = thread_root(&content);
        let fits = match &root {
            None => in_thread.is_none(),
            Some(root) => pdu.event_id() == root || in_thread == Some(root.as_str()),
        };
        if !fits {
            return Ok(None);
        }
        Ok(Some(Some(match root {
            None => MAIN_THREAD.to_owned(),
            Some(root) => root.to_string(),
        })))
    }
}
