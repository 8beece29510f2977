//! How long a destination that failed is left alone before the next attempt: exponential
//! backoff from [`INITIAL`], doubling with each failure in a row, capped at [`MAX`]. The time of
//! the next attempt is stored with the destination, so a restart keeps it.

use std::time::Duration;

/// The wait after the first failure.
pub const INITIAL: Duration = Duration::from_secs(5);
/// The longest wait, however many failures in a row.
pub const MAX: Duration = Duration::from_secs(3600);

/// The wait after `failures` failures in a row (at least one).
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    INITIAL
        .checked_mul(1u32 << doublings)
        .map_or(MAX, |d| d.min(MAX))
}

/// When the next attempt is due (ms since the epoch) after `failures` failures, the last at
/// `now_ms`.
pub fn next_attempt_ms(now_ms: u64, failures: u32) -> u64 {
    now_ms.saturating_add(u64::try_from(delay(failures).as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_five_seconds_up_to_an_hour() {
        assert_eq!(delay(0), INITIAL);
        assert_eq!(delay(1), Duration::from_secs(5));
        assert_eq!(delay(2), Duration::from_secs(10));
        assert_eq!(delay(3), Duration::from_secs(20));
        assert_eq!(delay(10), Duration::from_secs(2560));
        assert_eq!(delay(11), MAX);
        assert_eq!(delay(40), MAX);
        assert_eq!(delay(u32::MAX), MAX);
        let mut previous = Duration::ZERO;
        for failures in 1..100 {
            let d = delay(failures);
            assert!(d >= previous && d <= MAX);
            previous = d;
        }
    }

    #[test]
    fn next_attempt_never_overflows() {
        assert_eq!(next_attempt_ms(1_000, 1), 6_000);
        assert_eq!(next_attempt_ms(u64::MAX - 1, 5), u64::MAX);
    }
}
