//! The DNS lookups server discovery needs, behind a small trait so that the resolution order can
//! be tested without a DNS server.

use std::future::Future;
use std::net::IpAddr;

use hickory_resolver::TokioResolver;

/// One SRV record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host name, without a trailing dot; `.` (empty here) means "no service".
    pub target: String,
}

/// A failed lookup: the name has no such records, or the lookup itself failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    NotFound,
    Failed(String),
}

/// A resolver for server discovery.
pub trait Dns: Send + Sync + 'static {
    /// The addresses of `host` (AAAA and A records, CNAMEs followed).
    fn lookup_ip(&self, host: &str) -> impl Future<Output = Result<Vec<IpAddr>, DnsError>> + Send;

    /// The SRV records of `name` (`_matrix-fed._tcp.example.org`).
    fn lookup_srv(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Vec<SrvRecord>, DnsError>> + Send;
}

/// The system's resolver (`/etc/resolv.conf`, the hosts file), with its cache.
pub struct SystemDns {
    /// Why the system configuration could not be read, if it could not: every lookup then fails
    /// with that reason rather than the server refusing to start without federation.
    resolver: Result<TokioResolver, String>,
}

impl SystemDns {
    pub fn new() -> Self {
        let resolver = TokioResolver::builder_tokio()
            .map(|builder| builder.build())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot read the system's DNS configuration; federation cannot resolve host names");
                format!("no DNS configuration: {e}")
            });
        Self { resolver }
    }

    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.resolver
            .as_ref()
            .map_err(|e| DnsError::Failed(e.clone()))
    }
}

impl Default for SystemDns {
    fn default() -> Self {
        Self::new()
    }
}

/// The name made fully qualified, so that the resolver's search domains are never appended to a
/// server name.
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

fn dns_error(e: hickory_resolver::ResolveError) -> DnsError {
    if e.is_no_records_found() {
        DnsError::NotFound
    } else {
        DnsError::Failed(e.to_string())
    }
}

impl Dns for SystemDns {
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let lookup = self
            .resolver()?
            .lookup_ip(absolute(host))
            .await
            .map_err(dns_error)?;
        Ok(lookup.iter().collect())
    }

    async fn lookup_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        let lookup = self
            .resolver()?
            .srv_lookup(absolute(name))
            .await
            .map_err(dns_error)?;
        Ok(lookup
            .iter()
            .map(|srv| SrvRecord {
                priority: srv.priority(),
                weight: srv.weight(),
                port: srv.port(),
                target: srv.target().to_ascii().trim_end_matches('.').to_owned(),
            })
            .collect())
    }
}
