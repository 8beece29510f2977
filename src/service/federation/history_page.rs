//! `/messages` beyond the start of a room's timeline: pages of the backfilled history (see
//! [`super::history`]), fetching more from other servers when a page reaches what we have.

use ruma::RoomId;
use serde_json::Value;

use crate::core::filter::RoomEventFilter;
use crate::error::Result;
use crate::service::Services;
use crate::service::rooms::read::{Page, Viewer};
use crate::service::rooms::visibility::Reader;

/// How many backfill rounds one page may start, and for how long it may start new ones.
const MAX_ROUNDS_PER_PAGE: usize = 3;
const MAX_FETCHING: std::time::Duration = std::time::Duration::from_secs(20);
/// How many history entries one page may look at (as for the timeline).
const MAX_SCAN: usize = 5000;
/// History entries read at a time.
const BATCH: usize = 100;

/// A page request in the backfilled history.
pub struct HistoryRequest<'a> {
    /// The order to continue from, exclusive (0: the start of the timeline).
    pub from: u64,
    /// Back in time (growing orders) or forwards (shrinking orders, towards the timeline).
    pub backwards: bool,
    pub limit: usize,
    pub filter: &'a RoomEventFilter,
}

impl Services {
    /// Up to `limit` events of the backfilled history that the reader may see and the filter
    /// lets through, from `request.from` on. Going back, the history is fetched from other
    /// servers when it runs out (a few rounds per page). `end` is the order to continue from
    /// when there may be more in that direction (`None` at the start of the room's history, at
    /// the start of the timeline going forwards, or when no server gives more now).
    pub async fn history_page(
        &self,
        room_id: &RoomId,
        reader: &Reader,
        viewer: &Viewer<'_>,
        request: HistoryRequest<'_>,
    ) -> Result<Page> {
        let mut page = Page {
            chunk: Vec::new(),
            end: None,
            senders: Default::default(),
        };
        let history = self.history()?;
        let started = std::time::Instant::now();
        let mut cursor = request.from;
        let mut scanned = 0;
        let mut rounds = 0;
        loop {
            let entries = history.range(room_id, cursor, request.backwards, BATCH)?;
            let exhausted = entries.len() < BATCH;
            for (order, event_id) in entries {
                cursor = order;
                scanned += 1;
                let (Some(pdu), Some(meta)) = (
                    self.rooms.pdu(&event_id)?,
                    self.rooms.event_meta(&event_id)?,
                ) else {
                    continue;
                };
                let has_url = serde_json::from_str::<Value>(pdu.content().get())
                    .is_ok_and(|content| content.get("url").is_some());
                if request.filter.matches(
                    room_id.as_str(),
                    pdu.sender().as_str(),
                    &pdu.kind().to_string(),
                    has_url,
                ) && self.rooms.is_visible(reader, &pdu, &meta)?
                    && let Some(event) = self.rooms.client_event(&event_id, viewer)?
                {
                    page.senders.insert(pdu.sender().to_owned());
                    page.chunk.push(event);
                }
                if page.chunk.len() >= request.limit || scanned >= MAX_SCAN {
                    page.end = Some(order);
                    return Ok(page);
                }
            }
            if !exhausted {
                continue;
            }
            if !request.backwards {
                return Ok(page);
            }
            if rounds == MAX_ROUNDS_PER_PAGE || started.elapsed() > MAX_FETCHING {
                // More may come: the client asks again from here.
                page.end = Some(cursor);
                return Ok(page);
            }
            rounds += 1;
            let wanted = request.limit.saturating_sub(page.chunk.len());
            if !self.backfill_round(room_id, wanted).await? {
                return Ok(page);
            }
        }
    }
}
