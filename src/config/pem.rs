//! The PEM files the configuration names: the server's certificate chain and key
//! (`[tls]`), the certificate authorities nodes of a cluster trust (`cluster.ca_cert`), and
//! those the command-line tools trust (`--ca-cert`).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The certificates in the PEM file at `path`, at least one; the error names the config
/// `key` and the file.
pub fn certificates(key: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(path).map_err(|e| unloadable(key, path, &e))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| unloadable(key, path, &e))?;
    if certs.is_empty() {
        return Err(unloadable(key, path, &"no certificate in the file"));
    }
    Ok(certs)
}

/// The first private key in the PEM file at `path`; the error names the config `key`.
pub fn private_key(key: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(path).map_err(|e| unloadable(key, path, &e))?,
    ))
    .map_err(|e| unloadable(key, path, &e))?
    .ok_or_else(|| unloadable(key, path, &"no private key in the file"))
}

/// TLS settings of a client that checks servers' certificates against the authorities of
/// the PEM file at `path` (a private CA; `key` names it in errors).
pub fn trusting(key: &str, path: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(key, path)? {
        roots.add(cert).map_err(|e| unloadable(key, path, &e))?;
    }
    client_config(roots)
}

/// TLS settings of a client that trusts the public web authorities (Mozilla's list).
#[cfg(any(feature = "postgres", feature = "client"))]
pub fn public() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    client_config(roots)
}

/// [`trusting`] the file at `path`, or [`public`] when `path` is empty.
#[cfg(any(feature = "postgres", feature = "client"))]
pub fn trusting_or_public(key: &str, path: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    if path.is_empty() {
        public()
    } else {
        trusting(key, path)
    }
}

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The one-line reason a file named by config `key` cannot be used.
pub fn unloadable(key: &str, path: &str, e: &dyn std::fmt::Display) -> String {
    format!("config key `{key}`: cannot load {path}: {e}")
}
