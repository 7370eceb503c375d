//! The memory workloads, `queues` and `pollers`, and reading the server's RSS.
//!
//! RSS is `VmRSS` of `/proc/PID/status` (Linux). The server's pid is `--server-pid`, or found
//! by the port of `--server`: the listening socket's inode in `/proc/net/tcp{,6}`, then the
//! process holding that inode among `/proc/*/fd`.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::http::{parse_poll, Conn};
use super::workers::{read_gauge, Payloads, Shared};
use super::{BenchError, BenchResult, Ctx, PollersArgs, QueuesArgs, Report, ServerProcess};

/// Connections per local loopback address: under the server's default
/// `max_connections_per_client` (4096), so K parked polls can come from 127.0.0.1, .2, ….
const CONNECTIONS_PER_SOURCE: u64 = 2000;

const MIB: f64 = 1024.0 * 1024.0;

/// `VmRSS` and `VmHWM` (peak) of a process, in bytes.
pub fn rss(pid: u32) -> BenchResult<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::new(format!("/proc/{pid}/status: {e}")))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    };
    match (field("VmRSS:"), field("VmHWM:")) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => Err(BenchError::new(format!(
            "/proc/{pid}/status has no VmRSS/VmHWM"
        ))),
    }
}

/// The pid of the process listening on `port` (any local address), from /proc.
pub fn find_listener(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| link.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

/// Measures the CPU the server and the generator use over a stretch of a run, as cores
/// (CPU seconds per wall second): evidence of which side is the bottleneck.
pub struct CpuMeter {
    server: Option<u32>,
    server_start: f64,
    own_start: f64,
    start: Instant,
}

impl CpuMeter {
    /// Starts measuring (the server's share only when its pid can be found).
    pub fn start(ctx: &Ctx) -> Self {
        let server = ctx
            .target
            .is_loopback()
            .then(|| find_listener(ctx.target.addr.port()))
            .flatten();
        CpuMeter {
            server,
            server_start: server.and_then(cpu_seconds).unwrap_or(0.0),
            own_start: cpu_seconds(std::process::id()).unwrap_or(0.0),
            start: Instant::now(),
        }
    }

    /// Adds `{prefix}server_cpu_cores` and `{prefix}bench_cpu_cores` to `r`.
    pub fn report(&self, r: &mut Report, prefix: &str) {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        if let Some(now) = self.server.and_then(cpu_seconds) {
            r.metric(
                &format!("{prefix}server_cpu_cores"),
                (now - self.server_start) / wall,
                "cores",
            );
        }
        if let Some(now) = cpu_seconds(std::process::id()) {
            r.metric(
                &format!("{prefix}bench_cpu_cores"),
                (now - self.own_start) / wall,
                "cores",
            );
        }
    }
}

fn server_pid(ctx: &Ctx, p: &ServerProcess) -> BenchResult<u32> {
    if let Some(pid) = p.server_pid {
        return Ok(pid);
    }
    if !ctx.target.is_loopback() {
        return Err(BenchError::new(
            "the server is not on this machine: give --server-pid to read its RSS",
        ));
    }
    find_listener(ctx.target.addr.port()).ok_or_else(|| {
        BenchError::new(format!(
            "no process of ours listens on port {}; give --server-pid",
            ctx.target.addr.port()
        ))
    })
}

/// Samples a process's RSS every 100 ms and keeps the highest.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                if let Ok((rss, _)) = rss(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Sampler { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `f(i)` for `i` in `0..n` with `in_flight` connections; `f` gets the connection.
async fn for_each<F, Fut>(
    ctx: &Ctx,
    n: u64,
    in_flight: usize,
    bar: &indicatif::ProgressBar,
    f: F,
) -> BenchResult<()>
where
    F: Fn(Conn, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = BenchResult<Conn>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let mut set = JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let next = next.clone();
        let f = f.clone();
        let bar = bar.clone();
        let mut conn = Conn::new(ctx.target.clone());
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), BenchError>(());
                }
                conn = f(conn, i).await?;
                bar.inc(1);
            }
        });
    }
    let mut first_err = None;
    while let Some(res) = set.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(BenchError::new(format!("a task panicked: {e}")));
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `queues --count M`: one task in each of M queues and no poller; wait for the queues to
/// go idle (a queue with a backlog unloads too) and read RSS; then poll `--probe` random
/// queues one at a time (each must answer its task at once: the latency of a poll that loads
/// its queue from disk); then drain every queue. RSS before, after the adds, idle, after the
/// drain, and the peak sampled throughout.
pub async fn queues(ctx: &Ctx, a: &QueuesArgs) -> BenchResult<Report> {
    let pid = server_pid(ctx, &a.process)?;
    let m = a.count;
    let (rss_before, _) = rss(pid)?;
    let loaded_before = read_gauge(ctx, "tasq_loaded_task_queues").await?;
    let sampler = Sampler::start(pid);
    let payloads = Payloads::new(ctx.payload_bytes, 0);
    let clock = Shared::new(u64::MAX, indicatif::ProgressBar::hidden());

    let qpaths: Arc<Vec<String>> = Arc::new(
        (0..m)
            .map(|i| ctx.qpath(&format!("{}-{i}", ctx.queue)))
            .collect(),
    );
    let bar = ctx.progress_bar(m, "add");
    let t0 = Instant::now();
    {
        let qpaths = qpaths.clone();
        let payloads = payloads.clone();
        let clock = clock.clone();
        for_each(ctx, m, a.in_flight, &bar, move |mut conn, i| {
            let path = format!("{}/tasks", qpaths[i as usize]);
            let body = payloads.body(i, clock.now_ns());
            async move {
                conn.add(&path, body).await?;
                Ok(conn)
            }
        })
        .await?;
    }
    let add_time = t0.elapsed();
    bar.finish_and_clear();
    let (rss_added, _) = rss(pid)?;
    let loaded_peak = read_gauge(ctx, "tasq_loaded_task_queues").await?;

    // Idle: wait until the queue actors are gone (or --idle-wait passes), then read again.
    let bar = ctx.progress_bar(a.idle_wait.as_secs(), "idle");
    let idle_start = Instant::now();
    let mut loaded_idle = loaded_peak;
    while idle_start.elapsed() < a.idle_wait {
        tokio::time::sleep(Duration::from_millis(500)).await;
        bar.set_position(idle_start.elapsed().as_secs());
        loaded_idle = read_gauge(ctx, "tasq_loaded_task_queues").await?;
        if loaded_idle <= loaded_before {
            // Let the allocator settle a moment after the last actor stopped.
            tokio::time::sleep(Duration::from_secs(1)).await;
            break;
        }
    }
    bar.finish_and_clear();
    let idle_time = idle_start.elapsed();
    let (rss_idle, _) = rss(pid)?;

    // Probe: random queues, one poll at a time, each answered with its task.
    let probes = a.probe.min(m);
    let mut probe_latency = super::workers::histogram();
    let mut probe_empty = 0u64;
    let mut conn = Conn::new(ctx.target.clone());
    let body = Bytes::from_static(br#"{"identity":"bench-probe","max_tasks":1,"wait_ms":0}"#);
    // Distinct queues spread over all of them: none loaded since they went idle.
    let probed: std::collections::HashSet<u64> =
        rand::seq::index::sample(&mut rand::thread_rng(), m as usize, probes as usize)
            .into_iter()
            .map(|i| i as u64)
            .collect();
    for &i in &probed {
        let path = format!("{}/poll", qpaths[i as usize]);
        let started = Instant::now();
        let answer = conn.poll(&path, body.clone(), Duration::ZERO).await?;
        super::workers::record(&mut probe_latency, started.elapsed().as_nanos() as u64);
        let polled = parse_poll(&answer.body)?;
        match polled.tasks.first() {
            Some(t) => {
                let lease = t.lease.to_string();
                conn.complete(&lease).await?;
            }
            None => probe_empty += 1,
        }
    }
    let probe_hits = probes - probe_empty;

    let bar = ctx.progress_bar(m, "drain");
    let t1 = Instant::now();
    let drained = Arc::new(AtomicU64::new(0));
    {
        let qpaths = qpaths.clone();
        let drained = drained.clone();
        let body = Bytes::from_static(br#"{"identity":"bench-drain","max_tasks":1,"wait_ms":0}"#);
        let probed = Arc::new(probed);
        for_each(ctx, m, a.in_flight, &bar, move |mut conn, i| {
            let path = format!("{}/poll", qpaths[i as usize]);
            let body = body.clone();
            let drained = drained.clone();
            let skip = probed.contains(&i);
            async move {
                if skip {
                    return Ok(conn);
                }
                let answer = conn.poll(&path, body, Duration::ZERO).await?;
                let leases: Vec<String> = parse_poll(&answer.body)?
                    .tasks
                    .iter()
                    .map(|t| t.lease.to_string())
                    .collect();
                for lease in leases {
                    if conn.complete(&lease).await? {
                        drained.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(conn)
            }
        })
        .await?;
    }
    let drain_time = t1.elapsed();
    bar.finish_and_clear();
    let (rss_drained, hwm) = rss(pid)?;
    let rss_peak = sampler.peak().max(rss_added).max(rss_drained);
    drop(sampler);

    let mut r = Report::new("queues");
    r.param("queue_prefix", ctx.queue.as_str())
        .param("count", m)
        .param("in_flight", a.in_flight as u64)
        .param("idle_wait_s", a.idle_wait.as_secs_f64())
        .param("probe", probes)
        .param("server_pid", pid);
    r.metric("rss_before_mib", rss_before as f64 / MIB, "MiB")
        .metric("rss_after_adds_mib", rss_added as f64 / MIB, "MiB")
        .metric("rss_idle_mib", rss_idle as f64 / MIB, "MiB")
        .metric("rss_after_drain_mib", rss_drained as f64 / MIB, "MiB")
        .metric("rss_peak_mib", rss_peak as f64 / MIB, "MiB")
        .metric("rss_hwm_mib", hwm as f64 / MIB, "MiB")
        .metric(
            "rss_per_queue_bytes",
            rss_added.saturating_sub(rss_before) as f64 / m.max(1) as f64,
            "B",
        )
        .metric("loaded_queues_peak", loaded_peak, "")
        .metric("loaded_queues_idle", loaded_idle, "")
        .metric("idle_seconds", idle_time.as_secs_f64(), "s")
        .metric("add_rate", m as f64 / add_time.as_secs_f64(), "tasks/s")
        .latency("probe", &probe_latency)
        .metric("probe_hits", probe_hits as f64, "tasks")
        .metric(
            "drain_rate",
            drained.load(Ordering::Relaxed) as f64 / drain_time.as_secs_f64(),
            "tasks/s",
        )
        .metric(
            "drained",
            (drained.load(Ordering::Relaxed) + probe_hits) as f64,
            "tasks",
        );
    Ok(r)
}

/// `pollers --count K`: K long polls parked at once; the server's RSS per parked poll.
pub async fn pollers(ctx: &Ctx, a: &PollersArgs) -> BenchResult<Report> {
    let pid = server_pid(ctx, &a.process)?;
    let k = a.count;
    let per_queue = a.per_queue.max(1);
    let parked_before = read_gauge(ctx, "tasq_pollers").await?;
    let (rss_before, _) = rss(pid)?;

    let shared = Shared::new(u64::MAX, indicatif::ProgressBar::hidden());
    let connect = Arc::new(Semaphore::new(a.connect_in_flight.max(1)));
    let bar = ctx.progress_bar(k, "park");
    let spread = ctx.target.addr.is_ipv4() && ctx.target.is_loopback();
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..k {
        let mut conn = if spread {
            // 127.0.0.1 for the first 2000 connections, then .2, .3, …
            let n = i / CONNECTIONS_PER_SOURCE;
            let ip = Ipv4Addr::new(127, 0, (n / 250) as u8, (1 + n % 250) as u8);
            Conn::with_local(ctx.target.clone(), IpAddr::V4(ip))
        } else {
            Conn::new(ctx.target.clone())
        };
        let path = format!(
            "{}/poll",
            ctx.qpath(&format!("{}-{}", ctx.queue, i / per_queue))
        );
        let body = Bytes::from(format!(
            r#"{{"identity":"bench-park-{i}","max_tasks":1,"wait_ms":{}}}"#,
            a.wait_ms
        ));
        let connect = connect.clone();
        let shared = shared.clone();
        let bar = bar.clone();
        let wait = Duration::from_millis(a.wait_ms);
        set.spawn(async move {
            {
                let _permit = connect
                    .acquire()
                    .await
                    .map_err(|_| BenchError::new("closed"))?;
                conn.open().await?;
            }
            bar.inc(1);
            let mut done = shared.done();
            tokio::select! {
                _ = done.wait_for(|d| *d) => Ok(()),
                a = conn.poll(&path, body, wait) => a.map(|_| ()),
            }
        });
    }

    // Wait until the server counts them all parked (or stops counting up).
    let target = parked_before + k as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut parked = parked_before;
    let mut last_change = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(Ok(Err(e))) = set.try_join_next() {
            shared.finish();
            return Err(e);
        }
        let now = read_gauge(ctx, "tasq_pollers").await?;
        if now != parked {
            last_change = Instant::now();
            parked = now;
        }
        if parked >= target
            || Instant::now() > deadline
            || (bar.position() >= k && last_change.elapsed() > Duration::from_secs(5))
        {
            break;
        }
    }
    let park_time = t0.elapsed();
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_parked, _) = rss(pid)?;

    // Let go: the connections close, the server forgets the waiters.
    shared.finish();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while set.join_next().await.is_some() {}
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, hwm) = rss(pid)?;
    let parked_after = read_gauge(ctx, "tasq_pollers").await?;

    let parked_n = (parked - parked_before).max(0.0);
    let mut r = Report::new("pollers");
    r.param("queue_prefix", ctx.queue.as_str())
        .param("count", k)
        .param("per_queue", per_queue)
        .param("wait_ms", a.wait_ms)
        .param("server_pid", pid);
    r.metric("parked", parked_n, "polls")
        .metric("park_seconds", park_time.as_secs_f64(), "s")
        .metric("rss_before_mib", rss_before as f64 / MIB, "MiB")
        .metric("rss_parked_mib", rss_parked as f64 / MIB, "MiB")
        .metric(
            "rss_per_poll_kib",
            rss_parked.saturating_sub(rss_before) as f64 / 1024.0 / parked_n.max(1.0),
            "KiB",
        )
        .metric("rss_after_release_mib", rss_after as f64 / MIB, "MiB")
        .metric("rss_hwm_mib", hwm as f64 / MIB, "MiB")
        .metric(
            "parked_after_release",
            parked_after - parked_before,
            "polls",
        );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_rss_and_finds_a_listener() {
        let (rss_now, hwm) = rss(std::process::id()).expect("rss");
        assert!(rss_now > 0 && hwm >= rss_now);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert_eq!(find_listener(port), Some(std::process::id()));
        assert!(cpu_seconds(std::process::id()).is_some_and(|s| s >= 0.0));
    }
}
