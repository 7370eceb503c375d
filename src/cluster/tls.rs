//! How a node checks the others' certificates when it calls them over HTTPS (forwarded
//! requests and relayed WebSockets): against `cluster.ca_cert`, the authority that signed the
//! nodes' certificates, or the public web authorities when that is not set. The name checked
//! is the host of the other node's advertised address, so each node's certificate must name
//! the host (or IP address) it advertises.

use std::sync::Arc;

use crate::config::pem;

/// The TLS settings of this node's calls to the others (`ca_cert`: a PEM file, or empty).
pub fn client_config(ca_cert: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_cert.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        for cert in pem::certificates("cluster.ca_cert", ca_cert)? {
            roots
                .add(cert)
                .map_err(|e| pem::unloadable("cluster.ca_cert", ca_cert, &e))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
