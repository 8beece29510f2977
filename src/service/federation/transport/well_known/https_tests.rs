//! `.well-known` fetched for real: over TLS from the federation listener's own server code, on
//! loopback, with host names resolved by a table.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use super::*;
use crate::config::FederationConfig;
use crate::service::federation::transport::dns::{DnsError, SrvRecord};
use crate::service::federation::transport::trust;

struct TableDns(HashMap<String, Vec<IpAddr>>);

impl Dns for TableDns {
    async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        self.0.get(host).cloned().ok_or(DnsError::NotFound)
    }

    async fn lookup_srv(&self, _name: &str) -> Result<Vec<SrvRecord>, DnsError> {
        Err(DnsError::NotFound)
    }
}

/// Answers by the `Host` the request names, like a web server with virtual hosts.
async fn well_known(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = host.split(':').next().unwrap_or("");
    match name {
        "moved.test" => (
            StatusCode::FOUND,
            [(header::LOCATION, "/elsewhere/server.json")],
        )
            .into_response(),
        "loop.test" => (
            StatusCode::MOVED_PERMANENTLY,
            [(header::LOCATION, "/.well-known/matrix/server")],
        )
            .into_response(),
        "plain.test" => (
            StatusCode::FOUND,
            [(header::LOCATION, "http://plain.test/x")],
        )
            .into_response(),
        "direct.test" => (
            [(header::CACHE_CONTROL, "max-age=600")],
            axum::Json(serde_json::json!({ "m.server": "matrix.direct.test:443" })),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn moved() -> Response {
    axum::Json(serde_json::json!({ "m.server": "matrix.moved.test" })).into_response()
}

struct Site {
    port: u16,
    ca_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _stop: watch::Sender<bool>,
}

/// A TLS server on 127.0.0.1 with a certificate for every `*.test` name used here.
async fn site() -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("key");
    let names = [
        "moved.test",
        "loop.test",
        "plain.test",
        "direct.test",
        "none.test",
    ];
    let cert = rcgen::CertificateParams::new(names.map(str::to_owned).to_vec())
        .expect("params")
        .signed_by(&key, &rcgen::Issuer::from_params(&ca_params, &ca_key))
        .expect("certificate");
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("cert.pem"), cert.pem()).expect("write");
    std::fs::write(path("key.pem"), key.serialize_pem()).expect("write");
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    let tls = crate::tls::server_config(&FederationConfig {
        enabled: true,
        tls_cert: Some(path("cert.pem")),
        tls_key: Some(path("key.pem")),
        ..FederationConfig::default()
    })
    .expect("TLS config");
    let app = Router::new()
        .route("/.well-known/matrix/server", get(well_known))
        .route("/elsewhere/server.json", get(moved));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(crate::tls::serve(listener, tls, app, stopped));
    Site {
        port,
        ca_file: path("ca.pem"),
        _dir: dir,
        _stop: stop,
    }
}

fn fetcher(site: &Site, allow_private: bool) -> HttpsWellKnown<TableDns> {
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let dns = TableDns(
        [
            "moved.test",
            "loop.test",
            "plain.test",
            "direct.test",
            "none.test",
        ]
        .into_iter()
        .map(|name| (name.to_owned(), vec![loopback]))
        .collect(),
    );
    let tls = trust::client_config(Some(&site.ca_file)).expect("client TLS");
    HttpsWellKnown::new(
        Arc::new(dns),
        AddressPolicy::new(allow_private),
        Arc::new(Client::new(tls)),
    )
    .on_port(site.port)
}

#[tokio::test]
async fn fetches_delegations_over_tls_and_follows_redirects() {
    let site = site().await;
    let fetcher = fetcher(&site, true);
    assert_eq!(
        fetcher.fetch("direct.test").await,
        WellKnownAnswer::Delegated {
            server: ServerName::parse("matrix.direct.test:443").expect("name"),
            cache_for: Some(Duration::from_secs(600)),
        }
    );
    assert_eq!(
        fetcher.fetch("moved.test").await,
        WellKnownAnswer::Delegated {
            server: ServerName::parse("matrix.moved.test").expect("name"),
            cache_for: None,
        }
    );
}

#[tokio::test]
async fn loops_plain_http_redirects_and_missing_files_are_invalid() {
    let site = site().await;
    let fetcher = fetcher(&site, true);
    for (name, why) in [
        ("loop.test", "loop"),
        ("plain.test", "HTTPS"),
        ("none.test", "404"),
    ] {
        match fetcher.fetch(name).await {
            WellKnownAnswer::Invalid(reason) => assert!(reason.contains(why), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_names_and_private_addresses_fail_without_an_answer() {
    let site = site().await;
    match fetcher(&site, true).fetch("unknown.test").await {
        WellKnownAnswer::Failed(reason) => assert!(reason.contains("unknown.test"), "{reason}"),
        other => panic!("{other:?}"),
    }
    match fetcher(&site, false).fetch("direct.test").await {
        WellKnownAnswer::Failed(reason) => assert!(reason.contains("non-public"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
