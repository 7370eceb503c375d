//! The command-line client against a live server: `tasq task add|get|cancel`,
//! `tasq queue describe|list|config`, `tasq dead-letters list|redrive`, `--json`, `--server`,
//! `--namespace`, errors (one line with the code, non-zero exit), and `tasq` alone serving.
//!
//! `queue config` and `dead-letters` are also checked against a one-shot fake server that
//! records the request, so the exact request is verified too.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::Duration;

const A: &str = "activity";

/// What a finished `tasq` command did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {}", self.stdout))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit {}; stdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Asserts a failure printed as one line `tasq: CODE: message` with exit status `code`.
    #[track_caller]
    fn failed(self, code: i32, error_code: &str) -> Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let line = self.stderr.trim_end();
        assert!(!line.contains('\n'), "more than one line: {line:?}");
        assert!(
            line.starts_with(&format!("tasq: {error_code}: ")),
            "expected `tasq: {error_code}: …`, got {line:?}"
        );
        self
    }
}

fn command(args: &[&str]) -> Command {
    let mut cmd = tasq_command();
    cmd.args(args).stdin(Stdio::null());
    cmd
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `GROUP --server BASE REST…`: client options come after the command group's name.
fn with_server<'a>(base: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![args[0], "--server", base];
    all.extend_from_slice(&args[1..]);
    all
}

/// Runs `tasq GROUP --server BASE REST…`.
fn tasq(s: &TestServer, args: &[&str]) -> Run {
    finish(
        command(&with_server(s.base(), args))
            .output()
            .expect("run tasq"),
    )
}

/// Runs `tasq ARGS…` with `input` on stdin.
fn tasq_with_stdin(s: &TestServer, args: &[&str], input: &str) -> Run {
    finish(run_with_stdin(
        &mut command(&with_server(s.base(), args)),
        input,
    ))
}

#[test]
fn task_add_sends_every_option() {
    let s = TestServer::start();
    let qp = q(NS, "cli-add", A);
    let out = tasq(
        &s,
        &[
            "task",
            "add",
            "cli-add",
            "send-email",
            r#"{"to": "a@example.com"}"#,
            "--id",
            "order-17",
            "--priority",
            "2",
            "--start-to-close",
            "5s",
            "--heartbeat-timeout",
            "2s",
            "--max-attempts",
            "3",
            "--fairness-key",
            "tenant-a",
            "--header",
            "trace-id=abc",
        ],
    )
    .ok();
    assert!(out.stdout.contains("order-17"), "{}", out.stdout);
    let task = poll_one(&s, &qp, "cli-test", 5000).expect("the added task");
    assert_eq!(task["task_id"], json!("order-17"));
    assert_eq!(task["payload"], json!({"to": "a@example.com"}));
    assert_eq!(task["priority"], json!(2));
    assert_eq!(task["start_to_close_timeout_ms"], json!(5000));
    assert_eq!(task["heartbeat_timeout_ms"], json!(2000));
    assert_eq!(task["fairness_key"], json!("tenant-a"));
    assert_eq!(task["headers"], json!({"trace-id": "abc"}));

    // The same id again: a duplicate, said so, exit 0.
    let dup = tasq(
        &s,
        &["task", "add", "cli-add", "send-email", "--id", "order-17"],
    )
    .ok();
    assert!(dup.stdout.contains("exists already"), "{}", dup.stdout);
    let dup = tasq(
        &s,
        &[
            "task",
            "add",
            "cli-add",
            "send-email",
            "--id",
            "order-17",
            "--json",
        ],
    )
    .ok();
    assert_eq!(dup.json()["duplicate"], json!(true));
}

#[test]
fn task_add_reads_stdin_delays_and_picks_the_type() {
    let s = TestServer::start();
    let out = tasq_with_stdin(
        &s,
        &[
            "task",
            "add",
            "cli-stdin",
            "resize",
            "-",
            "--type",
            "workflow",
            "--json",
        ],
        "[1, 2, {\"x\": null}]\n",
    )
    .ok();
    let id = out.json()["task_id"].as_str().expect("task_id").to_string();
    let wq = q(NS, "cli-stdin", "workflow");
    let task = poll_one(&s, &wq, "cli-test", 5000).expect("task on the workflow queue");
    assert_eq!(task["task_id"], json!(id));
    assert_eq!(task["payload"], json!([1, 2, {"x": null}]));
    assert!(poll_one(&s, &q(NS, "cli-stdin", A), "cli-test", 0).is_none());

    tasq(
        &s,
        &[
            "task",
            "add",
            "cli-stdin",
            "later",
            "--delay",
            "1h",
            "--id",
            "d-1",
        ],
    )
    .ok();
    let st = stats(&s, NS, "cli-stdin", A);
    assert_eq!(stat_u64(&st, "delayed_count"), 1, "{st}");
    assert_eq!(stat_u64(&st, "backlog_count"), 0, "{st}");
    // No payload at all: null.
    tasq(&s, &["task", "add", "cli-stdin", "bare", "--id", "n-1"]).ok();
    let task = poll_one(&s, &q(NS, "cli-stdin", A), "cli-test", 5000).expect("bare task");
    assert_eq!(task["payload"], Value::Null);
}

#[test]
fn task_add_rejects_bad_input_locally_and_remotely() {
    let s = TestServer::start();
    // Not JSON: a local error (exit 2) that says how to quote a string.
    let out = tasq(&s, &["task", "add", "cli-bad", "t", "hello"]).failed(2, "invalid_argument");
    assert!(out.stderr.contains("quoted"), "{}", out.stderr);
    // A bad name never leaves the machine.
    tasq(&s, &["task", "add", "bad queue", "t"]).failed(2, "invalid_argument");
    // Out of range: the server says so, one line; the same mistake, the same exit 2.
    let out =
        tasq(&s, &["task", "add", "cli-bad", "t", "--priority", "9"]).failed(2, "invalid_argument");
    assert!(out.stderr.contains("priority"), "{}", out.stderr);
    // A human duration that is not one: clap's usage error, exit 2.
    let out = tasq(&s, &["task", "add", "cli-bad", "t", "--delay", "soon"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn task_get_shows_status_and_waits() {
    let s = TestServer::start();
    let qp = q(NS, "cli-get", A);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "g-1", "payload": 1}),
    );
    let out = tasq(&s, &["task", "get", "cli-get", "g-1"]).ok();
    assert!(out.stdout.contains("state"), "{}", out.stdout);
    assert!(out.stdout.contains("pending"), "{}", out.stdout);
    let json_out = tasq(&s, &["task", "get", "cli-get", "g-1", "--json"])
        .ok()
        .json();
    assert_eq!(json_out["state"], json!("pending"));
    assert_eq!(json_out["task_id"], json!("g-1"));

    // --wait with a timeout on a task that does not end answers its status then.
    let out = tasq(
        &s,
        &[
            "task",
            "get",
            "cli-get",
            "g-1",
            "--wait",
            "--timeout",
            "300ms",
            "--json",
        ],
    );
    // Exit 5: still waiting when --timeout passed; nothing on stderr.
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(out.json()["state"], json!("pending"));

    // --wait until the task ends.
    let mut waiter = command(&[
        "task",
        "--server",
        s.base(),
        "get",
        "cli-get",
        "g-1",
        "--wait",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn tasq task get --wait");
    let task = poll_one(&s, &qp, "cli-test", 5000).expect("task");
    let (status, body) = complete(&s, &lease_of(&task), json!({"ok": true}));
    assert_eq!(status, 200, "{body}");
    let out = finish(wait_output(&mut waiter));
    let out = out.ok();
    assert!(out.stdout.contains("completed"), "{}", out.stdout);
    assert!(out.stdout.contains(r#"{"ok":true}"#), "{}", out.stdout);

    let out = tasq(&s, &["task", "get", "cli-get", "nope"]).failed(1, "not_found");
    assert!(out.stderr.contains("nope"), "{}", out.stderr);

    // The final state is the exit status: 3 for a dead letter, 4 for a cancelled task.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "g-dead"}));
    let task = poll_one(&s, &qp, "cli-test", 5000).expect("task");
    assert_eq!(
        fail(&s, &lease_of(&task), json!({"non_retryable": true})).0,
        200
    );
    let out = tasq(&s, &["task", "get", "cli-get", "g-dead", "--wait"]);
    assert_eq!(out.code, 3, "{}", out.stdout);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "g-off", "delay_ms": 600000}),
    );
    tasq(&s, &["task", "cancel", "cli-get", "g-off"]).ok();
    assert_eq!(
        tasq(&s, &["task", "get", "cli-get", "g-off", "--wait"]).code,
        4
    );
    // Without --wait the state is shown and the exit status is 0.
    tasq(&s, &["task", "get", "cli-get", "g-off"]).ok();
    // A server address without a scheme is plain http.
    let bare = s.base().trim_start_matches("http://").to_string();
    let out = finish(
        command(&["task", "--server", &bare, "get", "cli-get", "g-off"])
            .output()
            .expect("run tasq"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// Waits (bounded) for a child started with piped output.
fn wait_output(child: &mut Child) -> Output {
    let ok = wait_until(EVENTUALLY, || matches!(child.try_wait(), Ok(Some(_))));
    if !ok {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait");
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_end(&mut stdout);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_end(&mut stderr);
    }
    assert!(ok, "the command did not end in time");
    Output {
        status,
        stdout,
        stderr,
    }
}

#[test]
fn task_cancel_pending_and_running() {
    let s = TestServer::start();
    let qp = q(NS, "cli-cancel", A);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "c-1", "delay_ms": 3_600_000}),
    );
    let out = tasq(&s, &["task", "cancel", "cli-cancel", "c-1"]).ok();
    assert!(out.stdout.contains("cancelled"), "{}", out.stdout);
    assert_eq!(status_of(&s, &qp, "c-1")["state"], json!("cancelled"));

    add_task(&s, &qp, json!({"task_type": "t", "task_id": "c-2"}));
    let task = poll_one(&s, &qp, "cli-test", 5000).expect("task");
    let out = tasq(&s, &["task", "cancel", "cli-cancel", "c-2", "--json"]).ok();
    assert_eq!(out.json()["state"], json!("running"));
    let (status, body) = heartbeat(&s, &lease_of(&task), Value::Null);
    assert_eq!(status, 200);
    assert_eq!(body["cancel_requested"], json!(true));

    tasq(&s, &["task", "cancel", "cli-cancel", "missing"]).failed(1, "not_found");
}

#[test]
fn queue_describe_shows_backlog_pollers_and_rate_limit() {
    let s = TestServer::start();
    let qp = q(NS, "cli-describe", A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "d-1"}));
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "d-2"}));
    // A poller that takes one task leaves one in the backlog and one in flight.
    poll_tasks(
        &s,
        &qp,
        json!({"identity": "describe-worker@1", "max_tasks": 1, "wait_ms": 0, "task_types": ["t"]}),
    );
    let out = tasq(&s, &["queue", "describe", "cli-describe"]).ok();
    for needle in [
        "cli-describe",
        "TYPE",
        "BACKLOG",
        "BACKLOG AGE",
        "IN FLIGHT",
        "DISPATCH RATE",
        "RATE LIMIT",
        "activity",
        "workflow",
        "describe-worker@1",
        "LAST ACCESS",
        "ago)",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let activity_row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("activity  "))
        .expect("a stats row for activity");
    let cells: Vec<&str> = activity_row.split_whitespace().collect();
    assert_eq!(cells[1], "1", "backlog in {activity_row:?}");

    let j = tasq(&s, &["queue", "describe", "cli-describe", "--json"])
        .ok()
        .json();
    assert_eq!(j["types"]["activity"]["backlog_count"], json!(1));
    assert_eq!(j["types"]["activity"]["in_flight_count"], json!(1));

    // A queue never used describes as empty, never an error.
    let out = tasq(&s, &["queue", "describe", "cli-never-used"]).ok();
    assert!(out.stdout.contains("none"), "{}", out.stdout);
    tasq(&s, &["queue", "describe", "bad/name"]).failed(2, "invalid_argument");
}

#[test]
fn queue_list_shows_every_queue() {
    let s = TestServer::start();
    for name in ["cli-list-a", "cli-list-b", "cli-list-c"] {
        add_task(&s, &q(NS, name, A), json!({"task_type": "t"}));
    }
    add_task(
        &s,
        &q(NS, "cli-list-w", "workflow"),
        json!({"task_type": "t"}),
    );
    // A page size of 1 makes the client follow every page.
    let out = tasq(&s, &["queue", "list", "--page-size", "1"]).ok();
    for needle in [
        "NAME",
        "cli-list-a",
        "cli-list-b",
        "cli-list-c",
        "cli-list-w",
        "workflow",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let j = tasq(&s, &["queue", "list", "--json"]).ok().json();
    let names: Vec<&str> = j["task_queues"]
        .as_array()
        .expect("task_queues")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .collect();
    assert!(names.contains(&"cli-list-b"), "{j}");
    // Another namespace has none of them.
    let out = tasq(&s, &["queue", "list", "--namespace", "elsewhere"]).ok();
    assert!(out.stdout.contains("no task queues"), "{}", out.stdout);
}

#[test]
fn namespace_and_server_come_from_flags_or_env() {
    let s = TestServer::start();
    tasq(
        &s,
        &[
            "task",
            "--namespace",
            "team-a",
            "add",
            "cli-ns",
            "t",
            "--id",
            "n-1",
        ],
    )
    .ok();
    let st = status_of(&s, &q("team-a", "cli-ns", A), "n-1");
    assert_eq!(st["state"], json!("pending"));
    let out = finish(
        command(&["task", "get", "cli-ns", "n-1", "--json"])
            .env("TASQ_SERVER", s.base())
            .env("TASQ_NAMESPACE", "team-a")
            .output()
            .expect("run tasq"),
    )
    .ok();
    assert_eq!(out.json()["task_id"], json!("n-1"));
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = finish(
        command(&["queue", "--server", &url, "list"])
            .output()
            .expect("run tasq"),
    );
    let out = out.failed(1, "unavailable");
    assert!(out.stderr.contains(&url), "{}", out.stderr);
}

/// A one-shot HTTP server: records one request and answers `status` with `body`.
fn fake_server(status: u16, body: Value) -> (String, thread::JoinHandle<(String, String, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake server");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let (request_line, length) = read_http_head(&mut reader);
        let mut raw = vec![0u8; length];
        reader.read_exact(&mut raw).expect("body");
        let text = body.to_string();
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
            text.len()
        )
        .expect("answer");
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw).expect("request body is JSON")
        };
        (method, path, body)
    });
    (base, handle)
}

fn run_against(base: &str, args: &[&str]) -> Run {
    finish(
        command(&with_server(base, args))
            .output()
            .expect("run tasq"),
    )
}

const QP: &str = "/api/v1/namespaces/default/task-queues";

#[test]
fn queue_config_sends_put_config() {
    let (base, seen) = fake_server(200, json!({"max_tasks_per_second": 50.0, "burst": 10}));
    let out = run_against(
        &base,
        &["queue", "config", "orders", "--rps", "50", "--burst", "10"],
    )
    .ok();
    assert!(out.stdout.contains("50 tasks/s"), "{}", out.stdout);
    assert!(out.stdout.contains("burst 10"), "{}", out.stdout);
    let (method, path, body) = seen.join().expect("fake server");
    assert_eq!(method, "PUT");
    assert_eq!(path, format!("{QP}/orders/activity/config"));
    assert_eq!(body, json!({"max_tasks_per_second": 50.0, "burst": 10}));

    let (base, seen) = fake_server(200, json!({"max_tasks_per_second": null, "burst": null}));
    let out = run_against(
        &base,
        &[
            "queue",
            "config",
            "orders",
            "--type",
            "workflow",
            "--unlimited",
        ],
    )
    .ok();
    assert!(out.stdout.contains("unlimited"), "{}", out.stdout);
    let (_, path, body) = seen.join().expect("fake server");
    assert_eq!(path, format!("{QP}/orders/workflow/config"));
    assert_eq!(body, json!({"max_tasks_per_second": null}));

    // The server's error comes out as one line with its code.
    let (base, seen) = fake_server(
        400,
        json!({"error": {"code": "invalid_argument", "message": "burst must be at least 1"}}),
    );
    let out = run_against(
        &base,
        &["queue", "config", "orders", "--rps", "5", "--burst", "0"],
    )
    .failed(2, "invalid_argument");
    assert!(
        out.stderr.contains("burst must be at least 1"),
        "{}",
        out.stderr
    );
    seen.join().expect("fake server");

    // Neither --rps nor --unlimited: a usage error, nothing sent.
    assert_eq!(run_against(&base, &["queue", "config", "orders"]).code, 2);
}

#[test]
fn queue_config_sets_the_rate_limit_that_describe_shows() {
    let s = TestServer::start();
    let out = tasq(
        &s,
        &[
            "queue",
            "config",
            "cli-config",
            "--rps",
            "25",
            "--burst",
            "5",
        ],
    )
    .ok();
    assert!(out.stdout.contains("25 tasks/s"), "{}", out.stdout);
    let st = stats(&s, NS, "cli-config", A);
    assert_eq!(
        st["rate_limit"]["max_tasks_per_second"],
        json!(25.0),
        "{st}"
    );
    let out = tasq(&s, &["queue", "describe", "cli-config"]).ok();
    assert!(out.stdout.contains("25/s burst 5 (api)"), "{}", out.stdout);
    let out = tasq(&s, &["queue", "config", "cli-config", "--unlimited"]).ok();
    assert!(out.stdout.contains("unlimited"), "{}", out.stdout);
    tasq(&s, &["queue", "config", "cli-config", "--rps=-1"]).failed(2, "invalid_argument");
}

#[test]
fn dead_letters_list_and_redrive_send_the_contract_requests() {
    let letters = json!({"dead_letters": [{
        "task_id": "dl-1", "task_type": "charge", "state": "failed", "attempt": 3,
        "last_error": {"message": "card declined", "type": "Declined"},
        "payload": {"amount": 5}, "updated_at": "2026-11-22T08:00:00.123Z"}],
        "next_page_token": "abc_-1"});
    let (base, seen) = fake_server(200, letters);
    let out = run_against(
        &base,
        &["dead-letters", "list", "payments", "--limit", "10"],
    )
    .ok();
    for needle in [
        "TASK ID",
        "dl-1",
        "charge",
        "failed",
        "Declined: card declined",
        "--page-token abc_-1",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let (method, path, _) = seen.join().expect("fake server");
    assert_eq!(method, "GET");
    assert_eq!(
        path,
        format!("{QP}/payments/activity/dead-letters?limit=10")
    );

    let (base, seen) = fake_server(200, json!({"dead_letters": [], "next_page_token": null}));
    run_against(
        &base,
        &[
            "dead-letters",
            "list",
            "payments",
            "--type",
            "workflow",
            "--page-token",
            "abc_-1",
        ],
    )
    .ok();
    let (_, path, _) = seen.join().expect("fake server");
    assert_eq!(
        path,
        format!("{QP}/payments/workflow/dead-letters?limit=100&page_token=abc_-1")
    );

    let (base, seen) = fake_server(200, json!({"redriven": 4}));
    let out = run_against(&base, &["dead-letters", "redrive", "payments", "--all"]).ok();
    assert!(out.stdout.contains("redrove 4"), "{}", out.stdout);
    let (method, path, body) = seen.join().expect("fake server");
    assert_eq!(method, "POST");
    assert_eq!(path, format!("{QP}/payments/activity/dead-letters/redrive"));
    assert_eq!(body, json!({"all": true}));

    let (base, seen) = fake_server(200, json!({"redriven": 2}));
    let out = run_against(
        &base,
        &[
            "dead-letters",
            "redrive",
            "payments",
            "dl-1",
            "dl-2",
            "--json",
        ],
    )
    .ok();
    assert_eq!(out.json(), json!({"redriven": 2}));
    let (_, _, body) = seen.join().expect("fake server");
    assert_eq!(body, json!({"task_ids": ["dl-1", "dl-2"]}));

    let (base, seen) = fake_server(
        404,
        json!({"error": {"code": "not_found", "message": "no dead letter \"dl-9\""}}),
    );
    run_against(&base, &["dead-letters", "redrive", "payments", "dl-9"]).failed(1, "not_found");
    seen.join().expect("fake server");

    // Neither --all nor ids: a usage error, nothing sent.
    assert_eq!(
        run_against(&base, &["dead-letters", "redrive", "payments"]).code,
        2
    );
}

#[test]
fn dead_letters_are_listed_and_redriven() {
    let s = TestServer::start();
    let qp = q(NS, "cli-dead", A);
    for id in ["x-1", "x-2"] {
        add_task(&s, &qp, json!({"task_type": "t", "task_id": id}));
        let task = poll_one(&s, &qp, "cli-test", 5000).expect("task");
        let (status, body) = fail(
            &s,
            &lease_of(&task),
            json!({"error": {"message": "gave up", "type": "Fatal"}, "non_retryable": true}),
        );
        assert_eq!(status, 200, "{body}");
    }
    let out = tasq(&s, &["dead-letters", "list", "cli-dead"]).ok();
    for needle in ["x-1", "x-2", "failed", "Fatal: gave up"] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} missing in:\n{}",
            out.stdout
        );
    }
    let j = tasq(&s, &["dead-letters", "list", "cli-dead", "--json"])
        .ok()
        .json();
    assert_eq!(j["dead_letters"].as_array().map(Vec::len), Some(2), "{j}");

    let out = tasq(&s, &["dead-letters", "redrive", "cli-dead", "x-1"]).ok();
    assert!(out.stdout.contains("redrove 1"), "{}", out.stdout);
    assert_eq!(status_of(&s, &qp, "x-1")["state"], json!("pending"));
    let out = tasq(&s, &["dead-letters", "redrive", "cli-dead", "--all"]).ok();
    assert!(out.stdout.contains("redrove 1"), "{}", out.stdout);
    assert_eq!(status_of(&s, &qp, "x-2")["state"], json!("pending"));
    let out = tasq(&s, &["dead-letters", "list", "cli-dead"]).ok();
    assert!(out.stdout.contains("no dead letters"), "{}", out.stdout);
}

/// A server with auth on and one key for every namespace and role.
fn server_with_key(key: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("tasq.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nenabled = true\n[[auth.keys]]\nname = \"cli\"\nsha256 = \"{}\"\n\
             namespaces = [\"*\"]\nroles = [\"producer\", \"worker\", \"admin\"]\n",
            tasq::auth::digest_hex(key)
        ),
    )
    .expect("write config");
    let s = TestServer::start_with(&["--config", config.to_str().expect("utf-8")], &[]);
    // The server has read its config; the file may go.
    drop(dir);
    s
}

#[test]
fn api_keys_come_from_the_flag_or_env() {
    let key = "cli-test-key-0123456789abcdef";
    let s = server_with_key(key);
    tasq(&s, &["task", "add", "cli-auth", "t", "--id", "a-1"]).failed(1, "unauthenticated");
    tasq(
        &s,
        &[
            "task",
            "add",
            "cli-auth",
            "t",
            "--id",
            "a-1",
            "--api-key",
            key,
        ],
    )
    .ok();
    let out = finish(
        command(&["queue", "describe", "cli-auth", "--json"])
            .env("TASQ_SERVER", s.base())
            .env("TASQ_API_KEY", key)
            .output()
            .expect("run tasq"),
    )
    .ok();
    assert_eq!(out.json()["types"]["activity"]["backlog_count"], json!(1));
    tasq(&s, &["queue", "list", "--api-key", "wrong"]).failed(1, "unauthenticated");
}

#[test]
fn tasq_alone_still_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = command(&[
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf-8 path"),
    ])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn tasq");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("tasq listening on ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let url = url.expect("tasq with no subcommand prints its listening line");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
}
