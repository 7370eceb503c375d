//! What the service holds while it runs, shared by every edge (HTTP, WebSocket): the queue
//! actors, the store, the configuration, the metrics, whether it takes requests, the API keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::registry::Queues;
use crate::storage::Store;

/// Whether the server takes requests.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    stopping: AtomicBool,
}

impl Lifecycle {
    /// Storage is open and recovered.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Shutting down: new requests get 503.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// True while requests are served.
    pub fn serving(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }
}

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The queue actors.
    pub queues: Queues,
    /// The store (for reads that need no actor).
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Ready / stopping.
    pub lifecycle: Arc<Lifecycle>,
    /// API keys.
    pub auth: Arc<crate::auth::Auth>,
    /// Open WebSockets (bounded by `limits.max_websockets`).
    pub websockets: Arc<std::sync::atomic::AtomicUsize>,
}
