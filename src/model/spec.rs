//! A task to add ([`TaskSpec`], the add body and the embedder's builder) and what its
//! validation makes of it ([`NewTask`], every default applied).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::*;

/// The `retry` object of an add, as sent: each field absent takes its default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    max_attempts: Option<u32>,
    initial_interval_ms: Option<u64>,
    backoff_coefficient: Option<f64>,
    maximum_interval_ms: Option<u64>,
}

impl RetryRequest {
    /// The policy, defaults applied, checked.
    fn policy(self) -> Result<RetryPolicy> {
        let r = self;
        let d = RetryPolicy::default();
        let initial = check_duration(
            "retry.initial_interval_ms",
            r.initial_interval_ms.unwrap_or(d.initial_interval_ms),
        )?;
        if initial == 0 {
            return Err(Error::invalid(
                "retry.initial_interval_ms must be at least 1",
            ));
        }
        let coefficient = r.backoff_coefficient.unwrap_or(d.backoff_coefficient);
        if !(1.0..=1000.0).contains(&coefficient) {
            return Err(Error::invalid(
                "retry.backoff_coefficient must be between 1.0 and 1000",
            ));
        }
        // Temporal's default: the maximum interval is 100 times the initial one.
        let maximum = match r.maximum_interval_ms {
            Some(m) => check_duration("retry.maximum_interval_ms", m)?,
            None => initial.saturating_mul(100).min(MAX_DURATION_MS),
        };
        if maximum < initial {
            return Err(Error::invalid(
                "retry.maximum_interval_ms must be at least retry.initial_interval_ms",
            ));
        }
        Ok(RetryPolicy {
            max_attempts: r.max_attempts.unwrap_or(0),
            initial_interval_ms: initial,
            backoff_coefficient: coefficient,
            maximum_interval_ms: maximum,
        })
    }
}

/// The `route_to` object of an add, as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    identity: String,
    #[serde(default, deserialize_with = "present")]
    fallback_after_ms: Option<Option<u64>>,
}

/// A task to add: the body of `POST {q}/tasks` (unknown fields are rejected), or built with
/// its methods by an embedder. [`TaskSpec::validate`] applies the defaults and every check,
/// the one place an add is validated.
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    task_type: String,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    task_id: Option<String>,
    priority: Option<i64>,
    fairness_key: Option<String>,
    fairness_weight: Option<f64>,
    delay_ms: Option<u64>,
    schedule_to_start_timeout_ms: Option<u64>,
    start_to_close_timeout_ms: Option<u64>,
    heartbeat_timeout_ms: Option<u64>,
    retry: Option<RetryRequest>,
    route_to: Option<RouteRequest>,
    headers: Option<BTreeMap<String, String>>,
    /// Not in the add body: set by the embedding API ([`TaskSpec::serial`]).
    #[serde(skip)]
    serial: bool,
}

/// A validated task to add, with every default applied.
#[derive(Debug, Clone)]
pub struct NewTask {
    /// Idempotency key; generated when the client sent none.
    pub task_id: String,
    /// The client chose `task_id`. A generated id (a random UUID) names no earlier task, so
    /// an add with one skips the duplicate lookup in the store.
    pub id_given: bool,
    /// What kind of work this is.
    pub task_type: String,
    /// Any JSON, kept as the exact text the client sent.
    pub payload: Box<RawValue>,
    /// 1 (first) … 5 (last).
    pub priority: u8,
    /// Tenant key for fair dispatch.
    pub fairness_key: Option<String>,
    /// Share of dispatch for the key.
    pub fairness_weight: f64,
    /// Not dispatched before now + delay.
    pub delay_ms: u64,
    /// Longest wait in the queue before `timed_out`.
    pub schedule_to_start_timeout_ms: Option<u64>,
    /// Lease length per attempt.
    pub start_to_close_timeout_ms: u64,
    /// The lease also ends this long after the last heartbeat.
    pub heartbeat_timeout_ms: Option<u64>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Optional routing to one worker.
    pub route_to: Option<RouteTo>,
    /// String headers, delivered as is.
    pub headers: BTreeMap<String, String>,
    /// Given one at a time per fairness key, in order (see [`TaskSpec::serial`]).
    pub serial: bool,
}

/// A v7 UUID: the time in milliseconds, then random bits from the thread's userspace generator
/// (`Uuid::now_v7` and `new_v4` ask the kernel, one `getrandom` system call per task). Ids that
/// sort by time keep the records of tasks added together side by side in the store, so the
/// writes of a burst (add, lease, settle) touch a few hot pages instead of one random page each.
fn generated_task_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random())
        .into_uuid()
        .to_string()
}

/// JSON `null` as raw text: the payload or result of a client that sent none.
pub fn null_json() -> Box<RawValue> {
    RawValue::from_string("null".into()).expect("null is valid JSON")
}

impl TaskSpec {
    /// Validates every field and applies the defaults.
    pub fn validate(self) -> Result<NewTask> {
        validate_name("task_type", &self.task_type)?;
        let id_given = self.task_id.is_some();
        let task_id = match self.task_id {
            Some(id) => {
                validate_name("task_id", &id)?;
                id
            }
            None => generated_task_id(),
        };
        let priority = self.priority.unwrap_or(DEFAULT_PRIORITY as i64);
        if !PRIORITY_RANGE.contains(&priority) {
            return Err(Error::invalid(format!(
                "priority must be 1 (first) to 5 (last), got {priority}"
            )));
        }
        if let Some(k) = &self.fairness_key {
            validate_name("fairness_key", k)?;
        }
        let fairness_weight = self.fairness_weight.unwrap_or(1.0);
        if !(0.001..=1000.0).contains(&fairness_weight) {
            return Err(Error::invalid(format!(
                "fairness_weight must be 0.001–1000, got {fairness_weight}"
            )));
        }
        let start_to_close = check_duration(
            "start_to_close_timeout_ms",
            self.start_to_close_timeout_ms
                .unwrap_or(DEFAULT_START_TO_CLOSE_MS),
        )?;
        for (field, value) in [
            ("delay_ms", self.delay_ms),
            (
                "schedule_to_start_timeout_ms",
                self.schedule_to_start_timeout_ms,
            ),
            ("heartbeat_timeout_ms", self.heartbeat_timeout_ms),
        ] {
            if let Some(v) = value {
                check_duration(field, v)?;
            }
        }
        if start_to_close < MIN_START_TO_CLOSE_MS {
            return Err(Error::invalid(format!(
                "start_to_close_timeout_ms must be at least {MIN_START_TO_CLOSE_MS}, got {start_to_close}"
            )));
        }
        if self.heartbeat_timeout_ms == Some(0) {
            return Err(Error::invalid("heartbeat_timeout_ms must be at least 1"));
        }
        if self.schedule_to_start_timeout_ms == Some(0) {
            return Err(Error::invalid(
                "schedule_to_start_timeout_ms must be at least 1",
            ));
        }
        let route_to = match self.route_to {
            Some(r) => {
                validate_identity(&r.identity)
                    .map_err(|e| Error::invalid(format!("route_to.{e}")))?;
                let fallback_after_ms = r
                    .fallback_after_ms
                    .unwrap_or(Some(DEFAULT_FALLBACK_AFTER_MS));
                if let Some(f) = fallback_after_ms {
                    check_duration("route_to.fallback_after_ms", f)?;
                }
                Some(RouteTo {
                    identity: r.identity,
                    fallback_after_ms,
                })
            }
            None => None,
        };
        Ok(NewTask {
            task_id,
            id_given,
            task_type: self.task_type,
            payload: self.payload.unwrap_or_else(null_json),
            priority: priority as u8,
            fairness_key: self.fairness_key,
            fairness_weight,
            delay_ms: self.delay_ms.unwrap_or(0),
            schedule_to_start_timeout_ms: self.schedule_to_start_timeout_ms,
            start_to_close_timeout_ms: start_to_close,
            heartbeat_timeout_ms: self.heartbeat_timeout_ms,
            retry: self.retry.unwrap_or_default().policy()?,
            route_to,
            headers: self.headers.unwrap_or_default(),
            serial: self.serial,
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The builder of an embedder's task: each method sets the field of the add body.
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
            serial: false,
        }
    }

    /// Serial dispatch (an SQS FIFO queue's message groups): while a serial task of this
    /// fairness key (or of no key) is leased, no other serial task of the same key is given
    /// out, and one whose attempt fails or expires goes back to its place, before the key's
    /// later tasks, with no backoff.
    pub fn serial(mut self) -> Self {
        self.serial = true;
        self
    }

    /// Any JSON payload, delivered to the worker as is.
    pub fn payload(mut self, payload: Value) -> Self {
        // A `Value` always prints as valid JSON (its keys are strings, its numbers finite).
        self.payload = RawValue::from_string(payload.to_string()).ok();
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
        self.retry = Some(RetryRequest {
            max_attempts: Some(policy.max_attempts),
            initial_interval_ms: Some(policy.initial_interval_ms),
            backoff_coefficient: Some(policy.backoff_coefficient),
            maximum_interval_ms: Some(policy.maximum_interval_ms),
        });
        self
    }

    /// Only the poller with `identity` gets the task until `fallback_after` passes (`None`:
    /// never fall back), then any poller.
    pub fn route_to(
        mut self,
        identity: impl Into<String>,
        fallback_after: Option<Duration>,
    ) -> Self {
        self.route_to = Some(RouteRequest {
            identity: identity.into(),
            fallback_after_ms: Some(fallback_after.map(ms)),
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
}
