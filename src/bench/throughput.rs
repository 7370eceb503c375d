//! The throughput and latency workloads: `backlog`, `live` and `latency`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

use super::http::Conn;
use super::memory::CpuMeter;
use super::workers::{
    add_all, histogram, merge_all, record, spawn_workers, wait_done, Payloads, ReadyWaiters, Shared,
};
use super::{
    AddArgs, BacklogArgs, BenchResult, Ctx, LatencyArgs, LiveArgs, Report, Transport, WorkerArgs,
};

/// How long a run may wait for its last completes once all adds are in.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

fn rate(n: u64, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

fn ns(d: u64) -> Duration {
    Duration::from_nanos(d)
}

fn common_params(r: &mut Report, ctx: &Ctx, add: Option<&AddArgs>, w: &WorkerArgs) {
    r.param("queue", ctx.queue.as_str())
        .param("payload_bytes", ctx.payload_bytes as u64)
        .param("transport", w.transport.name())
        .param("workers", w.workers as u64);
    match w.transport {
        Transport::Http => r.param("max_tasks", w.max_tasks),
        Transport::Ws => r.param("credit", w.credit),
    };
    if let Some(a) = add {
        r.param("count", a.count)
            .param("in_flight", a.in_flight as u64)
            .param("fairness_keys", a.fairness_keys)
            .param("add_batch", a.add_batch);
    }
}

/// `backlog`: add N with no worker, then drain with C workers.
pub async fn backlog(ctx: &Ctx, a: &BacklogArgs) -> BenchResult<Report> {
    let qpath = ctx.qpath(&ctx.queue);
    let n = a.add.count;
    let payloads = Payloads::new(ctx.payload_bytes, a.add.fairness_keys);
    let clock = Shared::new(u64::MAX, indicatif::ProgressBar::hidden());

    let bar = ctx.progress_bar(n, "add");
    let add_cpu = CpuMeter::start(ctx);
    let t0 = Instant::now();
    let add_lat = add_all(ctx, &qpath, &a.add, &payloads, &clock, &bar).await?;
    let add_time = t0.elapsed();
    bar.finish_and_clear();
    let mut cpu = Report::new("cpu");
    add_cpu.report(&mut cpu, "add_");

    let shared = Shared::new(n, ctx.progress_bar(n, "drain"));
    let drain_cpu = CpuMeter::start(ctx);
    let t1 = Instant::now();
    let workers = spawn_workers(ctx, &qpath, &a.workers, a.poll_wait_ms, &shared)?;
    let result = wait_done(&shared, workers, DRAIN_TIMEOUT).await;
    let drain_time = t1.elapsed();
    shared.bar.finish_and_clear();
    result?;
    drain_cpu.report(&mut cpu, "drain_");

    let mut r = Report::new("backlog");
    common_params(&mut r, ctx, Some(&a.add), &a.workers);
    r.param("poll_wait_ms", a.poll_wait_ms);
    r.metric("add_rate", rate(n, add_time), "tasks/s")
        .metric("add_seconds", add_time.as_secs_f64(), "s")
        .latency("add", &add_lat)
        .metric("drain_rate", rate(n, drain_time), "tasks/s")
        .metric("drain_seconds", drain_time.as_secs_f64(), "s")
        .metric(
            "completed",
            shared.completed.load(Ordering::Relaxed) as f64,
            "tasks",
        )
        .metric("lease_lost", shared.lost.load(Ordering::Relaxed) as f64, "");
    r.results.extend(cpu.results);
    Ok(r)
}

/// `live`: workers already waiting; add N; completed tasks/s from the first add to the last
/// acknowledged complete.
pub async fn live(ctx: &Ctx, a: &LiveArgs) -> BenchResult<Report> {
    let qpath = ctx.qpath(&ctx.queue);
    let n = a.add.count;
    let payloads = Payloads::new(ctx.payload_bytes, a.add.fairness_keys);
    let shared = Shared::new(n, ctx.progress_bar(n, "live"));

    let ready = ReadyWaiters::before(ctx).await?;
    let workers = spawn_workers(ctx, &qpath, &a.workers, a.poll_wait_ms, &shared)?;
    if let Err(e) = ready.wait(ctx, a.workers.workers as u64).await {
        shared.finish();
        return Err(e);
    }

    let no_bar = indicatif::ProgressBar::hidden();
    let cpu = CpuMeter::start(ctx);
    let first_add = shared.now_ns();
    let adds = async {
        let lat = add_all(ctx, &qpath, &a.add, &payloads, &shared, &no_bar).await;
        (lat, shared.now_ns())
    };
    let ((add_lat, adds_done), receipts) =
        tokio::join!(adds, wait_done(&shared, workers, DRAIN_TIMEOUT));
    shared.bar.finish_and_clear();
    let add_lat = add_lat?;
    let receipts = receipts?;
    let end_to_end = ns(shared.last_complete_ns().saturating_sub(first_add));

    let mut r = Report::new("live");
    common_params(&mut r, ctx, Some(&a.add), &a.workers);
    r.param("poll_wait_ms", a.poll_wait_ms);
    r.metric("tasks_per_s", rate(n, end_to_end), "tasks/s")
        .metric("seconds", end_to_end.as_secs_f64(), "s")
        .metric(
            "add_rate",
            rate(n, ns(adds_done.saturating_sub(first_add))),
            "tasks/s",
        )
        .latency("add", &add_lat)
        .latency("receipt", &receipts)
        .metric(
            "completed",
            shared.completed.load(Ordering::Relaxed) as f64,
            "tasks",
        )
        .metric("lease_lost", shared.lost.load(Ordering::Relaxed) as f64, "");
    cpu.report(&mut r, "");
    Ok(r)
}

/// One paced add: its index and when it was due (ns on the run's clock).
struct Job {
    i: u64,
    due_ns: u64,
}

/// `latency --rate R`: adds paced at R/s with C workers waiting; add-call-start → receipt.
pub async fn latency(ctx: &Ctx, a: &LatencyArgs) -> BenchResult<Report> {
    if !(a.rate.is_finite() && a.rate > 0.0) {
        return Err(super::BenchError::new("--rate must be more than 0"));
    }
    let qpath = ctx.qpath(&ctx.queue);
    let total = (a.rate * a.duration.as_secs_f64()).round() as u64;
    let payloads = Payloads::new(ctx.payload_bytes, a.fairness_keys);
    let shared = Shared::new(u64::MAX, ctx.progress_bar(total, "latency"));

    let ready = ReadyWaiters::before(ctx).await?;
    let workers = spawn_workers(ctx, &qpath, &a.workers, a.poll_wait_ms, &shared)?;
    if let Err(e) = ready.wait(ctx, a.workers.workers as u64).await {
        shared.finish();
        return Err(e);
    }

    // Producers: each owns a connection and takes the next due add.
    let (tx, rx) = mpsc::unbounded_channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let tasks_path: Arc<str> = Arc::from(format!("{qpath}/tasks"));
    let mut producers: JoinSet<BenchResult<Histogram<u64>>> = JoinSet::new();
    let lag = Arc::new(std::sync::Mutex::new(histogram()));
    for p in 0..a.in_flight.max(1) {
        let rx = rx.clone();
        let tasks_path = tasks_path.clone();
        let payloads = payloads.clone();
        let shared = shared.clone();
        let lag = lag.clone();
        let mut conn = Conn::new(ctx.target_for(p));
        producers.spawn(async move {
            let mut add_lat = histogram();
            let mut my_lag = histogram();
            loop {
                let job = { rx.lock().await.recv().await };
                let Some(job) = job else { break };
                let t = shared.now_ns();
                record(&mut my_lag, t.saturating_sub(job.due_ns));
                conn.add(&tasks_path, payloads.body(job.i, t)).await?;
                record(&mut add_lat, shared.now_ns().saturating_sub(t));
            }
            if let Ok(mut l) = lag.lock() {
                let _ = l.add(&my_lag);
            }
            Ok(add_lat)
        });
    }

    // The pacer: every millisecond, release the adds that are due.
    let cpu = CpuMeter::start(ctx);
    let origin = shared.now_ns();
    shared.record_from(origin + u64::try_from(a.warmup.as_nanos()).unwrap_or(u64::MAX));
    let per_ns = a.rate / 1e9;
    let mut issued = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while issued < total {
        tick.tick().await;
        if shared.is_done() {
            break;
        }
        let now = shared.now_ns();
        let due = (((now - origin) as f64 * per_ns) as u64 + 1).min(total);
        while issued < due {
            let due_ns = origin + (issued as f64 / per_ns) as u64;
            if tx.send(Job { i: issued, due_ns }).is_err() {
                break;
            }
            issued += 1;
        }
    }
    let adds_end = shared.now_ns();
    drop(tx);
    let add_lat = merge_all(producers).await;
    if add_lat.is_err() {
        shared.finish();
    }
    let add_lat = add_lat?;
    shared.set_target(issued);
    let receipts = wait_done(&shared, workers, Duration::from_secs(60)).await?;
    shared.bar.finish_and_clear();
    let lag = lag
        .lock()
        .map(|l| l.clone())
        .unwrap_or_else(|_| histogram());

    let mut r = Report::new("latency");
    common_params(&mut r, ctx, None, &a.workers);
    r.param("rate", a.rate)
        .param("duration_s", a.duration.as_secs_f64())
        .param("warmup_s", a.warmup.as_secs_f64())
        .param("in_flight", a.in_flight as u64)
        .param("fairness_keys", a.fairness_keys)
        .param("poll_wait_ms", a.poll_wait_ms);
    r.metric(
        "achieved_rate",
        rate(issued, ns(adds_end.saturating_sub(origin))),
        "tasks/s",
    )
    .latency("receipt", &receipts)
    .latency("add", &add_lat)
    .metric(
        "pacing_lag_p99_ms",
        lag.value_at_quantile(0.99) as f64 / 1e6,
        "ms",
    )
    .metric(
        "completed",
        shared.completed.load(Ordering::Relaxed) as f64,
        "tasks",
    )
    .metric("lease_lost", shared.lost.load(Ordering::Relaxed) as f64, "");
    cpu.report(&mut r, "");
    Ok(r)
}
