//! `tasq worker QUEUE --exec 'CMD'`: a ready-made worker that runs a shell command per task,
//! so any language becomes a tasq worker.
//!
//! Per task it runs `sh -c CMD` in a process group of its own, with:
//! - the payload JSON and a newline on standard input;
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
//! | exits 75 (`EX_TEMPFAIL`) | failed, retryable: retried per the task's retry policy | `TempFail` |
//! | exits 65 (`EX_DATAERR`: the input was bad, a retry cannot help) | failed, non-retryable: a dead letter now | `DataErr` |
//! | exits with any other code | failed, retryable (the retry policy and `max_attempts` decide, as for an exception in a Temporal activity) | `ExitN` (`Exit3`) |
//! | is killed by a signal | failed, retryable | `SignalN` (`Signal9`) |
//! | prints a result whose `complete` frame is over 1 MiB (the server's default `max_payload_bytes`) | failed, non-retryable | `ResultTooLarge` |
//! | is stopped because the task was cancelled | failed, non-retryable | `Cancelled` |
//!
//! The error message is the end of the command's stderr (at most 8 KiB), or a line naming the
//! exit status when stderr is empty.
//!
//! The worker is a [`crate::client::Worker`]: it streams tasks over one WebSocket
//! (`GET {q}/connect`), keeps `--concurrency` credit on it, reconnects with backoff when the
//! server is down or the connection drops, and heartbeats each running task every third of its
//! `heartbeat_timeout_ms` (or of `start_to_close_timeout_ms`, at most every 10 s). When a
//! heartbeat answers `cancel_requested`, or that the lease is lost (it expired, or the
//! connection dropped: the task will run again), the command's process group gets SIGTERM
//! (SIGKILL 10 s later). Only `http://` servers: the client has no TLS, so an `https://`
//! server is refused with a message saying so.
//!
//! SIGTERM or SIGINT stops taking tasks (the worker tells the server to push no more; a task
//! already on its way is not started and goes back to the queue) and lets the running commands
//! finish and settle, then exits 0; a second signal stops the commands (SIGTERM) and exits 130
//! at once, leaving their tasks to run again. Commands run in their own process group, so a
//! Ctrl-C at the terminal reaches the worker only, not the running commands.

// Without the `client` feature the command is there but refuses to run.
#![cfg_attr(not(feature = "client"), allow(dead_code, unused_imports))]

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use super::table::human_ms;
use super::{CliError, CliResult, ClientArgs, QueueArg};
#[cfg(feature = "client")]
use crate::client::{ClientError, WorkerError, WorkerTask, MAX_CONCURRENCY};
use crate::error::Error;
use crate::model::{validate_identity, validate_name, QueueKey};

/// Exit status that asks for a retry (`EX_TEMPFAIL` of sysexits.h).
pub const EXIT_RETRY: i32 = 75;
/// Exit status that fails the task for good (`EX_DATAERR` of sysexits.h).
pub const EXIT_NON_RETRYABLE: i32 = 65;
/// Most stdout kept as a result; the server refuses results over `max_payload_bytes` anyway.
const MAX_STDOUT: usize = 16 << 20;
/// Most stderr kept as an error message (its end).
const MAX_STDERR: usize = 8 << 10;
/// The largest `--concurrency` (the client's [`crate::client::MAX_CONCURRENCY`]).
#[cfg(not(feature = "client"))]
const MAX_CONCURRENCY: u32 = 1000;
/// How long a stopped command gets after SIGTERM before SIGKILL.
const KILL_AFTER: Duration = Duration::from_secs(10);

/// `tasq worker QUEUE --exec CMD`.
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Shell command run per task (`sh -c CMD`): payload on stdin, task fields in TASQ_* env.
    #[arg(long, value_name = "CMD")]
    exec: String,
    /// Commands run at once (the credit kept on the worker's WebSocket).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONCURRENCY)))]
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
}

#[cfg(feature = "client")]
/// What every task's command shares.
struct Exec {
    key: QueueKey,
    exec: String,
    server: String,
    identity: String,
    /// Process ids (= process group ids) of the running commands.
    children: Mutex<HashSet<u32>>,
    /// The line of each failed task, printed once the server says what the failure led to.
    failures: Failures,
}

/// Lines of failed tasks by task id, waiting for their settled state.
type Failures = Arc<Mutex<HashMap<String, String>>>;

/// What a failed attempt led to, as the server settled it.
fn after_failure(state: &str) -> &'static str {
    match state {
        "pending" => "; it will run again",
        "failed" | "timed_out" => "; it is a dead letter now",
        "cancelled" => "; it is cancelled",
        _ => "",
    }
}

#[cfg(feature = "client")]
/// Runs the worker until SIGTERM / SIGINT (then exits 0 once the running commands are
/// settled), or until the server refuses the connection in a way retrying cannot fix.
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
    let server = args.server.trim_end_matches('/').to_string();
    let mut builder = crate::client::Worker::builder(&server, key.namespace(), key.name())
        .queue_type(key.queue_type().as_str())
        .identity(identity.clone())
        .task_types(w.task_types.iter().cloned())
        .concurrency(w.concurrency);
    if let Some(b) = &w.build_id {
        builder = builder.build_id(b.clone());
    }
    if let Some(path) = args.ca_cert.as_deref().filter(|p| !p.is_empty()) {
        let tls = crate::config::pem::trusting("--ca-cert", path)
            .map_err(|e| CliError::Local(crate::Error::InvalidArgument(e)))?;
        builder = builder.tls(tls);
    }
    if let Some(k) = &args.api_key {
        // A key is printable; control characters would break the header.
        builder = builder.api_key(
            k.trim()
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>(),
        );
    }
    let failures: Failures = Arc::default();
    let told = failures.clone();
    builder = builder.on_settled(move |task_id, state| {
        let line = told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task_id);
        if let Some(line) = line {
            eprintln!("{line}{}", after_failure(state));
        }
    });
    let worker = builder
        .build()
        .map_err(|e| CliError::usage(e.to_string()))?;

    // The client's own lines (connection lost, server unavailable, shutting down) on stderr.
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Off)
        .filter_module("tasq::client", log::LevelFilter::Info)
        .parse_default_env()
        .format(|buf, record| writeln!(buf, "{}", record.args()))
        .try_init();

    let internal = |what: &str, e: std::io::Error| {
        CliError::Local(Error::Internal(format!("cannot {what}: {e}")))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Each running command holds a blocking thread while it runs.
        .max_blocking_threads(w.concurrency as usize + 4)
        .build()
        .map_err(|e| internal("start the runtime", e))?;
    let ctx = Arc::new(Exec {
        key,
        exec: w.exec,
        server,
        identity,
        children: Mutex::new(HashSet::new()),
        failures,
    });
    let ended = rt.block_on(async {
        // Registered before connecting, so an early SIGTERM is never the default action.
        let stop =
            listen_for_signals(ctx.clone()).map_err(|e| internal("listen for signals", e))?;
        eprintln!(
            "tasq worker: {} streaming {} from {} (concurrency {})",
            ctx.identity, ctx.key, ctx.server, w.concurrency
        );
        let handler_ctx = ctx.clone();
        let handler = move |task: WorkerTask| {
            let ctx = handler_ctx.clone();
            async move {
                match tokio::task::spawn_blocking(move || ctx.run_task(&task)).await {
                    Ok(outcome) => outcome,
                    Err(e) => Err(WorkerError::retryable(format!(
                        "the thread running the command failed: {e}"
                    ))
                    .with_type("Spawn")),
                }
            }
        };
        Ok::<_, CliError>(
            worker
                .run_until(handler, async {
                    let _ = stop.await;
                })
                .await,
        )
    })?;
    match ended {
        Ok(()) => {
            eprintln!("tasq worker: stopped");
            Ok(())
        }
        Err(e) => Err(CliError::Remote(refused(e))),
    }
}

/// Without the `client` feature there is no WebSocket client to run on.
#[cfg(not(feature = "client"))]
pub fn run(_args: &ClientArgs, _w: WorkerArgs) -> CliResult {
    Err(CliError::usage(
        "this tasq was built without the `client` feature, which `tasq worker` runs on",
    ))
}

#[cfg(feature = "client")]
/// The error for a connection the server refused for good.
fn refused(e: ClientError) -> Error {
    let ClientError::Rejected { status, body } = e else {
        return Error::Internal(e.to_string());
    };
    let parsed = serde_json::from_str::<Value>(&body).ok();
    let code = parsed.as_ref().and_then(|v| v["error"]["code"].as_str());
    let message = parsed
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .map_or_else(|| format!("HTTP {status}: {body}"), str::to_string);
    match (code, status) {
        (Some("unauthenticated"), _) | (None, 401) => Error::Unauthenticated(message),
        (Some("permission_denied"), _) | (None, 403) => Error::PermissionDenied(message),
        (Some("not_found"), _) | (None, 404) => Error::NotFound(message),
        (Some("invalid_argument"), _) | (None, 400) => Error::InvalidArgument(message),
        (Some(other), _) => Error::Internal(format!("{other}: {message}")),
        (None, _) => Error::Internal(message),
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

#[cfg(feature = "client")]
/// SIGTERM / SIGINT: the first resolves the answer (graceful shutdown); a second one stops the
/// commands and exits at once. Call inside the runtime.
fn listen_for_signals(ctx: Arc<Exec>) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let children = ctx.children();
            match tx.take() {
                Some(tx) => {
                    eprintln!(
                        "tasq worker: stopping: taking no more tasks; waiting for {} running",
                        children.len()
                    );
                    let _ = tx.send(());
                }
                None => {
                    eprintln!(
                        "tasq worker: second signal: stopping {} running commands; their tasks run again",
                        children.len()
                    );
                    for pid in children.iter() {
                        kill_group(*pid, libc::SIGTERM);
                    }
                    std::process::exit(130);
                }
            }
        }
    });
    Ok(rx)
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

#[cfg(feature = "client")]
impl Exec {
    fn children(&self) -> MutexGuard<'_, HashSet<u32>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the command for one task (on a blocking thread) and answers how to settle it.
    fn run_task(&self, task: &WorkerTask) -> Result<Value, WorkerError> {
        let started = Instant::now();
        let label = format!(
            "task {} ({}, attempt {})",
            task.task_id, task.task_type, task.attempt
        );
        let outcome = match self.run_command(task) {
            Err(e) => Outcome::Fail {
                kind: "Spawn".into(),
                message: format!("cannot run the command: {e}"),
                non_retryable: false,
            },
            Ok(Ended::LeaseLost) => {
                eprintln!("tasq worker: {label}: the lease was lost; the command was stopped and the task will run again");
                return Err(
                    WorkerError::retryable("the lease was lost; the command was stopped")
                        .with_type("LeaseLost"),
                );
            }
            Ok(Ended::Cancelled) => Outcome::Fail {
                kind: "Cancelled".into(),
                message: "the task was cancelled; the command was stopped".into(),
                non_retryable: true,
            },
            Ok(Ended::Exited {
                status,
                stdout,
                stderr,
            }) => {
                let outcome = outcome_of(status, &stdout, &stderr);
                if matches!(outcome, Outcome::Complete(_)) {
                    // A failure's stderr is its error message; a success's is shown here.
                    for line in String::from_utf8_lossy(&stderr).lines() {
                        eprintln!("tasq worker: {label}: stderr: {line}");
                    }
                }
                outcome
            }
        };
        let took = human_ms(started.elapsed().as_millis() as u64);
        match outcome {
            Outcome::Complete(result) => {
                eprintln!("tasq worker: {label}: completed in {took}");
                Ok(result)
            }
            Outcome::Fail {
                kind,
                message,
                non_retryable,
            } => {
                // Whether it runs again is the server's to say (the task's retry policy): the
                // line is printed once the settle answers.
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        task.task_id.clone(),
                        format!("tasq worker: {label}: failed ({kind}) in {took}"),
                    );
                let e = if non_retryable {
                    WorkerError::non_retryable(message)
                } else {
                    WorkerError::retryable(message)
                };
                Err(e.with_type(kind))
            }
        }
    }

    fn env(&self, task: &WorkerTask) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TASQ_TASK_ID", task.task_id.clone()),
            ("TASQ_TASK_TYPE", task.task_type.clone()),
            ("TASQ_ATTEMPT", task.attempt.to_string()),
            ("TASQ_PRIORITY", task.priority.to_string()),
            ("TASQ_NAMESPACE", self.key.namespace().to_string()),
            ("TASQ_QUEUE", self.key.name().to_string()),
            (
                "TASQ_QUEUE_TYPE",
                self.key.queue_type().as_str().to_string(),
            ),
            ("TASQ_LEASE", task.lease.clone()),
            ("TASQ_SERVER", self.server.clone()),
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

    /// Runs `sh -c CMD` until it exits, stopping it when the task is cancelled or its lease
    /// is lost (the client's heartbeats find out).
    fn run_command(&self, task: &WorkerTask) -> std::io::Result<Ended> {
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
        self.children().insert(pid);
        let input = format!("{}\n", task.payload);
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
                None => {
                    let why = if task.cancel_requested() {
                        Some(Ended::Cancelled)
                    } else if task.lease_lost() {
                        Some(Ended::LeaseLost)
                    } else {
                        None
                    };
                    if let Some(why) = why {
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
        self.children().remove(&pid);
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
    /// We stopped it: the lease was lost.
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
            "TempFail".into(),
            format!("the command asked for a retry (exit {EXIT_RETRY})"),
            false,
        ),
        (Some(EXIT_NON_RETRYABLE), _) => fail(
            "DataErr".into(),
            format!("the command rejected the task (exit {EXIT_NON_RETRYABLE})"),
            true,
        ),
        (Some(code), _) => fail(
            format!("Exit{code}"),
            format!("the command exited with status {code}"),
            false,
        ),
        (None, Some(sig)) => fail(
            format!("Signal{sig}"),
            format!("the command was killed by signal {sig}"),
            false,
        ),
        (None, None) => fail("Exit".into(), "the command ended abnormally".into(), false),
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
    use serde_json::json;

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
            ("TempFail", "busy", false)
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
        assert_eq!(kind, "Exit3");
        assert!(message.contains("status 3"));
        assert!(!non_retryable);
        assert!(matches!(
            outcome_of(ExitStatus::from_raw(9), b"", b""),
            Outcome::Fail { non_retryable: false, ref kind, .. } if kind == "Signal9"
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
