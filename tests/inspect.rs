//! Looking into a queue over the API: `GET {q}/tasks` lists tasks by state with filters and
//! pages, `GET {q}/tasks/{id}/explain` says why a task is or is not running, one test per
//! reason code of the contract.

mod common;

use common::*;
use serde_json::{json, Value};

const A: &str = "activity";

fn list(s: &TestServer, qp: &str, query: &str) -> Value {
    let (code, body) = get(&s.url(&format!("{qp}/tasks?{query}")));
    assert_eq!(code, 200, "{query}: {body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["task_id"].as_str().expect("id").to_string())
        .collect()
}

/// Every page of a listing, followed through its tokens.
fn all_pages(s: &TestServer, qp: &str, query: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    for _ in 0..100 {
        let page = list(s, qp, &format!("{query}&limit={limit}&page_token={token}"));
        out.extend(ids(&page));
        match page["next_page_token"].as_str() {
            Some(t) => token = t.to_string(),
            None => return out,
        }
    }
    panic!("more than 100 pages");
}

/// The reason codes of an explanation, and the explanation.
fn explain(s: &TestServer, qp: &str, id: &str) -> (Vec<String>, Value) {
    let (code, body) = get(&s.url(&format!("{qp}/tasks/{id}/explain")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["task_id"], json!(id));
    let reasons = body["reasons"].as_array().expect("reasons");
    assert!(!reasons.is_empty(), "{body}");
    for r in reasons {
        assert!(
            r["message"].as_str().is_some_and(|m| m.len() > 10),
            "a sentence for a person: {r}"
        );
    }
    let codes = reasons
        .iter()
        .map(|r| r["code"].as_str().expect("code").to_string())
        .collect();
    (codes, body)
}

fn reason<'a>(body: &'a Value, code: &str) -> &'a Value {
    body["reasons"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["code"] == json!(code)))
        .unwrap_or_else(|| panic!("no {code} in {body}"))
}

#[test]
fn tasks_are_listed_by_state_with_filters_and_pages() {
    let s = TestServer::start();
    let qp = q(NS, "listed", A);
    // Pending in dispatch order: priority first, then oldest.
    for (id, priority, key) in [
        ("p5", 5, "k1"),
        ("p1", 1, "k2"),
        ("p3a", 3, "k1"),
        ("p3b", 3, "k2"),
    ] {
        add_task(
            &s,
            &qp,
            json!({"task_type": if id == "p3b" { "other" } else { "t" }, "task_id": id,
                   "priority": priority, "fairness_key": key, "payload": {"id": id}}),
        );
    }
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "later", "delay_ms": 600000}),
    );
    let page = list(&s, &qp, "");
    assert_eq!(ids(&page), ["p1", "p3a", "p3b", "p5"]);
    let first = &page["tasks"][0];
    assert_eq!(first["state"], json!("pending"));
    assert_eq!(first["payload"], json!({"id": "p1"}));
    assert_eq!(first["fairness_key"], json!("k2"));
    assert_eq!(first["due_at"], Value::Null);
    assert_has_keys(
        first,
        &[
            "task_id",
            "task_type",
            "state",
            "attempt",
            "priority",
            "fairness_key",
            "added_at",
            "updated_at",
            "due_at",
            "lease_expires_at",
            "identity",
            "payload",
        ],
    );
    assert_eq!(
        all_pages(&s, &qp, "state=pending", 1),
        ["p1", "p3a", "p3b", "p5"]
    );
    assert_eq!(ids(&list(&s, &qp, "task_type=t")), ["p1", "p3a", "p5"]);
    assert_eq!(ids(&list(&s, &qp, "fairness_key=k1")), ["p3a", "p5"]);
    assert_eq!(ids(&list(&s, &qp, "priority=3")), ["p3a", "p3b"]);
    let delayed = list(&s, &qp, "state=delayed");
    assert_eq!(ids(&delayed), ["later"]);
    assert!(is_rfc3339_utc(
        delayed["tasks"][0]["due_at"].as_str().unwrap_or("")
    ));

    // Running: with the worker and the lease's end.
    let task = poll_one(&s, &qp, "worker-1", 2000).expect("p1");
    let running = list(&s, &qp, "state=running");
    assert_eq!(ids(&running), ["p1"]);
    assert_eq!(running["tasks"][0]["identity"], json!("worker-1"));
    assert!(is_rfc3339_utc(
        running["tasks"][0]["lease_expires_at"]
            .as_str()
            .unwrap_or("")
    ));
    assert_eq!(complete(&s, &lease_of(&task), json!(1)).0, 200);

    // Completed, newest first, across pages; dead letters; cancelled.
    let done = q(NS, "listed-done", A);
    for i in 0..7 {
        let id = add_task(
            &s,
            &done,
            json!({"task_type": "t", "task_id": format!("d{i}")}),
        );
        let t = poll_one(&s, &done, "w", 2000).expect("the task");
        assert_eq!(t["task_id"], json!(id));
        if i == 6 {
            let (code, _) = fail(&s, &lease_of(&t), json!({"non_retryable": true}));
            assert_eq!(code, 200);
        } else {
            assert_eq!(complete(&s, &lease_of(&t), json!(i)).0, 200);
        }
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    add_task(&s, &done, json!({"task_type": "t", "task_id": "gone"}));
    let (code, _) = delete(&s.url(&format!("{done}/tasks/gone")));
    assert_eq!(code, 200);
    let completed = all_pages(&s, &done, "state=completed", 2);
    assert_eq!(completed, ["d5", "d4", "d3", "d2", "d1", "d0"]);
    assert_eq!(ids(&list(&s, &done, "state=dead")), ["d6"]);
    assert_eq!(ids(&list(&s, &done, "state=cancelled")), ["gone"]);
    assert!(ids(&list(&s, &done, "state=pending")).is_empty());

    // Bad input: a clear 400, whatever the field.
    for query in [
        "state=finished",
        "limit=0",
        "limit=1001",
        "priority=9",
        "priority=x",
        "task_type=bad%20name",
        "page_token=!!",
        "surprise=1",
    ] {
        let (code, body) = get(&s.url(&format!("{qp}/tasks?{query}")));
        assert_error(code, &body, 400, "invalid_argument");
    }
    // A token of one state is refused by another.
    let token = list(&s, &done, "state=completed&limit=1")["next_page_token"]
        .as_str()
        .expect("a token")
        .to_string();
    let (code, body) = get(&s.url(&format!("{qp}/tasks?state=pending&page_token={token}")));
    assert_error(code, &body, 400, "invalid_argument");
}

#[test]
fn explain_says_why_for_every_reason() {
    let s = TestServer::start_with(&[], &[("TASQ_LIMITS_MAX_IN_FLIGHT_PER_QUEUE", "1")]);
    // No poller, and waiting behind two others.
    let qp = q(NS, "why", A);
    for id in ["w1", "w2", "w3"] {
        add_task(&s, &qp, json!({"task_type": "t", "task_id": id}));
    }
    let (codes, body) = explain(&s, &qp, "w3");
    assert_eq!(codes, ["no_poller", "waiting_behind"], "{body}");
    assert_eq!(reason(&body, "waiting_behind")["ahead"], json!(2));
    // A poller for another type only.
    let none = poll_tasks(
        &s,
        &qp,
        json!({"identity": "typed", "task_types": ["x"], "wait_ms": 0}),
    );
    assert!(none.is_empty());
    let (codes, body) = explain(&s, &qp, "w1");
    assert_eq!(codes, ["no_poller_for_type"], "{body}");
    // Running (with whom and until when), then the in-flight bound holds the rest back.
    let task = poll_one(&s, &qp, "runner", 2000).expect("w1");
    let (codes, body) = explain(&s, &qp, "w1");
    assert_eq!(codes, ["running"], "{body}");
    assert_eq!(reason(&body, "running")["identity"], json!("runner"));
    assert!(is_rfc3339_utc(
        reason(&body, "running")["lease_expires_at"]
            .as_str()
            .unwrap_or("")
    ));
    let (codes, body) = explain(&s, &qp, "w2");
    assert!(codes.contains(&"in_flight_limit".to_string()), "{body}");
    // Finished.
    assert_eq!(complete(&s, &lease_of(&task), json!(1)).0, 200);
    let (codes, body) = explain(&s, &qp, "w1");
    assert_eq!(codes, ["finished"], "{body}");
    assert_eq!(body["state"], json!("completed"));
    // Next in line, with a poller: nothing holds it back but the queue.
    let (codes, body) = explain(&s, &qp, "w2");
    assert_eq!(codes, ["waiting_behind"], "{body}");
    assert_eq!(reason(&body, "waiting_behind")["ahead"], json!(0));

    // Paused, then rate limited.
    let paused = q(NS, "why-paused", A);
    add_task(&s, &paused, json!({"task_type": "t", "task_id": "p"}));
    let (code, _) = put(
        &s.url(&format!("{paused}/config")),
        &json!({"max_tasks_per_second": 0}),
    );
    assert_eq!(code, 200);
    let (codes, body) = explain(&s, &paused, "p");
    assert!(codes.contains(&"paused".to_string()), "{body}");
    let (code, _) = put(
        &s.url(&format!("{paused}/config")),
        &json!({"max_tasks_per_second": 0.01, "burst": 1}),
    );
    assert_eq!(code, 200);
    add_task(&s, &paused, json!({"task_type": "t", "task_id": "p2"}));
    assert!(
        poll_one(&s, &paused, "w", 2000).is_some(),
        "the burst's one token"
    );
    let (codes, body) = explain(&s, &paused, "p2");
    assert!(codes.contains(&"rate_limited".to_string()), "{body}");
    assert_eq!(
        reason(&body, "rate_limited")["max_tasks_per_second"],
        json!(0.01)
    );

    // Delayed, and retry backoff after a failed attempt.
    let later = q(NS, "why-later", A);
    add_task(
        &s,
        &later,
        json!({"task_type": "t", "task_id": "d", "delay_ms": 600000}),
    );
    let (codes, body) = explain(&s, &later, "d");
    assert_eq!(codes, ["delayed"], "{body}");
    assert!(is_rfc3339_utc(
        reason(&body, "delayed")["due_at"].as_str().unwrap_or("")
    ));
    add_task(&s, &later, json!({"task_type": "t", "task_id": "r"}));
    let t = poll_one(&s, &later, "w", 2000).expect("r");
    let (code, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "boom"}, "retry_after_ms": 600000}),
    );
    assert_eq!(code, 200);
    let (codes, body) = explain(&s, &later, "r");
    assert_eq!(codes, ["retry_backoff"], "{body}");
    assert!(reason(&body, "retry_backoff")["message"]
        .as_str()
        .unwrap_or("")
        .contains("boom"));

    // Routed to one worker until its fallback.
    let routed = q(NS, "why-routed", A);
    add_task(
        &s,
        &routed,
        json!({"task_type": "t", "task_id": "r1",
               "route_to": {"identity": "worker-7", "fallback_after_ms": 600000}}),
    );
    let (codes, body) = explain(&s, &routed, "r1");
    assert!(codes.contains(&"routed".to_string()), "{body}");
    let r = reason(&body, "routed");
    assert_eq!(r["identity"], json!("worker-7"));
    assert!(
        is_rfc3339_utc(r["fallback_at"].as_str().unwrap_or("")),
        "{r}"
    );

    // Unknown and bad ids.
    let (code, body) = get(&s.url(&format!("{qp}/tasks/nope/explain")));
    assert_error(code, &body, 404, "not_found");
    let (code, body) = get(&s.url(&format!("{qp}/tasks/bad%20id/explain")));
    assert_error(code, &body, 400, "invalid_argument");
}

/// `tasq task list` and `tasq task explain` print what the API answers.
#[test]
fn the_cli_lists_and_explains() {
    let s = TestServer::start();
    let qp = q(NS, "cli-inspect", A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "first"}));
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "second", "delay_ms": 600000}),
    );
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasq"))
            .args(args)
            .args(["--server", s.base()])
            .output()
            .expect("run tasq");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pending = run(&["task", "list", "cli-inspect"]);
    assert!(
        pending.contains("first") && !pending.contains("second"),
        "{pending}"
    );
    let delayed = run(&["task", "list", "cli-inspect", "--state", "delayed"]);
    assert!(
        delayed.contains("second") && delayed.contains("due "),
        "{delayed}"
    );
    let page: Value = serde_json::from_str(&run(&[
        "task",
        "list",
        "cli-inspect",
        "--limit",
        "1",
        "--json",
    ]))
    .expect("JSON");
    assert_eq!(ids(&page), ["first"]);
    let why = run(&["task", "explain", "cli-inspect", "second"]);
    assert!(
        why.contains("(delayed)") && why.contains("second is pending"),
        "{why}"
    );
}
