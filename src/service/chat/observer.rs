//! The Chat API's step in the ordered consumer of appended events.
//!
//! The push evaluator (`service::push::evaluate`) takes every appended event in stream order,
//! stores its progress and, after a restart, goes over what it had not reached. For each event
//! it also calls [`Services::observe_for_chat`], which keeps what push rules do not give:
//! - the call log: `m.call.invite` makes a [`CallRecord`], `m.call.answer`, `m.call.reject`
//!   and `m.call.hangup` move it on;
//! - a *missed call* notification for each callee when the caller hangs up unanswered;
//! - a *friend accepted* notification for the user who invited someone to a direct chat, when
//!   that someone joins.
//!
//! Events from Matrix clients count like those of the Chat API: only the room's events are
//! read. Every write is keyed by the event's stream position or applied once per position, so
//! going over an event again (after a crash) changes nothing.

use std::sync::Arc;

use ruma::OwnedUserId;
use ruma::events::{StateEventType, TimelineEventType};
use serde_json::Value;

use super::calls::{Applied, CallEvent, CallKind, CallRecord, MAX_CALLEES, MAX_LIFETIME_MS};
use super::feed::timestamp;
use super::notifications::{NotificationType, StoredNotification};
use crate::core::Pdu;
use crate::core::StateMap;
use crate::error::Result;
use crate::service::Services;
use crate::service::push::EvalJob;

/// The longest call ID recorded (clients choose them; ours have 32 characters).
pub const MAX_CALL_ID_BYTES: usize = 255;

/// The `call_id` of a call event's content, if it has a usable one.
fn call_id(content: &Value) -> Option<&str> {
    content
        .get("call_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= MAX_CALL_ID_BYTES)
}

/// The `membership` of a member event's content.
fn membership(content: &Value) -> Option<&str> {
    content.get("membership").and_then(Value::as_str)
}

/// Applies an `m.call.answer`, `m.call.reject` or `m.call.hangup` (with its parsed `content`)
/// at stream position `position` to the call's record.
pub(crate) fn apply_call_event(
    record: &mut CallRecord,
    position: u64,
    pdu: &Pdu,
    content: &Value,
) -> Applied {
    let sender = pdu.sender();
    let ts = timestamp(pdu);
    let event = match pdu.kind() {
        TimelineEventType::CallAnswer => CallEvent::Answer { sender, ts },
        TimelineEventType::CallReject => CallEvent::Reject { sender, ts },
        TimelineEventType::CallHangup => CallEvent::Hangup {
            sender,
            ts,
            reason: content.get("reason").and_then(Value::as_str),
        },
        _ => return Applied::Ignored,
    };
    record.apply(position, event)
}

impl Services {
    /// Records what one appended event means for the Chat API (see the module comment).
    /// Called by the push evaluator for every event, in stream order.
    pub(crate) fn observe_for_chat(&self, job: &EvalJob) -> Result<()> {
        let Some(pdu) = self.rooms.pdu(&job.event_id)? else {
            return Ok(());
        };
        if pdu.rejected() {
            return Ok(());
        }
        match pdu.kind() {
            TimelineEventType::RoomMember => self.observe_join(job.position, &pdu),
            TimelineEventType::CallInvite => self.observe_call_invite(job.position, &pdu),
            TimelineEventType::CallAnswer
            | TimelineEventType::CallHangup
            | TimelineEventType::CallReject => self.observe_call_event(job.position, &pdu),
            _ => Ok(()),
        }
    }

    /// The room's state at an event (before it), if it was recorded.
    fn observed_state_before(&self, pdu: &Pdu) -> Result<Option<Arc<StateMap>>> {
        let Some(snapshot) = self
            .rooms
            .event_meta(pdu.event_id())?
            .and_then(|meta| meta.state_before)
        else {
            return Ok(None);
        };
        Ok(Some(self.rooms.snapshots.state(snapshot)?))
    }

    /// The member event of `user` in `state`, with its content.
    fn observed_member(&self, state: &StateMap, user: &str) -> Result<Option<(Arc<Pdu>, Value)>> {
        let Some(id) = state.get(&(StateEventType::RoomMember, user.to_owned())) else {
            return Ok(None);
        };
        let Some(pdu) = self.rooms.pdu(id)? else {
            return Ok(None);
        };
        let content = serde_json::from_str(pdu.content().get())?;
        Ok(Some((pdu, content)))
    }

    /// A join answering an invite to a direct chat: the inviter's friend request is accepted.
    /// Only in a room recorded as the pair's direct chat (see
    /// [`friends`](super::friends)): an `is_direct` invite the Chat API never took for a friend
    /// request makes no friendship, so its join accepts nothing.
    fn observe_join(&self, position: u64, pdu: &Pdu) -> Result<()> {
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some(joiner) = pdu.state_key() else {
            return Ok(());
        };
        if membership(&content) != Some("join") || joiner != pdu.sender().as_str() {
            return Ok(());
        }
        let Some(before) = self.observed_state_before(pdu)? else {
            return Ok(());
        };
        let Some((invite, invite_content)) = self.observed_member(&before, joiner)? else {
            return Ok(());
        };
        let inviter = invite.sender();
        if membership(&invite_content) != Some("invite")
            || invite_content.get("is_direct").and_then(Value::as_bool) != Some(true)
            || inviter == pdu.sender()
            || !self.is_local(inviter)
            || self.dm_peer(inviter, pdu.room_id())?.as_deref() != Some(pdu.sender())
        {
            return Ok(());
        }
        // The inviter must still be in the chat for this to be a friendship.
        let inviter_joined = self
            .observed_member(&before, inviter.as_str())?
            .is_some_and(|(_, content)| membership(&content) == Some("join"));
        if !inviter_joined {
            return Ok(());
        }
        self.chat.notifications.record(
            inviter,
            position,
            &StoredNotification {
                kind: NotificationType::FriendAccepted,
                from: pdu.sender().to_owned(),
                chat_id: pdu.room_id().to_owned(),
                call_id: None,
                created_at: timestamp(pdu),
            },
        )
    }

    /// `m.call.invite`: a new call, in the log of the caller and of every callee.
    fn observe_call_invite(&self, position: u64, pdu: &Pdu) -> Result<()> {
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some(call_id) = call_id(&content) else {
            return Ok(());
        };
        // The first invite of a call ID in a room makes the call (a repeat changes nothing).
        if self
            .chat
            .calls
            .get(call_id, pdu.room_id().as_str())?
            .is_some()
        {
            return Ok(());
        }
        let Some(record) = self.call_of_invite(position, pdu)? else {
            return Ok(());
        };
        self.chat.calls.put(&record)?;
        for user in std::iter::once(&record.caller).chain(&record.callees) {
            if self.is_local(user) {
                self.chat.calls.add_to_log(user, &record)?;
            }
        }
        Ok(())
    }

    /// The call an `m.call.invite` at stream position `position` makes (`None`: it makes
    /// none), without recording it.
    ///
    /// Only members joined to the room at the invite are rung: an `invitee` counts when the
    /// room's state at the invite (the state the event was authorised against) has them
    /// joined, so nobody can put a call into the log or the notifications of a user who is
    /// not in the room by naming them. An invite naming anyone else rings nobody (it stays in
    /// the caller's log only). Without an `invitee`, the callees are the members joined now
    /// whose current join came before the invite — joined at the invite and still there.
    pub(crate) fn call_of_invite(&self, position: u64, pdu: &Pdu) -> Result<Option<CallRecord>> {
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some(call_id) = call_id(&content) else {
            return Ok(None);
        };
        let room_id = pdu.room_id();
        let Some(sdp) = content
            .get("offer")
            .and_then(|offer| offer.get("sdp"))
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let lifetime_ms = content
            .get("lifetime")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(MAX_LIFETIME_MS);
        let caller = pdu.sender();
        let invitee = content
            .get("invitee")
            .and_then(Value::as_str)
            .and_then(|u| OwnedUserId::try_from(u).ok());
        let (invitee, callees) = match invitee {
            Some(invitee) if invitee == caller => (Some(invitee), Vec::new()),
            Some(invitee) => {
                let joined = match self.observed_state_before(pdu)? {
                    Some(state) => self
                        .observed_member(&state, invitee.as_str())?
                        .is_some_and(|(_, content)| membership(&content) == Some("join")),
                    None => false,
                };
                if joined {
                    (Some(invitee.clone()), vec![invitee])
                } else {
                    (None, Vec::new())
                }
            }
            // No invitee: the invite rings every member joined when it was sent.
            None => {
                let mut callees = Vec::new();
                for (user, _) in self.rooms.members(room_id, Some("join"))? {
                    let Ok(user) = OwnedUserId::try_from(user) else {
                        continue;
                    };
                    if user != caller && self.rooms.joined_at(room_id, &user)? < position {
                        callees.push(user);
                    }
                    if callees.len() == MAX_CALLEES {
                        break;
                    }
                }
                (None, callees)
            }
        };
        Ok(Some(CallRecord {
            call_id: call_id.to_owned(),
            room_id: room_id.to_owned(),
            kind: CallKind::of_sdp(sdp),
            caller: caller.to_owned(),
            callees,
            invitee,
            invite_event_id: pdu.event_id().to_owned(),
            invite_pos: position,
            started_at: timestamp(pdu),
            lifetime_ms,
            answered_at: None,
            answered_by: None,
            declined_by: Vec::new(),
            ended_at: None,
            ended_by: None,
            hangup_reason: None,
            applied_upto: position,
        }))
    }

    /// `m.call.answer`, `m.call.reject`, `m.call.hangup`: the call moves on.
    fn observe_call_event(&self, position: u64, pdu: &Pdu) -> Result<()> {
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some(call_id) = call_id(&content) else {
            return Ok(());
        };
        let Some(mut record) = self.chat.calls.get(call_id, pdu.room_id().as_str())? else {
            return Ok(());
        };
        let applied = apply_call_event(&mut record, position, pdu, &content);
        if applied == Applied::Ignored {
            return Ok(());
        }
        self.chat.calls.put(&record)?;
        if applied == Applied::GaveUp {
            self.record_missed_call(position, &record, timestamp(pdu))?;
        }
        Ok(())
    }

    /// A missed call for every local callee who had not declined. A hangup within the
    /// invite's lifetime is where the call was missed; a hangup after it makes lasting the
    /// notification that reading already showed at the invite (same ID, same read state).
    fn record_missed_call(&self, position: u64, record: &CallRecord, ts: u64) -> Result<()> {
        let expired = ts >= record.expires_at();
        let (at, created_at) = if expired {
            (record.invite_pos, record.expires_at())
        } else {
            (position, ts)
        };
        for callee in &record.callees {
            if !self.is_local(callee) || record.has_declined(callee) {
                continue;
            }
            self.chat.notifications.record(
                callee,
                at,
                &StoredNotification {
                    kind: NotificationType::MissedCall,
                    from: record.caller.clone(),
                    chat_id: record.room_id.clone(),
                    call_id: Some(record.call_id.clone()),
                    created_at,
                },
            )?;
        }
        Ok(())
    }
}
