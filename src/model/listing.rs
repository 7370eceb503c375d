//! Listing a queue's tasks by state (`GET {q}/tasks`): which tasks a listing asks for, and
//! each task as the listing shows it.

use serde::Serialize;
use serde_json::value::RawValue;

use std::collections::BTreeMap;

use super::{validate_name, Queued, RetryPolicy, RouteTo, TaskError, TaskRecord, TaskState};
use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// The states a listing takes, as the contract names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListState {
    /// Ready now, in dispatch order.
    #[default]
    Pending,
    /// Not yet due: delayed, or in retry backoff.
    Delayed,
    /// Leased to a worker.
    Running,
    /// Dead letters: `failed` and `timed_out`.
    Dead,
    /// Completed.
    Completed,
    /// Cancelled.
    Cancelled,
}

impl ListState {
    /// `pending`, `delayed`, `running`, `dead`, `completed` or `cancelled`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => ListState::Pending,
            "delayed" => ListState::Delayed,
            "running" => ListState::Running,
            "dead" => ListState::Dead,
            "completed" => ListState::Completed,
            "cancelled" => ListState::Cancelled,
            other => {
                return Err(Error::invalid(format!(
                    "state must be pending, delayed, running, dead, completed or cancelled, \
                     got {other:?}"
                )))
            }
        })
    }

    /// True when `rec` is in this state.
    pub fn holds(self, rec: &TaskRecord) -> bool {
        let delayed = matches!(rec.queued, Some(Queued::Delayed { .. }));
        match self {
            ListState::Pending => rec.state == TaskState::Pending && !delayed,
            ListState::Delayed => rec.state == TaskState::Pending && delayed,
            ListState::Running => rec.state == TaskState::Running,
            ListState::Dead => rec.state.is_dead_letter(),
            ListState::Completed => rec.state == TaskState::Completed,
            ListState::Cancelled => rec.state == TaskState::Cancelled,
        }
    }
}

/// Which tasks a listing shows: a state, and exact matches on type, fairness key, priority.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// The state (default pending).
    pub state: ListState,
    /// Only this task type.
    pub task_type: Option<String>,
    /// Only this fairness key.
    pub fairness_key: Option<String>,
    /// Only this priority (1–5).
    pub priority: Option<u8>,
}

impl TaskFilter {
    /// Checks the filter's values as the contract's names and ranges.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.task_type {
            validate_name("task_type", t)?;
        }
        if let Some(k) = &self.fairness_key {
            validate_name("fairness_key", k)?;
        }
        if let Some(p) = self.priority {
            if !(1..=5).contains(&p) {
                return Err(Error::invalid(format!("priority must be 1–5, got {p}")));
            }
        }
        Ok(())
    }

    /// True when `rec` is in the state and matches every filter.
    pub fn matches(&self, rec: &TaskRecord) -> bool {
        self.state.holds(rec)
            && self.task_type.as_ref().is_none_or(|t| *t == rec.task_type)
            && self
                .fairness_key
                .as_ref()
                .is_none_or(|k| rec.fairness_key.as_ref() == Some(k))
            && self.priority.is_none_or(|p| p == rec.priority)
    }
}

/// A task as `GET {q}/tasks` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedTask {
    /// Everything but the payload.
    #[serde(flatten)]
    pub fields: ListedFields,
    /// The payload, as added.
    pub payload: Box<RawValue>,
}

/// The fields of a [`ListedTask`] but its payload (serde cannot flatten a `RawValue`).
#[derive(Debug, Clone, Serialize)]
pub struct ListedFields {
    /// The task id.
    pub task_id: String,
    /// The task type.
    pub task_type: String,
    /// Its state (a delayed task is `pending`, with `due_at`).
    pub state: TaskState,
    /// Attempts dispatched so far.
    pub attempt: u32,
    /// 1 (first) … 5 (last).
    pub priority: u8,
    /// Its fairness key.
    pub fairness_key: Option<String>,
    /// When it was added (RFC 3339).
    pub added_at: String,
    /// Its last change (RFC 3339).
    pub updated_at: String,
    /// When a delayed task (or one in retry backoff) becomes ready.
    pub due_at: Option<String>,
    /// When a running task's lease ends unless settled or extended.
    pub lease_expires_at: Option<String>,
    /// The worker a running task is leased to.
    pub identity: Option<String>,
}

impl From<&TaskRecord> for ListedFields {
    fn from(rec: &TaskRecord) -> Self {
        let due_at = match rec.queued {
            Some(Queued::Delayed { due }) if rec.state == TaskState::Pending => Some(rfc3339(due)),
            _ => None,
        };
        let lease = rec
            .lease
            .as_ref()
            .filter(|_| rec.state == TaskState::Running);
        ListedFields {
            due_at,
            lease_expires_at: lease.map(|l| rfc3339(l.expires_at())),
            identity: lease.map(|l| l.identity.clone()),
            task_id: rec.task_id.clone(),
            task_type: rec.task_type.clone(),
            state: rec.state,
            attempt: rec.attempt,
            priority: rec.priority,
            fairness_key: rec.fairness_key.clone(),
            added_at: rfc3339(rec.added_at),
            updated_at: rfc3339(rec.updated_at),
        }
    }
}

impl From<TaskRecord> for ListedTask {
    fn from(rec: TaskRecord) -> Self {
        ListedTask {
            fields: ListedFields::from(&rec),
            payload: rec.payload,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct TaskPage {
    /// The tasks, pending ones in dispatch order, the others newest first.
    pub tasks: Vec<ListedTask>,
    /// Where the next page starts; `None` at the end.
    pub next_page_token: Option<String>,
}

/// Everything known of one task (`GET {q}/tasks/{id}?view=full`, the console's task page):
/// what a listing shows, and its headers, policy, result and errors.
#[derive(Debug, Clone, Serialize)]
pub struct TaskDetail {
    /// The task as a listing shows it.
    #[serde(flatten)]
    pub listed: ListedFields,
    /// The payload, as added.
    pub payload: Box<RawValue>,
    /// The headers, as added.
    pub headers: BTreeMap<String, String>,
    /// Weight of its fairness key.
    pub fairness_weight: f64,
    /// Longest wait in the queue before it times out.
    pub schedule_to_start_timeout_ms: Option<u64>,
    /// Lease length of each attempt.
    pub start_to_close_timeout_ms: u64,
    /// A lease also ends this long after the last heartbeat.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Its retry policy.
    pub retry: RetryPolicy,
    /// Its routing to one worker, if any.
    pub route_to: Option<RouteTo>,
    /// The result of a completed task.
    pub result: Option<Box<RawValue>>,
    /// The error of the last failed attempt.
    pub last_error: Option<TaskError>,
    /// The details of the last heartbeat of a running task.
    pub heartbeat_details: Option<Box<RawValue>>,
    /// A running task asked to stop (answered on its next heartbeat).
    pub cancel_requested: bool,
}

impl From<TaskRecord> for TaskDetail {
    fn from(rec: TaskRecord) -> Self {
        TaskDetail {
            listed: ListedFields::from(&rec),
            payload: rec.payload,
            headers: rec.headers,
            fairness_weight: rec.fairness_weight,
            schedule_to_start_timeout_ms: rec.schedule_to_start_timeout_ms,
            start_to_close_timeout_ms: rec.start_to_close_timeout_ms,
            heartbeat_timeout_ms: rec.heartbeat_timeout_ms,
            retry: rec.retry,
            route_to: rec.route_to,
            result: rec.result,
            last_error: rec.last_error,
            heartbeat_details: rec.heartbeat_details,
            cancel_requested: rec.cancel_requested,
        }
    }
}
