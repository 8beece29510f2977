//! Chat API: reading a conversation. `GET /messages/{id}` (a friend's direct chat) and
//! `GET /messages/group/{id}` → `{messages, next_cursor}`: the chat's messages, newest first, as
//! far as the room's history visibility lets the caller see; edits and reactions are folded into
//! their messages, state events are left out. Reading records a delivered receipt, as a `/sync`
//! that hands the messages to a Matrix client does.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::events::TimelineEventType;
use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use super::error::ChatResult;
use super::extract::{ChatAuth, ChatPath, ChatQuery};
use super::message_model::{ChatView, is_message_event};
use super::messages::{is_joined, no_such_chat};
use super::paging::PageQuery;
use super::users::existing_user;
use crate::api::extract::{AppState, parse_room_id};
use crate::core::Pdu;
use crate::core::filter::RoomEventFilter;
use crate::service::chat::friends::Friendship;
use crate::service::receipts::{NewReceipt, ReceiptKind};
use crate::service::rooms::read::PageRequest;

/// Timeline pages one history request walks at most (each bounded by the rooms service), so
/// that a chat with few messages among many other events cannot make a request scan it whole;
/// the answer then carries a cursor to continue.
const MAX_WALKS: usize = 4;

/// `GET /messages/{id}`: the direct chat with a friend.
pub(super) async fn direct(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatQuery(query): ChatQuery<PageQuery>,
) -> ChatResult<Json<Value>> {
    let limit = query.limit()?;
    let cursor = query.cursor()?;
    let peer = existing_user(&state, &id)?;
    let room_id = match state.friendship(&auth.user_id, &peer)? {
        Friendship::Friends(room) if !state.blocked_between(&auth.user_id, &peer)? => room,
        _ => return Err(no_such_chat()),
    };
    history(&state, &auth.user_id, &room_id, limit, cursor).await
}

/// `GET /messages/group/{id}`: a group the caller is joined to.
pub(super) async fn group(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatQuery(query): ChatQuery<PageQuery>,
) -> ChatResult<Json<Value>> {
    let limit = query.limit()?;
    let cursor = query.cursor()?;
    let room_id = parse_room_id(&id)?;
    if !is_joined(&state, &room_id, &auth.user_id)?
        || state.dm_peer(&auth.user_id, &room_id)?.is_some()
    {
        return Err(no_such_chat());
    }
    history(&state, &auth.user_id, &room_id, limit, cursor).await
}

/// One page of a chat's messages, newest first, before `cursor`: the timeline is paginated with
/// the rooms service (history visibility, redaction and bundled edits applied, events of
/// ignored users left out) and what is not a message is skipped.
async fn history(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    limit: usize,
    cursor: Option<u64>,
) -> ChatResult<Json<Value>> {
    let chat = ChatView::new(state, user, room_id)?;
    let reader = state.rooms.reader(room_id, user)?;
    let filter = RoomEventFilter {
        types: Some(vec![
            TimelineEventType::RoomMessage.to_string(),
            TimelineEventType::Sticker.to_string(),
            TimelineEventType::RoomEncrypted.to_string(),
        ]),
        not_senders: chat.viewer.ignored.iter().map(|u| u.to_string()).collect(),
        ..RoomEventFilter::default()
    };
    // (event, sender, stream position) of each message of the page.
    let mut found: Vec<(Value, Arc<Pdu>, u64)> = Vec::new();
    let mut from = cursor;
    let mut next_cursor = None;
    'walk: for walk in 0..MAX_WALKS {
        let page = state.rooms.paginate(
            room_id,
            &reader,
            &chat.viewer,
            PageRequest {
                from,
                to: None,
                backwards: true,
                // One more than needed says whether there is a next page.
                limit: limit + 1 - found.len(),
                filter: &filter,
            },
        )?;
        for event in page.chunk {
            let Some(event_id) = event["event_id"]
                .as_str()
                .and_then(|id| EventId::parse(id).ok())
            else {
                continue;
            };
            let (Some(pdu), Some(meta)) = (
                state.rooms.pdu(&event_id)?,
                state.rooms.event_meta(&event_id)?,
            ) else {
                continue;
            };
            if !is_message_event(&pdu) {
                continue;
            }
            if found.len() == limit {
                next_cursor = found.last().map(|(_, _, pos)| *pos);
                break 'walk;
            }
            found.push((event, pdu, meta.stream_pos));
        }
        match page.end {
            None => break,
            // Walked as far as one request may: continue from here next time.
            Some(end) if walk + 1 == MAX_WALKS => next_cursor = Some(end),
            Some(end) => from = Some(end),
        }
    }
    record_delivery(state, user, room_id, &found).await?;
    let messages = found
        .iter()
        .map(|(event, _, _)| chat.message(event))
        .collect::<crate::error::Result<Vec<Value>>>()?;
    Ok(Json(json!({
        "messages": messages,
        "next_cursor": next_cursor.map(|pos| pos.to_string()),
    })))
}

/// Records that the messages of a page reached `user`: a delivered receipt on the newest one
/// sent by someone else, for its sender (the receipt only moves forwards, so an older page
/// changes nothing).
async fn record_delivery(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
    page: &[(Value, Arc<Pdu>, u64)],
) -> ChatResult<()> {
    let Some((_, pdu, position)) = page.iter().find(|(_, pdu, _)| pdu.sender() != user) else {
        return Ok(());
    };
    let receipt = NewReceipt {
        room_id: room_id.to_owned(),
        kind: ReceiptKind::Delivered,
        user: user.to_owned(),
        thread: None,
        event_id: pdu.event_id().to_owned(),
        event_pos: *position,
        recipient: Some(pdu.sender().to_owned()),
    };
    let written = state.receipts.write(&[receipt])?;
    state.announce_receipts(&written).await?;
    Ok(())
}
