//! Cluster nodes for the tests: tasq processes on one PostgreSQL database, with a fast
//! heartbeat (250 ms) so a silent node is dead after 2 s.

use super::TestServer;

/// The secret every test node shares.
pub const SECRET: &str = "a-cluster-secret-for-tests";

/// The environment of node `id` on the database at `url`, then `extra`.
pub fn node_env<'a>(
    url: &'a str,
    id: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("TASQ_STORAGE_BACKEND", "postgres"),
        ("TASQ_STORAGE_POSTGRES_URL", url),
        ("TASQ_CLUSTER_ENABLED", "true"),
        ("TASQ_CLUSTER_NODE_ID", id),
        ("TASQ_CLUSTER_SECRET", SECRET),
        ("TASQ_CLUSTER_HEARTBEAT_INTERVAL", "250ms"),
        ("TASQ_CLUSTER_NODE_TIMEOUT", "2s"),
    ];
    env.extend_from_slice(extra);
    env
}

/// Starts node `id` (with `extra` environment) and returns once it printed its address;
/// readiness is the caller's to check (over HTTPS, say).
pub fn start_node(url: &str, id: &str, extra: &[(&str, &str)]) -> TestServer {
    TestServer::start_unready(&[], &node_env(url, id, extra))
}
