//! The HTTPS client: connects to an [`Endpoint`] found by discovery (its addresses, its TLS name,
//! its `Host` header), sends one request over HTTP/1.1 and reads the answer up to a size limit.
//! Idle connections are kept for a while and reused, so that a busy destination is not paid a
//! TCP and TLS handshake per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{self, HeaderValue, header};
use hyper::body::Body as _;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::discovery::Endpoint;

/// How long connecting to one address (TCP and TLS handshakes) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an unused connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per address and TLS name.
const MAX_IDLE_PER_KEY: usize = 4;
/// Past this many keys, the pool drops its dead and expired connections before adding one.
const PRUNE_ABOVE_KEYS: usize = 512;

/// A connection is reusable only for the same address and the same verified TLS identity.
type PoolKey = (SocketAddr, String);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

pub struct Client {
    tls: TlsConnector,
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
}

impl Client {
    pub fn new(tls: Arc<ClientConfig>) -> Self {
        Self {
            tls: TlsConnector::from(tls),
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (its URI is the path and query) to the endpoint with the endpoint's `Host`
    /// header, and reads the answer's body up to `max_body` bytes. No redirect is followed.
    pub async fn request(
        &self,
        endpoint: &Endpoint,
        request: http::Request<Vec<u8>>,
        max_body: usize,
    ) -> Result<http::Response<Vec<u8>>, String> {
        let host = HeaderValue::from_str(&endpoint.host)
            .map_err(|_| format!("`{}` is not a valid Host header", endpoint.host))?;
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(header::HOST, host);
        let mut request = http::Request::from_parts(parts, Body::from(body));
        // A pooled connection the peer closed meanwhile fails before the request is written; the
        // request is then sent again once, on a new connection.
        let mut fresh_only = false;
        loop {
            let (key, mut sender, reused) = self.checkout_or_connect(endpoint, fresh_only).await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let answer = read_answer(response, max_body).await?;
                    self.checkin(key, sender);
                    return Ok(answer);
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        fresh_only = true;
                    }
                    _ => return Err(format!("the request failed: {}", failed.error())),
                },
            }
        }
    }

    async fn checkout_or_connect(
        &self,
        endpoint: &Endpoint,
        fresh_only: bool,
    ) -> Result<(PoolKey, SendRequest<Body>, bool), String> {
        let name = tls_name_key(endpoint);
        if !fresh_only {
            for addr in &endpoint.addrs {
                let key = (*addr, name.clone());
                while let Some(mut sender) = self.take_idle(&key) {
                    // Ready at once unless the connection closed; bounded all the same.
                    if let Ok(Ok(())) = tokio::time::timeout(CONNECT_TIMEOUT, sender.ready()).await
                    {
                        return Ok((key, sender, true));
                    }
                }
            }
        }
        let mut errors = Vec::new();
        for addr in &endpoint.addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect(*addr, endpoint)).await {
                Ok(Ok(sender)) => return Ok(((*addr, name), sender, false)),
                Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
                Err(_) => errors.push(format!("{addr}: timed out connecting")),
            }
        }
        Err(errors.join("; "))
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        endpoint: &Endpoint,
    ) -> Result<SendRequest<Body>, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(endpoint.tls_name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "federation connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn take_idle(&self, key: &PoolKey) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some(entry) = list.pop() {
            if entry.since.elapsed() < IDLE_TIMEOUT && !entry.sender.is_closed() {
                found = Some(entry.sender);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    fn checkin(&self, key: PoolKey, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= PRUNE_ABOVE_KEYS {
            idle.retain(|_, list| {
                list.retain(|entry| {
                    entry.since.elapsed() < IDLE_TIMEOUT && !entry.sender.is_closed()
                });
                !list.is_empty()
            });
        }
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

fn tls_name_key(endpoint: &Endpoint) -> String {
    endpoint.tls_name.to_str().into_owned()
}

/// The answer with its whole body, refused beyond `max_body` bytes.
async fn read_answer(
    response: http::Response<hyper::body::Incoming>,
    max_body: usize,
) -> Result<http::Response<Vec<u8>>, String> {
    let too_large = || format!("the answer is larger than {max_body} bytes");
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return Err(too_large());
    }
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("cannot read the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max_body {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(http::Response::from_parts(parts, bytes))
}
