//! `join`: one public room grows to many members, with a few users joining at once. Measures
//! joins per second and how join latency changes with the room's size: the median of the joins
//! that took the room from about 25 to 75 members against the median of the last 50 joins.
//!
//! Join `i` (from 0) takes the room to about `i + 2` members (the creator is the first); with
//! concurrent joiners the exact size at each join varies by the concurrency.

use anyhow::Result;
use serde::Serialize;
use serde_json::json;

use super::timed_ops;
use crate::summary::{Latency, median_ms};
use crate::{Bench, Scenario, Summary, Target, create_room, join_room, scale};

pub const DEFAULT_MEMBERS: usize = 5000;
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Latency is reported for this many ranges of room size.
const SIZE_BUCKETS: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize, clap::Args)]
pub struct Config {
    /// Members the room grows to (the creator included).
    #[arg(long, default_value_t = DEFAULT_MEMBERS)]
    pub members: usize,
    /// Joins in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            members: DEFAULT_MEMBERS,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

impl Scenario for Config {
    const NAME: &'static str = "join";

    fn users_needed(&self) -> usize {
        self.members
    }

    fn scaled(&self, factor: f64) -> Self {
        Self {
            members: scale(self.members, factor).max(2),
            ..self.clone()
        }
    }

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    fn targets(&self) -> Vec<Target> {
        vec![Target::at_most("value.late_over_early", 2.0)]
    }

    async fn run(&self, bench: &Bench) -> Result<Summary> {
        let members = self.members.max(2);
        let users = bench.users(members).await?;
        let api = bench.api().clone();
        let room = create_room(
            &api,
            &users[0],
            &json!({ "preset": "public_chat", "name": "join bench" }),
        )
        .await?;
        let joins = members - 1;
        let mut summary = Summary::new(Self::NAME, self);
        let phase = bench.begin()?;
        let joining_room = room.clone();
        let timed = timed_ops(joins, None, self.concurrency, move |_, i| {
            let (api, user, room) = (api.clone(), users[i + 1].clone(), joining_room.clone());
            async move { join_room(&api, &user, &room).await }
        })
        .await?;
        let elapsed = phase.end(bench, &mut summary)?;

        // Join `i` takes the room to `i + 2` members.
        let size_of = |i: usize| i + 2;
        let early: Vec<_> = timed
            .done
            .iter()
            .filter(|(i, _, _)| (25..=75).contains(&size_of(*i)))
            .map(|(_, d, _)| *d)
            .collect();
        let late: Vec<_> = timed
            .done
            .iter()
            .filter(|(i, _, _)| *i + 50 >= joins && size_of(*i) > 75)
            .map(|(_, d, _)| *d)
            .collect();
        let mut by_size = Vec::new();
        let bucket = joins.div_ceil(SIZE_BUCKETS).max(1);
        for start in (0..joins).step_by(bucket) {
            let end = (start + bucket).min(joins);
            let samples: Vec<_> = timed
                .done
                .iter()
                .filter(|(i, _, _)| (start..end).contains(i))
                .map(|(_, d, _)| *d)
                .collect();
            if let Some(l) = Latency::of("", &samples) {
                by_size.push(json!({
                    "members_from": size_of(start) - 1,
                    "members_to": size_of(end - 1),
                    "joins": l.count,
                    "p50_ms": l.p50_ms,
                    "p99_ms": l.p99_ms,
                }));
            }
        }

        summary.set_throughput(timed.done.len() as u64, elapsed, "joins/s");
        summary.add_latency("join", &timed.latencies());
        summary.add_latency("join_25_75", &early);
        summary.add_latency("join_last_50", &late);
        if let (Some(e), Some(l)) = (median_ms(&early), median_ms(&late))
            && e > 0.0
        {
            summary
                .values
                .insert("late_over_early".into(), (l / e * 100.0).round() / 100.0);
        }
        summary.count("joins", timed.done.len() as u64);
        summary.count("members", (timed.done.len() + 1) as u64);
        summary.add_failures(&timed.failures);
        summary.details = json!({ "room_id": room, "by_size": by_size });
        Ok(summary)
    }
}
