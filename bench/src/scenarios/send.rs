//! `send`: concurrent senders, each sending its messages one after another into its room
//! (sender `i` into room `i mod rooms`). Measures messages per second and send latency.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use crate::{
    Bench, Failures, Scenario, Summary, Target, concurrently, create_rooms_in_turn, join_room,
    scale, send_message,
};

pub const DEFAULT_SENDERS: usize = 20;
pub const DEFAULT_MESSAGES: usize = 500;
pub const DEFAULT_ROOMS: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Concurrent senders (users).
    #[arg(long, default_value_t = DEFAULT_SENDERS)]
    pub senders: usize,
    /// Messages each sender sends.
    #[arg(long, default_value_t = DEFAULT_MESSAGES)]
    pub messages: usize,
    /// Rooms the senders are spread over.
    #[arg(long, default_value_t = DEFAULT_ROOMS)]
    pub rooms: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            senders: DEFAULT_SENDERS,
            messages: DEFAULT_MESSAGES,
            rooms: DEFAULT_ROOMS,
        }
    }
}

impl Scenario for Config {
    const NAME: &'static str = "send";

    fn users_needed(&self) -> usize {
        self.senders
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            messages: scale(self.messages, factor),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::at_least("throughput", 3000.0),
            Target::at_most("send.p99", 25.0),
        ]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let senders = self.senders.max(1);
        let room_count = self.rooms.clamp(1, senders);
        let users = bench.users(senders).await?;
        let api = bench.api().clone();

        // The first sender creates every room; the others join the room they send into.
        let rooms = create_rooms_in_turn(
            &api,
            &users[0],
            room_count,
            |r| json!({ "preset": "public_chat", "name": format!("send bench {r}") }),
        )
        .await?;
        let (joiners, join_rooms, join_api) = (users.clone(), rooms.clone(), api.clone());
        concurrently(senders - 1, 4, move |i| {
            let (api, user) = (join_api.clone(), joiners[i + 1].clone());
            let room = join_rooms[(i + 1) % room_count].clone();
            async move { join_room(&api, &user, &room).await }
        })
        .await?;

        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let mut tasks = JoinSet::new();
        for (s, user) in users.into_iter().enumerate() {
            let (api, room) = (api.clone(), rooms[s % room_count].clone());
            let (messages, prefix) = (self.messages, bench.prefix().to_owned());
            tasks.spawn(async move {
                let mut latencies = Vec::with_capacity(messages);
                let mut failures = Failures::default();
                for m in 0..messages {
                    let content = json!({
                        "msgtype": "m.text",
                        "body": format!("message {m} from sender {s}"),
                    });
                    let txn = format!("{prefix}-send-{s}-{m}");
                    let started = Instant::now();
                    match send_message(&api, &user, &room, &txn, &content).await {
                        Ok(_) => latencies.push(started.elapsed()),
                        Err(e) => failures.record(&e),
                    }
                }
                (latencies, failures)
            });
        }
        let mut latencies: Vec<Duration> = Vec::with_capacity(senders * self.messages);
        let mut failures = Failures::default();
        while let Some(done) = tasks.join_next().await {
            let (l, f) = done.map_err(|e| anyhow!("sender failed: {e}"))?;
            latencies.extend(l);
            failures.merge(f);
        }
        let elapsed = phase.end(bench, &mut summary)?;

        summary.set_throughput(latencies.len() as u64, elapsed, "msg/s");
        summary.add_latency("send", &latencies);
        summary.count("messages", latencies.len() as u64);
        summary.count("expected", (senders * self.messages) as u64);
        summary.add_failures(&failures);
        summary.details = json!({ "rooms": rooms });
        Ok(summary)
    }
}
