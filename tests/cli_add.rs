//! `tasq task add`'s retry, fairness and routing flags, and `tasq task add-many` from a
//! JSON Lines file, against a real server.

mod common;

use std::process::Output;

use common::*;
use serde_json::json;

const A: &str = "activity";

/// Runs `tasq task --server BASE ARGS…` with `input` on stdin.
fn task(s: &TestServer, args: &[&str], input: &str) -> Output {
    run_with_stdin(
        tasq_command()
            .args(["task", "--server", s.base()])
            .args(args),
        input,
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn task_add_takes_retry_fairness_and_routing_flags() {
    let s = TestServer::start();
    let qp = q(NS, "cli-flags", A);
    let out = task(
        &s,
        &[
            "add",
            "cli-flags",
            "t",
            "--id",
            "routed",
            "--route-to",
            "worker-9",
            "--route-fallback",
            "never",
            "--fairness-key",
            "k",
            "--fairness-weight",
            "2.5",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, why) = get(&s.url(&format!("{qp}/tasks/routed/explain")));
    let routed = why["reasons"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["code"] == json!("routed")).cloned())
        .unwrap_or_else(|| panic!("not routed: {why}"));
    assert_eq!(routed["identity"], json!("worker-9"));
    assert_eq!(routed["fallback_at"], serde_json::Value::Null);

    // A retry policy: the first retry waits --retry-initial.
    let out = task(
        &s,
        &[
            "add",
            "cli-flags",
            "t",
            "--id",
            "retried",
            "--max-attempts",
            "3",
            "--retry-initial",
            "10m",
            "--retry-backoff",
            "3",
            "--retry-max-interval",
            "1h",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = poll_tasks(
        &s,
        &qp,
        json!({"identity": "worker-9", "max_tasks": 2, "wait_ms": 2000}),
    );
    let retried = t
        .iter()
        .find(|t| t["task_id"] == json!("retried"))
        .expect("the retried task");
    let (code, body) = fail(&s, &lease_of(retried), json!({"error": {"message": "x"}}));
    assert_eq!(code, 200, "{body}");
    let (_, listed) = get(&s.url(&format!("{qp}/tasks?state=delayed")));
    let due = listed["tasks"][0]["due_at"]
        .as_str()
        .expect("due_at")
        .to_string();
    let updated = listed["tasks"][0]["updated_at"]
        .as_str()
        .expect("updated")
        .to_string();
    // Ten minutes later, to the minute (RFC 3339 strings compare as times here).
    assert!(due > updated, "{listed}");
    assert!(
        due[11..13] != updated[11..13] || due[14..16] != updated[14..16],
        "{listed}"
    );

    // Bad flags: a clear local error.
    let out = task(&s, &["add", "cli-flags", "t", "--route-fallback", "5s"], "");
    assert_eq!(
        out.status.code(),
        Some(2),
        "--route-fallback needs --route-to"
    );
    let out = task(
        &s,
        &[
            "add",
            "cli-flags",
            "t",
            "--route-to",
            "w",
            "--route-fallback",
            "soon",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn task_add_many_reads_json_lines() {
    let s = TestServer::start();
    let qp = q(NS, "cli-many", A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "old"}));
    let lines = "{\"task_type\": \"t\", \"task_id\": \"a\"}\n\n\
                 {\"task_type\": \"t\", \"task_id\": \"old\"}\n\
                 {\"task_type\": \"t\", \"payload\": [1, 2]}\n";
    let out = task(&s, &["add-many", "cli-many", "-"], lines);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("added 2 tasks"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("1 existed already"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(status_of(&s, &qp, "a")["state"], json!("pending"));

    // More than one batch from a file.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tasks.jsonl");
    let many: String = (0..2500)
        .map(|i| format!("{{\"task_type\": \"t\", \"task_id\": \"m{i}\"}}\n"))
        .collect();
    std::fs::write(&file, many).expect("write the file");
    let out = task(
        &s,
        &[
            "add-many",
            "cli-many",
            file.to_str().expect("utf-8"),
            "--json",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer, json!({"added": 2500, "duplicates": 0}));

    // A line that is not JSON: exit 2 naming it, nothing sent.
    let out = task(
        &s,
        &["add-many", "cli-many", "-"],
        "{\"task_type\": \"t\", \"task_id\": \"z1\"}\nnope\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
    let (code, _) = get(&s.url(&format!("{qp}/tasks/z1")));
    assert_eq!(code, 404, "nothing was added");
    // A task the server refuses: exit 2 (a wrong request) naming its line, its batch not added.
    let out = task(
        &s,
        &["add-many", "cli-many", "-"],
        "{\"task_type\": \"t\", \"task_id\": \"z2\"}\n{\"task_type\": \"t\", \"priority\": 9}\n",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("- line 2"),
        "{}",
        text(&out.stderr)
    );
    let (code, _) = get(&s.url(&format!("{qp}/tasks/z2")));
    assert_eq!(code, 404, "the batch is all or nothing");
}
