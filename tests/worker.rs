//! The shell worker `tasq worker QUEUE --exec CMD` against a live server: completing (stdout as
//! JSON or string, payload on stdin, task fields in env), failing (stderr as the message,
//! exit 65 for good), retrying (exit 75), heartbeating a task whose heartbeat timeout is
//! shorter than its run, stopping a cancelled command, running `--concurrency` commands at
//! once, and SIGTERM: no new tasks, running ones finish.

mod common;

use common::*;
use serde_json::{json, Value};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use tempfile::TempDir;

const A: &str = "activity";

/// A running `tasq worker` with its stderr in a file.
struct Worker {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Worker {
    /// Starts `tasq worker QUEUE --exec CMD --identity ID ARGS…` and waits until the server
    /// lists it as a poller.
    fn start(s: &TestServer, queue: &str, identity: &str, exec: &str, args: &[&str]) -> Worker {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("worker.log");
        let mut cmd = tasq_command();
        cmd.args(["worker", "--server", s.base(), queue, "--exec", exec])
            .args(["--identity", identity])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log).expect("log file")));
        let child = cmd.spawn().expect("spawn tasq worker");
        let w = Worker {
            child,
            log,
            _dir: dir,
        };
        wait_for_poller(s, NS, queue, A, identity);
        w
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let ok = wait_until(EVENTUALLY, || matches!(self.child.try_wait(), Ok(Some(_))));
        assert!(ok, "the worker did not exit; its log:\n{}", self.log());
        self.child.wait().expect("wait")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("worker log:\n{}", self.log());
        }
    }
}

/// Waits until the task is in `state`; answers its status.
#[track_caller]
fn wait_state(s: &TestServer, qp: &str, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(EVENTUALLY, || {
        last = status_of(s, qp, id);
        last["state"] == json!(state)
    });
    assert!(ok, "task {id} never reached {state}; last status {last}");
    last
}

fn wait_file(path: &Path) {
    assert!(
        wait_until(EVENTUALLY, || path.exists()),
        "{} never appeared",
        path.display()
    );
}

#[test]
fn completes_with_stdout_payload_on_stdin_and_task_env() {
    let s = TestServer::start();
    let qp = q(NS, "sh-complete", A);
    let dir = tempfile::tempdir().expect("temp dir");
    let exec = format!(
        r#"cat > "{dir}/payload-$TASQ_TASK_ID"
case "$TASQ_TASK_TYPE" in
  env) printf '{{"id":"%s","type":"%s","attempt":%s,"ns":"%s","queue":"%s","qtype":"%s","headers":%s,"lease_set":%s,"server":"%s"}}' \
        "$TASQ_TASK_ID" "$TASQ_TASK_TYPE" "$TASQ_ATTEMPT" "$TASQ_NAMESPACE" "$TASQ_QUEUE" "$TASQ_QUEUE_TYPE" \
        "$TASQ_HEADERS" "$([ -n "$TASQ_LEASE" ] && echo true || echo false)" "$TASQ_SERVER" ;;
  text) echo "just text" ;;
  quiet) ;;
esac"#,
        dir = dir.path().display()
    );
    let _w = Worker::start(&s, "sh-complete", "sh-complete@1", &exec, &[]);
    add_task(
        &s,
        &qp,
        json!({"task_type": "env", "task_id": "e-1", "payload": {"b": [1, 2], "a": "x"},
               "headers": {"trace-id": "t-9"}}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "text", "task_id": "t-1", "payload": "hi"}),
    );
    add_task(&s, &qp, json!({"task_type": "quiet", "task_id": "q-1"}));

    let e = wait_state(&s, &qp, "e-1", "completed");
    assert_eq!(
        e["result"],
        json!({"id": "e-1", "type": "env", "attempt": 1, "ns": "default", "queue": "sh-complete",
               "qtype": "activity", "headers": {"trace-id": "t-9"}, "lease_set": true,
               "server": s.base()})
    );
    let payload = std::fs::read_to_string(dir.path().join("payload-e-1")).expect("payload file");
    let parsed: Value = serde_json::from_str(&payload).expect("stdin is the payload JSON");
    assert_eq!(parsed, json!({"b": [1, 2], "a": "x"}));

    let t = wait_state(&s, &qp, "t-1", "completed");
    assert_eq!(t["result"], json!("just text"));
    let quiet = wait_state(&s, &qp, "q-1", "completed");
    assert_eq!(quiet["result"], Value::Null);
}

#[test]
fn fails_with_stderr_and_exit_65_is_for_good() {
    let s = TestServer::start();
    let qp = q(NS, "sh-fail", A);
    let exec = r#"case "$TASQ_TASK_TYPE" in
  crash) echo "disk on fire" >&2; exit 3 ;;
  reject) echo "payload has no amount" >&2; exit 65 ;;
esac"#;
    let _w = Worker::start(&s, "sh-fail", "sh-fail@1", exec, &[]);
    add_task(
        &s,
        &qp,
        json!({"task_type": "crash", "task_id": "c-1", "retry": {"max_attempts": 1}}),
    );
    // Unlimited attempts, but exit 65 makes it a dead letter at once.
    add_task(&s, &qp, json!({"task_type": "reject", "task_id": "r-1"}));

    let c = wait_state(&s, &qp, "c-1", "failed");
    assert_eq!(c["last_error"]["message"], json!("disk on fire"), "{c}");
    assert_eq!(c["last_error"]["type"], json!("Exit3"), "{c}");
    let r = wait_state(&s, &qp, "r-1", "failed");
    assert_eq!(r["attempt"], json!(1), "{r}");
    assert_eq!(
        r["last_error"]["message"],
        json!("payload has no amount"),
        "{r}"
    );
    assert_eq!(r["last_error"]["type"], json!("DataErr"), "{r}");
}

#[test]
fn exit_75_retries_and_the_next_attempt_completes() {
    let s = TestServer::start();
    let qp = q(NS, "sh-retry", A);
    let exec = r#"if [ "$TASQ_ATTEMPT" = 1 ]; then echo "try later" >&2; exit 75; fi
echo "{\"attempt\": $TASQ_ATTEMPT}""#;
    let _w = Worker::start(&s, "sh-retry", "sh-retry@1", exec, &[]);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "r-1",
               "retry": {"initial_interval_ms": 10, "maximum_interval_ms": 10}}),
    );
    let done = wait_state(&s, &qp, "r-1", "completed");
    assert_eq!(done["attempt"], json!(2), "{done}");
    assert_eq!(done["result"], json!({"attempt": 2}));
}

#[test]
fn heartbeats_keep_a_long_command_leased() {
    let s = TestServer::start();
    let qp = q(NS, "sh-heartbeat", A);
    // The command runs well past its heartbeat timeout: without heartbeats the lease would
    // end and the task would run again (attempt 2).
    let exec = r#"sleep 2; echo '"slept"'"#;
    let w = Worker::start(&s, "sh-heartbeat", "sh-heartbeat@1", exec, &[]);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "h-1", "heartbeat_timeout_ms": 400,
               "start_to_close_timeout_ms": 60000}),
    );
    let done = wait_state(&s, &qp, "h-1", "completed");
    assert_eq!(
        done["attempt"],
        json!(1),
        "{done}; worker log:\n{}",
        w.log()
    );
    assert_eq!(done["result"], json!("slept"));
}

#[test]
fn a_cancelled_task_stops_its_command() {
    let s = TestServer::start();
    let qp = q(NS, "sh-cancel", A);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = dir.path().join("started");
    let exec = format!("touch '{}'; sleep 60", started.display());
    let _w = Worker::start(&s, "sh-cancel", "sh-cancel@1", &exec, &[]);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "c-1", "heartbeat_timeout_ms": 1000}),
    );
    wait_file(&started);
    let (status, body) = delete(&s.url(&format!("{qp}/tasks/c-1")));
    assert_eq!(status, 200, "{body}");
    // The worker stops the command and fails the attempt; a task whose cancel was asked ends
    // `cancelled`, not as a dead letter.
    let cancelled = wait_state(&s, &qp, "c-1", "cancelled");
    assert_eq!(
        cancelled["last_error"]["type"],
        json!("Cancelled"),
        "{cancelled}"
    );
}

#[test]
fn concurrency_runs_commands_at_once() {
    let s = TestServer::start();
    let qp = q(NS, "sh-concurrent", A);
    let dir = tempfile::tempdir().expect("temp dir");
    // Each command marks itself and waits (bounded) for the other's mark: both complete only
    // when both run at the same time.
    let exec = format!(
        r#"d='{}'; touch "$d/$TASQ_TASK_ID"
other=a; [ "$TASQ_TASK_ID" = a ] && other=b
i=0; while [ ! -e "$d/$other" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -e "$d/$other" ] && echo '"together"' || {{ echo alone >&2; exit 1; }}"#,
        dir.path().display()
    );
    let _w = Worker::start(
        &s,
        "sh-concurrent",
        "sh-concurrent@1",
        &exec,
        &["--concurrency", "2"],
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "a", "retry": {"max_attempts": 1}}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "b", "retry": {"max_attempts": 1}}),
    );
    for id in ["a", "b"] {
        let done = wait_state(&s, &qp, id, "completed");
        assert_eq!(done["result"], json!("together"));
    }
}

#[test]
fn task_types_filter_what_the_worker_takes() {
    let s = TestServer::start();
    let qp = q(NS, "sh-types", A);
    let _w = Worker::start(
        &s,
        "sh-types",
        "sh-types@1",
        "echo '\"mine\"'",
        &["--task-types", "a,b"],
    );
    add_task(&s, &qp, json!({"task_type": "b", "task_id": "b-1"}));
    add_task(&s, &qp, json!({"task_type": "c", "task_id": "c-1"}));
    wait_state(&s, &qp, "b-1", "completed");
    let st = stats(&s, NS, "sh-types", A);
    let pollers = st["pollers"].as_array().expect("pollers");
    assert_eq!(pollers[0]["task_types"], json!(["a", "b"]), "{st}");
    assert_eq!(status_of(&s, &qp, "c-1")["state"], json!("pending"));
}

#[test]
fn sigterm_takes_no_new_task_and_lets_the_running_one_finish() {
    let s = TestServer::start();
    let qp = q(NS, "sh-sigterm", A);
    let dir = tempfile::tempdir().expect("temp dir");
    let started = dir.path().join("started");
    let go = dir.path().join("go");
    // The command runs until the test says go (bounded), so the signal surely comes mid-run.
    let exec = format!(
        r#"touch '{started}'; i=0; while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo '"finished"'"#,
        started = started.display(),
        go = go.display()
    );
    let mut w = Worker::start(
        &s,
        "sh-sigterm",
        "sh-sigterm@1",
        &exec,
        &["--concurrency", "2"],
    );
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "first"}));
    wait_file(&started);
    // With one slot free, a poll is parked. SIGTERM gives it up at the server.
    assert!(
        wait_until(EVENTUALLY, || stat_u64(
            &stats(&s, NS, "sh-sigterm", A),
            "parked_polls"
        ) == 1),
        "the worker's second poll never parked"
    );
    w.terminate();
    assert!(
        wait_until(EVENTUALLY, || stat_u64(
            &stats(&s, NS, "sh-sigterm", A),
            "parked_polls"
        ) == 0),
        "the parked poll was not given up; worker log:\n{}",
        w.log()
    );
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "second"}));
    std::fs::write(&go, b"").expect("go file");

    let status = w.wait_exit();
    assert!(status.success(), "exit {status}; log:\n{}", w.log());
    let first = status_of(&s, &qp, "first");
    assert_eq!(first["state"], json!("completed"), "{first}");
    assert_eq!(first["result"], json!("finished"));
    let second = status_of(&s, &qp, "second");
    assert_eq!(second["state"], json!("pending"), "{second}");
    assert_eq!(second["attempt"], json!(0), "{second}");
    assert!(w.log().contains("stopping"), "{}", w.log());
}

#[test]
fn a_worker_for_an_unreachable_server_keeps_trying_and_stops_on_sigterm() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("worker.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args([
            "worker",
            "--server",
            &format!("http://127.0.0.1:{port}"),
            "q",
            "--exec",
            "true",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log).expect("log")))
        .spawn()
        .expect("spawn worker");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(EVENTUALLY, || read().contains("unavailable")),
        "no retry line: {}",
        read()
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "it gave up: {}",
        read()
    );
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    let ok = wait_until(EVENTUALLY, || matches!(child.try_wait(), Ok(Some(_))));
    if !ok {
        let _ = child.kill();
    }
    assert!(ok, "the worker did not stop: {}", read());
    assert!(child.wait().expect("wait").success());
}

#[test]
fn a_worker_with_an_api_key_works_a_server_with_auth_on() {
    let key = "worker-test-key-0123456789abcdef";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("tasq.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n[[auth.keys]]\nname = \"w\"\nsha256 = \"{}\"\n\
             namespaces = [\"*\"]\nroles = [\"producer\", \"worker\", \"admin\"]\n",
            tasq::auth::digest_hex(key)
        ),
    )
    .expect("write config");
    let s = TestServer::start_with(&["--config", config.to_str().expect("utf-8")], &[]);
    let worker_log = dir.path().join("worker.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args([
            "worker",
            "--server",
            s.base(),
            "sh-auth",
            "--exec",
            "echo '\"ok\"'",
        ])
        .env("TASQ_API_KEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&worker_log).expect("log")))
        .spawn()
        .expect("spawn worker");
    let url = s.url(&format!("{}/tasks", q(NS, "sh-auth", A)));
    let added = ureq::post(&url)
        .set("Authorization", &format!("Bearer {key}"))
        .send_json(json!({"task_type": "t", "task_id": "k-1"}));
    assert!(added.is_ok(), "add with the key: {added:?}");
    let status_url = s.url(&format!("{}/tasks/k-1", q(NS, "sh-auth", A)));
    let mut last = Value::Null;
    let done = wait_until(EVENTUALLY, || {
        last = ureq::get(&status_url)
            .set("Authorization", &format!("Bearer {key}"))
            .call()
            .ok()
            .and_then(|r| r.into_json().ok())
            .unwrap_or(Value::Null);
        last["state"] == json!("completed")
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        done,
        "never completed: {last}; worker log:\n{}",
        std::fs::read_to_string(&worker_log).unwrap_or_default()
    );
    assert_eq!(last["result"], json!("ok"));
}

/// The log says what came of each task as the server settled it: a failed attempt that runs
/// again and the last one, which is a dead letter, are told apart; a command that succeeds
/// has its stderr shown; a lost lease is one line.
#[test]
fn the_log_says_what_came_of_each_task() {
    let s = TestServer::start();
    let queue = "w-log";
    let qp = q(NS, queue, A);
    let exec = r#"case "$TASQ_TASK_ID" in
        ok) echo note >&2; echo '{}' ;;
        slow) sleep 5 ;;
        *) echo boom >&2; exit 75 ;;
    esac"#;
    let w = Worker::start(&s, queue, "logger", exec, &["--concurrency", "3"]);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "ok"}));
    let once = json!({"max_attempts": 2, "initial_interval_ms": 1, "maximum_interval_ms": 1});
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "bad", "retry": once}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "slow", "start_to_close_timeout_ms": 500,
               "heartbeat_timeout_ms": 400, "retry": {"max_attempts": 1}}),
    );
    wait_state(&s, &qp, "ok", "completed");
    wait_state(&s, &qp, "bad", "failed");
    wait_state(&s, &qp, "slow", "failed");
    let told = wait_until(EVENTUALLY, || {
        let log = w.log();
        log.contains("dead letter now") && log.contains("lease was lost")
    });
    let log = w.log();
    assert!(told, "{log}");
    assert!(
        log.contains("task ok (t, attempt 1): stderr: note"),
        "{log}"
    );
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{log}"))
            .to_string()
    };
    assert!(
        line("task bad (t, attempt 1): failed (TempFail)").ends_with("; it will run again"),
        "{log}"
    );
    assert!(
        line("task bad (t, attempt 2): failed (TempFail)").ends_with("; it is a dead letter now"),
        "{log}"
    );
    assert!(!log.contains("retryable"), "{log}");
    let lost: Vec<&str> = log.lines().filter(|l| l.contains("task slow")).collect();
    assert_eq!(lost.len(), 1, "one line for a lost lease:\n{log}");
}
