//! What the throughput workloads share: counters and the "done" signal, payloads with a time
//! stamp, the producers that add tasks, the HTTP worker loop, and latency histograms.
//!
//! Time stamps are nanoseconds since one `Instant` of this process ([`Shared::now_ns`]):
//! producers and workers run in the same process, so no wall clock is involved and the
//! figure is immune to clock steps.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::http::Conn;
use super::{AddArgs, BenchError, BenchResult, Ctx, Transport, WorkerArgs};
use crate::model::MAX_BATCH;

/// A latency histogram in nanoseconds (1 µs … 100 s, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    // Constant, valid bounds: low ≥ 1, high ≥ 2·low, sigfig ≤ 5.
    Histogram::new_with_bounds(1_000, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `ns`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    let v = ns.clamp(h.low(), h.high());
    h.saturating_record(v);
}

/// Longest wait of the poll a `--settle next` complete makes (see [`spawn_workers`]).
const NEXT_WAIT_MS: u64 = 100;

/// State shared by the producers and workers of one run.
pub struct Shared {
    /// Origin of every time stamp.
    start: Instant,
    /// Completions that end the run (`u64::MAX` until known).
    target: AtomicU64,
    /// Completes acknowledged by the server.
    pub completed: AtomicU64,
    /// Tasks received by workers.
    pub received: AtomicU64,
    /// Completes answered `lease_lost` (should stay 0).
    pub lost: AtomicU64,
    /// Time stamp of the latest acknowledged complete.
    last_complete_ns: AtomicU64,
    /// Receipts of tasks stamped before this are not recorded (warm-up).
    record_from_ns: AtomicU64,
    done_tx: watch::Sender<bool>,
    /// Progress of completions.
    pub bar: indicatif::ProgressBar,
}

impl Shared {
    /// Shared state for a run that ends after `target` completions.
    pub fn new(target: u64, bar: indicatif::ProgressBar) -> Arc<Self> {
        let (done_tx, _) = watch::channel(false);
        Arc::new(Shared {
            start: Instant::now(),
            target: AtomicU64::new(target),
            completed: AtomicU64::new(0),
            received: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            last_complete_ns: AtomicU64::new(0),
            record_from_ns: AtomicU64::new(0),
            done_tx,
            bar,
        })
    }

    /// Nanoseconds since the run's origin.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Receipts of tasks stamped before `ns` are not recorded.
    pub fn record_from(&self, ns: u64) {
        self.record_from_ns.store(ns, Ordering::Relaxed);
    }

    /// Sets the number of completions that ends the run (signals done if reached already).
    pub fn set_target(&self, n: u64) {
        self.target.store(n, Ordering::SeqCst);
        if self.completed.load(Ordering::SeqCst) >= n {
            self.done_tx.send_replace(true);
        }
    }

    /// Ends the run now (workers stop, parked polls are dropped).
    pub fn finish(&self) {
        self.done_tx.send_replace(true);
    }

    /// A receiver that turns `true` when the run is done.
    pub fn done(&self) -> watch::Receiver<bool> {
        self.done_tx.subscribe()
    }

    /// True once the run is done.
    pub fn is_done(&self) -> bool {
        *self.done_tx.borrow()
    }

    /// True once workers received every task the run needs: a settle then asks for no more
    /// (a `next` poll would wait for a task that never comes, holding its complete's answer).
    pub fn all_received(&self) -> bool {
        self.received.load(Ordering::Relaxed) >= self.target.load(Ordering::SeqCst)
    }

    /// Counts an acknowledged complete.
    pub fn on_completed(&self) {
        let now = self.now_ns();
        self.last_complete_ns.fetch_max(now, Ordering::Relaxed);
        let n = self.completed.fetch_add(1, Ordering::SeqCst) + 1;
        self.bar.inc(1);
        if n >= self.target.load(Ordering::SeqCst) {
            self.done_tx.send_replace(true);
        }
    }

    /// Records the receipt of a task whose payload is `payload` (raw JSON) at `now_ns`.
    pub fn on_received(&self, hist: &mut Histogram<u64>, payload: &str, now_ns: u64) {
        self.received.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = stamp_of(payload) {
            if t >= self.record_from_ns.load(Ordering::Relaxed) {
                record(hist, now_ns.saturating_sub(t));
            }
        }
    }

    /// Time stamp of the latest acknowledged complete.
    pub fn last_complete_ns(&self) -> u64 {
        self.last_complete_ns.load(Ordering::Relaxed)
    }
}

/// Builds add bodies: `{"task_type":"bench","payload":{"t":NS,"p":"xx…"}}`, with a fairness
/// key `k{i mod K}` when asked.
#[derive(Debug, Clone)]
pub struct Payloads {
    pad: String,
    fairness_keys: u64,
}

impl Payloads {
    /// Payloads of about `bytes` bytes of JSON.
    pub fn new(bytes: usize, fairness_keys: u64) -> Self {
        // `{"t":` + ~12 digits + `,"p":"` + pad + `"}`
        let pad = "x".repeat(bytes.saturating_sub(25));
        Payloads { pad, fairness_keys }
    }

    /// The add body of task `i`, stamped `t_ns`.
    pub fn body(&self, i: u64, t_ns: u64) -> Bytes {
        let mut s = String::with_capacity(self.pad.len() + 96);
        let _ = write!(
            s,
            r#"{{"task_type":"bench","payload":{{"t":{t_ns},"p":"{}"}}"#,
            self.pad
        );
        if self.fairness_keys > 0 {
            let _ = write!(s, r#","fairness_key":"k{}""#, i % self.fairness_keys);
        }
        s.push('}');
        Bytes::from(s)
    }

    /// A batch add body (`{"tasks": [...]}`) of tasks `range`, all stamped `t_ns`.
    pub fn batch_body(&self, range: std::ops::Range<u64>, t_ns: u64) -> Bytes {
        let mut out = Vec::with_capacity(16 + range.clone().count() * (self.pad.len() + 96));
        out.extend_from_slice(br#"{"tasks":["#);
        for (k, i) in range.enumerate() {
            if k > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&self.body(i, t_ns));
        }
        out.extend_from_slice(b"]}");
        Bytes::from(out)
    }
}

/// The time stamp of a payload written by [`Payloads::body`], read without a JSON parse. The
/// server may give the payload's keys back in another order (`{"p":…,"t":…}`), so the stamp
/// is looked for by its key; the padding holds no quote, so it cannot fake one.
pub fn stamp_of(payload: &str) -> Option<u64> {
    let at = payload.rfind("\"t\":")?;
    let rest = payload[at + 4..].trim_start();
    let end = rest
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Adds `a.count` tasks to `qpath` with `a.in_flight` producers, each on its own connection,
/// `a.add_batch` tasks per request. Returns the add-call latency histogram (call start → 2xx).
pub async fn add_all(
    ctx: &Ctx,
    qpath: &str,
    a: &AddArgs,
    payloads: &Payloads,
    clock: &Arc<Shared>,
    bar: &indicatif::ProgressBar,
) -> BenchResult<Histogram<u64>> {
    if !(1..=MAX_BATCH as u64).contains(&a.add_batch) {
        return Err(BenchError::new(format!(
            "--add-batch must be 1–{MAX_BATCH}"
        )));
    }
    let (n, batch) = (a.count, a.add_batch);
    let next = Arc::new(AtomicU64::new(0));
    let path: Arc<str> = match batch {
        1 => Arc::from(format!("{qpath}/tasks")),
        _ => Arc::from(format!("{qpath}/tasks/batch")),
    };
    let mut set = JoinSet::new();
    for p in 0..a.in_flight.max(1) {
        let next = next.clone();
        let path = path.clone();
        let payloads = payloads.clone();
        let clock = clock.clone();
        let bar = bar.clone();
        let mut conn = Conn::new(ctx.target_for(p));
        set.spawn(async move {
            let mut hist = histogram();
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= n {
                    return Ok(hist);
                }
                let last = (first + batch).min(n);
                let t = clock.now_ns();
                let body = match batch {
                    1 => payloads.body(first, t),
                    _ => payloads.batch_body(first..last, t),
                };
                conn.add(&path, body).await?;
                record(&mut hist, clock.now_ns().saturating_sub(t));
                bar.inc(last - first);
            }
        });
    }
    merge_all(set).await
}

/// Waits for every task of `set` and merges their histograms; the first error wins.
pub async fn merge_all(
    mut set: JoinSet<BenchResult<Histogram<u64>>>,
) -> BenchResult<Histogram<u64>> {
    let mut total = histogram();
    let mut first_err = None;
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(h)) => {
                let _ = total.add(&h);
            }
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(BenchError::new(format!("a task panicked: {e}")));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// Starts `args.workers` workers on `qpath` (HTTP pollers or WebSockets).
pub fn spawn_workers(
    ctx: &Ctx,
    qpath: &str,
    args: &WorkerArgs,
    wait_ms: u64,
    shared: &Arc<Shared>,
) -> BenchResult<JoinSet<BenchResult<Histogram<u64>>>> {
    let mut set = JoinSet::new();
    match args.transport {
        Transport::Http => {
            if !(1..=100).contains(&args.max_tasks) {
                return Err(BenchError::new("--max-tasks must be 1–100"));
            }
            let poll_path: Arc<str> = Arc::from(format!("{qpath}/poll"));
            for i in 0..args.workers.max(1) {
                let body = Bytes::from(format!(
                    r#"{{"identity":"bench-{i}","max_tasks":{},"wait_ms":{wait_ms}}}"#,
                    args.max_tasks
                ));
                // A complete's answer waits for its `next` poll, and a run ends when every
                // complete is answered: a `next` that waited as long as a poll would hold the
                // last completes of a run for the whole wait. It waits at most
                // NEXT_WAIT_MS; the worker then long-polls as usual.
                let next = Bytes::from(format!(
                    r#"{{"result":null,"next":{{"max_tasks":{},"wait_ms":{}}}}}"#,
                    args.max_tasks,
                    wait_ms.min(NEXT_WAIT_MS)
                ));
                let worker = super::http_worker::HttpWorker {
                    conn: Conn::new(ctx.target_for(i)),
                    poll_path: poll_path.clone(),
                    poll_body: body,
                    next_body: next,
                    wait: Duration::from_millis(wait_ms),
                    settle: args.settle,
                    shared: shared.clone(),
                };
                set.spawn(worker.run());
            }
        }
        Transport::Ws => {
            if !(1..=1000).contains(&args.credit) {
                return Err(BenchError::new("--credit must be 1–1000"));
            }
            #[cfg(feature = "client")]
            for i in 0..args.workers.max(1) {
                set.spawn(super::ws::ws_worker(
                    ctx.target_for(i),
                    format!("{qpath}/connect?identity=bench-ws-{i}"),
                    args.credit,
                    shared.clone(),
                ));
            }
            #[cfg(not(feature = "client"))]
            return Err(BenchError::new(
                "--transport ws needs tasq built with the `client` feature",
            ));
        }
    }
    Ok(set)
}

/// Waits until the run is done (or `timeout` passes), failing early when a worker fails.
/// Returns the workers' merged receipt histogram.
pub async fn wait_done(
    shared: &Arc<Shared>,
    mut workers: JoinSet<BenchResult<Histogram<u64>>>,
    timeout: Duration,
) -> BenchResult<Histogram<u64>> {
    let mut done = shared.done();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut total = histogram();
    loop {
        tokio::select! {
            _ = done.wait_for(|d| *d) => break,
            res = workers.join_next(), if !workers.is_empty() => match res {
                Some(Ok(Ok(h))) => { let _ = total.add(&h); }
                Some(Ok(Err(e))) => { shared.finish(); return Err(e); }
                Some(Err(e)) => {
                    shared.finish();
                    return Err(BenchError::new(format!("a worker panicked: {e}")));
                }
                None => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                shared.finish();
                return Err(BenchError::new(format!(
                    "timed out after {timeout:?}: {} tasks completed, {} received",
                    shared.completed.load(Ordering::Relaxed),
                    shared.received.load(Ordering::Relaxed),
                )));
            }
        }
    }
    // Workers stop at the done signal; collect their histograms.
    let rest = tokio::time::timeout(Duration::from_secs(5), merge_all(workers)).await;
    if let Ok(Ok(h)) = rest {
        let _ = total.add(&h);
    }
    Ok(total)
}

/// Reads a gauge once, summed over its series (0 when absent).
pub async fn read_gauge(ctx: &Ctx, metric: &str) -> BenchResult<f64> {
    let mut conn = Conn::new(ctx.target.clone());
    let text = conn.metrics().await?;
    Ok(super::http::metric_total(&text, metric).unwrap_or(0.0))
}

/// The run queue's waiting workers as the server counts them (`tasq_pollers`, where a parked
/// HTTP poll and a socket with credit are one waiter each), to start adding once they are all
/// parked. Counted for this queue, not summed over the server, so the waiters of an earlier
/// run on another queue, still being let go while this one starts, are not taken for ours;
/// a queue past the server's `metrics.max_queue_series` reports under `task_queue="_other"`,
/// so that series is watched too.
pub struct ReadyWaiters {
    /// Our queue's series and the shared one: labels, and the value before our workers.
    series: [([(&'static str, String); 3], f64); 2],
}

impl ReadyWaiters {
    /// The gauge.
    const METRIC: &'static str = "tasq_pollers";

    /// Reads the two series before the workers start.
    pub async fn before(ctx: &Ctx) -> BenchResult<Self> {
        let labels = |ns: &str, name: &str| {
            [
                ("namespace", ns.to_string()),
                ("task_queue", name.to_string()),
                ("task_queue_type", ctx.queue_type.to_string()),
            ]
        };
        let other = crate::metrics::OTHER;
        let mut series = [
            (labels(&ctx.namespace, &ctx.queue), 0.0),
            (labels(other, other), 0.0),
        ];
        let text = Conn::new(ctx.target.clone()).metrics().await?;
        for (labels, before) in &mut series {
            *before = Self::value(&text, labels);
        }
        Ok(ReadyWaiters { series })
    }

    fn value(text: &str, labels: &[(&'static str, String); 3]) -> f64 {
        let labels = labels.each_ref().map(|(k, v)| (*k, v.as_str()));
        super::http::metric_sum(text, Self::METRIC, &labels).unwrap_or(0.0)
    }

    /// Waits until the queue's describe counts `workers` waiters, or one of the series has
    /// `workers` more than before, up to 10 s; then a short pause so the last ones are
    /// settled in.
    pub async fn wait(&self, ctx: &Ctx, workers: u64) -> BenchResult<()> {
        let mut conn = Conn::new(ctx.target.clone());
        let deadline = Instant::now() + Duration::from_secs(10);
        let describe = format!(
            "/api/v1/namespaces/{}/task-queues/{}",
            ctx.namespace, ctx.queue
        );
        loop {
            // The queue's own count of waiters, where the key may describe it: exact where the
            // shared `_other` series moves with other queues' waiters coming and going, and
            // answered by the queue's owner when the server is one node of a cluster.
            if let Ok(a) = conn.get(&describe).await {
                let parked = serde_json::from_slice::<serde_json::Value>(&a.body)
                    .ok()
                    .and_then(|v| v["types"][ctx.queue_type]["parked_polls"].as_u64());
                if a.status == 200 && parked.is_some_and(|n| n >= workers) {
                    break;
                }
            }
            let text = conn.metrics().await?;
            let added: Vec<f64> = self
                .series
                .iter()
                .map(|(labels, before)| Self::value(&text, labels) - before)
                .collect();
            if added.iter().any(|&n| n >= workers as f64) {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::new(format!(
                    "the server's {} for {} rose by {} (and under task_queue=\"{}\" by {}), \
                     expected {workers} waiting workers",
                    Self::METRIC,
                    ctx.queue,
                    added[0],
                    crate::metrics::OTHER,
                    added[1],
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_a_stamp_and_have_the_asked_size() {
        let p = Payloads::new(200, 0);
        let body = p.body(7, 123_456_789_012);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let payload = v["payload"].to_string();
        assert!((195..=205).contains(&payload.len()), "{}", payload.len());
        assert_eq!(stamp_of(&payload), Some(123_456_789_012));
        assert!(v.get("fairness_key").is_none());
        let p = Payloads::new(200, 10);
        let v: serde_json::Value = serde_json::from_slice(&p.body(13, 1)).expect("json");
        assert_eq!(v["fairness_key"], "k3");
        assert_eq!(stamp_of("{\"x\":1}"), None);
        assert_eq!(stamp_of("{\"p\":\"xx\",\"t\":42}"), Some(42));
    }

    #[test]
    fn histograms_clamp() {
        let mut h = histogram();
        record(&mut h, 5);
        record(&mut h, 1_000_000);
        assert_eq!(h.len(), 2);
    }
}
