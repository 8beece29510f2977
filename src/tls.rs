//! The federation listener: the app served over TLS (HTTP/1.1) with the certificate and key of
//! `federation.tls_cert` and `federation.tls_key`.
//!
//! The certificate is presented to every client, whatever server name it asks for and when it
//! asks for none: peers connecting to an IP-literal server name send no SNI, and a server has
//! one identity anyway.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::FederationConfig;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers (also bounds idle keep-alive).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate or key that cannot be used; the message names the config key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {message}")]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

fn tls_error(key: &'static str, path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        key,
        message: format!("{}: {message}", path.display()),
    }
}

/// The TLS configuration of the federation listener, from `federation.tls_cert` (the PEM chain,
/// leaf first) and `federation.tls_key` (PEM, PKCS#8, PKCS#1 or SEC1), which must match.
pub fn server_config(federation: &FederationConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let missing = |key| TlsError {
        key,
        message: "is needed when federation.enabled is true".into(),
    };
    let cert_path = federation
        .tls_cert
        .as_deref()
        .ok_or_else(|| missing("federation.tls_cert"))?;
    let key_path = federation
        .tls_key
        .as_deref()
        .ok_or_else(|| missing("federation.tls_key"))?;
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| tls_error("federation.tls_cert", cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error("federation.tls_cert", cert_path, e))?;
    if chain.is_empty() {
        return Err(tls_error(
            "federation.tls_cert",
            cert_path,
            "holds no PEM certificate",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| tls_error("federation.tls_key", key_path, e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        tls_error(
            "federation.tls_key",
            key_path,
            format!(
                "unusable with the certificate of federation.tls_cert ({}): {e}",
                cert_path.display()
            ),
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("federation.tls_cert", cert_path, e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCertificate(Arc::new(certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Answers every handshake with the same certificate, with or without SNI.
#[derive(Debug)]
struct OneCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Serves `app` over TLS on `listener` until `stop` turns true, then lets the requests in flight
/// finish (idle connections close at once). Handshakes run in each connection's own task, so a
/// slow or silent client never holds up the accept loop.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(
                        tcp,
                        peer,
                        acceptor.clone(),
                        app.clone(),
                        stop.clone(),
                    ));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a federation connection");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Resolves once the server stops (or its stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// One client: the TLS handshake (bounded), then HTTP/1.1 until the client leaves or the server
/// stops.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let tls = tokio::select! {
        _ = stopped(&mut stop) => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "federation connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_bad_files_name_the_config_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let config = |cert: Option<&Path>, key: Option<&Path>| FederationConfig {
            enabled: true,
            tls_cert: cert.map(Path::to_path_buf),
            tls_key: key.map(Path::to_path_buf),
            ..FederationConfig::default()
        };
        let err = server_config(&config(None, Some(&key))).expect_err("no cert");
        assert_eq!(err.key, "federation.tls_cert");
        let err = server_config(&config(Some(&cert), Some(&key))).expect_err("missing file");
        assert_eq!(err.key, "federation.tls_cert");
        assert!(err.to_string().contains("cert.pem"), "{err}");
        std::fs::write(&cert, "no certificate here\n").expect("write");
        let err = server_config(&config(Some(&cert), Some(&key))).expect_err("empty");
        assert_eq!(err.key, "federation.tls_cert");
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn the_key_must_match_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let config = FederationConfig {
            enabled: true,
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            ..FederationConfig::default()
        };
        let pair = rcgen::KeyPair::generate().expect("key");
        let certificate = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .self_signed(&pair)
            .expect("certificate");
        std::fs::write(&cert, certificate.pem()).expect("write");

        std::fs::write(&key, "not a key\n").expect("write");
        let err = server_config(&config).expect_err("no key");
        assert_eq!(err.key, "federation.tls_key");

        let other = rcgen::KeyPair::generate().expect("key");
        std::fs::write(&key, other.serialize_pem()).expect("write");
        let err = server_config(&config).expect_err("another key");
        assert_eq!(err.key, "federation.tls_key");
        assert!(err.to_string().contains("federation.tls_cert"), "{err}");

        std::fs::write(&key, pair.serialize_pem()).expect("write");
        let tls = server_config(&config).expect("a matching pair loads");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
