//! The relation index and what is built from it: child events by parent (`/relations`), threads
//! by latest activity (`/threads`), bundled aggregations (`unsigned.m.relations`), and the checks
//! on a local user's new relation (same room, no thread off a relation, no duplicate reaction).
//!
//! The index is written in the append transaction: a child is indexed under its parent (when the
//! parent is known and in the same room) at the child's stream position, and a redaction removes
//! its target's entry, so that a redacted reaction, edit or thread reply no longer counts.

use std::collections::HashSet;

use ruma::{EventId, OwnedEventId, OwnedUserId, RoomId};
use serde_json::{Map, Value, json};

use super::read::Viewer;
use super::visibility::Reader;
use super::{Rooms, timeline_key};
use crate::core::Pdu;
use crate::core::relation::{self, ChildEntry, Relation};
use crate::error::{Error, Result};
use crate::storage::{TxError, TxTree, keys};

/// How deep `recurse=true` follows relations of relations (the specification asks for at least 3).
pub const RECURSION_DEPTH: usize = 3;

/// The most child entries one `/relations` request with `recurse` gathers.
const MAX_RECURSIVE_ENTRIES: usize = 5000;

/// How many index entries one page may look at before it answers with what it has.
const MAX_SCAN: usize = 5000;

/// The most references bundled with one event (the oldest first).
const MAX_BUNDLED_REFERENCES: usize = 100;

/// What one append changes in the relation index, prepared before its transaction.
#[derive(Default)]
pub(super) struct IndexWrite {
    /// The parent's key prefix and the child's entry.
    add: Option<(Vec<u8>, Vec<u8>)>,
    /// The thread root when the event continues a thread.
    thread_root: Option<OwnedEventId>,
    /// The key of a redacted child's entry.
    remove: Option<Vec<u8>>,
}

impl IndexWrite {
    /// Leaves a redacted child in the index: for a redaction that does not take effect.
    pub(super) fn without_removal(mut self) -> Self {
        self.remove = None;
        self
    }
}

/// A child found in the index at a stream position.
pub type Child = (u64, ChildEntry);

/// One page of `/relations`.
pub struct RelationsPage {
    pub chunk: Vec<Value>,
    /// Where the next page starts, when there may be more.
    pub next: Option<u64>,
}

/// What `/relations` asks for.
pub struct RelationsRequest<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
    /// Exclusive stream-position bounds.
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub backwards: bool,
    pub limit: usize,
    pub recurse: bool,
}

fn entry_key(parent: &EventId, pos: u64) -> Vec<u8> {
    let mut key = keys::prefix(parent.as_str());
    key.extend_from_slice(&keys::u64_be(pos));
    key
}

/// The relation an event declares, read only when its content mentions one.
fn relation_of(pdu: &Pdu) -> Option<Relation> {
    if !pdu.content().get().contains("m.relates_to") {
        return None;
    }
    let content: Value = serde_json::from_str(pdu.content().get()).ok()?;
    relation::of_content(&content)
}

fn content_of(pdu: &Pdu) -> Result<Value> {
    Ok(serde_json::from_str(pdu.content().get())?)
}

impl Rooms {
    /// What appending `pdu` changes in the relation index.
    pub(super) fn relation_write(&self, pdu: &Pdu) -> Result<IndexWrite> {
        let mut write = IndexWrite::default();
        if let Some(relation) = relation_of(pdu)
            && let Some(parent_meta) = self.event_meta(&relation.parent)?
            && parent_meta.room_id == pdu.room_id()
        {
            let entry = ChildEntry {
                event_id: pdu.event_id().to_owned(),
                rel_type: relation.rel_type.clone(),
                kind: pdu.kind().to_string(),
                sender: pdu.sender().to_owned(),
                origin_server_ts: pdu.origin_server_ts().0.into(),
                key: relation.key.clone(),
            };
            if relation.rel_type == relation::THREAD {
                write.thread_root = Some(relation.parent.clone());
            }
            write.add = Some((
                keys::prefix(relation.parent.as_str()),
                serde_json::to_vec(&entry)?,
            ));
        }
        if let Some(target) = pdu.redacts()
            && let (Some(target_pdu), Some(target_meta)) =
                (self.pdu(target)?, self.event_meta(target)?)
            && target_meta.room_id == pdu.room_id()
            && let Some(relation) = relation_of(&target_pdu)
        {
            write.remove = Some(entry_key(&relation.parent, target_meta.stream_pos));
        }
        Ok(write)
    }

    /// Applies an [`IndexWrite`] inside the append transaction, at the event's stream position.
    pub(super) fn apply_relation_write(
        write: &IndexWrite,
        room_id: &RoomId,
        pos: u64,
        children: &TxTree<'_>,
        thread_latest: &TxTree<'_>,
        thread_order: &TxTree<'_>,
    ) -> std::result::Result<(), TxError<Error>> {
        if let Some((prefix, entry)) = &write.add {
            let mut key = prefix.clone();
            key.extend_from_slice(&keys::u64_be(pos));
            children.put(key, entry.clone())?;
        }
        if let Some(root) = &write.thread_root {
            if let Some(old) = thread_latest.get(root.as_bytes())?
                && let Some(old) = keys::read_u64_be(&old)
            {
                thread_order.delete(timeline_key(room_id, old))?;
            }
            thread_order.put(timeline_key(room_id, pos), root.as_bytes().to_vec())?;
            thread_latest.put(root.as_bytes(), keys::u64_be(pos).to_vec())?;
        }
        if let Some(key) = &write.remove {
            children.delete(key.clone())?;
        }
        Ok(())
    }

    /// Checks a local user's new event against the rules for relations: the parent must be in
    /// the same room, a thread may not start from an event that itself relates to another, and a
    /// user may not send the same reaction twice.
    pub(super) fn check_new_relation(&self, pdu: &Pdu) -> Result<()> {
        let Some(relation) = relation_of(pdu) else {
            return Ok(());
        };
        if relation.is_reply() {
            return Ok(());
        }
        // A parent the server does not know yet (federation may bring it later) is allowed.
        let (Some(parent_meta), Some(parent)) = (
            self.event_meta(&relation.parent)?,
            self.pdu(&relation.parent)?,
        ) else {
            return Ok(());
        };
        if parent_meta.room_id != pdu.room_id() {
            return Err(Error::Unknown(
                "an event can only relate to an event in the same room".into(),
            ));
        }
        match relation.rel_type.as_str() {
            relation::THREAD if relation::has_rel_type(&content_of(&parent)?) => {
                Err(Error::Unknown(
                    "a thread cannot start from an event that relates to another event".into(),
                ))
            }
            relation::ANNOTATION => {
                let duplicate = self.children(&relation.parent)?.iter().any(|(_, e)| {
                    e.rel_type == relation::ANNOTATION
                        && e.sender == pdu.sender()
                        && e.kind == pdu.kind().to_string()
                        && e.key == relation.key
                });
                if duplicate {
                    Err(Error::DuplicateAnnotation(
                        "you already sent this annotation for this event".into(),
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Every indexed child of an event, oldest first.
    pub fn children(&self, parent: &EventId) -> Result<Vec<Child>> {
        self.children_between(parent, 0, u64::MAX, false, usize::MAX)
    }

    /// Children strictly between two stream positions, in the given direction, at most `limit`.
    fn children_between(
        &self,
        parent: &EventId,
        after: u64,
        before: u64,
        backwards: bool,
        limit: usize,
    ) -> Result<Vec<Child>> {
        if before <= after.saturating_add(1) {
            return Ok(Vec::new());
        }
        let start = entry_key(parent, after + 1);
        let end = entry_key(parent, before);
        let prefix_len = start.len() - 8;
        let parse = |item: std::result::Result<_, crate::storage::StorageError>| -> Result<Child> {
            let (k, v): (crate::storage::Bytes, crate::storage::Bytes) = item?;
            let pos = keys::read_u64_be(&k[prefix_len..])
                .ok_or_else(|| Error::internal("bad relation key"))?;
            let entry: ChildEntry = serde_json::from_slice(&v)?;
            Ok((pos, entry))
        };
        let range = self.relations.range(&start, &end);
        if backwards {
            range.rev().take(limit).map(parse).collect()
        } else {
            range.take(limit).map(parse).collect()
        }
    }

    /// The bundled aggregations of an event for a viewer: the latest valid edit (`m.replace`,
    /// left out when the event is redacted), the thread summary (`m.thread`) and references
    /// (`m.reference`). Children from users the viewer ignores do not count. `depth` is how
    /// deep in a bundle the event is (a thread's latest event carries its own edits, no more).
    pub(super) fn aggregations(
        &self,
        pdu: &Pdu,
        redacted: bool,
        viewer: &Viewer<'_>,
        depth: u8,
    ) -> Result<Option<Value>> {
        if pdu.state_key().is_some() || depth > 1 {
            return Ok(None);
        }
        let children = self.children(pdu.event_id())?;
        if children.is_empty() {
            return Ok(None);
        }
        let ignored = |user: &OwnedUserId| viewer.ignored.contains(user);
        let mut relations = Map::new();
        if !redacted && let Some(edit) = self.latest_edit(pdu, &children, viewer, depth)? {
            relations.insert(relation::REPLACE.into(), edit);
        }
        let mut thread: Vec<&Child> = Vec::new();
        for child in children
            .iter()
            .filter(|(_, e)| e.rel_type == relation::THREAD && !ignored(&e.sender))
        {
            if self.child_visible(pdu.room_id(), child, viewer)? {
                thread.push(child);
            }
        }
        if let Some((_, latest)) = thread.last() {
            let participated = pdu.sender() == viewer.user_id
                || thread.iter().any(|(_, e)| e.sender == viewer.user_id);
            if let (Some(latest_pdu), Some(latest_meta)) = (
                self.pdu(&latest.event_id)?,
                self.event_meta(&latest.event_id)?,
            ) {
                let latest_event = self.format_at(&latest_pdu, &latest_meta, viewer, depth + 1)?;
                relations.insert(
                    relation::THREAD.into(),
                    json!({
                        "latest_event": latest_event,
                        "count": thread.len(),
                        "current_user_participated": participated,
                    }),
                );
            }
        }
        let mut references: Vec<Value> = Vec::new();
        for child in children
            .iter()
            .filter(|(_, e)| e.rel_type == relation::REFERENCE && !ignored(&e.sender))
        {
            if references.len() == MAX_BUNDLED_REFERENCES {
                break;
            }
            if self.child_visible(pdu.room_id(), child, viewer)? {
                references.push(json!({ "event_id": child.1.event_id }));
            }
        }
        if !references.is_empty() {
            relations.insert(relation::REFERENCE.into(), json!({ "chunk": references }));
        }
        Ok((!relations.is_empty()).then_some(Value::Object(relations)))
    }

    /// The most recent valid replacement of an event, formatted, if any.
    fn latest_edit(
        &self,
        original: &Pdu,
        children: &[Child],
        viewer: &Viewer<'_>,
        depth: u8,
    ) -> Result<Option<Value>> {
        let kind = original.kind().to_string();
        let candidates = children
            .iter()
            .map(|(_, e)| e)
            .filter(|e| relation::edit_matches(e, original.sender().as_str(), &kind));
        let candidates = relation::most_recent(candidates);
        if candidates.is_empty()
            || relation_of(original).is_some_and(|r| r.rel_type == relation::REPLACE)
        {
            // An edit of an edit is not valid.
            return Ok(None);
        }
        for candidate in candidates {
            let (Some(edit), Some(meta)) = (
                self.pdu(&candidate.event_id)?,
                self.event_meta(&candidate.event_id)?,
            ) else {
                continue;
            };
            // In an encrypted room `m.new_content` is inside the ciphertext: clients check it.
            let encrypted = candidate.kind == "m.room.encrypted";
            if edit.state_key().is_some()
                || (!encrypted
                    && !content_of(&edit)?
                        .get("m.new_content")
                        .is_some_and(Value::is_object))
                || !self.child_visible(
                    original.room_id(),
                    &(meta.stream_pos, (*candidate).clone()),
                    viewer,
                )?
            {
                continue;
            }
            // The edit is shown without bundles of its own.
            return self.format_at(&edit, &meta, viewer, depth + 2).map(Some);
        }
        Ok(None)
    }

    /// Whether the viewer may see a child event: at once for a joined member and a child sent
    /// since their latest join, otherwise by the history visibility at the child.
    fn child_visible(&self, room_id: &RoomId, child: &Child, viewer: &Viewer<'_>) -> Result<bool> {
        let reader = viewer
            .readers
            .get_or(room_id, || self.reader(room_id, viewer.user_id))?;
        if reader.membership.as_deref() == Some("join")
            && reader.last_join.is_some_and(|joined| child.0 > joined)
        {
            return Ok(true);
        }
        let (Some(pdu), Some(meta)) = (
            self.pdu(&child.1.event_id)?,
            self.event_meta(&child.1.event_id)?,
        ) else {
            return Ok(false);
        };
        self.is_visible(&reader, &pdu, &meta)
    }

    /// A page of an event's children for `/relations`: those the reader may see, from users the
    /// viewer does not ignore, matching the relation and event types, each with its bundles.
    pub fn relations_page(
        &self,
        parent: &EventId,
        reader: &Reader,
        viewer: &Viewer<'_>,
        request: &RelationsRequest<'_>,
    ) -> Result<RelationsPage> {
        let after = match request.backwards {
            true => request.to.unwrap_or(0),
            false => request.from.unwrap_or(0),
        };
        let before = match request.backwards {
            true => request.from.unwrap_or(u64::MAX),
            false => request.to.unwrap_or(u64::MAX),
        };
        let entries = if request.recurse {
            let mut all = self.descendants(parent, request)?;
            all.retain(|(pos, _)| *pos > after && *pos < before);
            if request.backwards {
                all.reverse();
            }
            all
        } else {
            // One more than the scan limit: its presence says there is more.
            self.children_between(parent, after, before, request.backwards, MAX_SCAN + 1)?
        };
        let mut page = RelationsPage {
            chunk: Vec::new(),
            next: None,
        };
        let mut scanned = 0;
        for (pos, entry) in entries {
            scanned += 1;
            if page.chunk.len() == request.limit || scanned > MAX_SCAN {
                page.next = Some(if request.backwards { pos + 1 } else { pos - 1 });
                break;
            }
            if entry.rel_type == relation::REPLY
                || request.rel_type.is_some_and(|r| r != entry.rel_type)
                || request.event_type.is_some_and(|t| t != entry.kind)
                || viewer.ignored.contains(&entry.sender)
            {
                continue;
            }
            let (Some(pdu), Some(meta)) = (
                self.pdu(&entry.event_id)?,
                self.event_meta(&entry.event_id)?,
            ) else {
                continue;
            };
            if !self.is_visible(reader, &pdu, &meta)? {
                continue;
            }
            page.chunk.push(self.format_at(&pdu, &meta, viewer, 0)?);
        }
        Ok(page)
    }

    /// Children, grandchildren and so on down to [`RECURSION_DEPTH`], oldest first, following
    /// only relations that match the request's filters (an event related only through a
    /// non-matching one is left out, as the specification says) and never rich replies.
    fn descendants(&self, parent: &EventId, request: &RelationsRequest<'_>) -> Result<Vec<Child>> {
        let mut out = Vec::new();
        let mut seen: HashSet<OwnedEventId> = HashSet::new();
        let mut level = vec![parent.to_owned()];
        for _ in 0..RECURSION_DEPTH {
            let mut next = Vec::new();
            for id in &level {
                for child in self.children(id)? {
                    if out.len() >= MAX_RECURSIVE_ENTRIES {
                        break;
                    }
                    let entry = &child.1;
                    if entry.rel_type == relation::REPLY
                        || request.rel_type.is_some_and(|r| r != entry.rel_type)
                        || request.event_type.is_some_and(|t| t != entry.kind)
                    {
                        continue;
                    }
                    if seen.insert(child.1.event_id.clone()) {
                        next.push(child.1.event_id.clone());
                        out.push(child);
                    }
                }
            }
            level = next;
        }
        out.sort_by_key(|(pos, _)| *pos);
        Ok(out)
    }

    /// Thread roots of a room by latest activity, newest first, starting before `from`: the
    /// roots the reader may see, optionally only threads the viewer took part in.
    pub fn threads_page(
        &self,
        room_id: &RoomId,
        reader: &Reader,
        viewer: &Viewer<'_>,
        from: Option<u64>,
        limit: usize,
        participated_only: bool,
    ) -> Result<(Vec<Value>, Option<u64>)> {
        let start = timeline_key(room_id, 0);
        let end = timeline_key(room_id, from.unwrap_or(u64::MAX));
        let prefix_len = start.len() - 8;
        let mut out = Vec::new();
        let mut scanned = 0;
        for item in self.thread_order.range(&start, &end).rev() {
            let (key, value) = item?;
            let pos = keys::read_u64_be(&key[prefix_len..])
                .ok_or_else(|| Error::internal("bad thread key"))?;
            scanned += 1;
            if out.len() == limit || scanned > MAX_SCAN {
                return Ok((out, Some(pos + 1)));
            }
            let Ok(root) = OwnedEventId::try_from(String::from_utf8_lossy(&value).as_ref()) else {
                continue;
            };
            let (Some(pdu), Some(meta)) = (self.pdu(&root)?, self.event_meta(&root)?) else {
                continue;
            };
            if viewer.ignored.contains(pdu.sender()) || !self.is_visible(reader, &pdu, &meta)? {
                continue;
            }
            if participated_only
                && pdu.sender() != viewer.user_id
                && !self
                    .children(&root)?
                    .iter()
                    .any(|(_, e)| e.rel_type == relation::THREAD && e.sender == viewer.user_id)
            {
                continue;
            }
            out.push(self.format_at(&pdu, &meta, viewer, 0)?);
        }
        Ok((out, None))
    }

    /// Indexes the relations of events stored before the index existed (once per store).
    pub(super) fn index_existing_relations(&self) -> Result<()> {
        const DONE: &[u8] = b"relations_indexed";
        if self.store_meta.get(DONE)?.is_some() {
            return Ok(());
        }
        let mut indexed = 0u64;
        // The timeline is ordered by room, then stream position: each thread's latest event is
        // seen last.
        for item in self.timeline.iter() {
            let (key, value) = item?;
            let (Some(pos), Ok(event_id)) = (
                key.len()
                    .checked_sub(8)
                    .and_then(|at| keys::read_u64_be(&key[at..])),
                OwnedEventId::try_from(String::from_utf8_lossy(&value).as_ref()),
            ) else {
                continue;
            };
            let Some(pdu) = self.pdu(&event_id)? else {
                continue;
            };
            if self.redacted_by(&event_id)?.is_some() {
                continue;
            }
            let write = self.relation_write(&pdu)?;
            if write.add.is_none() {
                continue;
            }
            // The same writes as an append makes, one event at a time.
            let trees = [&self.relations, &self.thread_latest, &self.thread_order];
            self.store.transact(&trees, |t| {
                Self::apply_relation_write(&write, pdu.room_id(), pos, &t[0], &t[1], &t[2])
            })?;
            indexed += 1;
        }
        self.store_meta.put(DONE, b"1".to_vec())?;
        if indexed > 0 {
            tracing::info!(indexed, "indexed the relations of stored events");
        }
        Ok(())
    }
}
