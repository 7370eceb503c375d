//! This node in its cluster: it records a heartbeat in the database every
//! `cluster.heartbeat_interval`, reads which nodes are alive (heard from within
//! `cluster.node_timeout`, by the database's clock), and answers which node owns a queue.
//!
//! Every node reads the same table, so their views of who is alive agree within a heartbeat;
//! while they disagree, two nodes may both take a queue, and the store's fence makes the
//! loser's writes fail (503), never land.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::placement;
use crate::config::Config;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::QueueKey;
use crate::storage::postgres::{NodeRow, PgStore};

/// Who serves a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node.
    Local,
    /// Another node, at this base URL.
    Remote {
        /// Its name.
        node: String,
        /// Its base URL (`http(s)://host:port`).
        url: String,
    },
}

/// This node, its view of the others, and its heartbeat thread.
pub struct Cluster {
    node_id: String,
    /// The base URL the others reach this node at; empty until known (bound to port 0, the
    /// real port is known once the server listens: [`Cluster::serving_at`]).
    advertise: RwLock<String>,
    secret: String,
    heartbeat_interval: Duration,
    node_timeout: Duration,
    store: Arc<PgStore>,
    metrics: Arc<Metrics>,
    /// The live nodes, by name: (name, base URL). Always holds this node.
    live: RwLock<Vec<(String, String)>>,
    stopping: AtomicBool,
    /// How this node checks the others' certificates when it calls them over HTTPS.
    client_tls: Arc<rustls::ClientConfig>,
}

impl Cluster {
    /// Joins: records the first heartbeat (a database that cannot take it stops start-up),
    /// reads the live nodes, and starts the heartbeat thread.
    pub fn join(
        config: &Config,
        client_tls: Arc<rustls::ClientConfig>,
        store: Arc<PgStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Cluster>> {
        let c = &config.cluster;
        let known = !c.advertise.is_empty() || config.bind.port() != 0;
        let advertise = if known {
            c.advertise_url(config.bind, config.tls.enabled())
        } else {
            String::new()
        };
        let cluster = Arc::new(Cluster {
            node_id: c.node_id(config.bind),
            advertise: RwLock::new(advertise),
            secret: c.secret.clone(),
            heartbeat_interval: c.heartbeat_interval,
            node_timeout: c.node_timeout,
            store,
            metrics,
            live: RwLock::new(Vec::new()),
            stopping: AtomicBool::new(false),
            client_tls,
        });
        cluster.beat()?;
        let weak = Arc::downgrade(&cluster);
        std::thread::Builder::new()
            .name("tasq-cluster".into())
            .spawn(move || heartbeats(weak))
            .map_err(|e| crate::error::Error::Internal(format!("cluster thread: {e}")))?;
        Ok(cluster)
    }

    /// The server listens at `addr` (`tls`: HTTPS): when `cluster.advertise` is not set,
    /// that is where the other nodes reach this one, recorded at once.
    pub fn serving_at(&self, addr: std::net::SocketAddr, tls: bool) {
        {
            let mut advertise = self.advertise.write().unwrap_or_else(|e| e.into_inner());
            if advertise.is_empty() {
                *advertise = format!("{}://{addr}", if tls { "https" } else { "http" });
            }
        }
        if let Err(e) = self.beat() {
            log::warn!("cluster: heartbeat failed: {e}");
        }
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The secret the nodes share.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The TLS settings of this node's calls to the others ([`super::tls`]).
    pub fn client_tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.client_tls
    }

    /// Who serves `queue` now, by this node's view of the live nodes.
    pub fn owner(&self, queue: &QueueKey) -> Owner {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        match placement::owner(queue, live.iter().map(|(id, _)| id.as_str())) {
            Some(id) if id != self.node_id => Owner::Remote {
                node: id.to_string(),
                url: live
                    .iter()
                    .find(|(n, _)| n == id)
                    .map(|(_, url)| url.clone())
                    .unwrap_or_default(),
            },
            _ => Owner::Local,
        }
    }

    /// Every node the database knows, alive or not.
    pub fn nodes(&self) -> Result<Vec<NodeRow>> {
        self.store.nodes(self.node_timeout)
    }

    /// The names of the live nodes.
    pub fn live_ids(&self) -> Vec<String> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Leaves the cluster (a graceful stop): heartbeats end and the node's row goes, so the
    /// others take its queues at their next heartbeat instead of after `node_timeout`.
    pub fn leave(&self) {
        self.stopping.store(true, Ordering::Release);
        if let Err(e) = self.store.leave(&self.node_id) {
            log::warn!("cluster: leaving: {e}");
        }
    }

    /// Forgets `node`, a node that died and will not come back, so it no longer shows (or
    /// alerts) as dead; a node heard from within `node_timeout` is refused.
    pub fn forget(&self, node: &str) -> Result<()> {
        match self.store.forget_node(node)? {
            Some(true) => {
                log::info!("cluster: forgot node {node}");
                Ok(())
            }
            Some(false) => Err(crate::error::Error::invalid(format!(
                "node {node} is alive (heard from within cluster.node_timeout); stop it \
                 instead: with SIGTERM it leaves the cluster at once"
            ))),
            None => Err(crate::error::Error::NotFound(format!(
                "no node named {node} in this cluster"
            ))),
        }
    }

    /// True when the store still holds `queue` for this node (no other node took it since).
    pub fn holds(&self, queue: &QueueKey) -> bool {
        self.store.holds_queue(queue)
    }

    /// Hands `queue` over: once its writes so far are committed, this node writes it no more.
    pub fn release(&self, queue: &QueueKey) -> Result<()> {
        self.store.release_queue(queue)
    }

    /// One heartbeat: recorded, then the live nodes read.
    fn beat(&self) -> Result<()> {
        self.metrics
            .cluster
            .queues_owned
            .with_label_values(&[&self.node_id])
            .set(self.store.queues_held() as i64);
        let advertise = self
            .advertise
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Not reachable yet (its port is not known): the others must not send it requests.
        if !advertise.is_empty() {
            let first = self.store.heartbeat(&self.node_id, &advertise)?;
            if first {
                log::info!("cluster: node {} joined at {advertise}", self.node_id);
            }
        }
        let known = self.nodes()?;
        let alive = known.iter().filter(|n| n.alive).count();
        let nodes = &self.metrics.cluster.nodes;
        nodes.with_label_values(&["alive"]).set(alive as i64);
        nodes
            .with_label_values(&["dead"])
            .set((known.len() - alive) as i64);
        let mut live: Vec<(String, String)> = known
            .into_iter()
            .filter(|n| n.alive)
            .map(|n| (n.node_id, n.advertise))
            .collect();
        if !live.iter().any(|(id, _)| *id == self.node_id) {
            live.push((self.node_id.clone(), advertise));
            live.sort();
        }
        let mut view = self.live.write().unwrap_or_else(|e| e.into_inner());
        if view
            .iter()
            .map(|(id, _)| id)
            .ne(live.iter().map(|(id, _)| id))
        {
            log::info!(
                "cluster: live nodes now {}",
                live.iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        *view = live;
        Ok(())
    }
}

/// The heartbeat thread: beats until the node leaves or is dropped. A beat that fails (the
/// database unreachable) keeps the last view; the others see this node go silent.
fn heartbeats(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        if c.stopping.load(Ordering::Acquire) {
            return;
        }
        let every = c.heartbeat_interval;
        if let Err(e) = c.beat() {
            log::warn!("cluster: heartbeat failed: {e}");
        }
        drop(c);
        std::thread::sleep(every);
    }
}
