//! One connection's life: authentication, then three parties until it ends — the producer (the
//! stream, see `producer`), the writer (the socket's sending half, draining the queue) and this
//! task (the client's frames and the heartbeats) — and the close.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::super::error::ChatError;
use super::producer::Producer;
use super::{HeaderAuth, client_frames, error_frame, frame};
use crate::api::extract::AppState;
use crate::error::Error;
use crate::service::sessions::Authed;
use crate::service::sync::token;
use crate::util::now_ms;

/// How long a client without an `Authorization` header has to send its `auth` frame.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames waiting for the client at most.
const QUEUE_FRAMES: usize = 64;
/// How long a closing connection waits for the client to take what is queued and the close
/// frame, and to answer it.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Why a connection ends.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed it (its close frame is answered by the WebSocket stack).
    ClientClosed,
    /// The connection broke.
    Gone,
    /// 4001: no valid token, the session ended, or the access token expired.
    Unauthorized(&'static str),
    /// 4002: the client was silent for two heartbeat intervals.
    HeartbeatTimeout,
    /// 4008: the client took no frame for the stall limit.
    SlowConsumer,
    /// 1001: the server is stopping.
    ServerStopping,
    /// 1011.
    Internal,
}

impl End {
    /// The close code and reason to send, if a close frame is still useful.
    fn close_frame(&self) -> Option<(u16, &'static str)> {
        Some(match self {
            End::ClientClosed | End::Gone => return None,
            End::Unauthorized(reason) => (4001, reason),
            End::HeartbeatTimeout => (4002, "heartbeat timeout"),
            End::SlowConsumer => (4008, "slow consumer"),
            End::ServerStopping => (1001, "the server is stopping"),
            End::Internal => (1011, "internal error"),
        })
    }
}

/// Runs a connection from its upgrade to its close.
pub(super) async fn run(
    state: AppState,
    mut socket: WebSocket,
    auth: HeaderAuth,
    cursor: Option<u64>,
    ip: String,
) {
    let _open = state.chat.stream.opened();
    let authed = match auth {
        HeaderAuth::Bearer(token) => authenticate(&state, &token, &ip).await,
        HeaderAuth::Malformed => Err(End::Unauthorized(
            "the Authorization header is not a bearer token",
        )),
        HeaderAuth::Absent => first_frame_auth(&state, &mut socket, &ip).await,
    };
    match authed {
        Ok(authed) => serve(&state, socket, authed, cursor).await,
        Err(end) => close(&state, socket, &end).await,
    }
}

/// Waits for `{"type": "auth", "token": ...}` as the first frame.
async fn first_frame_auth(
    state: &AppState,
    socket: &mut WebSocket,
    ip: &str,
) -> Result<Authed, End> {
    let deadline = Instant::now() + AUTH_TIMEOUT;
    loop {
        let message = match tokio::time::timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(End::Unauthorized("no auth frame within 10 seconds")),
            Ok(None | Some(Err(_))) => return Err(End::Gone),
            Ok(Some(Ok(message))) => message,
        };
        let token = match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(End::ClientClosed),
            Message::Binary(_) => None,
            Message::Text(text) => serde_json::from_str::<serde_json::Value>(text.as_str())
                .ok()
                .filter(|frame| frame["type"] == "auth")
                .and_then(|frame| frame["token"].as_str().map(str::to_owned)),
        };
        return match token {
            Some(token) => authenticate(state, &token, ip).await,
            None => Err(End::Unauthorized(
                "the first frame must be {\"type\": \"auth\", \"token\": ...}",
            )),
        };
    }
}

/// Checks an access token as every request does: the connection then counts as the device's
/// activity, and its user is online.
async fn authenticate(state: &AppState, token: &str, ip: &str) -> Result<Authed, End> {
    let authed = state.sessions.authenticate(token).map_err(|e| match e {
        Error::UnknownToken { .. } => End::Unauthorized("unknown, expired or revoked token"),
        other => {
            tracing::warn!(error = %other, "checking a stream token failed");
            End::Internal
        }
    })?;
    let touched = state.devices.touch(&authed.user_id, &authed.device_id, ip);
    let online = match touched {
        Ok(()) => state.presence.on_sync(&authed.user_id, None).await,
        Err(e) => Err(e),
    };
    if let Err(e) = online {
        tracing::warn!(error = %e, "recording a stream connection failed");
        return Err(End::Internal);
    }
    Ok(authed)
}

/// The authenticated connection: `ready`, then the stream, the client's frames and the
/// heartbeats until one of them ends it.
async fn serve(state: &AppState, socket: WebSocket, authed: Authed, cursor: Option<u64>) {
    let heartbeat = state.chat.stream.heartbeat();
    let stall_limit = state.chat.stream.stall_limit();
    // Subscribed before the start is read, so that no change after it goes unnoticed.
    let waiter = state.notifier.subscribe(&authed.user_id);
    let start = match cursor {
        Some(cursor) => cursor,
        None => match state.chat_stream_start().await {
            Ok(start) => start,
            Err(e) => {
                tracing::warn!(error = %e, "starting a chat stream failed");
                return close(state, socket, &End::Internal).await;
            }
        },
    };
    let (sink, mut stream) = socket.split();
    let (out, queue) = mpsc::channel(QUEUE_FRAMES);
    let (pings, ping_queue) = mpsc::channel(1);
    let (stop, stopped) = oneshot::channel();
    let writer = tokio::spawn(write(sink, queue, ping_queue, stopped));
    let ready = frame(
        "ready",
        &token(start),
        json!({
            "user_id": authed.user_id,
            "device_id": authed.device_id,
            "resumed": cursor.is_some(),
            "heartbeat_ms": heartbeat.as_millis() as u64,
        }),
    );
    // The queue is empty: this never waits.
    let _ = out.send(ready).await;
    let sent = Arc::new(AtomicU64::new(start));
    let mut producer = tokio::spawn(
        Producer {
            state: state.clone(),
            authed: authed.clone(),
            waiter,
            out: out.clone(),
            sent: sent.clone(),
            stall_limit,
        }
        .run(start),
    );
    let listener = Listener {
        state,
        authed: &authed,
        out: &out,
        pings: &pings,
        sent: &sent,
        heartbeat,
        stall_limit,
    };
    let end = listener.listen(&mut stream, &mut producer).await;
    producer.abort();
    let _ = stop.send(());
    if let Ok(sink) = writer.await
        && let Ok(socket) = sink.reunite(stream)
    {
        close(state, socket, &end).await;
    }
}

/// The client's side of an authenticated connection.
struct Listener<'a> {
    state: &'a AppState,
    authed: &'a Authed,
    out: &'a mpsc::Sender<String>,
    pings: &'a mpsc::Sender<()>,
    sent: &'a AtomicU64,
    heartbeat: Duration,
    stall_limit: Duration,
}

impl Listener<'_> {
    /// Handles the client's frames and sends the heartbeats until the connection must end.
    async fn listen(
        &self,
        stream: &mut SplitStream<WebSocket>,
        producer: &mut JoinHandle<End>,
    ) -> End {
        let mut ticks = tokio::time::interval_at(Instant::now() + self.heartbeat, self.heartbeat);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        // The token's expiry ends the connection on time, whatever else happens then.
        let expiry = expiry_deadline(self.authed);
        let expired = async move {
            match expiry {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            tokio::select! {
                end = &mut *producer => return end.unwrap_or(End::Internal),
                _ = &mut expired => return End::Unauthorized(TOKEN_EXPIRED),
                message = stream.next() => {
                    let Some(Ok(message)) = message else {
                        return End::Gone;
                    };
                    heard = Instant::now();
                    if let Err(end) = self.on_message(message).await {
                        return end;
                    }
                }
                _ = ticks.tick() => {
                    if heard.elapsed() >= self.heartbeat * 2 {
                        return End::HeartbeatTimeout;
                    }
                    if let Err(end) = self.beat() {
                        return end;
                    }
                }
            }
        }
    }

    async fn on_message(&self, message: Message) -> Result<(), End> {
        let reply = match message {
            Message::Text(text) => {
                client_frames::handle(self.state, &self.authed.user_id, text.as_str()).await
            }
            Message::Binary(_) => Some(error_frame(&ChatError::invalid(
                "frames are JSON text, not binary",
            ))),
            Message::Pong(_) => {
                if let Err(e) = self
                    .state
                    .presence
                    .on_sync(&self.authed.user_id, None)
                    .await
                {
                    tracing::debug!(error = %e, "recording presence failed");
                }
                None
            }
            Message::Ping(_) => None,
            Message::Close(_) => return Err(End::ClientClosed),
        };
        let Some(reply) = reply else {
            return Ok(());
        };
        match self.out.send_timeout(reply, self.stall_limit).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(End::SlowConsumer),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(End::Gone),
        }
    }

    /// A heartbeat: checks that the session lives on and the token is still good, then a `ping`
    /// frame with the latest cursor and a WebSocket ping.
    fn beat(&self) -> Result<(), End> {
        match still_authorized(self.state, self.authed) {
            Ok(None) => {}
            Ok(Some(end)) => return Err(end),
            Err(e) => {
                tracing::warn!(error = %e, "checking a stream session failed");
                return Err(End::Internal);
            }
        }
        let cursor = token(self.sent.load(Ordering::SeqCst));
        let ping = json!({ "type": "ping", "cursor": cursor }).to_string();
        // Nothing waits for room here: a client that leaves the queue full is the producer's to
        // close as a slow consumer. The `ping` frame stays in line with the stream's frames (its
        // cursor is safe only after them); the WebSocket ping goes first, so that a client busy
        // taking a backlog still answers it in time.
        let _ = self.out.try_send(ping);
        let _ = self.pings.try_send(());
        Ok(())
    }
}

/// The close reason when the access token the connection authenticated with expires.
const TOKEN_EXPIRED: &str = "the access token expired";

/// Whether the connection may go on: its session lives (logging out ends it) and its access
/// token has not expired. A token is checked once, when the connection opens; the connection
/// must not outlive it, so a client reconnects with a refreshed token. `Some(end)` when not.
pub(super) fn still_authorized(
    state: &AppState,
    authed: &Authed,
) -> crate::error::Result<Option<End>> {
    if authed
        .expires_at_secs
        .is_some_and(|exp| now_ms() >= exp.saturating_mul(1000))
    {
        return Ok(Some(End::Unauthorized(TOKEN_EXPIRED)));
    }
    Ok(match state.sessions.get(&authed.session_id)? {
        Some(_) => None,
        None => Some(End::Unauthorized("the session ended")),
    })
}

/// When the connection's access token expires, as a timer deadline.
fn expiry_deadline(authed: &Authed) -> Option<Instant> {
    let exp_ms = authed.expires_at_secs?.saturating_mul(1000);
    Some(Instant::now() + Duration::from_millis(exp_ms.saturating_sub(now_ms())))
}

/// The writer: sends what is queued (WebSocket pings first) until told to stop (or the
/// connection breaks), then hands the sending half back for the close.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<String>,
    mut pings: mpsc::Receiver<()>,
    mut stop: oneshot::Receiver<()>,
) -> SplitSink<WebSocket, Message> {
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut stop => break,
            Some(()) = pings.recv() => Message::Ping(Bytes::new()),
            next = queue.recv() => match next {
                Some(text) => Message::Text(text.into()),
                None => break,
            },
        };
        tokio::select! {
            biased;
            _ = &mut stop => break,
            sent = sink.send(message) => if sent.is_err() { break },
        }
    }
    sink
}

/// Sends the close frame `end` calls for and waits (a while) for the client to take it.
///
/// The frame is queued behind whatever the socket still holds without waiting for room (a slow
/// consumer would never make room): a client that reads again gets its frames, then the close.
async fn close(state: &AppState, mut socket: WebSocket, end: &End) {
    let Some((code, reason)) = end.close_frame() else {
        if matches!(end, End::ClientClosed) {
            // The WebSocket stack queued its answer to the client's close: send it.
            let _ = tokio::time::timeout(CLOSE_GRACE, socket.flush()).await;
        }
        return;
    };
    if matches!(end, End::SlowConsumer) {
        state.chat.stream.dropped_slow_consumer();
    }
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }));
    if Pin::new(&mut socket).start_send(frame).is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if socket.flush().await.is_err() {
            return;
        }
        // Until the client answers the close (or the connection ends).
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}
