//! `create-rooms`: concurrent users creating private rooms with a name and a topic, for a
//! number of rooms or for a duration. Measures rooms per second and creation latency.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;
use serde_json::json;

use super::timed_ops;
use crate::{Bench, Scenario, Summary, Target, create_room, scale};

pub const DEFAULT_USERS: usize = 10;
pub const DEFAULT_COUNT: usize = 3000;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Concurrent users, each creating one room after another.
    #[arg(long, default_value_t = DEFAULT_USERS)]
    pub users: usize,
    /// Rooms to create in all.
    #[arg(long, default_value_t = DEFAULT_COUNT)]
    pub count: usize,
    /// Create rooms for this many seconds instead of a count.
    #[arg(long)]
    pub duration_secs: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            users: DEFAULT_USERS,
            count: DEFAULT_COUNT,
            duration_secs: None,
        }
    }
}

impl Scenario for Config {
    const NAME: &'static str = "create-rooms";

    fn users_needed(&self) -> usize {
        self.users
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            count: scale(self.count, factor),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::at_least("throughput", 300.0)]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let users = bench.users(self.users.max(1)).await?;
        let api = bench.api().clone();
        let (count, deadline) = match self.duration_secs {
            Some(secs) => (usize::MAX, Some(Instant::now() + Duration::from_secs(secs))),
            None => (self.count, None),
        };
        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let workers = users.len();
        let timed = timed_ops(count, deadline, workers, move |worker, i| {
            let (api, user) = (api.clone(), users[worker].clone());
            async move {
                let body = json!({
                    "name": format!("bench room {i}"),
                    "topic": format!("created by worker {worker}"),
                    "preset": "private_chat",
                });
                create_room(&api, &user, &body).await
            }
        })
        .await?;
        let elapsed = phase.end(bench, &mut summary)?;
        // Every createRoom must give a new room: an ID answered twice is a failure.
        let mut failures = timed.failures.clone();
        let mut ids: Vec<&String> = timed.done.iter().map(|(_, _, id)| id).collect();
        ids.sort();
        for pair in ids.windows(2).filter(|p| p[0] == p[1]) {
            failures.record(&anyhow!("createRoom answered {} twice", pair[0]));
        }
        ids.dedup();
        summary.set_throughput(ids.len() as u64, elapsed, "rooms/s");
        summary.add_latency("create_room", &timed.latencies());
        summary.count("rooms", ids.len() as u64);
        summary.count("duplicate_room_ids", (timed.done.len() - ids.len()) as u64);
        summary.add_failures(&failures);
        Ok(summary)
    }
}
