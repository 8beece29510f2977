//! `fanout`: many clients long-poll `/sync` in one room while one sender sends messages one
//! after another. Measures, for every (message, receiver), the delay from the moment the send
//! was acknowledged (its `PUT` answered) to the moment that receiver's `/sync` answer holding the
//! message arrived, and checks that every receiver got every message exactly once.
//!
//! Setup: the receivers join the room, each does an initial sync for its token, and when all
//! have one the sender sends a warm-up message; the measured messages start once every
//! receiver has received the warm-up, so every receiver is in its long-poll loop by then.
//! Messages carry the run's tag and a sequence number in their content.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::{
    Api, Bench, Failures, Scenario, Summary, Target, User, concurrently, create_room, join_room,
    next_batch, scale, send_message, sync,
};

pub const DEFAULT_RECEIVERS: usize = 1000;
pub const DEFAULT_MESSAGES: usize = 50;
pub const DEFAULT_PAUSE_MS: u64 = 20;
pub const DEFAULT_DRAIN_SECS: u64 = 60;
pub const DEFAULT_BUDGET_SECS: u64 = 60;
/// How long the receivers are given to get their tokens and the warm-up message.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Initial syncs in flight at once during setup.
const INITIAL_SYNCS_AT_ONCE: usize = 32;
/// Joins in flight at once during setup.
const JOINS_AT_ONCE: usize = 8;
/// The long-poll timeout the receivers ask for, ms.
const LONG_POLL_MS: u64 = 30_000;
/// Content fields that identify this tool's messages.
const TAG_FIELD: &str = "roost_bench_run";
const SEQ_FIELD: &str = "roost_bench_seq";
/// The sequence number of the warm-up message.
const WARM_UP: i64 = -1;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Clients long-polling `/sync` in the room (each its own user).
    #[arg(long, default_value_t = DEFAULT_RECEIVERS)]
    pub receivers: usize,
    /// Messages sent, one after another.
    #[arg(long, default_value_t = DEFAULT_MESSAGES)]
    pub messages: usize,
    /// Pause after each acknowledged message before the next, ms.
    #[arg(long, default_value_t = DEFAULT_PAUSE_MS)]
    pub pause_ms: u64,
    /// How long, after the last message was acknowledged, the receivers may take to get
    /// everything before what they lack counts as missing, seconds.
    #[arg(long, default_value_t = DEFAULT_DRAIN_SECS)]
    pub drain_secs: u64,
    /// Stop sending when the messages have taken this long, seconds (a server that answers
    /// slowly still ends in bounded time; the messages not sent are reported).
    #[arg(long, default_value_t = DEFAULT_BUDGET_SECS)]
    pub budget_secs: u64,
    /// Leave ephemeral events (typing, receipts) out of the receivers' sync filter.
    #[arg(long)]
    pub no_ephemeral: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            receivers: DEFAULT_RECEIVERS,
            messages: DEFAULT_MESSAGES,
            pause_ms: DEFAULT_PAUSE_MS,
            drain_secs: DEFAULT_DRAIN_SECS,
            budget_secs: DEFAULT_BUDGET_SECS,
            no_ephemeral: false,
        }
    }
}

/// What a receiver tells the sender during setup.
enum Ready {
    Token,
    WarmedUp,
    Failed(String),
}

/// What a receiver saw.
#[derive(Default)]
struct Received {
    /// `(sequence number, arrival)` of every measured message, duplicates included.
    arrivals: Vec<(usize, Instant)>,
    /// Sync answers after the warm-up.
    responses: u64,
    /// Answers whose room timeline was `limited` (events skipped).
    limited: u64,
    failure: Option<String>,
}

/// Everything a receiver needs.
struct Receiver {
    api: Api,
    user: User,
    room: String,
    tag: String,
    initial_filter: String,
    poll_filter: String,
    /// Measured messages (sequence numbers `0..messages`).
    messages: usize,
}

impl Scenario for Config {
    const NAME: &'static str = "fanout";

    fn users_needed(&self) -> usize {
        self.receivers + 1
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            receivers: scale(self.receivers, factor),
            messages: scale(self.messages, factor),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::at_most("delivery.p99", 50.0),
            Target::at_most("count.missing", 0.0),
            Target::at_most("count.duplicates", 0.0),
        ]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let receivers = self.receivers.max(1);
        let messages = self.messages.max(1);
        let users = bench.users(receivers + 1).await?;
        let api = bench.api().clone();
        let sender = users[0].clone();
        let room = create_room(
            &api,
            &sender,
            &json!({ "preset": "public_chat", "name": "fanout bench" }),
        )
        .await?;
        bench.note(Self::NAME, &format!("{receivers} receivers joining"));
        let (joiners, join_room_id, join_api) = (users.clone(), room.clone(), api.clone());
        concurrently(receivers, JOINS_AT_ONCE, move |i| {
            let (api, user, room) = (
                join_api.clone(),
                joiners[i + 1].clone(),
                join_room_id.clone(),
            );
            async move { join_room(&api, &user, &room).await }
        })
        .await?;

        let tag = format!("{}-fanout-{}", bench.prefix(), room);
        let mut room_filter = json!({
            "rooms": [room],
            "timeline": { "limit": 1 },
            "state": { "lazy_load_members": true },
        });
        if self.no_ephemeral {
            room_filter["ephemeral"] = json!({ "types": [] });
        }
        let initial_filter = json!({ "room": room_filter }).to_string();
        room_filter["timeline"]["limit"] = json!((messages + 10).min(500));
        let poll_filter = json!({ "room": room_filter }).to_string();

        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        // Until when the receivers listen: `Some(n)` until they have seen message `n` (or a later
        // one), `None` not any longer.
        let (until_tx, until_rx) = watch::channel(Some(messages - 1));
        let permits = std::sync::Arc::new(Semaphore::new(INITIAL_SYNCS_AT_ONCE));
        let mut handles = Vec::with_capacity(receivers);
        for user in &users[1..] {
            let receiver = Receiver {
                api: api.clone(),
                user: user.clone(),
                room: room.clone(),
                tag: tag.clone(),
                initial_filter: initial_filter.clone(),
                poll_filter: poll_filter.clone(),
                messages,
            };
            let (ready, until, permits) = (ready_tx.clone(), until_rx.clone(), permits.clone());
            handles.push(tokio::spawn(receiver.run(ready, until, permits)));
        }
        drop(ready_tx);

        let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
        wait_for(&mut ready_rx, receivers, deadline, |r| {
            matches!(r, Ready::Token)
        })
        .await
        .context("waiting for the receivers' initial syncs")?;
        bench.note(
            Self::NAME,
            "every receiver has its sync token; sending the warm-up",
        );
        let warm_up = json!({
            "msgtype": "m.text",
            "body": "warm-up",
            TAG_FIELD: tag,
            SEQ_FIELD: WARM_UP,
        });
        send_message(&api, &sender, &room, &format!("{tag}-warm-up"), &warm_up).await?;
        wait_for(&mut ready_rx, receivers, deadline, |r| {
            matches!(r, Ready::WarmedUp)
        })
        .await
        .context("waiting for every receiver to get the warm-up message")?;
        bench.note(Self::NAME, "every receiver got the warm-up; measuring");

        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let started = Instant::now();
        let mut sent: Vec<Option<(Instant, Instant)>> = vec![None; messages];
        let mut issued_at: Vec<Instant> = Vec::with_capacity(messages);
        let mut send_latencies = Vec::with_capacity(messages);
        let mut failures = Failures::default();
        let budget = Duration::from_secs(self.budget_secs);
        let mut attempted = 0;
        for (seq, slot) in sent.iter_mut().enumerate() {
            if phase.elapsed() > budget {
                failures.record(&anyhow!(
                    "time budget of {} s spent after {seq} of {messages} messages",
                    self.budget_secs
                ));
                break;
            }
            attempted += 1;
            let content = json!({
                "msgtype": "m.text",
                "body": format!("fanout message {seq}"),
                TAG_FIELD: tag,
                SEQ_FIELD: seq,
            });
            let issued = Instant::now();
            issued_at.push(issued);
            match send_message(&api, &sender, &room, &format!("{tag}-{seq}"), &content).await {
                Ok(_) => {
                    let acked = Instant::now();
                    *slot = Some((issued, acked));
                    send_latencies.push(acked - issued);
                }
                Err(e) => failures.record(&e),
            }
            if seq + 1 < messages {
                tokio::time::sleep(Duration::from_millis(self.pause_ms)).await;
            }
        }

        bench.note(
            Self::NAME,
            &format!("{} messages sent", send_latencies.len()),
        );
        if attempted < messages {
            until_tx.send_replace(attempted.checked_sub(1));
        }
        // Every receiver stops by itself once it has the last message; after the drain time
        // the rest are told to stop, and what they lack counts as missing.
        let drain_deadline = tokio::time::Instant::now() + Duration::from_secs(self.drain_secs);
        let mut results = Vec::with_capacity(receivers);
        for mut handle in handles {
            let finished = match tokio::time::timeout_at(drain_deadline, &mut handle).await {
                Ok(finished) => finished,
                Err(_) => {
                    until_tx.send_replace(None);
                    handle.await
                }
            };
            results.push(finished.map_err(|e| anyhow!("receiver failed: {e}"))?);
        }
        let last_arrival = results
            .iter()
            .flat_map(|r| r.arrivals.iter().map(|(_, at)| *at))
            .max();
        phase.end(bench, &mut summary)?;

        let mut seen = vec![false; messages];
        let mut delays = Vec::with_capacity(messages * receivers);
        let mut delays_from_send = Vec::with_capacity(messages * receivers);
        let (mut deliveries, mut duplicates, mut early) = (0u64, 0u64, 0u64);
        let (mut responses, mut limited) = (0u64, 0u64);
        let mut receiver_failures = Failures::default();
        for result in &results {
            seen.iter_mut().for_each(|s| *s = false);
            for &(seq, at) in &result.arrivals {
                if seen[seq] {
                    duplicates += 1;
                    continue;
                }
                seen[seq] = true;
                deliveries += 1;
                delays_from_send.push(at.saturating_duration_since(issued_at[seq]));
                if let Some((_, acked)) = sent[seq] {
                    if at < acked {
                        early += 1;
                    }
                    delays.push(at.saturating_duration_since(acked));
                }
            }
            responses += result.responses;
            limited += result.limited;
            if let Some(failure) = &result.failure {
                receiver_failures.record(&anyhow!("{failure}"));
            }
        }
        // Messages left unsent for lack of time are not expected (the failure says so).
        let expected = (attempted * receivers) as u64;
        if let Some(last) = last_arrival {
            summary.set_throughput(deliveries, last.duration_since(started), "deliveries/s");
        }
        summary.add_latency("delivery", &delays);
        summary.add_latency("delivery_from_send", &delays_from_send);
        summary.add_latency("send", &send_latencies);
        summary.count("deliveries", deliveries);
        summary.count("expected", expected);
        summary.count("messages_sent", send_latencies.len() as u64);
        summary.count("missing", expected - deliveries);
        summary.count("duplicates", duplicates);
        summary.count("before_ack", early);
        summary.count("sync_responses", responses);
        summary.count("limited_timelines", limited);
        summary.add_failures(&failures);
        summary.add_failures(&receiver_failures);
        Ok(summary)
    }
}

/// Waits until `count` receivers reported what `wanted` matches; fails on a receiver failure, on
/// the deadline or when every receiver has ended.
async fn wait_for(
    ready: &mut mpsc::UnboundedReceiver<Ready>,
    count: usize,
    deadline: tokio::time::Instant,
    wanted: impl Fn(&Ready) -> bool,
) -> Result<()> {
    let mut seen = 0;
    while seen < count {
        match tokio::time::timeout_at(deadline, ready.recv()).await {
            Ok(Some(Ready::Failed(e))) => bail!("a receiver failed: {e}"),
            Ok(Some(r)) if wanted(&r) => seen += 1,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the receivers ended early ({seen} of {count} ready)"),
            Err(_) => bail!("timed out with {seen} of {count} receivers ready"),
        }
    }
    Ok(())
}

impl Receiver {
    async fn run(
        self,
        ready: mpsc::UnboundedSender<Ready>,
        mut until: watch::Receiver<Option<usize>>,
        permits: std::sync::Arc<Semaphore>,
    ) -> Received {
        let mut received = Received::default();
        let initial = match permits.acquire().await {
            Ok(_permit) => sync(&self.api, &self.user, &self.initial_filter, None, None).await,
            Err(e) => Err(anyhow!("{e}")),
        };
        let mut since = match initial.and_then(|reply| next_batch(&reply)) {
            Ok(token) => token,
            Err(e) => {
                let _ = ready.send(Ready::Failed(format!("{e:#}")));
                received.failure = Some(format!("{e:#}"));
                return received;
            }
        };
        let _ = ready.send(Ready::Token);
        let mut warmed_up = false;
        let mut highest: Option<usize> = None;
        loop {
            let done = match *until.borrow() {
                None => true,
                Some(last) => highest.is_some_and(|h| h >= last),
            };
            if done {
                break;
            }
            let sync_once = sync(
                &self.api,
                &self.user,
                &self.poll_filter,
                Some(&since),
                Some(LONG_POLL_MS),
            );
            let reply = tokio::select! {
                reply = sync_once => reply,
                changed = until.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let arrived = Instant::now();
            let reply = match reply.and_then(|r| next_batch(&r).map(|token| (r, token))) {
                Ok((reply, token)) => {
                    since = token;
                    reply
                }
                Err(e) => {
                    if !warmed_up {
                        let _ = ready.send(Ready::Failed(format!("{e:#}")));
                    }
                    received.failure = Some(format!("{e:#}"));
                    break;
                }
            };
            if warmed_up {
                received.responses += 1;
            }
            let timeline = &reply["rooms"]["join"][&self.room]["timeline"];
            if timeline["limited"] == Value::Bool(true) && warmed_up {
                received.limited += 1;
            }
            for seq in self.sequence_numbers(timeline) {
                if seq == WARM_UP {
                    if !warmed_up {
                        warmed_up = true;
                        let _ = ready.send(Ready::WarmedUp);
                    }
                } else if let Ok(seq) = usize::try_from(seq)
                    && seq < self.messages
                {
                    received.arrivals.push((seq, arrived));
                    highest = highest.max(Some(seq));
                }
            }
        }
        received
    }

    /// The sequence numbers of this run's messages in a timeline.
    fn sequence_numbers<'a>(&'a self, timeline: &'a Value) -> impl Iterator<Item = i64> + 'a {
        timeline["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room.message" && e["content"][TAG_FIELD] == *self.tag)
            .filter_map(|e| e["content"][SEQ_FIELD].as_i64())
    }
}
