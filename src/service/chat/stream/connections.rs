//! What the stream's connections share: their timings and counts for monitoring.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The heartbeat interval when nothing else is set.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// How long a connection may refuse to take frames before it is closed as a slow consumer.
pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(10);

/// What the stream's connections share: their timings (how often heartbeats go out, how long a
/// client may leave the outgoing queue full before it is dropped) and counts for monitoring.
pub struct Stream {
    heartbeat_ms: AtomicU64,
    stall_limit_ms: AtomicU64,
    open: AtomicU64,
    slow_consumers: AtomicU64,
}

impl Default for Stream {
    fn default() -> Self {
        Self {
            heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT.as_millis() as u64),
            stall_limit_ms: AtomicU64::new(DEFAULT_STALL_LIMIT.as_millis() as u64),
            open: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
        }
    }
}

/// Counts a connection as open while it lives.
pub struct OpenConnection<'a>(&'a Stream);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Stream {
    /// Counts a connection as open until the guard is dropped.
    pub fn opened(&self) -> OpenConnection<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// The connections open now (authenticating or streaming).
    pub fn open_connections(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Records a connection closed as a slow consumer.
    pub fn dropped_slow_consumer(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// How many connections were closed as slow consumers since the server started.
    pub fn slow_consumers_dropped(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
    }

    pub fn stall_limit(&self) -> Duration {
        Duration::from_millis(self.stall_limit_ms.load(Ordering::Relaxed))
    }

    /// Changes the timings of connections opened from now on (at least a millisecond each).
    pub fn set_timings(&self, heartbeat: Duration, stall_limit: Duration) {
        let ms = |d: Duration| (d.as_millis() as u64).max(1);
        self.heartbeat_ms.store(ms(heartbeat), Ordering::Relaxed);
        self.stall_limit_ms
            .store(ms(stall_limit), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_have_a_floor() {
        let stream = Stream::default();
        assert_eq!(stream.heartbeat(), DEFAULT_HEARTBEAT);
        stream.set_timings(Duration::ZERO, Duration::from_millis(250));
        assert_eq!(stream.heartbeat(), Duration::from_millis(1));
        assert_eq!(stream.stall_limit(), Duration::from_millis(250));
    }
}
