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
//! The actor stops itself after `queue_idle_timeout` with no parked polls, nothing in flight,
//! no backlog and nothing due; its state is on disk and the next request reloads it.

pub mod backlog;
pub mod fairness;
pub mod leases;
pub mod messages;
pub mod pollers;
pub mod rates;
pub mod throttle;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use crate::clock::{now_ms, rfc3339};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::{GaugeValues, Metrics, QueueMetrics};
use crate::model::{
    ActiveLease, QueueKey, Queued, SettleKind, Settled, TaskError, TaskRecord, TaskState,
};
use crate::storage::{entry_of, requeue_leased, Entry, QueueMeta, ReadyPos, Store, Txn, Written};

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

/// What every queue actor shares: the store, the configuration and the metrics.
pub struct Env {
    /// The store.
    pub store: Arc<Store>,
    /// The configuration.
    pub config: Arc<Config>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Polls parked in all queues (bounded by `limits.max_parked_polls`).
    pub parked: Arc<std::sync::atomic::AtomicUsize>,
}

/// Sent to the registry when a queue actor stops, so it forgets that address.
#[derive(Message)]
#[rtype(result = "()")]
pub struct QueueStopped {
    /// The queue.
    pub key: QueueKey,
    /// Which incarnation stopped (a newer one may already run).
    pub generation: u64,
}

/// A failed attempt, as reported by a worker or made by the server for a timeout.
struct Failure {
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
    env: Arc<Env>,
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
    /// Lets the other queue actors on this thread run after [`YIELD_EVERY`] of work. actix
    /// handles every message in a mailbox before it returns to the thread's scheduler, so a
    /// queue whose mailbox never empties (producers that send again as soon as answered)
    /// starved every queue that shares its thread: a describe of another queue waited over a
    /// minute behind a bulk load. Waiting on a one-poll future ends the mailbox loop for now.
    fn pace(&mut self, ctx: &mut Context<Self>) {
        if self.last_yield.elapsed() >= YIELD_EVERY {
            self.last_yield = Instant::now();
            ctx.wait(actix::fut::wrap_future(tokio::task::yield_now()));
        }
    }

    /// A queue actor for `key`; it loads its state from the store when started.
    pub fn new(
        key: QueueKey,
        generation: u64,
        env: Arc<Env>,
        on_stop: Recipient<QueueStopped>,
    ) -> Self {
        let metrics = env.metrics.queue(&key);
        QueueActor {
            backlog: Backlog::new(env.config.backlog_window),
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
            env,
        }
    }

    fn store(&self) -> &Store {
        &self.env.store
    }

    fn load(&mut self) -> Result<()> {
        if let Some(meta) = self.env.store.meta(&self.key)? {
            self.meta = meta;
            self.meta_stored = true;
        }
        if self.meta.in_flight > 0 {
            for rec in self.env.store.in_flight_records(&self.key)? {
                if let (TaskState::Running, Some(l)) = (rec.state, &rec.lease) {
                    self.leases
                        .insert(l.id, rec.task_id.clone(), l.expires_at());
                }
            }
            self.meta.in_flight = self.leases.len() as u64;
        }
        self.apply_limit();
        self.backlog.refill(&self.env.store, &self.key)?;
        for pos in self.backlog.first_positions() {
            self.fair.resume(pos.priority, pos.order);
        }
        self.promote_due(now_ms())
    }

    /// The limit in force: the API's, else the latest worker's, else none.
    fn apply_limit(&mut self) {
        let limit = match (self.meta.rate_limit, self.worker_limit) {
            (Some(api), _) => Some((api, Source::Api)),
            (None, Some(worker)) => Some((worker, Source::Worker)),
            (None, None) => None,
        };
        self.throttle.set(limit);
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
        txn.put_meta(&self.key, &meta)?;
        self.env.store.commit(txn)?;
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
            self.leases
                .insert(l.id, rec.task_id.clone(), l.expires_at());
        }
    }

    /// Adds the tasks of several requests with one write, all or nothing; answers each
    /// request's results in order. A task id given twice (in one request or two) is added
    /// once; the later one answers `duplicate`.
    fn add(
        &mut self,
        requests: &[&[crate::model::NewTask]],
        ctx: &mut Context<Self>,
    ) -> Result<Vec<Vec<AddResult>>> {
        // About what the tasks take on disk: a record and its index entries each.
        let bytes: u64 = requests
            .iter()
            .flat_map(|r| r.iter())
            .map(|t| t.payload.get().len() as u64 + ADD_OVERHEAD_BYTES)
            .sum();
        self.env.store.admit(bytes)?;
        let now = now_ms();
        let instant = Instant::now();
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut results: Vec<Vec<AddResult>> = Vec::with_capacity(requests.len());
        let mut ids = HashSet::new();
        let mut to_backlog = Vec::new();
        let mut sync: Vec<(Waiter, TaskRecord)> = Vec::new();
        let mut first_due: Option<u64> = None;
        for request in requests {
            let mut answers = Vec::with_capacity(request.len());
            for spec in request.iter() {
                let duplicate = !ids.insert(spec.task_id.as_str())
                    || (spec.id_given && self.store().task(&self.key, &spec.task_id)?.is_some());
                answers.push(AddResult {
                    task_id: spec.task_id.clone(),
                    duplicate,
                });
                if duplicate {
                    continue;
                }
                let seq = self.store().next_seq()?;
                let mut rec = TaskRecord::new(spec, now, seq);
                if let Some(t) = spec.schedule_to_start_timeout_ms {
                    txn.put_waiting(now.saturating_add(t), &self.key, &rec.task_id);
                }
                if spec.delay_ms > 0 {
                    let due = now.saturating_add(spec.delay_ms);
                    rec.queued = Some(Queued::Delayed { due });
                    txn.put_delayed(&self.key, due, seq, &entry_of(&rec, due));
                    meta.delayed += 1;
                    first_due = Some(first_due.map_or(due, |d| d.min(due)));
                } else {
                    let entry = entry_of(&rec, now);
                    let full = self.leases.len() + sync.len()
                        >= self.env.config.limits.max_in_flight_per_queue;
                    let waiter = if self.shutting_down || self.waiters.is_empty() || full {
                        None
                    } else if !self.throttle.has_token(instant) {
                        self.throttled = true;
                        self.metrics.rate_limited.inc();
                        None
                    } else {
                        self.waiters.take_for(&entry, instant, now)
                    };
                    match waiter {
                        Some(w) => {
                            self.throttle.try_take(instant);
                            let pass = self.fair.enqueue(
                                rec.priority,
                                rec.fairness_key.as_deref(),
                                rec.fairness_weight,
                            );
                            self.fair.dispatched(rec.priority, pass);
                            self.start_lease(&mut rec, &w.identity, now, (pass, now));
                            self.end_waiting(&rec, &mut txn);
                            txn.put_inflight(&self.key, &rec.task_id);
                            meta.in_flight += 1;
                            sync.push((w, rec.clone()));
                        }
                        None => {
                            to_backlog.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, now));
                        }
                    }
                }
                txn.put_new_task(&self.key, &mut rec);
            }
            results.push(answers);
        }
        // On failure the waiters taken above are dropped: their polls answer empty.
        self.commit(txn, meta)?;
        let added = results.iter().flatten().filter(|r| !r.duplicate).count() as u64;
        self.metrics.added.inc_by(added);
        self.add_rate.add(now, added as u32);
        for (pos, entry) in to_backlog {
            self.backlog.insert(pos, entry);
        }
        if let Some(due) = first_due {
            self.next_delayed = Some(self.next_delayed.map_or(due, |d| d.min(due)));
        }
        // A task handed to a waiting worker goes out now, without waiting for the flush that
        // makes its add durable (Temporal's sync match does not even persist it): the worker
        // starts one fsync sooner, and nothing acknowledged is at risk. The add is answered
        // only once that flush covered it, and a crash before then loses an add nobody was
        // told about; the producer retries it (at-least-once), the worker's settle of the
        // lost lease answers `lease_lost`.
        for (w, rec) in sync {
            self.track_lease(&rec);
            self.metrics.dispatched_sync.inc();
            self.metrics.schedule_to_start.observe(0.0);
            self.deliver(w, vec![rec], Written::NOTHING, ctx);
        }
        Ok(results)
    }

    /// Plans the lease of one ready task found at `pos` into `batch`; `None` when the index
    /// entry was stale (its deletion joins the batch).
    fn lease_entry(
        &mut self,
        pos: ReadyPos,
        entry: Entry,
        identity: &str,
        now: u64,
        batch: &mut LeaseBatch,
    ) -> Result<Option<TaskRecord>> {
        let read = match self.store().task(&self.key, &entry.task_id) {
            // A record that cannot be read (damaged on disk) must not hold up every poll
            // behind it: its entry leaves the ready index, the record stays for
            // `tasq store verify` to report.
            Err(Error::Internal(e)) => {
                log::error!(
                    "{}: task {} cannot be read ({e}); it is left out of dispatch",
                    self.key,
                    entry.task_id
                );
                None
            }
            other => other?,
        };
        let rec = match read {
            Some(rec)
                if rec.state == TaskState::Pending
                    && matches!(rec.queued, Some(Queued::Ready { .. })) =>
            {
                rec
            }
            Some(_) | None => {
                log::warn!(
                    "{}: dropping a stale ready entry for {}",
                    self.key,
                    entry.task_id
                );
                batch.txn.del_ready(&self.key, pos);
                batch.meta.ready = batch.meta.ready.saturating_sub(1);
                batch.dropped_stale = true;
                return Ok(None);
            }
        };
        let mut rec = rec;
        self.start_lease(&mut rec, identity, now, (pos.order, entry.ready_at));
        // Nothing fails from here on: the batch holds all of this lease or none of it.
        batch.txn.put_task(&self.key, &rec);
        batch.txn.del_ready(&self.key, pos);
        self.end_waiting(&rec, &mut batch.txn);
        batch.txn.put_inflight(&self.key, &rec.task_id);
        batch.meta.ready = batch.meta.ready.saturating_sub(1);
        batch.meta.in_flight += 1;
        batch.task_ids.insert(rec.task_id.clone());
        if let Some(lease) = &rec.lease {
            batch.leased.push(PlannedLease {
                pos,
                entry,
                at: now,
                lease_id: lease.id,
                expires_at: lease.expires_at(),
            });
        }
        Ok(Some(rec))
    }

    /// Plans the lease of up to `max` ready tasks that a poller with `identity` and task-type
    /// filter `types` may take (see [`eligible`]), in dispatch order, into `batch`, and puts
    /// their records in `out`; they are the poller's once [`QueueActor::commit_leases`] wrote
    /// the batch. On an error, `out` still holds every lease planned before it (they are in
    /// the batch, so the caller delivers them).
    fn lease_ready(
        &mut self,
        types: Option<&[String]>,
        max: usize,
        identity: &str,
        batch: &mut LeaseBatch,
        out: &mut Vec<TaskRecord>,
    ) -> Result<()> {
        let now = now_ms();
        let instant = Instant::now();
        let start = out.len();
        let max_in_flight = self.env.config.limits.max_in_flight_per_queue;
        while out.len() - start < max
            && batch.meta.ready > 0
            && self.leases.len() + batch.leased.len() < max_in_flight
        {
            if !self.throttle.has_token(instant) {
                self.throttled = true;
                self.metrics.rate_limited.inc();
                break;
            }
            // A task leased earlier in this batch is still ready in the store until the batch
            // is written: a scan past the window must not find it again.
            let taken = &batch.task_ids;
            let accepts =
                |e: &Entry| eligible(types, identity, e, now) && !taken.contains(&*e.task_id);
            let Some((pos, entry)) =
                self.backlog
                    .take(&self.env.store, &self.key, accepts, types)?
            else {
                break;
            };
            if let Some(rec) = self.lease_entry(pos, entry, identity, now, batch)? {
                self.throttle.try_take(instant);
                out.push(rec);
            }
        }
        Ok(())
    }

    /// Writes the leases planned in `batch`; then, only if the write succeeded, tracks them.
    /// On failure their entries go back into the window (their pollers get nothing).
    fn commit_leases(&mut self, batch: LeaseBatch) -> Result<()> {
        if batch.leased.is_empty() && !batch.dropped_stale {
            return Ok(());
        }
        if let Err(e) = self.commit(batch.txn, batch.meta) {
            for l in batch.leased {
                self.backlog.put_back(l.pos, l.entry);
            }
            return Err(e);
        }
        for l in batch.leased {
            self.fair.dispatched(l.pos.priority, l.pos.order);
            self.metrics.dispatched_backlog.inc();
            self.metrics
                .schedule_to_start
                .observe(l.at.saturating_sub(l.entry.ready_at) as f64 / 1000.0);
            self.leases
                .insert(l.lease_id, l.entry.task_id.into(), l.expires_at);
        }
        Ok(())
    }

    /// Gives leased tasks to a waiter once `write` is on disk; if it went away meanwhile, they
    /// go back at once.
    fn deliver(
        &mut self,
        w: Waiter,
        recs: Vec<TaskRecord>,
        write: Written,
        ctx: &mut Context<Self>,
    ) {
        match w.sink {
            Sink::Poll(tx) => {
                let delivery = self.delivery(recs, write, ctx);
                if let Err(undelivered) = tx.send(delivery) {
                    let leases = undelivered.disarm();
                    self.return_tasks(&leases);
                }
            }
            Sink::Socket(id) => self.send_to_socket(id, w, recs, write),
        }
    }

    /// Sends leased tasks on a socket once `written` is on disk, spending its credit, and
    /// queues it again at the back while credit is left.
    fn send_to_socket(
        &mut self,
        socket_id: u64,
        mut w: Waiter,
        recs: Vec<TaskRecord>,
        written: Written,
    ) {
        let now = now_ms();
        let mut unsent = Vec::new();
        let Some(socket) = self.sockets.get_mut(&socket_id) else {
            let leases: Vec<_> = recs.iter().filter_map(lease_of).collect();
            self.return_tasks(&leases);
            return;
        };
        for rec in &recs {
            let (Some(task), Some((task_id, lease_id))) = (rec.to_task(&self.key), lease_of(rec))
            else {
                continue;
            };
            if socket
                .tx
                .send(SocketEvent::Task(Box::new(task), written))
                .is_err()
            {
                unsent.push((task_id, lease_id));
                continue;
            }
            socket.credit = socket.credit.saturating_sub(1);
            socket.outstanding.insert(lease_id);
            self.lease_sockets.insert(lease_id, socket_id);
        }
        self.metrics.polls_task.inc();
        self.dispatch_rate
            .add(now, (recs.len() - unsent.len()) as u32);
        socket.waiting = socket.credit > 0 && unsent.is_empty();
        if socket.waiting {
            w.id = self.waiters.next_id();
            self.waiters.push(w);
        }
        // A socket that went away: its SocketClosed releases what it held.
        self.return_tasks(&unsent);
    }

    /// A lease ended (settled, expired, returned): a socket that held it gets its credit back.
    fn lease_ended(&mut self, lease_id: u64) {
        let Some(socket_id) = self.lease_sockets.remove(&lease_id) else {
            return;
        };
        if let Some(socket) = self.sockets.get_mut(&socket_id) {
            if socket.outstanding.remove(&lease_id) && !socket.draining {
                socket.credit = socket.credit.saturating_add(1);
            }
        }
        self.queue_socket(socket_id);
    }

    /// Puts a socket with credit back among the waiters.
    fn queue_socket(&mut self, socket_id: u64) {
        let Some(socket) = self.sockets.get_mut(&socket_id) else {
            return;
        };
        if socket.waiting || socket.credit == 0 {
            return;
        }
        socket.waiting = true;
        let w = Waiter {
            id: self.waiters.next_id(),
            identity: socket.identity.clone(),
            task_types: socket.task_types.clone(),
            max_tasks: 1,
            deadline: far_future(),
            sink: Sink::Socket(socket_id),
            slot: None,
        };
        self.waiters.push(w);
    }

    /// A socket closed: every task still out on it goes back to the queue at once, as a failed
    /// attempt (no backoff, but counted, so a task that kills its worker cannot loop forever).
    fn close_socket(&mut self, socket_id: u64) {
        let Some(socket) = self.sockets.remove(&socket_id) else {
            return;
        };
        self.waiters.remove_socket(socket_id);
        let now = now_ms();
        for lease_id in socket.outstanding {
            self.lease_sockets.remove(&lease_id);
            let Some(lease) = self.leases.get(lease_id) else {
                continue;
            };
            let failure = Failure {
                error: TaskError {
                    message: "the worker's connection closed before it settled the task".into(),
                    kind: Some("WorkerDisconnected".into()),
                },
                non_retryable: false,
                retry_after_ms: Some(0),
            };
            if let Err(e) = self.fail_lease(lease_id, &lease.task_id, failure, now) {
                log::error!("{}: releasing {} failed: {e}", self.key, lease.task_id);
            }
        }
    }

    /// Ends a running lease as a failed attempt (expiry, closed socket); false when the lease
    /// was not running any more.
    fn fail_lease(
        &mut self,
        lease_id: u64,
        task_id: &str,
        failure: Failure,
        now: u64,
    ) -> Result<bool> {
        let held = self.store().task(&self.key, task_id)?;
        let Some(mut rec) = held.filter(|r| r.held_by(lease_id)) else {
            self.leases.remove(lease_id);
            self.lease_ended(lease_id);
            return Ok(false);
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let after = self.plan_failure(&mut rec, &mut txn, &mut meta, failure, now);
        txn.put_task(&self.key, &rec);
        self.commit(txn, meta)?;
        self.leases.remove(lease_id);
        self.lease_ended(lease_id);
        self.apply_failure(&rec.task_id, after);
        Ok(true)
    }

    /// The poller's answer: `recs`, given once `write` is on disk.
    fn delivery(
        &mut self,
        recs: Vec<TaskRecord>,
        write: Written,
        ctx: &mut Context<Self>,
    ) -> Delivery {
        let now = now_ms();
        self.metrics.polls_task.inc();
        self.dispatch_rate.add(now, recs.len() as u32);
        let leases = recs.iter().filter_map(lease_of).collect();
        let tasks = recs.iter().filter_map(|r| r.to_task(&self.key)).collect();
        Delivery::new(tasks, leases, write, ctx.address())
    }

    /// The part of a poll before its leases are written: notes the poller, checks the limits,
    /// and plans the tasks it takes into `batch`. A read that fails after some tasks were
    /// planned is logged and those tasks are delivered; with nothing planned it is the answer.
    fn plan_poll(&mut self, msg: &Poll, batch: &mut LeaseBatch) -> Result<Vec<TaskRecord>> {
        let now = now_ms();
        self.seen.saw(
            &msg.identity,
            now,
            msg.task_types.clone(),
            msg.build_id.clone(),
            msg.max_tasks_per_second,
        );
        if !self.meta_stored {
            // Listed from now on, as a queue with pollers.
            self.commit(Txn::default(), self.meta)?;
        }
        if self.shutting_down {
            return Ok(Vec::new());
        }
        if let Some(rate) = msg.max_tasks_per_second {
            // The latest poll wins; an API setting still overrides it.
            self.worker_limit = Some(RateLimit {
                max_tasks_per_second: rate,
                burst: RateLimit::default_burst(rate),
            });
            self.apply_limit();
        }
        let max_in_flight = self.env.config.limits.max_in_flight_per_queue;
        if self.leases.len() + batch.leased.len() >= max_in_flight {
            return Err(Error::exhausted(format!(
                "{} already has {max_in_flight} tasks in flight (limits.max_in_flight_per_queue)",
                self.key
            )));
        }
        let mut recs = Vec::new();
        match self.lease_ready(
            msg.task_types.as_deref(),
            msg.max_tasks,
            &msg.identity,
            batch,
            &mut recs,
        ) {
            Err(e) if recs.is_empty() => Err(e),
            Err(e) => {
                log::error!("{}: poll stopped early: {e}", self.key);
                Ok(recs)
            }
            Ok(()) => Ok(recs),
        }
    }

    /// The answer to a poll once its planned leases (`recs`) are written: them, or a parked
    /// waiter when there are none and the poll waits, or nothing.
    fn poll_outcome(
        &mut self,
        msg: &Poll,
        recs: Vec<TaskRecord>,
        ctx: &mut Context<Self>,
    ) -> Result<PollOutcome> {
        if !recs.is_empty() {
            // The leases were written just now: the poller has them once that is on disk.
            let write = self.store().latest_write();
            return Ok(PollOutcome::Now(self.delivery(recs, write, ctx)));
        }
        if self.shutting_down {
            return Ok(PollOutcome::Now(Delivery::empty()));
        }
        let Some(deadline) = msg.park_until else {
            self.metrics.polls_timeout.inc();
            return Ok(PollOutcome::Now(Delivery::empty()));
        };
        let limits = &self.env.config.limits;
        if self.waiters.polls() >= limits.max_parked_polls_per_queue {
            return Err(Error::exhausted(format!(
                "{} already has {} parked polls (limits.max_parked_polls_per_queue)",
                self.key, limits.max_parked_polls_per_queue
            )));
        }
        let slot = Slot::take(&self.env.parked, limits.max_parked_polls).ok_or_else(|| {
            Error::exhausted(format!(
                "the server already has {} parked polls (limits.max_parked_polls)",
                limits.max_parked_polls
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        let id = self.waiters.next_id();
        self.waiters.push(Waiter {
            id,
            identity: msg.identity.clone(),
            task_types: msg.task_types.clone(),
            max_tasks: msg.max_tasks,
            deadline,
            sink: Sink::Poll(tx),
            slot: Some(slot),
        });
        Ok(PollOutcome::Parked {
            owner: ctx.address(),
            waiter_id: id,
            rx,
        })
    }

    /// Serves parked polls from the backlog, oldest waiter first, in rounds: each round offers
    /// every waiter its share in order (a poll its `max_tasks`, once; a socket one task a
    /// round while its credit lasts, so sockets and polls take turns as if each socket went
    /// back to the end of the line after every task). All rounds are planned into one write,
    /// then every waiter served gets its tasks.
    fn dispatch_waiting(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.waiters.prune(Instant::now());
        if self.waiters.is_empty() || self.meta.ready == 0 {
            return;
        }
        let mut shares: Vec<Share> = self
            .waiters
            .iter()
            .map(|w| Share {
                waiter: w.id,
                task_types: w.task_types.clone(),
                identity: w.identity.clone(),
                per_round: w.max_tasks,
                left: match w.sink {
                    Sink::Poll(_) => w.max_tasks,
                    Sink::Socket(id) => self.sockets.get(&id).map_or(0, |s| s.credit as usize),
                },
                recs: Vec::new(),
            })
            .collect();
        let mut batch = LeaseBatch::new(self.meta);
        'rounds: loop {
            let mut progressed = false;
            for share in shares.iter_mut().filter(|s| s.left > 0) {
                if batch.meta.ready == 0 || self.throttled {
                    break 'rounds;
                }
                let before = share.recs.len();
                let want = share.per_round.min(share.left);
                let planned = self.lease_ready(
                    share.task_types.as_deref(),
                    want,
                    &share.identity,
                    &mut batch,
                    &mut share.recs,
                );
                // What was planned before an error is in the batch: it is delivered too.
                if let Err(e) = planned {
                    log::error!("{}: dispatch failed: {e}", self.key);
                    break 'rounds;
                }
                let got = share.recs.len() - before;
                // Given less than it asked for, a waiter has nothing eligible left this time
                // (and a poll, asking for all of its `max_tasks` at once, is served).
                share.left = if got < want { 0 } else { share.left - got };
                progressed |= got > 0;
            }
            if !progressed {
                break;
            }
        }
        if let Err(e) = self.commit_leases(batch) {
            log::error!("{}: dispatch failed: {e}", self.key);
            return;
        }
        let written = self.store().latest_write();
        for share in shares.into_iter().filter(|s| !s.recs.is_empty()) {
            match self.waiters.remove(share.waiter) {
                // The leases were written just now: they go out once that is on disk.
                Some(w) => self.deliver(w, share.recs, written, ctx),
                None => {
                    let leases: Vec<_> = share.recs.iter().filter_map(lease_of).collect();
                    self.return_tasks(&leases);
                }
            }
        }
    }

    /// Puts tasks that a poller never received back where they were, attempt not counted.
    fn return_tasks(&mut self, leases: &[(String, u64)]) {
        for (task_id, lease_id) in leases {
            if let Err(e) = self.return_task(task_id, *lease_id) {
                log::error!("{}: returning {task_id} failed: {e}", self.key);
            }
        }
    }

    fn return_task(&mut self, task_id: &str, lease_id: u64) -> Result<()> {
        let held = self.store().task(&self.key, task_id)?;
        let Some(mut rec) = held.filter(|r| r.held_by(lease_id)) else {
            return Ok(());
        };
        rec.attempt = rec.attempt.saturating_sub(1);
        let (pos, entry) = requeue_leased(&mut rec);
        let mut txn = Txn::default();
        let mut meta = self.meta;
        txn.put_task(&self.key, &rec);
        txn.del_inflight(&self.key, task_id);
        txn.put_ready(&self.key, pos, &entry);
        meta.in_flight = meta.in_flight.saturating_sub(1);
        meta.ready += 1;
        self.commit(txn, meta)?;
        self.leases.remove(lease_id);
        self.lease_ended(lease_id);
        self.backlog.insert(pos, entry);
        Ok(())
    }

    /// Plans what a failed attempt does to `rec`: retry (ready or delayed) or dead letter.
    fn plan_failure(
        &mut self,
        rec: &mut TaskRecord,
        txn: &mut Txn,
        meta: &mut QueueMeta,
        failure: Failure,
        now: u64,
    ) -> AfterFailure {
        let Failure {
            error,
            non_retryable,
            retry_after_ms,
        } = failure;
        rec.last_error = Some(error);
        rec.lease = None;
        rec.updated_at = now;
        txn.del_inflight(&self.key, &rec.task_id);
        meta.in_flight = meta.in_flight.saturating_sub(1);
        if rec.cancel_requested {
            rec.state = TaskState::Cancelled;
            txn.put_expiry(self.retention_end(now), &self.key, &rec.task_id);
            return AfterFailure::Cancelled;
        }
        if non_retryable || rec.retry.exhausted(rec.attempt) {
            rec.state = TaskState::Failed;
            txn.put_dead(&self.key, now, rec.seq, &rec.task_id);
            meta.dead += 1;
            return AfterFailure::Dead;
        }
        rec.state = TaskState::Pending;
        let delay = retry_after_ms.unwrap_or_else(|| rec.retry.backoff_ms(rec.attempt));
        if delay == 0 {
            let (pos, entry) = self.enqueue_ready(rec, txn, meta, now);
            AfterFailure::Ready(pos, entry)
        } else {
            let due = now.saturating_add(delay);
            rec.queued = Some(Queued::Delayed { due });
            txn.put_delayed(&self.key, due, rec.seq, &entry_of(rec, due));
            meta.delayed += 1;
            AfterFailure::Delayed(due)
        }
    }

    fn apply_failure(&mut self, task_id: &str, after: AfterFailure) {
        match after {
            AfterFailure::Cancelled => self.notify(task_id),
            AfterFailure::Dead => {
                self.metrics.failed_dead.inc();
                self.notify(task_id);
            }
            AfterFailure::Ready(pos, entry) => {
                self.metrics.failed_retry.inc();
                self.backlog.insert(pos, entry);
            }
            AfterFailure::Delayed(due) => {
                self.metrics.failed_retry.inc();
                self.next_delayed = Some(self.next_delayed.map_or(due, |d| d.min(due)));
            }
        }
    }

    /// Settles a batch of leases with one write (one `apply_batch`, one group commit for the
    /// caller to wait on); each item answers on its own, in order. A task settled twice in one
    /// batch starts a second write, so every settle reads the record the one before it wrote.
    fn settle_all(&mut self, msgs: &[&Settle]) -> Vec<Result<Settlement>> {
        let now = now_ms();
        let mut answers: Vec<Option<Result<Settlement>>> = Vec::with_capacity(msgs.len());
        let mut batch = SettleBatchWrite::new(self.meta);
        for msg in msgs {
            if batch.task_ids.contains(msg.task_id.as_str()) {
                self.finish_settles(batch, &mut answers);
                batch = SettleBatchWrite::new(self.meta);
            }
            let answer = match self.plan_settle(msg, &mut batch, now) {
                Ok(Planned::Answered(settlement)) => Some(Ok(settlement)),
                Ok(Planned::Write(planned)) => {
                    batch.task_ids.insert(msg.task_id.clone());
                    batch.planned.push((answers.len(), planned));
                    None
                }
                Err(e) => Some(Err(e)),
            };
            answers.push(answer);
        }
        self.finish_settles(batch, &mut answers);
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::lease_lost())))
            .collect()
    }

    /// Plans one settle's writes into `batch`, or answers it at once when it needs none.
    fn plan_settle(
        &mut self,
        msg: &Settle,
        batch: &mut SettleBatchWrite,
        now: u64,
    ) -> Result<Planned> {
        if let SettleOp::Fail {
            retry_after_ms: Some(ms),
            ..
        } = msg.op
        {
            crate::model::check_duration("retry_after_ms", ms)?;
        }
        let Some(mut rec) = self.store().task(&self.key, &msg.task_id)? else {
            return Err(Error::lease_lost());
        };
        let kind = match msg.op {
            SettleOp::Complete { .. } => SettleKind::Complete,
            SettleOp::Fail { .. } => SettleKind::Fail,
        };
        if !rec.held_by(msg.lease_id) {
            // A repeat of the settle that already succeeded answers the same.
            return match &rec.settled {
                Some(s) if s.lease_id == msg.lease_id && s.kind == kind => {
                    Ok(Planned::Answered(Settlement {
                        task_id: rec.task_id.clone(),
                        state: s.state,
                        next_attempt_at: s.next_attempt_at.map(rfc3339),
                    }))
                }
                _ => Err(Error::lease_lost()),
            };
        }
        let dispatched_at = rec.lease.as_ref().map_or(now, |l| l.dispatched_at);
        let txn = &mut batch.txn;
        let meta = &mut batch.meta;
        let after = match &msg.op {
            SettleOp::Complete { result } => {
                rec.state = TaskState::Completed;
                rec.result = Some(result.clone());
                rec.lease = None;
                rec.updated_at = now;
                txn.del_inflight(&self.key, &rec.task_id);
                meta.in_flight = meta.in_flight.saturating_sub(1);
                txn.put_expiry(self.retention_end(now), &self.key, &rec.task_id);
                None
            }
            SettleOp::Fail {
                error,
                non_retryable,
                retry_after_ms,
            } => Some(self.plan_failure(
                &mut rec,
                txn,
                meta,
                Failure {
                    error: error.clone(),
                    non_retryable: *non_retryable,
                    retry_after_ms: *retry_after_ms,
                },
                now,
            )),
        };
        let next_attempt_at = match &after {
            Some(AfterFailure::Delayed(due)) => Some(*due),
            Some(AfterFailure::Ready(..)) => Some(now),
            _ => None,
        };
        rec.settled = Some(Settled {
            lease_id: msg.lease_id,
            kind,
            state: rec.state,
            next_attempt_at,
        });
        txn.put_task(&self.key, &rec);
        Ok(Planned::Write(PlannedSettle {
            lease_id: msg.lease_id,
            ran_ms: now.saturating_sub(dispatched_at),
            after,
            answer: Settlement {
                task_id: rec.task_id,
                state: rec.state,
                next_attempt_at: next_attempt_at.map(rfc3339),
            },
        }))
    }

    /// Writes a planned batch; then, only if the write succeeded, changes memory (leases,
    /// credit, backlog) and fills in each planned settle's answer.
    fn finish_settles(
        &mut self,
        batch: SettleBatchWrite,
        answers: &mut [Option<Result<Settlement>>],
    ) {
        if batch.planned.is_empty() {
            return;
        }
        if let Err(e) = self.commit(batch.txn, batch.meta) {
            for (i, _) in batch.planned {
                answers[i] = Some(Err(e.clone()));
            }
            return;
        }
        for (i, p) in batch.planned {
            self.leases.remove(p.lease_id);
            self.lease_ended(p.lease_id);
            self.metrics.task_run.observe(p.ran_ms as f64 / 1000.0);
            match p.after {
                None => {
                    self.metrics.completed.inc();
                    self.notify(&p.answer.task_id);
                }
                Some(after) => self.apply_failure(&p.answer.task_id, after),
            }
            answers[i] = Some(Ok(p.answer));
        }
    }

    fn retention_end(&self, now: u64) -> u64 {
        now.saturating_add(self.env.config.completed_retention.as_millis() as u64)
    }

    fn heartbeat(&mut self, msg: &Heartbeat) -> Result<HeartbeatAnswer> {
        let now = now_ms();
        let Some(mut rec) = self.store().task(&self.key, &msg.task_id)? else {
            return Err(Error::lease_lost());
        };
        let hb_timeout = rec.heartbeat_timeout_ms;
        let held = rec.held_by(msg.lease_id);
        let Some(lease) = rec.lease.as_mut().filter(|_| held) else {
            return Err(Error::lease_lost());
        };
        if now >= lease.expires_at() {
            return Err(Error::lease_lost());
        }
        if let Some(h) = hb_timeout {
            lease.heartbeat_deadline = Some(now.saturating_add(h));
        }
        let expires_at = lease.expires_at();
        if let Some(details) = &msg.details {
            rec.heartbeat_details = Some(details.clone());
        }
        let mut txn = Txn::default();
        txn.put_task(&self.key, &rec);
        self.commit(txn, self.meta)?;
        self.leases.extend(msg.lease_id, expires_at);
        Ok(HeartbeatAnswer {
            lease_expires_at: rfc3339(expires_at),
            cancel_requested: rec.cancel_requested,
        })
    }

    /// Takes a pending task out of the ready or delayed index; returns its ready position, so
    /// the caller can drop it from the window once the change is committed.
    fn dequeue(
        &self,
        rec: &mut TaskRecord,
        txn: &mut Txn,
        meta: &mut QueueMeta,
    ) -> Option<ReadyPos> {
        match rec.queued.take()? {
            Queued::Ready { order } => {
                let pos = ReadyPos {
                    priority: rec.priority,
                    order,
                    seq: rec.seq,
                };
                txn.del_ready(&self.key, pos);
                meta.ready = meta.ready.saturating_sub(1);
                Some(pos)
            }
            Queued::Delayed { due } => {
                txn.del_delayed(&self.key, due, rec.seq);
                meta.delayed = meta.delayed.saturating_sub(1);
                None
            }
        }
    }

    fn cancel(&mut self, task_id: &str) -> Result<TaskRecord> {
        let now = now_ms();
        let Some(mut rec) = self.store().task(&self.key, task_id)? else {
            return Err(Error::NotFound(format!(
                "no task {task_id:?} in {}",
                self.key
            )));
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        match rec.state {
            TaskState::Pending => {
                let removed = self.dequeue(&mut rec, &mut txn, &mut meta);
                rec.state = TaskState::Cancelled;
                rec.updated_at = now;
                txn.put_expiry(self.retention_end(now), &self.key, task_id);
                txn.put_task(&self.key, &rec);
                self.commit(txn, meta)?;
                if let Some(pos) = removed {
                    self.backlog.remove(&pos);
                }
                self.notify(task_id);
            }
            TaskState::Running if !rec.cancel_requested => {
                rec.cancel_requested = true;
                rec.updated_at = now;
                txn.put_task(&self.key, &rec);
                self.commit(txn, meta)?;
            }
            _ => {}
        }
        Ok(rec)
    }

    fn notify(&mut self, task_id: &str) {
        if let Some(watchers) = self.watchers.remove(task_id) {
            for w in watchers {
                let _ = w.send(());
            }
        }
    }

    /// Moves delayed tasks that are due into the ready index.
    fn promote_due(&mut self, now: u64) -> Result<()> {
        let (due, next) = self.env.store.due_delayed(&self.key, now, PROMOTE_BATCH)?;
        self.next_delayed = next;
        if due.is_empty() {
            return Ok(());
        }
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut promoted = Vec::with_capacity(due.len());
        for (at, seq, entry) in due {
            txn.del_delayed(&self.key, at, seq);
            meta.delayed = meta.delayed.saturating_sub(1);
            let Some(mut rec) = self.store().task(&self.key, &entry.task_id)? else {
                continue;
            };
            if rec.state != TaskState::Pending || rec.queued != Some(Queued::Delayed { due: at }) {
                continue;
            }
            promoted.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, at));
            txn.put_task(&self.key, &rec);
        }
        self.commit(txn, meta)?;
        for (pos, entry) in promoted {
            self.backlog.insert(pos, entry);
        }
        Ok(())
    }

    /// Ends leases whose deadline passed: each is a failed attempt, retried per policy.
    fn expire_leases(&mut self, now: u64) -> Result<()> {
        for lease_id in self.leases.expired(now) {
            let Some(lease) = self.leases.get(lease_id) else {
                continue;
            };
            let Some(rec) = self.store().task(&self.key, &lease.task_id)? else {
                self.leases.remove(lease_id);
                continue;
            };
            let by_heartbeat = rec
                .lease
                .as_ref()
                .filter(|l| l.id == lease_id)
                .is_some_and(|l| l.heartbeat_deadline.is_some_and(|h| h < l.close_deadline));
            let (message, kind) = if by_heartbeat {
                (
                    "heartbeat timeout: no heartbeat in time",
                    "HeartbeatTimeout",
                )
            } else {
                (
                    "start-to-close timeout: the lease ran out",
                    "StartToCloseTimeout",
                )
            };
            let failure = Failure {
                error: TaskError {
                    message: message.into(),
                    kind: Some(kind.into()),
                },
                non_retryable: false,
                retry_after_ms: None,
            };
            if self.fail_lease(lease_id, &lease.task_id, failure, now)? {
                if by_heartbeat {
                    self.metrics.expired_heartbeat.inc();
                } else {
                    self.metrics.expired_start_to_close.inc();
                }
            }
        }
        Ok(())
    }

    fn is_idle(&self, now: u64) -> bool {
        let idle_ms = self.env.config.queue_idle_timeout.as_millis() as u64;
        self.waiters.is_empty()
            && self.sockets.is_empty()
            && self.leases.is_empty()
            && self.meta.ready == 0
            && self.watchers.is_empty()
            && self
                .next_delayed
                .is_none_or(|d| d > now.saturating_add(idle_ms))
    }

    fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = now_ms();
        if let Err(e) = self.expire_leases(now) {
            log::error!("{}: expiring leases failed: {e}", self.key);
        }
        if self.next_delayed.is_some_and(|d| d <= now) {
            if let Err(e) = self.promote_due(now) {
                log::error!("{}: promoting delayed tasks failed: {e}", self.key);
            }
        }
        self.throttled = false;
        self.dispatch_waiting(ctx);
        self.watchers.retain(|_, w| {
            w.retain(|s| !s.is_closed());
            !w.is_empty()
        });
        let idle_ms = self.env.config.queue_idle_timeout.as_millis() as u64;
        if self.is_idle(now) && self.idle_since.is_some_and(|s| now >= s + idle_ms) {
            log::debug!("{}: idle, stopping", self.key);
            ctx.stop();
            return;
        }
        self.after_change(ctx);
    }

    /// Reports gauges and arms the timer for the next thing due.
    fn after_change(&mut self, ctx: &mut Context<Self>) {
        self.pace(ctx);
        let now = now_ms();
        self.metrics.report(GaugeValues {
            pollers: self.waiters.len() as i64,
            backlog: self.meta.ready as i64,
            backlog_age_seconds: self
                .backlog
                .oldest_ready_at()
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
            in_flight: self.leases.len() as i64,
            dead: self.meta.dead as i64,
            mismatch: self.seen.mismatch(self.backlog.types()) as i64,
        });
        let idle_ms = self.env.config.queue_idle_timeout.as_millis() as u64;
        let idle_at = if self.is_idle(now) {
            let since = *self.idle_since.get_or_insert(now);
            Some(since + idle_ms)
        } else {
            self.idle_since = None;
            None
        };
        // Parked pollers wait for a token, or for a routed task's fallback.
        let serving = !self.waiters.is_empty() && self.meta.ready > 0;
        let token_at = if serving && self.throttled {
            self.throttle
                .next_token_in(Instant::now())
                .map(|d| now + d.as_millis() as u64 + 1)
        } else {
            None
        };
        let fallback_at = if serving {
            self.backlog.next_fallback(now)
        } else {
            None
        };
        let next = [
            self.leases.next_deadline(),
            self.next_delayed,
            idle_at,
            token_at,
            fallback_at,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = next {
            self.arm(at, ctx);
        }
    }

    fn arm(&mut self, at: u64, ctx: &mut Context<Self>) {
        if let Some((armed, handle)) = self.timer {
            if armed <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(at.saturating_sub(now_ms()));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.on_timer(ctx);
        });
        self.timer = Some((at, handle));
    }

    fn rate_limit_view(&self) -> RateLimitView {
        match self.throttle.limit() {
            Some((l, source)) => RateLimitView {
                max_tasks_per_second: Some(l.max_tasks_per_second),
                burst: Some(l.burst),
                source: source.as_str(),
            },
            None => RateLimitView {
                max_tasks_per_second: None,
                burst: None,
                source: "none",
            },
        }
    }

    fn set_config(&mut self, limit: Option<RateLimit>) -> Result<RateLimitView> {
        let meta = QueueMeta {
            rate_limit: limit,
            ..self.meta
        };
        self.commit(Txn::default(), meta)?;
        self.apply_limit();
        Ok(match limit {
            Some(l) => RateLimitView {
                max_tasks_per_second: Some(l.max_tasks_per_second),
                burst: Some(l.burst),
                source: Source::Api.as_str(),
            },
            None => RateLimitView {
                max_tasks_per_second: None,
                burst: None,
                source: "none",
            },
        })
    }

    /// Puts dead letters back as pending with attempts reset; `None` = all of them.
    fn redrive(&mut self, task_ids: Option<&[String]>) -> Result<usize> {
        let now = now_ms();
        let records: Vec<TaskRecord> = match task_ids {
            Some(ids) => {
                let mut recs = Vec::with_capacity(ids.len());
                let mut missing = Vec::new();
                for id in ids {
                    match self.store().task(&self.key, id)? {
                        Some(r) if r.state.is_dead_letter() => recs.push(r),
                        _ => missing.push(id.as_str()),
                    }
                }
                if !missing.is_empty() {
                    return Err(Error::NotFound(format!(
                        "not dead letters of {}: {}",
                        self.key,
                        missing.join(", ")
                    )));
                }
                recs
            }
            None => {
                let mut recs = Vec::new();
                let mut before = None;
                loop {
                    let (ids, next) =
                        self.store()
                            .dead_letters(&self.key, before.as_deref(), 1000)?;
                    for id in ids {
                        if let Some(r) = self.store().task(&self.key, &id)? {
                            if r.state.is_dead_letter() {
                                recs.push(r);
                            }
                        }
                    }
                    match next {
                        Some(n) => before = Some(n),
                        None => break,
                    }
                }
                recs
            }
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut ready = Vec::with_capacity(records.len());
        let mut seen = HashSet::new();
        for mut rec in records {
            if !seen.insert(rec.task_id.clone()) {
                continue;
            }
            txn.del_dead(&self.key, rec.updated_at, rec.seq);
            meta.dead = meta.dead.saturating_sub(1);
            rec.attempt = 0;
            rec.settled = None;
            rec.updated_at = now;
            // The schedule-to-start wait was used up; a redriven task waits as long as it must.
            rec.schedule_to_start_timeout_ms = None;
            ready.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, now));
            txn.put_task(&self.key, &rec);
        }
        self.commit(txn, meta)?;
        let n = ready.len();
        for (pos, entry) in ready {
            self.backlog.insert(pos, entry);
        }
        Ok(n)
    }

    /// Tasks whose schedule-to-start deadline passed before a first dispatch become
    /// `timed_out` dead letters.
    fn expire_waiting(&mut self, task_ids: &[String]) -> Result<()> {
        let now = now_ms();
        for task_id in task_ids {
            let Some(mut rec) = self.store().task(&self.key, task_id)? else {
                continue;
            };
            let Some(timeout) = rec.schedule_to_start_timeout_ms else {
                continue;
            };
            let deadline = rec.added_at.saturating_add(timeout);
            let mut txn = Txn::default();
            let mut meta = self.meta;
            txn.del_waiting(deadline, &self.key, task_id);
            let waiting = rec.state == TaskState::Pending && rec.attempt == 0 && deadline <= now;
            let mut removed = None;
            if waiting {
                removed = self.dequeue(&mut rec, &mut txn, &mut meta);
                rec.state = TaskState::TimedOut;
                rec.updated_at = now;
                rec.last_error = Some(TaskError {
                    message: format!(
                        "schedule-to-start timeout: not dispatched within {timeout} ms"
                    ),
                    kind: Some("ScheduleToStartTimeout".into()),
                });
                txn.put_dead(&self.key, now, rec.seq, task_id);
                meta.dead += 1;
                txn.put_task(&self.key, &rec);
            }
            self.commit(txn, meta)?;
            if waiting {
                if let Some(pos) = removed {
                    self.backlog.remove(&pos);
                }
                self.metrics.expired_schedule_to_start.inc();
                self.notify(task_id);
            }
        }
        Ok(())
    }

    fn stats(&mut self) -> Stats {
        let now = now_ms();
        for socket in self.sockets.values() {
            // An open socket is a live poller, however long ago it connected.
            self.seen.saw(
                &socket.identity,
                now,
                socket.task_types.clone(),
                socket.build_id.clone(),
                None,
            );
        }
        self.seen.prune(now);
        Stats {
            backlog_count: self.meta.ready,
            backlog_age_ms: self
                .backlog
                .oldest_ready_at()
                .map_or(0, |t| now.saturating_sub(t)),
            delayed_count: self.meta.delayed,
            in_flight_count: self.leases.len() as u64,
            dead_letter_count: self.meta.dead,
            add_rate: self.add_rate.per_second(now),
            dispatch_rate: self.dispatch_rate.per_second(now),
            pollers: self.seen.list(),
            rate_limit: self.rate_limit_view(),
            registration_mismatch: self.seen.mismatch(self.backlog.types()),
            parked_polls: self.waiters.len(),
        }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
        self.env.metrics.loaded_task_queues.inc();
        if let Err(e) = self.load() {
            log::error!("{}: loading from the store failed: {e}", self.key);
        }
        self.after_change(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.env.metrics.loaded_task_queues.dec();
        self.on_stop.do_send(QueueStopped {
            key: self.key.clone(),
            generation: self.generation,
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

impl Handler<TakeAdds> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakeAdds(inboxes): TakeAdds, ctx: &mut Self::Context) {
        let pending = inboxes.adds.take();
        if pending.is_empty() {
            return;
        }
        let requests: Vec<&[crate::model::NewTask]> =
            pending.iter().map(|(tasks, _)| tasks.as_slice()).collect();
        let result = self.add(&requests, ctx);
        self.after_change(ctx);
        match result {
            Ok(results) => {
                for ((_, reply), r) in pending.into_iter().zip(results) {
                    let _ = reply.send(Ok(Durable::applied(r, self.store())));
                }
            }
            Err(e) => {
                for (_, reply) in pending {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Handler<TakePolls> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakePolls(inboxes): TakePolls, ctx: &mut Self::Context) {
        let pending = inboxes.polls.take();
        if pending.is_empty() {
            return;
        }
        // Every poll's leases are planned into one batch and written once; only then is any
        // poll answered or parked.
        let mut batch = LeaseBatch::new(self.meta);
        let planned: Vec<_> = pending
            .into_iter()
            .map(|(poll, reply)| (self.plan_poll(&poll, &mut batch), poll, reply))
            .collect();
        let written = self.commit_leases(batch);
        for (plan, poll, reply) in planned {
            let answer = match (plan, &written) {
                (Err(e), _) => Err(e),
                (Ok(recs), Err(e)) if !recs.is_empty() => Err(e.clone()),
                (Ok(recs), _) => self.poll_outcome(&poll, recs, ctx),
            };
            let _ = reply.send(answer);
        }
        self.after_change(ctx);
    }
}

impl Handler<ForgetWaiter> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ForgetWaiter, ctx: &mut Self::Context) {
        self.waiters.remove(msg.waiter_id);
        match msg.reason {
            GaveUp::Timeout => self.metrics.polls_timeout.inc(),
            GaveUp::Cancelled => self.metrics.polls_cancelled.inc(),
        }
        self.after_change(ctx);
    }
}

impl Handler<ReturnTasks> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnTasks, ctx: &mut Self::Context) {
        self.return_tasks(&msg.leases);
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<TakeSettles> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakeSettles(inboxes): TakeSettles, ctx: &mut Self::Context) {
        let pending = inboxes.settles.take();
        if pending.is_empty() {
            return;
        }
        let all: Vec<&Settle> = pending.iter().flat_map(|(items, _)| items.iter()).collect();
        let mut answers = self.settle_all(&all).into_iter();
        for (items, reply) in pending {
            let mine: Vec<_> = answers.by_ref().take(items.len()).collect();
            let _ = reply.send(Durable::applied(mine, self.store()));
        }
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<Heartbeat> for QueueActor {
    type Result = Result<HeartbeatAnswer>;

    fn handle(&mut self, msg: Heartbeat, ctx: &mut Self::Context) -> Self::Result {
        let result = self.heartbeat(&msg);
        self.after_change(ctx);
        result
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = Result<Durable<TaskRecord>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        let result = self.cancel(&msg.task_id);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, self.store()))
    }
}

impl Handler<WatchTask> for QueueActor {
    type Result = Result<Watch>;

    fn handle(&mut self, msg: WatchTask, ctx: &mut Self::Context) -> Self::Result {
        let rec = self.store().task(&self.key, &msg.task_id)?;
        let watch = match rec {
            Some(r) if !r.state.is_terminal() => {
                let (tx, rx) = oneshot::channel();
                self.watchers.entry(msg.task_id).or_default().push(tx);
                Watch::Later(rx)
            }
            other => Watch::Now(other.map(Box::new)),
        };
        self.after_change(ctx);
        Ok(watch)
    }
}

impl Handler<Describe> for QueueActor {
    type Result = Result<Stats>;

    fn handle(&mut self, _msg: Describe, ctx: &mut Self::Context) -> Self::Result {
        let stats = self.stats();
        self.after_change(ctx);
        Ok(stats)
    }
}

impl Handler<Shutdown> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        self.shutting_down = true;
        for w in self.waiters.drain() {
            if let Sink::Poll(tx) = w.sink {
                self.metrics.polls_timeout.inc();
                let _ = tx.send(Delivery::empty());
            }
        }
        for socket in self.sockets.values() {
            let _ = socket.tx.send(SocketEvent::Close);
        }
        self.after_change(ctx);
    }
}

impl Handler<SetConfig> for QueueActor {
    type Result = Result<Durable<RateLimitView>>;

    fn handle(&mut self, msg: SetConfig, ctx: &mut Self::Context) -> Self::Result {
        let result = self.set_config(msg.rate_limit);
        self.throttled = false;
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, self.store()))
    }
}

impl Handler<Redrive> for QueueActor {
    type Result = Result<Durable<usize>>;

    fn handle(&mut self, msg: Redrive, ctx: &mut Self::Context) -> Self::Result {
        let result = self.redrive(msg.task_ids.as_deref());
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, self.store()))
    }
}

impl Handler<ExpireWaiting> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireWaiting, ctx: &mut Self::Context) {
        if let Err(e) = self.expire_waiting(&msg.task_ids) {
            log::error!("{}: schedule-to-start expiry failed: {e}", self.key);
        }
        self.after_change(ctx);
    }
}

impl Handler<OpenSocket> for QueueActor {
    type Result = Result<(Addr<QueueActor>, u64)>;

    fn handle(&mut self, msg: OpenSocket, ctx: &mut Self::Context) -> Self::Result {
        let now = now_ms();
        if self.shutting_down {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        self.seen.saw(
            &msg.identity,
            now,
            msg.task_types.clone(),
            msg.build_id.clone(),
            None,
        );
        if !self.meta_stored {
            self.commit(Txn::default(), self.meta)?;
        }
        self.next_socket += 1;
        let id = self.next_socket;
        self.sockets.insert(
            id,
            Socket {
                identity: msg.identity,
                task_types: msg.task_types,
                build_id: msg.build_id,
                credit: 0,
                outstanding: HashSet::new(),
                waiting: false,
                draining: false,
                tx: msg.tx,
            },
        );
        self.after_change(ctx);
        Ok((ctx.address(), id))
    }
}

impl Handler<AddCredit> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: AddCredit, ctx: &mut Self::Context) {
        if let Some(socket) = self.sockets.get_mut(&msg.socket_id) {
            socket.draining = false;
            socket.credit = socket.credit.saturating_add(msg.n);
            self.queue_socket(msg.socket_id);
            self.dispatch_waiting(ctx);
        }
        self.after_change(ctx);
    }
}

impl Handler<SocketClosed> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: SocketClosed, ctx: &mut Self::Context) {
        self.close_socket(msg.socket_id);
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<DrainSocket> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: DrainSocket, ctx: &mut Self::Context) {
        if let Some(socket) = self.sockets.get_mut(&msg.socket_id) {
            socket.draining = true;
            socket.credit = 0;
            socket.waiting = false;
            let _ = socket.tx.send(SocketEvent::Drained);
            self.waiters.remove_socket(msg.socket_id);
        }
        self.after_change(ctx);
    }
}
