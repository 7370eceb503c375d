//! Every Prometheus metric of tasq, defined and registered in one place on an explicit
//! [`Registry`] (never the global default, so embedders can keep their own).
//!
//! Names are a contract with dashboards and alerts (`docs/METRICS.md`). Per-queue series carry
//! `namespace`, `task_queue`, `task_queue_type`; past `max_queue_series` queues, further queues
//! share the series `namespace="_other", task_queue="_other"`, so cardinality stays bounded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prometheus::{
    exponential_buckets, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec,
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::model::QueueKey;

/// The label value of queues past `max_queue_series`.
pub const OTHER: &str = "_other";
const QUEUE_LABELS: [&str; 3] = ["namespace", "task_queue", "task_queue_type"];

/// All metrics.
pub struct Metrics {
    registry: Registry,
    max_queue_series: usize,
    series: Mutex<HashSet<QueueKey>>,
    tasks_added: IntCounterVec,
    tasks_dispatched: IntCounterVec,
    tasks_completed: IntCounterVec,
    tasks_failed: IntCounterVec,
    tasks_expired: IntCounterVec,
    polls: IntCounterVec,
    pollers: IntGaugeVec,
    backlog_tasks: IntGaugeVec,
    backlog_age: GaugeVec,
    in_flight: IntGaugeVec,
    dead_letters: IntGaugeVec,
    registration_mismatch: IntGaugeVec,
    rate_limited: IntCounterVec,
    schedule_to_start: HistogramVec,
    task_run: HistogramVec,
    /// Queue actors alive.
    pub loaded_task_queues: IntGauge,
    /// Duration of one group commit.
    pub storage_flush_seconds: Histogram,
    /// Writes covered by one group commit.
    pub storage_flush_batch_size: Histogram,
    /// 1 while the store accepts writes, 0 after a failed write or sync.
    pub storage_healthy: IntGauge,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency by route pattern and method.
    pub http_request_duration: HistogramVec,
    /// Open WebSocket connections.
    pub websocket_connections: IntGauge,
    /// SQS endpoint requests by action and answer (`ok` or the error's query code).
    pub sqs_requests: IntCounterVec,
    /// Cluster mode.
    pub cluster: ClusterMetrics,
}

/// The `tasq_cluster_*` metrics (zero outside cluster mode).
pub struct ClusterMetrics {
    /// Queues this node owns, by node.
    pub queues_owned: IntGaugeVec,
    /// Requests sent on to the owning node, by route pattern.
    pub forwarded_requests: IntCounterVec,
    /// Queues taken over from a node that stopped heartbeating.
    pub takeovers: IntCounter,
    /// Writes refused because this node no longer owns the queue.
    pub fence_rejections: IntCounter,
    /// The nodes the database knows, by `state` (`alive`, `dead`), as this node last read them.
    pub nodes: IntGaugeVec,
    /// Requests answered 503 because the node owning their queue could not be reached.
    pub owner_unreachable: IntCounter,
}

impl ClusterMetrics {
    fn new() -> Self {
        let m = ClusterMetrics {
            queues_owned: IntGaugeVec::new(
                opts(
                    "tasq_cluster_queues_owned",
                    "Queues this node owns (cluster mode).",
                ),
                &["node"],
            )
            .expect("metric"),
            forwarded_requests: IntCounterVec::new(
                opts(
                    "tasq_cluster_forwarded_requests_total",
                    "Requests sent on to the node owning their queue.",
                ),
                &["route"],
            )
            .expect("metric"),
            takeovers: IntCounter::new(
                "tasq_cluster_takeovers_total",
                "Queues this node took over from a node that stopped heartbeating.",
            )
            .expect("metric"),
            fence_rejections: IntCounter::new(
                "tasq_cluster_fence_rejections_total",
                "Writes refused because this node no longer owns the queue.",
            )
            .expect("metric"),
            nodes: IntGaugeVec::new(
                opts(
                    "tasq_cluster_nodes",
                    "Nodes the database knows, alive or dead (unheard of for node_timeout).",
                ),
                &["state"],
            )
            .expect("metric"),
            owner_unreachable: IntCounter::new(
                "tasq_cluster_owner_unreachable_total",
                "Requests answered 503 because the node owning their queue could not be reached.",
            )
            .expect("metric"),
        };
        // Both states exported from the start (0 outside cluster mode), so alerts on them
        // see a series rather than nothing.
        for state in ["alive", "dead"] {
            m.nodes.with_label_values(&[state]).set(0);
        }
        m
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates and registers every metric on a registry of its own.
    pub fn new(max_queue_series: usize) -> Arc<Self> {
        Self::with_registry(max_queue_series, Registry::new())
            .expect("a new registry holds no metric yet, so no name clashes")
    }

    /// Creates every metric and registers it on `registry`, e.g. an embedder's own, so one
    /// scrape of that registry shows tasq's metrics beside the embedder's. `/metrics` then
    /// renders the whole registry. Fails when a metric of the same name is registered there
    /// already (for example by a second `Metrics` on the same registry).
    pub fn with_registry(
        max_queue_series: usize,
        registry: Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let latency = exponential_buckets(0.0005, 2.0, 18).expect("valid buckets");
        let q = &QUEUE_LABELS;
        let with =
            |extra: &'static str| vec![QUEUE_LABELS[0], QUEUE_LABELS[1], QUEUE_LABELS[2], extra];
        let m = Metrics {
            max_queue_series,
            series: Mutex::new(HashSet::new()),
            tasks_added: IntCounterVec::new(
                opts(
                    "tasq_tasks_added_total",
                    "Tasks accepted (duplicates not counted).",
                ),
                q,
            )
            .expect("metric"),
            tasks_dispatched: IntCounterVec::new(
                opts(
                    "tasq_tasks_dispatched_total",
                    "Tasks given to a worker; match=sync: handed to a waiting poller on add.",
                ),
                &with("match"),
            )
            .expect("metric"),
            tasks_completed: IntCounterVec::new(
                opts("tasq_tasks_completed_total", "Tasks completed."),
                q,
            )
            .expect("metric"),
            tasks_failed: IntCounterVec::new(
                opts(
                    "tasq_tasks_failed_total",
                    "Failed attempts; outcome=retry or dead_letter.",
                ),
                &with("outcome"),
            )
            .expect("metric"),
            tasks_expired: IntCounterVec::new(
                opts(
                    "tasq_tasks_expired_total",
                    "Leases or waits that ran out, by reason.",
                ),
                &with("reason"),
            )
            .expect("metric"),
            polls: IntCounterVec::new(
                opts("tasq_polls_total", "Finished polls by result."),
                &with("result"),
            )
            .expect("metric"),
            pollers: IntGaugeVec::new(opts("tasq_pollers", "Polls parked right now."), q)
                .expect("metric"),
            backlog_tasks: IntGaugeVec::new(opts("tasq_backlog_tasks", "Ready tasks waiting."), q)
                .expect("metric"),
            backlog_age: GaugeVec::new(
                opts("tasq_backlog_age_seconds", "Age of the oldest ready task."),
                q,
            )
            .expect("metric"),
            in_flight: IntGaugeVec::new(
                opts("tasq_in_flight_tasks", "Leased tasks not yet settled."),
                q,
            )
            .expect("metric"),
            dead_letters: IntGaugeVec::new(opts("tasq_dead_letter_tasks", "Dead letters kept."), q)
                .expect("metric"),
            registration_mismatch: IntGaugeVec::new(
                opts(
                    "tasq_registration_mismatch",
                    "1 while live pollers declare different task types, or a ready task's type \
                     has no live poller that declares it (a rolling upgrade in progress or stuck).",
                ),
                q,
            )
            .expect("metric"),
            rate_limited: IntCounterVec::new(
                opts(
                    "tasq_rate_limited_total",
                    "Dispatches held back by the queue's rate limit.",
                ),
                q,
            )
            .expect("metric"),
            schedule_to_start: HistogramVec::new(
                HistogramOpts::new(
                    "tasq_schedule_to_start_seconds",
                    "From ready to dispatched.",
                )
                .buckets(latency.clone()),
                q,
            )
            .expect("metric"),
            task_run: HistogramVec::new(
                HistogramOpts::new("tasq_task_run_seconds", "From dispatch to settle.")
                    .buckets(latency.clone()),
                q,
            )
            .expect("metric"),
            loaded_task_queues: IntGauge::new("tasq_loaded_task_queues", "Queue actors alive.")
                .expect("metric"),
            storage_flush_seconds: Histogram::with_opts(
                HistogramOpts::new("tasq_storage_flush_seconds", "One group commit.")
                    .buckets(latency.clone()),
            )
            .expect("metric"),
            storage_flush_batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "tasq_storage_flush_batch_size",
                    "Writes covered by one group commit.",
                )
                .buckets(exponential_buckets(1.0, 2.0, 12).expect("valid buckets")),
            )
            .expect("metric"),
            storage_healthy: IntGauge::new(
                "tasq_storage_healthy",
                "1 while the store accepts writes; 0 after a failed sync or write.",
            )
            .expect("metric"),
            http_requests: IntCounterVec::new(
                opts(
                    "tasq_http_requests_total",
                    "HTTP requests by route pattern, method and status.",
                ),
                &["route", "method", "status"],
            )
            .expect("metric"),
            http_request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "tasq_http_request_duration_seconds",
                    "HTTP request latency by route pattern and method.",
                )
                .buckets(latency),
                &["route", "method"],
            )
            .expect("metric"),
            websocket_connections: IntGauge::new(
                "tasq_websocket_connections",
                "Open WebSocket connections.",
            )
            .expect("metric"),
            sqs_requests: IntCounterVec::new(
                opts(
                    "tasq_sqs_requests_total",
                    "Requests to the SQS endpoint, by action and answer (ok, or the query error code).",
                ),
                &["action", "code"],
            )
            .expect("metric"),
            cluster: ClusterMetrics::new(),
            registry,
        };
        let build_info = IntGaugeVec::new(
            opts(
                "tasq_build_info",
                "Always 1; the version label tells the build.",
            ),
            &["version"],
        )
        .expect("metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tasks_added.clone()),
            Box::new(m.tasks_dispatched.clone()),
            Box::new(m.tasks_completed.clone()),
            Box::new(m.tasks_failed.clone()),
            Box::new(m.tasks_expired.clone()),
            Box::new(m.polls.clone()),
            Box::new(m.pollers.clone()),
            Box::new(m.backlog_tasks.clone()),
            Box::new(m.backlog_age.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.registration_mismatch.clone()),
            Box::new(m.rate_limited.clone()),
            Box::new(m.schedule_to_start.clone()),
            Box::new(m.task_run.clone()),
            Box::new(m.loaded_task_queues.clone()),
            Box::new(m.storage_flush_seconds.clone()),
            Box::new(m.storage_flush_batch_size.clone()),
            Box::new(m.storage_healthy.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_request_duration.clone()),
            Box::new(m.websocket_connections.clone()),
            Box::new(m.sqs_requests.clone()),
            Box::new(m.cluster.queues_owned.clone()),
            Box::new(m.cluster.forwarded_requests.clone()),
            Box::new(m.cluster.takeovers.clone()),
            Box::new(m.cluster.fence_rejections.clone()),
            Box::new(m.cluster.nodes.clone()),
            Box::new(m.cluster.owner_unreachable.clone()),
            Box::new(build_info),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        Ok(Arc::new(m))
    }

    /// The registry, to gather or to merge into an embedder's own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            log::error!("encoding metrics: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// True when `key` has series of its own (taking one while there is room).
    fn own_series(&self, key: &QueueKey) -> bool {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.contains(key) || (series.len() < self.max_queue_series && series.insert(key.clone()))
    }

    /// True when `key` has per-queue series of its own (taking one if the bound allows).
    pub fn has_own_series(&self, key: &QueueKey) -> bool {
        self.own_series(key)
    }

    /// Sets the gauges of a queue no actor holds (after a restart, or once it went idle), so
    /// its backlog and dead letters show before anyone touches it. Queues past the series
    /// bound are left out: the shared `_other` series sums what loaded actors report.
    pub fn report_resting(&self, key: &QueueKey, v: GaugeValues) {
        if self.own_series(key) {
            let l = [key.namespace(), key.name(), key.queue_type().as_str()];
            self.gauges(&l).set(v);
        }
    }

    /// The gauges of the series labelled `l`.
    fn gauges(&self, l: &[&str; 3]) -> Gauges {
        Gauges {
            pollers: self.pollers.with_label_values(l),
            backlog: self.backlog_tasks.with_label_values(l),
            backlog_age: self.backlog_age.with_label_values(l),
            in_flight: self.in_flight.with_label_values(l),
            dead: self.dead_letters.with_label_values(l),
            mismatch: self.registration_mismatch.with_label_values(l),
        }
    }

    /// The per-queue series of `key` (or the shared `_other` series past the bound).
    pub fn queue(&self, key: &QueueKey) -> QueueMetrics {
        let own = self.own_series(key);
        let (ns, name) = if own {
            (key.namespace(), key.name())
        } else {
            (OTHER, OTHER)
        };
        let l = [ns, name, key.queue_type().as_str()];
        let e = |extra: &'static str| [ns, name, key.queue_type().as_str(), extra];
        QueueMetrics {
            shared: !own,
            added: self.tasks_added.with_label_values(&l),
            dispatched_sync: self.tasks_dispatched.with_label_values(&e("sync")),
            dispatched_backlog: self.tasks_dispatched.with_label_values(&e("backlog")),
            completed: self.tasks_completed.with_label_values(&l),
            failed_retry: self.tasks_failed.with_label_values(&e("retry")),
            failed_dead: self.tasks_failed.with_label_values(&e("dead_letter")),
            expired_start_to_close: self.tasks_expired.with_label_values(&e("start_to_close")),
            expired_heartbeat: self.tasks_expired.with_label_values(&e("heartbeat")),
            expired_schedule_to_start: self
                .tasks_expired
                .with_label_values(&e("schedule_to_start")),
            polls_task: self.polls.with_label_values(&e("task")),
            polls_timeout: self.polls.with_label_values(&e("timeout")),
            polls_cancelled: self.polls.with_label_values(&e("cancelled")),
            rate_limited: self.rate_limited.with_label_values(&l),
            schedule_to_start: self.schedule_to_start.with_label_values(&l),
            task_run: self.task_run.with_label_values(&l),
            gauges: self.gauges(&l),
            reported: GaugeValues::default(),
        }
    }
}

/// The gauge values of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GaugeValues {
    /// Parked polls.
    pub pollers: i64,
    /// Ready tasks.
    pub backlog: i64,
    /// Oldest ready task's age.
    pub backlog_age_seconds: f64,
    /// Leased tasks.
    pub in_flight: i64,
    /// Dead letters.
    pub dead: i64,
    /// 1 when pollers disagree on task types (see describe's `registration_mismatch`).
    pub mismatch: i64,
}

struct Gauges {
    pollers: IntGauge,
    backlog: IntGauge,
    backlog_age: Gauge,
    in_flight: IntGauge,
    dead: IntGauge,
    mismatch: IntGauge,
}

impl Gauges {
    /// Sets every gauge to `v`.
    fn set(&self, v: GaugeValues) {
        self.pollers.set(v.pollers);
        self.backlog.set(v.backlog);
        self.backlog_age.set(v.backlog_age_seconds);
        self.in_flight.set(v.in_flight);
        self.dead.set(v.dead);
        self.mismatch.set(v.mismatch);
    }
}

/// The series of one queue, resolved once when its actor starts so the hot path does no
/// label lookups.
pub struct QueueMetrics {
    shared: bool,
    /// Tasks accepted.
    pub added: IntCounter,
    /// Dispatched to a waiting poller on add.
    pub dispatched_sync: IntCounter,
    /// Dispatched from the backlog.
    pub dispatched_backlog: IntCounter,
    /// Completed.
    pub completed: IntCounter,
    /// Failed attempts retried.
    pub failed_retry: IntCounter,
    /// Failed attempts that made a dead letter.
    pub failed_dead: IntCounter,
    /// Start-to-close expiries.
    pub expired_start_to_close: IntCounter,
    /// Heartbeat expiries.
    pub expired_heartbeat: IntCounter,
    /// Schedule-to-start expiries.
    pub expired_schedule_to_start: IntCounter,
    /// Polls answered with tasks.
    pub polls_task: IntCounter,
    /// Polls answered empty.
    pub polls_timeout: IntCounter,
    /// Polls whose client went away.
    pub polls_cancelled: IntCounter,
    /// Dispatches held back by the rate limit.
    pub rate_limited: IntCounter,
    /// Ready → dispatched.
    pub schedule_to_start: Histogram,
    /// Dispatch → settle.
    pub task_run: Histogram,
    gauges: Gauges,
    reported: GaugeValues,
}

impl QueueMetrics {
    /// Reports the queue's gauges. A queue with its own series sets them; queues sharing the
    /// `_other` series add the change since their last report, so the shared series sums them.
    pub fn report(&mut self, now: GaugeValues) {
        if now == self.reported {
            return;
        }
        let g = &self.gauges;
        if self.shared {
            let was = self.reported;
            g.pollers.add(now.pollers - was.pollers);
            g.backlog.add(now.backlog - was.backlog);
            g.in_flight.add(now.in_flight - was.in_flight);
            g.dead.add(now.dead - was.dead);
            g.mismatch.add(now.mismatch - was.mismatch);
            // An age does not sum: the shared series shows the latest reported one.
            g.backlog_age.set(now.backlog_age_seconds);
        } else {
            g.set(now);
        }
        self.reported = now;
    }
}

impl Drop for QueueMetrics {
    /// An unloaded queue has no pollers and nothing in flight; its backlog and dead letters
    /// stay on disk, so a queue with its own series keeps showing them.
    fn drop(&mut self) {
        let keep = if self.shared {
            GaugeValues::default()
        } else {
            GaugeValues {
                pollers: 0,
                in_flight: 0,
                mismatch: 0,
                ..self.reported
            }
        };
        self.report(keep);
    }
}
