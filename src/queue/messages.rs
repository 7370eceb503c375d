//! Every message a queue actor handles, each a small documented struct.
//!
//! Messages sent through [`crate::registry::Queues::call`] are `Clone`: if the actor stopped
//! (idle) before reading one, it is sent again to the actor that replaces it.

use std::sync::Arc;
use std::time::Instant;

use actix::Message;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::error::Result;
use crate::model::{NewTask, QueueKey, TaskError, TaskRecord, TaskState};
use crate::storage::{Store, WriteSeq};

use super::pollers::{Delivery, PollerInfo};

/// The answer to a message whose writes the queue actor has applied but that may not be on
/// disk yet. The value only comes out through [`Durable::wait`], once the group commit covers
/// it, so no caller can answer a client before its write is durable. The wait runs on the
/// caller's thread (an HTTP worker, a socket, an embedder), not on the queue actor's: the
/// flusher wakes the caller directly, one thread hand-off fewer per write than a reply
/// future spawned on the actor's arbiter, and the actor is free meanwhile.
#[must_use = "the value is only given out once durable: call wait()"]
pub struct Durable<T> {
    value: T,
    /// The queue whose actor made it.
    queue: QueueKey,
    /// The latest write when the value was made: it and every write before it.
    write: WriteSeq,
}

impl<T> Durable<T> {
    /// Wraps a value whose writes for `queue` were applied to `store` just now.
    pub(crate) fn applied(value: T, queue: &QueueKey, store: &dyn Store) -> Self {
        Durable {
            value,
            queue: queue.clone(),
            write: store.latest_write(),
        }
    }

    /// The value, before its writes are on disk: to decide what to do next while they are
    /// written, never to answer with.
    pub fn peek(&self) -> &T {
        &self.value
    }

    /// Resolves with the value once its writes are on disk (per the durability setting): at
    /// once if a flush covered them meanwhile.
    pub async fn wait(self, store: &dyn Store) -> Result<T> {
        store.durable_for(&self.queue, self.write).await?;
        Ok(self.value)
    }
}

/// Requests waiting for their queue actor, to be handled together: see
/// [`crate::registry::Queues::add`] and [`crate::registry::Queues::settle`]. Each request goes
/// in here and sends a take message ([`TakeAdds`], [`TakeSettles`]); the first of those the
/// actor reads takes every request waiting into one write (one `apply_batch`), and the ones
/// after it find the inbox empty. Requests that arrive together while the actor is busy so
/// cost one write, not one each.
pub struct Inbox<T, R> {
    pending: std::sync::Mutex<Vec<(Arc<T>, oneshot::Sender<R>)>>,
}

impl<T, R> Default for Inbox<T, R> {
    fn default() -> Self {
        Inbox {
            pending: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<T, R> Inbox<T, R> {
    /// Puts a request in.
    pub fn push(&self, request: Arc<T>, reply: oneshot::Sender<R>) {
        self.lock().push((request, reply));
    }

    /// Takes every request waiting.
    pub fn take(&self) -> Vec<(Arc<T>, oneshot::Sender<R>)> {
        std::mem::take(&mut *self.lock())
    }

    /// Takes back `request` if the actor has not taken it; false when it has (its answer is
    /// coming).
    pub fn withdraw(&self, request: &Arc<T>) -> bool {
        let mut pending = self.lock();
        let before = pending.len();
        pending.retain(|(r, _)| !Arc::ptr_eq(r, request));
        pending.len() < before
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<T>, oneshot::Sender<R>)>> {
        // A panic while holding the lock left a whole Vec: still usable.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds waiting: each request's validated tasks (all or nothing), answered with their results.
pub type AddInbox = Inbox<Vec<NewTask>, Result<Durable<Vec<AddResult>>>>;

/// Settles waiting: each request's settles, answered one result per settle.
pub type SettleInbox = Inbox<Vec<Settle>, Durable<Vec<Result<Settlement>>>>;

/// Polls waiting: each answered with its outcome. The leases of every poll taken together
/// are one write.
pub type PollInbox = Inbox<Poll, Result<PollOutcome>>;

/// The inboxes of one queue actor. One allocation for the three: the registry makes one for
/// each actor it starts, on its own thread, and the last reference may go on another, so
/// fewer and larger blocks leave fewer allocator pages pinned when queues go idle.
#[derive(Default)]
pub struct Inboxes {
    /// Adds waiting ([`TakeAdds`]).
    pub adds: AddInbox,
    /// Settles waiting ([`TakeSettles`]).
    pub settles: SettleInbox,
    /// Polls waiting ([`TakePolls`]).
    pub polls: PollInbox,
}

/// Take the adds waiting in an inbox and write them together; each request is answered on its
/// own reply once applied (the caller then waits for durability).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct TakeAdds(pub Arc<Inboxes>);

/// Take the settles waiting in an inbox (HTTP complete / fail, bursts of WebSocket frames)
/// and write them together; each request is answered on its own reply once applied.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct TakeSettles(pub Arc<Inboxes>);

/// Take the polls waiting in an inbox (HTTP and embedded long polls): the tasks they find
/// ready are leased in one write, the others park; each is answered on its own reply.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct TakePolls(pub Arc<Inboxes>);

/// The answer for one added task.
#[derive(Debug, Clone, Serialize)]
pub struct AddResult {
    /// The task id (generated when the client sent none).
    pub task_id: String,
    /// The id existed already; nothing changed.
    pub duplicate: bool,
}

/// A poll for up to `max_tasks` tasks (it waits in a [`PollInbox`]).
#[derive(Clone)]
pub struct Poll {
    /// Worker identity.
    pub identity: String,
    /// Most tasks to give.
    pub max_tasks: usize,
    /// Declared task types; `None` = any.
    pub task_types: Option<Vec<String>>,
    /// Worker build id.
    pub build_id: Option<String>,
    /// Worker-requested dispatch limit for the queue.
    pub max_tasks_per_second: Option<f64>,
    /// Park until this instant when nothing is ready; `None` answers at once.
    pub park_until: Option<Instant>,
}

/// The actor's answer to a [`Poll`].
pub enum PollOutcome {
    /// Tasks ready now (possibly none, when not parking).
    Now(Delivery),
    /// Parked: the tasks arrive on `rx`; tell the actor with [`ForgetWaiter`] when giving up.
    Parked {
        /// The actor holding the waiter.
        owner: actix::Addr<super::QueueActor>,
        /// The waiter's id.
        waiter_id: u64,
        /// Where the delivery arrives.
        rx: oneshot::Receiver<Delivery>,
    },
}

/// Why a parked poll stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// Its `wait_ms` passed.
    Timeout,
    /// Its client went away.
    Cancelled,
}

/// A parked poll stopped waiting; forget it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetWaiter {
    /// The waiter.
    pub waiter_id: u64,
    /// Why.
    pub reason: GaveUp,
}

/// Tasks delivered to a poller that went away before taking them: back to the queue at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReturnTasks {
    /// (task id, lease id) pairs.
    pub leases: Vec<(String, u64)>,
}

/// How a lease is settled.
#[derive(Debug, Clone)]
pub enum SettleOp {
    /// Completed with a result.
    Complete {
        /// Any JSON.
        result: Box<RawValue>,
    },
    /// Failed.
    Fail {
        /// What went wrong.
        error: TaskError,
        /// No retry.
        non_retryable: bool,
        /// Retry after this long instead of the policy's backoff.
        retry_after_ms: Option<u64>,
    },
}

/// Complete or fail a lease: one item of a [`SettleInbox`] request.
#[derive(Debug, Clone)]
pub struct Settle {
    /// The task.
    pub task_id: String,
    /// The lease id from the token.
    pub lease_id: u64,
    /// What to do.
    pub op: SettleOp,
}

/// The answer to a settle.
#[derive(Debug, Clone, Serialize)]
pub struct Settlement {
    /// The task.
    pub task_id: String,
    /// The state it is in now.
    pub state: TaskState,
    /// For a retried fail: when the next attempt is due (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// The worker that held the lease, when this settle ended it (not for a repeat): the
    /// identity a `next` poll takes by default. Not part of the answer.
    #[serde(skip)]
    pub identity: Option<String>,
}

/// Extend a lease.
#[derive(Message, Clone)]
#[rtype(result = "Result<HeartbeatAnswer>")]
pub struct Heartbeat {
    /// The task.
    pub task_id: String,
    /// The lease id from the token.
    pub lease_id: u64,
    /// Progress details, kept with the task.
    pub details: Option<Box<RawValue>>,
    /// Ends the lease this long from now instead of at its start-to-close deadline (an SQS
    /// visibility timeout; 0 hands the task back at once).
    pub lease_for_ms: Option<u64>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatAnswer {
    /// RFC 3339.
    pub lease_expires_at: String,
    /// Cancel was asked for this task.
    pub cancel_requested: bool,
}

/// Cancel a task. Answered with its record once durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<Durable<TaskRecord>>")]
pub struct Cancel {
    /// The task.
    pub task_id: String,
}

/// Wait for a task to reach a terminal state.
#[derive(Message, Clone)]
#[rtype(result = "Result<Watch>")]
pub struct WatchTask {
    /// The task.
    pub task_id: String,
}

/// The answer to [`WatchTask`].
pub enum Watch {
    /// The task is terminal already, or unknown (`None`).
    Now(Option<Box<TaskRecord>>),
    /// Resolves (or is dropped) when the task ends.
    Later(oneshot::Receiver<()>),
}

/// Why a task is or is not running now.
#[derive(Message, Clone)]
#[rtype(result = "Result<Explanation>")]
pub struct Explain {
    /// The task.
    pub task_id: String,
}

/// The answer to [`Explain`]: the task's state and one reason or more.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The task.
    pub task_id: String,
    /// Its state.
    pub state: TaskState,
    /// Why it runs, waits or ended.
    pub reasons: Vec<Reason>,
}

/// One reason of an [`Explanation`].
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    /// `running`, `finished`, `delayed`, `retry_backoff`, `paused`, `rate_limited`,
    /// `no_poller`, `no_poller_for_type`, `routed`, `waiting_behind` or `in_flight_limit`.
    pub code: &'static str,
    /// A sentence for a person.
    pub message: String,
    /// The reason's own fields (`identity`, `due_at`, `ahead`, …).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// Describe the queue.
#[derive(Message, Clone)]
#[rtype(result = "Result<Stats>")]
pub struct Describe;

/// The contract's `Stats` of one queue.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Ready now.
    pub backlog_count: u64,
    /// Age of the oldest ready task, 0 if none.
    pub backlog_age_ms: u64,
    /// Delayed or in retry backoff.
    pub delayed_count: u64,
    /// Leased.
    pub in_flight_count: u64,
    /// Dead letters.
    pub dead_letter_count: u64,
    /// Adds per second over the last 30 s.
    pub add_rate: f64,
    /// Dispatches per second over the last 30 s.
    pub dispatch_rate: f64,
    /// Pollers seen in the last 5 minutes.
    pub pollers: Vec<PollerInfo>,
    /// The dispatch limit.
    pub rate_limit: RateLimitView,
    /// Pollers disagree on task types, or a ready type has no poller.
    pub registration_mismatch: bool,
    /// Polls parked right now (not in the contract; handy for operators).
    pub parked_polls: usize,
}

/// The rate limit as describe shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitView {
    /// Tasks per second, `None` = unlimited.
    pub max_tasks_per_second: Option<f64>,
    /// Bucket size.
    pub burst: Option<u32>,
    /// `api`, `worker` or `none`.
    pub source: &'static str,
}

/// Set (or with `None` remove) the queue's stored dispatch limit. Answered once durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<Durable<RateLimitView>>")]
pub struct SetConfig {
    /// The limit.
    pub rate_limit: Option<super::throttle::RateLimit>,
}

/// Set (or with `None` remove) the attributes a front end keeps for the queue (JSON text).
/// Answered once durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<Durable<()>>")]
pub struct SetAttributes {
    /// The attributes.
    pub attributes: Option<String>,
}

/// Put dead letters back as pending, attempts reset. Answered with how many, once durable.
#[derive(Message, Clone)]
#[rtype(result = "Result<Durable<usize>>")]
pub struct Redrive {
    /// These tasks; `None` = every dead letter of the queue.
    pub task_ids: Option<Vec<String>>,
}

/// Schedule-to-start deadlines passed for these tasks (sent by the registry's sweep).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ExpireWaiting {
    /// The tasks.
    pub task_ids: Vec<String>,
}

/// What the queue sends to a streaming worker's socket.
#[derive(Debug)]
pub enum SocketEvent {
    /// A task leased to the socket, to send once the write named is on disk.
    Task(Box<crate::model::Task>, WriteSeq),
    /// The socket asked to drain: no task follows this event until new credit.
    Drained,
    /// The server is shutting down: close the socket.
    Close,
}

/// A socket asked to stop being pushed tasks (credit to 0, settles give none back).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainSocket {
    /// The socket.
    pub socket_id: u64,
}

/// A streaming worker connected: it becomes a long-lived poller with credit 0.
#[derive(Message, Clone)]
#[rtype(result = "Result<(actix::Addr<super::QueueActor>, u64)>")]
pub struct OpenSocket {
    /// Worker identity.
    pub identity: String,
    /// Declared task types; `None` = any.
    pub task_types: Option<Vec<String>>,
    /// Worker build id.
    pub build_id: Option<String>,
    /// Where tasks for the socket go.
    pub tx: tokio::sync::mpsc::UnboundedSender<SocketEvent>,
}

/// A socket has spare capacity for `n` more tasks.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddCredit {
    /// The socket.
    pub socket_id: u64,
    /// How many more.
    pub n: u32,
}

/// A socket closed: its unsettled tasks go back to the queue at once, attempt counted.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SocketClosed {
    /// The socket.
    pub socket_id: u64,
}

/// Answer every parked poll with no tasks and stop parking (graceful shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Stop serving this queue here (another node of the cluster owns it now): parked polls are
/// answered with no tasks, sockets closed, and the actor stops; its state stays in the store.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct HandOver;

/// Run the timer's work now: expire the leases whose deadline passed, promote the delayed
/// tasks that are due, serve parked polls and stop if idle long enough, all by the queue's
/// clock. The actor's own timer does this at the next deadline; with a manual clock (tests),
/// this is how time that was moved by hand takes effect.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Tick;
