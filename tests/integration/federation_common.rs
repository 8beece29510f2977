//! Federation test helpers: a throwaway certificate authority made at test time, and real servers
//! each named by a loopback IP literal of its own (`127.b.c.d`), with its federation listener
//! (TLS, a certificate for that IP from the CA) on `<ip>:8448` and its client listener on
//! `<ip>:<any port>`. Every server trusts the CA (`federation.extra_ca_file`) and may send to
//! loopback addresses (`federation.allow_private_addresses`).
//!
//! Addresses differ between the servers of one test process (a counter) and between test
//! processes running at the same time (the process ID picks the middle octets), so that tests
//! never fight over `<ip>:8448`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use roost::Config;
use roost::service::federation::transport::Transport;
use ruma::{OwnedServerName, ServerName};

use crate::child::Api;
use crate::common::{TestServer, User};
use serde_json::Value;

/// The federation port every test server listens on: server names are bare IP literals, which
/// other servers reach on the default port.
pub const FEDERATION_PORT: u16 = 8448;

/// A certificate authority that exists for one test only.
pub struct TestCa {
    key: KeyPair,
    params: CertificateParams,
    pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "Roost test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self { key, params, pem }
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `ip` (an IP `subjectAltName`) and its key, both PEM.
    pub fn issue(&self, ip: IpAddr) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(vec![ip.to_string()]).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, ip.to_string());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A loopback address no other test server (of this process or another) uses, with
/// `<ip>:8448` free.
pub fn fresh_loopback_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id() % 60_000;
    let (b, c) = (1 + pid / 250, 1 + pid % 250);
    for _ in 0..250 {
        let d = 1 + NEXT.fetch_add(1, Ordering::Relaxed) % 250;
        let ip = Ipv4Addr::new(127, b as u8, c as u8, d as u8);
        if TcpListener::bind((ip, FEDERATION_PORT)).is_ok() {
            return ip;
        }
    }
    panic!("no free loopback address for a federated test server");
}

/// A running (or stopped) federated test server. It dereferences to its [`TestServer`], so the
/// usual helpers (`common::user(&server, …)`, `server.post(…)`) work on it.
pub struct FederatedServer {
    pub ts: TestServer,
    /// The server name: the IP literal, without a port.
    pub name: OwnedServerName,
    pub ip: Ipv4Addr,
    /// The configuration it runs with (the client listener's port pinned after the first start,
    /// so that a restart comes back on the same addresses).
    pub config: Config,
    /// The certificate, key and CA files.
    _files: tempfile::TempDir,
}

impl FederatedServer {
    /// A federated server trusting `ca`, with a certificate from it.
    pub async fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, |_| {}).await
    }

    /// Like [`FederatedServer::start`], with more configuration (applied last).
    pub async fn start_with(ca: &TestCa, configure: impl FnOnce(&mut Config)) -> Self {
        let ip = fresh_loopback_ip();
        let files = tempfile::tempdir().expect("tempdir");
        let (cert, key) = ca.issue(IpAddr::V4(ip));
        let path = |name: &str| -> PathBuf { files.path().join(name) };
        std::fs::write(path("cert.pem"), cert).expect("write the certificate");
        std::fs::write(path("key.pem"), key).expect("write the key");
        std::fs::write(path("ca.pem"), ca.pem()).expect("write the CA");
        let mut used = None;
        let ts = TestServer::start_with(|config| {
            config.server_name = ip.to_string();
            config.listen = vec![format!("{ip}:0")];
            config.federation.enabled = true;
            config.federation.listen = format!("{ip}:{FEDERATION_PORT}");
            config.federation.tls_cert = Some(path("cert.pem"));
            config.federation.tls_key = Some(path("key.pem"));
            config.federation.extra_ca_file = Some(path("ca.pem"));
            config.federation.allow_private_addresses = true;
            configure(config);
            used = Some(config.clone());
        })
        .await;
        let mut config = used.expect("the configuration");
        if let Some(server) = &ts.server {
            config.listen = server.addrs().iter().map(|a| a.to_string()).collect();
        }
        Self {
            ts,
            name: ServerName::parse(ip.to_string()).expect("an IP literal is a server name"),
            ip,
            config,
            _files: files,
        }
    }

    pub fn server_name(&self) -> &ServerName {
        &self.name
    }

    /// Where its federation listener is.
    pub fn federation_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), FEDERATION_PORT)
    }

    /// `@localpart:<ip>`.
    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// A transport configured as this server's own (trusting the test CA).
    pub fn transport(&self) -> Transport {
        Transport::new(&self.config).expect("transport")
    }

    /// Stops the server (its data stays).
    pub async fn stop(&mut self) {
        self.ts.stop().await;
    }

    /// Starts it again on the same data directory and addresses.
    pub async fn restart(&mut self) {
        assert!(
            self.ts.server.is_none(),
            "stop the server before restarting it"
        );
        let server = roost::start(self.config.clone())
            .await
            .expect("the server restarts");
        assert_eq!(server.base_url(), self.ts.base, "same client address");
        self.ts.server = Some(server);
    }
}

impl Deref for FederatedServer {
    type Target = TestServer;

    fn deref(&self) -> &TestServer {
        &self.ts
    }
}

impl DerefMut for FederatedServer {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.ts
    }
}

/// Two federated servers trusting the same throwaway CA.
pub struct FederatedPair {
    pub a: FederatedServer,
    pub b: FederatedServer,
    pub ca: TestCa,
}

impl FederatedPair {
    pub async fn start() -> Self {
        Self::start_with(|_| {}, |_| {}).await
    }

    /// Two servers with extra configuration for each.
    pub async fn start_with(
        configure_a: impl FnOnce(&mut Config),
        configure_b: impl FnOnce(&mut Config),
    ) -> Self {
        let ca = TestCa::new();
        let a = FederatedServer::start_with(&ca, configure_a).await;
        let b = FederatedServer::start_with(&ca, configure_b).await;
        Self { a, b, ca }
    }
}

/// Long polls of one second each; a sync condition not met after this many is a failure.
pub const MAX_SYNCS: usize = 40;

/// Syncs `u` from `since` (an initial sync when `None`) until `done` holds; answers that sync.
pub async fn sync_from(
    server: &TestServer,
    u: &User,
    since: Option<String>,
    done: impl FnMut(&Value) -> bool,
) -> Value {
    sync_api(&server.api(), u, since, done).await
}

/// [`sync_from`] against any homeserver's client API.
pub async fn sync_api(
    api: &Api,
    u: &User,
    mut since: Option<String>,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    for _ in 0..MAX_SYNCS {
        let path = match &since {
            Some(token) => format!("/_matrix/client/v3/sync?since={token}&timeout=1000"),
            None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
        };
        let (status, body) = api.get(&path, Some(&u.token)).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        since = body["next_batch"].as_str().map(str::to_owned);
    }
    panic!("{} never saw what the test waits for", u.id);
}
