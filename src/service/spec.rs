//! What a caller builds to call the service: a long poll ([`PollSpec`]) and a failed attempt
//! ([`Failure`]), each with the HTTP body's fields, defaults and validation. (A task to add,
//! [`crate::model::TaskSpec`], is the model's.)

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::model::{
    validate_identity, validate_name, TaskError, DEFAULT_POLL_WAIT_MS, MAX_POLL_TASKS,
    MAX_POLL_WAIT_MS,
};
use crate::queue::messages::{Poll, SettleOp};

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The checks of every worker that asks for tasks, by poll or socket.
pub(super) fn check_worker(
    identity: &str,
    task_types: Option<&[String]>,
    build_id: Option<&str>,
) -> Result<()> {
    validate_identity(identity)?;
    for t in task_types.unwrap_or_default() {
        validate_name("task_types[]", t)?;
    }
    if let Some(b) = build_id {
        validate_name("build_id", b)?;
    }
    Ok(())
}

/// A long poll: the fields of the HTTP poll body.
///
/// ```
/// use std::time::Duration;
/// use tasq::PollSpec;
///
/// let poll = PollSpec::new("host-3@4711")
///     .max_tasks(10)
///     .wait(Duration::from_secs(5))
///     .task_types(["send-email"]);
/// ```
#[derive(Debug, Clone)]
pub struct PollSpec {
    identity: String,
    max_tasks: u32,
    wait: Duration,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    max_tasks_per_second: Option<f64>,
}

impl PollSpec {
    /// A poll by the worker `identity` for one task, waiting up to 60 s.
    pub fn new(identity: impl Into<String>) -> Self {
        PollSpec {
            identity: identity.into(),
            max_tasks: 1,
            wait: Duration::from_millis(DEFAULT_POLL_WAIT_MS),
            task_types: None,
            build_id: None,
            max_tasks_per_second: None,
        }
    }

    /// Most tasks to take (1–100).
    pub fn max_tasks(mut self, n: u32) -> Self {
        self.max_tasks = n;
        self
    }

    /// How long to wait for a task (0–300 s); zero answers at once.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Only tasks of these types (this worker's registrations); default any type.
    pub fn task_types<S: Into<String>>(mut self, types: impl IntoIterator<Item = S>) -> Self {
        self.task_types = Some(types.into_iter().map(Into::into).collect());
        self
    }

    /// The worker's build id, shown by describe.
    pub fn build_id(mut self, build_id: impl Into<String>) -> Self {
        self.build_id = Some(build_id.into());
        self
    }

    /// A dispatch limit for the whole queue, requested by this worker.
    pub fn max_tasks_per_second(mut self, rate: f64) -> Self {
        self.max_tasks_per_second = Some(rate);
        self
    }

    /// Checks the poll as [`Tasq::poll`](super::Tasq::poll) would, without polling: for a
    /// request that polls only after something else succeeded (`next` on a settle).
    pub fn check(&self) -> Result<()> {
        self.clone().validate(Instant::now()).map(drop)
    }

    /// The worker identity of the poll.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The checks of every poll (HTTP and embedded), giving the actor's message.
    pub(crate) fn validate(self, park_from: Instant) -> Result<Poll> {
        check_worker(
            &self.identity,
            self.task_types.as_deref(),
            self.build_id.as_deref(),
        )?;
        if !(1..=MAX_POLL_TASKS).contains(&self.max_tasks) {
            return Err(Error::invalid(format!(
                "max_tasks must be 1–{MAX_POLL_TASKS}, got {}",
                self.max_tasks
            )));
        }
        let wait_ms = ms(self.wait);
        if wait_ms > MAX_POLL_WAIT_MS {
            return Err(Error::invalid(format!(
                "wait_ms must be 0–{MAX_POLL_WAIT_MS}, got {wait_ms}"
            )));
        }
        if self
            .max_tasks_per_second
            .is_some_and(|r| !r.is_finite() || r < 0.0)
        {
            return Err(Error::invalid(
                "max_tasks_per_second must be a number ≥ 0 or null",
            ));
        }
        Ok(Poll {
            identity: self.identity,
            max_tasks: self.max_tasks as usize,
            task_types: self.task_types,
            build_id: self.build_id,
            max_tasks_per_second: self.max_tasks_per_second,
            park_until: (wait_ms > 0).then(|| park_from + Duration::from_millis(wait_ms)),
        })
    }
}

/// A failed attempt, for [`Tasq::fail`](super::Tasq::fail): the fields of the HTTP fail body.
///
/// ```
/// use std::time::Duration;
/// use tasq::Failure;
///
/// let retry_soon = Failure::new("mail server busy").retry_after(Duration::from_secs(2));
/// let give_up = Failure::new("no such address").kind("BadAddress").non_retryable();
/// ```
#[derive(Debug, Clone)]
pub struct Failure {
    error: TaskError,
    non_retryable: bool,
    retry_after: Option<Duration>,
}

impl Failure {
    /// The settle it asks for.
    pub(super) fn into_op(self) -> SettleOp {
        SettleOp::Fail {
            error: self.error,
            non_retryable: self.non_retryable,
            retry_after_ms: self.retry_after.map(ms),
        }
    }

    /// A retryable failure with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            error: TaskError {
                message: message.into(),
                kind: None,
            },
            non_retryable: false,
            retry_after: None,
        }
    }

    /// The error's type (free text, the HTTP `error.type`).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.error.kind = Some(kind.into());
        self
    }

    /// No retry: the task becomes a dead letter (`failed`) now.
    pub fn non_retryable(mut self) -> Self {
        self.non_retryable = true;
        self
    }

    /// Retry after `wait` instead of the retry policy's backoff.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }
}
