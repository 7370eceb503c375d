//! What a handler gets ([`WorkerTask`]) and what it may answer with ([`WorkerError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// A task as the server hands it to a streaming worker (the `Task` of the API contract), on
/// the client side.
///
/// Deserialized leniently: fields the server adds later are ignored and any field but `lease`
/// that is missing takes its default, so a newer or older server never makes a task
/// undeliverable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct WorkerTask {
    /// The task's id, unique in its queue.
    pub task_id: String,
    /// The task type the producer gave (`send-email`).
    pub task_type: String,
    /// The producer's payload, any JSON.
    pub payload: serde_json::Value,
    /// The producer's headers, delivered as is.
    pub headers: BTreeMap<String, String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// 1 (first) … 5 (last).
    pub priority: u8,
    /// The fairness key, if any.
    pub fairness_key: Option<String>,
    /// The opaque lease token the worker settles with (the worker does this for the handler).
    pub lease: String,
    /// When the task was added (RFC 3339).
    pub added_at: String,
    /// When this attempt was dispatched (RFC 3339).
    pub dispatched_at: String,
    /// When this attempt's lease ends unless settled (RFC 3339).
    pub lease_expires_at: String,
    /// The lease length of one attempt.
    pub start_to_close_timeout_ms: u64,
    /// When set, the lease also ends this long after the last heartbeat.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Set once a heartbeat answer says the task was cancelled.
    #[serde(skip)]
    pub(crate) cancel: Arc<AtomicBool>,
    /// Set once a heartbeat answer says the lease is lost.
    #[serde(skip)]
    pub(crate) lost: Arc<AtomicBool>,
}

impl WorkerTask {
    /// True once the server answered a heartbeat of this task with `cancel_requested: true`
    /// (someone cancelled the running task). The handler decides what to do: typically stop
    /// early and return an error.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// True once the server answered a heartbeat of this task with `lease_lost`: the lease
    /// ended (it expired, or the connection it came on dropped and the task went back to the
    /// queue), so the task runs again elsewhere and this run's settle will be refused. The
    /// handler may stop early; what it returns is sent but not taken.
    pub fn lease_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// How often the worker heartbeats this task while its handler runs: a third of
    /// `heartbeat_timeout_ms`, or of `start_to_close_timeout_ms` when there is none, never
    /// more often than every 50 ms and at least every 10 s (so a cancel is seen soon).
    pub fn heartbeat_interval(&self) -> Duration {
        let base = self
            .heartbeat_timeout_ms
            .unwrap_or(self.start_to_close_timeout_ms);
        Duration::from_millis((base / 3).clamp(50, 10_000))
    }
}

/// A handler's failure: the worker sends it as a `fail` of the task.
///
/// Retryable by default (the task's retry policy decides when it runs again). Any
/// [`std::error::Error`] converts into a retryable `WorkerError`, so `?` works in handlers.
///
/// ```
/// use std::time::Duration;
/// use tasq::client::WorkerError;
///
/// let e = WorkerError::retryable("the mail server is down")
///     .with_type("SmtpUnavailable")
///     .retry_after(Duration::from_secs(30));
/// assert!(!e.is_non_retryable());
/// let e = WorkerError::non_retryable("no such recipient");
/// assert!(e.is_non_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerError {
    message: String,
    kind: Option<String>,
    non_retryable: bool,
    retry_after: Option<Duration>,
}

impl WorkerError {
    /// A failure after which the task may run again, per its retry policy.
    pub fn retryable(message: impl Into<String>) -> Self {
        WorkerError {
            message: message.into(),
            kind: None,
            non_retryable: false,
            retry_after: None,
        }
    }

    /// A failure that retrying cannot fix: the task becomes a dead letter (`failed`).
    pub fn non_retryable(message: impl Into<String>) -> Self {
        WorkerError {
            non_retryable: true,
            ..Self::retryable(message)
        }
    }

    /// Sets the error's type (the `error.type` of the fail), e.g. `"Timeout"`.
    pub fn with_type(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Retries after `after` instead of the task's backoff (`retry_after_ms`; zero = at once).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The type, if set.
    pub fn kind(&self) -> Option<&str> {
        self.kind.as_deref()
    }

    /// True when the task must not be retried.
    pub fn is_non_retryable(&self) -> bool {
        self.non_retryable
    }

    /// The retry delay asked for, if any.
    pub fn retry_after_duration(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Some(kind) => write!(f, "{kind}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Any error becomes a retryable failure whose message is the error's `Display` (with its
/// sources, `: `-joined).
impl<E: std::error::Error> From<E> for WorkerError {
    fn from(e: E) -> Self {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        WorkerError::retryable(message)
    }
}
