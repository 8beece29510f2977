//! `GET /chats/{id}/files`: the files shared in a chat (a direct chat or a group), newest first.
//!
//! There is no separate index: the room's timeline is walked backwards from the cursor (a stream
//! position) and the messages that carry a file (`m.image`, `m.file`, `m.video`, `m.audio` with
//! the `mxc://` URI of a media item of this server that still exists) are kept, as far as the
//! room's history visibility lets the caller see them. Redacted messages and edits are skipped.
//! A walk looks at a bounded number of events per request, then answers with what it found and
//! a cursor to continue, so a chat with few files among many messages costs each request little.

use std::collections::HashSet;

use axum::Json;
use axum::extract::State;
use ruma::events::TimelineEventType;
use ruma::{OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatPath, ChatQuery};
use super::file_model::{Dimensions, file_object};
use super::paging::PageQuery;
use crate::api::extract::{AppState, parse_room_id};
use crate::core::Pdu;
use crate::service::media::parse_mxc;
use crate::service::rooms::visibility::Reader;

/// Timeline entries read per storage scan, and at most per request.
const BATCH: usize = 200;
const MAX_SCAN: usize = 5000;

/// The message types that carry a file.
const FILE_MSGTYPES: &[&str] = &["m.image", "m.file", "m.video", "m.audio"];

/// 404 unless `user` is in the room (joined or invited) and has not forgotten it.
pub(super) fn ensure_chat_member(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
) -> ChatResult<()> {
    let membership = state.rooms.membership(room_id, user)?;
    if !matches!(membership.as_deref(), Some("join" | "invite"))
        || state.rooms.is_forgotten(room_id, user)?
    {
        return Err(ChatError::not_found("no such chat"));
    }
    Ok(())
}

/// `GET /chats/{id}/files?limit&cursor` → `{files: [File + {message_id, sender, sent_at}],
/// next_cursor}`. The cursor is the stream position of the last event the previous page looked
/// at. Files from users the caller blocks are left out, as their messages are.
pub(super) async fn list(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatQuery(query): ChatQuery<PageQuery>,
) -> ChatResult<Json<Value>> {
    let room_id = parse_room_id(&id)?;
    let limit = query.limit()?;
    let mut before = query.cursor()?.unwrap_or(u64::MAX);
    ensure_chat_member(&state, &room_id, &auth.user_id)?;
    let reader = state.rooms.reader(&room_id, &auth.user_id)?;
    let blocked = state.account_data.ignored_users(&auth.user_id)?;
    let mut files = Vec::new();
    let mut scanned = 0;
    let next_cursor = loop {
        let entries = state
            .rooms
            .timeline_range(&room_id, 0, before, true, BATCH)?;
        let exhausted = entries.len() < BATCH;
        for (pos, event_id) in entries {
            before = pos;
            scanned += 1;
            if let Some(file) = shared_file(&state, &reader, &blocked, &event_id)? {
                files.push(file);
                if files.len() == limit {
                    break;
                }
            }
            if scanned >= MAX_SCAN {
                break;
            }
        }
        if files.len() == limit || scanned >= MAX_SCAN {
            break Some(before.to_string());
        }
        if exhausted {
            break None;
        }
    };
    Ok(Json(json!({ "files": files, "next_cursor": next_cursor })))
}

/// The listed file of one timeline event, if it is a visible, unredacted message with a file of
/// this server that still exists, sent by someone the caller does not block.
fn shared_file(
    state: &AppState,
    reader: &Reader,
    blocked: &HashSet<OwnedUserId>,
    event_id: &ruma::EventId,
) -> ChatResult<Option<Value>> {
    let (Some(pdu), Some(meta)) = (
        state.rooms.pdu(event_id)?,
        state.rooms.event_meta(event_id)?,
    ) else {
        return Ok(None);
    };
    if *pdu.kind() != TimelineEventType::RoomMessage
        || blocked.contains(pdu.sender())
        || state.rooms.redacted_by(event_id)?.is_some()
    {
        return Ok(None);
    }
    let Ok(content) = serde_json::from_str::<Value>(pdu.content().get()) else {
        return Ok(None);
    };
    let Some(media_id) = local_media_of(state, &content) else {
        return Ok(None);
    };
    if !state.rooms.is_visible(reader, &pdu, &meta)? {
        return Ok(None);
    }
    let server = state.media.server_name().as_str();
    let Some(record) = state.media.get(server, media_id)? else {
        return Ok(None);
    };
    let Some(media) = record.content.clone() else {
        return Ok(None);
    };
    let info = content.get("info");
    let dimension = |key: &str| {
        info.and_then(|i| i.get(key))
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let dimensions = match (dimension("w"), dimension("h")) {
        (Some(width), Some(height)) => Some(Dimensions { width, height }),
        _ => None,
    };
    let mut file = file_object(state, &record, &media, dimensions);
    // The name and type the message gives (a file may be shared under another name).
    if let Some(name) = message_file_name(&content) {
        file["name"] = json!(name);
    }
    if let Some(mime_type) = info.and_then(|i| i.get("mimetype")).and_then(Value::as_str) {
        file["mime_type"] = json!(mime_type);
    }
    add_message_fields(&mut file, &pdu);
    Ok(Some(file))
}

/// The media ID of a file message's `url`, when it is a message with a file of this server (and
/// not an edit, which repeats the file of the message it replaces).
fn local_media_of<'a>(state: &AppState, content: &'a Value) -> Option<&'a str> {
    let msgtype = content.get("msgtype")?.as_str()?;
    if !FILE_MSGTYPES.contains(&msgtype) {
        return None;
    }
    let relation = content
        .get("m.relates_to")
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str);
    if relation == Some("m.replace") {
        return None;
    }
    let (server, media_id) = parse_mxc(content.get("url")?.as_str()?)?;
    (server == state.media.server_name().as_str()).then_some(media_id)
}

/// A file message's file name: `filename`, or else `body` (which is then the name).
fn message_file_name(content: &Value) -> Option<&str> {
    ["filename", "body"]
        .into_iter()
        .filter_map(|key| content.get(key).and_then(Value::as_str))
        .find(|name| !name.trim().is_empty())
}

fn add_message_fields(file: &mut Value, pdu: &Pdu) {
    let sent_at: u64 = pdu.origin_server_ts().0.into();
    file["message_id"] = json!(pdu.event_id());
    file["sender"] = json!(pdu.sender());
    file["sent_at"] = json!(sent_at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_filename_then_body() {
        let both = json!({"filename": "a.png", "body": "look at this"});
        assert_eq!(message_file_name(&both), Some("a.png"));
        assert_eq!(message_file_name(&json!({"body": "b.pdf"})), Some("b.pdf"));
        assert_eq!(message_file_name(&json!({"body": " "})), None);
    }
}
