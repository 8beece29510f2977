//! Events as clients see them: the client format, redaction applied, `unsigned` filled in.

use std::collections::HashSet;
use std::sync::Arc;

use ruma::{EventId, OwnedUserId, UserId};
use serde_json::{Map, Value, json};

use super::visibility::Reader;
use super::{EventMeta, Rooms};
use crate::core::Pdu;
use crate::error::{Error, Result};
use crate::util::now_ms;

/// Who is reading: the user, the device (for `transaction_id`) and the users they ignore (whose
/// events do not count in bundled aggregations).
pub struct Viewer<'a> {
    pub user_id: &'a UserId,
    pub device_id: &'a str,
    pub ignored: Arc<HashSet<OwnedUserId>>,
    /// The user as a reader of each room whose events were bundled, computed once per request.
    pub readers: ReaderCache,
}

/// Readers by room, filled as aggregations need them.
#[derive(Default)]
pub struct ReaderCache(std::sync::Mutex<std::collections::HashMap<ruma::OwnedRoomId, Arc<Reader>>>);

impl ReaderCache {
    pub(super) fn get_or(
        &self,
        room_id: &ruma::RoomId,
        make: impl FnOnce() -> Result<Reader>,
    ) -> Result<Arc<Reader>> {
        if let Some(reader) = self
            .0
            .lock()
            .map_err(|_| Error::internal("reader cache poisoned"))?
            .get(room_id)
        {
            return Ok(reader.clone());
        }
        let reader = Arc::new(make()?);
        self.0
            .lock()
            .map_err(|_| Error::internal("reader cache poisoned"))?
            .insert(room_id.to_owned(), reader.clone());
        Ok(reader)
    }
}

impl<'a> Viewer<'a> {
    pub fn new(user_id: &'a UserId, device_id: &'a str, ignored: HashSet<OwnedUserId>) -> Self {
        Self {
            user_id,
            device_id,
            ignored: Arc::new(ignored),
            readers: ReaderCache::default(),
        }
    }
}

impl Rooms {
    /// The client-format event for `event_id`, or `None` if it does not exist.
    pub fn client_event(&self, event_id: &EventId, viewer: &Viewer<'_>) -> Result<Option<Value>> {
        let (Some(pdu), Some(meta)) = (self.pdu(event_id)?, self.event_meta(event_id)?) else {
            return Ok(None);
        };
        self.format_at(&pdu, &meta, viewer, 0).map(Some)
    }

    /// An event in the client format, with its bundled aggregations when `depth` (how deep in
    /// another event's bundle it is) allows them.
    pub(super) fn format_at(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: &Viewer<'_>,
        depth: u8,
    ) -> Result<Value> {
        self.format(pdu, meta, viewer, true, depth)
    }

    fn format(
        &self,
        pdu: &Pdu,
        meta: &EventMeta,
        viewer: &Viewer<'_>,
        with_redaction: bool,
        depth: u8,
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
        let redacted = redaction.is_some();
        if let Some(redaction_id) = redaction
            && let (Some(r_pdu), Some(r_meta)) =
                (self.pdu(&redaction_id)?, self.event_meta(&redaction_id)?)
        {
            unsigned.insert(
                "redacted_because".into(),
                self.format(&r_pdu, &r_meta, viewer, false, u8::MAX)?,
            );
        }
        if with_redaction
            && let Some(relations) = self.aggregations(pdu, redacted, viewer, depth)?
        {
            unsigned.insert("m.relations".into(), relations);
        }
        let own_member_event = *pdu.kind() == ruma::events::TimelineEventType::RoomMember
            && pdu.state_key() == Some(viewer.user_id.as_str());
        let membership = if own_member_event {
            serde_json::from_str::<Value>(pdu.content().get())?
                .get("membership")
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            self.membership_at(meta, viewer.user_id)?
        };
        if let Some(membership) = membership {
            unsigned.insert("membership".into(), json!(membership));
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

/// How many timeline entries one request may look at before it returns what it has (with a
/// token to continue), so that a reader who may see little cannot make a request scan a whole room.
const MAX_SCAN: usize = 5000;

/// One page of `/messages`.
pub struct Page {
    pub chunk: Vec<Value>,
    /// Where the next page starts (exclusive), when there may be more.
    pub end: Option<u64>,
    /// Senders of the events in `chunk`, for lazy-loaded members.
    pub senders: std::collections::BTreeSet<ruma::OwnedUserId>,
}

/// A pagination request: exclusive stream-position bounds, direction, size and filter.
pub struct PageRequest<'a> {
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub backwards: bool,
    pub limit: usize,
    pub filter: &'a crate::core::filter::RoomEventFilter,
}

impl Rooms {
    /// Walks the timeline from `from` in the requested direction and returns up to `limit` events
    /// the reader may see and the filter lets through.
    pub fn paginate(
        &self,
        room_id: &ruma::RoomId,
        reader: &super::visibility::Reader,
        viewer: &Viewer<'_>,
        request: PageRequest<'_>,
    ) -> Result<Page> {
        let mut page = Page {
            chunk: Vec::new(),
            end: None,
            senders: Default::default(),
        };
        let batch = request.limit.clamp(20, 200);
        let mut cursor = request
            .from
            .unwrap_or(if request.backwards { u64::MAX } else { 0 });
        let mut scanned = 0;
        loop {
            let (after, before) = if request.backwards {
                (request.to.unwrap_or(0), cursor)
            } else {
                (cursor, request.to.unwrap_or(u64::MAX))
            };
            let entries = self.timeline_range(room_id, after, before, request.backwards, batch)?;
            let exhausted = entries.len() < batch;
            for (pos, id) in entries {
                cursor = pos;
                scanned += 1;
                let (Some(pdu), Some(meta)) = (self.pdu(&id)?, self.event_meta(&id)?) else {
                    continue;
                };
                let has_url = serde_json::from_str::<Value>(pdu.content().get())
                    .is_ok_and(|c| c.get("url").is_some());
                if !request.filter.matches(
                    room_id.as_str(),
                    pdu.sender().as_str(),
                    &pdu.kind().to_string(),
                    has_url,
                ) || !self.is_visible(reader, &pdu, &meta)?
                {
                    continue;
                }
                page.senders.insert(pdu.sender().to_owned());
                page.chunk.push(self.format_at(&pdu, &meta, viewer, 0)?);
                if page.chunk.len() == request.limit || scanned >= MAX_SCAN {
                    page.end = Some(pos);
                    return Ok(page);
                }
            }
            if exhausted {
                return Ok(page);
            }
            if scanned >= MAX_SCAN {
                page.end = Some(cursor);
                return Ok(page);
            }
        }
    }
}
