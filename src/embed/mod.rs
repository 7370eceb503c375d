//! The embedding API: run tasq inside your own Rust process, with no HTTP in between.
//!
//! [`Tasq`] starts the same actor system that `tasq serve` runs (the store, the registry of
//! queue actors, the purge of old records) in the current actix system, and offers the HTTP
//! API's operations as async methods with the same semantics and the same errors
//! ([`crate::Error`], whose [`code`](crate::Error::code) is the HTTP API's code):
//!
//! | HTTP | here |
//! | --- | --- |
//! | `POST {q}/tasks`, `POST {q}/tasks/batch` | [`Tasq::add`], [`Tasq::add_batch`] |
//! | `POST {q}/poll` (long poll) | [`Tasq::poll`] |
//! | `POST /api/v1/leases/{lease}/complete`, `fail`, `heartbeat` | [`Tasq::complete`], [`Tasq::fail`], [`Tasq::heartbeat`] |
//! | `GET {q}/tasks/{id}` (`?wait_ms`) | [`Tasq::status`], [`Tasq::wait`] |
//! | `DELETE {q}/tasks/{id}` | [`Tasq::cancel`] |
//! | `GET /api/v1/namespaces/{ns}/task-queues/{name}` | [`Tasq::describe`] (one type) |
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

mod spec;
pub mod state;

pub use spec::{Failure, PollSpec, TaskSpec};
pub use state::{AppState, Lifecycle};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use prometheus::Registry;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::auth::Auth;
use crate::clock::{now_ms, rfc3339};
use crate::config::{Config, Durability};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::json::decode;
use crate::model::{
    validate_identity, validate_name, validate_task_ids, AddTaskRequest, LeaseToken, NewTask,
    QueueKey, RetryPolicy, RouteTo, Task, TaskError, TaskRecord, TaskState, MAX_BATCH,
    MAX_POLL_TASKS, MAX_POLL_WAIT_MS,
};
use crate::queue::messages::{
    AddResult, Cancel, Describe, ForgetWaiter, GaveUp, Heartbeat, HeartbeatAnswer, Poll,
    PollOutcome, RateLimitView, Redrive, SetConfig, Settle, SettleOp, Settlement, Stats, Watch,
    WatchTask,
};
use crate::queue::pollers::Delivery;
use crate::queue::throttle::RateLimit;
use crate::queue::{Env, QueueActor};
use crate::registry::Queues;
use crate::storage::{Store, StoreOptions};

/// How often finished records past their retention are purged.
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// Records purged per storage pass.
const PURGE_BATCH: usize = 10_000;
/// Default wait of a [`PollSpec`], as for the HTTP poll.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_millis(60_000);

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
        let store = open_store(&config, self.temporary, metrics.clone())?;
        let queues = Queues::start(Arc::new(Env {
            store: store.clone(),
            config: config.clone(),
            metrics: metrics.clone(),
            parked: Arc::default(),
            clock: Arc::new(crate::clock::SystemClock),
        }));
        let auth = Arc::new(Auth::new(&config.auth));
        let lifecycle = Arc::new(Lifecycle::default());
        lifecycle.set_ready();
        let purge = actix_rt::spawn(purge_loop(store.clone(), config.completed_retention));
        Ok(Tasq {
            inner: Arc::new(Inner {
                state: AppState {
                    queues,
                    store,
                    config,
                    metrics,
                    lifecycle,
                    auth,
                    websockets: Arc::default(),
                },
                purge: Mutex::new(Some(purge)),
            }),
        })
    }
}

/// A running tasq: the handle through which an embedder adds, polls and settles tasks.
///
/// Cheap to clone; every clone drives the same queues. See the [module doc](self) for the
/// mapping to the HTTP API and a complete example.
#[derive(Clone)]
pub struct Tasq {
    inner: Arc<Inner>,
}

struct Inner {
    state: AppState,
    purge: Mutex<Option<actix_rt::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Tasq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasq")
            .field("data_dir", &self.inner.state.config.data_dir)
            .field("serving", &self.inner.state.lifecycle.serving())
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
        &self.inner.state.config
    }

    /// Its metrics; [`Metrics::registry`] is the registry they are on and
    /// [`Metrics::render`] the text `/metrics` serves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.state.metrics
    }

    /// What the HTTP handlers need, e.g. for [`crate::http::create_app`].
    pub fn app_state(&self) -> AppState {
        self.inner.state.clone()
    }

    /// Answers `unavailable` once shutting down, like the HTTP API's 503.
    fn serving_queues(&self) -> Result<&Queues> {
        if self.inner.state.lifecycle.serving() {
            Ok(&self.inner.state.queues)
        } else {
            Err(Error::Unavailable("tasq is shutting down".into()))
        }
    }

    /// Adds one task, answered once it is on disk (with `durability = "fsync"`). A `task_id`
    /// that exists already in the queue changes nothing and answers `duplicate: true`.
    pub async fn add(&self, queue: &QueueKey, task: TaskSpec) -> Result<AddResult> {
        let task = task.validate()?;
        self.serving_queues()?
            .add_one(queue, task, &*self.inner.state.store)
            .await
    }

    /// Adds 1–1000 tasks, all or nothing: one invalid task rejects the batch (the error names
    /// its index). Results come in order.
    pub async fn add_batch(
        &self,
        queue: &QueueKey,
        tasks: impl IntoIterator<Item = TaskSpec>,
    ) -> Result<Vec<AddResult>> {
        let tasks = tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.validate()
                    .map_err(|e| Error::invalid(format!("tasks[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        if tasks.is_empty() || tasks.len() > MAX_BATCH {
            return Err(Error::invalid(format!(
                "tasks must hold 1–{MAX_BATCH} tasks, got {}",
                tasks.len()
            )));
        }
        self.serving_queues()?
            .add(queue, Arc::new(tasks), &*self.inner.state.store)
            .await
    }

    /// Long-polls for up to `max_tasks` tasks: answers as soon as at least one can be given,
    /// or an empty list once `wait` passes (or tasq shuts down). Waiting polls are served in
    /// arrival order, exactly as HTTP polls (they share the queue).
    ///
    /// Dropping the future gives up the poll: the queue forgets it, and tasks already on
    /// their way to it go back to the queue at once, as for an HTTP client that hangs up.
    pub async fn poll(&self, queue: &QueueKey, poll: PollSpec) -> Result<Vec<Task>> {
        let msg = poll.validate(Instant::now())?;
        poll_and_wait(self.serving_queues()?, &*self.inner.state.store, queue, msg).await
    }

    /// Completes the task held with `lease`, answered once on disk. Repeating it answers the
    /// same; an expired or superseded lease is [`Error::LeaseLost`].
    pub async fn complete(&self, lease: &str, result: Value) -> Result<Settlement> {
        let result = to_raw(&result)?;
        self.settle(lease, SettleOp::Complete { result }).await
    }

    /// Fails the attempt held with `lease`; the task is retried per its retry policy unless
    /// the failure is non-retryable or its attempts are used up (then it is a dead letter).
    pub async fn fail(&self, lease: &str, failure: Failure) -> Result<Settlement> {
        let op = SettleOp::Fail {
            error: failure.error,
            non_retryable: failure.non_retryable,
            retry_after_ms: failure.retry_after.map(|d| d.as_millis() as u64),
        };
        self.settle(lease, op).await
    }

    async fn settle(&self, lease: &str, op: SettleOp) -> Result<Settlement> {
        let queues = self.serving_queues()?;
        let token = LeaseToken::decode(lease)?;
        let msg = Settle {
            task_id: token.task_id,
            lease_id: token.lease_id,
            op,
        };
        queues
            .settle_one(&token.queue, msg, &*self.inner.state.store)
            .await
    }

    /// Extends the lease (when the task has a heartbeat timeout) and keeps `details` with the
    /// task. The answer tells whether a cancel was asked for.
    pub async fn heartbeat(&self, lease: &str, details: Option<Value>) -> Result<HeartbeatAnswer> {
        let queues = self.serving_queues()?;
        let token = LeaseToken::decode(lease)?;
        let msg = Heartbeat {
            task_id: token.task_id,
            lease_id: token.lease_id,
            details: details.as_ref().map(to_raw).transpose()?,
        };
        queues.call(&token.queue, msg).await?
    }

    /// The status of a task; an unknown id is [`Error::NotFound`].
    pub async fn status(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        self.serving_queues()?;
        validate_name("task_id", task_id)?;
        self.read_status(queue, task_id)
    }

    /// Like [`Tasq::status`], but first waits until the task is in a terminal state
    /// (completed, failed, timed out, cancelled) or `timeout` passes.
    pub async fn wait(
        &self,
        queue: &QueueKey,
        task_id: &str,
        timeout: Duration,
    ) -> Result<TaskInfo> {
        let queues = self.serving_queues()?;
        validate_name("task_id", task_id)?;
        let watch = queues
            .call(
                queue,
                WatchTask {
                    task_id: task_id.to_string(),
                },
            )
            .await??;
        match watch {
            Watch::Now(rec) => return status_of(queue, task_id, rec.map(|r| *r)),
            Watch::Later(rx) => {
                let _ = tokio::time::timeout(timeout, rx).await;
            }
        }
        self.read_status(queue, task_id)
    }

    fn read_status(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        status_of(queue, task_id, self.inner.state.store.task(queue, task_id)?)
    }

    /// Cancels a task: a pending one becomes `cancelled` and is never dispatched; a running
    /// one is marked, so its next heartbeat answers `cancel_requested: true`.
    pub async fn cancel(&self, queue: &QueueKey, task_id: &str) -> Result<TaskInfo> {
        let queues = self.serving_queues()?;
        validate_name("task_id", task_id)?;
        let rec = queues
            .call_durable(
                queue,
                Cancel {
                    task_id: task_id.to_string(),
                },
                &*self.inner.state.store,
            )
            .await?;
        Ok(TaskInfo::from(&rec))
    }

    /// Sets the queue's dispatch limit, as `PUT {q}/config` does: `Some(0.0)` pauses
    /// dispatch, `None` removes the limit; `burst` defaults to one second's worth. Stored
    /// (answered once on disk), kept across restarts, and it overrides a limit sent by
    /// workers. Adds are never throttled.
    pub async fn set_config(
        &self,
        queue: &QueueKey,
        max_tasks_per_second: Option<f64>,
        burst: Option<u32>,
    ) -> Result<RateLimitView> {
        let rate_limit = RateLimit::requested(max_tasks_per_second, burst.map(u64::from))?;
        self.serving_queues()?
            .call_durable(queue, SetConfig { rate_limit }, &*self.inner.state.store)
            .await
    }

    /// Puts dead letters (`None`: all of the queue's) back as pending with their attempts
    /// reset, as `POST {q}/dead-letters/redrive` does; answers how many, once on disk.
    pub async fn redrive(&self, queue: &QueueKey, task_ids: Option<Vec<String>>) -> Result<usize> {
        if let Some(ids) = &task_ids {
            validate_task_ids(ids)?;
        }
        self.serving_queues()?
            .call_durable(queue, Redrive { task_ids }, &*self.inner.state.store)
            .await
    }

    /// The statistics of one queue (one type of a name): backlog, age, pollers, rates.
    pub async fn describe(&self, queue: &QueueKey) -> Result<Stats> {
        self.serving_queues()?.call(queue, Describe).await?
    }

    /// Shuts down gracefully: every later call (and HTTP API request) answers `unavailable`,
    /// parked polls are answered with no tasks, the purge stops and the store is flushed.
    /// Calling it again does no harm.
    pub async fn shutdown(&self) -> Result<()> {
        let state = &self.inner.state;
        state.lifecycle.set_stopping();
        state.queues.shutdown_all().await;
        let purge = self
            .inner
            .purge
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = purge {
            handle.abort();
        }
        self.flush().await
    }

    /// Flushes the store to disk now.
    pub async fn flush(&self) -> Result<()> {
        let store = self.inner.state.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .map_err(|e| Error::Internal(format!("flushing the store failed: {e}")))?
    }
}

/// The status of a task, as `GET {q}/tasks/{id}` answers it (and serialized the same way).
#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    /// The task id.
    pub task_id: String,
    /// The task type.
    pub task_type: String,
    /// Where the task is in its life.
    pub state: TaskState,
    /// Attempts dispatched so far.
    pub attempt: u32,
    /// When it was added (RFC 3339).
    pub added_at: String,
    /// Its last change (RFC 3339).
    pub updated_at: String,
    /// The result of a completed task.
    pub result: Option<Box<RawValue>>,
    /// The error of the last failed attempt.
    pub last_error: Option<TaskError>,
}

impl From<&TaskRecord> for TaskInfo {
    fn from(rec: &TaskRecord) -> Self {
        TaskInfo {
            task_id: rec.task_id.clone(),
            task_type: rec.task_type.clone(),
            state: rec.state,
            attempt: rec.attempt,
            added_at: rfc3339(rec.added_at),
            updated_at: rfc3339(rec.updated_at),
            result: rec.result.clone(),
            last_error: rec.last_error.clone(),
        }
    }
}

fn status_of(queue: &QueueKey, task_id: &str, rec: Option<TaskRecord>) -> Result<TaskInfo> {
    match rec {
        Some(rec) => Ok(TaskInfo::from(&rec)),
        None => Err(Error::NotFound(format!("no task {task_id:?} in {queue}"))),
    }
}

fn to_raw(value: &Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::invalid(format!("the value does not encode as JSON: {e}")))
}

/// Tells the queue actor to forget a parked poll whose waiter went away (future dropped).
struct ParkGuard {
    owner: Option<Addr<QueueActor>>,
    waiter_id: u64,
}

impl ParkGuard {
    fn finish(mut self, reason: Option<GaveUp>) {
        if let (Some(owner), Some(reason)) = (self.owner.take(), reason) {
            owner.do_send(ForgetWaiter {
                waiter_id: self.waiter_id,
                reason,
            });
        }
    }
}

impl Drop for ParkGuard {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.do_send(ForgetWaiter {
                waiter_id: self.waiter_id,
                reason: GaveUp::Cancelled,
            });
        }
    }
}

/// Takes the tasks once their delivery's write is on disk (a backlog lease; none for a sync match), as the HTTP poll does; if
/// the caller gives up meanwhile, the delivery is dropped and its tasks go back to the queue.
async fn accept(store: &dyn Store, delivery: Delivery) -> Result<Vec<Task>> {
    if !delivery.is_empty() {
        store.durable_since(delivery.write()).await?;
    }
    Ok(delivery.accept())
}

/// Sends `msg` to the queue and, when it parks, waits on the future (not on an actor timer)
/// until its deadline: the semantics of the HTTP long poll.
pub(crate) async fn poll_and_wait(
    queues: &Queues,
    store: &dyn Store,
    key: &QueueKey,
    msg: Poll,
) -> Result<Vec<Task>> {
    let park_until = msg.park_until;
    match queues.poll(key, msg).await? {
        PollOutcome::Now(delivery) => accept(store, delivery).await,
        PollOutcome::Parked {
            owner,
            waiter_id,
            mut rx,
        } => {
            let guard = ParkGuard {
                owner: Some(owner),
                waiter_id,
            };
            let deadline = park_until.unwrap_or_else(Instant::now);
            let delivery = match tokio::time::timeout_at(deadline.into(), &mut rx).await {
                Ok(Ok(d)) => Some(d),
                Ok(Err(_)) => None,
                Err(_) => {
                    // Time is up; a delivery sent at the last instant is still taken.
                    rx.close();
                    rx.try_recv().ok()
                }
            };
            match delivery {
                Some(d) => {
                    guard.finish(None);
                    accept(store, d).await
                }
                None => {
                    guard.finish(Some(GaveUp::Timeout));
                    Ok(Vec::new())
                }
            }
        }
    }
}

/// Opens the store and recovers it: tasks in flight at a crash go back to their queues.
fn open_store(config: &Config, temporary: bool, metrics: Arc<Metrics>) -> Result<Arc<dyn Store>> {
    let dir = if temporary {
        temporary_dir()
    } else {
        config.data_dir.clone()
    };
    let store = crate::storage::open(
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
        },
        metrics,
    )?;
    let requeued = crate::queue::entries::requeue_in_flight(&*store)?;
    if requeued > 0 {
        log::info!("recovery: {requeued} tasks in flight at the last stop are ready again");
    }
    Ok(store)
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
