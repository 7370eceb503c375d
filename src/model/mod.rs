//! The data model: queue keys, task specs and their validation, stored task records, the task
//! view given to workers, and lease tokens.
//!
//! Validation happens here, at the edge, so nothing a client sent can make an actor panic.

pub mod json;
pub mod listing;
pub mod percent;
pub mod rate;
pub mod record;
mod spec;

pub use record::{ActiveLease, Queued, SettleKind, Settled, TaskError, TaskRecord, TaskState};
pub use spec::{null_json, NewTask, RetryRequest, RouteRequest, TaskSpec};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::clock::rfc3339;
use crate::error::{Error, Result};

/// Longest name (namespace, queue, task type, task id, fairness key, build id) or identity.
pub const MAX_NAME_LEN: usize = 200;
/// Priorities run from 1 (first) to 5 (last).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = 1..=5;
/// Default priority of a task.
pub const DEFAULT_PRIORITY: u8 = 3;
/// Default lease length per attempt.
pub const DEFAULT_START_TO_CLOSE_MS: u64 = 60_000;
/// Shortest lease length a task may ask for.
pub const MIN_START_TO_CLOSE_MS: u64 = 100;
/// Default `route_to.fallback_after_ms`.
pub const DEFAULT_FALLBACK_AFTER_MS: u64 = 5_000;
/// Default `wait_ms` of a poll.
pub const DEFAULT_POLL_WAIT_MS: u64 = 60_000;
/// Longest `wait_ms` of a poll.
pub const MAX_POLL_WAIT_MS: u64 = 300_000;
/// Longest `wait_ms` of a status request.
pub const MAX_STATUS_WAIT_MS: u64 = 60_000;
/// Largest `max_tasks` of a poll.
pub const MAX_POLL_TASKS: u32 = 100;
/// Largest batch of tasks in one add.
pub const MAX_BATCH: usize = 1000;

/// Checks the number of tasks of a batch add (1–[`MAX_BATCH`]).
pub fn check_batch_len(n: usize) -> Result<()> {
    if n == 0 || n > MAX_BATCH {
        return Err(Error::invalid(format!(
            "tasks must hold 1–{MAX_BATCH} tasks, got {n}"
        )));
    }
    Ok(())
}

/// Longest duration any `_ms` field may hold: ten years. Longer ones are surely mistakes, and
/// the bound keeps every deadline a representable instant.
pub const MAX_DURATION_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Checks a duration field against [`MAX_DURATION_MS`].
pub fn check_duration(field: &str, ms: u64) -> Result<u64> {
    if ms > MAX_DURATION_MS {
        return Err(Error::invalid(format!(
            "{field} must be at most {MAX_DURATION_MS} (ten years), got {ms}"
        )));
    }
    Ok(ms)
}

/// Most task ids in one redrive, and most items in one page of a listing.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Checks a list of task ids (a redrive's): 1–[`MAX_LIST_LIMIT`] valid names.
pub fn validate_task_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() || ids.len() > MAX_LIST_LIMIT {
        return Err(Error::invalid(format!(
            "task_ids must hold 1–{MAX_LIST_LIMIT} ids"
        )));
    }
    ids.iter()
        .try_for_each(|id| validate_name("task_ids[]", id))
}

/// Checks a name: 1–200 characters from `A–Z a–z 0–9 . _ - : @`.
pub fn validate_name(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.chars().count() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "{what} must be 1–{MAX_NAME_LEN} characters, got {}",
            value.chars().count()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '@')))
    {
        return Err(Error::invalid(format!(
            "{what} {value:?} has the character {c:?}; allowed are A–Z a–z 0–9 . _ - : @"
        )));
    }
    Ok(())
}

/// Checks a worker identity: 1–200 printable characters.
pub fn validate_identity(value: &str) -> Result<()> {
    let n = value.chars().count();
    if n == 0 || n > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "identity must be 1–{MAX_NAME_LEN} printable characters"
        )));
    }
    Ok(())
}

/// The two independent kinds of queue that share a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// An activity task queue.
    Activity,
    /// A workflow task queue.
    Workflow,
}

impl QueueType {
    /// Both types, in the order describe shows them.
    pub const ALL: [QueueType; 2] = [QueueType::Activity, QueueType::Workflow];

    /// Parses the `{type}` path segment.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "activity" => Ok(QueueType::Activity),
            "workflow" => Ok(QueueType::Workflow),
            other => Err(Error::invalid(format!(
                "task queue type must be \"activity\" or \"workflow\", got {other:?}"
            ))),
        }
    }

    /// The name used in paths, JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Activity => "activity",
            QueueType::Workflow => "workflow",
        }
    }

    /// One byte used in storage keys.
    pub fn tag(self) -> u8 {
        match self {
            QueueType::Activity => b'a',
            QueueType::Workflow => b'w',
        }
    }

    /// The inverse of [`QueueType::tag`].
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            b'a' => Some(QueueType::Activity),
            b'w' => Some(QueueType::Workflow),
            _ => None,
        }
    }
}

/// Identifies one task queue: (namespace, name, type). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey(Arc<(String, String, QueueType)>);

impl QueueKey {
    /// Builds a key after validating both names.
    pub fn new(namespace: &str, name: &str, kind: QueueType) -> Result<Self> {
        validate_name("namespace", namespace)?;
        validate_name("task queue name", name)?;
        Ok(Self::new_unchecked(namespace.into(), name.into(), kind))
    }

    /// Builds a key from names already known to be valid (read back from storage).
    pub fn new_unchecked(namespace: String, name: String, kind: QueueType) -> Self {
        QueueKey(Arc::new((namespace, name, kind)))
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.0 .0
    }

    /// The queue name.
    pub fn name(&self) -> &str {
        &self.0 .1
    }

    /// Activity or workflow.
    pub fn queue_type(&self) -> QueueType {
        self.0 .2
    }
}

impl fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.namespace(),
            self.name(),
            self.queue_type().as_str()
        )
    }
}

impl fmt::Display for QueueKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Deserializes a present field (even `null`) as `Some`, so `Option<Option<T>>` tells
/// "absent" from "null".
pub fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Routing of one task to one worker process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteTo {
    /// Only a poller with this identity gets the task…
    pub identity: String,
    /// …until this long after the task became ready; `None` = never fall back.
    pub fallback_after_ms: Option<u64>,
}

/// A task's retry policy: exponential backoff, `max_attempts = 0` meaning unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts allowed in all; 0 = unlimited.
    pub max_attempts: u32,
    /// Wait before the second attempt.
    pub initial_interval_ms: u64,
    /// Each further wait is this many times the previous one.
    pub backoff_coefficient: f64,
    /// Longest wait between attempts.
    pub maximum_interval_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 0,
            initial_interval_ms: 1000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 100_000,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based):
    /// `min(initial × coefficient^(attempt−1), maximum)`.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(1000) as i32;
        let wait = self.initial_interval_ms as f64 * self.backoff_coefficient.powi(exp);
        if !wait.is_finite() || wait >= self.maximum_interval_ms as f64 {
            self.maximum_interval_ms
        } else {
            wait as u64
        }
    }

    /// True when no attempt may follow attempt number `attempt`.
    pub fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts > 0 && attempt >= self.max_attempts
    }
}

/// The status of a task, as `GET {q}/tasks/{id}` answers it.
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

/// A task as given to a worker (the contract's `Task`).
#[derive(Debug, Clone, Serialize)]
pub struct Task {
    /// Task id.
    pub task_id: String,
    /// Task type.
    pub task_type: String,
    /// The client's payload.
    pub payload: Box<RawValue>,
    /// Headers.
    pub headers: BTreeMap<String, String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// 1–5.
    pub priority: u8,
    /// Fairness key, if any.
    pub fairness_key: Option<String>,
    /// Opaque, URL-safe lease token for settling.
    pub lease: String,
    /// RFC 3339.
    pub added_at: String,
    /// RFC 3339.
    pub dispatched_at: String,
    /// RFC 3339.
    pub lease_expires_at: String,
    /// Lease length.
    pub start_to_close_timeout_ms: u64,
    /// Heartbeat timeout.
    pub heartbeat_timeout_ms: Option<u64>,
}

/// What a lease token names: the queue, the task and the attempt's random lease id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseToken {
    /// The task's queue.
    pub queue: QueueKey,
    /// The task.
    pub task_id: String,
    /// The attempt's lease id.
    pub lease_id: u64,
}

const LEASE_VERSION: u8 = 1;

impl LeaseToken {
    /// Encodes as URL-safe base64 of `version | lease_id | type tag | ns \0 name \0 task_id`.
    pub fn encode(&self) -> String {
        let q = &self.queue;
        let mut raw =
            Vec::with_capacity(11 + q.namespace().len() + q.name().len() + self.task_id.len());
        raw.push(LEASE_VERSION);
        raw.extend_from_slice(&self.lease_id.to_be_bytes());
        raw.push(q.queue_type().tag());
        raw.extend_from_slice(q.namespace().as_bytes());
        raw.push(0);
        raw.extend_from_slice(q.name().as_bytes());
        raw.push(0);
        raw.extend_from_slice(self.task_id.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Decodes a token; anything malformed is a lost lease, never a panic.
    pub fn decode(token: &str) -> Result<Self> {
        let raw = URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .map_err(|_| Error::lease_lost())?;
        if raw.len() < 10 || raw[0] != LEASE_VERSION {
            return Err(Error::lease_lost());
        }
        let lease_id = u64::from_be_bytes(raw[1..9].try_into().map_err(|_| Error::lease_lost())?);
        let kind = QueueType::from_tag(raw[9]).ok_or_else(Error::lease_lost)?;
        let rest = std::str::from_utf8(&raw[10..]).map_err(|_| Error::lease_lost())?;
        let mut parts = rest.splitn(3, '\0');
        let (Some(ns), Some(name), Some(task_id)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::lease_lost());
        };
        let queue = QueueKey::new(ns, name, kind).map_err(|_| Error::lease_lost())?;
        validate_name("task_id", task_id).map_err(|_| Error::lease_lost())?;
        Ok(LeaseToken {
            queue,
            task_id: task_id.to_string(),
            lease_id,
        })
    }
}

#[cfg(test)]
mod tests;
