//! The stream side of a connection: steps of the user's stream from the cursor, each sent as
//! frames, then a wait on the notifier for the next change.
//!
//! Frames go into the connection's short queue, waiting for room: the store is the backlog, so
//! a client that reads slowly gets its frames as fast as it takes them and the server holds no
//! more than the queue. A client that takes nothing for the stall limit is a slow consumer.
//!
//! Every frame of a step carries the cursor the step started from, except the last, which
//! carries the step's end: resuming from any cursor a client saw may repeat frames of the
//! unfinished step, never skip one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::super::error::ChatResult;
use super::connection::{End, still_authorized};
use super::frame;
use super::render::render;
use crate::api::extract::AppState;
use crate::service::chat::stream::ChatEvent;
use crate::service::sessions::Authed;
use crate::service::sync::token;

/// What a producer shares with its connection.
pub(super) struct Producer {
    pub state: AppState,
    pub authed: Authed,
    /// The notifier's wake-ups for the user, subscribed before the start position was read.
    pub waiter: watch::Receiver<u64>,
    pub out: mpsc::Sender<String>,
    /// The cursor up to which every frame is queued (for the heartbeat frames).
    pub sent: Arc<AtomicU64>,
    pub stall_limit: Duration,
}

impl Producer {
    /// Streams from `cursor` until the connection must end, and says why.
    pub(super) async fn run(mut self, cursor: u64) -> End {
        match self.stream(cursor).await {
            Ok(end) => end,
            Err(e) => {
                tracing::warn!(error = %e, "the chat stream failed");
                End::Internal
            }
        }
    }

    async fn stream(&mut self, mut cursor: u64) -> ChatResult<End> {
        let user = self.authed.user_id.clone();
        loop {
            // Logging out, or the token expiring, ends the stream too.
            if let Some(end) = still_authorized(&self.state, &self.authed)? {
                return Ok(end);
            }
            let step = self.state.chat_stream_step(&user, cursor).await?;
            let mut batch = Batch {
                since: token(cursor),
                pending: None,
            };
            for gap in &step.gaps {
                let mut gap = Some(gap.clone());
                while let Some(current) = gap {
                    let (events, rest) = self.state.chat_stream_gap(&user, &current)?;
                    for event in &events {
                        if let Err(end) = self.push(&mut batch, event).await? {
                            return Ok(end);
                        }
                    }
                    gap = rest;
                }
            }
            for event in &step.events {
                if let Err(end) = self.push(&mut batch, event).await? {
                    return Ok(end);
                }
            }
            // The notifications beyond the step's first page, page by page.
            let mut notifications = step.notifications.clone();
            while let Some(current) = notifications {
                let (events, rest) = self.state.chat_stream_notifications(&user, &current)?;
                for event in &events {
                    if let Err(end) = self.push(&mut batch, event).await? {
                        return Ok(end);
                    }
                }
                notifications = rest;
            }
            if let Some((kind, data)) = batch.pending.take()
                && let Err(end) = self.send(frame(kind, &token(step.next), data)).await
            {
                return Ok(end);
            }
            cursor = step.next;
            self.sent.store(cursor, Ordering::SeqCst);
            let woken = self.waiter.wait_for(|p| *p > cursor).await.is_ok();
            if !woken {
                // The notifier closed: the server is stopping (or reopening its store).
                return Ok(End::ServerStopping);
            }
        }
    }

    /// Renders `event` and sends the frame before it (which is not the step's last).
    async fn push(&self, batch: &mut Batch, event: &ChatEvent) -> ChatResult<Result<(), End>> {
        let Some(rendered) = render(&self.state, &self.authed.user_id, event)? else {
            return Ok(Ok(()));
        };
        if let Some((kind, data)) = batch.pending.replace(rendered) {
            return Ok(self.send(frame(kind, &batch.since, data)).await);
        }
        Ok(Ok(()))
    }

    /// Queues a frame, waiting up to the stall limit for room.
    async fn send(&self, text: String) -> Result<(), End> {
        match self.out.send_timeout(text, self.stall_limit).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::SlowConsumer),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Gone),
        }
    }
}

/// The frames of one step being sent: the last one waits until it is known to be the last.
struct Batch {
    since: String,
    pending: Option<(&'static str, Value)>,
}
