//! `[cluster]`: several tasq nodes sharing the queues on one PostgreSQL database.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::human;

/// Cluster mode: who this node is, how the others reach it, how soon a silent node is dead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Run as a node of a cluster (needs `storage.backend = "postgres"`).
    pub enabled: bool,
    /// This node's name, unique in the cluster; empty: the host name and the port.
    pub node_id: String,
    /// The `host:port` (or `http(s)://host:port`) the other nodes reach this one at; empty:
    /// the bind address.
    pub advertise: String,
    /// How often this node records that it is alive.
    #[serde(with = "human")]
    pub heartbeat_interval: Duration,
    /// A node unheard of for this long is dead: its queues go to the others.
    #[serde(with = "human")]
    pub node_timeout: Duration,
    /// Shared by the nodes; authenticates the calls they make to each other.
    pub secret: String,
    /// PEM file of the certificate authorities whose certificates this node trusts when it
    /// calls another over HTTPS; empty: the public web authorities (Mozilla's list).
    pub ca_cert: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            node_id: String::new(),
            advertise: String::new(),
            heartbeat_interval: Duration::from_secs(1),
            node_timeout: Duration::from_secs(10),
            secret: String::new(),
            ca_cert: String::new(),
        }
    }
}

/// The smallest secret accepted: the nodes' calls carry it, guessing it must not be easy.
const MIN_SECRET_LEN: usize = 16;

impl ClusterConfig {
    /// The key and the reason of the first bad setting (`postgres`: the backend is
    /// PostgreSQL).
    pub fn validate(&self, postgres: bool) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if !postgres {
            return Err((
                "cluster.enabled",
                "a cluster needs storage.backend = \"postgres\" (the nodes share its database)"
                    .into(),
            ));
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return Err((
                "cluster.secret",
                format!(
                    "must be set, at least {MIN_SECRET_LEN} characters, the same on every node"
                ),
            ));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(("cluster.heartbeat_interval", "must be more than 0".into()));
        }
        if self.node_timeout < 2 * self.heartbeat_interval {
            return Err((
                "cluster.node_timeout",
                "must be at least twice cluster.heartbeat_interval".into(),
            ));
        }
        if !self.ca_cert.is_empty() {
            super::pem::certificates("cluster.ca_cert", &self.ca_cert)
                .map_err(|why| ("cluster.ca_cert", why))?;
        }
        if self.node_id.len() > 200 || self.node_id.chars().any(char::is_control) {
            return Err((
                "cluster.node_id",
                "must be at most 200 printable characters".into(),
            ));
        }
        Ok(())
    }

    /// This node's name: `node_id`, else the host name and the port of `bind`.
    pub fn node_id(&self, bind: SocketAddr) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        format!("{}:{}", host_name(), bind.port())
    }

    /// The base URL other nodes reach this one at: `advertise`, else `bind` (`tls`: HTTPS).
    pub fn advertise_url(&self, bind: SocketAddr, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        let addr = if self.advertise.is_empty() {
            bind.to_string()
        } else {
            self.advertise.clone()
        };
        if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("{scheme}://{addr}")
        }
    }
}

/// The machine's host name (`localhost` when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0 either way.
    let ret = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if ret != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if !name.is_empty() => name.to_string(),
        _ => "localhost".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> ClusterConfig {
        ClusterConfig {
            enabled: true,
            secret: "0123456789abcdef".into(),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn a_cluster_needs_postgres_and_a_secret() {
        assert!(ClusterConfig::default().validate(false).is_ok());
        assert_eq!(on().validate(false).unwrap_err().0, "cluster.enabled");
        assert!(on().validate(true).is_ok());
        let short = ClusterConfig {
            secret: "short".into(),
            ..on()
        };
        assert_eq!(short.validate(true).unwrap_err().0, "cluster.secret");
        let hasty = ClusterConfig {
            node_timeout: Duration::from_millis(1500),
            ..on()
        };
        assert_eq!(hasty.validate(true).unwrap_err().0, "cluster.node_timeout");
    }

    #[test]
    fn names_and_addresses_default_to_the_bind_address() {
        let bind: SocketAddr = "127.0.0.1:7281".parse().expect("addr");
        let c = on();
        assert!(c.node_id(bind).ends_with(":7281"));
        assert_eq!(c.advertise_url(bind, false), "http://127.0.0.1:7281");
        let named = ClusterConfig {
            node_id: "n1".into(),
            advertise: "https://n1.example:7280/".into(),
            ..on()
        };
        assert_eq!(named.node_id(bind), "n1");
        assert_eq!(named.advertise_url(bind, false), "https://n1.example:7280");
    }
}
