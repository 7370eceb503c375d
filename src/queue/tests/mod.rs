//! Unit tests of the queue logic: a registry and its queue actors over a temporary sled store,
//! driven through the same messages the service sends, with a [`ManualClock`] that moves only
//! when a test says so. A test moves the clock, then sends [`Tick`] (what the actor's timer
//! does at its next deadline), so leases, backoff and timeouts of any length take no time.
//!
//! - `dispatch`: sync match, priority and fairness order, delayed tasks, routing by task type.
//! - `leases`: lease expiry and retry backoff, heartbeat timeout, schedule-to-start.
//! - `limits`: the dispatch throttle and pause, the idle stop.

mod dispatch;
mod leases;
mod limits;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::messages::*;
use super::pollers::Delivery;
use super::Shared;
use crate::clock::{Clock, ManualClock};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{
    LeaseToken, QueueKey, QueueType, Task, TaskError, TaskRecord, TaskSpec, TaskState,
};
use crate::registry::Queues;
use crate::storage::{Store, StoreOptions};

/// 2026-01-01T00:00:00Z: where every test's clock starts.
const START_MS: u64 = 1_767_225_600_000;

/// One queue (`default/q`, activity) of a registry over a temporary store and a manual clock.
struct Harness {
    queues: Queues,
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    key: QueueKey,
}

impl Harness {
    fn new() -> Self {
        Self::with_config(Config::default())
    }

    fn with_config(config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = Metrics::new(100);
        let store = crate::storage::open(dir.path(), &StoreOptions::scratch(), metrics.clone())
            .expect("store");
        let clock = Arc::new(ManualClock::new(START_MS));
        let queues = Queues::start(Arc::new(Shared {
            store: store.clone(),
            config: Arc::new(config),
            metrics,
            parked: Arc::default(),
            clock: clock.clone(),
            owns: None,
        }));
        let key = QueueKey::new("default", "q", QueueType::Activity).expect("key");
        Harness {
            queues,
            store,
            clock,
            key,
        }
    }

    /// Adds the task described by `json` (an add's body, as a client sends it).
    async fn add(&self, json: &str) -> String {
        let req: TaskSpec = serde_json::from_str(json).expect("add body");
        let task = req.validate().expect("valid add");
        self.queues
            .add_one(&self.key, task, &*self.store)
            .await
            .expect("add")
            .task_id
    }

    /// A poll of `identity` for up to `max` tasks of any type, answered at once.
    async fn poll(&self, identity: &str, max: usize) -> Vec<Task> {
        match self.queues.poll(&self.key, poll(identity, max, None)).await {
            Ok(PollOutcome::Now(delivery)) => self.accept(delivery).await,
            Ok(PollOutcome::Parked { .. }) => panic!("a poll that may not park parked"),
            Err(e) => panic!("poll failed: {e}"),
        }
    }

    /// Task ids of a poll for up to `max` tasks.
    async fn poll_ids(&self, max: usize) -> Vec<String> {
        let tasks = self.poll("w", max).await;
        tasks.into_iter().map(|t| t.task_id).collect()
    }

    /// A poll of `identity` for `types` that parks (nothing is ready): where its task arrives.
    async fn park(&self, identity: &str, types: Option<&[&str]>) -> oneshot::Receiver<Delivery> {
        let mut p = poll(
            identity,
            1,
            Some(self.clock.instant() + Duration::from_secs(60)),
        );
        p.task_types = types.map(|t| t.iter().map(|s| s.to_string()).collect());
        match self.queues.poll(&self.key, p).await.expect("poll") {
            PollOutcome::Parked { rx, .. } => rx,
            PollOutcome::Now(_) => panic!("expected the poll to park"),
        }
    }

    /// Takes a delivery once its write is durable, as the service does.
    async fn accept(&self, delivery: Delivery) -> Vec<Task> {
        if !delivery.is_empty() {
            self.store
                .durable_since(delivery.write())
                .await
                .expect("durable");
        }
        delivery.accept()
    }

    /// Settles `task`'s lease with `op`.
    async fn settle(&self, task: &Task, op: SettleOp) -> crate::error::Result<Settlement> {
        let token = LeaseToken::decode(&task.lease).expect("lease token");
        let settle = Settle {
            task_id: task.task_id.clone(),
            lease_id: token.lease_id,
            op,
        };
        self.queues
            .settle_one(&self.key, settle, &*self.store)
            .await
    }

    /// Fails `task`'s lease, retryable.
    async fn fail(&self, task: &Task) -> Settlement {
        let op = SettleOp::Fail {
            error: TaskError {
                message: "boom".into(),
                kind: None,
            },
            non_retryable: false,
            retry_after_ms: None,
        };
        self.settle(task, op).await.expect("fail")
    }

    /// Completes `task`'s lease.
    async fn complete(&self, task: &Task) -> Settlement {
        let op = SettleOp::Complete {
            result: crate::model::null_json(),
        };
        self.settle(task, op).await.expect("complete")
    }

    /// Moves the clock by `ms` and lets the queue act on what came due.
    async fn advance(&self, ms: u64) {
        self.clock.advance(Duration::from_millis(ms));
        self.queues.call(&self.key, Tick).await.expect("tick");
    }

    /// Hands `task_id`'s schedule-to-start deadline to the queue, as the registry's sweep
    /// does once the store says it passed.
    async fn sweep_waiting(&self, task_id: &str) {
        let expire = ExpireWaiting {
            task_ids: vec![task_id.to_string()],
        };
        self.queues.call(&self.key, expire).await.expect("sent");
    }

    /// The stored record of `task_id`.
    fn record(&self, task_id: &str) -> TaskRecord {
        self.store
            .task(&self.key, task_id)
            .expect("read")
            .expect("record exists")
    }

    /// The queue's stats.
    async fn stats(&self) -> Stats {
        self.queues
            .call(&self.key, Describe)
            .await
            .expect("describe sent")
            .expect("describe")
    }
}

/// A poll message; `park_until` `None` answers at once.
fn poll(identity: &str, max: usize, park_until: Option<std::time::Instant>) -> Poll {
    Poll {
        identity: identity.into(),
        max_tasks: max,
        task_types: None,
        build_id: None,
        max_tasks_per_second: None,
        park_until,
    }
}

/// Asserts the record of `task_id` is in `state` after `attempt` attempts.
fn assert_state(h: &Harness, task_id: &str, state: TaskState, attempt: u32) {
    let rec = h.record(task_id);
    assert_eq!((rec.state, rec.attempt), (state, attempt), "{task_id}");
}
