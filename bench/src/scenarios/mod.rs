//! The load scenarios, one module each. A scenario module holds a `Config` (its command-line
//! flags, whose defaults are the standard parameters) implementing [`crate::Scenario`].
//!
//! To add one: write the module, list it here, add its subcommand in `main.rs` and, if it
//! belongs in the standard profile, one line in `main.rs`'s `standard`.

pub mod create_rooms;
pub mod fanout;
pub mod initial_sync;
pub mod join;
pub mod register;
pub mod search;
pub mod send;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use tokio::task::JoinSet;

use crate::Failures;

/// Operations timed by [`timed_ops`].
pub struct Timed<T> {
    /// `(operation index, latency, result)` of those that succeeded, in index order.
    pub done: Vec<(usize, Duration, T)>,
    pub failures: Failures,
}

impl<T> Timed<T> {
    pub fn latencies(&self) -> Vec<Duration> {
        self.done.iter().map(|(_, d, _)| *d).collect()
    }
}

/// Runs `op(worker, i)` for `i` in `0..count` on `workers` spawned workers (worker `w` is
/// `0..workers`), each taking the next index when its previous operation is done, until the
/// count is reached or `deadline` passes. Each operation is timed; failures are counted, not
/// fatal.
pub async fn timed_ops<T, F, Fut>(
    count: usize,
    deadline: Option<Instant>,
    workers: usize,
    op: F,
) -> Result<Timed<T>>
where
    T: Send + 'static,
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for worker in 0..workers.max(1) {
        let (op, next) = (op.clone(), next.clone());
        set.spawn(async move {
            let mut done = Vec::new();
            let mut failures = Failures::default();
            while deadline.is_none_or(|d| Instant::now() < d) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let started = Instant::now();
                match op(worker, i).await {
                    Ok(value) => done.push((i, started.elapsed(), value)),
                    Err(e) => failures.record(&e),
                }
            }
            (done, failures)
        });
    }
    let mut timed = Timed {
        done: Vec::new(),
        failures: Failures::default(),
    };
    while let Some(finished) = set.join_next().await {
        let (done, failures) = finished.map_err(|e| anyhow!("worker failed: {e}"))?;
        timed.done.extend(done);
        timed.failures.merge(failures);
    }
    timed.done.sort_by_key(|(i, _, _)| *i);
    Ok(timed)
}
