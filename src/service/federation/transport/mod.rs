//! How federation requests reach other servers: server discovery (`discovery`, with the DNS
//! lookups in `dns` and `.well-known` delegation in `well_known`), the destinations allowed
//! (`address_policy`), the certificates trusted (`trust`) and the HTTPS client (`client`).
//!
//! Requests are signed by the caller; this layer only finds the server, checks who it is (TLS)
//! and carries bytes.

pub mod address_policy;
mod client;
pub mod discovery;
pub mod dns;
mod trust;
pub mod well_known;

use std::sync::Arc;
use std::time::Duration;

use axum::http;
use ruma::ServerName;

use crate::config::Config;
use crate::error::Error;
use address_policy::AddressPolicy;
use client::Client;
use discovery::Discovery;
use dns::SystemDns;
use well_known::HttpsWellKnown;

/// How long a whole request may take: discovery, connecting, sending and reading the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTPS client of federation, with server discovery and the address policy.
pub struct Transport {
    discovery: Discovery<SystemDns, HttpsWellKnown<SystemDns>>,
    client: Arc<Client>,
}

impl Transport {
    /// Builds the HTTPS client: the system's roots plus `federation.extra_ca_file`, no
    /// redirects, the address policy of `federation.allow_private_addresses`.
    pub fn new(config: &Config) -> Result<Self, Error> {
        let federation = &config.federation;
        let tls =
            trust::client_config(federation.extra_ca_file.as_deref()).map_err(Error::Internal)?;
        let client = Arc::new(Client::new(tls));
        let policy = AddressPolicy::new(federation.allow_private_addresses);
        let dns = Arc::new(SystemDns::new());
        let well_known = HttpsWellKnown::new(dns.clone(), policy, client.clone());
        Ok(Self {
            discovery: Discovery::new(dns, well_known, policy),
            client,
        })
    }

    /// Sends `request` to `destination`. The request's URI is its path and query; its method,
    /// headers (`Authorization` included) and body are the caller's; the `Host` header is set
    /// here. The answer is returned whatever its status, with its body read up to `max_body`
    /// bytes.
    ///
    /// Errors: `Error::Unreachable` when the server cannot be found or reached, its certificate
    /// is not valid for it, its address is not allowed, it takes too long, or its answer is
    /// larger than `max_body`.
    pub async fn send(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
        max_body: usize,
    ) -> Result<http::Response<Vec<u8>>, Error> {
        if request.uri().scheme().is_some() || request.uri().authority().is_some() {
            return Err(Error::Internal(format!(
                "a federation request URI must be a path, not {}",
                request.uri()
            )));
        }
        let work = async {
            let endpoint = self.discovery.resolve(destination).await?;
            self.client.request(&endpoint, request, max_body).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(Error::Unreachable(format!("{destination}: {e}"))),
            Err(_) => Err(Error::Unreachable(format!(
                "{destination}: no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}
