//! Server discovery: from a server name to the addresses to connect to, the TLS name the peer's
//! certificate must be valid for, and the `Host` header, in the order of the spec's "Resolving
//! server names":
//!
//! 1. an IP literal, with its port or 8448 (the certificate is for the IP, so no SNI is sent);
//! 2. a host name with an explicit port: its A/AAAA records;
//! 3. `https://<hostname>/.well-known/matrix/server` delegation, whose `m.server` is resolved by
//!    the same steps without `.well-known` (IP literal; name with port; SRV; port 8448);
//! 4. SRV `_matrix-fed._tcp.<hostname>`, then 5. the deprecated `_matrix._tcp.<hostname>`;
//! 6. the host name's A/AAAA records with port 8448.
//!
//! Every address found, by any step, passes the [`AddressPolicy`] before it is used.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use ruma::ServerName;
use rustls::pki_types::ServerName as TlsName;

use super::address_policy::AddressPolicy;
use super::dns::{Dns, DnsError, SrvRecord};
use super::well_known::{WellKnownCache, WellKnownSource};

/// The port of federation when neither the name nor DNS gives one.
pub const DEFAULT_PORT: u16 = 8448;
/// SRV targets resolved at most (in order of preference).
const MAX_SRV_TARGETS: usize = 4;

/// Where and how to reach a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Addresses to try in order, all allowed by the address policy.
    pub addrs: Vec<SocketAddr>,
    /// The `Host` header of requests.
    pub host: String,
    /// What the certificate must be valid for: a DNS name (sent as SNI) or an IP address (no
    /// SNI).
    pub tls_name: TlsName<'static>,
}

/// Resolves server names with a DNS resolver and a `.well-known` source, caching `.well-known`
/// answers.
pub struct Discovery<D, W> {
    dns: Arc<D>,
    well_known: W,
    cache: WellKnownCache,
    policy: AddressPolicy,
}

impl<D: Dns, W: WellKnownSource> Discovery<D, W> {
    pub fn new(dns: Arc<D>, well_known: W, policy: AddressPolicy) -> Self {
        Self {
            dns,
            well_known,
            cache: WellKnownCache::default(),
            policy,
        }
    }

    /// Where to send requests for `destination`.
    pub async fn resolve(&self, destination: &ServerName) -> Result<Endpoint, String> {
        let host = destination.host();
        // 1. An IP literal, with or without a port.
        if let Some(ip) = ip_literal(host) {
            let addr = SocketAddr::new(ip, destination.port().unwrap_or(DEFAULT_PORT));
            return self.ip_endpoint(addr, destination.as_str());
        }
        // 2. A host name with an explicit port.
        if let Some(port) = destination.port() {
            return self
                .name_endpoint(host, port, destination.as_str().to_owned())
                .await;
        }
        // 3. Delegation by `.well-known`.
        let hostname = host.to_ascii_lowercase();
        if let Some(delegated) = self.well_known(&hostname).await {
            return self.resolve_delegated(&delegated).await;
        }
        // 4., 5. SRV records, then 6. port 8448.
        self.srv_or_default(&hostname).await
    }

    /// 3.1–3.5: the `m.server` of a `.well-known` answer.
    async fn resolve_delegated(&self, delegated: &ServerName) -> Result<Endpoint, String> {
        let host = delegated.host();
        if let Some(ip) = ip_literal(host) {
            let addr = SocketAddr::new(ip, delegated.port().unwrap_or(DEFAULT_PORT));
            return self.ip_endpoint(addr, delegated.as_str());
        }
        if let Some(port) = delegated.port() {
            return self
                .name_endpoint(host, port, delegated.as_str().to_owned())
                .await;
        }
        self.srv_or_default(&host.to_ascii_lowercase()).await
    }

    /// The `.well-known` delegation of `hostname`, from the cache or fetched.
    async fn well_known(&self, hostname: &str) -> Option<ruma::OwnedServerName> {
        if let Some(cached) = self.cache.get(hostname, Instant::now()) {
            return cached;
        }
        let answer = self.well_known.fetch(hostname).await;
        tracing::debug!(hostname, ?answer, "fetched .well-known/matrix/server");
        self.cache.put(hostname, answer, Instant::now())
    }

    /// An IP address with the port to use; the `Host` header is the name as written.
    fn ip_endpoint(&self, addr: SocketAddr, host_header: &str) -> Result<Endpoint, String> {
        let addrs = self.policy.filter(host_header, vec![addr])?;
        Ok(Endpoint {
            addrs,
            host: host_header.to_owned(),
            tls_name: TlsName::IpAddress(addr.ip().into()),
        })
    }

    /// A host name and a known port: its A/AAAA records.
    async fn name_endpoint(
        &self,
        host: &str,
        port: u16,
        host_header: String,
    ) -> Result<Endpoint, String> {
        Ok(Endpoint {
            addrs: resolve_host(self.dns.as_ref(), self.policy, host, port).await?,
            host: host_header,
            tls_name: tls_name(host)?,
        })
    }

    /// SRV `_matrix-fed._tcp`, then `_matrix._tcp`, then A/AAAA on 8448; the `Host` header and the
    /// certificate are for `hostname` in every case.
    async fn srv_or_default(&self, hostname: &str) -> Result<Endpoint, String> {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let name = format!("{service}.{hostname}");
            let records = match self.dns.lookup_srv(&name).await {
                Ok(records) => records,
                Err(DnsError::NotFound) => continue,
                Err(DnsError::Failed(e)) => {
                    tracing::debug!(name, error = %e, "SRV lookup failed");
                    continue;
                }
            };
            if records.is_empty() {
                continue;
            }
            let addrs = self.srv_addresses(&name, records).await?;
            return Ok(Endpoint {
                addrs,
                host: hostname.to_owned(),
                tls_name: tls_name(hostname)?,
            });
        }
        self.name_endpoint(hostname, DEFAULT_PORT, hostname.to_owned())
            .await
    }

    /// The addresses of SRV targets in the order RFC 2782 gives (priority, then weighted
    /// random), each with its record's port.
    async fn srv_addresses(
        &self,
        name: &str,
        records: Vec<SrvRecord>,
    ) -> Result<Vec<SocketAddr>, String> {
        let records: Vec<SrvRecord> = records
            .into_iter()
            .filter(|r| !r.target.is_empty() && r.target != ".")
            .collect();
        if records.is_empty() {
            return Err(format!("{name} says the service is not available"));
        }
        let mut addrs = Vec::new();
        let mut errors = Vec::new();
        for record in srv_order(records).into_iter().take(MAX_SRV_TARGETS) {
            if let Some(ip) = ip_literal(&record.target) {
                addrs.push(SocketAddr::new(ip, record.port));
                continue;
            }
            match self.dns.lookup_ip(&record.target).await {
                Ok(ips) => addrs.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, record.port))),
                Err(e) => errors.push(format!("{}: {}", record.target, describe(&e))),
            }
        }
        if addrs.is_empty() {
            return Err(format!(
                "the targets of {name} do not resolve ({})",
                errors.join("; ")
            ));
        }
        self.policy.filter(name, addrs)
    }
}

/// The A/AAAA addresses of `host` (or the address it is), with `port`, as the policy allows.
pub async fn resolve_host<D: Dns>(
    dns: &D,
    policy: AddressPolicy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, String> {
    let addrs = match ip_literal(host) {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => dns
            .lookup_ip(host)
            .await
            .map_err(|e| format!("{host}: {}", describe(&e)))?
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
    };
    policy.filter(host, addrs)
}

/// The TLS name of a host: an IP address (no SNI) or a DNS name.
pub fn tls_name(host: &str) -> Result<TlsName<'static>, String> {
    if let Some(ip) = ip_literal(host) {
        return Ok(TlsName::IpAddress(ip.into()));
    }
    TlsName::try_from(host.to_owned()).map_err(|_| format!("`{host}` is not a valid TLS name"))
}

/// The address a host is, when it is an IP literal (`1.2.3.4` or `[::1]`).
fn ip_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse().ok(),
        None => host.parse().ok(),
    }
}

fn describe(e: &DnsError) -> String {
    match e {
        DnsError::NotFound => "no address found".into(),
        DnsError::Failed(e) => format!("lookup failed: {e}"),
    }
}

/// RFC 2782 order: by priority, and within a priority at random in proportion to the weights.
fn srv_order(mut records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::with_capacity(records.len());
    let mut rng = rand::thread_rng();
    while !records.is_empty() {
        let priority = records[0].priority;
        let mut group: Vec<SrvRecord> = Vec::new();
        while records.first().is_some_and(|r| r.priority == priority) {
            group.push(records.remove(0));
        }
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = rng.gen_range(0..=total);
            let mut running = 0;
            let index = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(group.remove(index));
        }
    }
    ordered
}

#[cfg(test)]
mod tests;
