//! Chat API: sending messages. A message is an `m.room.message` event of the chat's
//! room (a friend's direct chat, or a group); see `message_model` for the Message object and
//! `message_actions` for what is done to a sent message (edit, delete, reactions, receipts).
//!
//! - `POST /messages` → 201 Message: to a friend (user ID or username) or a group (room ID).
//! - `GET /messages/{id}` (a friend) and `GET /messages/group/{id}`: see `message_history`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson};
use super::file_model::{image_dimensions, mxc_uri, own_file};
use super::message_model::{self, AttachedFile, NewMessage, is_message_event};
use super::users::{existing_user, parse_user};
use super::{message_actions, message_history};
use crate::api::Routes;
use crate::api::extract::{AppState, parse_event_id, parse_room_id};
use crate::core::Pdu;
use crate::service::chat::friends::Friendship;
use crate::service::rooms::{EventMeta, NewEvent, Txn};

/// The longest message text, in bytes.
pub(super) const MAX_TEXT_BYTES: usize = 32 * 1024;
/// The most users one message may mention.
const MAX_MENTIONS: usize = 100;
/// The longest `client_txn_id`, in bytes.
const MAX_TXN_ID_BYTES: usize = 255;

pub(super) fn routes(routes: Routes) -> Routes {
    let routes = routes
        .route("/messages", post(send))
        .route("/messages/group/{id}", get(message_history::group))
        .route(
            "/messages/{id}",
            get(message_history::direct)
                .put(message_actions::edit)
                .delete(message_actions::delete),
        );
    message_actions::routes(routes)
}

/// 403 `not_friends`.
pub(super) fn not_friends() -> ChatError {
    ChatError::new(
        StatusCode::FORBIDDEN,
        "not_friends",
        "only friends can message each other",
    )
}

/// 403 `blocked`.
fn blocked() -> ChatError {
    ChatError::new(
        StatusCode::FORBIDDEN,
        "blocked",
        "one of you blocks the other",
    )
}

pub(super) fn no_such_chat() -> ChatError {
    ChatError::not_found("no such chat")
}

/// Whether `user` is joined to the room (and has not forgotten it).
pub(super) fn is_joined(state: &AppState, room_id: &RoomId, user: &UserId) -> ChatResult<bool> {
    Ok(
        state.rooms.membership(room_id, user)?.as_deref() == Some("join")
            && !state.rooms.is_forgotten(room_id, user)?,
    )
}

/// 403 unless the chat is a group, or the direct chat of current friends (writing to a direct
/// chat needs the friendship, reading and deleting one's own messages do not).
pub(super) fn ensure_may_write(
    state: &AppState,
    user: &UserId,
    room_id: &RoomId,
) -> ChatResult<()> {
    let Some(peer) = state.dm_peer(user, room_id)? else {
        return Ok(());
    };
    if state.blocked_between(user, &peer)? {
        return Err(blocked());
    }
    match state.friendship(user, &peer)? {
        Friendship::Friends(room) if room == room_id => Ok(()),
        _ => Err(not_friends()),
    }
}

/// A message the caller may see, in a chat they are joined to: 400 for a malformed ID, 404 for
/// anything else (unknown, another chat's, not a message).
pub(super) fn visible_message(
    state: &AppState,
    user: &UserId,
    raw: &str,
) -> ChatResult<(OwnedEventId, Arc<Pdu>, EventMeta)> {
    let event_id = parse_event_id(raw)?;
    let not_found = || ChatError::not_found("no such message");
    let meta = state.rooms.event_meta(&event_id)?.ok_or_else(not_found)?;
    let pdu = state.rooms.pdu(&event_id)?.ok_or_else(not_found)?;
    if !is_message_event(&pdu) || !is_joined(state, &meta.room_id, user)? {
        return Err(not_found());
    }
    let reader = state.rooms.reader(&meta.room_id, user)?;
    if !state.rooms.is_visible(&reader, &pdu, &meta)? {
        return Err(not_found());
    }
    Ok((event_id, pdu, meta))
}

/// The Message object of a message the caller just changed or sent.
pub(super) fn message_json(
    state: &AppState,
    user: &UserId,
    event_id: &EventId,
) -> ChatResult<Value> {
    message_model::message(state, user, event_id)?
        .ok_or_else(|| ChatError::not_found("no such message"))
}

#[derive(Deserialize)]
struct SendBody {
    to: String,
    text: Option<String>,
    file_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    reply_to: Option<String>,
    #[serde(default)]
    mentions: Vec<String>,
    client_txn_id: Option<String>,
}

/// Checks a message text: at most [`MAX_TEXT_BYTES`], and not blank when it is all there is.
pub(super) fn check_text(text: &str, required: bool) -> ChatResult<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(ChatError::invalid(format!(
            "text: at most {MAX_TEXT_BYTES} bytes"
        )));
    }
    if required && text.trim().is_empty() {
        return Err(ChatError::invalid("text: must not be empty"));
    }
    Ok(())
}

/// The `msgtype` of a Chat API message type.
fn msgtype_of(kind: &str) -> ChatResult<&'static str> {
    match kind {
        "text" => Ok("m.text"),
        "image" => Ok("m.image"),
        "file" => Ok("m.file"),
        "video" => Ok("m.video"),
        "audio" => Ok("m.audio"),
        other => Err(ChatError::invalid(format!(
            "type: one of text, image, file, video, audio, not {other:?}"
        ))),
    }
}

/// The file message type that suits a MIME type.
fn msgtype_for_mime(mime: &str) -> &'static str {
    match mime.split('/').next() {
        Some("image") => "m.image",
        Some("video") => "m.video",
        Some("audio") => "m.audio",
        _ => "m.file",
    }
}

/// The chat `to` names, checked for sending: a group (room ID) the caller is joined to, or a
/// friend (user ID or username) — whose direct chat is the room.
fn destination(state: &AppState, user: &UserId, to: &str) -> ChatResult<OwnedRoomId> {
    let to = to.trim();
    if to.starts_with('!') {
        let room_id = parse_room_id(to)?;
        if !is_joined(state, &room_id, user)? {
            return Err(no_such_chat());
        }
        ensure_may_write(state, user, &room_id)?;
        return Ok(room_id);
    }
    let peer = existing_user(state, to)?;
    if peer == user {
        return Err(ChatError::new(
            StatusCode::BAD_REQUEST,
            "self",
            "to: you cannot message yourself",
        ));
    }
    if state.blocked_between(user, &peer)? {
        return Err(blocked());
    }
    match state.friendship(user, &peer)? {
        Friendship::Friends(room) => Ok(room),
        _ => Err(not_friends()),
    }
}

/// `POST /messages`.
async fn send(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatJson(body): ChatJson<SendBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    let user = &auth.user_id;
    // Every field is checked before the destination, so a bad request is 400 whoever it is for.
    let file = body
        .file_id
        .as_deref()
        .map(|id| own_file(&state, user, "file_id", id))
        .transpose()?;
    let msgtype = match (body.kind.as_deref(), &file) {
        (Some(kind), _) => msgtype_of(kind)?,
        (None, Some((_, content))) => msgtype_for_mime(&content.content_type),
        (None, None) => "m.text",
    };
    match (msgtype, &file) {
        ("m.text", Some(_)) => {
            return Err(ChatError::invalid(
                "type: a message with a file_id is an image, file, video or audio",
            ));
        }
        ("m.text", None) => check_text(body.text.as_deref().unwrap_or_default(), true)?,
        (_, None) => return Err(ChatError::invalid("file_id: required for this type")),
        (_, Some(_)) => check_text(body.text.as_deref().unwrap_or_default(), false)?,
    }
    let mut mentions: Vec<OwnedUserId> = Vec::new();
    if body.mentions.len() > MAX_MENTIONS {
        return Err(ChatError::invalid(format!(
            "mentions: at most {MAX_MENTIONS} users"
        )));
    }
    for raw in &body.mentions {
        let mentioned = parse_user(&state, raw)
            .map_err(|e| ChatError::invalid(format!("mentions: {}", e.message)))?;
        if !mentions.contains(&mentioned) {
            mentions.push(mentioned);
        }
    }
    let reply_to = body.reply_to.as_deref().map(parse_event_id).transpose()?;
    let txn_id = match body.client_txn_id {
        Some(id) if id.is_empty() || id.len() > MAX_TXN_ID_BYTES => {
            return Err(ChatError::invalid(format!(
                "client_txn_id: 1 to {MAX_TXN_ID_BYTES} bytes"
            )));
        }
        other => other,
    };
    let room_id = destination(&state, user, &body.to)?;
    // Only members (joined or invited) can be mentioned: a mention notifies, and naming anyone
    // else would let a message reach people outside the chat.
    for mentioned in &mentions {
        let membership = state.rooms.membership(&room_id, mentioned)?;
        if !matches!(membership.as_deref(), Some("join" | "invite")) {
            return Err(ChatError::invalid(format!(
                "mentions: {mentioned} is not a member of this chat"
            )));
        }
    }
    if let Some(parent) = &reply_to {
        let in_chat = visible_message(&state, user, parent.as_str())
            .is_ok_and(|(_, _, meta)| meta.room_id == room_id);
        if !in_chat {
            return Err(ChatError::invalid("reply_to: no such message in this chat"));
        }
    }
    let file = match file {
        Some((record, content)) => {
            let dimensions = match msgtype {
                "m.image" => image_dimensions(&state, &content)
                    .await
                    .map(|d| (d.width, d.height)),
                _ => None,
            };
            let name = content
                .filename
                .clone()
                .unwrap_or_else(|| super::file_model::DEFAULT_FILE_NAME.to_owned());
            Some(AttachedFile {
                mxc: mxc_uri(&state, &record.media_id),
                name,
                mime_type: content.content_type.clone(),
                size: content.size,
                dimensions,
            })
        }
        None => None,
    };
    let text = body.text.as_deref().filter(|t| !t.is_empty());
    let content = NewMessage {
        msgtype,
        text,
        file,
        reply_to: reply_to.as_deref(),
        mentions: &mentions,
    }
    .content();
    let txn = txn_id.map(|txn_id| Txn {
        device_id: auth.device_id.clone(),
        txn_id,
    });
    let event_id = state
        .rooms
        .append(
            &room_id,
            user,
            NewEvent::message(TimelineEventType::RoomMessage, content),
            txn,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(message_json(&state, user, &event_id)?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types() {
        assert_eq!(msgtype_of("image").unwrap(), "m.image");
        assert!(msgtype_of("sticker").is_err());
        assert_eq!(msgtype_for_mime("image/png"), "m.image");
        assert_eq!(msgtype_for_mime("audio/ogg"), "m.audio");
        assert_eq!(msgtype_for_mime("application/pdf"), "m.file");
    }

    #[test]
    fn texts() {
        assert!(check_text("", true).is_err());
        assert!(check_text("  ", true).is_err());
        assert!(check_text("", false).is_ok());
        assert!(check_text(&"a".repeat(MAX_TEXT_BYTES + 1), false).is_err());
    }
}
