//! The soak test (`tasq bench soak`, not part of CI): a real server under churn for a
//! configurable time, then an exactly-once check of every acknowledged task.
//!
//! - The soak owns the server: it starts `tasq serve --bind 127.0.0.1:0 --data-dir TMP` as a
//!   child process, reads the `tasq listening on http://ADDR` line and publishes the address in
//!   an address file. It restarts the server twice on the same data dir (at 1/3 of the run
//!   with SIGTERM, at 2/3 with SIGKILL); each start gets a new port and clients pick the new
//!   address up from the file.
//! - Producers (threads here) add tasks with ids of their own over HTTP, single and batch adds,
//!   some with a priority or a fairness key, some marked "may fail" with
//!   `retry: {max_attempts: 0}`. Only ids answered 201 or 200 (duplicate) count as acknowledged.
//! - Workers are child processes (this same executable re-run with `--worker-role`): HTTP
//!   long-poll workers (poll, complete, or fail a "may fail" task retryably at random) and
//!   WebSocket workers ([`crate::client::Worker`], rebuilt when the address changes). Each
//!   appends a line per delivery and per settle (with the server's answer) to its own log.
//!   Every `--kill-every` one worker process is SIGKILLed at random and replaced; the tasks it
//!   held come back after their short lease.
//! - The server's VmRSS is sampled every few seconds (a line per minute while running, a
//!   table at the end).
//! - At the end producers stop, workers drain (bounded by `--drain-timeout`), and every
//!   acknowledged id is looked up: it must be `completed` (or still `pending`/`running` if the
//!   drain bound passed), never lost (404) nor `failed`. The worker logs give duplicate
//!   deliveries, `lease_lost` answers, and the one real bug signal: two 200 completes of the
//!   same task with different leases.

mod report;
mod workers;

use report::*;
use workers::*;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Value};

const NAMESPACE: &str = "soak";
const QUEUES: [&str; 2] = ["soak-a", "soak-b"];
/// The lease of every soak task: short, so tasks held by a killed worker come back soon.
const LEASE_MS: u64 = 5000;

/// Options of `tasq bench soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// How long producers run (e.g. `10m`, `90s`).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Producer threads.
    #[arg(long, default_value_t = 2)]
    pub producers: usize,
    /// HTTP long-poll worker processes.
    #[arg(long, default_value_t = 3)]
    pub http_workers: usize,
    /// WebSocket worker processes.
    #[arg(long, default_value_t = 2)]
    pub ws_workers: usize,
    /// Cap on tasks added per second, all producers together.
    #[arg(long, default_value_t = 60)]
    pub rate: u32,
    /// SIGKILL one worker process at random this often (and start a replacement).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub kill_every: Duration,
    /// How long workers may take to drain the queues after producers stop.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Percent of "may fail" deliveries a worker fails (retryably).
    #[arg(long, default_value_t = 20)]
    pub fail_percent: u32,
    /// The tasq binary to serve with (default: `tasq` next to this executable, its parent
    /// directory, or `target/release/tasq`).
    #[arg(long)]
    pub tasq_bin: Option<PathBuf>,
    /// Keep the temporary directory (data dir, server and worker logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Internal: run as a worker process of this role (`http` or `ws`).
    #[arg(long, hide = true)]
    pub worker_role: Option<String>,
    /// Internal: the worker's address file.
    #[arg(long, hide = true)]
    pub addr_file: Option<PathBuf>,
    /// Internal: the worker's log file.
    #[arg(long, hide = true)]
    pub worker_log: Option<PathBuf>,
    /// Internal: the worker's queue.
    #[arg(long, hide = true)]
    pub worker_queue: Option<String>,
}

/// Runs the soak (or, with the internal `--worker-role`, one worker process of it).
pub fn run(args: SoakArgs) -> Result<(), String> {
    if let Some(role) = args.worker_role.clone() {
        return worker_main(&role, &args);
    }
    Soak::new(args)?.run()
}

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn read_addr(file: &Path) -> Option<String> {
    fs::read_to_string(file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(15))
        .build()
}

fn queue_url(addr: &str, queue: &str) -> String {
    format!("http://{addr}/api/v1/namespaces/{NAMESPACE}/task-queues/{queue}/activity")
}

/// Status and JSON body of a request; `Err` only for transport errors.
fn send(req: ureq::Request, body: Option<&Value>) -> Result<(u16, Value), String> {
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let v = resp.into_json::<Value>().unwrap_or(Value::Null);
    Ok((status, v))
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("?")
}

// ---------------------------------------------------------------------------------------------
// Worker processes

struct Log(Mutex<File>);

impl Log {
    fn open(path: &Path) -> Result<Log, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| Log(Mutex::new(f)))
            .map_err(|e| format!("open {}: {e}", path.display()))
    }
    /// One line, one write: a SIGKILL loses at most the line being written.
    fn line(&self, s: String) {
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(format!("{s}\n").as_bytes());
        }
    }
}

struct Server {
    child: Child,
    addr: String,
}

struct WorkerProc {
    role: &'static str,
    child: Child,
}

struct Soak {
    args: SoakArgs,
    dir: PathBuf,
    data_dir: PathBuf,
    addr_file: PathBuf,
    tasq_bin: PathBuf,
    /// This executable and the arguments it was started with, to re-run in worker mode.
    self_cmd: (PathBuf, Vec<String>),
    server_pid: Arc<AtomicU64>,
    started: Instant,
    log_seq: usize,
}

fn default_tasq_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let mut candidates = vec![dir.join("tasq")];
    if let Some(up) = dir.parent() {
        candidates.push(up.join("tasq"));
    }
    candidates.push(PathBuf::from("target/release/tasq"));
    candidates.into_iter().find(|p| p.is_file() && *p != exe)
}

fn rss_kb(pid: u64) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Soak {
    fn new(args: SoakArgs) -> Result<Soak, String> {
        let tasq_bin = match &args.tasq_bin {
            Some(p) => p.clone(),
            None => default_tasq_bin().ok_or(
                "no tasq binary found: build it (cargo build --release) or pass --tasq-bin",
            )?,
        };
        let dir = std::env::temp_dir().join(format!(
            "tasq-soak-{}-{}",
            std::process::id(),
            crate::clock::now_ms()
        ));
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let argv: Vec<String> = std::env::args().skip(1).collect();
        Ok(Soak {
            data_dir: dir.join("data"),
            addr_file: dir.join("addr"),
            dir,
            tasq_bin,
            self_cmd: (exe, argv),
            args,
            server_pid: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            log_seq: 0,
        })
    }

    fn elapsed(&self) -> String {
        format!("{:>6.1}s", self.started.elapsed().as_secs_f64())
    }

    fn start_server(&self, n: usize) -> Result<Server, String> {
        let stderr =
            File::create(self.dir.join(format!("server-{n}.log"))).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.tasq_bin)
            .arg("serve")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.tasq_bin.display()))?;
        let stdout = child.stdout.take().ok_or("no server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("tasq listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the server did not print its listening line within 60 s".into());
            }
        };
        let tmp = self.dir.join("addr.tmp");
        fs::write(&tmp, &addr).map_err(|e| e.to_string())?;
        fs::rename(&tmp, &self.addr_file).map_err(|e| e.to_string())?;
        self.server_pid
            .store(u64::from(child.id()), Ordering::SeqCst);
        println!(
            "{} server #{n} pid {} listening on {addr}",
            self.elapsed(),
            child.id()
        );
        Ok(Server { child, addr })
    }

    fn spawn_worker(&mut self, role: &'static str) -> Result<WorkerProc, String> {
        self.log_seq += 1;
        let log = self.dir.join(format!("worker-{role}-{}.log", self.log_seq));
        let queue = QUEUES[self.log_seq % QUEUES.len()];
        let child = Command::new(&self.self_cmd.0)
            .args(&self.self_cmd.1)
            .arg("--worker-role")
            .arg(role)
            .arg("--addr-file")
            .arg(&self.addr_file)
            .arg("--worker-log")
            .arg(&log)
            .arg("--worker-queue")
            .arg(queue)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("start worker: {e}"))?;
        Ok(WorkerProc { role, child })
    }

    fn run(mut self) -> Result<(), String> {
        let a = self.args.clone();
        println!(
            "soak: {:?}, {} producers, {} http + {} ws worker processes, {} tasks/s cap, \
             kill a worker every {:?}; server {}; dir {}",
            a.duration,
            a.producers,
            a.http_workers,
            a.ws_workers,
            a.rate,
            a.kill_every,
            self.tasq_bin.display(),
            self.dir.display()
        );
        let mut server = self.start_server(1)?;
        let mut workers = Vec::new();
        for _ in 0..a.http_workers {
            workers.push(self.spawn_worker("http")?);
        }
        for _ in 0..a.ws_workers {
            workers.push(self.spawn_worker("ws")?);
        }

        // Memory sampler.
        let stop_all = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::default();
        let sampler = {
            let (stop, samples, pid) = (stop_all.clone(), samples.clone(), self.server_pid.clone());
            let started = self.started;
            thread::spawn(move || {
                let mut next_print = 60.0;
                while !stop.load(Ordering::SeqCst) {
                    let p = pid.load(Ordering::SeqCst);
                    let t = started.elapsed().as_secs_f64();
                    if let Some(kb) = rss_kb(p) {
                        if let Ok(mut s) = samples.lock() {
                            s.push((t, p, kb));
                        }
                        if t >= next_print {
                            println!(
                                "{t:>6.1}s server pid {p} VmRSS {:.1} MiB",
                                kb as f64 / 1024.0
                            );
                            next_print += 60.0;
                        }
                    }
                    thread::sleep(Duration::from_secs(3));
                }
            })
        };

        // Producers.
        let stop_producers = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let add_stats: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let per_producer = (f64::from(a.rate.max(1)) / a.producers.max(1) as f64).max(0.1);
        let mut producers = Vec::new();
        for p in 0..a.producers {
            let (stop, acked, stats) = (stop_producers.clone(), acked.clone(), add_stats.clone());
            let addr_file = self.addr_file.clone();
            producers.push(thread::spawn(move || {
                producer(p, per_producer, &addr_file, &stop, &acked, &stats)
            }));
        }

        // Churn: worker kills and the two server restarts.
        let mut rng = rand::thread_rng();
        let mut restarts = Vec::new();
        let mut killed = 0u64;
        let mut next_kill = a.kill_every;
        let restart_at = [a.duration / 3, a.duration * 2 / 3];
        while self.started.elapsed() < a.duration {
            thread::sleep(Duration::from_millis(250));
            let now = self.started.elapsed();
            if restarts.len() < 2 && now >= restart_at[restarts.len()] {
                let graceful = restarts.is_empty();
                let pid = server.child.id();
                let t0 = Instant::now();
                let how = if graceful {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                    let mut status = None;
                    while t0.elapsed() < Duration::from_secs(30) {
                        if let Ok(Some(s)) = server.child.try_wait() {
                            status = Some(s);
                            break;
                        }
                        thread::sleep(Duration::from_millis(50));
                    }
                    match status {
                        Some(s) => format!("SIGTERM, exited {s} after {:?}", t0.elapsed()),
                        None => {
                            let _ = server.child.kill();
                            let _ = server.child.wait();
                            "SIGTERM, did not exit within 30 s: SIGKILLed".to_string()
                        }
                    }
                } else {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    "SIGKILL".to_string()
                };
                println!(
                    "{} restart #{}: {how} (was {})",
                    self.elapsed(),
                    restarts.len() + 1,
                    server.addr
                );
                server = self.start_server(restarts.len() + 2)?;
                restarts.push(how);
            }
            if now >= next_kill && !workers.is_empty() {
                next_kill += a.kill_every;
                let i = rng.gen_range(0..workers.len());
                let mut w = workers.swap_remove(i);
                let _ = w.child.kill();
                let _ = w.child.wait();
                killed += 1;
                let replacement = self.spawn_worker(w.role)?;
                println!(
                    "{} killed {} worker pid {}, started pid {}",
                    self.elapsed(),
                    w.role,
                    w.child.id(),
                    replacement.child.id()
                );
                workers.push(replacement);
            }
        }

        // Stop producers, drain.
        stop_producers.store(true, Ordering::SeqCst);
        for p in producers {
            let _ = p.join();
        }
        let acked = acked.lock().map(|v| v.clone()).unwrap_or_default();
        println!(
            "{} producers stopped: {} ids acknowledged; draining",
            self.elapsed(),
            acked.len()
        );
        let agent = agent();
        let t0 = Instant::now();
        let mut drained = false;
        while t0.elapsed() < a.drain_timeout {
            let mut left = 0u64;
            let mut ok = true;
            for q in QUEUES {
                let url = format!(
                    "http://{}/api/v1/namespaces/{NAMESPACE}/task-queues/{q}",
                    server.addr
                );
                match send(agent.get(&url), None) {
                    Ok((200, v)) => {
                        let s = &v["types"]["activity"];
                        for f in ["backlog_count", "delayed_count", "in_flight_count"] {
                            left += s[f].as_u64().unwrap_or(0);
                        }
                    }
                    _ => ok = false,
                }
            }
            if ok && left == 0 {
                drained = true;
                break;
            }
            thread::sleep(Duration::from_secs(1));
        }
        println!(
            "{} drain {} after {:?}",
            self.elapsed(),
            if drained { "done" } else { "bound passed" },
            t0.elapsed()
        );

        // Stop workers, then check every acknowledged id.
        for w in &mut workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        let states = check_states(&server.addr, &acked);
        stop_all.store(true, Ordering::SeqCst);
        let _ = sampler.join();
        let pid = server.child.id();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let _ = server.child.wait();

        let logs = read_worker_logs(&self.dir);
        let report = Report {
            acked: acked.len(),
            add_stats: add_stats.lock().map(|m| m.clone()).unwrap_or_default(),
            states,
            logs,
            restarts,
            killed,
            samples: samples.lock().map(|s| s.clone()).unwrap_or_default(),
            drained,
        };
        let ok = report.print();
        if a.keep {
            println!("kept {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if ok {
            Ok(())
        } else {
            Err("soak found lost, failed or doubly completed tasks (see above)".into())
        }
    }
}

fn producer(
    p: usize,
    rate: f64,
    addr_file: &Path,
    stop: &AtomicBool,
    acked: &Mutex<Vec<(String, String)>>,
    stats: &Mutex<HashMap<String, u64>>,
) {
    let agent = agent();
    let mut rng = rand::thread_rng();
    let mut seq = 0u64;
    let count = |k: String| {
        if let Ok(mut s) = stats.lock() {
            *s.entry(k).or_default() += 1;
        }
    };
    let started = Instant::now();
    let mut sent = 0f64;
    while !stop.load(Ordering::SeqCst) {
        // Rate cap: never ahead of `rate` tasks per second since the start.
        let allowed = started.elapsed().as_secs_f64() * rate;
        if sent >= allowed {
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        let queue = QUEUES[rng.gen_range(0..QUEUES.len())];
        let n = if rng.gen_bool(0.3) {
            rng.gen_range(2..=10)
        } else {
            1
        };
        let tasks: Vec<Value> = (0..n)
            .map(|_| {
                seq += 1;
                let mut t = json!({
                    "task_type": "soak",
                    "task_id": format!("p{p}-{seq}-{}", rng.gen::<u32>()),
                    "start_to_close_timeout_ms": LEASE_MS,
                    "payload": {"may_fail": false},
                });
                if rng.gen_bool(0.3) {
                    t["priority"] = json!(rng.gen_range(1..=5));
                }
                if rng.gen_bool(0.3) {
                    t["fairness_key"] = json!(format!("tenant-{}", rng.gen_range(0..4)));
                }
                if rng.gen_bool(0.3) {
                    t["payload"] = json!({"may_fail": true});
                    t["retry"] = json!({"max_attempts": 0, "initial_interval_ms": 200,
                                        "backoff_coefficient": 2.0, "maximum_interval_ms": 2000});
                }
                t
            })
            .collect();
        sent += n as f64;
        let ids: Vec<String> = tasks
            .iter()
            .map(|t| t["task_id"].as_str().unwrap_or_default().to_string())
            .collect();
        // Retry the same ids until acknowledged (a retry after a lost answer is a duplicate).
        for _attempt in 0..40 {
            if stop.load(Ordering::SeqCst) && _attempt > 0 {
                break;
            }
            let Some(addr) = read_addr(addr_file) else {
                thread::sleep(Duration::from_millis(200));
                continue;
            };
            let base = queue_url(&addr, queue);
            let res = if n == 1 {
                send(agent.post(&format!("{base}/tasks")), Some(&tasks[0]))
            } else {
                send(
                    agent.post(&format!("{base}/tasks/batch")),
                    Some(&json!({"tasks": tasks})),
                )
            };
            match res {
                Ok((s @ (200 | 201), v)) => {
                    count(format!("{} {s}", if n == 1 { "add" } else { "batch" }));
                    if n == 1 && v["duplicate"].as_bool() == Some(true)
                        || v["results"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|x| x["duplicate"] == json!(true)))
                    {
                        count("duplicate answers".into());
                    }
                    if let Ok(mut a) = acked.lock() {
                        a.extend(ids.iter().map(|id| (queue.to_string(), id.clone())));
                    }
                    break;
                }
                Ok((s, v)) => {
                    count(format!("add answered {s} {}", error_code(&v)));
                    thread::sleep(Duration::from_millis(200));
                }
                Err(_) => {
                    count("add transport error".into());
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}
