//! Chat: the call log.
//!
//! A call is the Matrix VoIP events of one `call_id` in one room: `m.call.invite`, then
//! `m.call.answer`, `m.call.reject` or `m.call.hangup`. Their record is written by the ordered
//! consumer of appended events (see [`observer`](super::observer)), whoever sent them (the Chat
//! API or a Matrix client), so the log of both sides agrees with the room.
//!
//! Nothing waits on a clock: an invite that nobody answered or ended within its `lifetime` is
//! *missed*, and that is decided when the record is read (`now >= started_at + lifetime`).

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::storage::{Store, Tree, keys, trees};

/// How long a call started through the Chat API rings (the invite's `lifetime`), in ms.
pub const INVITE_LIFETIME_MS: u64 = 60_000;
/// The longest `lifetime` taken from an invite: a client asking for more rings for this long.
pub const MAX_LIFETIME_MS: u64 = 3_600_000;
/// The most members one group call rings (and records).
pub const MAX_CALLEES: usize = 500;
/// The most calls that may share one call ID (in different rooms) that a lookup looks at.
const MAX_SAME_ID: usize = 16;

/// Voice or video, as the offer describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    Voice,
    Video,
}

impl CallKind {
    /// Video when the SDP offer has a video media section, as Matrix clients decide it.
    pub fn of_sdp(sdp: &str) -> Self {
        if sdp
            .lines()
            .any(|line| line.trim_start().starts_with("m=video"))
        {
            CallKind::Video
        } else {
            CallKind::Voice
        }
    }
}

/// How a call went, as one participant sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Invited, not answered, still within its lifetime.
    Ringing,
    /// Answered and not hung up yet.
    Ongoing,
    /// Answered, then hung up.
    Completed,
    /// For a callee: the caller gave up (hung up, or the invite expired) before an answer.
    Missed,
    /// Rejected by the callee (for a group call: by this callee, or by every callee).
    Declined,
    /// For the caller: they gave up (hung up, or the invite expired) before an answer.
    Cancelled,
}

/// One call, as its events made it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallRecord {
    pub call_id: String,
    pub room_id: OwnedRoomId,
    pub kind: CallKind,
    pub caller: OwnedUserId,
    /// The users it rang: the invitee, or every other joined member for a group call.
    pub callees: Vec<OwnedUserId>,
    /// Set when the invite named one callee.
    pub invitee: Option<OwnedUserId>,
    pub invite_event_id: OwnedEventId,
    /// The invite's stream position: orders the call log.
    pub invite_pos: u64,
    pub started_at: u64,
    pub lifetime_ms: u64,
    pub answered_at: Option<u64>,
    pub answered_by: Option<OwnedUserId>,
    /// Callees who rejected it before anyone answered.
    #[serde(default)]
    pub declined_by: Vec<OwnedUserId>,
    pub ended_at: Option<u64>,
    pub ended_by: Option<OwnedUserId>,
    pub hangup_reason: Option<String>,
    /// The stream position of the last event applied: each event is applied once, in order,
    /// also when the consumer goes over its last events again after a restart.
    pub applied_upto: u64,
}

/// A later event of a call.
#[derive(Debug, Clone, Copy)]
pub enum CallEvent<'a> {
    Answer {
        sender: &'a UserId,
        ts: u64,
    },
    Hangup {
        sender: &'a UserId,
        ts: u64,
        reason: Option<&'a str>,
    },
    Reject {
        sender: &'a UserId,
        ts: u64,
    },
}

/// What applying an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing (a repeat, a late or foreign event).
    Ignored,
    Changed,
    /// The caller hung up before anyone answered: a missed call for every callee who had not
    /// declined it.
    GaveUp,
}

impl CallRecord {
    /// When the invite stops ringing.
    pub fn expires_at(&self) -> u64 {
        self.started_at.saturating_add(self.lifetime_ms)
    }

    pub fn is_callee(&self, user: &UserId) -> bool {
        self.callees.iter().any(|c| c == user)
    }

    pub fn is_participant(&self, user: &UserId) -> bool {
        self.caller == user || self.is_callee(user)
    }

    pub fn has_declined(&self, user: &UserId) -> bool {
        self.declined_by.iter().any(|c| c == user)
    }

    /// Not answered, not ended, and past its lifetime.
    pub fn expired(&self, now: u64) -> bool {
        self.answered_at.is_none() && self.ended_at.is_none() && now >= self.expires_at()
    }

    /// Whether every callee declined.
    fn all_declined(&self) -> bool {
        !self.callees.is_empty() && self.callees.iter().all(|c| self.has_declined(c))
    }

    /// Whether, for `user`, this call is a missed call not recorded by any event: it expired
    /// unanswered and nothing (hangup, rejection) came after.
    pub fn missed_by_expiry(&self, user: &UserId, now: u64) -> bool {
        self.caller != user && self.is_callee(user) && !self.has_declined(user) && self.expired(now)
    }

    /// Whether the call is over for `user` (nothing more can be done with it by them).
    pub fn is_over_for(&self, user: &UserId, now: u64) -> bool {
        !matches!(
            self.outcome_for(user, now),
            Outcome::Ringing | Outcome::Ongoing
        )
    }

    /// How the call went for `viewer`, at `now`.
    pub fn outcome_for(&self, viewer: &UserId, now: u64) -> Outcome {
        // A group call another member answered stays declined for who declined it.
        if self.has_declined(viewer) {
            return Outcome::Declined;
        }
        if self.answered_at.is_some() {
            return match self.ended_at {
                Some(_) => Outcome::Completed,
                None => Outcome::Ongoing,
            };
        }
        let gave_up = || {
            if viewer == self.caller {
                Outcome::Cancelled
            } else {
                Outcome::Missed
            }
        };
        if self.ended_at.is_some() && self.all_declined() {
            Outcome::Declined
        } else if self.ended_at.is_some() || now >= self.expires_at() {
            gave_up()
        } else {
            Outcome::Ringing
        }
    }

    /// When the call ended: its hangup or rejection, or the end of its lifetime when it expired.
    pub fn ended_at_for(&self, now: u64) -> Option<u64> {
        self.ended_at
            .or_else(|| self.expired(now).then(|| self.expires_at()))
    }

    /// Applies a later event of the call at stream position `position`.
    pub fn apply(&mut self, position: u64, event: CallEvent<'_>) -> Applied {
        if position <= self.applied_upto || self.ended_at.is_some() {
            return Applied::Ignored;
        }
        let applied = match event {
            CallEvent::Answer { sender, ts } => {
                // An answer after the invite's lifetime answers nothing: the call was missed.
                if self.answered_at.is_some()
                    || sender == self.caller
                    || !self.is_callee(sender)
                    || self.has_declined(sender)
                    || ts > self.expires_at()
                {
                    Applied::Ignored
                } else {
                    self.answered_at = Some(ts.max(self.started_at));
                    self.answered_by = Some(sender.to_owned());
                    Applied::Changed
                }
            }
            CallEvent::Hangup { sender, ts, reason } => {
                if sender == self.caller || self.answered_by.as_deref() == Some(sender) {
                    self.ended_at = Some(ts.max(self.started_at));
                    self.ended_by = Some(sender.to_owned());
                    self.hangup_reason = reason.map(str::to_owned);
                    if self.answered_at.is_none() && sender == self.caller {
                        Applied::GaveUp
                    } else {
                        Applied::Changed
                    }
                } else if self.answered_at.is_none() {
                    // A callee hanging up on a ringing call declines it (VoIP version 0 style).
                    self.decline(sender, ts)
                } else {
                    Applied::Ignored
                }
            }
            CallEvent::Reject { sender, ts } => {
                if self.answered_at.is_none() {
                    self.decline(sender, ts)
                } else {
                    Applied::Ignored
                }
            }
        };
        if applied != Applied::Ignored {
            self.applied_upto = position;
        }
        applied
    }

    /// A callee declines; the call ends when every callee has.
    fn decline(&mut self, sender: &UserId, ts: u64) -> Applied {
        if !self.is_callee(sender) || self.has_declined(sender) || ts > self.expires_at() {
            return Applied::Ignored;
        }
        self.declined_by.push(sender.to_owned());
        if self.all_declined() {
            self.ended_at = Some(ts.max(self.started_at));
            self.ended_by = Some(sender.to_owned());
        }
        Applied::Changed
    }

    /// The call as the Chat API shows it to `viewer`.
    pub fn view(&self, viewer: &UserId, now: u64) -> CallView {
        let ended_at = self.ended_at_for(now);
        CallView {
            id: self.call_id.clone(),
            chat_id: self.room_id.clone(),
            kind: self.kind,
            caller: self.caller.clone(),
            callees: self.callees.clone(),
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at,
            duration_ms: match (self.answered_at, self.ended_at) {
                (Some(answered), Some(ended)) => Some(ended.saturating_sub(answered)),
                _ => None,
            },
            outcome: self.outcome_for(viewer, now),
        }
    }
}

/// The Chat API's `Call` object.
#[derive(Debug, Clone, Serialize)]
pub struct CallView {
    pub id: String,
    pub chat_id: OwnedRoomId,
    pub kind: CallKind,
    pub caller: OwnedUserId,
    pub callees: Vec<OwnedUserId>,
    pub started_at: u64,
    pub answered_at: Option<u64>,
    pub ended_at: Option<u64>,
    pub duration_ms: Option<u64>,
    pub outcome: Outcome,
}

/// The stored call records and each user's call log.
pub struct Calls {
    /// call ID, room → [`CallRecord`].
    records: Tree,
    /// user, invite position → call ID, room.
    log: Tree,
}

/// `call_id SEP room`.
fn record_key(call_id: &str, room_id: &str) -> Vec<u8> {
    keys::pair(call_id, room_id)
}

/// `user SEP position`.
fn log_key(user: &UserId, position: u64) -> Vec<u8> {
    let mut key = keys::prefix(user.as_str());
    key.extend_from_slice(&keys::u64_be(position));
    key
}

impl Calls {
    pub fn new(store: &Store) -> Result<Self> {
        Ok(Self {
            records: store.tree(trees::CALLID_ROOMID_CALL)?,
            log: store.tree(trees::USERID_STREAMPOS_CALL)?,
        })
    }

    /// The record of a call in a room.
    pub fn get(&self, call_id: &str, room_id: &str) -> Result<Option<CallRecord>> {
        match self.records.get(record_key(call_id, room_id))? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    /// The calls with this ID (one, unless clients in different rooms chose the same ID).
    pub fn with_id(&self, call_id: &str) -> Result<Vec<CallRecord>> {
        let mut out = Vec::new();
        for item in self
            .records
            .scan_prefix(keys::prefix(call_id))
            .take(MAX_SAME_ID)
        {
            let (_, value) = item?;
            if let Ok(record) = serde_json::from_slice(&value) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Stores a record.
    pub(crate) fn put(&self, record: &CallRecord) -> Result<()> {
        self.records.put(
            record_key(&record.call_id, record.room_id.as_str()),
            serde_json::to_vec(record)?,
        )?;
        Ok(())
    }

    /// Adds a call to a user's log.
    pub(crate) fn add_to_log(&self, user: &UserId, record: &CallRecord) -> Result<()> {
        self.log.put(
            log_key(user, record.invite_pos),
            keys::pair(&record.call_id, record.room_id.as_str()),
        )?;
        Ok(())
    }

    /// The call a user's log holds at an invite position.
    pub fn logged_at(&self, user: &UserId, position: u64) -> Result<Option<CallRecord>> {
        match self.log.get(log_key(user, position))? {
            Some(value) => self.record_of_log_value(&value),
            None => Ok(None),
        }
    }

    fn record_of_log_value(&self, value: &[u8]) -> Result<Option<CallRecord>> {
        match self.records.get(value)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    /// A user's calls with an invite before position `before`, newest first.
    pub fn log_before(
        &self,
        user: &UserId,
        before: u64,
    ) -> impl Iterator<Item = Result<(u64, CallRecord)>> + '_ {
        let start = log_key(user, 0);
        let prefix_len = start.len() - 8;
        self.log
            .range(&start, &log_key(user, before))
            .rev()
            .filter_map(move |item| {
                let (key, value) = match item {
                    Ok(entry) => entry,
                    Err(e) => return Some(Err(e.into())),
                };
                let position = keys::read_u64_be(&key[prefix_len..])?;
                match self.record_of_log_value(&value) {
                    Ok(Some(record)) => Some(Ok((position, record))),
                    Ok(None) => None,
                    Err(e) => Some(Err(e)),
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::{owned_event_id, owned_room_id, user_id};

    fn ringing(callees: &[&UserId]) -> CallRecord {
        CallRecord {
            call_id: "c1".into(),
            room_id: owned_room_id!("!r:x"),
            kind: CallKind::Voice,
            caller: user_id!("@a:x").to_owned(),
            callees: callees.iter().map(|u| (*u).to_owned()).collect(),
            invitee: None,
            invite_event_id: owned_event_id!("$i"),
            invite_pos: 10,
            started_at: 1_000,
            lifetime_ms: 60_000,
            answered_at: None,
            answered_by: None,
            declined_by: Vec::new(),
            ended_at: None,
            ended_by: None,
            hangup_reason: None,
            applied_upto: 10,
        }
    }

    #[test]
    fn kind_follows_the_offer() {
        assert_eq!(
            CallKind::of_sdp("v=0\r\nm=audio 9 UDP\r\n"),
            CallKind::Voice
        );
        assert_eq!(
            CallKind::of_sdp("v=0\r\nm=audio 9 UDP\r\nm=video 9 UDP\r\n"),
            CallKind::Video
        );
    }

    #[test]
    fn answered_then_hung_up_is_completed_for_both() {
        let (a, b) = (user_id!("@a:x"), user_id!("@b:x"));
        let mut call = ringing(&[b]);
        assert_eq!(call.outcome_for(a, 2_000), Outcome::Ringing);
        let answer = CallEvent::Answer {
            sender: b,
            ts: 5_000,
        };
        assert_eq!(call.apply(11, answer), Applied::Changed);
        // Applied once: the same position again changes nothing.
        assert_eq!(call.apply(11, answer), Applied::Ignored);
        assert_eq!(call.outcome_for(b, 500_000), Outcome::Ongoing);
        let hangup = CallEvent::Hangup {
            sender: b,
            ts: 65_000,
            reason: None,
        };
        assert_eq!(call.apply(12, hangup), Applied::Changed);
        for viewer in [a, b] {
            let view = call.view(viewer, 1_000_000);
            assert_eq!(view.outcome, Outcome::Completed);
            assert_eq!(view.duration_ms, Some(60_000));
            assert_eq!(view.ended_at, Some(65_000));
        }
    }

    #[test]
    fn caller_giving_up_is_missed_for_the_callee_and_cancelled_for_the_caller() {
        let (a, b) = (user_id!("@a:x"), user_id!("@b:x"));
        let mut call = ringing(&[b]);
        let hangup = CallEvent::Hangup {
            sender: a,
            ts: 3_000,
            reason: None,
        };
        assert_eq!(call.apply(11, hangup), Applied::GaveUp);
        assert_eq!(call.outcome_for(a, 3_000), Outcome::Cancelled);
        assert_eq!(call.outcome_for(b, 3_000), Outcome::Missed);
        assert_eq!(call.view(b, 3_000).duration_ms, None);
        // Over: a late answer changes nothing.
        let answer = CallEvent::Answer {
            sender: b,
            ts: 4_000,
        };
        assert_eq!(call.apply(12, answer), Applied::Ignored);
    }

    #[test]
    fn expiry_is_decided_when_read() {
        let (a, b) = (user_id!("@a:x"), user_id!("@b:x"));
        let mut call = ringing(&[b]);
        assert!(!call.missed_by_expiry(b, 60_999));
        assert!(call.missed_by_expiry(b, 61_000));
        assert!(!call.missed_by_expiry(a, 61_000));
        assert_eq!(call.outcome_for(a, 61_000), Outcome::Cancelled);
        assert_eq!(call.ended_at_for(61_000), Some(61_000));
        // An answer after the lifetime answers nothing.
        let answer = CallEvent::Answer {
            sender: b,
            ts: 70_000,
        };
        assert_eq!(call.apply(11, answer), Applied::Ignored);
        assert_eq!(call.outcome_for(b, 70_000), Outcome::Missed);
    }

    #[test]
    fn rejection_declines() {
        let (a, b, c) = (user_id!("@a:x"), user_id!("@b:x"), user_id!("@c:x"));
        let mut call = ringing(&[b]);
        assert_eq!(
            call.apply(
                11,
                CallEvent::Reject {
                    sender: b,
                    ts: 2_000
                }
            ),
            Applied::Changed
        );
        assert_eq!(call.outcome_for(a, 2_000), Outcome::Declined);
        assert_eq!(call.outcome_for(b, 2_000), Outcome::Declined);
        assert_eq!(call.ended_at, Some(2_000));
        // A group call goes on ringing the others until every callee declined.
        let mut group = ringing(&[b, c]);
        assert_eq!(
            group.apply(
                11,
                CallEvent::Reject {
                    sender: b,
                    ts: 2_000
                }
            ),
            Applied::Changed
        );
        assert_eq!(group.outcome_for(b, 2_000), Outcome::Declined);
        assert_eq!(group.outcome_for(c, 2_000), Outcome::Ringing);
        assert!(group.ended_at.is_none());
        let mut answered = group.clone();
        let answer = CallEvent::Answer {
            sender: c,
            ts: 2_500,
        };
        assert_eq!(answered.apply(12, answer), Applied::Changed);
        assert_eq!(answered.outcome_for(b, 2_500), Outcome::Declined);
        assert_eq!(answered.outcome_for(a, 2_500), Outcome::Ongoing);
        // A stranger's rejection is not one.
        let stranger = user_id!("@z:x");
        assert_eq!(
            group.apply(
                12,
                CallEvent::Reject {
                    sender: stranger,
                    ts: 2_000
                }
            ),
            Applied::Ignored
        );
        let hangup = CallEvent::Hangup {
            sender: a,
            ts: 3_000,
            reason: None,
        };
        assert_eq!(group.apply(13, hangup), Applied::GaveUp);
        assert_eq!(group.outcome_for(c, 3_000), Outcome::Missed);
        assert_eq!(group.outcome_for(b, 3_000), Outcome::Declined);
        assert!(!group.missed_by_expiry(c, 1_000_000));
    }
}
