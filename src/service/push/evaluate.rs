//! The evaluator: runs every local member's push rules on every new event of their rooms.

use std::sync::Arc;

use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource};
use ruma::events::{AnySyncTimelineEvent, StateEventType, TimelineEventType};
use ruma::push::{
    Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset,
};
use ruma::serde::Raw;
use ruma::{OwnedUserId, UInt, UserId};
use serde_json::Value;

use super::EvalJob;
use super::notifications::NewNotification;
use crate::core::{Pdu, StateMap, room_version};
use crate::error::{Error, Result};
use crate::service::Services;
use crate::service::receipts::{MAIN_THREAD, thread_root};

/// Jobs taken from the queue at once.
const BATCH: usize = 256;

/// The actions of the first rule of `rules` that applies (none: no rule applies).
pub async fn actions_for<'a>(
    rules: &'a Ruleset,
    event: &FlattenedJson,
    context: &PushConditionRoomCtx,
) -> &'a [Action] {
    for rule in rules.iter() {
        if rule.applies(event, context).await {
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
                        tracing::warn!(error = %e, "catching up on push evaluation failed");
                        0
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
                    if let Err(e) = services.evaluate_event(&job).await {
                        tracing::warn!(error = %e, event_id = %job.event_id, "push evaluation failed");
                    }
                    progress = job.position;
                    if let Err(e) = services.push.set_progress(progress) {
                        tracing::warn!(error = %e, "recording push evaluation progress failed");
                    }
                }
            }
        });
    }

    /// Evaluates the events appended after the stored progress (a previous run stopped before
    /// them); returns the position evaluated up to.
    async fn push_catch_up(&self) -> Result<u64> {
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
            for job in &jobs {
                if let Err(e) = self.evaluate_event(job).await {
                    tracing::warn!(error = %e, event_id = %job.event_id, "push evaluation failed");
                }
            }
        }
        self.push.set_progress(upto)?;
        Ok(upto)
    }

    /// Runs the push rules of the event's local recipients and records what notifies.
    pub(crate) async fn evaluate_event(&self, job: &EvalJob) -> Result<()> {
        let Some(pdu) = self.rooms.pdu(&job.event_id)? else {
            return Ok(());
        };
        let room_id = &job.room_id;
        if let Some(target) = pdu.redacts() {
            self.forget_notifications_of(room_id, target)?;
        }
        if self.rooms.redacted_by(&job.event_id)?.is_some() {
            return Ok(());
        }
        let state = self.rooms.current_state(room_id)?;
        let joined = self.rooms.members(room_id, Some("join"))?;
        let member_count = UInt::try_from(joined.len()).unwrap_or(UInt::MAX);
        let mut recipients: Vec<OwnedUserId> = joined
            .into_iter()
            .filter_map(|(user, _)| OwnedUserId::try_from(user).ok())
            .filter(|user| self.is_local(user))
            .collect();
        // An invite notifies its (local) target, who is not a member yet.
        if *pdu.kind() == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key()
            && let Ok(target) = OwnedUserId::try_from(target)
            && self.is_local(&target)
            && !recipients.contains(&target)
            && self.rooms.membership(room_id, &target)?.as_deref() == Some("invite")
        {
            recipients.push(target);
        }
        recipients.retain(|user| user != pdu.sender());
        if recipients.is_empty() {
            return Ok(());
        }
        let raw: Raw<AnySyncTimelineEvent> =
            Raw::from_json(serde_json::value::to_raw_value(pdu.json()).map_err(Error::internal)?);
        let flattened = FlattenedJson::from_raw(&raw);
        let content: Value = serde_json::from_str(pdu.content().get())?;
        let thread = thread_root(&content).unwrap_or(MAIN_THREAD).to_owned();
        let power = self.push_power_levels(&pdu, &state)?;
        let mut notified = Vec::new();
        for user in recipients {
            if self
                .account_data
                .ignored_users(&user)?
                .contains(pdu.sender())
            {
                continue;
            }
            let rules = self.push_rules(&user)?;
            let display_name = self.member_display_name(&state, &user)?;
            let mut context = PushConditionRoomCtx::new(
                room_id.clone(),
                member_count,
                user.clone(),
                display_name.unwrap_or_default(),
            );
            if let Some(power) = &power {
                context = context.with_power_levels(power.clone());
            }
            let actions = actions_for(&rules, &flattened, &context).await;
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            notified.push(NewNotification {
                user,
                actions: actions.to_vec(),
                highlight: actions.iter().any(Action::is_highlight),
                thread: thread.clone(),
            });
        }
        if !notified.is_empty() {
            self.record_notifications(room_id, &job.event_id, job.position, &notified)?;
        }
        Ok(())
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
