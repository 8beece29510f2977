//! The evaluator: runs every local member's push rules on every new event of their rooms.

use std::sync::Arc;

use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource};
use ruma::events::{AnySyncTimelineEvent, StateEventType, TimelineEventType};
use ruma::push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx};
use ruma::serde::Raw;
use ruma::{OwnedUserId, RoomId, UInt, UserId};
use serde_json::Value;

use super::EvalJob;
use super::notifications::NewNotification;
use super::rules::{self, UserRules};
use crate::core::{Pdu, StateMap, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::receipts::{MAIN_THREAD, thread_root};

/// What the rules of every recipient of one event are run against, read once per event (and
/// shared, through [`Push::prepared`](super::Push), by the evaluator and every `/sync` that
/// counts the event before the evaluator got to it).
pub(crate) struct EventParts {
    pub pdu: Arc<Pdu>,
    state: Arc<StateMap>,
    /// The room's joined members when the event was prepared.
    joined: Vec<OwnedUserId>,
    member_count: UInt,
    flattened: FlattenedJson,
    pub thread: String,
    power: Option<PushConditionPowerLevelsCtx>,
    /// The context of the neutral user, for the rules every user shares.
    neutral: PushConditionRoomCtx,
}

/// One event being evaluated: its parts, and what each shared rule answered so far.
pub(crate) struct PushEvent {
    pub parts: Arc<EventParts>,
    shared: Vec<Option<bool>>,
}

/// Jobs taken from the queue at once.
const BATCH: usize = 256;

/// The actions of the first rule of `rules` that applies (none: no rule applies). Rules shared
/// with every user are answered from `shared` (filled on first use with `neutral`, the context
/// of [`rules::NEUTRAL_USER`]); the others are evaluated with the member's own `context`.
pub async fn actions_for<'a>(
    rules: &'a UserRules,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
    neutral: &PushConditionRoomCtx,
    shared: &mut [Option<bool>],
) -> &'a [Action] {
    for (rule, shared_at) in rules.set.iter().zip(&rules.shared) {
        let applies = match shared_at.and_then(|i| shared.get_mut(i)) {
            Some(Some(known)) => *known,
            Some(slot) => {
                let applies = rule.applies(event, neutral).await;
                *slot = Some(applies);
                applies
            }
            None => rule.applies(event, context).await,
        };
        if applies {
            return rule.actions();
        }
    }
    &[]
}

impl Services {
    /// Starts the evaluator: it first evaluates what it had not reached before the last stop,
    /// then each event as it is appended.
    pub fn spawn_push_evaluator(self: &Arc<Self>) {
        let receiver = self
            .push
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(mut receiver) = receiver else {
            return;
        };
        let services = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut progress = match services.upgrade() {
                Some(s) => match s.push_catch_up().await {
                    Ok(upto) => upto,
                    Err(e) => {
                        // Waiting syncs must not wait on events never to be evaluated.
                        let upto = s.store.sequencer().upto();
                        tracing::warn!(error = %e, upto, "catching up on push evaluation failed; skipping to the present");
                        if let Err(e) = s.push.set_progress(upto) {
                            tracing::warn!(error = %e, "recording push evaluation progress failed");
                        }
                        upto
                    }
                },
                None => return,
            };
            let mut batch = Vec::with_capacity(BATCH);
            while receiver.recv_many(&mut batch, BATCH).await > 0 {
                let Some(services) = services.upgrade() else {
                    break;
                };
                for job in batch.drain(..) {
                    if job.position <= progress {
                        continue;
                    }
                    let position = job.position;
                    services.evaluate_isolated(job).await;
                    progress = position;
                    services.push.advance(progress);
                }
                // Stored once per batch: after a crash the events of the last batch are simply
                // evaluated again (records are keyed by position; a push may go out twice).
                if let Err(e) = services.push.store_progress(progress) {
                    tracing::warn!(error = %e, "recording push evaluation progress failed");
                }
            }
        });
    }

    /// Evaluates the events appended after the stored progress (a previous run stopped before
    /// them); returns the position evaluated up to.
    async fn push_catch_up(self: &Arc<Self>) -> Result<u64> {
        let from = self.push.stored_progress()?;
        let upto = self.store.sequencer().upto();
        if from < upto {
            let mut jobs = Vec::new();
            for room_id in self.rooms.room_ids()? {
                for (position, event_id) in self.rooms.timeline_range(
                    &room_id,
                    from,
                    upto.saturating_add(1),
                    false,
                    usize::MAX,
                )? {
                    jobs.push(EvalJob {
                        room_id: room_id.clone(),
                        event_id,
                        position,
                    });
                }
            }
            jobs.sort_by_key(|j| j.position);
            tracing::info!(
                events = jobs.len(),
                "evaluating push rules for events missed"
            );
            for job in jobs {
                self.evaluate_isolated(job).await;
            }
        }
        self.push.set_progress(upto)?;
        Ok(upto)
    }

    /// Evaluates one event in a task of its own, so that a failure (even a panic) costs that
    /// event's notifications and nothing more.
    async fn evaluate_isolated(self: &Arc<Self>, job: EvalJob) {
        let services = self.clone();
        let event_id = job.event_id.clone();
        let evaluation = tokio::spawn(async move {
            let pushed = services.evaluate_event(&job).await;
            // The Chat API's call log and notifications follow the same events in the same order.
            let observed = services.observe_for_chat(&job);
            pushed.and(observed)
        });
        match evaluation.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, event_id = %event_id, "push evaluation failed");
            }
            Err(e) => {
                tracing::error!(error = %e, event_id = %event_id, "push evaluation panicked");
            }
        }
    }

    /// Runs the push rules of the event's local recipients and records what notifies.
    pub(crate) async fn evaluate_event(&self, job: &EvalJob) -> Result<()> {
        let started = std::time::Instant::now();
        let result = self.evaluate_event_inner(job).await;
        tracing::debug!(
            event_id = %job.event_id,
            elapsed_us = started.elapsed().as_micros() as u64,
            "push rules evaluated"
        );
        result
    }

    async fn evaluate_event_inner(&self, job: &EvalJob) -> Result<()> {
        let Some(pdu) = self.rooms.pdu(&job.event_id)? else {
            return Ok(());
        };
        let room_id = &job.room_id;
        if let Some(target) = pdu.redacts() {
            self.forget_notifications_of(room_id, target)?;
        }
        let Some(mut event) = self.prepare_for_push(room_id, pdu)? else {
            return Ok(());
        };
        let mut recipients = Vec::new();
        for user in &event.parts.joined {
            // Members who joined after the event (the evaluator may run behind) may not see
            // it: it is not theirs to be notified of.
            if self.is_local(user) && self.rooms.joined_at(room_id, user)? < job.position {
                recipients.push(user.clone());
            }
        }
        let pdu = event.parts.pdu.clone();
        // An invite notifies its (local) target, who is not a member yet.
        if *pdu.kind() == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key()
            && let Ok(target) = OwnedUserId::try_from(target)
            && self.is_local(&target)
            && !recipients.contains(&target)
            && match self.rooms.membership(room_id, &target)?.as_deref() {
                Some("invite") => true,
                // Invited, then joined before the evaluator got here.
                Some("join") => self.rooms.joined_at(room_id, &target)? > job.position,
                _ => false,
            }
        {
            recipients.push(target);
        }
        let mut notified = Vec::new();
        for user in recipients {
            if let Some(found) = self.push_actions_for(&mut event, &user).await? {
                notified.push(found);
            }
        }
        if !notified.is_empty() {
            self.record_notifications(room_id, &job.event_id, job.position, &notified)?;
        }
        Ok(())
    }

    /// What the rules of every recipient of one event are run against (`None`: the event is
    /// gone or redacted, and notifies nobody).
    pub(crate) fn prepare_for_push(
        &self,
        room_id: &RoomId,
        pdu: Arc<Pdu>,
    ) -> Result<Option<PushEvent>> {
        if self.rooms.redacted_by(pdu.event_id())?.is_some() {
            return Ok(None);
        }
        let shared = vec![None; rules::reference_rules().iter().count()];
        if let Some(parts) = self.push.prepared(pdu.event_id()) {
            return Ok(Some(PushEvent { parts, shared }));
        }
        let state = self.rooms.current_state(room_id)?;
        let joined: Vec<OwnedUserId> = self
            .rooms
            .members(room_id, Some("join"))?
            .into_iter()
            .filter_map(|(user, _)| OwnedUserId::try_from(user).ok())
            .collect();
        let member_count = UInt::try_from(joined.len()).unwrap_or(UInt::MAX);
        let raw: Raw<AnySyncTimelineEvent> =
            Raw::from_json(serde_json::value::to_raw_value(pdu.json()).map_err(Error::internal)?);
        let flattened = FlattenedJson::from_raw(&raw);
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let thread = thread_root(&content).unwrap_or(MAIN_THREAD).to_owned();
        let power = self.push_power_levels(&pdu, &state)?;
        let mut neutral = PushConditionRoomCtx::new(
            room_id.to_owned(),
            member_count,
            OwnedUserId::try_from(rules::NEUTRAL_USER).map_err(Error::internal)?,
            rules::NEUTRAL_USER.to_owned(),
        );
        if let Some(power) = &power {
            neutral = neutral.with_power_levels(power.clone());
        }
        let parts = Arc::new(EventParts {
            pdu,
            state,
            joined,
            member_count,
            flattened,
            thread,
            power,
            neutral,
        });
        self.push.remember_prepared(parts.clone());
        Ok(Some(PushEvent { parts, shared }))
    }

    /// What one event does for one user under their rules (`None`: it does not notify them:
    /// their own event, from someone they ignore, or no rule says `notify`).
    pub(crate) async fn push_actions_for(
        &self,
        event: &mut PushEvent,
        user: &UserId,
    ) -> Result<Option<NewNotification>> {
        let parts = event.parts.clone();
        if user == parts.pdu.sender()
            || self
                .account_data
                .ignored_users(user)?
                .contains(parts.pdu.sender())
        {
            return Ok(None);
        }
        let rules = self.user_push_rules(user)?;
        let display_name = self.member_display_name(&parts.state, user)?;
        let mut context = PushConditionRoomCtx::new(
            parts.pdu.room_id().to_owned(),
            parts.member_count,
            user.to_owned(),
            // Without a display name the display-name rule must match nothing; the user ID
            // never occurs in a body by accident (ruma would match an empty name against an
            // empty body).
            display_name.unwrap_or_else(|| user.to_string()),
        );
        if let Some(power) = &parts.power {
            context = context.with_power_levels(power.clone());
        }
        let actions = actions_for(
            &rules,
            &parts.flattened,
            &context,
            &parts.neutral,
            &mut event.shared,
        )
        .await;
        if !actions.iter().any(Action::should_notify) {
            return Ok(None);
        }
        Ok(Some(NewNotification {
            user: user.to_owned(),
            actions: actions.to_vec(),
            highlight: actions.iter().any(Action::is_highlight),
            thread: parts.thread.clone(),
        }))
    }

    pub(crate) fn is_local(&self, user: &UserId) -> bool {
        user.server_name().as_str() == self.config.server_name
    }

    /// The display name a member has in the room's state.
    pub(crate) fn member_display_name(
        &self,
        state: &StateMap,
        user: &UserId,
    ) -> Result<Option<String>> {
        let Some(event_id) = state.get(&(StateEventType::RoomMember, user.to_string())) else {
            return Ok(None);
        };
        let Some(member) = self.rooms.pdu(event_id)? else {
            return Ok(None);
        };
        let content: Value = serde_json::from_str(member.content().get())?;
        Ok(content
            .get("displayname")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .map(str::to_owned))
    }

    /// The power levels the `sender_notification_permission` condition needs (`None` when the
    /// room's power levels cannot be read: such rules then never match).
    fn push_power_levels(
        &self,
        pdu: &Pdu,
        state: &StateMap,
    ) -> Result<Option<PushConditionPowerLevelsCtx>> {
        let version = pdu.room_version();
        let rules = room_version::rules(version)?.authorization;
        let powers = crate::service::rooms::power::Powers::load(&self.rooms, version, state)?;
        let source = match self
            .rooms
            .state_content(state, &StateEventType::RoomPowerLevels)?
        {
            Some(content) => match serde_json::from_value(Value::Object(content)) {
                Ok(content) => RoomPowerLevelsSource::Original(content),
                Err(_) => return Ok(None),
            },
            None => RoomPowerLevelsSource::None,
        };
        let levels = RoomPowerLevels::new(source, &rules, powers.creators().iter().cloned());
        Ok(Some(levels.into()))
    }
}
