//! A streaming worker for tasq: [`Worker`] holds one WebSocket to a task queue
//! (`GET {q}/connect`, see "Streaming workers" in the API contract), keeps the socket's credit
//! at a configured concurrency, runs an async handler per task, heartbeats long tasks while
//! their handler runs, settles each task (complete, or fail with the handler's
//! [`WorkerError`]), reconnects with capped exponential backoff when the socket drops, and
//! stops gracefully on a shutdown signal.
//!
//! It runs inside any tokio runtime (no actix needed) and is behind the `client` cargo feature,
//! on by default.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tasq::client::{Worker, WorkerError, WorkerTask};
//!
//! # async fn example() -> Result<(), tasq::client::ClientError> {
//! let worker = Worker::builder("http://127.0.0.1:7280", "default", "emails")
//!     .identity("mailer-1")
//!     .task_types(["send-email"])
//!     .concurrency(8)
//!     .build()?;
//!
//! let handler = |task: WorkerTask| async move {
//!     let to = task.payload["to"]
//!         .as_str()
//!         .ok_or_else(|| WorkerError::non_retryable("payload.to is missing"))?;
//!     // … send the mail …
//!     Ok(serde_json::json!({ "sent_to": to }))
//! };
//!
//! // Runs until Ctrl-C, then lets running tasks finish and settles them.
//! worker
//!     .run_until(handler, async {
//!         let _ = tokio::signal::ctrl_c().await;
//!     })
//!     .await
//! # }
//! ```
//!
//! # Credit and concurrency
//!
//! The server never has more unsettled tasks out on a socket than the credit given, and a
//! settle (or a lease that ends otherwise) gives that credit back by itself. So the worker sends
//! `concurrency` credit when it connects and tops it up only for tasks that outlived an earlier
//! connection. A lease that expires while its handler still runs frees its slot on the server,
//! so for that moment one more task than `concurrency` may run.
//!
//! # Disconnects and shutdown
//!
//! When the socket drops, the server puts the tasks that were out on it back in the queue
//! (attempt counted). Their handlers still run to the end here; their settles are sent again
//! on the next connection (settles are idempotent) and are answered `lease_lost` if the task
//! was released meanwhile.
//!
//! On shutdown the worker takes no new task, waits for running handlers and for the server's
//! answer to every settle, then closes the socket. It sends `{"op": "drain"}` first, so the
//! server pushes nothing more; a task already on its way is not started and goes back to the
//! queue when the socket closes (attempt counted).

mod driver;
mod frames;
mod task;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use task::{WorkerError, WorkerTask};

/// The largest concurrency a worker may ask for (the largest `credit` frame).
pub const MAX_CONCURRENCY: u32 = 1000;

/// Why a [`Worker`] could not be built or stopped running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A builder setting is not usable.
    #[error("invalid worker configuration: {0}")]
    InvalidConfig(String),
    /// The server refused the connection in a way that retrying cannot fix (a bad name or
    /// identity, a missing or wrong API key): the status and the body of its answer.
    #[error("the server refused the connection with HTTP {status}: {body}")]
    Rejected {
        /// The HTTP status of the refused upgrade.
        status: u16,
        /// The answer's body (the API's `{"error": …}` JSON), lossily as text.
        body: String,
    },
}

/// Builds a [`Worker`]; start with [`Worker::builder`].
#[derive(Debug, Clone)]
pub struct WorkerBuilder {
    server: String,
    namespace: String,
    queue: String,
    queue_type: String,
    identity: Option<String>,
    task_types: Vec<String>,
    build_id: Option<String>,
    api_key: Option<String>,
    concurrency: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    idle_timeout: Duration,
    max_frame_bytes: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    on_settled: Option<driver::SettledHook>,
}

impl WorkerBuilder {
    /// Calls `hook(task_id, state)` once a task's settle is on disk: `completed`; `pending`
    /// (a failed attempt that will run again); `failed` or `timed_out` (a dead letter now);
    /// `cancelled`. Only the server knows which a failure leads to (the task's retry policy).
    pub fn on_settled(mut self, hook: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        self.on_settled = Some(driver::SettledHook(Arc::new(hook)));
        self
    }

    /// The TLS settings for an `https://` (`wss://`) server: the authorities its certificate
    /// is checked against. Without them, the public web authorities (Mozilla's list).
    pub fn tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Which of the queue's two types to serve: `"activity"` (the default) or `"workflow"`.
    pub fn queue_type(mut self, queue_type: impl Into<String>) -> Self {
        self.queue_type = queue_type.into();
        self
    }

    /// The worker's identity as describe lists it (default `tasq-worker@<pid>`).
    pub fn identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Only take tasks of these types (default: any type).
    pub fn task_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.task_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// The worker's build id, as describe lists it.
    pub fn build_id(mut self, build_id: impl Into<String>) -> Self {
        self.build_id = Some(build_id.into());
        self
    }

    /// An API key with the worker role, sent as `Authorization: Bearer <key>`.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How many tasks may run at once: the credit kept on the socket (1–1000, default 1).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Reconnect backoff: the first delay (default 100 ms), doubled per failed attempt up to
    /// `max` (default 10 s), each delay jittered down by up to half.
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// A connection that brings no frame at all for this long is taken as dead and replaced
    /// (default 60 s; the server pings every 15 s).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// The server's `max_payload_bytes` (default 1 MiB, the server's default). A `complete`
    /// frame over it would make the server close the socket, so the task is failed
    /// non-retryably instead, with an error that says the result is too large.
    pub fn max_frame_bytes(mut self, n: usize) -> Self {
        self.max_frame_bytes = n;
        self
    }

    /// Checks the settings and builds the worker.
    pub fn build(self) -> Result<Worker, ClientError> {
        let bad = |m: String| Err(ClientError::InvalidConfig(m));
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return bad(format!(
                "concurrency must be 1–{MAX_CONCURRENCY}, got {}",
                self.concurrency
            ));
        }
        if self.queue_type != "activity" && self.queue_type != "workflow" {
            return bad(format!(
                "queue type must be \"activity\" or \"workflow\", got {:?}",
                self.queue_type
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return bad("reconnect backoff needs 0 < initial <= max".into());
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout must be above zero".into());
        }
        if self.max_frame_bytes < 256 {
            return bad("max_frame_bytes must be at least 256".into());
        }
        for (what, name) in [("namespace", &self.namespace), ("queue", &self.queue)] {
            if name.is_empty() || !name.bytes().all(is_name_byte) {
                return bad(format!(
                    "{what} {name:?} must be 1–200 characters from A–Z a–z 0–9 . _ - : @"
                ));
            }
        }
        let base = self.server.trim_end_matches('/');
        let ws_base = if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if base.starts_with("ws://") || base.starts_with("wss://") {
            base.to_string()
        } else {
            return bad(format!(
                "server {:?} must start with http://, https://, ws:// or wss://",
                self.server
            ));
        };
        let tls = match (ws_base.starts_with("wss://"), self.tls) {
            (false, _) => None,
            (true, Some(tls)) => Some(tls),
            (true, None) => Some(crate::config::pem::public().map_err(ClientError::InvalidConfig)?),
        };
        let identity = self
            .identity
            .unwrap_or_else(|| format!("tasq-worker@{}", std::process::id()));
        let mut url = format!(
            "{ws_base}/api/v1/namespaces/{}/task-queues/{}/{}/connect?identity={}",
            self.namespace,
            self.queue,
            self.queue_type,
            encode_query(&identity)
        );
        if !self.task_types.is_empty() {
            url.push_str("&task_types=");
            url.push_str(&encode_query(&self.task_types.join(",")));
        }
        if let Some(b) = &self.build_id {
            url.push_str("&build_id=");
            url.push_str(&encode_query(b));
        }
        Ok(Worker {
            cfg: Arc::new(driver::Settings {
                url,
                identity,
                api_key: self.api_key,
                concurrency: self.concurrency,
                backoff_initial: self.backoff_initial,
                backoff_max: self.backoff_max,
                idle_timeout: self.idle_timeout,
                max_frame_bytes: self.max_frame_bytes,
                tls,
                on_settled: self.on_settled,
            }),
        })
    }
}

/// A streaming worker for one task queue; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Worker {
    cfg: Arc<driver::Settings>,
}

impl Worker {
    /// Starts building a worker for `{server}/api/v1/namespaces/{namespace}/task-queues/{queue}`
    /// (activity type unless [`WorkerBuilder::queue_type`] says otherwise). `server` is the
    /// server's base URL, e.g. `http://127.0.0.1:7280`.
    pub fn builder(
        server: impl Into<String>,
        namespace: impl Into<String>,
        queue: impl Into<String>,
    ) -> WorkerBuilder {
        WorkerBuilder {
            server: server.into(),
            namespace: namespace.into(),
            queue: queue.into(),
            queue_type: "activity".into(),
            identity: None,
            task_types: Vec::new(),
            build_id: None,
            api_key: None,
            concurrency: 1,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_frame_bytes: 1 << 20,
            tls: None,
            on_settled: None,
        }
    }

    /// The identity the worker connects with.
    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// The WebSocket URL the worker connects to.
    pub fn url(&self) -> &str {
        &self.cfg.url
    }

    /// Runs until the server refuses the connection for good (see [`ClientError::Rejected`]);
    /// like [`Worker::run_until`] with a shutdown signal that never comes.
    pub async fn run<H, F>(&self, handler: H) -> Result<(), ClientError>
    where
        H: Fn(WorkerTask) -> F + Send + Sync + 'static,
        F: Future<Output = Result<serde_json::Value, WorkerError>> + Send + 'static,
    {
        self.run_until(handler, std::future::pending::<()>()).await
    }

    /// Runs the worker until `shutdown` completes, then stops gracefully: it takes no new
    /// task, lets running handlers finish, settles their tasks, waits for the server to
    /// acknowledge those settles and closes the socket. Returns `Ok(())` then.
    ///
    /// Each task runs `handler` on a task of its own (`tokio::spawn`): `Ok(result)` completes
    /// the task with `result`, `Err(e)` fails it (see [`WorkerError`]), a panic fails it
    /// retryably with type `Panic`.
    ///
    /// Returns an error only when the server refuses the connection in a way retrying cannot
    /// fix; anything else (server down, network drop, restart) is retried with backoff.
    pub async fn run_until<H, F, S>(&self, handler: H, shutdown: S) -> Result<(), ClientError>
    where
        H: Fn(WorkerTask) -> F + Send + Sync + 'static,
        F: Future<Output = Result<serde_json::Value, WorkerError>> + Send + 'static,
        S: Future<Output = ()>,
    {
        driver::Driver::new(self.cfg.clone(), Arc::new(handler))
            .run(shutdown)
            .await
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@')
}

/// Percent-encodes a query value or a path segment (everything but RFC 3986 unreserved
/// characters).
pub use crate::model::percent::encode as encode_query;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_connect_url() {
        let w = Worker::builder("http://127.0.0.1:7280/", "default", "orders")
            .queue_type("workflow")
            .identity("host 3@4711")
            .task_types(["a", "b"])
            .build_id("v1")
            .build()
            .expect("valid");
        assert_eq!(
            w.url(),
            "ws://127.0.0.1:7280/api/v1/namespaces/default/task-queues/orders/workflow/connect\
             ?identity=host%203%404711&task_types=a%2Cb&build_id=v1"
        );
    }

    #[test]
    fn rejects_bad_settings() {
        let b = || Worker::builder("http://h:1", "default", "q");
        assert!(b().concurrency(0).build().is_err());
        assert!(b().concurrency(1001).build().is_err());
        assert!(b().queue_type("batch").build().is_err());
        assert!(Worker::builder("h:1", "default", "q").build().is_err());
        // HTTPS streams over wss://, checked against the public authorities by default.
        let tls = Worker::builder("https://h:1", "default", "q")
            .build()
            .expect("https");
        assert!(tls.url().starts_with("wss://h:1/"), "{}", tls.url());
        assert!(Worker::builder("http://h:1", "a/b", "q").build().is_err());
        assert!(b().build().is_ok());
    }
}
