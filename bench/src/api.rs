//! The HTTP side: one shared client with a large connection pool, JSON requests to the
//! homeserver, rate-limit retries and Matrix error descriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// How many times one request is retried after HTTP 429 before giving up.
const MAX_RATE_LIMIT_RETRIES: u32 = 100;
/// The wait after a 429 that names no `retry_after_ms` and no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The longest any single request may take (long polls ask for 30 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A homeserver's Client-Server API at a base URL.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    rate_limited: Arc<AtomicU64>,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8008`). The pool keeps any number of
    /// connections per host, so a thousand concurrent long polls get a thousand connections.
    pub fn new(base: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10))
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("roost-bench/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            rate_limited: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// How many HTTP 429 answers this client has seen (and waited out) so far.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// Sends a request and returns the status and JSON body (`Null` when empty, a string when
    /// not JSON). A 429 is waited out (`retry_after_ms`, else `Retry-After`, else one second),
    /// counted and retried, a bounded number of times.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value)> {
        for _ in 0..=MAX_RATE_LIMIT_RETRIES {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = token {
                req = req.bearer_auth(token);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("{method} {}", shorten(path)))?;
            let status = resp.status();
            let retry_header = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .bytes()
                .await
                .with_context(|| format!("{method} {}: reading the answer", shorten(path)))?;
            let body = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    Value::String(shorten(&String::from_utf8_lossy(&bytes)).to_owned())
                })
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
                let wait = body["retry_after_ms"]
                    .as_u64()
                    .map(Duration::from_millis)
                    .or(retry_header)
                    .unwrap_or(DEFAULT_RETRY_AFTER);
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok((status, body));
        }
        bail!(
            "{method} {}: still rate limited after {MAX_RATE_LIMIT_RETRIES} retries",
            shorten(path)
        )
    }

    /// Like [`Api::request`], but any status other than 2xx is an error that names the request,
    /// the status and the Matrix `errcode` and `error`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, reply) = self.request(method.clone(), path, token, body).await?;
        if !status.is_success() {
            bail!(
                "{method} {} answered {}",
                shorten(path),
                describe(status, &reply)
            );
        }
        Ok(reply)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Value> {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Result<Value> {
        self.call(Method::PUT, path, token, Some(body)).await
    }
}

/// A status and Matrix error body as one short line: `403 M_FORBIDDEN: reason`.
pub fn describe(status: StatusCode, reply: &Value) -> String {
    match (reply["errcode"].as_str(), reply["error"].as_str()) {
        (Some(code), Some(text)) => format!("{} {code}: {text}", status.as_u16()),
        (Some(code), None) => format!("{} {code}", status.as_u16()),
        _ => format!("{} {}", status.as_u16(), shorten(&reply.to_string())),
    }
}

/// Error messages quote paths and bodies; long ones (inline filters) are cut.
fn shorten(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Percent-encodes one path segment or query value (everything but the unreserved characters).
pub fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `/_matrix/client/v3` path for `rest` (which starts with `/`).
pub fn v3(rest: &str) -> String {
    format!("/_matrix/client/v3{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_room_ids_and_filters() {
        assert_eq!(encode("!abc_-9:example.org"), "%21abc_-9%3Aexample.org");
        assert_eq!(encode("{\"a\":1}"), "%7B%22a%22%3A1%7D");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn describes_matrix_errors() {
        let reply = serde_json::json!({"errcode": "M_FORBIDDEN", "error": "no"});
        assert_eq!(
            describe(StatusCode::FORBIDDEN, &reply),
            "403 M_FORBIDDEN: no"
        );
    }
}
