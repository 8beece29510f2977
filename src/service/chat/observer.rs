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
use super::notifications::{NotificationType, StoredNotification};
use crate::core::Pdu;
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

fn timestamp(pdu: &Pdu) -> u64 {
    pdu.origin_server_ts().get().into()
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

    /// A join answering an invite to a direct chat: the inviter's friend request is accepted.
    fn observe_join(&self, position: u64, pdu: &Pdu) -> Result<()> {
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let Some(joiner) = pdu.state_key() else {
            return Ok(());
        };
        if membership(&content) != Some("join") || joiner != pdu.sender().as_str() {
            return Ok(());
        }
        let Some(meta) = self.rooms.event_meta(pdu.event_id())? else {
            return Ok(());
        };
        let Some(snapshot) = meta.state_before else {
            return Ok(());
        };
        let before = self.rooms.snapshots.state(snapshot)?;
        let member_event = |user: &str| -> Result<Option<(Arc<Pdu>, Value)>> {
            let Some(id) = before.get(&(StateEventType::RoomMember, user.to_owned())) else {
                return Ok(None);
            };
            let Some(pdu) = self.rooms.pdu(id)? else {
                return Ok(None);
            };
            let content = serde_json::from_str(pdu.content().get())?;
            Ok(Some((pdu, content)))
        };
        let Some((invite, invite_content)) = member_event(joiner)? else {
            return Ok(());
        };
        let inviter = invite.sender();
        if membership(&invite_content) != Some("invite")
            || invite_content.get("is_direct").and_then(Value::as_bool) != Some(true)
            || inviter == pdu.sender()
            || !self.is_local(inviter)
        {
            return Ok(());
        }
        // The inviter must still be in the chat for this to be a friendship.
        let inviter_joined = member_event(inviter.as_str())?
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
        let room_id = pdu.room_id();
        // The first invite of a call ID in a room makes the call (a repeat changes nothing).
        if self.chat.calls.get(call_id, room_id.as_str())?.is_some() {
            return Ok(());
        }
        let Some(sdp) = content
            .get("offer")
            .and_then(|offer| offer.get("sdp"))
            .and_then(Value::as_str)
        else {
            return Ok(());
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
        let callees = match &invitee {
            Some(invitee) if invitee != caller => vec![invitee.clone()],
            Some(_) => Vec::new(),
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
                callees
            }
        };
        let record = CallRecord {
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
        };
        self.chat.calls.put(&record)?;
        for user in std::iter::once(&record.caller).chain(&record.callees) {
            if self.is_local(user) {
                self.chat.calls.add_to_log(user, &record)?;
            }
        }
        Ok(())
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
        let sender = pdu.sender();
        let ts = timestamp(pdu);
        let event = match pdu.kind() {
            TimelineEventType::CallAnswer => CallEvent::Answer { sender, ts },
            TimelineEventType::CallReject => CallEvent::Reject { sender, ts },
            _ => CallEvent::Hangup {
                sender,
                ts,
                reason: content.get("reason").and_then(Value::as_str),
            },
        };
        let applied = record.apply(position, event);
        if applied == Applied::Ignored {
            return Ok(());
        }
        self.chat.calls.put(&record)?;
        if applied == Applied::GaveUp {
            self.record_missed_call(position, &record, ts)?;
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
