//! Cluster nodes for the tests: tasq processes on one PostgreSQL database, with a fast
//! heartbeat (250 ms) so a silent node is dead after 2 s.

use std::time::Duration;

use super::{get, metric_sum, metrics_text, wait_until, TestServer};

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

/// Three nodes on a fresh database, named n1..n3, each counting the three alive: the
/// database's URL and the nodes.
pub fn three_nodes() -> (String, Vec<TestServer>) {
    let url = super::postgres::new_database();
    let nodes = (1..=3)
        .map(|i| {
            let n = start_node(&url, &format!("n{i}"), &[]);
            n.wait_ready();
            n
        })
        .collect::<Vec<_>>();
    for n in &nodes {
        let all_alive = wait_until(Duration::from_secs(20), || {
            let (code, body) = get(&n.url("/api/v1/cluster"));
            code == 200 && body["live"].as_array().is_some_and(|a| a.len() == 3)
        });
        assert!(all_alive, "{}", get(&n.url("/api/v1/cluster")).1);
    }
    (url, nodes)
}

/// A metric summed over every node (each node counts its own share).
pub fn sum_over(nodes: &[TestServer], name: &str, labels: &[(&str, &str)]) -> f64 {
    nodes
        .iter()
        .map(|n| metric_sum(&metrics_text(n), name, labels))
        .sum()
}
