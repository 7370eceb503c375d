//! How a node checks the others' certificates when it calls them over HTTPS (forwarded
//! requests and relayed WebSockets): against `cluster.ca_cert`, the authority that signed the
//! nodes' certificates, or the public web authorities when that is not set. The name checked
//! is the host of the other node's advertised address, so each node's certificate must name
//! the host (or IP address) it advertises.

use std::sync::Arc;

use crate::config::pem;

/// The TLS settings of this node's calls to the others (`ca_cert`: a PEM file, or empty).
pub fn client_config(ca_cert: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    pem::trusting_or_public("cluster.ca_cert", ca_cert)
}
