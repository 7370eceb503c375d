//! The queue actor: one per task queue (namespace, name, type), spawned on first use by the
//! registry, holding everything live about the queue.
//!
//! - A poll either gets tasks at once or parks as a [`pollers::Waiter`] (a pending reply).
//! - An add hands the task to the oldest live waiter that accepts it (sync match) or writes it
//!   to the ready index (the backlog); a delayed task goes to the delayed index until due.
//! - Every change is one storage transaction, applied before memory changes, and answers that
//!   promise durability (add, settle, cancel) wait for the group commit.
//! - One timer per actor, armed for the next lease deadline, delayed task or idle check.
//!
//! The actor stops itself after `queue_idle_timeout` with no parked polls, no sockets,
//! nothing in flight and no delayed task due within that time, backlog or not: its state is
//! on disk, the next request reloads it, and the registry reloads it when its first delayed
//! task falls due.
//!
//! This file holds the actor's state and what every concern shares (loading, the one write
//! of a change, starting a lease); its methods live one file per concern: `add`, `dispatch`,
//! `sockets`, `settle`, `admin`, `timers`, and `handlers` takes each message to them. The pure
//! parts (`backlog`, `fairness`, `leases`, `pollers`, `rates`, `throttle`) have unit tests.

mod add;
mod admin;
pub mod backlog;
mod dispatch;
pub mod entries;
mod explain;
pub mod fairness;
mod handlers;
pub mod leases;
pub mod messages;
pub mod pollers;
pub mod rates;
mod settle;
mod sockets;
pub mod throttle;
mod timers;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::{rfc3339, Clock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{GaugeValues, Metrics, QueueMetrics};
use crate::model::{
    ActiveLease, QueueKey, Queued, SettleKind, Settled, TaskError, TaskRecord, TaskState,
};
use crate::storage::{Entry, QueueMeta, ReadyPos, Store, Txn, WriteSeq};
use entries::{entry_of, requeue_leased};

use backlog::Backlog;
use fairness::FairClock;
use leases::Leases;
use messages::*;
use pollers::{eligible, Delivery, PollersSeen, Sink, Slot, Waiter, Waiters};
use rates::Rate;
use throttle::{RateLimit, Source, Throttle};

/// Delayed entries promoted per step, so one step stays short.
const PROMOTE_BATCH: usize = 1000;
/// How long a queue handles messages before it lets the other queues on its thread run.
const YIELD_EVERY: Duration = Duration::from_millis(5);

/// What every queue actor shares: the store, the configuration, the metrics, the clock.
pub struct Shared {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Polls parked in all queues (bounded by `limits.max_parked_polls`).
    pub parked: Arc<std::sync::atomic::AtomicUsize>,
    /// The time (the system's; a manual clock in tests).
    pub clock: Arc<dyn Clock>,
    /// In a cluster: whether this node serves a queue now (`None`: every queue).
    pub owns: Option<Owns>,
}

/// Whether this node serves a queue (see [`Shared::owns`]).
pub type Owns = Arc<dyn Fn(&QueueKey) -> bool + Send + Sync>;

/// Sent to the registry when a queue actor stops, so it forgets that address.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueueStopped {
    /// The queue.
    pub key: QueueKey,
    /// Which incarnation stopped (a newer one may already run).
    pub generation: u64,
    /// When its first delayed task falls due, if it has one: the registry loads the queue
    /// again then, so the task becomes ready on time with no actor waiting for it meanwhile.
    pub next_due: Option<u64>,
}

/// A failed attempt, as reported by a worker or made by the server for a timeout.
struct FailedAttempt {
    error: TaskError,
    non_retryable: bool,
    retry_after_ms: Option<u64>,
}

/// A streaming worker's socket, a long-lived poller with credit.
struct Socket {
    identity: String,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    /// Tasks it may still be given: credit given, minus tasks out, plus leases ended.
    credit: u32,
    /// Leases of tasks sent on it and not yet ended.
    outstanding: HashSet<u64>,
    /// Its waiter is in the queue.
    waiting: bool,
    /// It asked to drain: ended leases give no credit back.
    draining: bool,
    tx: tokio::sync::mpsc::UnboundedSender<SocketEvent>,
}

/// What happens to a task after a failed attempt.
enum AfterFailure {
    /// Cancel was asked while it ran: the attempt's end makes it `cancelled`.
    Cancelled,
    Dead,
    Ready(ReadyPos, Entry),
    Delayed(u64),
}

/// Settles planned into one write (see [`QueueActor::settle_all`]).
struct SettleBatchWrite {
    txn: Txn,
    meta: QueueMeta,
    /// Task ids written so far: a second settle of one of them needs a write of its own.
    task_ids: HashSet<String>,
    /// (index of the answer, what to do once written).
    planned: Vec<(usize, PlannedSettle)>,
}

impl SettleBatchWrite {
    fn new(meta: QueueMeta) -> Self {
        SettleBatchWrite {
            txn: Txn::default(),
            meta,
            task_ids: HashSet::new(),
            planned: Vec::new(),
        }
    }
}

/// A waiter's part in one `dispatch_waiting` call: what it may still take and what it got.
struct Share {
    waiter: u64,
    task_types: Option<Vec<String>>,
    identity: String,
    /// Tasks per round: a poll's `max_tasks`, one for a socket.
    per_round: usize,
    /// Tasks it may still take in this call: a poll's `max_tasks`, a socket's credit.
    left: usize,
    recs: Vec<TaskRecord>,
}

/// Leases planned into one write (see [`QueueActor::lease_ready`]).
struct LeaseBatch {
    txn: Txn,
    meta: QueueMeta,
    /// Task ids leased so far in the batch.
    task_ids: HashSet<String>,
    /// The leases planned, to track once written, or to put back into the window if not.
    leased: Vec<PlannedLease>,
    /// A stale ready entry's deletion is in the batch.
    dropped_stale: bool,
}

/// One lease in a [`LeaseBatch`].
struct PlannedLease {
    /// Where the task was in the ready order, and its index entry.
    pos: ReadyPos,
    entry: Entry,
    /// When it was leased (ms).
    at: u64,
    lease_id: u64,
    expires_at: u64,
}

impl LeaseBatch {
    fn new(meta: QueueMeta) -> Self {
        LeaseBatch {
            txn: Txn::default(),
            meta,
            task_ids: HashSet::new(),
            leased: Vec::new(),
            dropped_stale: false,
        }
    }
}

/// What planning one settle came to.
enum Planned {
    /// Its writes are in the batch.
    Write(PlannedSettle),
    /// A repeat of a settle that already succeeded: answered the same, nothing to write.
    Answered(Settlement),
}

/// One settle whose writes are in a [`SettleBatchWrite`].
struct PlannedSettle {
    lease_id: u64,
    ran_ms: u64,
    after: Option<AfterFailure>,
    answer: Settlement,
}

/// The actor of one task queue.
pub struct QueueActor {
    key: QueueKey,
    generation: u64,
    shared: Arc<Shared>,
    on_stop: Recipient<QueueStopped>,
    meta: QueueMeta,
    meta_stored: bool,
    backlog: Backlog,
    next_delayed: Option<u64>,
    waiters: Waiters,
    leases: Leases,
    watchers: HashMap<String, Vec<oneshot::Sender<()>>>,
    seen: PollersSeen,
    add_rate: Rate,
    dispatch_rate: Rate,
    timer: Option<(u64, SpawnHandle)>,
    idle_since: Option<u64>,
    shutting_down: bool,
    metrics: QueueMetrics,
    throttle: Throttle,
    /// The latest `max_tasks_per_second` a poller sent.
    worker_limit: Option<RateLimit>,
    /// A dispatch was held back by the throttle since the last timer.
    throttled: bool,
    fair: FairClock,
    sockets: HashMap<u64, Socket>,
    /// Which socket holds a lease.
    lease_sockets: HashMap<u64, u64>,
    next_socket: u64,
    /// When this actor last gave its thread to the others (see [`QueueActor::pace`]).
    last_yield: Instant,
}

impl QueueActor {
    /// A queue actor for `key`; it loads its state from the store when started.
    pub fn new(
        key: QueueKey,
        generation: u64,
        shared: Arc<Shared>,
        on_stop: Recipient<QueueStopped>,
    ) -> Self {
        let metrics = shared.metrics.queue(&key);
        QueueActor {
            backlog: Backlog::new(shared.config.backlog_window),
            key,
            generation,
            on_stop,
            meta: QueueMeta::default(),
            meta_stored: false,
            next_delayed: None,
            waiters: Waiters::default(),
            leases: Leases::default(),
            watchers: HashMap::new(),
            seen: PollersSeen::default(),
            add_rate: Rate::default(),
            dispatch_rate: Rate::default(),
            timer: None,
            idle_since: None,
            last_yield: Instant::now(),
            shutting_down: false,
            metrics,
            throttle: Throttle::default(),
            worker_limit: None,
            throttled: false,
            fair: FairClock::default(),
            sockets: HashMap::new(),
            lease_sockets: HashMap::new(),
            next_socket: 0,
            shared,
        }
    }

    /// Now, in epoch milliseconds, by the queues' clock.
    fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    fn store(&self) -> &dyn Store {
        &*self.shared.store
    }

    fn load(&mut self) -> Result<()> {
        if self
            .shared
            .owns
            .as_ref()
            .is_some_and(|owns| !owns(&self.key))
        {
            return Err(Error::Unavailable(format!(
                "queue {} is served by another node of the cluster now; retry",
                self.key
            )));
        }
        self.shared.store.acquire(&self.key)?;
        if let Some(meta) = self.shared.store.meta(&self.key)? {
            self.meta = meta;
            self.meta_stored = true;
        }
        if self.meta.in_flight > 0 {
            for rec in self.shared.store.in_flight_records(&self.key)? {
                if rec.state == TaskState::Running {
                    self.track_lease(&rec);
                }
            }
            self.meta.in_flight = self.leases.len() as u64;
        }
        self.apply_limit();
        self.backlog.refill(&*self.shared.store, &self.key)?;
        for pos in self.backlog.first_positions() {
            self.fair.resume(pos.priority, pos.order);
        }
        self.promote_due(self.now_ms())
    }

    /// The limit in force: the API's, else the latest worker's, else none.
    fn apply_limit(&mut self) {
        let limit = match (self.meta.rate_limit, self.worker_limit) {
            (Some(api), _) => Some((api, Source::Api)),
            (None, Some(worker)) => Some((worker, Source::Worker)),
            (None, None) => None,
        };
        self.throttle.set(limit, self.shared.clock.instant());
    }

    /// Writes a pending task to the ready index at its fair place (see [`fairness`]),
    /// as ready since `ready_at`.
    fn enqueue_ready(
        &mut self,
        rec: &mut TaskRecord,
        txn: &mut Txn,
        meta: &mut QueueMeta,
        ready_at: u64,
    ) -> (ReadyPos, Entry) {
        let pass = self.fair.enqueue(
            rec.priority,
            rec.fairness_key.as_deref(),
            rec.fairness_weight,
        );
        let pos = ReadyPos {
            priority: rec.priority,
            order: pass,
            seq: rec.seq,
        };
        let entry = entry_of(rec, ready_at);
        rec.state = TaskState::Pending;
        rec.queued = Some(Queued::Ready { order: pass });
        txn.put_ready(&self.key, pos, &entry);
        meta.ready += 1;
        (pos, entry)
    }

    /// A first dispatch ends the schedule-to-start wait (call it once `rec` is leased).
    fn end_waiting(&self, rec: &TaskRecord, txn: &mut Txn) {
        if let (1, Some(t)) = (rec.attempt, rec.schedule_to_start_timeout_ms) {
            txn.del_waiting(rec.added_at.saturating_add(t), &self.key, &rec.task_id);
        }
    }

    /// Writes `txn` with the queue's new counters; memory changes only after it succeeds.
    fn commit(&mut self, mut txn: Txn, meta: QueueMeta) -> Result<()> {
        txn.put_meta(&self.key, &meta);
        self.shared.store.commit(txn)?;
        self.meta = meta;
        self.meta_stored = true;
        Ok(())
    }

    /// Leases `rec` to `identity`; `order` and `ready_at` are its place in the ready order and
    /// when it became ready, kept so a task handed back returns as it was.
    fn start_lease(
        &self,
        rec: &mut TaskRecord,
        identity: &str,
        now: u64,
        (order, ready_at): (u64, u64),
    ) {
        rec.attempt += 1;
        rec.state = TaskState::Running;
        rec.queued = None;
        rec.updated_at = now;
        rec.lease = Some(ActiveLease {
            id: rand::random(),
            identity: identity.to_string(),
            dispatched_at: now,
            close_deadline: now.saturating_add(rec.start_to_close_timeout_ms),
            heartbeat_deadline: rec.heartbeat_timeout_ms.map(|h| now.saturating_add(h)),
            order,
            ready_at,
        });
    }

    fn track_lease(&mut self, rec: &TaskRecord) {
        if let Some(l) = &rec.lease {
            self.leases.insert(
                l.id,
                rec.task_id.clone(),
                l.expires_at(),
                entries::serial_key(rec),
            );
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.shared.metrics.loaded_task_queues.inc();
        if let Err(e) = self.load() {
            // Serving from a half-read state would answer wrongly (and in a cluster, a queue
            // not taken cannot be written): stop, and let the next request start it again.
            log::error!("{}: loading from the store failed: {e}", self.key);
            ctx.stop();
            return;
        }
        self.after_change(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.shared.metrics.loaded_task_queues.dec();
        let (store, key) = (self.shared.store.clone(), self.key.clone());
        actix::spawn(async move { store.unload(&key).await });
        self.on_stop.do_send(QueueStopped {
            key: self.key.clone(),
            generation: self.generation,
            next_due: self.next_delayed,
        });
    }
}

/// Bytes of a task's record and index entries besides its payload, for [`Store::admit`].
const ADD_OVERHEAD_BYTES: u64 = 256;

/// (task id, lease id) of a running record.
fn lease_of(rec: &TaskRecord) -> Option<(String, u64)> {
    rec.lease.as_ref().map(|l| (rec.task_id.clone(), l.id))
}

/// A deadline no socket waiter reaches (sockets wait until they close).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
