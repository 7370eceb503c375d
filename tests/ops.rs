//! Operations capability: health and readiness, Prometheus metrics (every contract name,
//! per-queue labels, bounded route labels), describe and list of queues, and isolation of
//! queue types and namespaces.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::thread;

const A: &str = "activity";
const W: &str = "workflow";

const STATS_FIELDS: &[&str] = &[
    "backlog_count",
    "backlog_age_ms",
    "delayed_count",
    "in_flight_count",
    "dead_letter_count",
    "add_rate",
    "dispatch_rate",
    "pollers",
    "rate_limit",
    "registration_mismatch",
];

const COUNTERS_AND_GAUGES: &[&str] = &[
    "tasq_tasks_added_total",
    "tasq_tasks_dispatched_total",
    "tasq_tasks_completed_total",
    "tasq_tasks_failed_total",
    "tasq_tasks_expired_total",
    "tasq_polls_total",
    "tasq_pollers",
    "tasq_backlog_tasks",
    "tasq_backlog_age_seconds",
    "tasq_in_flight_tasks",
    "tasq_dead_letter_tasks",
    "tasq_rate_limited_total",
    "tasq_loaded_task_queues",
    "tasq_http_requests_total",
    "tasq_websocket_connections",
    "tasq_build_info",
    "tasq_registration_mismatch",
    "tasq_storage_healthy",
];

const HISTOGRAMS: &[&str] = &[
    "tasq_schedule_to_start_seconds",
    "tasq_task_run_seconds",
    "tasq_storage_flush_seconds",
    "tasq_storage_flush_batch_size",
    "tasq_http_request_duration_seconds",
];

fn expected_sample_names() -> Vec<String> {
    let mut names: Vec<String> = COUNTERS_AND_GAUGES.iter().map(|n| n.to_string()).collect();
    for h in HISTOGRAMS {
        for suffix in ["_bucket", "_sum", "_count"] {
            names.push(format!("{h}{suffix}"));
        }
    }
    names
}

fn assert_empty_stats(st: &Value) {
    assert_has_keys(st, STATS_FIELDS);
    for f in [
        "backlog_count",
        "backlog_age_ms",
        "delayed_count",
        "in_flight_count",
        "dead_letter_count",
    ] {
        assert_eq!(stat_u64(st, f), 0, "{f} of an unused queue: {st}");
    }
    for f in ["add_rate", "dispatch_rate"] {
        assert_eq!(st[f].as_f64(), Some(0.0), "{f} of an unused queue: {st}");
    }
    assert_eq!(st["pollers"], json!([]), "{st}");
    assert_eq!(st["registration_mismatch"], json!(false), "{st}");
    let rl = &st["rate_limit"];
    assert_has_keys(rl, &["max_tasks_per_second", "burst", "source"]);
    assert!(rl["max_tasks_per_second"].is_null(), "{rl}");
    assert_eq!(rl["source"], json!("none"), "{rl}");
}

#[test]
fn healthz_and_readyz_answer_200() {
    let s = TestServer::start();
    let (status, _) = get(&s.url("/healthz"));
    assert_eq!(status, 200);
    let (status, _) = get(&s.url("/readyz"));
    assert_eq!(status, 200);
}

#[test]
fn metrics_expose_every_contract_metric_with_bounded_labels() {
    let s = TestServer::start();
    let queue = "opsmetricsrawname";
    let qp = q(NS, queue, A);

    // Completed.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "c1"}));
    let t = poll_one(&s, &qp, "w", 0).expect("c1");
    assert_eq!(complete(&s, &lease_of(&t), json!(1)).0, 200);
    // Dead letter.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "f1"}));
    let t = poll_one(&s, &qp, "w", 0).expect("f1");
    let (status, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "no", "type": "E"}, "non_retryable": true}),
    );
    assert_eq!(status, 200);
    // Retry.
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "r1", "retry": {"initial_interval_ms": 60000}}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("r1");
    let (status, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "again", "type": "E"}}),
    );
    assert_eq!(status, 200);
    // Expiry by start-to-close.
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "x1", "start_to_close_timeout_ms": 300,
               "retry": {"initial_interval_ms": 60000}}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("x1");
    assert_eq!(t["task_id"], json!("x1"));
    // A duplicate is not counted as added.
    let (status, _) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "t", "task_id": "c1"}),
    );
    assert_eq!(status, 200);
    // A poll that times out.
    assert!(poll_one(&s, &q(NS, "opsmetricsidle", A), "w", 200).is_none());
    // Rate limiting holds dispatches back.
    let rl_q = q(NS, "opsmetricsrl", A);
    let (status, body) = put(
        &s.url(&format!("{rl_q}/config")),
        &json!({"max_tasks_per_second": 1.0, "burst": 1}),
    );
    assert_eq!(status, 200, "{body}");
    for _ in 0..3 {
        add_task(&s, &rl_q, json!({"task_type": "t"}));
    }
    let first = poll_tasks(
        &s,
        &rl_q,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 3}),
    );
    assert!(
        first.len() <= 1,
        "burst 1 allows one task at once, got {}",
        first.len()
    );
    let _ = poll_tasks(
        &s,
        &rl_q,
        json!({"identity": "w", "wait_ms": 500, "max_tasks": 3}),
    );

    let expected = expected_sample_names();
    let mut text = String::new();
    let all_present = wait_until(EVENTUALLY, || {
        text = metrics_text(&s);
        let names = metric_names(&text);
        expected.iter().all(|n| names.contains(n))
    });
    let names = metric_names(&text);
    let missing: Vec<&String> = expected.iter().filter(|n| !names.contains(*n)).collect();
    assert!(all_present, "metrics missing {missing:?} in:\n{text}");

    let (status, ctype, _) = get_text(&s.url("/metrics"));
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "content type {ctype:?}");

    // Per-queue labels.
    assert_eq!(
        metric_sum(&text, "tasq_tasks_added_total", &queue_labels(NS, queue, A)),
        4.0,
        "four tasks added (the duplicate not counted):\n{text}"
    );
    assert!(
        metric_sum(
            &text,
            "tasq_tasks_completed_total",
            &queue_labels(NS, queue, A)
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &text,
            "tasq_tasks_failed_total",
            &labels_with(NS, queue, A, &[("outcome", "dead_letter")])
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &text,
            "tasq_tasks_failed_total",
            &labels_with(NS, queue, A, &[("outcome", "retry")])
        ) >= 1.0
    );
    assert!(
        metric_sum(
            &text,
            "tasq_tasks_expired_total",
            &labels_with(NS, queue, A, &[("reason", "start_to_close")])
        ) >= 1.0
    );
    assert!(metric_sum(&text, "tasq_polls_total", &[("result", "timeout")]) >= 1.0);
    assert!(metric_sum(&text, "tasq_polls_total", &[("result", "task")]) >= 1.0);

    // HTTP metrics: route patterns, never raw paths or queue labels.
    let samples = parse_metrics(&text);
    let http: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "tasq_http_requests_total")
        .collect();
    assert!(!http.is_empty());
    for sample in &http {
        for label in ["route", "method", "status"] {
            assert!(
                sample.labels.contains_key(label),
                "{sample:?} lacks {label}"
            );
        }
        for label in ["namespace", "task_queue", "task_queue_type"] {
            assert!(!sample.labels.contains_key(label), "{sample:?} has {label}");
        }
    }
    assert!(http
        .iter()
        .any(|s| s.labels.get("method").map(String::as_str) == Some("POST")));
    for sample in &samples {
        if let Some(route) = sample.labels.get("route") {
            assert!(
                !route.contains("opsmetrics") && !route.contains("c1") && !route.contains("x1"),
                "route label holds a raw path: {sample:?}"
            );
        }
    }
    let build = samples
        .iter()
        .find(|s| s.name == "tasq_build_info")
        .expect("tasq_build_info");
    assert_eq!(build.value, 1.0);
    assert!(!build
        .labels
        .get("version")
        .map(String::is_empty)
        .unwrap_or(true));
}

#[test]
fn describe_of_a_never_used_queue_is_empty_not_404() {
    let s = TestServer::start();
    let d = describe(&s, NS, "ops-never-used");
    assert_eq!(d["namespace"], json!(NS));
    assert_eq!(d["name"], json!("ops-never-used"));
    assert_empty_stats(&d["types"][A]);
    assert_empty_stats(&d["types"][W]);
    // Nor in a never-used namespace.
    let d = describe(&s, "ops-never-used-ns", "q");
    assert_eq!(d["namespace"], json!("ops-never-used-ns"));
    assert_empty_stats(&d["types"][A]);
    assert_empty_stats(&d["types"][W]);
}

#[test]
fn describe_counts_backlog_delayed_in_flight_and_dead_letters() {
    let s = TestServer::start();
    let queue = "ops-describe-counts";
    let qp = q(NS, queue, A);

    add_task(&s, &qp, json!({"task_type": "t", "task_id": "dead"}));
    let t = poll_one(&s, &qp, "w", 0).expect("dead");
    let (status, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "x", "type": "E"}, "non_retryable": true}),
    );
    assert_eq!(status, 200);
    for id in ["b", "c", "d"] {
        add_task(&s, &qp, json!({"task_type": "t", "task_id": id}));
    }
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "later", "delay_ms": 60000}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("a ready task");
    assert_ne!(t["task_id"], json!("later"));

    let st = stats(&s, NS, queue, A);
    assert_has_keys(&st, STATS_FIELDS);
    assert_eq!(stat_u64(&st, "backlog_count"), 2, "{st}");
    assert_eq!(stat_u64(&st, "delayed_count"), 1, "{st}");
    assert_eq!(stat_u64(&st, "in_flight_count"), 1, "{st}");
    assert_eq!(stat_u64(&st, "dead_letter_count"), 1, "{st}");
    assert!(st["add_rate"].as_f64().expect("add_rate") > 0.0, "{st}");
    assert!(
        st["dispatch_rate"].as_f64().expect("dispatch_rate") > 0.0,
        "{st}"
    );
    assert_empty_stats(&stats(&s, NS, queue, W));

    // The oldest ready task ages.
    let ok = wait_until(EVENTUALLY, || {
        stat_u64(&stats(&s, NS, queue, A), "backlog_age_ms") >= 200
    });
    assert!(ok, "backlog_age_ms never grew: {}", stats(&s, NS, queue, A));
}

#[test]
fn describe_lists_pollers_and_flags_registration_mismatch() {
    let s = TestServer::start();
    let queue = "ops-describe-pollers";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/poll"));
    let p1 = {
        let url = url.clone();
        thread::spawn(move || {
            post(
                &url,
                &json!({"identity": "worker-1@host", "wait_ms": 20000,
                        "task_types": ["x", "y"], "build_id": "v42"}),
            )
        })
    };
    let p2 = thread::spawn(move || {
        post(
            &url,
            &json!({"identity": "worker-2@host", "wait_ms": 20000, "task_types": ["z"]}),
        )
    });
    wait_for_poller(&s, NS, queue, A, "worker-1@host");
    wait_for_poller(&s, NS, queue, A, "worker-2@host");

    let st = stats(&s, NS, queue, A);
    let pollers = st["pollers"].as_array().expect("pollers");
    let p = pollers
        .iter()
        .find(|p| p["identity"] == json!("worker-1@host"))
        .expect("worker-1 listed");
    assert_has_keys(
        p,
        &[
            "identity",
            "last_access_time",
            "task_types",
            "build_id",
            "max_tasks_per_second",
        ],
    );
    assert_instant(p, "last_access_time");
    let types: BTreeSet<&str> = p["task_types"]
        .as_array()
        .expect("task_types array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(types, BTreeSet::from(["x", "y"]));
    assert_eq!(p["build_id"], json!("v42"));
    assert_eq!(
        st["registration_mismatch"],
        json!(true),
        "live pollers declare different task_types: {st}"
    );
    // The other type of the queue has no pollers.
    assert_eq!(stats(&s, NS, queue, W)["pollers"], json!([]));

    add_task(&s, &qp, json!({"task_type": "x"}));
    add_task(&s, &qp, json!({"task_type": "z"}));
    let (status, body) = p1.join().expect("p1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks"][0]["task_type"], json!("x"), "{body}");
    let (status, body) = p2.join().expect("p2");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks"][0]["task_type"], json!("z"), "{body}");
}

fn list_page(s: &TestServer, ns: &str, query: &str) -> Value {
    let (status, body) = get(&s.url(&format!("/api/v1/namespaces/{ns}/task-queues{query}")));
    assert_eq!(status, 200, "{body}");
    assert!(body["task_queues"].is_array(), "{body}");
    assert!(body.get("next_page_token").is_some(), "{body}");
    body
}

/// Percent-encodes a query value (everything but unreserved characters).
fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn page_token(body: &Value) -> Option<String> {
    body["next_page_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

#[test]
fn list_shows_queues_with_tasks_in_the_namespace() {
    let s = TestServer::start();
    let ns = "ops-list";
    add_task(&s, &q(ns, "l-a", A), json!({"task_type": "t"}));
    add_task(&s, &q(ns, "l-a", A), json!({"task_type": "t"}));
    add_task(&s, &q(ns, "l-b", W), json!({"task_type": "t"}));
    add_task(&s, &q(ns, "l-c", A), json!({"task_type": "t"}));
    assert!(poll_one(&s, &q(ns, "l-c", A), "w", 0).is_some());
    add_task(
        &s,
        &q("ops-list-other", "l-z", A),
        json!({"task_type": "t"}),
    );

    let body = list_page(&s, ns, "?limit=100");
    let entries = body["task_queues"].as_array().expect("task_queues");
    for e in entries {
        assert_has_keys(
            e,
            &[
                "name",
                "type",
                "backlog_count",
                "in_flight_count",
                "pollers",
            ],
        );
    }
    let find = |name: &str, ty: &str| -> Value {
        entries
            .iter()
            .find(|e| e["name"] == json!(name) && e["type"] == json!(ty))
            .unwrap_or_else(|| panic!("list lacks {name}/{ty}: {body}"))
            .clone()
    };
    assert_eq!(stat_u64(&find("l-a", A), "backlog_count"), 2);
    assert_eq!(stat_u64(&find("l-b", W), "backlog_count"), 1);
    let c = find("l-c", A);
    assert_eq!(stat_u64(&c, "backlog_count"), 0);
    assert_eq!(stat_u64(&c, "in_flight_count"), 1);
    assert!(
        !entries.iter().any(|e| e["name"] == json!("l-z")),
        "another namespace's queue listed: {body}"
    );

    // Paging one at a time visits the same queues.
    let all: BTreeSet<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut paged = BTreeSet::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &token {
            Some(t) => format!("?limit=1&page_token={}", percent_encode(t)),
            None => "?limit=1".to_string(),
        };
        let body = list_page(&s, ns, &query);
        let page = body["task_queues"].as_array().expect("task_queues");
        assert!(page.len() <= 1, "limit=1 gave {body}");
        for e in page {
            paged.insert((
                e["name"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
            ));
        }
        pages += 1;
        token = page_token(&body);
        if token.is_none() {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert!(
        pages >= 3,
        "three queues at limit=1 need at least three pages"
    );
    assert_eq!(paged, all);
}

#[test]
fn activity_and_workflow_queues_of_one_name_are_independent() {
    let s = TestServer::start();
    let queue = "ops-same-name";
    let aq = q(NS, queue, A);
    let wq = q(NS, queue, W);
    add_task(
        &s,
        &aq,
        json!({"task_type": "act", "task_id": "shared-id", "payload": "a"}),
    );
    add_task(&s, &aq, json!({"task_type": "act"}));
    // The same task id in the other type is a different task, not a duplicate.
    add_task(
        &s,
        &wq,
        json!({"task_type": "wf", "task_id": "shared-id", "payload": "w"}),
    );
    add_task(&s, &wq, json!({"task_type": "wf", "task_id": "wf-only"}));

    let d = describe(&s, NS, queue);
    assert_eq!(stat_u64(&d["types"][A], "backlog_count"), 2, "{d}");
    assert_eq!(stat_u64(&d["types"][W], "backlog_count"), 2, "{d}");

    let (status, body) = get(&s.url(&format!("{aq}/tasks/wf-only")));
    assert_error(status, &body, 404, "not_found");

    let wf_tasks = poll_tasks(
        &s,
        &wq,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 10}),
    );
    assert_eq!(wf_tasks.len(), 2);
    for t in &wf_tasks {
        assert_eq!(t["task_type"], json!("wf"));
    }
    let shared = wf_tasks
        .iter()
        .find(|t| t["task_id"] == json!("shared-id"))
        .expect("shared-id in workflow");
    assert_eq!(shared["payload"], json!("w"));
    assert_eq!(complete(&s, &lease_of(shared), json!("wdone")).0, 200);

    assert_eq!(
        backlog(&s, NS, queue, A),
        2,
        "polling workflow took nothing from activity"
    );
    assert_eq!(status_of(&s, &aq, "shared-id")["state"], json!("pending"));
    assert_eq!(status_of(&s, &wq, "shared-id")["state"], json!("completed"));
}

#[test]
fn namespaces_are_isolated() {
    let s = TestServer::start();
    let queue = "ops-isolated";
    let q1 = q("ops-ns-one", queue, A);
    let q2 = q("ops-ns-two", queue, A);
    add_task(
        &s,
        &q1,
        json!({"task_type": "t", "task_id": "same", "payload": 1}),
    );
    add_task(&s, &q1, json!({"task_type": "t", "task_id": "one-only"}));
    // Not a duplicate across namespaces.
    add_task(
        &s,
        &q2,
        json!({"task_type": "t", "task_id": "same", "payload": 2}),
    );

    assert_eq!(backlog(&s, "ops-ns-one", queue, A), 2);
    assert_eq!(backlog(&s, "ops-ns-two", queue, A), 1);
    let (status, body) = get(&s.url(&format!("{q2}/tasks/one-only")));
    assert_error(status, &body, 404, "not_found");

    let tasks = poll_tasks(
        &s,
        &q2,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 10}),
    );
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["task_id"], json!("same"));
    assert_eq!(tasks[0]["payload"], json!(2));
    assert_eq!(backlog(&s, "ops-ns-one", queue, A), 2);
    assert_eq!(status_of(&s, &q1, "same")["state"], json!("pending"));

    let body = list_page(&s, "ops-ns-two", "?limit=100");
    let entries = body["task_queues"].as_array().expect("task_queues");
    assert!(!entries.is_empty(), "{body}");
    assert!(
        entries
            .iter()
            .all(|e| e["name"] == json!(queue) && e["backlog_count"] == json!(0)),
        "{body}"
    );
    let settings = json!({"max_tasks_per_second": 0.0, "burst": 1});
    let (status, body) = put(&s.url(&format!("{q1}/config")), &settings);
    assert_eq!(status, 200, "{body}");
    // Pausing namespace one does not pause namespace two.
    add_task(&s, &q2, json!({"task_type": "t", "task_id": "after-pause"}));
    let t = poll_one(&s, &q2, "w", 0).expect("namespace two is not paused");
    assert_eq!(t["task_id"], json!("after-pause"));
    assert!(
        poll_one(&s, &q1, "w", 500).is_none(),
        "max_tasks_per_second 0 pauses dispatch in namespace one"
    );
}

/// A path the API does not have, and a method a path does not serve, answer 404 `not_found`
/// in the contract's error shape (never an empty body).
#[test]
fn unknown_routes_and_methods_answer_not_found() {
    let s = TestServer::start();
    let qpath = q("default", "ops-routes", A);
    for (method, path) in [
        ("GET", "/api/v1/nothing".to_string()),
        ("PATCH", format!("{qpath}/tasks")),
        ("GET", format!("{qpath}/poll")),
        ("PUT", format!("{qpath}/tasks/x")),
        ("DELETE", "/metrics".to_string()),
    ] {
        let (status, body) = raw_request(s.base(), method, &path, b"{}".to_vec());
        assert_error(status, &body, 404, "not_found");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(method), "{method} {path}: {body}");
    }
    // Nothing was added by the stray requests.
    assert_eq!(backlog(&s, "default", "ops-routes", A), 0);
}

/// A queue whose mailbox never empties (producers that send again as soon as answered) must
/// not hold the thread it shares with other queues: actix handles a whole mailbox before it
/// yields, and before queue actors paced themselves a bulk load into one queue kept a
/// describe of another waiting for over a minute. One queue thread, so both share it.
#[test]
fn a_busy_queue_does_not_starve_others_on_its_thread() {
    busy_queue_leaves_room(&[("TASQ_QUEUE_THREADS", "1")]);
}

/// The same with the default placement, queue actors on the HTTP worker threads, and one
/// worker: the busy queue's actor shares its thread with every request, the describes too.
/// (Here the producers' requests are parsed on that thread as well, so they cannot refill the
/// mailbox while the actor runs; what this guards is that a thread running a loaded queue
/// still answers the other requests it serves.)
#[test]
fn a_busy_queue_does_not_starve_requests_on_its_http_thread() {
    busy_queue_leaves_room(&[("TASQ_HTTP_WORKERS", "1")]);
}

/// Six producers keep one queue's mailbox full while five describes of idle queues must answer.
fn busy_queue_leaves_room(env: &[(&str, &str)]) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    let s = TestServer::start_with(&[], env);
    let busy = q(NS, "busy-loader", A);
    let url = s.url(&format!("{busy}/tasks/batch"));
    let stop = Arc::new(AtomicBool::new(false));
    let added = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = (0..6)
        .map(|_| {
            let (url, stop, added) = (url.clone(), stop.clone(), added.clone());
            thread::spawn(move || {
                let batch: Vec<Value> = (0..500)
                    .map(|i| json!({"task_type": "t", "payload": {"i": i}}))
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = post(&url, &json!({ "tasks": batch }));
                    assert_eq!(status, 201, "{body}");
                    added.fetch_add(500, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Wait until the loader is in full swing, then ask about other queues on the same thread.
    let deadline = Instant::now() + Duration::from_secs(60);
    while added.load(Ordering::Relaxed) < 5_000 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let started = Instant::now();
        let st = describe(&s, NS, &format!("quiet-{i}"));
        assert_empty_stats(&st["types"][A]);
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().expect("producer");
    }
    // Generous: paced, a describe waits a few milliseconds; starved, it waited over a minute.
    assert!(
        slowest < Duration::from_secs(10),
        "a describe of an idle queue took {slowest:?} while another queue on its thread was busy"
    );
}
