//! The PEM files the configuration names: the server's certificate chain and key
//! (`[tls]`), the certificate authorities nodes of a cluster trust (`cluster.ca_cert`).

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

/// The one-line reason a file named by config `key` cannot be used.
pub fn unloadable(key: &str, path: &str, e: &dyn std::fmt::Display) -> String {
    format!("config key `{key}`: cannot load {path}: {e}")
}
