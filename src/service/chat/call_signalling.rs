//! Calls through the Chat API: each action sends the Matrix VoIP event (version 1) into the
//! chat, so that Matrix clients in the room ring and answer as usual. The call log is then
//! read back from the records the ordered consumer of events made (see
//! [`observer`](super::observer)); each action first waits until that consumer has reached the
//! present, so that it acts on what the room says now.

use ruma::events::TimelineEventType;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Value, json};

use super::calls::{CallRecord, CallView, INVITE_LIFETIME_MS};
use super::friends::Friendship;
use super::observer::apply_call_event;
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::rooms::NewEvent;
use crate::util::{now_ms, random_string};

/// The VoIP version of the events sent.
const VOIP_VERSION: &str = "1";
/// The length of the call IDs made here.
const CALL_ID_LEN: usize = 32;

/// Who a call is for.
#[derive(Debug, Clone)]
pub enum CallTarget {
    /// A friend: the call rings them in the direct chat.
    Friend(OwnedUserId),
    /// A group the caller has joined: the call rings every member.
    Group(OwnedRoomId),
}

/// Why a call action was refused.
#[derive(Debug)]
pub enum CallRefused {
    /// The callee is not a friend of the caller.
    NotFriends,
    /// No such call among the user's (or no such group among theirs).
    NotFound,
    /// The caller cannot answer their own call.
    OwnCall,
    /// Someone already answered.
    AlreadyAnswered,
    /// The call is over for the user (ended, declined, expired).
    Ended,
}

/// What a refused or failed call action gives.
pub enum CallFailure {
    Refused(CallRefused),
    Failed(Error),
}

impl From<Error> for CallFailure {
    fn from(error: Error) -> Self {
        CallFailure::Failed(error)
    }
}

impl From<crate::storage::StorageError> for CallFailure {
    fn from(error: crate::storage::StorageError) -> Self {
        CallFailure::Failed(error.into())
    }
}

impl From<CallRefused> for CallFailure {
    fn from(refused: CallRefused) -> Self {
        CallFailure::Refused(refused)
    }
}

pub type CallResult<T> = std::result::Result<T, CallFailure>;

/// The party of a user's device in a call (VoIP version 1 `party_id`).
fn party_id(device_id: &str) -> &str {
    device_id
}

impl Services {
    /// A call the user takes part in (its caller or a callee, still joined to its chat).
    pub fn call_of(&self, user: &UserId, call_id: &str) -> Result<Option<CallRecord>> {
        for record in self.chat.calls.with_id(call_id)? {
            if record.is_participant(user)
                && self.rooms.membership(&record.room_id, user)?.as_deref() == Some("join")
            {
                return Ok(Some(record));
            }
        }
        Ok(None)
    }

    /// Sends a call event; answers its event ID once it is durable.
    async fn sends_call_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        kind: TimelineEventType,
        content: Value,
    ) -> Result<OwnedEventId> {
        self.rooms
            .append(room_id, sender, NewEvent::message(kind, content), None)
            .await
    }

    /// The call as the event just sent (`sent`, durable) made it. Waits for the ordered
    /// consumer of events first; when that wait gives up (the consumer is behind), the answer
    /// is worked out from the event itself exactly as the consumer will record it, so an
    /// action whose event is in the room always answers with the call.
    async fn recorded_call(
        &self,
        user: &UserId,
        call_id: &str,
        room_id: &RoomId,
        sent: &EventId,
    ) -> CallResult<CallView> {
        self.chat_caught_up().await;
        let behind = || Error::internal("a call event just sent is not stored");
        let pdu = self.rooms.pdu(sent)?.ok_or_else(behind)?;
        let position = self.rooms.event_meta(sent)?.ok_or_else(behind)?.stream_pos;
        let record = match self.chat.calls.get(call_id, room_id.as_str())? {
            Some(mut record) => {
                if record.applied_upto < position {
                    let content: Value =
                        serde_json::from_str(pdu.content().get()).map_err(Error::from)?;
                    apply_call_event(&mut record, position, &pdu, &content);
                }
                record
            }
            None => self
                .call_of_invite(position, &pdu)?
                .ok_or_else(|| Error::internal("a call invite just sent makes no call"))?,
        };
        Ok(record.view(user, now_ms()))
    }

    /// `POST /call/start`: sends `m.call.invite` into the friend's direct chat (naming them as
    /// `invitee`) or into the group (no `invitee`: every member rings).
    pub async fn start_call(
        &self,
        caller: &UserId,
        device_id: &str,
        target: CallTarget,
        sdp_offer: &str,
    ) -> CallResult<CallView> {
        let (room_id, invitee) = match target {
            CallTarget::Friend(peer) => match self.friendship(caller, &peer)? {
                Friendship::Friends(room) if !self.blocked_between(caller, &peer)? => {
                    (room, Some(peer))
                }
                _ => return Err(CallRefused::NotFriends.into()),
            },
            CallTarget::Group(room) => {
                if self.rooms.membership(&room, caller)?.as_deref() != Some("join") {
                    return Err(CallRefused::NotFound.into());
                }
                (room, None)
            }
        };
        let call_id = random_string(CALL_ID_LEN);
        let mut content = json!({
            "call_id": call_id,
            "party_id": party_id(device_id),
            "version": VOIP_VERSION,
            "lifetime": INVITE_LIFETIME_MS,
            "offer": { "type": "offer", "sdp": sdp_offer },
        });
        if let Some(invitee) = &invitee {
            content["invitee"] = json!(invitee);
        }
        let sent = self
            .sends_call_event(&room_id, caller, TimelineEventType::CallInvite, content)
            .await?;
        self.recorded_call(caller, &call_id, &room_id, &sent).await
    }

    /// `POST /call/answer`: sends `m.call.answer`.
    pub async fn answer_call(
        &self,
        user: &UserId,
        device_id: &str,
        call_id: &str,
        sdp_answer: &str,
    ) -> CallResult<CallView> {
        self.chat_caught_up().await;
        let record = self.call_of(user, call_id)?.ok_or(CallRefused::NotFound)?;
        if record.caller == user {
            return Err(CallRefused::OwnCall.into());
        }
        if record.answered_at.is_some() {
            return Err(CallRefused::AlreadyAnswered.into());
        }
        if record.is_over_for(user, now_ms()) {
            return Err(CallRefused::Ended.into());
        }
        let content = json!({
            "call_id": call_id,
            "party_id": party_id(device_id),
            "version": VOIP_VERSION,
            "answer": { "type": "answer", "sdp": sdp_answer },
        });
        let sent = self
            .sends_call_event(
                &record.room_id,
                user,
                TimelineEventType::CallAnswer,
                content,
            )
            .await?;
        self.recorded_call(user, call_id, &record.room_id, &sent)
            .await
    }

    /// `POST /call/candidates`: sends `m.call.candidates` (ICE candidates, as given).
    pub async fn send_call_candidates(
        &self,
        user: &UserId,
        device_id: &str,
        call_id: &str,
        candidates: Vec<Value>,
    ) -> CallResult<()> {
        self.chat_caught_up().await;
        let record = self.call_of(user, call_id)?.ok_or(CallRefused::NotFound)?;
        if record.is_over_for(user, now_ms()) {
            return Err(CallRefused::Ended.into());
        }
        let content = json!({
            "call_id": call_id,
            "party_id": party_id(device_id),
            "version": VOIP_VERSION,
            "candidates": candidates,
        });
        self.sends_call_event(
            &record.room_id,
            user,
            TimelineEventType::CallCandidates,
            content,
        )
        .await?;
        Ok(())
    }

    /// `POST /call/end`: the caller or the callee who answered hangs up (`m.call.hangup`); a
    /// callee who has not answered rejects the call (`m.call.reject`, or a hangup when the
    /// invite was of VoIP version 0, which has no rejection).
    pub async fn end_call(
        &self,
        user: &UserId,
        device_id: &str,
        call_id: &str,
        reason: Option<&str>,
    ) -> CallResult<CallView> {
        self.chat_caught_up().await;
        let record = self.call_of(user, call_id)?.ok_or(CallRefused::NotFound)?;
        let now = now_ms();
        if record.ended_at.is_some() || record.has_declined(user) {
            return Err(CallRefused::Ended.into());
        }
        let mut content = json!({
            "call_id": call_id,
            "party_id": party_id(device_id),
            "version": VOIP_VERSION,
        });
        let kind = if record.caller == user || record.answered_by.as_deref() == Some(user) {
            let default = if record.expired(now) {
                "invite_timeout"
            } else {
                "user_hangup"
            };
            content["reason"] = json!(reason.unwrap_or(default));
            TimelineEventType::CallHangup
        } else if record.answered_at.is_some() {
            return Err(CallRefused::AlreadyAnswered.into());
        } else if record.expired(now) {
            return Err(CallRefused::Ended.into());
        } else if self.invite_version(&record)?.as_deref() == Some(VOIP_VERSION) {
            TimelineEventType::CallReject
        } else {
            content["version"] = json!(0);
            TimelineEventType::CallHangup
        };
        let sent = self
            .sends_call_event(&record.room_id, user, kind, content)
            .await?;
        self.recorded_call(user, call_id, &record.room_id, &sent)
            .await
    }

    /// The VoIP version of a call's invite (`"1"`, or `"0"` for the integer 0).
    fn invite_version(&self, record: &CallRecord) -> Result<Option<String>> {
        let Some(invite) = self.rooms.pdu(&record.invite_event_id)? else {
            return Ok(None);
        };
        let content: Value = serde_json::from_str(invite.content().get())?;
        Ok(match content.get("version") {
            Some(Value::String(version)) => Some(version.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
    }

    /// `GET /calls`: the user's calls with an invite before stream position `before`, newest
    /// first, at most `limit`; with the position to continue from when there are more.
    ///
    /// Calls with users the user blocks (`m.ignored_user_list`, as the notification feed
    /// leaves out their notifications) are left out: a call from a blocked caller, and a call
    /// of the user's own whose every callee they block.
    pub async fn call_log(
        &self,
        user: &UserId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<CallView>, Option<u64>)> {
        self.chat_caught_up().await;
        let now = now_ms();
        let ignored = self.account_data.ignored_users(user)?;
        let mut calls = Vec::new();
        let mut next = None;
        for item in self.chat.calls.log_before(user, before.unwrap_or(u64::MAX)) {
            let (position, record) = item?;
            let with_blocked = if record.caller == user {
                !record.callees.is_empty() && record.callees.iter().all(|c| ignored.contains(c))
            } else {
                ignored.contains(&record.caller)
            };
            if with_blocked {
                continue;
            }
            if calls.len() == limit {
                next = Some(position + 1);
                break;
            }
            calls.push(record.view(user, now));
        }
        Ok((calls, next))
    }
}
