//! `tasq worker QUEUE --exec 'CMD'`: a ready-made worker that runs a shell command per task,
//! so any language becomes a tasq worker.
//!
//! Per task it runs `sh -c CMD` in a process group of its own, with:
//! - the payload JSON (as the producer sent it) and a newline on standard input;
//! - the task's fields in the environment: `TASQ_TASK_ID`, `TASQ_TASK_TYPE`, `TASQ_ATTEMPT`,
//!   `TASQ_PRIORITY`, `TASQ_NAMESPACE`, `TASQ_QUEUE`, `TASQ_QUEUE_TYPE`, `TASQ_LEASE`,
//!   `TASQ_SERVER`, `TASQ_IDENTITY`, `TASQ_ADDED_AT`, `TASQ_DISPATCHED_AT`,
//!   `TASQ_LEASE_EXPIRES_AT`, `TASQ_HEADERS` (a JSON object) and, when set,
//!   `TASQ_FAIRNESS_KEY`. `TASQ_SERVER` and `TASQ_NAMESPACE` make a `tasq task add` run by
//!   the command talk to the same server and namespace.
//!
//! How the command's end settles the task:
//!
//! | the command | the task | error `type` |
//! | --- | --- | --- |
//! | exits 0 | completed; the result is stdout parsed as JSON, else stdout as a JSON string (empty stdout: `null`) | |
//! | exits 75 (`EX_TEMPFAIL`) | failed, retryable: retried per the task's retry policy | `tempfail` |
//! | exits 65 (`EX_DATAERR`: the input was bad, a retry cannot help) | failed, non-retryable: a dead letter now | `dataerr` |
//! | exits with any other code | failed, retryable (the retry policy and `max_attempts` decide, as for an exception in a Temporal activity) | `exit N` |
//! | is killed by a signal | failed, retryable | `signal N` |
//! | prints a result over the server's `max_payload_bytes` | failed, non-retryable | `result_too_large` |
//! | is stopped because the task was cancelled | failed, non-retryable | `cancelled` |
//!
//! The error message is the end of the command's stderr (at most 8 KiB), or a line naming the
//! exit status when stderr is empty.
//!
//! While the command runs the worker heartbeats, every third of the task's
//! `heartbeat_timeout_ms` (or of `start_to_close_timeout_ms`, at most every 10 s). When a
//! heartbeat answers `cancel_requested`, or that the lease is lost (it expired: the task will
//! run again elsewhere), the command's process group gets SIGTERM (SIGKILL 10 s later).
//!
//! The worker long-polls (HTTP) for as many tasks as it has free slots (`--concurrency`).
//! SIGTERM or SIGINT stops taking tasks (the poll under way is given up: the server forgets it
//! at once, so it takes no task added later; with an `https://` server the worker waits for
//! that poll to end instead, at most `--poll-wait`, and runs what it brings) and lets the
//! running commands finish and settle, then exits 0; a second signal stops the commands (SIGTERM) and exits 130 at once, leaving their
//! tasks to be retried when their leases run out. Commands run in their own process group, so
//! a Ctrl-C at the terminal reaches the worker only, not the running commands.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::client::{lease_path, queue_path, Client};
use super::table::human_ms;
use super::{millis, parse_duration, CliError, CliResult, ClientArgs, QueueArg};
use crate::error::Error;
use crate::model::{validate_identity, validate_name, QueueKey, MAX_POLL_TASKS};

/// Exit status that asks for a retry (`EX_TEMPFAIL` of sysexits.h).
pub const EXIT_RETRY: i32 = 75;
/// Exit status that fails the task for good (`EX_DATAERR` of sysexits.h).
pub const EXIT_NON_RETRYABLE: i32 = 65;
/// Most stdout kept as a result; the server refuses results over `max_payload_bytes` anyway.
const MAX_STDOUT: usize = 16 << 20;
/// Most stderr kept as an error message (its end).
const MAX_STDERR: usize = 8 << 10;
/// Longest pause between heartbeats.
const MAX_HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// How long a stopped command gets after SIGTERM before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(10);
/// Longest pause between polls that failed.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// `tasq worker QUEUE --exec CMD`.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Shell command run per task (`sh -c CMD`): payload on stdin, task fields in TASQ_* env.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Commands run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Only take tasks of these types (comma-separated); default any.
    #[arg(long, value_delimiter = ',', value_name = "TYPES")]
    task_types: Vec<String>,
    /// Worker identity shown by `queue describe` (default HOSTNAME@PID).
    #[arg(long)]
    identity: Option<String>,
    /// Build id shown by `queue describe`.
    #[arg(long)]
    build_id: Option<String>,
    /// How long one long poll waits for a task.
    #[arg(long, value_parser = parse_duration, default_value = "30s", value_name = "DURATION")]
    poll_wait: Duration,
}

/// A task as the poll answers it (the payload kept as the exact text the producer sent).
#[derive(Debug, Deserialize)]
struct PolledTask {
    task_id: String,
    task_type: String,
    payload: Box<RawValue>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    attempt: u32,
    priority: u8,
    fairness_key: Option<String>,
    lease: String,
    added_at: String,
    dispatched_at: String,
    lease_expires_at: String,
    start_to_close_timeout_ms: u64,
    heartbeat_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct PollAnswer {
    tasks: Vec<PolledTask>,
}

/// What the worker threads share.
#[derive(Default)]
struct Shared {
    /// Tasks taken and not yet settled.
    running: usize,
    /// No more polls: a signal came, or the poller met an error it cannot get past.
    stopping: bool,
    /// Signals received.
    signals: u32,
    /// The error that stopped the poller, if any.
    fatal: Option<Error>,
    /// Process ids (= process group ids) of the running commands.
    children: HashSet<u32>,
    /// A poll is under way (its tasks are not counted in `running` yet).
    polling: bool,
    /// The connection of the poll under way, to give it up on a signal.
    poll_socket: Option<TcpStream>,
}

struct Worker {
    client: Client,
    key: QueueKey,
    exec: String,
    identity: String,
    concurrency: usize,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    poll_wait: Duration,
    shared: Mutex<Shared>,
    changed: Condvar,
}

/// Runs the worker until SIGTERM / SIGINT (then exits 0 once the running commands are
/// settled), or until the server answers an error that retrying cannot fix.
pub fn run(args: &ClientArgs, w: WorkerArgs) -> CliResult {
    let key = args.key(&w.queue.queue, w.queue.kind)?;
    let identity = w.identity.unwrap_or_else(default_identity);
    validate_identity(&identity).map_err(CliError::Local)?;
    for t in &w.task_types {
        validate_name("task type", t).map_err(CliError::Local)?;
    }
    if let Some(b) = &w.build_id {
        validate_name("build id", b).map_err(CliError::Local)?;
    }
    if millis(w.poll_wait) > crate::model::MAX_POLL_WAIT_MS {
        return Err(CliError::usage("--poll-wait must be at most 5m"));
    }
    let worker = Arc::new(Worker {
        client: args.client(),
        key,
        exec: w.exec,
        identity,
        concurrency: w.concurrency as usize,
        task_types: (!w.task_types.is_empty()).then_some(w.task_types),
        build_id: w.build_id,
        poll_wait: w.poll_wait,
        shared: Mutex::new(Shared::default()),
        changed: Condvar::new(),
    });
    listen_for_signals(worker.clone())?;
    eprintln!(
        "tasq worker: {} polling {} at {} (concurrency {})",
        worker.identity,
        worker.key,
        worker.client.base(),
        worker.concurrency
    );
    let poller = worker.clone();
    thread::Builder::new()
        .name("tasq-poller".into())
        .spawn(move || poller.poll_loop())
        .map_err(|e| CliError::Local(Error::Internal(format!("cannot start a thread: {e}"))))?;

    let mut shared = worker.lock();
    while !(shared.stopping && shared.running == 0 && !shared.polling) {
        shared = worker
            .changed
            .wait(shared)
            .unwrap_or_else(|e| e.into_inner());
    }
    match shared.fatal.take() {
        Some(e) => Err(CliError::Remote(e)),
        None => {
            eprintln!("tasq worker: stopped");
            Ok(())
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}@{}", std::process::id())
}

/// SIGTERM / SIGINT: stop polling; a second one stops the commands and exits at once.
fn listen_for_signals(worker: Arc<Worker>) -> CliResult {
    use tokio::signal::unix::{signal, SignalKind};
    let internal = |e: std::io::Error| {
        CliError::Local(Error::Internal(format!("cannot listen for signals: {e}")))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(internal)?;
    // Registered here, before the first poll, so an early SIGTERM is never the default action.
    let (mut term, mut int) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::terminate()).map_err(internal)?,
            signal(SignalKind::interrupt()).map_err(internal)?,
        )
    };
    thread::Builder::new()
        .name("tasq-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                    worker.on_signal();
                }
            })
        })
        .map_err(internal)?;
    Ok(())
}

fn kill_group(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no memory.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Whether an error from the server goes away by trying again later.
fn transient(e: &Error) -> bool {
    matches!(
        e,
        Error::Unavailable(_) | Error::Internal(_) | Error::ResourceExhausted { .. }
    )
}

impl Worker {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_signal(&self) {
        let mut s = self.lock();
        s.signals += 1;
        if s.signals == 1 {
            eprintln!(
                "tasq worker: stopping: taking no more tasks; waiting for {} running",
                s.running
            );
            s.stopping = true;
            if let Some(socket) = s.poll_socket.take() {
                // The server forgets the parked poll at once; an answer it sent already is
                // still read, and its tasks run.
                let _ = socket.shutdown(Shutdown::Write);
            }
            self.changed.notify_all();
        } else {
            eprintln!(
                "tasq worker: second signal: stopping {} running commands; their tasks run again once their leases end",
                s.children.len()
            );
            for pid in &s.children {
                kill_group(*pid, libc::SIGTERM);
            }
            std::process::exit(130);
        }
    }

    /// Polls while there is a free slot, and starts a thread per task.
    fn poll_loop(self: Arc<Self>) {
        let path = format!("{}/poll", queue_path(&self.key));
        let mut backoff = Duration::from_millis(500);
        let mut last_error = String::new();
        loop {
            let free = {
                let mut s = self.lock();
                while !s.stopping && s.running >= self.concurrency {
                    s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                if s.stopping {
                    return;
                }
                s.polling = true;
                self.concurrency - s.running
            };
            let mut body = json!({
                "identity": self.identity,
                "max_tasks": free.min(MAX_POLL_TASKS as usize),
                "wait_ms": millis(self.poll_wait),
            });
            if let Some(t) = &self.task_types {
                body["task_types"] = json!(t);
            }
            if let Some(b) = &self.build_id {
                body["build_id"] = json!(b);
            }
            let answer = self.poll_once(&path, &body);
            {
                // In one step with `polling = false`, so the main thread never sees a moment
                // with no poll under way and tasks received but not counted.
                let mut s = self.lock();
                s.polling = false;
                s.poll_socket = None;
                if let Ok(a) = &answer {
                    s.running += a.tasks.len();
                }
                self.changed.notify_all();
            }
            match answer {
                Ok(answer) => {
                    if !last_error.is_empty() {
                        eprintln!("tasq worker: polling works again");
                        last_error.clear();
                    }
                    backoff = Duration::from_millis(500);
                    self.start(answer.tasks);
                }
                Err(e) if transient(&e) => {
                    let line = format!("{}: {e}", e.code());
                    if line != last_error {
                        eprintln!("tasq worker: poll failed, retrying: {line}");
                        last_error = line;
                    }
                    let pause = match &e {
                        Error::ResourceExhausted {
                            retry_after_secs, ..
                        } => Duration::from_secs(*retry_after_secs).max(backoff),
                        _ => backoff,
                    };
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    let s = self.lock();
                    let _ = self
                        .changed
                        .wait_timeout_while(s, pause, |s| !s.stopping)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Err(e) => {
                    let mut s = self.lock();
                    s.fatal = Some(e);
                    s.stopping = true;
                    self.changed.notify_all();
                    return;
                }
            }
        }
    }

    /// One long poll; over a connection that a signal can give up when the server is `http://`.
    fn poll_once(&self, path: &str, body: &Value) -> Result<PollAnswer, Error> {
        if !self.client.can_cancel() {
            return self
                .client
                .send_as("POST", path, Some(body), self.poll_wait);
        }
        let answer = self
            .client
            .post_cancellable(path, body, self.poll_wait, |socket| {
                let mut s = self.lock();
                if s.stopping {
                    let _ = socket.shutdown(Shutdown::Write);
                } else {
                    s.poll_socket = Some(socket);
                }
            });
        match answer {
            // Given up on a signal before the server answered: no tasks.
            Err(_) if self.lock().stopping => Ok(PollAnswer { tasks: Vec::new() }),
            other => other,
        }
    }

    /// Starts a thread per task (or runs it here if no thread can be had); they are counted
    /// in `running` already.
    fn start(self: &Arc<Self>, tasks: Vec<PolledTask>) {
        for task in tasks {
            let me = self.clone();
            let task = Arc::new(task);
            let t = task.clone();
            let spawned = thread::Builder::new()
                .name(format!("tasq-task-{}", task.task_id))
                .spawn(move || me.run_and_release(&t));
            if let Err(e) = spawned {
                eprintln!("tasq worker: cannot start a thread ({e}); running the task inline");
                self.run_and_release(&task);
            }
        }
    }

    fn run_and_release(&self, task: &PolledTask) {
        self.run_task(task);
        let mut s = self.lock();
        s.running -= 1;
        self.changed.notify_all();
    }

    /// Runs the command for one task and settles the task.
    fn run_task(&self, task: &PolledTask) {
        let started = Instant::now();
        let label = format!(
            "task {} ({}, attempt {})",
            task.task_id, task.task_type, task.attempt
        );
        let ended = match self.run_command(task) {
            Ok(ended) => ended,
            Err(e) => {
                let failure = Outcome::Fail {
                    kind: "spawn".into(),
                    message: format!("cannot run the command: {e}"),
                    non_retryable: false,
                };
                self.settle(task, &label, failure, started);
                return;
            }
        };
        let outcome = match ended {
            Ended::LeaseLost => {
                eprintln!("tasq worker: {label}: the lease was lost (it ran out); the command was stopped and the task will run again");
                return;
            }
            Ended::Cancelled => Outcome::Fail {
                kind: "cancelled".into(),
                message: "the task was cancelled; the command was stopped".into(),
                non_retryable: true,
            },
            Ended::Exited {
                status,
                stdout,
                stderr,
            } => outcome_of(status, &stdout, &stderr),
        };
        self.settle(task, &label, outcome, started);
    }

    fn env(&self, task: &PolledTask) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TASQ_TASK_ID", task.task_id.clone()),
            ("TASQ_TASK_TYPE", task.task_type.clone()),
            ("TASQ_ATTEMPT", task.attempt.to_string()),
            ("TASQ_PRIORITY", task.priority.to_string()),
            ("TASQ_NAMESPACE", self.key.namespace().to_string()),
            ("TASQ_QUEUE", self.key.name().to_string()),
            ("TASQ_QUEUE_TYPE", self.key.kind().as_str().to_string()),
            ("TASQ_LEASE", task.lease.clone()),
            ("TASQ_SERVER", self.client.base().to_string()),
            ("TASQ_IDENTITY", self.identity.clone()),
            ("TASQ_ADDED_AT", task.added_at.clone()),
            ("TASQ_DISPATCHED_AT", task.dispatched_at.clone()),
            ("TASQ_LEASE_EXPIRES_AT", task.lease_expires_at.clone()),
            (
                "TASQ_HEADERS",
                serde_json::to_string(&task.headers).unwrap_or_else(|_| "{}".into()),
            ),
        ];
        if let Some(k) = &task.fairness_key {
            env.push(("TASQ_FAIRNESS_KEY", k.clone()));
        }
        env
    }

    /// Runs `sh -c CMD`, heartbeating until it exits.
    fn run_command(&self, task: &PolledTask) -> std::io::Result<Ended> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.exec)
            .envs(self.env(task))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn()?;
        let pid = child.id();
        self.lock().children.insert(pid);
        let input = format!("{}\n", task.payload.get());
        let stdin = child.stdin.take();
        let writer = thread::spawn(move || {
            if let Some(mut stdin) = stdin {
                // A command that does not read its input is fine: ignore a broken pipe.
                let _ = stdin.write_all(input.as_bytes());
            }
        });
        let stdout = child.stdout.take();
        let out_reader = thread::spawn(move || read_capped(stdout, MAX_STDOUT, false));
        let stderr = child.stderr.take();
        let err_reader = thread::spawn(move || read_capped(stderr, MAX_STDERR, true));

        let every = heartbeat_every(task);
        let mut next_heartbeat = Instant::now() + every;
        let mut stopped: Option<(Ended, Instant)> = None;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            let now = Instant::now();
            match &stopped {
                None if now >= next_heartbeat => {
                    next_heartbeat = now + every;
                    if let Some(why) = self.heartbeat(task) {
                        kill_group(pid, libc::SIGTERM);
                        stopped = Some((why, now));
                    }
                }
                Some((_, at)) if now.duration_since(*at) >= KILL_AFTER => {
                    kill_group(pid, libc::SIGKILL);
                }
                _ => {}
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        };
        self.lock().children.remove(&pid);
        let _ = writer.join();
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        let status = status?;
        Ok(match stopped {
            Some((why, _)) => why,
            None => Ended::Exited {
                status,
                stdout,
                stderr,
            },
        })
    }

    /// Sends a heartbeat; answers why the command must stop, if it must.
    fn heartbeat(&self, task: &PolledTask) -> Option<Ended> {
        let path = match lease_path(&task.lease, "heartbeat") {
            Ok(p) => p,
            Err(_) => return Some(Ended::LeaseLost),
        };
        match self.client.post(&path, &json!({}), Duration::ZERO) {
            Ok(answer) if answer["cancel_requested"] == json!(true) => Some(Ended::Cancelled),
            Ok(_) => None,
            Err(Error::LeaseLost(_)) => Some(Ended::LeaseLost),
            Err(e) => {
                eprintln!(
                    "tasq worker: task {}: heartbeat failed ({}: {e}); the command goes on",
                    task.task_id,
                    e.code()
                );
                None
            }
        }
    }

    /// Completes or fails the task, retrying while the server cannot be reached.
    fn settle(&self, task: &PolledTask, label: &str, outcome: Outcome, started: Instant) {
        let took = human_ms(started.elapsed().as_millis() as u64);
        let (op, body, what) = match outcome {
            Outcome::Complete(result) => ("complete", json!({ "result": result }), None),
            Outcome::Fail {
                kind,
                message,
                non_retryable,
            } => (
                "fail",
                json!({
                    "error": {"type": kind, "message": message},
                    "non_retryable": non_retryable,
                }),
                Some(kind),
            ),
        };
        match self.post_settle(task, op, &body) {
            Ok(answer) => match what {
                None => eprintln!("tasq worker: {label}: completed in {took}"),
                Some(kind) => {
                    let next = match answer["state"].as_str() {
                        Some("pending") => format!(
                            "it runs again at {}",
                            answer["next_attempt_at"].as_str().unwrap_or("once due")
                        ),
                        Some(state) => format!("it is {state} now (a dead letter)"),
                        None => String::new(),
                    };
                    eprintln!("tasq worker: {label}: failed ({kind}) in {took}; {next}");
                }
            },
            Err(Error::PayloadTooLarge(m)) if op == "complete" => {
                let failure = Outcome::Fail {
                    kind: "result_too_large".into(),
                    message: format!("the command's output is too large for a result: {m}"),
                    non_retryable: true,
                };
                self.settle(task, label, failure, started);
            }
            Err(e) => eprintln!(
                "tasq worker: {label}: could not {op} it ({}: {e}); it runs again once its lease ends",
                e.code()
            ),
        }
    }

    fn post_settle(&self, task: &PolledTask, op: &str, body: &Value) -> Result<Value, Error> {
        let path = lease_path(&task.lease, op)?;
        let mut pause = Duration::from_millis(500);
        let mut tries = 0;
        loop {
            match self.client.post(&path, body, Duration::ZERO) {
                Err(e) if transient(&e) && tries < 6 => {
                    tries += 1;
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(8));
                }
                other => return other,
            }
        }
    }
}

/// How often to heartbeat: a third of the heartbeat timeout (or of the lease), within bounds.
fn heartbeat_every(task: &PolledTask) -> Duration {
    let base = task
        .heartbeat_timeout_ms
        .unwrap_or(task.start_to_close_timeout_ms);
    Duration::from_millis(base / 3).clamp(Duration::from_millis(20), MAX_HEARTBEAT_EVERY)
}

/// Why a command ended.
enum Ended {
    /// It exited (or was killed by someone else).
    Exited {
        status: ExitStatus,
        stdout: Vec<u8>,
        stderr: Vec<u8>,
    },
    /// We stopped it: the task was cancelled.
    Cancelled,
    /// We stopped it: the lease ran out.
    LeaseLost,
}

/// How to settle a task.
#[derive(Debug, PartialEq)]
enum Outcome {
    Complete(Value),
    Fail {
        kind: String,
        message: String,
        non_retryable: bool,
    },
}

/// The settle for a command that exited (the table in the module doc).
fn outcome_of(status: ExitStatus, stdout: &[u8], stderr: &[u8]) -> Outcome {
    let stderr = String::from_utf8_lossy(stderr).trim().to_string();
    let fail = |kind: String, fallback: String, non_retryable: bool| Outcome::Fail {
        kind,
        message: if stderr.is_empty() {
            fallback
        } else {
            stderr.clone()
        },
        non_retryable,
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Outcome::Complete(result_of(stdout)),
        (Some(EXIT_RETRY), _) => fail(
            "tempfail".into(),
            format!("the command asked for a retry (exit {EXIT_RETRY})"),
            false,
        ),
        (Some(EXIT_NON_RETRYABLE), _) => fail(
            "dataerr".into(),
            format!("the command rejected the task (exit {EXIT_NON_RETRYABLE})"),
            true,
        ),
        (Some(code), _) => fail(
            format!("exit {code}"),
            format!("the command exited with status {code}"),
            false,
        ),
        (None, Some(sig)) => fail(
            format!("signal {sig}"),
            format!("the command was killed by signal {sig}"),
            false,
        ),
        (None, None) => fail("exit".into(), "the command ended abnormally".into(), false),
    }
}

/// stdout as a result: JSON when it parses, else a JSON string; empty is `null`.
fn result_of(stdout: &[u8]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(trimmed).unwrap_or_else(|_| Value::String(text.trim_end().to_string()))
}

/// Reads a pipe to its end, keeping at most `cap` bytes: the first ones, or with `tail` the
/// last ones. Reading on past the cap keeps the command from blocking on a full pipe.
fn read_capped(pipe: Option<impl Read>, cap: usize, tail: bool) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tail {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * cap {
                        kept.drain(..kept.len() - cap);
                    }
                } else if kept.len() < cap {
                    let take = n.min(cap - kept.len());
                    kept.extend_from_slice(&buf[..take]);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if tail && kept.len() > cap {
        kept.drain(..kept.len() - cap);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn exit_statuses_settle_as_documented() {
        assert_eq!(
            outcome_of(exit(0), b"{\"a\": 1}\n", b""),
            Outcome::Complete(json!({"a": 1}))
        );
        assert_eq!(
            outcome_of(exit(0), b"hello\n", b""),
            Outcome::Complete(json!("hello"))
        );
        assert_eq!(
            outcome_of(exit(0), b"  \n", b""),
            Outcome::Complete(Value::Null)
        );
        let Outcome::Fail {
            kind,
            message,
            non_retryable,
        } = outcome_of(exit(75), b"", b"busy\n")
        else {
            panic!("75 must fail");
        };
        assert_eq!(
            (kind.as_str(), message.as_str(), non_retryable),
            ("tempfail", "busy", false)
        );
        assert!(matches!(
            outcome_of(exit(65), b"", b""),
            Outcome::Fail {
                non_retryable: true,
                ..
            }
        ));
        let Outcome::Fail {
            kind,
            message,
            non_retryable,
        } = outcome_of(exit(3), b"", b"")
        else {
            panic!("3 must fail");
        };
        assert_eq!(kind, "exit 3");
        assert!(message.contains("status 3"));
        assert!(!non_retryable);
        assert!(matches!(
            outcome_of(ExitStatus::from_raw(9), b"", b""),
            Outcome::Fail { non_retryable: false, ref kind, .. } if kind == "signal 9"
        ));
    }

    #[test]
    fn stderr_keeps_its_end() {
        let big: Vec<u8> = (0..100_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let kept = read_capped(Some(&big[..]), 1000, true);
        assert_eq!(kept, &big[big.len() - 1000..]);
        let head = read_capped(Some(&big[..]), 1000, false);
        assert_eq!(head, &big[..1000]);
    }
}
