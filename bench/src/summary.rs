//! What a scenario reports: throughput, latency distributions, counts, the server's resource use
//! and the targets it was held to. One [`Summary`] is one JSON line.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::probe::ServerUse;

/// The percentiles a latency curve is sampled at (dense in the tail).
pub const CURVE_PERCENTILES: &[f64] = &[
    0.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.0, 98.0, 99.0, 99.5,
    99.8, 99.9, 100.0,
];

/// One scenario's result. `scenario` is the first field so every summary line starts with
/// `{"scenario":`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub scenario: String,
    /// The name of the server or run, e.g. `roost` or `synapse`.
    #[serde(default)]
    pub label: String,
    /// The scenario's parameters.
    #[serde(default)]
    pub params: Value,
    /// Wall time of the measured phase (setup excluded), seconds.
    pub elapsed_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<Throughput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<Latency>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, u64>,
    /// Derived numbers, e.g. a ratio of latencies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
    /// Operations that failed (after rate-limit retries) and the first failure's message.
    #[serde(default)]
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    /// HTTP 429 answers seen during the scenario, setup included.
    #[serde(default)]
    pub rate_limited: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerUse>,
    /// The load tool's own CPU time over the measured phase, seconds (it shares the machine
    /// when the server runs on it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_cpu_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
    /// Scenario-specific detail that the tables do not show.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// Where it ran: cores, CPU, memory, and whether the server ran on the same machine.
    #[serde(default)]
    pub machine: String,
    /// Unix time (seconds) when the scenario finished.
    #[serde(default)]
    pub finished_at: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Throughput {
    pub value: f64,
    pub unit: String,
}

/// A latency distribution in milliseconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Latency {
    pub name: String,
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// `[percentile, ms]` at [`CURVE_PERCENTILES`].
    pub curve: Vec<[f64; 2]>,
}

impl Latency {
    /// The distribution of `samples`; `None` when there are none.
    pub fn of(name: &str, samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| percentile(&ms, p);
        Some(Self {
            name: name.to_owned(),
            count: ms.len(),
            mean_ms: round(ms.iter().sum::<f64>() / ms.len() as f64),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            max_ms: at(100.0),
            curve: CURVE_PERCENTILES.iter().map(|&p| [p, at(p)]).collect(),
        })
    }

    /// A named statistic: `p50`, `p90`, `p99`, `max` or `mean`.
    pub fn stat(&self, stat: &str) -> Option<f64> {
        match stat {
            "p50" => Some(self.p50_ms),
            "p90" => Some(self.p90_ms),
            "p99" => Some(self.p99_ms),
            "max" => Some(self.max_ms),
            "mean" => Some(self.mean_ms),
            _ => None,
        }
    }
}

/// Nearest-rank percentile of sorted, non-empty `sorted` (p0 is the minimum).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    round(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds to three decimals (microseconds), so the JSON stays short.
pub fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

/// The median of `samples`, in milliseconds.
pub fn median_ms(samples: &[Duration]) -> Option<f64> {
    Latency::of("", samples).map(|l| l.p50_ms)
}

/// A goal for one metric of a scenario (see [`Summary::metric`] for the names).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub metric: String,
    /// `>=` or `<=`.
    pub op: String,
    pub limit: f64,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub met: bool,
}

impl Target {
    pub fn at_least(metric: &str, limit: f64) -> Self {
        Self::new(metric, ">=", limit)
    }

    pub fn at_most(metric: &str, limit: f64) -> Self {
        Self::new(metric, "<=", limit)
    }

    fn new(metric: &str, op: &str, limit: f64) -> Self {
        Self {
            metric: metric.to_owned(),
            op: op.to_owned(),
            limit,
            value: None,
            met: false,
        }
    }

    pub fn describe(&self) -> String {
        format!("{} {} {}", self.metric, self.op, self.limit)
    }
}

impl Summary {
    pub fn new(scenario: &str, params: &impl Serialize) -> Self {
        Self {
            scenario: scenario.to_owned(),
            params: serde_json::to_value(params).unwrap_or(Value::Null),
            ..Self::default()
        }
    }

    pub fn set_throughput(&mut self, operations: u64, elapsed: Duration, unit: &str) {
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 {
            self.throughput = Some(Throughput {
                value: (operations as f64 / secs * 10.0).round() / 10.0,
                unit: unit.to_owned(),
            });
        }
    }

    /// Adds the distribution of `samples` under `name` (nothing when there are none).
    pub fn add_latency(&mut self, name: &str, samples: &[Duration]) {
        self.latency.extend(Latency::of(name, samples));
    }

    pub fn count(&mut self, name: &str, value: u64) {
        self.counts.insert(name.to_owned(), value);
    }

    pub fn add_failures(&mut self, failures: &Failures) {
        self.failures += failures.count;
        if self.first_failure.is_none() {
            self.first_failure.clone_from(&failures.first);
        }
    }

    pub fn latency(&self, name: &str) -> Option<&Latency> {
        self.latency.iter().find(|l| l.name == name)
    }

    /// A metric by name: `throughput`, `<latency>.<p50|p90|p99|max|mean>`, `count.<name>`,
    /// `value.<name>`, `server.peak_rss_mb`, `server.cpu_s`, `failures`, `rate_limited`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        if name == "throughput" {
            return self.throughput.as_ref().map(|t| t.value);
        }
        match name {
            "failures" => return Some(self.failures as f64),
            "rate_limited" => return Some(self.rate_limited as f64),
            "server.peak_rss_mb" => return self.server.as_ref().map(|s| s.peak_rss_mb),
            "server.cpu_s" => return self.server.as_ref().map(|s| s.cpu_s),
            _ => {}
        }
        if let Some(count) = name.strip_prefix("count.") {
            return self.counts.get(count).map(|&c| c as f64);
        }
        if let Some(value) = name.strip_prefix("value.") {
            return self.values.get(value).copied();
        }
        let (latency, stat) = name.rsplit_once('.')?;
        self.latency(latency)?.stat(stat)
    }

    /// Fills in each target's value and whether it was met.
    pub fn check_targets(&mut self) {
        for i in 0..self.targets.len() {
            let value = self.metric(&self.targets[i].metric);
            let target = &mut self.targets[i];
            target.value = value;
            target.met = value.is_some_and(|v| match target.op.as_str() {
                ">=" => v >= target.limit,
                _ => v <= target.limit,
            });
        }
    }
}

/// Operations that failed, counted rather than aborting the scenario.
#[derive(Clone, Debug, Default)]
pub struct Failures {
    pub count: u64,
    pub first: Option<String>,
}

impl Failures {
    pub fn record(&mut self, error: &anyhow::Error) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(format!("{error:#}"));
        }
    }

    pub fn merge(&mut self, other: Failures) {
        self.count += other.count;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latency::of("x", &samples).unwrap();
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(l.curve[0], [0.0, 1.0]);
        assert_eq!(l.count, 100);
        let one = Latency::of("y", &[Duration::from_micros(1500)]).unwrap();
        assert_eq!((one.p50_ms, one.p99_ms), (1.5, 1.5));
        assert!(Latency::of("z", &[]).is_none());
    }

    #[test]
    fn targets_read_metrics() {
        let mut s = Summary::new("send", &());
        s.set_throughput(3000, Duration::from_secs(1), "msg/s");
        s.add_latency("send", &[Duration::from_millis(30)]);
        s.targets = vec![
            Target::at_least("throughput", 3000.0),
            Target::at_most("send.p99", 25.0),
        ];
        s.check_targets();
        assert!(s.targets[0].met);
        assert!(!s.targets[1].met);
        assert_eq!(s.targets[1].value, Some(30.0));
        let line = serde_json::to_string(&s).unwrap();
        assert!(line.starts_with("{\"scenario\":"));
    }
}
