//! Stream events as frames: the `type` and `data` of each [`ChatEvent`], with the objects the
//! REST endpoints return (Message, Group, FriendRequest, Friend) read when the frame is made.
//!
//! | type | data |
//! |---|---|
//! | `message.new`, `message.edited` | Message (an edit: the message as it now reads) |
//! | `message.deleted` | `{message_id, chat_id, deleted_by}` |
//! | `reaction.added` | `{message_id, chat_id, reaction_id, key, user_id, reactions}` |
//! | `reaction.removed` | `{message_id, chat_id, reaction_id, user_id, reactions}` |
//! | `receipt` | `{chat_id, message_id, user_id, state: "read"\|"delivered", at}` |
//! | `typing` | `{chat_id, user_ids}` (who types now, the user left out) |
//! | `presence` | `{user_id, presence, online, last_seen_at, status_message}` (friends only) |
//! | `friend.request` | FriendRequest `{user, chat_id, direction, sent_at}` |
//! | `friend.accepted` | Friend-like `{user, chat_id, since}` |
//! | `friend.removed` | `{user_id, chat_id, reason: "declined"\|"cancelled"\|"removed"}` |
//! | `group.updated` | `{group_id, change, by, user_id?, membership?, previous_membership?, group}` |
//! | `call.invite` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, kind, sdp_offer, lifetime_ms}` |
//! | `call.answer` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, sdp_answer}` |
//! | `call.candidates` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, candidates}` |
//! | `call.hangup` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, reason, rejected}` |
//! | `notification` | Notification (a new entry of `GET /notifications`) |
//!
//! `call` is the call log's Call object as it stands when the frame is made (null when there
//! is no record of it). `reactions` is the message's reaction summary after the change (as in
//! Message). A removed
//! reaction is named by its ID only: its key was redacted with it. `group` is the Group object
//! after the change, or null when the user is no longer in the group.

use ruma::UserId;
use serde_json::{Value, json};

use super::super::error::{ChatError, ChatResult};
use super::super::group_model::group_json;
use super::super::model::{message, user_summary};
use crate::api::extract::AppState;
use crate::service::chat::calls::CallKind;
use crate::service::chat::stream::{CallSignal, ChatEvent, GroupChange};
use crate::util::now_ms;

/// The frame type and data of `event` for `viewer`, or `None` when there is nothing to show
/// (the message is no longer visible to them, say).
pub(super) fn render(
    state: &AppState,
    viewer: &UserId,
    event: &ChatEvent,
) -> ChatResult<Option<(&'static str, Value)>> {
    Ok(match event {
        ChatEvent::MessageNew { message: id, .. } => {
            message(state, viewer, id)?.map(|m| ("message.new", m))
        }
        ChatEvent::MessageEdited { message: id, .. } => {
            message(state, viewer, id)?.map(|m| ("message.edited", m))
        }
        ChatEvent::MessageDeleted { room, message, by } => Some((
            "message.deleted",
            json!({ "message_id": message, "chat_id": room, "deleted_by": by }),
        )),
        ChatEvent::ReactionAdded {
            room,
            message: id,
            reaction,
            key,
            user,
        } => message(state, viewer, id)?.map(|m| {
            (
                "reaction.added",
                json!({
                    "message_id": id,
                    "chat_id": room,
                    "reaction_id": reaction,
                    "key": key,
                    "user_id": user,
                    "reactions": m["reactions"],
                }),
            )
        }),
        ChatEvent::ReactionRemoved {
            room,
            message: id,
            reaction,
            user,
        } => message(state, viewer, id)?.map(|m| {
            (
                "reaction.removed",
                json!({
                    "message_id": id,
                    "chat_id": room,
                    "reaction_id": reaction,
                    "user_id": user,
                    "reactions": m["reactions"],
                }),
            )
        }),
        ChatEvent::Receipt {
            room,
            message,
            user,
            read,
            at,
        } => Some((
            "receipt",
            json!({
                "chat_id": room,
                "message_id": message,
                "user_id": user,
                "state": if *read { "read" } else { "delivered" },
                "at": at,
            }),
        )),
        ChatEvent::Typing { room, users } => {
            Some(("typing", json!({ "chat_id": room, "user_ids": users })))
        }
        ChatEvent::Presence { user, content } => Some(("presence", presence(user, content))),
        ChatEvent::FriendRequest {
            room,
            peer,
            incoming,
            at,
        } => Some((
            "friend.request",
            json!({
                "user": user_summary(state, peer)?,
                "chat_id": room,
                "direction": if *incoming { "incoming" } else { "outgoing" },
                "sent_at": at,
            }),
        )),
        ChatEvent::FriendAccepted { room, peer, at } => Some((
            "friend.accepted",
            json!({ "user": user_summary(state, peer)?, "chat_id": room, "since": at }),
        )),
        ChatEvent::FriendRemoved { room, peer, reason } => Some((
            "friend.removed",
            json!({ "user_id": peer, "chat_id": room, "reason": reason.as_str() }),
        )),
        ChatEvent::GroupUpdated { room, change, by } => {
            let mut data = json!({ "group_id": room, "by": by });
            data["change"] = json!(match change {
                GroupChange::Name => "name",
                GroupChange::Topic => "topic",
                GroupChange::Picture => "picture",
                GroupChange::Roles => "roles",
                GroupChange::Member {
                    user,
                    membership,
                    previous,
                } => {
                    data["user_id"] = json!(user);
                    data["membership"] = json!(membership);
                    data["previous_membership"] = json!(previous);
                    "member"
                }
            });
            data["group"] = match group_json(state, room, viewer) {
                Ok(group) => group,
                // No longer (or not yet) in the group: the change is all there is to show.
                Err(ChatError { code, .. }) if code == "not_found" => Value::Null,
                Err(e) => return Err(e),
            };
            Some(("group.updated", data))
        }
        ChatEvent::Call {
            signal,
            room,
            event,
            sender,
            content,
            at,
        } => {
            let mut data = json!({
                "call_id": content["call_id"],
                "chat_id": room,
                "event_id": event,
                "from": sender,
                "party_id": content["party_id"],
                "sent_at": at,
            });
            let kind = match signal {
                CallSignal::Invite => {
                    let sdp = content["offer"]["sdp"].as_str().unwrap_or("");
                    data["kind"] = json!(CallKind::of_sdp(sdp));
                    data["sdp_offer"] = json!(sdp);
                    data["lifetime_ms"] = content["lifetime"].clone();
                    "call.invite"
                }
                CallSignal::Answer => {
                    data["sdp_answer"] = content["answer"]["sdp"].clone();
                    "call.answer"
                }
                CallSignal::Candidates => {
                    data["candidates"] = content["candidates"].clone();
                    "call.candidates"
                }
                CallSignal::Hangup | CallSignal::Reject => {
                    let rejected = *signal == CallSignal::Reject;
                    let default = if rejected { "rejected" } else { "user_hangup" };
                    data["reason"] = json!(content["reason"].as_str().unwrap_or(default));
                    data["rejected"] = json!(rejected);
                    "call.hangup"
                }
            };
            // The call log's record as it stands now (written in order with the events, before
            // the stream reads them).
            let record = match content["call_id"].as_str() {
                Some(call_id) => state.chat.calls.get(call_id, room.as_str())?,
                None => None,
            };
            data["call"] = serde_json::to_value(record.map(|r| r.view(viewer, now_ms())))?;
            Some((kind, data))
        }
        ChatEvent::Notification(view) => Some(("notification", serde_json::to_value(view)?)),
    })
}

/// `{user_id, presence, online, last_seen_at, status_message}` from a Matrix presence content.
fn presence(user: &UserId, content: &Value) -> Value {
    let presence = content["presence"].as_str().unwrap_or("offline");
    let last_seen_at = content["last_active_ago"]
        .as_u64()
        .map(|ago| now_ms().saturating_sub(ago));
    json!({
        "user_id": user,
        "presence": presence,
        "online": presence == "online",
        "last_seen_at": last_seen_at,
        "status_message": content["status_msg"],
    })
}
