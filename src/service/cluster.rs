//! The service in cluster mode: which queues this node serves, and keeping it so.
//!
//! Every `cluster.heartbeat_interval` this node hands over the queues it has loaded that
//! another node owns now (their parked polls answered empty, their writes committed, then
//! refused), and loads the queues it owns now that have work under way (leased or delayed
//! tasks), so that their leases expire and their delayed tasks come due with no request to
//! start them: after a node dies, this is how its queues carry on elsewhere.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Inner, Tasq};
use crate::cluster::{Cluster, Owner};
use crate::error::Result;
use crate::model::QueueKey;
use crate::queue::Owns;
use crate::storage::postgres::NodeRow;

/// Queues with work under way loaded per round, at most.
const LOAD_BATCH: usize = 10_000;
/// Rounds between two looks for queues with work under way.
const LOAD_EVERY_ROUNDS: u32 = 3;

/// Whether this node serves a queue, for the queue actors.
pub(super) fn owns(cluster: Arc<Cluster>) -> Owns {
    Arc::new(move |queue: &QueueKey| cluster.owner(queue) == Owner::Local)
}

/// Starts keeping the queues loaded here in line with the cluster (see the module doc).
pub(super) fn start(tasq: &Tasq) {
    let Some(cluster) = tasq.inner.cluster.clone() else {
        return;
    };
    let every = tasq.inner.config.cluster.heartbeat_interval;
    actix_rt::spawn(reconcile_loop(Arc::downgrade(&tasq.inner), cluster, every));
}

async fn reconcile_loop(inner: Weak<Inner>, cluster: Arc<Cluster>, every: Duration) {
    let mut round: u32 = 0;
    loop {
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.lifecycle.serving() {
            if inner.lifecycle.stopping() {
                return;
            }
            continue;
        }
        for key in inner.queues.loaded_keys() {
            if cluster.owner(&key) != Owner::Local {
                inner.queues.hand_over(&key).await;
                let (c, k) = (cluster.clone(), key.clone());
                match blocking(move || c.release(&k)).await {
                    Ok(()) => log::info!("cluster: handed {key} over"),
                    Err(e) => log::warn!("cluster: handing {key} over: {e}"),
                }
            } else if !cluster.holds(&key) {
                // Ours, but another node took it meanwhile (the views of the live nodes
                // differed for a moment): what this actor holds is stale. It stops; the next
                // request loads the queue again, taking it back.
                log::info!("cluster: {key} was taken by another node; loading it again");
                inner.queues.hand_over(&key).await;
            }
        }
        round = round.wrapping_add(1);
        if round % LOAD_EVERY_ROUNDS == 1 {
            load_owned(&inner, &cluster).await;
        }
    }
}

/// Runs a store call off the runtime's thread (it blocks on the database).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads the queues this node owns that have leased or delayed tasks and no actor here.
async fn load_owned(inner: &Inner, cluster: &Cluster) {
    let store = inner.store.clone();
    let holding = match blocking(move || store.queues_holding_tasks(LOAD_BATCH)).await {
        Ok(q) => q,
        Err(e) => {
            log::warn!("cluster: listing the queues with work under way: {e}");
            return;
        }
    };
    for (key, meta) in holding {
        let busy = meta.in_flight + meta.delayed > 0;
        if busy && cluster.owner(&key) == Owner::Local && !inner.queues.is_loaded(&key) {
            if let Err(e) = inner.queues.actor(&key).await {
                log::warn!("cluster: loading {key}: {e}");
            }
        }
    }
}

impl Tasq {
    /// Who serves `queue`: this node, or (in cluster mode) another node at its URL.
    pub fn owner(&self, queue: &QueueKey) -> Owner {
        match &self.inner.cluster {
            Some(c) => c.owner(queue),
            None => Owner::Local,
        }
    }

    /// This node of its cluster, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.as_ref()
    }

    /// Forgets a dead node of the cluster ([`Cluster::forget`]); outside cluster mode, 404.
    pub async fn forget_node(&self, node: String) -> Result<()> {
        let Some(c) = self.inner.cluster.clone() else {
            return Err(crate::error::Error::NotFound(
                "this server is not in a cluster (cluster.enabled = false)".into(),
            ));
        };
        tokio::task::spawn_blocking(move || c.forget(&node))
            .await
            .map_err(|e| crate::error::Error::Internal(format!("forgetting a node: {e}")))?
    }

    /// Every node of the cluster the database knows (`None` outside cluster mode).
    pub async fn cluster_nodes(&self) -> Result<Option<Vec<NodeRow>>> {
        let Some(c) = self.inner.cluster.clone() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || c.nodes())
            .await
            .map_err(|e| crate::error::Error::Internal(format!("listing the nodes: {e}")))?
            .map(Some)
    }
}
