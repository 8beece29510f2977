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
//! | `group.updated` | `{group_id, change, by, user_id?, membership?, previous_membership?, member?, group}` |
//! | `call.invite` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, kind, sdp_offer, lifetime_ms}` |
//! | `call.answer` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, sdp_answer}` |
//! | `call.candidates` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, candidates}` |
//! | `call.hangup` | `{call_id, chat_id, event_id, from, party_id, sent_at, call, reason, rejected}` |
//! | `notification` | Notification (a new entry of `GET /notifications`) |
//!
//! `call` is the call log's Call object as it stands when the frame is made (null when there
//! is no record of it). `reactions` is the message's reaction summary after the change (as in
//! Message). A removed
//! reaction is named by its ID only: its key was redacted with it.
//!
//! `group` is a summary of the group after the change, `{id, name, topic, picture_url,
//! member_count, my_role, my_membership}`, or null when the user is no longer in the group;
//! `member` (`{user, role}`) is the member a member change is about. A frame never lists every
//! member: every member gets one per change, so a full list would cost the square of the
//! group's size (`GET /groups/{id}` has the list).
//!
//! Call signalling comes from any Matrix client, so its content is checked, not copied: an
//! event without a string `call_id` is left out; `party_id` and `sdp_answer` are strings or
//! null, `lifetime_ms` a non-negative integer or null, `sdp_offer` a string (empty when
//! missing); `candidates` keeps the entries that are objects with a string `candidate` (with
//! `sdpMid` a string or null and `sdpMLineIndex` a non-negative integer or null), and an
//! `m.call.candidates` event with none is left out.

use ruma::events::StateEventType;
use ruma::{RoomId, UserId};
use serde_json::{Value, json};

use super::super::error::{ChatError, ChatResult};
use super::super::group_model::{GroupState, group_membership};
use super::super::model::{media_url, message, user_summary};
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
            let (group, member) = match group_state(state, room)? {
                Some(group) => {
                    let member = match change {
                        GroupChange::Member { user, .. } => Some(json!({
                            "user": user_summary(state, user)?,
                            "role": role(&group, user)?,
                        })),
                        _ => None,
                    };
                    (group_summary(state, &group, viewer)?, member)
                }
                None => (Value::Null, None),
            };
            if let Some(member) = member {
                data["member"] = member;
            }
            data["group"] = group;
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
            // A call is known by its ID: signalling without one is of no use.
            let Some(call_id) = content["call_id"].as_str() else {
                return Ok(None);
            };
            let mut data = json!({
                "call_id": call_id,
                "chat_id": room,
                "event_id": event,
                "from": sender,
                "party_id": content["party_id"].as_str(),
                "sent_at": at,
            });
            let kind = match signal {
                CallSignal::Invite => {
                    let sdp = content["offer"]["sdp"].as_str().unwrap_or("");
                    data["kind"] = json!(CallKind::of_sdp(sdp));
                    data["sdp_offer"] = json!(sdp);
                    data["lifetime_ms"] = json!(content["lifetime"].as_u64());
                    "call.invite"
                }
                CallSignal::Answer => {
                    data["sdp_answer"] = json!(content["answer"]["sdp"].as_str());
                    "call.answer"
                }
                CallSignal::Candidates => {
                    let candidates = candidates(&content["candidates"]);
                    if candidates.is_empty() {
                        return Ok(None);
                    }
                    data["candidates"] = Value::Array(candidates);
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
            let record = state.chat.calls.get(call_id, room.as_str())?;
            data["call"] = serde_json::to_value(record.map(|r| r.view(viewer, now_ms())))?;
            Some((kind, data))
        }
        ChatEvent::Notification(view) => Some(("notification", serde_json::to_value(view)?)),
    })
}

/// The well-formed ICE candidates of an `m.call.candidates` content's `candidates`: objects
/// with a string `candidate`, their `sdpMid` a string or null and `sdpMLineIndex` a
/// non-negative integer or null (other fields are kept as sent).
fn candidates(raw: &Value) -> Vec<Value> {
    let Some(raw) = raw.as_array() else {
        return Vec::new();
    };
    raw.iter()
        .filter(|c| c["candidate"].is_string())
        .filter_map(|c| {
            let mut c = c.as_object()?.clone();
            let mid = c.get("sdpMid").and_then(Value::as_str).map(str::to_owned);
            let index = c.get("sdpMLineIndex").and_then(Value::as_u64);
            c.insert("sdpMid".to_owned(), json!(mid));
            c.insert("sdpMLineIndex".to_owned(), json!(index));
            Some(Value::Object(c))
        })
        .collect()
}

/// The group's current state, or `None` when the room is unknown.
fn group_state(state: &AppState, room: &RoomId) -> ChatResult<Option<GroupState>> {
    match GroupState::load(state, room) {
        Ok(group) => Ok(Some(group)),
        Err(ChatError { code, .. }) if code == "not_found" => Ok(None),
        Err(e) => Err(e),
    }
}

fn role(group: &GroupState, user: &UserId) -> ChatResult<&'static str> {
    Ok(if group.is_admin(user)? {
        "admin"
    } else {
        "member"
    })
}

/// `{id, name, topic, picture_url, member_count, my_role, my_membership}` of a group as
/// `viewer` sees it, or null when they are not (or no longer) in it. `member_count` counts the
/// joined and invited members, as the Group's `members` list does.
fn group_summary(state: &AppState, group: &GroupState, viewer: &UserId) -> ChatResult<Value> {
    let Some(my_membership) = group_membership(state, viewer, &group.room_id)? else {
        return Ok(Value::Null);
    };
    let text = |kind: StateEventType, field: &str| -> ChatResult<Option<String>> {
        Ok(group
            .content(state, kind)?
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned))
    };
    Ok(json!({
        "id": group.room_id,
        "name": text(StateEventType::RoomName, "name")?.unwrap_or_default(),
        "topic": text(StateEventType::RoomTopic, "topic")?,
        "picture_url": text(StateEventType::RoomAvatar, "url")?.and_then(|u| media_url(&u)),
        "member_count": group.members(state)?.len(),
        "my_role": role(group, viewer)?,
        "my_membership": my_membership.as_str(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_keep_only_well_formed_entries() {
        assert!(candidates(&json!("not a list")).is_empty());
        assert!(candidates(&Value::Null).is_empty());
        let kept = candidates(&json!([
            { "candidate": "a", "sdpMid": "0", "sdpMLineIndex": 1, "usernameFragment": "u" },
            { "candidate": "b", "sdpMid": 5, "sdpMLineIndex": -1 },
            { "candidate": 3 },
            "junk",
        ]));
        assert_eq!(
            kept,
            vec![
                json!({ "candidate": "a", "sdpMid": "0", "sdpMLineIndex": 1, "usernameFragment": "u" }),
                json!({ "candidate": "b", "sdpMid": null, "sdpMLineIndex": null }),
            ]
        );
    }
}
