//! Events as clients see them: the client format, redaction applied, `unsigned` filled in.

use ruma::{EventId, UserId};
use serde_json::{Map, Value, json};

use super::{EventMeta, Rooms};
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::util::now_ms;

/// Who is reading: the user and the device (for `transaction_id`).
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
}

impl Rooms {
    /// The client-format event for `event_id`, or `None` if it does not exist.
    pub fn client_event(&self, event_id: &EventId, viewer: &Viewer<'_>) -> Result<Option<Value>> {
        let (Some(pdu), Some(meta)) = (self.pdu(event_id)?, self.event_meta(event_id)?) else {
            return Ok(None);
        };
        self.format(&pdu, &meta, viewer, true).map(Some)
    }

    fn format(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: &Viewer<'_>,
        with_redaction: bool,
    ) -> Result<Value> {
        let mut unsigned = Map::new();
        let redaction = if with_redaction {
            self.redacted_by(pdu.event_id())?
        } else {
            None
        };
        let shown = match &redaction {
            Some(_) => pdu.redacted()?,
            None => pdu.clone(),
        };
        let ts: u64 = pdu.origin_server_ts().0.into();
        unsigned.insert("age".into(), json!(now_ms().saturating_sub(ts)));
        if let Some((device, txn)) = &meta.txn
            && pdu.sender() == viewer.user_id
            && device == viewer.device_id
        {
            unsigned.insert("transaction_id".into(), json!(txn));
        }
        if let Some(redaction_id) = redaction
            && let (Some(r_pdu), Some(r_meta)) =
                (self.pdu(&redaction_id)?, self.event_meta(&redaction_id)?)
        {
            unsigned.insert(
                "redacted_because".into(),
                self.format(&r_pdu, &r_meta, viewer, false)?,
            );
        }
        if let (Some(entry), Some(before)) = (pdu.state_entry(), meta.state_before) {
            let state = self.snapshots.state(before)?;
            if let Some(previous) = state.get(&entry)
                && let Some(prev) = self.pdu(previous)?
            {
                let prev_content: Value = match self.redacted_by(previous)? {
                    Some(_) => serde_json::from_str(prev.redacted()?.content().get())?,
                    None => serde_json::from_str(prev.content().get())?,
                };
                unsigned.insert("prev_content".into(), prev_content);
                unsigned.insert("replaces_state".into(), json!(previous));
            }
        }
        let content: Value = serde_json::from_str(shown.content().get())?;
        let mut event = json!({
            "event_id": pdu.event_id(),
            "room_id": pdu.room_id(),
            "sender": pdu.sender(),
            "type": pdu.kind().to_string(),
            "origin_server_ts": pdu.origin_server_ts(),
            "content": content,
            "unsigned": unsigned,
        });
        if let Some(key) = pdu.state_key() {
            event["state_key"] = json!(key);
        }
        if let Some(redacts) = shown.redacts() {
            event["redacts"] = json!(redacts);
        }
        Ok(event)
    }

    /// Client-format events for stream entries (as from [`Rooms::timeline_range`]).
    pub fn client_events(
        &self,
        ids: &[(u64, ruma::OwnedEventId)],
        viewer: &Viewer<'_>,
    ) -> Result<Vec<Value>> {
        ids.iter()
            .map(|(_, id)| {
                self.client_event(id, viewer)?
                    .ok_or_else(|| Error::internal(format!("timeline names missing event {id}")))
            })
            .collect()
    }
}
