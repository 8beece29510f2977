//! The certificates outgoing federation connections trust: the system's roots plus the ones in
//! `federation.extra_ca_file` (a private CA, or the throwaway CA of a test).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The TLS client configuration of federation: verified against the roots, HTTP/1.1 offered.
pub fn client_config(extra_ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "cannot load some of the system's root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "some system root certificates are unusable");
    }
    if let Some(path) = extra_ca_file {
        for cert in extra_certificates(path)? {
            roots.add(cert).map_err(|e| {
                format!(
                    "config key `federation.extra_ca_file`: a certificate in {} is unusable: {e}",
                    path.display()
                )
            })?;
        }
    } else if added == 0 {
        tracing::warn!("no system root certificates found: federation TLS connections will fail");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate of a PEM file (there may be several); an error names the config key.
fn extra_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |message: String| {
        format!(
            "config key `federation.extra_ca_file`: {}: {message}",
            path.display()
        )
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_extra_ca_file_names_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let err = client_config(Some(&missing)).expect_err("missing file");
        assert!(err.contains("federation.extra_ca_file"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let err = client_config(Some(&empty)).expect_err("no certificate");
        assert!(err.contains("federation.extra_ca_file"), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn works_without_extra_certificates() {
        assert!(client_config(None).is_ok());
    }
}
