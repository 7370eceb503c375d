//! `tasq bench`: the project's own load generator, in the same binary as the server (as
//! `redis-benchmark` ships with Redis). Every workload runs against a server that is already
//! running (`--server`, default `http://127.0.0.1:7280`) and prints a result table, or with
//! `--json` one JSON object, for scripts and for the peer comparison.
//!
//! # Workloads
//!
//! - `backlog`: add N tasks with P requests in flight and no worker, then drain them with C
//!   workers (poll, complete): add rate and drain rate.
//! - `live`: C workers already polling; add N with P in flight: completed tasks/s end to end,
//!   from the first add to the last acknowledged complete.
//! - `latency --rate R`: adds paced at R/s with C polling workers: add-call-start → worker
//!   receipt latency p50/p99/p99.9 (HDR histogram; the start instant travels in the payload).
//! - `queues --count M`: one task in each of M distinct queues, then drain: the server's RSS
//!   before, at peak, and after `--idle-wait` (its `queue_idle_timeout`).
//! - `pollers --count K`: K long polls parked at once: the server's RSS per parked poll.
//!
//! `--transport ws` runs the workers of `backlog`, `live` and `latency` as streaming workers
//! (`GET {q}/connect`, credit-based); `--max-tasks` sets the batch size of HTTP polls;
//! `--fairness-keys K` spreads the added tasks over K fairness keys.
//!
//! # Cost of the generator
//!
//! The generator shares the machine with the server under test, so it is built to be cheap:
//! one tokio runtime on one thread by default (`--threads 2` for two), one keep-alive HTTP/1.1 connection
//! per producer and per worker (hyper's connection API, no pool, no lock; see [`http`]),
//! request bodies built by hand, and answers parsed only as far as needed (the lease and the
//! payload's time stamp).
//!
//! # Layout
//!
//! - [`http`]: the HTTP/1.1 connection, the target URL, and the three calls (add, poll,
//!   complete) plus `/metrics` reads.
//! - `ws` (feature `client`): the streaming worker over WebSocket.
//! - [`workers`]: worker loops shared by the workloads, counters and latency recording.
//! - [`throughput`]: `backlog`, `live` and `latency`.
//! - [`memory`]: `queues` and `pollers`, and reading a process's RSS.
//! - [`report`]: the result table and `--json`.

pub mod http;
mod http_worker;
pub mod memory;
pub mod report;
pub mod throughput;
pub mod workers;
#[cfg(feature = "client")]
mod ws;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use crate::cli::{parse_duration, ClientArgs, QueueKind};
pub use report::Report;

/// Why a benchmark could not run or had to stop.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(pub String);

impl BenchError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        BenchError(msg.into())
    }
}

/// Result of the benchmark functions.
pub type BenchResult<T> = Result<T, BenchError>;

/// `tasq bench`: where to send the load, and which workload to run.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// `--server`, `--namespace`, `--api-key`, `--json` (anywhere after `bench`).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Options every workload takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// The workload.
    #[command(subcommand)]
    pub workload: Workload,
}

/// Options every workload takes (anywhere after `bench`).
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Task queue to load (default: a fresh name, `bench-<random>`, so runs never mix).
    #[arg(long, global = true)]
    pub queue: Option<String>,
    /// Which of the queue's two types.
    #[arg(long = "type", global = true, value_enum, default_value_t = QueueKind::Activity)]
    pub queue_type: QueueKind,
    /// Size of each task's JSON payload in bytes (a time stamp plus padding).
    #[arg(long, global = true, default_value_t = 200)]
    pub payload_bytes: usize,
    /// Threads of the generator's runtime (1–2: it shares the cores with the server). One
    /// runs a current-thread runtime, measured cheaper per task than two.
    #[arg(long, global = true, default_value_t = 1)]
    pub threads: usize,
    /// No progress bar (it is also hidden when stderr is not a terminal, and with `--json`).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Other nodes of the same cluster (repeat it): the producers' and the workers'
    /// connections are spread round-robin over `--server` and these; readiness and metrics
    /// are read from `--server`.
    #[arg(long = "spread", global = true, value_name = "URL")]
    pub spread: Vec<String>,
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Add N tasks with no worker, then drain them: add rate and drain rate.
    Backlog(BacklogArgs),
    /// Workers already polling; add N: completed tasks/s end to end.
    Live(LiveArgs),
    /// Adds paced at --rate with polling workers: add → receipt latency percentiles.
    Latency(LatencyArgs),
    /// One task in each of M queues, then drain: server RSS before, at peak, after idle.
    Queues(QueuesArgs),
    /// K long polls parked at once: server RSS per parked poll.
    Pollers(PollersArgs),
    /// A server of its own under churn (restarts, killed workers, failures) for a while, then
    /// an exactly-once check of every acknowledged task (see [`crate::soak`]).
    Soak(crate::soak::SoakArgs),
}

/// How an HTTP worker settles the tasks it polled.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettleMode {
    /// One `complete` request per task, then a new poll: three requests per task with
    /// `max_tasks` 1 (the classic loop).
    #[default]
    Single,
    /// One `POST /api/v1/leases/settle` for all the tasks of a poll.
    Batch,
    /// `complete` with `next`: the settle of the last task polls for the next ones (one
    /// request per task with `max_tasks` 1); the others of a poll are settled in one batch.
    Next,
}

/// How workers take tasks.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `POST {q}/poll` and `POST /api/v1/leases/{lease}/complete`, one connection per worker.
    #[default]
    Http,
    /// `GET {q}/connect`: one WebSocket per worker with `--credit` tasks out at once.
    Ws,
}

impl Transport {
    /// `http` or `ws`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
        }
    }
}

/// How many tasks, and how many add requests in flight.
#[derive(Args, Debug, Clone)]
pub struct AddArgs {
    /// Tasks to add (N).
    #[arg(long, short = 'n', default_value_t = 20_000)]
    pub count: u64,
    /// Add requests in flight at once (P), each on its own keep-alive connection.
    #[arg(long, short = 'p', default_value_t = 32)]
    pub in_flight: usize,
    /// Spread the tasks over this many fairness keys (`k0`…); 0 = no key.
    #[arg(long, default_value_t = 0)]
    pub fairness_keys: u64,
    /// Tasks per add request: 1 = `POST {q}/tasks`, more = `POST {q}/tasks/batch` (1–1000).
    /// Batches take the producers out of the way when the workers are what is measured.
    #[arg(long, default_value_t = 1)]
    pub add_batch: u64,
}

/// How workers take tasks.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Workers (C): HTTP pollers with one connection each, or WebSockets.
    #[arg(long, short = 'c', default_value_t = 8)]
    pub workers: usize,
    /// HTTP or WebSocket workers.
    #[arg(long, value_enum, default_value_t = Transport::Http)]
    pub transport: Transport,
    /// `max_tasks` of each HTTP poll (1–100).
    #[arg(long, default_value_t = 1)]
    pub max_tasks: u32,
    /// How HTTP workers settle: `single` (a complete per task), `batch` (one settle-many
    /// per poll) or `next` (complete with `next`: settle and poll in one request).
    #[arg(long, value_enum, default_value_t = SettleMode::Single)]
    pub settle: SettleMode,
    /// Credit of each WebSocket worker (unsettled tasks out on it at once, 1–1000).
    #[arg(long, default_value_t = 16)]
    pub credit: u32,
}

/// `tasq bench backlog`.
#[derive(Args, Debug, Clone)]
pub struct BacklogArgs {
    /// Tasks and producers.
    #[command(flatten)]
    pub add: AddArgs,
    /// Drain workers.
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// `wait_ms` of the drain polls (short: the backlog is there already).
    #[arg(long, default_value_t = 100)]
    pub poll_wait_ms: u64,
}

/// `tasq bench live`.
#[derive(Args, Debug, Clone)]
pub struct LiveArgs {
    /// Tasks and producers.
    #[command(flatten)]
    pub add: AddArgs,
    /// Workers, polling before the first add.
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// `wait_ms` of the long polls.
    #[arg(long, default_value_t = 5000)]
    pub poll_wait_ms: u64,
}

/// `tasq bench latency`.
#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Adds per second, paced evenly.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to add for.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Receipts of tasks added in this first stretch are not recorded.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Producer connections (adds in flight at most; a paced add waits for a free one).
    #[arg(long, short = 'p', default_value_t = 16)]
    pub in_flight: usize,
    /// Spread the tasks over this many fairness keys; 0 = no key.
    #[arg(long, default_value_t = 0)]
    pub fairness_keys: u64,
    /// Workers.
    #[command(flatten)]
    pub workers: WorkerArgs,
    /// `wait_ms` of the long polls.
    #[arg(long, default_value_t = 5000)]
    pub poll_wait_ms: u64,
}

/// Where the server process is, for reading its RSS.
#[derive(Args, Debug, Clone)]
pub struct ServerProcess {
    /// Process id of the server (default: found by the port of `--server` in /proc/net/tcp).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `tasq bench queues`.
#[derive(Args, Debug, Clone)]
pub struct QueuesArgs {
    /// Distinct queues, one task each (M).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub count: u64,
    /// Requests in flight at once, adds and then drain (poll + complete).
    #[arg(long, short = 'p', default_value_t = 32)]
    pub in_flight: usize,
    /// Longest wait after the adds for the queues to unload before the idle reading: the
    /// server's `queue_idle_timeout` plus a little (start the server with a short one).
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub idle_wait: Duration,
    /// Random queues polled one at a time once idle (each answers its task at once): the
    /// latency of a poll whose queue loads from disk.
    #[arg(long, default_value_t = 1000)]
    pub probe: u64,
    /// The server process.
    #[command(flatten)]
    pub process: ServerProcess,
}

/// `tasq bench pollers`.
#[derive(Args, Debug, Clone)]
pub struct PollersArgs {
    /// Long polls to park at once (K), one connection each.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub count: u64,
    /// `wait_ms` of the parked polls (long enough to outlast the reading).
    #[arg(long, default_value_t = 120_000)]
    pub wait_ms: u64,
    /// At most this many polls per queue (the server's `max_parked_polls_per_queue` is
    /// 10,000); more polls use more queues (`<queue>-0`, `<queue>-1`…).
    #[arg(long, default_value_t = 5000)]
    pub per_queue: u64,
    /// Connections opened at once while parking.
    #[arg(long, default_value_t = 128)]
    pub connect_in_flight: usize,
    /// The server process.
    #[command(flatten)]
    pub process: ServerProcess,
}

/// Runs a workload and prints its result: a table, or one JSON object with `--json`.
pub fn run(args: BenchArgs) -> BenchResult<()> {
    if let Workload::Soak(soak) = args.workload {
        return crate::soak::run(soak).map_err(BenchError);
    }
    let json = args.client.json;
    let report = run_report(args)?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.render());
    }
    Ok(())
}

/// Runs a workload on the generator's own tokio runtime and returns its result.
pub fn run_report(args: BenchArgs) -> BenchResult<Report> {
    let threads = args.common.threads.clamp(1, 2);
    // One thread: a current-thread runtime, whose tasks wake each other without crossing
    // threads (no futex, no context switch per wake-up), which leaves more of the shared
    // cores to the server.
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads).thread_name("tasq-bench");
        b
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| BenchError::new(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(run_async(args));
    // Parked long polls and sockets still open are dropped here, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

async fn run_async(args: BenchArgs) -> BenchResult<Report> {
    let ctx = Ctx::new(&args)?;
    match &args.workload {
        Workload::Backlog(a) => throughput::backlog(&ctx, a).await,
        Workload::Live(a) => throughput::live(&ctx, a).await,
        Workload::Latency(a) => throughput::latency(&ctx, a).await,
        Workload::Queues(a) => memory::queues(&ctx, a).await,
        Workload::Pollers(a) => memory::pollers(&ctx, a).await,
        Workload::Soak(_) => Err(BenchError::new(
            "the soak prints its own result: run it with `tasq bench soak`",
        )),
    }
}

/// What every workload needs: the target, the queue, payloads, the progress switch.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The server (`--server`).
    pub target: std::sync::Arc<http::Target>,
    /// Every node the load is spread over: `--server`, then each `--spread`.
    pub targets: Vec<std::sync::Arc<http::Target>>,
    /// Namespace.
    pub namespace: String,
    /// Queue name (base name for the multi-queue workloads).
    pub queue: String,
    /// `activity` or `workflow`.
    pub queue_type: &'static str,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Show progress bars.
    pub progress: bool,
}

impl Ctx {
    fn new(args: &BenchArgs) -> BenchResult<Self> {
        let key = args.client.api_key.as_deref();
        let target = std::sync::Arc::new(http::Target::parse(&args.client.server, key)?);
        let mut targets = vec![target.clone()];
        for url in &args.common.spread {
            targets.push(std::sync::Arc::new(http::Target::parse(url, key)?));
        }
        let queue = match &args.common.queue {
            Some(q) => q.clone(),
            None => format!("bench-{:08x}", rand::random::<u32>()),
        };
        crate::model::validate_name("queue", &queue).map_err(|e| BenchError::new(e.to_string()))?;
        crate::model::validate_name("namespace", &args.client.namespace)
            .map_err(|e| BenchError::new(e.to_string()))?;
        let queue_type = match args.common.queue_type {
            QueueKind::Activity => "activity",
            QueueKind::Workflow => "workflow",
        };
        Ok(Ctx {
            target,
            targets,
            namespace: args.client.namespace.clone(),
            queue,
            queue_type,
            payload_bytes: args.common.payload_bytes,
            progress: !args.common.no_progress && !args.client.json,
        })
    }

    /// The node the `i`-th producer or worker talks to (round-robin over [`Ctx::targets`]).
    pub fn target_for(&self, i: usize) -> std::sync::Arc<http::Target> {
        self.targets[i % self.targets.len()].clone()
    }

    /// `/api/v1/namespaces/{ns}/task-queues/{queue}/{type}` of `queue`.
    pub fn qpath(&self, queue: &str) -> String {
        format!(
            "/api/v1/namespaces/{}/task-queues/{}/{}",
            self.namespace, queue, self.queue_type
        )
    }

    /// A progress bar over `len` steps (hidden when progress is off or stderr no terminal).
    pub fn progress_bar(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn parses_a_workload_with_global_options_anywhere() {
        let cli = Cli::try_parse_from([
            "bench",
            "--server",
            "http://127.0.0.1:9",
            "live",
            "-n",
            "10",
            "--transport",
            "ws",
            "--json",
            "--queue",
            "q1",
        ])
        .expect("parse");
        assert!(cli.bench.client.json);
        assert_eq!(cli.bench.common.queue.as_deref(), Some("q1"));
        match cli.bench.workload {
            Workload::Live(a) => {
                assert_eq!(a.add.count, 10);
                assert_eq!(a.workers.transport, Transport::Ws);
            }
            other => panic!("parsed {other:?}"),
        }
    }
}
