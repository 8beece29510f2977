//! The federation transport over real TLS between real servers: discovery of IP-literal names,
//! certificates presented without SNI and verified against the test CA, the address policy, and a
//! listener that shrugs off clients that do not speak TLS.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use roost::error::Error;
use roost::service::federation::transport::Transport;
use ruma::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName as TlsName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::federation_common::{FederatedPair, FederatedServer, TestCa, fresh_loopback_ip};

const VERSION_PATH: &str = "/_matrix/federation/v1/version";

fn version_request() -> axum::http::Request<Vec<u8>> {
    axum::http::Request::get(VERSION_PATH)
        .body(Vec::new())
        .expect("request")
}

/// `GET /version` through the transport; the JSON answer.
async fn version(transport: &Transport, destination: &ServerName) -> Result<Value, Error> {
    let response = transport
        .send(destination, version_request(), 64 * 1024)
        .await?;
    assert_eq!(response.status(), 200);
    Ok(serde_json::from_slice(response.body()).expect("JSON"))
}

fn assert_is_roost(answer: &Value) {
    assert_eq!(answer["server"]["name"], "roost", "{answer}");
    assert_eq!(
        answer["server"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{answer}"
    );
}

fn unreachable_message(result: Result<Value, Error>) -> String {
    match result {
        Err(Error::Unreachable(message)) => message,
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn each_server_reaches_the_other_over_tls() {
    let pair = FederatedPair::start().await;
    assert_eq!(
        pair.a.server.as_ref().and_then(|s| s.federation_addr()),
        Some(pair.a.federation_addr())
    );
    let answer = version(&pair.a.transport(), pair.b.server_name())
        .await
        .expect("a reaches b");
    assert_is_roost(&answer);
    let answer = version(&pair.b.transport(), pair.a.server_name())
        .await
        .expect("b reaches a");
    assert_is_roost(&answer);
    // The explicit default port is the same server.
    let with_port = ServerName::parse(format!("{}:8448", pair.b.name)).expect("name");
    let answer = version(&pair.a.transport(), &with_port)
        .await
        .expect("a reaches b:8448");
    assert_is_roost(&answer);
    // Users of each server carry its IP literal as their server name.
    let alice = crate::common::user(&pair.a, "alice").await;
    assert_eq!(alice.id, pair.a.user_id("alice"));
    // The endpoint is public on the client listener too (deployments behind a TLS proxy).
    let (status, body) = pair.a.get(VERSION_PATH, None).await;
    assert_eq!(status, 200);
    assert_is_roost(&body);
}

#[tokio::test]
async fn a_client_sending_no_sni_gets_the_certificate() {
    let ca = TestCa::new();
    let server = FederatedServer::start(&ca).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("CA"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.federation_addr())
        .await
        .expect("connect");
    // An IP address as the server name: rustls sends no SNI, and verifies the IP SAN.
    let name = TlsName::IpAddress(std::net::IpAddr::V4(server.ip).into());
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let presented = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .expect("a certificate")
        .clone();
    let cert_file = server.config.federation.tls_cert.clone().expect("cert");
    let expected = CertificateDer::from_pem_file(cert_file).expect("the server's certificate");
    assert_eq!(presented, expected);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

    tls.write_all(
        format!(
            "GET {VERSION_PATH} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.name
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"roost\""), "{answer}");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let pair = FederatedPair::start().await;
    let other_ca = TestCa::new();
    let stranger = FederatedServer::start(&other_ca).await;
    let message = unreachable_message(version(&pair.a.transport(), stranger.server_name()).await);
    assert!(message.contains("TLS"), "{message}");
    assert!(message.contains(stranger.name.as_str()), "{message}");
    // Nor does the stranger trust the pair's CA.
    let message = unreachable_message(version(&stranger.transport(), pair.a.server_name()).await);
    assert!(message.contains("TLS"), "{message}");
    // Both still serve the peers they trust.
    assert_is_roost(
        &version(&pair.a.transport(), pair.b.server_name())
            .await
            .expect("a reaches b"),
    );
}

#[tokio::test]
async fn loopback_destinations_are_refused_without_a_connection_attempt() {
    let pair = FederatedPair::start().await;
    let mut config = pair.a.config.clone();
    config.federation.allow_private_addresses = false;
    let transport = Transport::new(&config).expect("transport");

    // A listener that would see any connection attempt (queued by the kernel, even unaccepted).
    let ip = fresh_loopback_ip();
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    for name in [format!("{ip}:{port}"), pair.b.name.to_string()] {
        let name = ServerName::parse(&name).expect("name");
        let message = unreachable_message(version(&transport, &name).await);
        assert!(message.contains("non-public"), "{message}");
        assert!(message.contains("allow_private_addresses"), "{message}");
    }
    assert!(
        listener.accept().now_or_never().is_none(),
        "no connection was attempted"
    );
    for name in [
        "[::1]",
        "[::ffff:127.0.0.1]:8448",
        "0.0.0.0",
        "10.0.0.1:8448",
    ] {
        let name = ServerName::parse(name).expect("name");
        let message = unreachable_message(version(&transport, &name).await);
        assert!(message.contains("non-public"), "{name}: {message}");
    }
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails_cleanly_and_the_listener_keeps_serving() {
    let pair = FederatedPair::start().await;
    let federation = pair.b.federation_addr();

    // A client that connects and never starts a handshake does not hold up anyone else.
    let silent = tokio::net::TcpStream::connect(federation)
        .await
        .expect("connect");

    let mut plain = tokio::net::TcpStream::connect(federation)
        .await
        .expect("connect");
    plain
        .write_all(format!("GET {VERSION_PATH} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    // Either closed after a TLS alert, or reset: never an HTTP answer.
    if read.is_ok() {
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
        assert!(answer.len() < 64, "at most an alert: {answer:?}");
    }
    let error = reqwest::Client::new()
        .get(format!("http://{federation}{VERSION_PATH}"))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(error.is_err(), "plain HTTP is not served: {error:?}");

    assert_is_roost(
        &version(&pair.a.transport(), pair.b.server_name())
            .await
            .expect("still serving"),
    );
    drop(silent);
}

#[tokio::test]
async fn a_stopped_server_is_unreachable_until_it_restarts() {
    let mut pair = FederatedPair::start().await;
    let transport = pair.a.transport();
    assert_is_roost(
        &version(&transport, pair.b.server_name())
            .await
            .expect("reachable"),
    );
    pair.b.stop().await;
    let message = unreachable_message(version(&transport, pair.b.server_name()).await);
    assert!(message.contains("connect"), "{message}");
    pair.b.restart().await;
    assert_is_roost(
        &version(&transport, pair.b.server_name())
            .await
            .expect("reachable again"),
    );
    let (status, _) = pair.b.get("/_matrix/client/versions", None).await;
    assert_eq!(status, 200, "the client listener is back on its address");
}
