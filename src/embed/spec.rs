//! What an embedder builds to call the service: a task to add ([`TaskSpec`]), a long poll
//! ([`PollSpec`]) and a failed attempt ([`Failure`]), each with the HTTP body's fields, defaults
//! and validation.

use super::*;

/// A task to add: the fields of the HTTP add body, with the same defaults and validation.
///
/// ```
/// use std::time::Duration;
/// use serde_json::json;
/// use tasq::TaskSpec;
///
/// let spec = TaskSpec::new("send-email")
///     .payload(json!({"to": "a@example.com"}))
///     .task_id("order-17-email")
///     .priority(1)
///     .delay(Duration::from_secs(5))
///     .start_to_close_timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct TaskSpec {
    task_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fairness_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fairness_weight: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule_to_start_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_to_close_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route_to: Option<RouteTo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl TaskSpec {
    /// A task of type `task_type`, with a `null` payload and every other field defaulted.
    pub fn new(task_type: impl Into<String>) -> Self {
        TaskSpec {
            task_type: task_type.into(),
            payload: None,
            task_id: None,
            priority: None,
            fairness_key: None,
            fairness_weight: None,
            delay_ms: None,
            schedule_to_start_timeout_ms: None,
            start_to_close_timeout_ms: None,
            heartbeat_timeout_ms: None,
            retry: None,
            route_to: None,
            headers: None,
        }
    }

    /// Any JSON payload, delivered to the worker as is.
    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = Some(payload);
        self
    }

    /// An idempotency key: adding an id that exists already in the queue changes nothing.
    /// Generated (a UUID) when not set.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// 1 (first) … 5 (last); default 3.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(i64::from(priority));
        self
    }

    /// Dispatch fairly across fairness keys, by `weight` (0.001–1000, default 1.0).
    pub fn fairness(mut self, key: impl Into<String>, weight: f64) -> Self {
        self.fairness_key = Some(key.into());
        self.fairness_weight = Some(weight);
        self
    }

    /// Not dispatched before now + `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(ms(delay));
        self
    }

    /// Longest wait in the queue; past it the task is `timed_out` (a dead letter).
    pub fn schedule_to_start_timeout(mut self, timeout: Duration) -> Self {
        self.schedule_to_start_timeout_ms = Some(ms(timeout));
        self
    }

    /// Lease length of each attempt (at least 100 ms; default 60 s).
    pub fn start_to_close_timeout(mut self, timeout: Duration) -> Self {
        self.start_to_close_timeout_ms = Some(ms(timeout));
        self
    }

    /// The lease also ends this long after the last heartbeat.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout_ms = Some(ms(timeout));
        self
    }

    /// The retry policy (default: unlimited attempts, 1 s initial backoff doubling to 100 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Only the poller with `identity` gets the task until `fallback_after` passes (`None`:
    /// never fall back), then any poller.
    pub fn route_to(
        mut self,
        identity: impl Into<String>,
        fallback_after: Option<Duration>,
    ) -> Self {
        self.route_to = Some(RouteTo {
            identity: identity.into(),
            fallback_after_ms: fallback_after.map(ms),
        });
        self
    }

    /// A string header, delivered as is.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), value.into());
        self
    }

    /// Applies the HTTP API's validation and defaults, by going through the same request type.
    pub(super) fn validate(&self) -> Result<NewTask> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::invalid(format!("the task does not encode as JSON: {e}")))?;
        decode::<AddTaskRequest>(&body)?.validate()
    }
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
            wait: DEFAULT_POLL_WAIT,
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

    /// The checks of every poll (HTTP and embedded), giving the actor's message.
    pub(crate) fn validate(self, park_from: Instant) -> Result<Poll> {
        validate_identity(&self.identity)?;
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
        if let Some(types) = &self.task_types {
            for t in types {
                validate_name("task_types[]", t)?;
            }
        }
        if let Some(b) = &self.build_id {
            validate_name("build_id", b)?;
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

/// A failed attempt, for [`Tasq::fail`]: the fields of the HTTP fail body.
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
    pub(super) error: TaskError,
    pub(super) non_retryable: bool,
    pub(super) retry_after: Option<Duration>,
}

impl Failure {
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
