//! Chat API: what is done to a sent message, each the Matrix way so that Matrix clients show it
//! the same: an edit is an `m.replace` event carrying `m.new_content`, a delete is a redaction,
//! a reaction is an `m.annotation` (`m.reaction` event) and removing it redacts it, reading is
//! an `m.read` receipt.
//!
//! - `PUT /messages/{id}` `{text}` → 200 Message (its sender only).
//! - `DELETE /messages/{id}` → 204 (its sender; in a group also an admin).
//! - `POST /messages/{id}/reactions` `{key}` → 201 `{key, message_id}`;
//!   `DELETE /messages/{id}/reactions` `{key}` → 204.
//! - `POST /messages/{id}/read` → 204; `GET /messages/{id}/status` → 200 MessageStatus +
//!   `{message_id}`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use ruma::events::TimelineEventType;
use ruma::{EventId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ChatError, ChatResult};
use super::extract::{ChatAuth, ChatJson, ChatPath};
use super::message_model::message_status;
use super::messages::{check_text, ensure_may_write, message_json, visible_message};
use crate::api::Routes;
use crate::api::extract::AppState;
use crate::core::relation::{ANNOTATION, REPLACE};
use crate::error::Error;
use crate::service::rooms::NewEvent;

/// The longest reaction key, in bytes.
const MAX_KEY_BYTES: usize = 64;

pub(super) fn routes(routes: Routes) -> Routes {
    routes
        .route("/messages/{id}/reactions", post(react).delete(unreact))
        .route("/messages/{id}/read", post(read))
        .route("/messages/{id}/status", get(status))
}

#[derive(Deserialize)]
pub(super) struct EditBody {
    text: String,
}

/// The message types whose text an edit replaces (of files, the caption).
const EDITABLE: &[&str] = &[
    "m.text", "m.notice", "m.emote", "m.image", "m.file", "m.video", "m.audio",
];

fn deleted() -> ChatError {
    ChatError::invalid("the message was deleted")
}

/// `PUT /messages/{id}`.
pub(super) async fn edit(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<EditBody>,
) -> ChatResult<Json<Value>> {
    let user = &auth.user_id;
    let (event_id, pdu, meta) = visible_message(&state, user, &id)?;
    if pdu.sender() != user {
        return Err(ChatError::forbidden("only the sender can edit a message"));
    }
    if state.rooms.redacted_by(&event_id)?.is_some() {
        return Err(deleted());
    }
    let original: Value = serde_json::from_str(pdu.content().get()).map_err(Error::internal)?;
    let msgtype = original["msgtype"].as_str().unwrap_or_default();
    if *pdu.kind() != TimelineEventType::RoomMessage || !EDITABLE.contains(&msgtype) {
        return Err(ChatError::invalid(
            "only text messages and captions can be edited",
        ));
    }
    let is_file = !matches!(msgtype, "m.text" | "m.notice" | "m.emote");
    check_text(&body.text, !is_file)?;
    ensure_may_write(&state, user, &meta.room_id)?;
    let mut new_content = original.as_object().cloned().unwrap_or_default();
    for field in ["m.relates_to", "m.new_content", "format", "formatted_body"] {
        new_content.remove(field);
    }
    if is_file && !new_content.contains_key("filename") {
        // The body was the file name; it moves to `filename` so that the text is a caption.
        if let Some(name) = new_content.get("body").cloned() {
            new_content.insert("filename".into(), name);
        }
    }
    new_content.insert("body".into(), json!(body.text));
    let mut content = Map::new();
    content.insert("msgtype".into(), json!(msgtype));
    content.insert("body".into(), json!(edit_fallback(&body.text)));
    content.insert("m.new_content".into(), Value::Object(new_content));
    content.insert(
        "m.relates_to".into(),
        json!({ "rel_type": REPLACE, "event_id": event_id }),
    );
    // Mentions of the original are not notified again.
    content.insert("m.mentions".into(), json!({}));
    state
        .rooms
        .append(
            &meta.room_id,
            user,
            NewEvent::message(TimelineEventType::RoomMessage, Value::Object(content)),
            None,
        )
        .await?;
    Ok(Json(message_json(&state, user, &event_id)?))
}

/// The longest part of an edited text that the fallback `body` of the edit repeats, in
/// characters. The edit carries the full text once, in `m.new_content`; the fallback is only
/// for clients that do not understand edits, so a long text is cut there and the event stays
/// within the event size limit for every text that `check_text` accepts.
const EDIT_FALLBACK_CHARS: usize = 256;

/// The fallback `body` of an edit: `* ` and the new text, cut to [`EDIT_FALLBACK_CHARS`]
/// characters with `…` when longer.
fn edit_fallback(text: &str) -> String {
    match text.char_indices().nth(EDIT_FALLBACK_CHARS) {
        Some((cut, _)) => format!("* {}…", &text[..cut]),
        None => format!("* {text}"),
    }
}

/// Redacts an event as `user`.
async fn redact(
    state: &AppState,
    room_id: &RoomId,
    user: &UserId,
    target: &EventId,
) -> ChatResult<()> {
    let redaction = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        state_key: None,
        content: json!({}),
        redacts: Some(target.to_owned()),
    };
    state.rooms.append(room_id, user, redaction, None).await?;
    Ok(())
}

/// `DELETE /messages/{id}`: a message already deleted stays deleted (204). Another member's
/// message may be deleted only in a group, by a member the room's power levels allow to redact
/// others' events (an admin).
pub(super) async fn delete(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    let user = &auth.user_id;
    let (event_id, pdu, meta) = visible_message(&state, user, &id)?;
    if state.rooms.redacted_by(&event_id)?.is_some() {
        return Ok(StatusCode::NO_CONTENT);
    }
    if pdu.sender() != user && state.dm_peer(user, &meta.room_id)?.is_some() {
        return Err(ChatError::forbidden(
            "only the sender can delete a message of a direct chat",
        ));
    }
    redact(&state, &meta.room_id, user, &event_id)
        .await
        .map_err(|e| match e.status {
            StatusCode::FORBIDDEN => {
                ChatError::forbidden("only the sender or a group admin can delete a message")
            }
            _ => e,
        })?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
pub(super) struct ReactionBody {
    key: String,
}

fn check_key(key: &str) -> ChatResult<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ChatError::invalid(format!(
            "key: 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `POST /messages/{id}/reactions`: 409 `duplicate_reaction` when the caller already reacted
/// with this key.
async fn react(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<ReactionBody>,
) -> ChatResult<(StatusCode, Json<Value>)> {
    check_key(&body.key)?;
    let user = &auth.user_id;
    let (event_id, _, meta) = visible_message(&state, user, &id)?;
    if state.rooms.redacted_by(&event_id)?.is_some() {
        return Err(deleted());
    }
    ensure_may_write(&state, user, &meta.room_id)?;
    let content = json!({
        "m.relates_to": { "rel_type": ANNOTATION, "event_id": event_id, "key": body.key },
    });
    let sent = state
        .rooms
        .append(
            &meta.room_id,
            user,
            NewEvent::message(TimelineEventType::Reaction, content),
            None,
        )
        .await;
    match sent {
        Ok(_) => Ok((
            StatusCode::CREATED,
            Json(json!({ "key": body.key, "message_id": event_id })),
        )),
        Err(Error::DuplicateAnnotation(_)) => Err(ChatError::new(
            StatusCode::CONFLICT,
            "duplicate_reaction",
            "you already reacted with this key",
        )),
        Err(other) => Err(other.into()),
    }
}

/// `DELETE /messages/{id}/reactions`: redacts the caller's reaction with the key (404 when
/// there is none).
async fn unreact(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
    ChatJson(body): ChatJson<ReactionBody>,
) -> ChatResult<StatusCode> {
    check_key(&body.key)?;
    let user = &auth.user_id;
    let (event_id, _, meta) = visible_message(&state, user, &id)?;
    let mine: Vec<_> = state
        .rooms
        .children(&event_id)?
        .into_iter()
        .filter(|(_, child)| {
            child.rel_type == ANNOTATION
                && child.kind == "m.reaction"
                && child.sender == *user
                && child.key.as_deref() == Some(body.key.as_str())
        })
        .collect();
    if mine.is_empty() {
        return Err(ChatError::not_found("no such reaction of yours"));
    }
    for (_, child) in mine {
        redact(&state, &meta.room_id, user, &child.event_id).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /messages/{id}/read`: a public read receipt (`m.read`) on the message, which also
/// marks every earlier message of the chat read.
async fn read(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<StatusCode> {
    let user = &auth.user_id;
    let (event_id, _, meta) = visible_message(&state, user, &id)?;
    state
        .send_receipt(user, &meta.room_id, "m.read", &event_id, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /messages/{id}/status`.
async fn status(
    State(state): State<AppState>,
    ChatAuth(auth): ChatAuth,
    ChatPath(id): ChatPath<String>,
) -> ChatResult<Json<Value>> {
    let (event_id, _, _) = visible_message(&state, &auth.user_id, &id)?;
    let mut status = message_status(&state, &auth.user_id, &event_id)?;
    status["message_id"] = json!(event_id);
    Ok(Json(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaction_keys() {
        assert!(check_key("👍").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key(&"a".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn edit_fallbacks_are_short() {
        assert_eq!(edit_fallback("hi"), "* hi");
        let long = "é".repeat(EDIT_FALLBACK_CHARS + 10);
        let fallback = edit_fallback(&long);
        assert_eq!(fallback.chars().count(), EDIT_FALLBACK_CHARS + 3);
        assert!(fallback.ends_with('…'));
    }
}
