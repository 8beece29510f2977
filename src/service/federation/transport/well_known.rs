//! `/.well-known/matrix/server`: delegation of a server name to another host, fetched over HTTPS
//! on port 443 and cached as the spec recommends (the answer's `Cache-Control: max-age`, 24 hours
//! by default, 48 hours at most; errors for up to an hour, backing off on repeated failures).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{self, HeaderMap, StatusCode, header};
use ruma::{OwnedServerName, ServerName};
use serde_json::Value;

use super::address_policy::AddressPolicy;
use super::client::Client;
use super::discovery::{Endpoint, resolve_host, tls_name};
use super::dns::Dns;

/// Cache period of a valid answer without `Cache-Control`.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(24 * 3600);
/// Longest cache period, whatever the answer says.
pub const MAX_CACHE: Duration = Duration::from_secs(48 * 3600);
/// Shortest cache period, so that `max-age=0` does not cost an HTTPS request per federation
/// request.
pub const MIN_CACHE: Duration = Duration::from_secs(5 * 60);
/// Cache period of an answer that is not a valid delegation (non-200, bad JSON, no `m.server`).
pub const INVALID_CACHE: Duration = Duration::from_secs(3600);
/// Cache period after a first failure to get any answer; it doubles with each failure in a row,
/// up to [`INVALID_CACHE`].
pub const FIRST_FAILURE_CACHE: Duration = Duration::from_secs(5 * 60);
/// Host names whose answer is kept at most.
const MAX_ENTRIES: usize = 10_000;
/// A `.well-known` answer is a small JSON object.
const MAX_BODY: usize = 64 * 1024;
/// How long fetching it may take, redirects included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// What fetching `https://<hostname>/.well-known/matrix/server` gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WellKnownAnswer {
    /// A valid delegation, with the cache period the answer asked for.
    Delegated {
        server: OwnedServerName,
        cache_for: Option<Duration>,
    },
    /// An answer that is no valid delegation (non-200 status, bad JSON, missing or bad `m.server`).
    Invalid(String),
    /// No answer at all (resolution, connection, TLS, timeout).
    Failed(String),
}

/// Where `.well-known` answers come from: HTTPS in production, a table in tests.
pub trait WellKnownSource: Send + Sync + 'static {
    fn fetch(&self, hostname: &str) -> impl Future<Output = WellKnownAnswer> + Send;
}

struct Entry {
    delegated: Option<OwnedServerName>,
    expires: Instant,
    /// Failures to get any answer in a row (for the back-off).
    failures: u32,
}

/// Answers by host name, each until it expires.
#[derive(Default)]
pub struct WellKnownCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl WellKnownCache {
    /// The cached delegation of `hostname`: `Some(None)` for a cached error.
    pub fn get(&self, hostname: &str, now: Instant) -> Option<Option<OwnedServerName>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hostname)
            .filter(|entry| entry.expires > now)
            .map(|entry| entry.delegated.clone())
    }

    /// Records an answer; returns the delegation it gives.
    pub fn put(
        &self,
        hostname: &str,
        answer: WellKnownAnswer,
        now: Instant,
    ) -> Option<OwnedServerName> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let failures_before = entries.get(hostname).map_or(0, |entry| entry.failures);
        let (delegated, period, failures) = match answer {
            WellKnownAnswer::Delegated { server, cache_for } => (
                Some(server),
                cache_for
                    .unwrap_or(DEFAULT_CACHE)
                    .clamp(MIN_CACHE, MAX_CACHE),
                0,
            ),
            WellKnownAnswer::Invalid(_) => (None, INVALID_CACHE, 0),
            WellKnownAnswer::Failed(_) => {
                let doubled = FIRST_FAILURE_CACHE.saturating_mul(1 << failures_before.min(8));
                (
                    None,
                    doubled.min(INVALID_CACHE),
                    failures_before.saturating_add(1),
                )
            }
        };
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(hostname) {
            entries.retain(|_, entry| entry.expires > now);
            if entries.len() >= MAX_ENTRIES
                && let Some(any) = entries.keys().next().cloned()
            {
                entries.remove(&any);
            }
        }
        entries.insert(
            hostname.to_owned(),
            Entry {
                delegated: delegated.clone(),
                expires: now + period,
                failures,
            },
        );
        delegated
    }
}

/// The cache period a response asks for (`Cache-Control`): `max-age`, or zero for `no-store` and
/// `no-cache`; `None` when it says nothing.
pub fn cache_period(headers: &HeaderMap) -> Option<Duration> {
    let mut period = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            if directive == "no-store" || directive == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(seconds) = directive.strip_prefix("max-age=")
                && let Ok(seconds) = seconds.trim_matches('"').parse::<u64>()
            {
                period = Some(Duration::from_secs(seconds));
            }
        }
    }
    period
}

/// Reads a `.well-known/matrix/server` answer.
pub fn parse_answer(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> WellKnownAnswer {
    if status != StatusCode::OK {
        return WellKnownAnswer::Invalid(format!("status {status}"));
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return WellKnownAnswer::Invalid("the answer is not JSON".into());
    };
    let Some(server) = value.get("m.server").and_then(Value::as_str) else {
        return WellKnownAnswer::Invalid("no `m.server` string".into());
    };
    match ServerName::parse(server) {
        Ok(server) => WellKnownAnswer::Delegated {
            server,
            cache_for: cache_period(headers),
        },
        Err(_) => WellKnownAnswer::Invalid("`m.server` is not a server name".into()),
    }
}

/// Fetches `.well-known` answers over HTTPS, through the same address policy and TLS
/// verification as every federation request. Redirects are followed (HTTPS only, a few at most,
/// never twice to the same URL).
pub struct HttpsWellKnown<D> {
    dns: Arc<D>,
    policy: AddressPolicy,
    client: Arc<Client>,
    /// 443, as the spec says; tests use a port of their own.
    port: u16,
}

impl<D: Dns> HttpsWellKnown<D> {
    pub fn new(dns: Arc<D>, policy: AddressPolicy, client: Arc<Client>) -> Self {
        Self {
            dns,
            policy,
            client,
            port: 443,
        }
    }

    #[cfg(test)]
    fn on_port(self, port: u16) -> Self {
        Self { port, ..self }
    }

    async fn fetch_following_redirects(&self, hostname: &str) -> WellKnownAnswer {
        let Ok(mut url) = url::Url::parse(&format!(
            "https://{hostname}:{}/.well-known/matrix/server",
            self.port
        )) else {
            return WellKnownAnswer::Failed(format!("`{hostname}` makes no URL"));
        };
        let mut visited = Vec::new();
        for _ in 0..=MAX_REDIRECTS {
            visited.push(url.clone());
            let response = match self.get(&url).await {
                Ok(response) => response,
                Err(e) => return WellKnownAnswer::Failed(e),
            };
            if response.status().is_redirection() {
                let Some(next) = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                else {
                    return WellKnownAnswer::Invalid("a redirect without a valid Location".into());
                };
                if next.scheme() != "https" {
                    return WellKnownAnswer::Invalid("a redirect away from HTTPS".into());
                }
                if visited.contains(&next) {
                    return WellKnownAnswer::Invalid("a redirect loop".into());
                }
                url = next;
                continue;
            }
            return parse_answer(response.status(), response.headers(), response.body());
        }
        WellKnownAnswer::Invalid("too many redirects".into())
    }

    async fn get(&self, url: &url::Url) -> Result<http::Response<Vec<u8>>, String> {
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => domain.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err("a URL without a host".into()),
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = resolve_host(self.dns.as_ref(), self.policy, &host, port).await?;
        let endpoint = Endpoint {
            addrs,
            host: match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            },
            tls_name: tls_name(&host)?,
        };
        let mut path = url.path().to_owned();
        if let Some(query) = url.query() {
            path = format!("{path}?{query}");
        }
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        self.client.request(&endpoint, request, MAX_BODY).await
    }
}

impl<D: Dns> WellKnownSource for HttpsWellKnown<D> {
    async fn fetch(&self, hostname: &str) -> WellKnownAnswer {
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch_following_redirects(hostname)).await {
            Ok(answer) => answer,
            Err(_) => WellKnownAnswer::Failed("timed out".into()),
        }
    }
}

#[cfg(test)]
mod https_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CACHE_CONTROL,
            cache_control.parse().expect("header value"),
        );
        headers
    }

    fn server(name: &str) -> OwnedServerName {
        ServerName::parse(name).expect("server name")
    }

    #[test]
    fn reads_max_age_and_no_store() {
        assert_eq!(
            cache_period(&headers("public, max-age=3600")),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(cache_period(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(cache_period(&HeaderMap::new()), None);
        assert_eq!(cache_period(&headers("max-age=soon")), None);
    }

    #[test]
    fn parses_valid_and_invalid_answers() {
        let ok = parse_answer(
            StatusCode::OK,
            &headers("max-age=60"),
            br#"{"m.server": "matrix.example.org:443"}"#,
        );
        assert_eq!(
            ok,
            WellKnownAnswer::Delegated {
                server: server("matrix.example.org:443"),
                cache_for: Some(Duration::from_secs(60)),
            }
        );
        for (status, body) in [
            (StatusCode::NOT_FOUND, &br#"{"m.server": "a.example"}"#[..]),
            (StatusCode::OK, b"not json"),
            (StatusCode::OK, br#"{"m.homeserver": "a.example"}"#),
            (StatusCode::OK, br#"{"m.server": 12}"#),
            (StatusCode::OK, br#"{"m.server": "bad name:port"}"#),
            (StatusCode::OK, br#"{"m.server": "a.example:99999"}"#),
        ] {
            assert!(
                matches!(
                    parse_answer(status, &HeaderMap::new(), body),
                    WellKnownAnswer::Invalid(_)
                ),
                "{status} {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn caches_answers_for_their_period_within_bounds() {
        let cache = WellKnownCache::default();
        let now = Instant::now();
        let delegated = |cache_for| WellKnownAnswer::Delegated {
            server: server("b.example"),
            cache_for,
        };
        cache.put("a.example", delegated(None), now);
        assert_eq!(
            cache.get("a.example", now + DEFAULT_CACHE - Duration::from_secs(1)),
            Some(Some(server("b.example")))
        );
        assert_eq!(cache.get("a.example", now + DEFAULT_CACHE), None);

        cache.put(
            "a.example",
            delegated(Some(Duration::from_secs(7 * 24 * 3600))),
            now,
        );
        assert!(
            cache
                .get("a.example", now + MAX_CACHE - Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(cache.get("a.example", now + MAX_CACHE), None);

        cache.put("a.example", delegated(Some(Duration::ZERO)), now);
        assert!(
            cache
                .get("a.example", now + Duration::from_secs(1))
                .is_some()
        );
        assert_eq!(cache.get("a.example", now + MIN_CACHE), None);
    }

    #[test]
    fn caches_errors_for_an_hour_and_backs_off_on_failures() {
        let cache = WellKnownCache::default();
        let now = Instant::now();
        cache.put("bad.example", WellKnownAnswer::Invalid("404".into()), now);
        assert_eq!(
            cache.get("bad.example", now + INVALID_CACHE - Duration::from_secs(1)),
            Some(None)
        );
        assert_eq!(cache.get("bad.example", now + INVALID_CACHE), None);

        let mut at = now;
        let mut periods = Vec::new();
        for _ in 0..6 {
            cache.put(
                "down.example",
                WellKnownAnswer::Failed("refused".into()),
                at,
            );
            let mut period = Duration::from_secs(60);
            while cache.get("down.example", at + period).is_some() {
                period += Duration::from_secs(60);
            }
            periods.push(period);
            at += period;
        }
        assert_eq!(periods[0], FIRST_FAILURE_CACHE);
        assert_eq!(periods[1], FIRST_FAILURE_CACHE * 2);
        assert_eq!(periods[2], FIRST_FAILURE_CACHE * 4);
        assert_eq!(periods[5], INVALID_CACHE);

        // A valid answer ends the back-off.
        cache.put(
            "down.example",
            WellKnownAnswer::Delegated {
                server: server("b.example"),
                cache_for: None,
            },
            at,
        );
        cache.put(
            "down.example",
            WellKnownAnswer::Failed("refused".into()),
            at,
        );
        assert_eq!(cache.get("down.example", at + FIRST_FAILURE_CACHE), None);
    }
}
