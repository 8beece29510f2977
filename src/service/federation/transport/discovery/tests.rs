//! The resolution order, with a DNS and a `.well-known` source made of tables.

use std::collections::HashMap;
use std::sync::Mutex;

use super::*;
use crate::service::federation::transport::well_known::WellKnownAnswer;

#[derive(Default)]
struct FakeDns {
    ips: HashMap<String, Vec<IpAddr>>,
    srv: HashMap<String, Vec<SrvRecord>>,
    asked: Mutex<Vec<String>>,
}

impl FakeDns {
    fn ip(mut self, host: &str, ips: &[&str]) -> Self {
        let ips = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        self.ips.insert(host.into(), ips);
        self
    }

    fn srv(mut self, name: &str, priority: u16, target: &str, port: u16) -> Self {
        self.srv.entry(name.into()).or_default().push(SrvRecord {
            priority,
            weight: 10,
            port,
            target: target.into(),
        });
        self
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("lock").clone()
    }
}

impl Dns for FakeDns {
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.asked.lock().expect("lock").push(format!("A {host}"));
        self.ips.get(host).cloned().ok_or(DnsError::NotFound)
    }

    async fn lookup_srv(&self, name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        self.asked.lock().expect("lock").push(format!("SRV {name}"));
        self.srv.get(name).cloned().ok_or(DnsError::NotFound)
    }
}

#[derive(Default)]
struct FakeWellKnown {
    answers: HashMap<String, WellKnownAnswer>,
    fetched: Mutex<Vec<String>>,
}

impl FakeWellKnown {
    fn delegate(mut self, host: &str, to: &str) -> Self {
        self.answers.insert(
            host.into(),
            WellKnownAnswer::Delegated {
                server: ServerName::parse(to).expect("server name"),
                cache_for: None,
            },
        );
        self
    }

    fn fetched(&self) -> Vec<String> {
        self.fetched.lock().expect("lock").clone()
    }
}

impl WellKnownSource for Arc<FakeWellKnown> {
    async fn fetch(&self, hostname: &str) -> WellKnownAnswer {
        self.fetched.lock().expect("lock").push(hostname.into());
        self.answers
            .get(hostname)
            .cloned()
            .unwrap_or(WellKnownAnswer::Invalid("404".into()))
    }
}

struct Setup {
    discovery: Discovery<FakeDns, Arc<FakeWellKnown>>,
    dns: Arc<FakeDns>,
    well_known: Arc<FakeWellKnown>,
}

fn setup(dns: FakeDns, well_known: FakeWellKnown, allow_private: bool) -> Setup {
    let dns = Arc::new(dns);
    let well_known = Arc::new(well_known);
    Setup {
        discovery: Discovery::new(
            dns.clone(),
            well_known.clone(),
            AddressPolicy::new(allow_private),
        ),
        dns,
        well_known,
    }
}

async fn resolve(setup: &Setup, name: &str) -> Result<Endpoint, String> {
    let name = ServerName::parse(name).expect("server name");
    setup.discovery.resolve(&name).await
}

fn endpoint(addrs: &[&str], host: &str, tls: &str) -> Endpoint {
    Endpoint {
        addrs: addrs.iter().map(|a| a.parse().expect("addr")).collect(),
        host: host.into(),
        tls_name: tls_name(tls).expect("tls name"),
    }
}

fn is_ip_name(endpoint: &Endpoint) -> bool {
    matches!(endpoint.tls_name, TlsName::IpAddress(_))
}

#[tokio::test]
async fn ip_literals_use_their_port_or_8448_and_no_sni() {
    let s = setup(FakeDns::default(), FakeWellKnown::default(), false);
    let found = resolve(&s, "1.2.3.4").await.expect("resolved");
    assert_eq!(found, endpoint(&["1.2.3.4:8448"], "1.2.3.4", "1.2.3.4"));
    assert!(is_ip_name(&found));
    let found = resolve(&s, "1.2.3.4:9000").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["1.2.3.4:9000"], "1.2.3.4:9000", "1.2.3.4")
    );
    let found = resolve(&s, "[2a00:1450::1]").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["[2a00:1450::1]:8448"], "[2a00:1450::1]", "2a00:1450::1")
    );
    assert!(is_ip_name(&found));
    let found = resolve(&s, "[2a00:1450::1]:8000").await.expect("resolved");
    assert_eq!(found.host, "[2a00:1450::1]:8000");
    assert!(s.dns.asked().is_empty());
    assert!(s.well_known.fetched().is_empty());
}

#[tokio::test]
async fn a_host_name_with_a_port_uses_its_addresses_and_no_well_known() {
    let dns = FakeDns::default()
        .ip("example.org", &["5.6.7.8", "2a00::8"])
        .srv("_matrix-fed._tcp.example.org", 0, "other.example.org", 1);
    let s = setup(dns, FakeWellKnown::default(), false);
    let found = resolve(&s, "example.org:8000").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(
            &["5.6.7.8:8000", "[2a00::8]:8000"],
            "example.org:8000",
            "example.org"
        )
    );
    assert_eq!(s.dns.asked(), vec!["A example.org"]);
    assert!(s.well_known.fetched().is_empty());
}

#[tokio::test]
async fn well_known_delegation_to_a_name_follows_its_srv_record() {
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.m.example.net", 0, "srv.example.net", 9000)
        .ip("srv.example.net", &["9.9.9.9"])
        // Never used: the delegated name's SRV record comes first.
        .ip("m.example.net", &["1.1.1.1"]);
    let well_known = FakeWellKnown::default().delegate("example.org", "m.example.net");
    let s = setup(dns, well_known, false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["9.9.9.9:9000"], "m.example.net", "m.example.net")
    );
    // `.well-known` is not fetched again for the delegated name.
    assert_eq!(s.well_known.fetched(), vec!["example.org"]);
}

#[tokio::test]
async fn well_known_delegation_with_a_port_uses_the_addresses() {
    let dns = FakeDns::default().ip("m.example.net", &["1.1.1.1"]);
    let well_known = FakeWellKnown::default().delegate("example.org", "m.example.net:443");
    let s = setup(dns, well_known, false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["1.1.1.1:443"], "m.example.net:443", "m.example.net")
    );
    assert_eq!(s.dns.asked(), vec!["A m.example.net"]);
}

#[tokio::test]
async fn well_known_delegation_to_an_ip_literal() {
    let well_known = FakeWellKnown::default()
        .delegate("example.org", "8.8.4.4:9999")
        .delegate("example.com", "8.8.4.4");
    let s = setup(FakeDns::default(), well_known, false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["8.8.4.4:9999"], "8.8.4.4:9999", "8.8.4.4")
    );
    assert!(is_ip_name(&found));
    let found = resolve(&s, "example.com").await.expect("resolved");
    assert_eq!(found, endpoint(&["8.8.4.4:8448"], "8.8.4.4", "8.8.4.4"));
    assert!(s.dns.asked().is_empty());
}

#[tokio::test]
async fn well_known_delegation_falls_back_to_the_deprecated_srv_then_8448() {
    let dns = FakeDns::default()
        .srv("_matrix._tcp.m.example.net", 0, "old.example.net", 8449)
        .ip("old.example.net", &["4.4.4.4"])
        .ip("m.example.com", &["3.3.3.3"]);
    let well_known = FakeWellKnown::default()
        .delegate("example.org", "m.example.net")
        .delegate("example.com", "m.example.com");
    let s = setup(dns, well_known, false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["4.4.4.4:8449"], "m.example.net", "m.example.net")
    );
    let found = resolve(&s, "example.com").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["3.3.3.3:8448"], "m.example.com", "m.example.com")
    );
    assert_eq!(
        s.dns.asked(),
        vec![
            "SRV _matrix-fed._tcp.m.example.net",
            "SRV _matrix._tcp.m.example.net",
            "A old.example.net",
            "SRV _matrix-fed._tcp.m.example.com",
            "SRV _matrix._tcp.m.example.com",
            "A m.example.com",
        ]
    );
}

#[tokio::test]
async fn without_well_known_srv_records_name_the_target_but_keep_the_host() {
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.example.org", 10, "second.example.org", 2)
        .srv("_matrix-fed._tcp.example.org", 0, "first.example.org", 1)
        .srv("_matrix._tcp.example.org", 0, "deprecated.example.org", 3)
        .ip("first.example.org", &["1.0.0.1"])
        .ip("second.example.org", &["1.0.0.2"]);
    let s = setup(dns, FakeWellKnown::default(), false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["1.0.0.1:1", "1.0.0.2:2"], "example.org", "example.org")
    );
    assert_eq!(s.well_known.fetched(), vec!["example.org"]);
}

#[tokio::test]
async fn without_well_known_the_deprecated_srv_then_8448() {
    let dns = FakeDns::default()
        .srv("_matrix._tcp.example.org", 0, "old.example.org", 8000)
        .ip("old.example.org", &["2.2.2.2"])
        .ip("example.com", &["2a00::1"]);
    let s = setup(dns, FakeWellKnown::default(), false);
    let found = resolve(&s, "example.org").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["2.2.2.2:8000"], "example.org", "example.org")
    );
    let found = resolve(&s, "example.com").await.expect("resolved");
    assert_eq!(
        found,
        endpoint(&["[2a00::1]:8448"], "example.com", "example.com")
    );
    let err = resolve(&s, "nowhere.example")
        .await
        .expect_err("no address");
    assert!(err.contains("nowhere.example"), "{err}");
}

#[tokio::test]
async fn srv_targets_that_do_not_resolve_are_an_error_not_a_fallback() {
    let dns = FakeDns::default()
        .srv("_matrix-fed._tcp.example.org", 0, "gone.example.org", 8000)
        .ip("example.org", &["2.2.2.2"]);
    let s = setup(dns, FakeWellKnown::default(), false);
    let err = resolve(&s, "example.org").await.expect_err("no target");
    assert!(err.contains("gone.example.org"), "{err}");
    let dns = FakeDns::default().srv("_matrix-fed._tcp.example.org", 0, "", 0);
    let s = setup(dns, FakeWellKnown::default(), false);
    let err = resolve(&s, "example.org").await.expect_err("no service");
    assert!(err.contains("not available"), "{err}");
}

#[tokio::test]
async fn well_known_answers_and_errors_are_cached() {
    let dns = FakeDns::default()
        .ip("m.example.net", &["1.1.1.1"])
        .ip("example.com", &["1.1.1.2"]);
    let well_known = FakeWellKnown::default().delegate("example.org", "m.example.net:443");
    let s = setup(dns, well_known, false);
    for _ in 0..3 {
        resolve(&s, "example.org").await.expect("resolved");
        resolve(&s, "example.com").await.expect("resolved");
    }
    assert_eq!(s.well_known.fetched(), vec!["example.org", "example.com"]);
}

#[tokio::test]
async fn non_public_addresses_are_refused_however_they_are_found() {
    let dns = FakeDns::default()
        .ip("private.example", &["10.1.2.3"])
        .ip("loopback.example", &["127.0.0.1", "::1"])
        .ip("mixed.example", &["192.168.1.1", "1.2.3.4"])
        .srv("_matrix-fed._tcp.srv.example", 0, "target.example", 8448)
        .ip("target.example", &["::ffff:169.254.169.254"])
        .ip("cgnat.example", &["100.64.1.1"]);
    let well_known = FakeWellKnown::default()
        .delegate("delegated-ip.example", "172.16.0.1:8448")
        .delegate("delegated-name.example", "cgnat.example");
    let s = setup(dns, well_known, false);
    for name in [
        "127.0.0.1",
        "127.0.0.1:8448",
        "[::1]",
        "[::ffff:10.0.0.1]:443",
        "[fd00::1]",
        "0.0.0.0",
        "private.example:8448",
        "loopback.example",
        "srv.example",
        "delegated-ip.example",
        "delegated-name.example",
    ] {
        let err = resolve(&s, name).await.expect_err(name);
        assert!(err.contains("non-public"), "{name}: {err}");
    }
    // Only the public address of a name with both is used.
    let found = resolve(&s, "mixed.example:8448").await.expect("resolved");
    assert_eq!(found.addrs, vec!["1.2.3.4:8448".parse().expect("addr")]);

    // The switch lets them through.
    let dns = FakeDns::default().ip("private.example", &["10.1.2.3"]);
    let s = setup(dns, FakeWellKnown::default(), true);
    resolve(&s, "127.0.0.1").await.expect("allowed");
    let found = resolve(&s, "private.example").await.expect("allowed");
    assert_eq!(found.addrs, vec!["10.1.2.3:8448".parse().expect("addr")]);
}

#[test]
fn srv_order_is_by_priority_first() {
    let record = |priority, weight, target: &str| SrvRecord {
        priority,
        weight,
        port: 1,
        target: target.into(),
    };
    for _ in 0..20 {
        let ordered = srv_order(vec![
            record(20, 0, "c"),
            record(10, 5, "a"),
            record(10, 50, "b"),
            record(30, 0, "d"),
        ]);
        let targets: Vec<&str> = ordered.iter().map(|r| r.target.as_str()).collect();
        assert!(targets[..2].contains(&"a") && targets[..2].contains(&"b"));
        assert_eq!(targets[2..], ["c", "d"]);
    }
}
