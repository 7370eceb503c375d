//! The service: tasq's one front door. [`Tasq`] starts the actor system (the store, the
//! registry of queue actors, the purge of old records) in the current actix system and is the
//! only code that sends the queue actors messages: the HTTP and WebSocket handlers parse,
//! call it and encode, and an embedder calls the same methods in its own process, with the
//! same semantics and the same errors ([`crate::Error`], whose [`code`](crate::Error::code)
//! is the HTTP API's code):
//!
//! | HTTP | here |
//! | --- | --- |
//! | `POST {q}/tasks`, `POST {q}/tasks/batch` | [`Tasq::add`], [`Tasq::add_batch`] |
//! | `POST {q}/poll` (long poll) | [`Tasq::poll`] |
//! | `POST /api/v1/leases/{lease}/complete`, `fail`, `heartbeat` | [`Tasq::complete`], [`Tasq::fail`], [`Tasq::heartbeat`] |
//! | `GET {q}/tasks/{id}` (`?wait_ms`) | [`Tasq::status`], [`Tasq::wait`] |
//! | `DELETE {q}/tasks/{id}` | [`Tasq::cancel`] |
//! | `GET /api/v1/namespaces/{ns}/task-queues/{name}` | [`Tasq::describe`] (one type) |
//! | `GET /api/v1/namespaces/{ns}/task-queues` | [`Tasq::list_queues`] |
//! | `PUT {q}/config` | [`Tasq::set_config`] |
//! | `GET {q}/dead-letters`, `POST {q}/dead-letters/redrive` | [`Tasq::dead_letters`], [`Tasq::redrive`] |
//! | `GET {q}/connect` (WebSocket) | [`Tasq::open_socket`] |
//!
//! The store is a data directory ([`Config::data_dir`]), or a temporary one that is deleted
//! when the handle goes away ([`Builder::temporary`], for tests). The HTTP API can be mounted
//! on the embedder's own actix-web `App` ([`Tasq::configure`]), and the metrics can be
//! registered on the embedder's own Prometheus registry ([`Builder::metrics_registry`]).
//! `tasq serve` itself starts through [`Builder::start`] and only adds the HTTP server and
//! signal handling on top (see [`crate::server`]).
//!
//! ```
//! use serde_json::json;
//! use tasq::{Config, PollSpec, QueueKey, QueueType, Tasq, TaskSpec};
//!
//! actix_rt::System::new().block_on(async {
//!     let tasq = Tasq::builder(Config::default()).temporary().start().await?;
//!     let queue = QueueKey::new("default", "emails", QueueType::Activity)?;
//!
//!     // Produce.
//!     let added = tasq
//!         .add(&queue, TaskSpec::new("send-email").payload(json!({"to": "a@example.com"})))
//!         .await?;
//!
//!     // Work: a long poll that answers as soon as a task is there.
//!     let tasks = tasq.poll(&queue, PollSpec::new("worker-1")).await?;
//!     assert_eq!(tasks[0].task_id, added.task_id);
//!     tasq.complete(&tasks[0].lease, json!({"sent": true})).await?;
//!
//!     let info = tasq.status(&queue, &added.task_id).await?;
//!     assert_eq!(info.state, tasq::model::TaskState::Completed);
//!     tasq.shutdown().await
//! })?;
//! # Ok::<(), tasq::Error>(())
//! ```

mod admin;
mod attributes;
#[cfg(feature = "postgres")]
mod cluster;
mod inspect;
mod lifecycle;
mod spec;
mod tasks;
mod work;

pub use admin::{ListedQueue, QueuePage};
pub use lifecycle::Lifecycle;
pub use spec::{Failure, PollSpec};
pub use work::WorkerSocket;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;

use crate::auth::Auth;
use crate::clock::{now_ms, Clock, SystemClock};
use crate::config::{Backend, Config, Durability};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::QueueKey;
use crate::queue::Shared;
use crate::registry::Queues;
pub use crate::storage::WriteSeq;
use crate::storage::{Store, StoreOptions};

pub use crate::model::listing::{ListState, ListedTask, TaskFilter, TaskPage};
pub use crate::model::{TaskInfo, TaskSpec};
/// What the service's operations take and answer (defined with the queue's messages).
pub use crate::queue::messages::{
    AddResult, Explanation, HeartbeatAnswer, RateLimitView, Reason, Settle, SettleOp, Settlement,
    SocketEvent, Stats,
};
pub use crate::queue::pollers::Slot;

/// How often finished records past their retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Records purged per storage pass.
const PURGE_BATCH: usize = 10_000;

/// Settings for starting a [`Tasq`]; made by [`Tasq::builder`].
#[derive(Debug)]
pub struct Builder {
    config: Config,
    temporary: bool,
    registry: Option<Registry>,
}

impl Builder {
    /// Uses a temporary store (on `/dev/shm` where it exists, so in memory) that is deleted
    /// when the last handle is dropped; [`Config::data_dir`] is then ignored. For tests.
    pub fn temporary(mut self) -> Self {
        self.temporary = true;
        self
    }

    /// Keeps the store in `dir` instead of [`Config::data_dir`].
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self.temporary = false;
        self
    }

    /// Registers tasq's metrics on `registry` (e.g. the embedder's own) instead of a registry
    /// of tasq's own. Starting fails if that registry holds a metric of the same name.
    pub fn metrics_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Opens the store (putting back tasks that were in flight at a crash), starts the queue
    /// registry and the purge of old records, and answers a ready handle.
    ///
    /// Must run inside an actix system (`#[actix_web::main]`, `#[actix_rt::main]` or
    /// `actix_rt::System::new().block_on(…)`); elsewhere it answers `unavailable`.
    pub async fn start(self) -> Result<Tasq> {
        if actix::System::try_current().is_none() {
            return Err(Error::Unavailable(
                "tasq must start inside an actix system: use #[actix_web::main], \
                 #[actix_rt::main] or actix_rt::System::new().block_on(...)"
                    .into(),
            ));
        }
        let config = Arc::new(self.config);
        let metrics = match self.registry {
            Some(registry) => Metrics::with_registry(config.metrics.max_queue_series, registry)
                .map_err(|e| {
                    Error::invalid(format!(
                        "cannot register tasq's metrics on that registry: {e}"
                    ))
                })?,
            None => Metrics::new(config.metrics.max_queue_series),
        };
        let opened = open_store(&config, self.temporary, metrics.clone())?;
        let store = opened.store;
        #[cfg(feature = "postgres")]
        let cluster = match &opened.postgres {
            Some(pg) if config.cluster.enabled => {
                let tls = crate::cluster::tls::client_config(&config.cluster.ca_cert)
                    .map_err(Error::invalid)?;
                Some(
                    crate::cluster::Cluster::join(&config, tls, pg.clone(), metrics.clone())
                        .map_err(|e| {
                            Error::invalid(format!("config key `cluster.enabled`: {e}"))
                        })?,
                )
            }
            _ => None,
        };
        #[cfg(feature = "postgres")]
        let owns = cluster.as_ref().map(|c| cluster::owns(c.clone()));
        #[cfg(not(feature = "postgres"))]
        let owns = None;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let queues = Queues::start(Arc::new(Shared {
            store: store.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            parked: Arc::default(),
            clock: clock.clone(),
            owns,
        }));
        let auth = Arc::new(Auth::new(&config.auth));
        let lifecycle = Lifecycle::default();
        lifecycle.set_ready();
        let purge = actix_rt::spawn(purge_loop(store.clone(), config.completed_retention));
        let tasq = Tasq {
            inner: Arc::new(Inner {
                queues,
                store,
                config,
                metrics,
                lifecycle,
                auth,
                clock,
                sockets: Arc::default(),
                purge: Mutex::new(Some(purge)),
                #[cfg(feature = "postgres")]
                cluster,
            }),
        };
        #[cfg(feature = "postgres")]
        cluster::start(&tasq);
        Ok(tasq)
    }
}

/// A running tasq: the handle through which an embedder, and every edge of the server, adds,
/// polls and settles tasks.
///
/// Cheap to clone; every clone drives the same queues. See the [module doc](self) for the
/// mapping to the HTTP API and a complete example.
#[derive(Clone)]
pub struct Tasq {
    inner: Arc<Inner>,
}

struct Inner {
    queues: Queues,
    store: Arc<dyn Store>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    auth: Arc<Auth>,
    clock: Arc<dyn Clock>,
    /// Open streaming sockets (bounded by `limits.max_websockets`).
    sockets: Arc<std::sync::atomic::AtomicUsize>,
    purge: Mutex<Option<actix_rt::task::JoinHandle<()>>>,
    /// This node of its cluster, in cluster mode.
    #[cfg(feature = "postgres")]
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl std::fmt::Debug for Tasq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasq")
            .field("data_dir", &self.inner.config.data_dir)
            .field("serving", &self.inner.lifecycle.serving())
            .finish()
    }
}

impl Tasq {
    /// Settings for starting tasq with `config` (see [`Builder`]).
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            temporary: false,
            registry: None,
        }
    }

    /// Starts tasq with `config`, its store in `config.data_dir`. Shorthand for
    /// `Tasq::builder(config).start()`.
    pub async fn start(config: Config) -> Result<Tasq> {
        Tasq::builder(config).start().await
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Its metrics; [`Metrics::registry`] is the registry they are on and
    /// [`Metrics::render`] the text `/metrics` serves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The API keys, reloadable (`tasq serve` reloads them on SIGHUP).
    pub fn auth(&self) -> &Arc<Auth> {
        &self.inner.auth
    }

    /// True while it takes requests: started and not shutting down.
    pub fn is_serving(&self) -> bool {
        self.inner.lifecycle.serving()
    }

    /// `Ok` while the store acknowledges writes; after a failed write or sync, the error that
    /// every write now answers (see [`crate::storage::Health`]).
    pub fn storage_healthy(&self) -> Result<()> {
        self.inner.store.writable()
    }

    /// What failed, once the store failed a write or sync.
    pub fn storage_failure(&self) -> Option<String> {
        self.inner.store.failure()
    }

    /// Resolves when the store fails a write or sync (never, while it is healthy).
    pub async fn storage_failed(&self) {
        self.inner.store.failed().await
    }

    /// Offers the calling thread, an actix arbiter such as an HTTP worker's, to run queue
    /// actors (with `queue_threads = 0`); see [`Queues::share_current_thread`].
    pub fn share_current_thread(&self) {
        self.inner.queues.share_current_thread()
    }

    /// True when the actor of `queue` is running (it stops after `queue_idle_timeout` idle).
    pub fn is_loaded(&self, queue: &QueueKey) -> bool {
        self.inner.queues.is_loaded(queue)
    }

    /// Resolves once `write` (for `queue`) and every write before it is durable (a streaming
    /// worker's tasks are sent once their leases are).
    pub async fn durable(&self, queue: &QueueKey, write: WriteSeq) -> Result<()> {
        self.inner.store.durable_for(queue, write).await
    }

    /// The queues, once it is serving: every operation answers `unavailable` after shutdown
    /// began, like the HTTP API's 503.
    fn serving_queues(&self) -> Result<&Queues> {
        if self.is_serving() {
            Ok(&self.inner.queues)
        } else {
            Err(Error::Unavailable("tasq is shutting down".into()))
        }
    }

    fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// Shuts down gracefully: every later call (and HTTP API request) answers `unavailable`,
    /// parked polls are answered with no tasks, the purge stops and the store is flushed.
    /// Calling it again does no harm.
    pub async fn shutdown(&self) -> Result<()> {
        let inner = &self.inner;
        inner.lifecycle.set_stopping();
        #[cfg(feature = "postgres")]
        if let Some(c) = &inner.cluster {
            c.leave();
        }
        inner.queues.shutdown_all().await;
        let purge = inner.purge.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = purge {
            handle.abort();
        }
        self.flush().await
    }

    /// Flushes the store to disk now.
    pub async fn flush(&self) -> Result<()> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| Error::Internal(format!("flushing the store failed: {e}")))?
    }
}

/// The store opened, and the PostgreSQL one as such (a cluster's node needs it).
struct Opened {
    store: Arc<dyn Store>,
    #[cfg(feature = "postgres")]
    postgres: Option<Arc<crate::storage::postgres::PgStore>>,
}

/// Opens the store and recovers it: tasks in flight at a crash go back to their queues (not
/// in a cluster, where a lease outlives its node and the queue's next owner takes it on).
fn open_store(config: &Config, temporary: bool, metrics: Arc<Metrics>) -> Result<Opened> {
    let opened = match config.storage.backend {
        Backend::Sled => Opened {
            store: open_sled(config, temporary, metrics)?,
            #[cfg(feature = "postgres")]
            postgres: None,
        },
        Backend::Postgres => open_postgres(config, metrics)?,
    };
    if !config.cluster.enabled {
        let requeued = crate::queue::entries::requeue_in_flight(&*opened.store)?;
        if requeued > 0 {
            log::info!("recovery: {requeued} tasks in flight at the last stop are ready again");
        }
    }
    Ok(opened)
}

/// The PostgreSQL store at `storage.postgres_url`; a database that cannot be reached or
/// migrated stops start-up with the key named (`invalid_argument`: a setting that cannot
/// work, which `tasq serve` answers with exit status 2).
#[cfg(feature = "postgres")]
fn open_postgres(config: &Config, metrics: Arc<Metrics>) -> Result<Opened> {
    use crate::storage::postgres::{PgOptions, PgStore};
    let st = &config.storage;
    let opts = PgOptions {
        url: st.postgres_url.clone(),
        pool_size: st.postgres_pool_size,
        statement_timeout: st.postgres_statement_timeout,
        synchronous_commit: config.durability == Durability::Fsync,
        node: config
            .cluster
            .enabled
            .then(|| config.cluster.node_id(config.bind)),
        node_timeout: config.cluster.node_timeout,
    };
    match PgStore::open(&opts, metrics) {
        Ok(store) => Ok(Opened {
            store: store.clone(),
            postgres: Some(store),
        }),
        Err(e) => Err(Error::invalid(format!(
            "config key `storage.postgres_url`: {e}"
        ))),
    }
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_config: &Config, _metrics: Arc<Metrics>) -> Result<Opened> {
    Err(Error::invalid(
        "config key `storage.backend`: this tasq was built without the postgres feature",
    ))
}

/// The sled store in `data_dir`, or in a temporary directory.
fn open_sled(config: &Config, temporary: bool, metrics: Arc<Metrics>) -> Result<Arc<dyn Store>> {
    let dir = if temporary {
        temporary_dir()
    } else {
        config.data_dir.clone()
    };
    crate::storage::open(
        &dir,
        &StoreOptions {
            fsync: config.durability == Durability::Fsync,
            cache_capacity_bytes: config.cache_capacity_bytes,
            temporary,
            max_bytes: config.storage.max_bytes,
            // A temporary store is scratch space: the reserve guards a real data directory.
            reserve_bytes: if temporary {
                0
            } else {
                config.storage.reserve_bytes
            },
            snapshot_after_bytes: config.storage.snapshot_after_bytes,
        },
        metrics,
    )
}

/// A fresh path for a temporary store, which sled deletes when the store closes. On Linux it
/// is on `/dev/shm` (memory), as sled's own temporary stores are.
fn temporary_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!(
        "tasq-embedded-{}-{}-{}",
        std::process::id(),
        now_ms(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Purges finished records past their retention: every [`PURGE_EVERY`], or every half
/// retention when that is shorter (at least every second), so a short retention holds.
async fn purge_loop(store: Arc<dyn Store>, retention: Duration) {
    let every = (retention / 2).clamp(Duration::from_secs(1), PURGE_EVERY);
    loop {
        let s = store.clone();
        let purged = tokio::task::spawn_blocking(move || {
            let mut total = 0;
            loop {
                match s.purge_expired(now_ms(), PURGE_BATCH) {
                    Ok(n) => {
                        total += n;
                        if n < PURGE_BATCH {
                            return total;
                        }
                    }
                    Err(e) => {
                        log::error!("purging finished tasks failed: {e}");
                        return total;
                    }
                }
            }
        })
        .await
        .unwrap_or(0);
        if purged > 0 {
            log::info!("purged {purged} finished task records past their retention");
        }
        tokio::time::sleep(every).await;
    }
}
