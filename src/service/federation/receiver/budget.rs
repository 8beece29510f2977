//! What one incoming transaction may make us fetch from other servers. A peer controls what its
//! events reference, so every fetch it can cause is counted against these limits; past them, the
//! PDU that needs more fails with an error instead of making us work without end.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

/// Events fetched one by one (`/event/{eventId}`: auth events, state at gaps) per transaction.
pub const MAX_FETCHED_EVENTS: usize = 5_000;
/// Events taken from `/get_missing_events` answers per transaction.
pub const MAX_PULLED_EVENTS: usize = 100;
/// Gaps filled with `/state_ids` per transaction.
pub const MAX_GAPS: usize = 20;

/// The fetches left to one transaction (shared by the rooms it touches).
pub struct Budget {
    events: AtomicUsize,
    pulled: AtomicUsize,
    gaps: AtomicUsize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            events: AtomicUsize::new(MAX_FETCHED_EVENTS),
            pulled: AtomicUsize::new(MAX_PULLED_EVENTS),
            gaps: AtomicUsize::new(MAX_GAPS),
        }
    }
}

impl Budget {
    /// Takes `n` event fetches.
    pub fn fetch_events(&self, n: usize) -> Result<()> {
        take(&self.events, n, "events to fetch")
    }

    /// Takes up to `wanted` pulled events; how many are left for this pull (0: none).
    pub fn pull_events(&self, wanted: usize) -> usize {
        let mut granted = 0;
        let _ = self
            .pulled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                granted = left.min(wanted);
                Some(left - granted)
            });
        granted
    }

    /// Takes one gap to fill.
    pub fn fill_gap(&self) -> Result<()> {
        take(&self.gaps, 1, "gaps to fill")
    }
}

fn take(counter: &AtomicUsize, n: usize, what: &str) -> Result<()> {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(n)
        })
        .map(|_| ())
        .map_err(|_| Error::TooLarge(format!("the transaction needs too many {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold() {
        let budget = Budget::default();
        budget.fetch_events(MAX_FETCHED_EVENTS - 1).unwrap();
        assert!(budget.fetch_events(2).is_err(), "all or nothing");
        budget.fetch_events(1).unwrap();
        assert!(budget.fetch_events(1).is_err());
        assert_eq!(budget.pull_events(60), 60);
        assert_eq!(budget.pull_events(60), MAX_PULLED_EVENTS - 60);
        assert_eq!(budget.pull_events(1), 0);
        for _ in 0..MAX_GAPS {
            budget.fill_gap().unwrap();
        }
        assert!(budget.fill_gap().is_err());
    }
}
