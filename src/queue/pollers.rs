//! Parked polls (waiters) and the record of pollers seen recently.
//!
//! A waiter is the sending half of a oneshot whose receiver the HTTP handler awaits with the
//! poll's deadline. A waiter whose client went away has a closed sender and is skipped; a
//! delivery that reaches a receiver nobody reads goes back to the queue through
//! [`Delivery`]'s `Drop`, so a vanished poller never swallows a task.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use actix::Addr;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::clock::rfc3339;
use crate::model::Task;
use crate::storage::{Entry, WriteSeq};

use super::messages::ReturnTasks;
use super::QueueActor;

/// How long a poller counts as live after its last poll.
pub const POLLER_TTL_MS: u64 = 5 * 60 * 1000;
/// Most pollers remembered per queue.
const MAX_SEEN: usize = 1000;

/// Tasks on their way to a poller. Dropped without [`Delivery::accept`], its tasks go back to
/// the queue at once (not after their lease).
pub struct Delivery {
    tasks: Vec<Task>,
    leases: Vec<(String, u64)>,
    /// The write to wait for before the poller has the tasks: their leases, or nothing for a
    /// sync match (sent as its add is applied; README, "Durability and recovery").
    write: WriteSeq,
    owner: Option<Addr<QueueActor>>,
}

impl Delivery {
    /// Tasks leased to a poller by `write`, returned to `owner` unless accepted.
    pub fn new(
        tasks: Vec<Task>,
        leases: Vec<(String, u64)>,
        write: WriteSeq,
        owner: Addr<QueueActor>,
    ) -> Self {
        Delivery {
            tasks,
            leases,
            write,
            owner: Some(owner),
        }
    }

    /// The write of the leases, to wait for before the tasks are accepted (see
    /// [`Store::durable_since`](crate::storage::Store::durable_since)).
    pub fn write(&self) -> WriteSeq {
        self.write
    }

    /// No tasks (a poll that timed out or a server shutting down).
    pub fn empty() -> Self {
        Delivery {
            tasks: Vec::new(),
            leases: Vec::new(),
            write: WriteSeq::NOTHING,
            owner: None,
        }
    }

    /// True when it carries no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The poller has the tasks now: they are its to settle.
    pub fn accept(mut self) -> Vec<Task> {
        self.owner = None;
        std::mem::take(&mut self.tasks)
    }

    /// Takes the leases back without sending them anywhere (the actor requeues them itself).
    pub fn disarm(mut self) -> Vec<(String, u64)> {
        self.owner = None;
        std::mem::take(&mut self.leases)
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            if !self.leases.is_empty() {
                owner.do_send(ReturnTasks {
                    leases: std::mem::take(&mut self.leases),
                });
            }
        }
    }
}

/// True when a poller with `identity` that declared `task_types` (`None`: any) may be given
/// the task of `entry` at `now_ms`: it runs the type, and the task is not routed to another
/// worker (or its fallback time has passed).
pub fn eligible(task_types: Option<&[String]>, identity: &str, entry: &Entry, now_ms: u64) -> bool {
    task_types.is_none_or(|types| types.iter().any(|t| **t == *entry.task_type))
        && entry
            .route
            .as_ref()
            .is_none_or(|r| r.identity == identity || r.fallback_at.is_some_and(|at| at <= now_ms))
}

/// One of a bounded number of places, given back when dropped (parked polls in total).
pub struct Slot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    /// Takes a place if fewer than `max` are taken.
    pub fn take(
        taken: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        max: usize,
    ) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(taken.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// One parked poll.
pub struct Waiter {
    /// Unique within the actor.
    pub id: u64,
    /// Worker identity.
    pub identity: String,
    /// Declared task types; `None` = any.
    pub task_types: Option<Vec<String>>,
    /// Most tasks to give at once.
    pub max_tasks: usize,
    /// When the poll gives up.
    pub deadline: Instant,
    /// Where the tasks go.
    pub sink: Sink,
    /// Its place among the server's parked polls (none for sockets).
    pub slot: Option<Slot>,
}

/// Where a waiter's tasks go.
pub enum Sink {
    /// A parked HTTP poll, answered once.
    Poll(oneshot::Sender<Delivery>),
    /// A streaming worker's socket (by id), which takes one task per turn while it has credit
    /// and then waits again at the back, so sockets and polls share dispatch in arrival order.
    Socket(u64),
}

impl Waiter {
    /// True when this poller may be given the task now.
    pub fn accepts(&self, entry: &Entry, now_ms: u64) -> bool {
        eligible(self.task_types.as_deref(), &self.identity, entry, now_ms)
    }

    /// True while someone still waits for the answer.
    pub fn is_live(&self, now: Instant) -> bool {
        match &self.sink {
            Sink::Poll(tx) => !tx.is_closed() && now < self.deadline,
            Sink::Socket(_) => true,
        }
    }
}

/// Parked polls in arrival order.
#[derive(Default)]
pub struct Waiters {
    queue: VecDeque<Waiter>,
    next_id: u64,
}

impl Waiters {
    /// A fresh waiter id.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Parks a poll at the back.
    pub fn push(&mut self, w: Waiter) {
        self.queue.push_back(w);
    }

    /// Number parked.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when none is parked.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Removes a waiter by id.
    pub fn remove(&mut self, id: u64) -> Option<Waiter> {
        let i = self.queue.iter().position(|w| w.id == id)?;
        self.queue.remove(i)
    }

    /// Drops waiters nobody waits for any more; returns how many.
    pub fn prune(&mut self, now: Instant) -> usize {
        let before = self.queue.len();
        self.queue.retain(|w| w.is_live(now));
        before - self.queue.len()
    }

    /// Number of parked HTTP polls (sockets not counted).
    pub fn polls(&self) -> usize {
        self.queue
            .iter()
            .filter(|w| matches!(w.sink, Sink::Poll(_)))
            .count()
    }

    /// Removes the waiter of socket `socket_id`, if it is waiting.
    pub fn remove_socket(&mut self, socket_id: u64) {
        self.queue
            .retain(|w| !matches!(w.sink, Sink::Socket(id) if id == socket_id));
    }

    /// Removes and returns the oldest live waiter that accepts `entry`.
    pub fn take_for(&mut self, entry: &Entry, now: Instant, now_ms: u64) -> Option<Waiter> {
        let i = self
            .queue
            .iter()
            .position(|w| w.is_live(now) && w.accepts(entry, now_ms))?;
        self.queue.remove(i)
    }

    /// The live waiters, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.queue.iter()
    }

    /// Removes every waiter (shutdown).
    pub fn drain(&mut self) -> impl Iterator<Item = Waiter> + '_ {
        self.queue.drain(..)
    }
}

/// What describe shows of a poller.
#[derive(Debug, Clone, Serialize)]
pub struct PollerInfo {
    /// Worker identity.
    pub identity: String,
    /// RFC 3339 of the last poll.
    pub last_access_time: String,
    /// Declared task types.
    pub task_types: Option<Vec<String>>,
    /// Build id.
    pub build_id: Option<String>,
    /// The worker's requested dispatch limit.
    pub max_tasks_per_second: Option<f64>,
}

#[derive(Debug, Clone)]
struct Seen {
    last_access: u64,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    max_tasks_per_second: Option<f64>,
}

/// Pollers seen in the last five minutes, by identity.
#[derive(Default)]
pub struct PollersSeen {
    by_identity: HashMap<String, Seen>,
}

impl PollersSeen {
    /// Records a poll.
    pub fn saw(
        &mut self,
        identity: &str,
        now: u64,
        task_types: Option<Vec<String>>,
        build_id: Option<String>,
        max_tasks_per_second: Option<f64>,
    ) {
        if self.by_identity.len() >= MAX_SEEN && !self.by_identity.contains_key(identity) {
            self.prune(now);
            if self.by_identity.len() >= MAX_SEEN {
                // Forget the least recent so memory stays bounded.
                if let Some(oldest) = self
                    .by_identity
                    .iter()
                    .min_by_key(|(_, s)| s.last_access)
                    .map(|(k, _)| k.clone())
                {
                    self.by_identity.remove(&oldest);
                }
            }
        }
        self.by_identity.insert(
            identity.to_string(),
            Seen {
                last_access: now,
                task_types,
                build_id,
                max_tasks_per_second,
            },
        );
    }

    /// Forgets pollers not seen for [`POLLER_TTL_MS`].
    pub fn prune(&mut self, now: u64) {
        self.by_identity
            .retain(|_, s| now.saturating_sub(s.last_access) < POLLER_TTL_MS);
    }

    /// True when no poller was seen recently.
    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }

    /// The live pollers, most recent first.
    pub fn list(&self) -> Vec<PollerInfo> {
        let mut v: Vec<_> = self.by_identity.iter().collect();
        v.sort_by(|a, b| b.1.last_access.cmp(&a.1.last_access).then(a.0.cmp(b.0)));
        v.into_iter()
            .map(|(id, s)| PollerInfo {
                identity: id.clone(),
                last_access_time: rfc3339(s.last_access),
                task_types: s.task_types.clone(),
                build_id: s.build_id.clone(),
                max_tasks_per_second: s.max_tasks_per_second,
            })
            .collect()
    }

    /// True when live pollers declare different sets of task types, or a task type in
    /// `ready_types` has no live poller that can run it.
    pub fn mismatch<'a>(&self, ready_types: impl Iterator<Item = &'a str>) -> bool {
        let mut declared = self
            .by_identity
            .values()
            .filter_map(|s| s.task_types.as_ref())
            .map(|t| {
                let mut t = t.clone();
                t.sort();
                t.dedup();
                t
            });
        let first = declared.next();
        if let Some(first) = &first {
            if declared.any(|t| &t != first) {
                return true;
            }
        }
        if self.by_identity.is_empty() {
            return false;
        }
        let any_type = self.by_identity.values().any(|s| s.task_types.is_none());
        if any_type {
            return false;
        }
        let mut ready_types = ready_types;
        ready_types.any(|ty| {
            !self.by_identity.values().any(|s| {
                s.task_types
                    .as_ref()
                    .is_some_and(|t| t.iter().any(|x| x == ty))
            })
        })
    }
}
