//! Token-bucket rate limits keyed by (limit, key), e.g. (login per IP, "127.0.0.1").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{Bucket, RateLimitsConfig};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    LoginPerIp,
    LoginPerAccount,
    RegisterPerIp,
    EmailRequestPerIp,
    EmailRequestPerAddress,
    TotpPerAccount,
    TotpPerIp,
    ReportsPerAccount,
}

struct State {
    tokens: f64,
    updated: Instant,
}

/// Above this many tracked keys, buckets that have refilled completely are dropped.
const PRUNE_ABOVE: usize = 10_000;

pub struct RateLimiter {
    config: RateLimitsConfig,
    buckets: Mutex<HashMap<(Limit, String), State>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitsConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, limit: Limit) -> Bucket {
        let c = &self.config;
        match limit {
            Limit::LoginPerIp => c.login_per_ip,
            Limit::LoginPerAccount => c.login_per_account,
            Limit::RegisterPerIp => c.register_per_ip,
            Limit::EmailRequestPerIp => c.email_request_per_ip,
            Limit::EmailRequestPerAddress => c.email_request_per_address,
            Limit::TotpPerAccount => c.totp_per_account,
            Limit::TotpPerIp => c.totp_per_ip,
            Limit::ReportsPerAccount => c.reports_per_account,
        }
    }

    /// Takes one token for `key` under `limit`, or fails with `M_LIMIT_EXCEEDED` and the wait.
    pub fn check(&self, limit: Limit, key: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        let bucket = self.bucket(limit);
        let burst = f64::from(bucket.burst);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| Error::internal("rate limiter lock poisoned"))?;
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|(l, _), s| {
                let b = self.bucket(*l);
                s.tokens + now.duration_since(s.updated).as_secs_f64() * b.per_second
                    < f64::from(b.burst)
            });
        }
        let state = buckets.entry((limit, key.to_owned())).or_insert(State {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(state.updated).as_secs_f64();
        state.tokens = (state.tokens + elapsed * bucket.per_second).min(burst);
        state.updated = now;
        if state.tokens >= 1.0 {
            state.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - state.tokens) / bucket.per_second;
            Err(Error::LimitExceeded {
                retry_after_ms: (wait * 1000.0).ceil() as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_empties_and_is_per_key() {
        let mut config = RateLimitsConfig {
            login_per_ip: Bucket {
                per_second: 0.001,
                burst: 2,
            },
            ..RateLimitsConfig::default()
        };
        let rl = RateLimiter::new(config.clone());
        assert!(rl.check(Limit::LoginPerIp, "a").is_ok());
        assert!(rl.check(Limit::LoginPerIp, "a").is_ok());
        match rl.check(Limit::LoginPerIp, "a") {
            Err(Error::LimitExceeded { retry_after_ms }) => assert!(retry_after_ms > 0),
            other => panic!("{other:?}"),
        }
        assert!(rl.check(Limit::LoginPerIp, "b").is_ok());
        config.enabled = false;
        let off = RateLimiter::new(config);
        for _ in 0..100 {
            assert!(off.check(Limit::LoginPerIp, "a").is_ok());
        }
    }
}
