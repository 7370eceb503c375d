//! A task as the store keeps it ([`TaskRecord`]): its spec, where it is in its life, its lease
//! and its last settle. (Its stored byte form is `storage::record`.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::*;

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting: ready, delayed, or in retry backoff.
    Pending,
    /// Leased to a worker.
    Running,
    /// Finished successfully.
    Completed,
    /// Attempts exhausted or non-retryable: a dead letter.
    Failed,
    /// Schedule-to-start exceeded: a dead letter.
    TimedOut,
    /// Cancelled before it ran.
    Cancelled,
}

impl TaskState {
    /// True for states a task never leaves (except by redrive).
    pub fn is_terminal(self) -> bool {
        !matches!(self, TaskState::Pending | TaskState::Running)
    }

    /// True for dead letters.
    pub fn is_dead_letter(self) -> bool {
        matches!(self, TaskState::Failed | TaskState::TimedOut)
    }
}

/// An error reported by a worker (or made by the server for a timeout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskError {
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// The worker's error type, free text.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl TaskError {
    /// The error of a fail that gave none.
    pub fn unspecified() -> Self {
        TaskError {
            message: "failed".into(),
            kind: None,
        }
    }
}

/// The position of a pending task's entry in the store's dispatch indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Queued {
    /// In the ready index at (priority, order, seq).
    Ready {
        /// Order within the priority: the fair-share pass (see `queue::fairness`).
        order: u64,
    },
    /// In the delayed index until `due` (ms).
    Delayed {
        /// When it becomes ready.
        due: u64,
    },
}

/// The lease of a running attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveLease {
    /// Random id that makes the lease token unique to this attempt.
    pub id: u64,
    /// Identity of the worker that holds it.
    pub identity: String,
    /// When the task was given to the worker (ms).
    pub dispatched_at: u64,
    /// When the start-to-close timeout ends the lease (ms).
    pub close_deadline: u64,
    /// When the heartbeat timeout ends the lease (ms), if the task has one.
    pub heartbeat_deadline: Option<u64>,
    /// The task's place in the ready order when it was dispatched, so a task handed back
    /// (poller gone, server restarted) returns to where it was.
    #[serde(default)]
    pub order: u64,
    /// When the task last became ready (ms), so a task handed back keeps its backlog age.
    /// 0 in records written before this field: [`ActiveLease::ready_since`] falls back.
    #[serde(default)]
    pub ready_at: u64,
}

impl ActiveLease {
    /// When the task became ready before this attempt (its dispatch time for records that
    /// predate `ready_at`).
    pub fn ready_since(&self) -> u64 {
        if self.ready_at == 0 {
            self.dispatched_at
        } else {
            self.ready_at
        }
    }

    /// When the lease ends unless settled: the earlier of both deadlines.
    pub fn expires_at(&self) -> u64 {
        self.heartbeat_deadline
            .map_or(self.close_deadline, |h| h.min(self.close_deadline))
    }
}

/// How a lease was settled, kept so a repeated settle answers the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettleKind {
    /// `complete`.
    Complete,
    /// `fail`.
    Fail,
}

/// The last settle of a task, for repeat-safe settles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    /// The lease that was settled.
    pub lease_id: u64,
    /// How.
    pub kind: SettleKind,
    /// The state it left the task in.
    pub state: TaskState,
    /// When the next attempt is due, for a retried fail.
    pub next_attempt_at: Option<u64>,
}

/// A task as stored in sled: everything about it, its spec and its life so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Unique within the queue.
    pub task_id: String,
    /// What kind of work.
    pub task_type: String,
    /// The client's JSON, as sent.
    pub payload: Box<RawValue>,
    /// String headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// 1–5.
    pub priority: u8,
    /// Tenant key for fairness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fairness_key: Option<String>,
    /// Weight of the key.
    pub fairness_weight: f64,
    /// Max wait in the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_start_timeout_ms: Option<u64>,
    /// Lease length per attempt.
    pub start_to_close_timeout_ms: u64,
    /// Heartbeat timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_to: Option<RouteTo>,
    /// Life-cycle state.
    pub state: TaskState,
    /// Attempts dispatched so far.
    pub attempt: u32,
    /// Tie-breaker in dispatch order, unique in the database.
    pub seq: u64,
    /// When it was added (ms).
    pub added_at: u64,
    /// Last change (ms).
    pub updated_at: u64,
    /// Where its pending entry is, while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Queued>,
    /// The running attempt's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<ActiveLease>,
    /// The last settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<Settled>,
    /// Result of a completed task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// Last error of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<TaskError>,
    /// Details of the last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_details: Option<Box<RawValue>>,
    /// Cancel was asked while running.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Given one at a time per fairness key, in order ([`crate::model::TaskSpec::serial`]).
    #[serde(default)]
    pub serial: bool,
    /// The store keeps the payload under a key of its own, written once when the task is
    /// added, instead of in the record rewritten on every lease and settle (large payloads;
    /// see `storage::Txn::put_new_task`).
    #[serde(skip)]
    pub payload_apart: bool,
}

impl TaskRecord {
    /// True while the task runs under lease `lease_id` (a settle, heartbeat or hand-back with
    /// any other lease, or after the lease ended, finds the lease lost).
    pub fn held_by(&self, lease_id: u64) -> bool {
        self.state == TaskState::Running && self.lease.as_ref().is_some_and(|l| l.id == lease_id)
    }

    /// A new pending record for `spec`, added at `now` with sequence `seq`.
    pub fn new(spec: &NewTask, now: u64, seq: u64) -> Self {
        TaskRecord {
            task_id: spec.task_id.clone(),
            task_type: spec.task_type.clone(),
            payload: spec.payload.clone(),
            headers: spec.headers.clone(),
            priority: spec.priority,
            fairness_key: spec.fairness_key.clone(),
            fairness_weight: spec.fairness_weight,
            schedule_to_start_timeout_ms: spec.schedule_to_start_timeout_ms,
            start_to_close_timeout_ms: spec.start_to_close_timeout_ms,
            heartbeat_timeout_ms: spec.heartbeat_timeout_ms,
            retry: spec.retry.clone(),
            route_to: spec.route_to.clone(),
            state: TaskState::Pending,
            attempt: 0,
            seq,
            added_at: now,
            updated_at: now,
            queued: None,
            lease: None,
            settled: None,
            result: None,
            last_error: None,
            heartbeat_details: None,
            cancel_requested: false,
            serial: spec.serial,
            payload_apart: false,
        }
    }

    /// The task as given to a worker holding `lease`.
    pub fn to_task(&self, key: &QueueKey) -> Option<Task> {
        let lease = self.lease.as_ref()?;
        Some(Task {
            task_id: self.task_id.clone(),
            task_type: self.task_type.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            attempt: self.attempt,
            priority: self.priority,
            fairness_key: self.fairness_key.clone(),
            lease: LeaseToken {
                queue: key.clone(),
                task_id: self.task_id.clone(),
                lease_id: lease.id,
            }
            .encode(),
            added_at: rfc3339(self.added_at),
            dispatched_at: rfc3339(lease.dispatched_at),
            lease_expires_at: rfc3339(lease.expires_at()),
            start_to_close_timeout_ms: self.start_to_close_timeout_ms,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
        })
    }
}
