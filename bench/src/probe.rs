//! The server's resource use, read from `/proc/PID` when the server runs on this machine:
//! resident memory (current and peak) and CPU time.

use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// Watches one process.
#[derive(Clone, Debug)]
pub struct Probe {
    pid: u32,
    ticks_per_s: f64,
    /// True when `sysconf(_SC_CLK_TCK)` failed and 100 ticks per second was assumed.
    pub ticks_assumed: bool,
}

/// The readings at the start of a measured phase.
#[derive(Clone, Debug)]
pub struct ProbeStart {
    at: Instant,
    cpu_ticks: u64,
    rss_kb: u64,
    peak_reset: bool,
}

/// The server's resource use over a measured phase.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServerUse {
    /// User plus system CPU time, seconds.
    pub cpu_s: f64,
    /// CPU time over wall time, percent (200 = two cores busy).
    pub cpu_percent: f64,
    pub rss_start_mb: f64,
    pub rss_end_mb: f64,
    /// `VmHWM` at the end.
    pub peak_rss_mb: f64,
    /// `scenario` when the peak was reset at the start (`clear_refs`), else `process start`.
    pub peak_since: String,
    /// Resident memory when the tool started, before any scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_rss_mb: Option<f64>,
}

/// One reading of `/proc/PID/status` and `/proc/PID/stat`.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub rss_kb: u64,
    pub peak_kb: u64,
    pub cpu_ticks: u64,
}

impl Probe {
    pub fn new(pid: u32) -> Result<Self> {
        // SAFETY: sysconf only reads a system constant.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let probe = Self {
            pid,
            ticks_per_s: if ticks > 0 { ticks as f64 } else { 100.0 },
            ticks_assumed: ticks <= 0,
        };
        probe
            .read()
            .with_context(|| format!("reading /proc/{pid} (is --pid the server's process?)"))?;
        Ok(probe)
    }

    pub fn read(&self) -> Result<Reading> {
        let status_path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&status_path).context(status_path.clone())?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .ok_or_else(|| anyhow!("{status_path} has no {name}"))
        };
        let stat_path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&stat_path).context(stat_path.clone())?;
        Ok(Reading {
            rss_kb: field("VmRSS:")?,
            peak_kb: field("VmHWM:")?,
            cpu_ticks: cpu_ticks(&stat).ok_or_else(|| anyhow!("{stat_path}: unexpected format"))?,
        })
    }

    /// Resets the peak (writing `5` to `clear_refs`) and takes the starting readings.
    pub fn start(&self) -> Result<ProbeStart> {
        let peak_reset = std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok();
        let reading = self.read()?;
        Ok(ProbeStart {
            at: Instant::now(),
            cpu_ticks: reading.cpu_ticks,
            rss_kb: reading.rss_kb,
            peak_reset,
        })
    }

    pub fn finish(&self, start: &ProbeStart) -> Result<ServerUse> {
        let end = self.read()?;
        let wall = start.at.elapsed().as_secs_f64();
        let cpu_s = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / self.ticks_per_s;
        Ok(ServerUse {
            cpu_s: round2(cpu_s),
            cpu_percent: if wall > 0.0 {
                round2(cpu_s / wall * 100.0)
            } else {
                0.0
            },
            rss_start_mb: mb(start.rss_kb),
            rss_end_mb: mb(end.rss_kb),
            peak_rss_mb: mb(end.peak_kb),
            peak_since: if start.peak_reset {
                "scenario".into()
            } else {
                "process start".into()
            },
            idle_rss_mb: None,
        })
    }
}

/// utime + stime from `/proc/PID/stat` (fields 14 and 15; the command name, field 2, is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn mb(kb: u64) -> f64 {
    round2(kb as f64 / 1024.0)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_ticks_past_odd_command_names() {
        let stat = "42 (a) b) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(cpu_ticks(stat), Some(300));
    }

    #[test]
    fn reads_this_process() {
        let probe = Probe::new(std::process::id()).unwrap();
        let start = probe.start().unwrap();
        let used = probe.finish(&start).unwrap();
        assert!(used.peak_rss_mb > 0.0);
    }
}
