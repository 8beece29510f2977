//! `register`: registers users concurrently (they join the pool the other scenarios use).
//! Registration hashes a password, so this mostly measures the server's password hashing.

use anyhow::Result;
use serde::Serialize;

use super::timed_ops;
use crate::{Bench, Scenario, Summary, scale};

pub const DEFAULT_USERS: usize = 200;
pub const DEFAULT_CONCURRENCY: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Users to register.
    #[arg(long, default_value_t = DEFAULT_USERS)]
    pub users: usize,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            users: DEFAULT_USERS,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Scenario for Config {
    const NAME: &'static str = "register";

    fn users_needed(&self) -> usize {
        0
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            users: scale(self.users, factor),
            ..self.clone()
        }
    }

    /// No throughput goal; the server's peak memory goal still applies.
    fn is_standard(&self) -> bool {
        true
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let registering = bench.clone();
        let timed = timed_ops(self.users, None, self.concurrency, move |_, _| {
            let bench = registering.clone();
            async move { bench.register_user().await }
        })
        .await?;
        let elapsed = phase.end(bench, &mut summary)?;
        summary.set_throughput(timed.done.len() as u64, elapsed, "users/s");
        summary.add_latency("register", &timed.latencies());
        summary.count("users", timed.done.len() as u64);
        summary.add_failures(&timed.failures);
        bench
            .add_to_pool(timed.done.into_iter().map(|(_, _, user)| user).collect())
            .await;
        Ok(summary)
    }
}
