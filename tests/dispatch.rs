//! Dispatch policy (issue 3), black-box over real HTTP: server-side throttling (measured rate,
//! pause and resume, kept across a restart, worker-sent limits and the API override), routing
//! to one process with fallback, fairness shares across keys and weights, type-aware dispatch
//! during a rolling upgrade with the registration-mismatch signal, schedule-to-start timeouts,
//! dead letters (listing, paging, redrive) and the paged queue list with namespaces.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

const A: &str = "activity";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Adds many tasks in one batch and asserts every one is new.
#[track_caller]
fn add_batch(s: &TestServer, qpath: &str, tasks: Vec<Value>) {
    let n = tasks.len();
    let (status, body) = post(
        &s.url(&format!("{qpath}/tasks/batch")),
        &json!({ "tasks": tasks }),
    );
    assert_eq!(status, 201, "batch add answered {status} {body}");
    let results = body["results"].as_array().expect("batch results");
    assert_eq!(results.len(), n, "{body}");
    assert!(
        results.iter().all(|r| r["duplicate"] == json!(false)),
        "{body}"
    );
}

/// `PUT {q}/config`; returns status and body.
#[track_caller]
fn set_config(s: &TestServer, qpath: &str, body: Value) -> (u16, Value) {
    put(&s.url(&format!("{qpath}/config")), &body)
}

/// `PUT {q}/config` that must succeed.
#[track_caller]
fn set_config_ok(s: &TestServer, qpath: &str, body: Value) -> Value {
    let (status, resp) = set_config(s, qpath, body.clone());
    assert_eq!(status, 200, "PUT config {body} answered {status} {resp}");
    resp
}

/// Asserts describe's `rate_limit` of one type: rate (None = null), burst (when given) and
/// source.
#[track_caller]
fn assert_rate_limit(
    s: &TestServer,
    queue: &str,
    rate: Option<f64>,
    burst: Option<u64>,
    source: &str,
) {
    let st = stats(s, NS, queue, A);
    let rl = &st["rate_limit"];
    assert_has_keys(rl, &["max_tasks_per_second", "burst", "source"]);
    assert_eq!(rl["source"], json!(source), "rate_limit of {queue}: {rl}");
    match rate {
        Some(r) => assert_eq!(
            rl["max_tasks_per_second"].as_f64(),
            Some(r),
            "rate_limit of {queue}: {rl}"
        ),
        None => assert!(
            rl["max_tasks_per_second"].is_null(),
            "rate_limit of {queue}: {rl}"
        ),
    }
    if let Some(b) = burst {
        assert_eq!(rl["burst"].as_u64(), Some(b), "rate_limit of {queue}: {rl}");
    }
}

/// Joins a spawned poll and returns its tasks (asserting 200) and duration.
#[track_caller]
fn join_poll(h: thread::JoinHandle<(u16, Value, Duration)>) -> (Vec<Value>, Duration) {
    let (status, body, took) = h.join().expect("poll thread");
    assert_eq!(status, 200, "poll answered {status} {body}");
    let tasks = body["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("poll answer lacks tasks: {body}"))
        .clone();
    (tasks, took)
}

/// Task ids of polled tasks.
fn ids(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect()
}

/// Value of the samples named `name` with `labels`; `None` when no such sample exists.
fn metric_value(s: &TestServer, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let text = metrics_text(s);
    let values: Vec<f64> = parse_metrics(&text)
        .into_iter()
        .filter(|m| m.name == name)
        .filter(|m| {
            labels
                .iter()
                .all(|(k, v)| m.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|m| m.value)
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

fn rate_limited(s: &TestServer, queue: &str) -> f64 {
    metric_sum(
        &metrics_text(s),
        "tasq_rate_limited_total",
        &queue_labels(NS, queue, A),
    )
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

/// The next page token of a paged answer: `None` when null (the last page).
#[track_caller]
fn next_token(body: &Value) -> Option<String> {
    let t = &body["next_page_token"];
    assert!(
        t.is_null() || t.as_str().is_some_and(|t| !t.is_empty()),
        "next_page_token must be null or a non-empty string: {body}"
    );
    t.as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------

#[test]
fn dispatch_rate_stays_within_30_percent_of_the_limit() {
    let s = TestServer::start();
    let queue = "dispatch-rate";
    let qp = q(NS, queue, A);
    let resp = set_config_ok(&s, &qp, json!({"max_tasks_per_second": 20.0, "burst": 1}));
    assert_eq!(resp["max_tasks_per_second"].as_f64(), Some(20.0), "{resp}");
    assert_eq!(resp["burst"].as_u64(), Some(1), "{resp}");
    assert_rate_limit(&s, queue, Some(20.0), Some(1), "api");

    // Adds are never throttled: 200 tasks go in at once.
    for chunk in 0..2 {
        add_batch(
            &s,
            &qp,
            (0..100)
                .map(|i| json!({"task_type": "t", "task_id": format!("r-{chunk}-{i}")}))
                .collect(),
        );
    }
    assert_eq!(backlog(&s, NS, queue, A), 200);
    let limited_before = rate_limited(&s, queue);

    // Four pollers drain as fast as they are allowed for 4 s.
    let started = Instant::now();
    let stop = started + Duration::from_secs(4);
    let pollers: Vec<_> = (0..4)
        .map(|n| {
            let url = s.url(&format!("{qp}/poll"));
            thread::spawn(move || {
                let mut got = Vec::new();
                while Instant::now() < stop {
                    let (status, body) = post(
                        &url,
                        &json!({"identity": format!("rate-{n}"), "max_tasks": 10, "wait_ms": 500}),
                    );
                    assert_eq!(status, 200, "{body}");
                    got.extend(ids(body["tasks"].as_array().expect("tasks")));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for p in pollers {
        all.extend(p.join().expect("poller thread"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a task was dispatched twice");
    let rate = all.len() as f64 / elapsed;
    assert!(
        (14.0..=26.0).contains(&rate),
        "limit 20/s: dispatched {} tasks in {elapsed:.2} s = {rate:.1}/s (must be within ±30%)",
        all.len()
    );
    assert!(
        rate_limited(&s, queue) > limited_before,
        "tasq_rate_limited_total did not count the throttled dispatches"
    );
    // The rest is still there, waiting.
    assert_eq!(backlog(&s, NS, queue, A), 200 - all.len() as u64);
}

#[test]
fn pause_holds_dispatch_and_resume_serves_the_parked_poller() {
    let s = TestServer::start();
    let queue = "dispatch-pause";
    let qp = q(NS, queue, A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "p1"}));

    let resp = set_config_ok(&s, &qp, json!({"max_tasks_per_second": 0.0}));
    assert_eq!(resp["max_tasks_per_second"].as_f64(), Some(0.0), "{resp}");
    assert_eq!(
        resp["burst"].as_u64(),
        Some(1),
        "burst defaults to 1 for 0: {resp}"
    );
    assert_rate_limit(&s, queue, Some(0.0), Some(1), "api");
    assert!(
        poll_one(&s, &qp, "w", 0).is_none(),
        "a paused queue gave a task"
    );

    // A parked poller stays parked while paused, also when a task is added.
    let parked = spawn_poll(
        &s,
        &qp,
        json!({"identity": "parked-1", "wait_ms": 30000, "max_tasks": 1}),
    );
    wait_for_poller(&s, NS, queue, A, "parked-1");
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "p2"}));
    thread::sleep(Duration::from_millis(1000));
    assert!(
        !parked.is_finished(),
        "the parked poll was answered while paused: {:?}",
        parked.join()
    );
    assert_eq!(backlog(&s, NS, queue, A), 2);

    // Resume by removing the limit: the parked poller gets the oldest task.
    let resp = set_config_ok(&s, &qp, json!({"max_tasks_per_second": null}));
    assert!(resp["max_tasks_per_second"].is_null(), "{resp}");
    let (tasks, _) = join_poll(parked);
    assert_eq!(ids(&tasks), ["p1"], "{tasks:?}");
    assert_rate_limit(&s, queue, None, None, "none");

    // Pause again, park, and resume with a rate this time.
    set_config_ok(&s, &qp, json!({"max_tasks_per_second": 0.0, "burst": 1}));
    let parked = spawn_poll(
        &s,
        &qp,
        json!({"identity": "parked-2", "wait_ms": 30000, "max_tasks": 1}),
    );
    wait_for_poller(&s, NS, queue, A, "parked-2");
    thread::sleep(Duration::from_millis(500));
    assert!(!parked.is_finished(), "answered while paused");
    let resp = set_config_ok(&s, &qp, json!({"max_tasks_per_second": 5.0}));
    assert_eq!(resp["max_tasks_per_second"].as_f64(), Some(5.0), "{resp}");
    assert_eq!(
        resp["burst"].as_u64(),
        Some(5),
        "burst defaults to ceil(rate): {resp}"
    );
    let (tasks, took) = join_poll(parked);
    assert_eq!(ids(&tasks), ["p2"], "{tasks:?}");
    assert!(took < Duration::from_secs(25), "answered only at {took:?}");
    assert_rate_limit(&s, queue, Some(5.0), Some(5), "api");
}

#[test]
fn rate_limit_is_kept_across_a_restart() {
    let mut s = TestServer::start();
    let queue = "dispatch-restart";
    let qp = q(NS, queue, A);
    set_config_ok(&s, &qp, json!({"max_tasks_per_second": 0.2, "burst": 1}));
    s.restart();

    assert_rate_limit(&s, queue, Some(0.2), Some(1), "api");
    add_batch(
        &s,
        &qp,
        (0..5)
            .map(|i| json!({"task_type": "t", "task_id": format!("k{i}")}))
            .collect(),
    );
    let limited_before = rate_limited(&s, queue);
    // The bucket starts full with one token; the next is 5 s away.
    let first = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 5, "wait_ms": 0}),
    );
    assert_eq!(first.len(), 1, "burst 1 gives one task: {first:?}");
    let second = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 5, "wait_ms": 0}),
    );
    assert!(
        second.is_empty(),
        "0.2 tasks/s after a restart still throttles: {second:?}"
    );
    assert!(rate_limited(&s, queue) > limited_before);
    // It is a rate, not a pause: the next token comes.
    let third = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 5, "wait_ms": 20000}),
    );
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(backlog(&s, NS, queue, A), 3);
}

#[test]
fn worker_limit_shows_source_worker_and_the_api_setting_overrides_it() {
    let s = TestServer::start();
    let queue = "dispatch-worker-limit";
    let qp = q(NS, queue, A);
    add_batch(
        &s,
        &qp,
        (0..10)
            .map(|i| json!({"task_type": "t", "task_id": format!("w{i}")}))
            .collect(),
    );
    assert_rate_limit(&s, queue, None, None, "none");

    let poll = |identity: &str, rate: f64| {
        poll_tasks(
            &s,
            &qp,
            json!({"identity": identity, "max_tasks": 5, "wait_ms": 0,
                   "max_tasks_per_second": rate}),
        )
    };
    // A worker's limit applies at once: one token (burst 1), then throttled.
    assert_eq!(poll("w1", 0.2).len(), 1);
    assert_rate_limit(&s, queue, Some(0.2), Some(1), "worker");
    let st = stats(&s, NS, queue, A);
    let w1 = st["pollers"]
        .as_array()
        .expect("pollers")
        .iter()
        .find(|p| p["identity"] == json!("w1"))
        .unwrap_or_else(|| panic!("w1 not listed: {st}"))
        .clone();
    assert_eq!(w1["max_tasks_per_second"].as_f64(), Some(0.2), "{w1}");
    assert!(
        poll("w1", 0.2).is_empty(),
        "the worker's limit of 0.2/s must throttle its next poll"
    );

    // The latest poll wins.
    assert_eq!(poll("w2", 50.0).len(), 5);
    assert_rate_limit(&s, queue, Some(50.0), Some(50), "worker");

    // The API setting overrides the worker's.
    set_config_ok(&s, &qp, json!({"max_tasks_per_second": 0.0, "burst": 1}));
    assert_rate_limit(&s, queue, Some(0.0), Some(1), "api");
    assert!(
        poll("w2", 50.0).is_empty(),
        "a worker's limit must not lift the API's pause"
    );
    assert_rate_limit(&s, queue, Some(0.0), Some(1), "api");

    // Without the API limit, the worker's applies again.
    set_config_ok(&s, &qp, json!({"max_tasks_per_second": null}));
    assert_eq!(poll("w2", 50.0).len(), 4);
    assert_rate_limit(&s, queue, Some(50.0), Some(50), "worker");
}

/// Found by schemathesis: a valid but tiny rate made the wait for the next token infinite,
/// and arming the timer panicked the queue actor, whose restart then dispatched past the
/// limit. The limit holds and the server logs no panic.
#[test]
fn a_tiny_rate_holds_dispatch_without_a_panic() {
    let s = TestServer::start();
    let qp = q(NS, "dispatch-tiny-rate", A);
    set_config_ok(&s, &qp, json!({"max_tasks_per_second": 5e-324, "burst": 1}));
    for i in 0..3 {
        add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": format!("t{i}")}),
        );
    }
    assert!(
        poll_one(&s, &qp, "w", 0).is_some(),
        "the burst of 1 is dispatched"
    );
    assert!(
        poll_one(&s, &qp, "w", 300).is_none(),
        "no second token at 5e-324 tasks/s"
    );
    assert!(poll_one(&s, &qp, "w", 0).is_none());
    let log = s.stderr();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

#[test]
fn bad_config_is_rejected_and_changes_nothing() {
    let s = TestServer::start();
    let queue = "dispatch-bad-config";
    let qp = q(NS, queue, A);
    for body in [
        json!({"max_tasks_per_second": 5.0, "burst": 2, "rate": 1}),
        json!({"max_tasks_per_second": -1.0}),
        json!({"max_tasks_per_second": 5.0, "burst": 0}),
        json!({"max_tasks_per_second": "fast"}),
    ] {
        let (status, resp) = set_config(&s, &qp, body.clone());
        assert_error(status, &resp, 400, "invalid_argument");
        assert_rate_limit(&s, queue, None, None, "none");
    }
    let (status, resp) = set_config(
        &s,
        &qp,
        json!({"max_tasks_per_second": 5.0, "burst": 2, "brust": 3}),
    );
    let message = assert_error(status, &resp, 400, "invalid_argument");
    assert!(
        message.contains("brust"),
        "the message names the unknown field: {message}"
    );
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

#[test]
fn routed_task_reaches_its_target_and_others_only_after_the_fallback() {
    let s = TestServer::start();
    let queue = "dispatch-route";
    let qp = q(NS, queue, A);

    // Another poller skips the routed task but gets the one behind it at once.
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "routed-1",
               "route_to": {"identity": "target@host", "fallback_after_ms": 60000}}),
    );
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "free-1"}));
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "other@host", "max_tasks": 10, "wait_ms": 0}),
    );
    assert_eq!(ids(&got), ["free-1"], "{got:?}");
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "target@host", "max_tasks": 10, "wait_ms": 0}),
    );
    assert_eq!(ids(&got), ["routed-1"], "{got:?}");
    assert_eq!(complete(&s, &lease_of(&got[0]), json!(null)).0, 200);

    // A parked poller of another identity: the task behind the routed one reaches it at
    // once; the routed one only after fallback_after_ms.
    let parked = spawn_poll(
        &s,
        &qp,
        json!({"identity": "other@host", "max_tasks": 10, "wait_ms": 20000}),
    );
    wait_for_poller(&s, NS, queue, A, "other@host");
    let added = Instant::now();
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "routed-2",
               "route_to": {"identity": "target@host", "fallback_after_ms": 1500}}),
    );
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "free-2"}));
    let (got, _) = join_poll(parked);
    assert_eq!(ids(&got), ["free-2"], "{got:?}");
    let (status, body) = post(
        &s.url(&format!("{qp}/poll")),
        &json!({"identity": "other@host", "max_tasks": 10, "wait_ms": 20000}),
    );
    let waited = added.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(body["tasks"].as_array().expect("tasks")),
        ["routed-2"],
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(1450),
        "another poller got the routed task after {waited:?}, before its 1500 ms fallback"
    );
    assert!(
        waited < Duration::from_millis(1500 + 10_000),
        "fallback came only after {waited:?}"
    );
    assert_eq!(body["tasks"][0]["attempt"], json!(1), "{body}");
}

#[test]
fn null_fallback_never_falls_back_and_absent_means_5000_ms() {
    let s = TestServer::start();
    let queue = "dispatch-route-null";
    let qp = q(NS, queue, A);
    let added = Instant::now();
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "never",
               "route_to": {"identity": "target", "fallback_after_ms": null}}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "default",
               "route_to": {"identity": "target"}}),
    );
    // The default fallback (5000 ms) lets another poller have "default", never "never".
    let (status, body) = post(
        &s.url(&format!("{qp}/poll")),
        &json!({"identity": "other", "max_tasks": 10, "wait_ms": 20000}),
    );
    let waited = added.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        ids(body["tasks"].as_array().expect("tasks")),
        ["default"],
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(4950),
        "default fallback is 5000 ms, yet another poller got it after {waited:?}"
    );
    // Well past the default, "never" still waits for its target.
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "other", "max_tasks": 10, "wait_ms": 2000}),
    );
    assert!(got.is_empty(), "fallback_after_ms null fell back: {got:?}");
    assert_eq!(backlog(&s, NS, queue, A), 1);
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "target", "max_tasks": 10, "wait_ms": 0}),
    );
    assert_eq!(ids(&got), ["never"], "{got:?}");
}

// ---------------------------------------------------------------------------------------
// Fairness
// ---------------------------------------------------------------------------------------

/// Adds `n` tasks of each `(key, weight)` in that order (each key's flood before the next),
/// then polls the first `take` and counts them by fairness key.
fn fair_shares(
    s: &TestServer,
    queue: &str,
    keys: &[(&str, f64)],
    n: usize,
    take: usize,
) -> BTreeMap<String, usize> {
    let qp = q(NS, queue, A);
    for (key, weight) in keys {
        add_batch(
            s,
            &qp,
            (0..n)
                .map(|i| {
                    json!({"task_type": "t", "task_id": format!("{key}-{i}"),
                           "fairness_key": key, "fairness_weight": weight})
                })
                .collect(),
        );
    }
    assert_eq!(backlog(s, NS, queue, A), (n * keys.len()) as u64);
    let mut shares = BTreeMap::new();
    let mut got = 0;
    while got < take {
        let tasks = poll_tasks(
            s,
            &qp,
            json!({"identity": "fair", "max_tasks": (take - got).min(100), "wait_ms": 0}),
        );
        assert!(!tasks.is_empty(), "backlog ran dry after {got} tasks");
        for t in &tasks {
            let key = t["fairness_key"]
                .as_str()
                .expect("fairness_key")
                .to_string();
            *shares.entry(key).or_insert(0) += 1;
        }
        got += tasks.len();
    }
    assert_eq!(got, take);
    shares
}

#[track_caller]
fn assert_share(shares: &BTreeMap<String, usize>, key: &str, expected: usize, tolerance: usize) {
    let got = shares.get(key).copied().unwrap_or(0);
    assert!(
        got.abs_diff(expected) <= tolerance,
        "key {key}: {got} tasks, expected {expected} ± {tolerance}; shares {shares:?}"
    );
}

#[test]
fn fairness_shares_two_keys_equally_despite_a_flood_added_first() {
    let s = TestServer::start();
    let shares = fair_shares(
        &s,
        "dispatch-fair-2",
        &[("tenant-a", 1.0), ("tenant-b", 1.0)],
        300,
        200,
    );
    assert_share(&shares, "tenant-a", 100, 20);
    assert_share(&shares, "tenant-b", 100, 20);
}

#[test]
fn fairness_shares_three_keys_by_weight() {
    let s = TestServer::start();
    let shares = fair_shares(
        &s,
        "dispatch-fair-3",
        &[("heavy", 3.0), ("medium", 2.0), ("light", 1.0)],
        300,
        300,
    );
    assert_share(&shares, "heavy", 150, 30);
    assert_share(&shares, "medium", 100, 30);
    assert_share(&shares, "light", 50, 30);
}

// ---------------------------------------------------------------------------------------
// Rolling upgrades
// ---------------------------------------------------------------------------------------

fn mismatch_gauge(s: &TestServer, queue: &str) -> Option<f64> {
    metric_value(s, "tasq_registration_mismatch", &queue_labels(NS, queue, A))
}

#[test]
fn rollout_gives_new_types_only_to_new_workers_and_flags_the_mismatch() {
    let s = TestServer::start();
    let queue = "dispatch-rollout";
    let qp = q(NS, queue, A);
    let old = |identity: &str, wait_ms: u64, max: usize| {
        json!({"identity": identity, "build_id": "v1", "task_types": ["a"],
               "wait_ms": wait_ms, "max_tasks": max})
    };
    let new = |identity: &str, wait_ms: u64, max: usize| {
        json!({"identity": identity, "build_id": "v2", "task_types": ["a", "b"],
               "wait_ms": wait_ms, "max_tasks": max})
    };

    // An old worker parked first does not get the new type; a new worker does.
    let old_parked = spawn_poll(&s, &qp, old("old-1", 20000, 1));
    wait_for_poller(&s, NS, queue, A, "old-1");
    add_task(&s, &qp, json!({"task_type": "b", "task_id": "b-0"}));
    let got = poll_tasks(&s, &qp, new("new-1", 10000, 1));
    assert_eq!(ids(&got), ["b-0"], "{got:?}");
    assert!(
        !old_parked.is_finished(),
        "the old worker was answered: {:?}",
        old_parked.join()
    );
    add_task(&s, &qp, json!({"task_type": "a", "task_id": "a-0"}));
    let (got, _) = join_poll(old_parked);
    assert_eq!(ids(&got), ["a-0"], "{got:?}");

    // Both builds drain a mixed backlog together.
    let mut tasks = Vec::new();
    for i in 1..=15 {
        tasks.push(json!({"task_type": "a", "task_id": format!("a-{i}")}));
        tasks.push(json!({"task_type": "b", "task_id": format!("b-{i}")}));
    }
    add_batch(&s, &qp, tasks);
    let mut by_build: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    let mut rounds = 0;
    while backlog(&s, NS, queue, A) > 0 {
        rounds += 1;
        assert!(rounds < 20, "the backlog does not drain");
        for (build, body) in [
            ("v2", new("new-1", 0, 4)),
            ("v1", old("old-1", 0, 4)),
            ("v2", new("new-2", 0, 4)),
            ("v1", old("old-2", 0, 4)),
        ] {
            for t in poll_tasks(&s, &qp, body) {
                by_build.entry(build).or_default().push((
                    t["task_type"].as_str().expect("task_type").to_string(),
                    t["task_id"].as_str().expect("task_id").to_string(),
                ));
            }
        }
    }
    let all: BTreeSet<&String> = by_build.values().flatten().map(|(_, id)| id).collect();
    assert_eq!(all.len(), 30, "every task once: {by_build:?}");
    let v1 = by_build.get("v1").cloned().unwrap_or_default();
    let v2 = by_build.get("v2").cloned().unwrap_or_default();
    assert!(
        v1.iter().all(|(ty, _)| ty == "a"),
        "an old worker got a type it does not declare: {v1:?}"
    );
    assert!(
        v1.iter().any(|(ty, _)| ty == "a"),
        "old workers got no a: {by_build:?}"
    );
    assert!(
        v2.iter().any(|(ty, _)| ty == "a"),
        "new workers got no a: {by_build:?}"
    );
    assert_eq!(
        v2.iter().filter(|(ty, _)| ty == "b").count(),
        15,
        "every b went to a new worker: {by_build:?}"
    );

    // Describe shows the builds and the mismatch; so does the metric.
    let st = stats(&s, NS, queue, A);
    let pollers = st["pollers"].as_array().expect("pollers");
    for (identity, build) in [
        ("old-1", "v1"),
        ("old-2", "v1"),
        ("new-1", "v2"),
        ("new-2", "v2"),
    ] {
        let p = pollers
            .iter()
            .find(|p| p["identity"] == json!(identity))
            .unwrap_or_else(|| panic!("{identity} not listed: {st}"));
        assert_eq!(p["build_id"], json!(build), "{p}");
    }
    assert_eq!(st["registration_mismatch"], json!(true), "{st}");
    assert_eq!(mismatch_gauge(&s, queue), Some(1.0));
}

#[test]
fn registration_mismatch_is_false_while_live_pollers_agree() {
    let s = TestServer::start();
    let queue = "dispatch-agree";
    let qp = q(NS, queue, A);
    for (identity, types) in [("p1", json!(["a", "b"])), ("p2", json!(["b", "a"]))] {
        let got = poll_tasks(
            &s,
            &qp,
            json!({"identity": identity, "build_id": "v2", "task_types": types, "wait_ms": 0}),
        );
        assert!(got.is_empty());
    }
    add_task(&s, &qp, json!({"task_type": "a"}));
    add_task(&s, &qp, json!({"task_type": "b"}));
    let st = stats(&s, NS, queue, A);
    assert_eq!(st["pollers"].as_array().map(Vec::len), Some(2), "{st}");
    assert_eq!(st["registration_mismatch"], json!(false), "{st}");
    assert_eq!(mismatch_gauge(&s, queue), Some(0.0));

    // A ready task of a type no live poller declares is a mismatch too.
    add_task(&s, &qp, json!({"task_type": "c"}));
    let st = stats(&s, NS, queue, A);
    assert_eq!(st["registration_mismatch"], json!(true), "{st}");
    assert_eq!(mismatch_gauge(&s, queue), Some(1.0));
}

// ---------------------------------------------------------------------------------------
// Schedule-to-start and dead letters
// ---------------------------------------------------------------------------------------

#[track_caller]
fn dead_letters(s: &TestServer, qpath: &str, query: &str) -> Value {
    let (status, body) = get(&s.url(&format!("{qpath}/dead-letters{query}")));
    assert_eq!(status, 200, "{body}");
    assert!(body["dead_letters"].is_array(), "{body}");
    assert!(body.get("next_page_token").is_some(), "{body}");
    body
}

#[track_caller]
fn redrive(s: &TestServer, qpath: &str, body: Value) -> (u16, Value) {
    post(&s.url(&format!("{qpath}/dead-letters/redrive")), &body)
}

#[test]
fn schedule_to_start_timeouts_become_dead_letters_and_redrive_resets_attempts() {
    let s = TestServer::start();
    let queue = "dispatch-s2s";
    let qp = q(NS, queue, A);
    let labels = labels_with(NS, queue, A, &[("reason", "schedule_to_start")]);
    let expired_before = metric_sum(&metrics_text(&s), "tasq_tasks_expired_total", &labels);

    // Dispatched in time: never times out.
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "quick", "schedule_to_start_timeout_ms": 1000}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("quick");
    assert_eq!(t["task_id"], json!("quick"));
    let quick_polled = Instant::now();
    for i in 1..=3 {
        add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": format!("late-{i}"), "payload": {"n": i},
                   "schedule_to_start_timeout_ms": 300}),
        );
    }
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "patient"}));

    // No poll is needed to notice.
    for i in 1..=3 {
        let (status, body) = get(&s.url(&format!("{qp}/tasks/late-{i}?wait_ms=15000")));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], json!("timed_out"), "{body}");
        assert_eq!(body["attempt"], json!(0), "{body}");
    }
    let since = quick_polled.elapsed();
    if since < Duration::from_millis(1500) {
        thread::sleep(Duration::from_millis(1500) - since);
    }
    assert_eq!(status_of(&s, &qp, "quick")["state"], json!("running"));
    assert_eq!(status_of(&s, &qp, "patient")["state"], json!("pending"));
    let expired = metric_sum(&metrics_text(&s), "tasq_tasks_expired_total", &labels);
    assert_eq!(expired - expired_before, 3.0, "schedule_to_start expiries");
    let st = stats(&s, NS, queue, A);
    assert_eq!(stat_u64(&st, "dead_letter_count"), 3, "{st}");
    assert_eq!(stat_u64(&st, "backlog_count"), 1, "{st}");

    let body = dead_letters(&s, &qp, "");
    let dl = body["dead_letters"].as_array().expect("dead_letters");
    let listed: BTreeSet<&str> = dl.iter().filter_map(|d| d["task_id"].as_str()).collect();
    assert_eq!(
        listed,
        BTreeSet::from(["late-1", "late-2", "late-3"]),
        "{body}"
    );
    for d in dl {
        assert_has_keys(
            d,
            &[
                "task_id",
                "task_type",
                "state",
                "attempt",
                "last_error",
                "payload",
                "updated_at",
            ],
        );
        assert_eq!(d["state"], json!("timed_out"), "{d}");
        assert_eq!(d["task_type"], json!("t"), "{d}");
        assert_eq!(d["attempt"], json!(0), "{d}");
        assert!(
            d["last_error"].is_object(),
            "a timeout has a last error: {d}"
        );
        let n: u64 = d["task_id"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(d["payload"], json!({"n": n}), "{d}");
        assert_instant(d, "updated_at");
    }
    assert!(body["next_page_token"].is_null(), "{body}");

    // An unknown or non-dead id: 404 and nothing changes.
    for ids in [json!(["late-1", "no-such-task"]), json!(["patient"])] {
        let (status, resp) = redrive(&s, &qp, json!({ "task_ids": ids }));
        assert_error(status, &resp, 404, "not_found");
    }
    assert_eq!(status_of(&s, &qp, "late-1")["state"], json!("timed_out"));
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "dead_letter_count"), 3);

    // Redrive one: pending again, next dispatch is attempt 1.
    let (status, resp) = redrive(&s, &qp, json!({"task_ids": ["late-1"]}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["redriven"], json!(1), "{resp}");
    assert_eq!(status_of(&s, &qp, "late-1")["state"], json!("pending"));
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "dead_letter_count"), 2);
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 10, "wait_ms": 0}),
    );
    let late1 = got
        .iter()
        .find(|t| t["task_id"] == json!("late-1"))
        .unwrap_or_else(|| panic!("redriven late-1 not dispatched: {got:?}"));
    assert_eq!(late1["attempt"], json!(1), "{late1}");
    assert_eq!(late1["payload"], json!({"n": 1}), "{late1}");
    assert_eq!(got.len(), 2, "late-1 and patient: {got:?}");

    // Redrive all.
    let (status, resp) = redrive(&s, &qp, json!({"all": true}));
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["redriven"], json!(2), "{resp}");
    assert_eq!(dead_letters(&s, &qp, "")["dead_letters"], json!([]));
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "dead_letter_count"), 0);
    let got = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 10, "wait_ms": 0}),
    );
    let mut got_ids = ids(&got);
    got_ids.sort();
    assert_eq!(got_ids, ["late-2", "late-3"], "{got:?}");
    assert!(got.iter().all(|t| t["attempt"] == json!(1)), "{got:?}");
}

#[test]
fn dead_letters_page_newest_first() {
    let s = TestServer::start();
    let queue = "dispatch-dead-pages";
    let qp = q(NS, queue, A);
    let mut leases = BTreeMap::new();
    for id in ["d1", "d2", "d3"] {
        add_task(
            &s,
            &qp,
            json!({"task_type": "job", "task_id": id, "payload": id}),
        );
        let t = poll_one(&s, &qp, "w", 0).expect("task");
        leases.insert(t["task_id"].as_str().unwrap().to_string(), lease_of(&t));
    }
    // They die in the order d2, d1, d3: newest first is d3, d1, d2.
    for id in ["d2", "d1", "d3"] {
        let (status, body) = fail(
            &s,
            &leases[id],
            json!({"error": {"message": format!("boom {id}"), "type": "Boom"},
                   "non_retryable": true}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], json!("failed"), "{body}");
        thread::sleep(Duration::from_millis(30));
    }

    let page1 = dead_letters(&s, &qp, "?limit=2");
    let dl1 = page1["dead_letters"].as_array().expect("dead_letters");
    let token = next_token(&page1).unwrap_or_else(|| panic!("first page has no token: {page1}"));
    let page2 = dead_letters(
        &s,
        &qp,
        &format!("?limit=2&page_token={}", percent_encode(&token)),
    );
    let dl2 = page2["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(next_token(&page2), None, "the last page: {page2}");
    let order: Vec<&str> = dl1
        .iter()
        .chain(dl2.iter())
        .filter_map(|d| d["task_id"].as_str())
        .collect();
    assert_eq!(dl1.len(), 2, "{page1}");
    assert_eq!(order, ["d3", "d1", "d2"], "pages {page1} {page2}");
    for d in dl1.iter().chain(dl2.iter()) {
        let id = d["task_id"].as_str().unwrap();
        assert_eq!(d["state"], json!("failed"), "{d}");
        assert_eq!(d["task_type"], json!("job"), "{d}");
        assert_eq!(d["attempt"], json!(1), "{d}");
        assert_eq!(d["payload"], json!(id), "{d}");
        assert_eq!(
            d["last_error"]["message"],
            json!(format!("boom {id}")),
            "{d}"
        );
        assert_instant(d, "updated_at");
    }
}

#[test]
fn bad_redrive_bodies_are_rejected() {
    let s = TestServer::start();
    let qp = q(NS, "dispatch-bad-redrive", A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "x"}));
    let t = poll_one(&s, &qp, "w", 0).expect("x");
    let (status, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "no"}, "non_retryable": true}),
    );
    assert_eq!(status, 200);
    for body in [
        json!({}),
        json!({"task_ids": ["x"], "all": true}),
        json!({"ids": ["x"]}),
        json!({"task_ids": "x"}),
    ] {
        let (status, resp) = redrive(&s, &qp, body.clone());
        assert_error(status, &resp, 400, "invalid_argument");
        assert_eq!(
            status_of(&s, &qp, "x")["state"],
            json!("failed"),
            "{body} changed the dead letter"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Namespaces and the queue list
// ---------------------------------------------------------------------------------------

#[track_caller]
fn list_all(s: &TestServer, ns: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &token {
            Some(t) => format!("?limit={limit}&page_token={}", percent_encode(t)),
            None => format!("?limit={limit}"),
        };
        let (status, body) = get(&s.url(&format!("/api/v1/namespaces/{ns}/task-queues{query}")));
        assert_eq!(status, 200, "{body}");
        let page = body["task_queues"].as_array().expect("task_queues");
        assert!(page.len() <= limit, "limit={limit} gave {body}");
        out.extend(page.iter().cloned());
        pages += 1;
        token = next_token(&body);
        if token.is_none() {
            return (out, pages);
        }
        assert!(pages < 50, "paging does not end");
    }
}

fn loaded_queues(s: &TestServer) -> f64 {
    metric_sum(&metrics_text(s), "tasq_loaded_task_queues", &[])
}

#[test]
fn list_pages_every_queue_with_tasks_config_or_pollers_loaded_or_not() {
    let s = TestServer::start_with(&[], &[("TASQ_QUEUE_IDLE_TIMEOUT", "1s")]);
    let ns = "dispatch-list";
    let other = "dispatch-list-other";
    // Tasks.
    add_task(&s, &q(ns, "lq-tasks", A), json!({"task_type": "t"}));
    // Same name in another namespace: a separate queue.
    add_task(&s, &q(other, "lq-tasks", A), json!({"task_type": "t"}));
    add_task(&s, &q(other, "lq-tasks", A), json!({"task_type": "t"}));
    // Config only.
    set_config_ok(
        &s,
        &q(ns, "lq-config", A),
        json!({"max_tasks_per_second": 3.0}),
    );
    // Only a poller ever.
    assert!(poll_one(&s, &q(ns, "lq-poller", A), "lonely", 0).is_none());
    // Only a dead letter.
    let dq = q(ns, "lq-dead", A);
    add_task(&s, &dq, json!({"task_type": "t"}));
    let t = poll_one(&s, &dq, "w", 0).expect("task");
    let (status, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "no"}, "non_retryable": true}),
    );
    assert_eq!(status, 200);

    let expected: BTreeSet<String> = ["lq-config", "lq-dead", "lq-poller", "lq-tasks"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let check = |entries: &[Value], loaded: bool| {
        let names: Vec<String> = entries
            .iter()
            .map(|e| {
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
                assert_eq!(e["type"], json!(A), "{e}");
                e["name"].as_str().expect("name").to_string()
            })
            .collect();
        let set: BTreeSet<String> = names.iter().cloned().collect();
        assert_eq!(set.len(), names.len(), "a queue listed twice: {names:?}");
        assert_eq!(set, expected, "listed {entries:?}");
        let find = |name: &str| entries.iter().find(|e| e["name"] == json!(name)).unwrap();
        assert_eq!(stat_u64(find("lq-tasks"), "backlog_count"), 1);
        for name in ["lq-config", "lq-dead", "lq-poller"] {
            assert_eq!(stat_u64(find(name), "backlog_count"), 0, "{name}");
            assert_eq!(stat_u64(find(name), "in_flight_count"), 0, "{name}");
        }
        if loaded {
            assert!(
                stat_u64(find("lq-poller"), "pollers") >= 1,
                "{:?}",
                find("lq-poller")
            );
        }
    };

    let (entries, pages) = list_all(&s, ns, 3);
    assert_eq!(pages, 2, "4 queues at limit 3: {entries:?}");
    check(&entries, true);
    let (entries, pages) = list_all(&s, ns, 100);
    assert_eq!(pages, 1);
    check(&entries, true);
    let (others, _) = list_all(&s, other, 100);
    assert_eq!(others.len(), 1, "{others:?}");
    assert_eq!(others[0]["name"], json!("lq-tasks"));
    assert_eq!(stat_u64(&others[0], "backlog_count"), 2);

    // Idle queues unload, those with a backlog too (it is on disk). Listing still shows all
    // of them and does not load them again.
    let ok = wait_until(EVENTUALLY, || loaded_queues(&s) == 0.0);
    assert!(
        ok,
        "idle queues never unloaded: tasq_loaded_task_queues = {}",
        loaded_queues(&s)
    );
    let (entries, pages) = list_all(&s, ns, 3);
    assert_eq!(pages, 2);
    check(&entries, false);
    assert_eq!(loaded_queues(&s), 0.0, "listing loaded queues");
}

#[test]
fn a_page_token_from_another_namespace_is_refused() {
    let s = TestServer::start();
    add_task(&s, &q("other", "private-q", A), json!({"task_type": "t"}));
    add_task(&s, &q("zzz", "mine", A), json!({"task_type": "t"}));
    // base64url of "other": a storage key outside namespace zzz.
    let (status, body) = get(&s.url("/api/v1/namespaces/zzz/task-queues?page_token=b3RoZXI"));
    assert_error(status, &body, 400, "invalid_argument");
    let (status, body) = get(&s.url("/api/v1/namespaces/zzz/task-queues"));
    assert_eq!(status, 200, "{body}");
    let names: Vec<_> = body["task_queues"]
        .as_array()
        .expect("task_queues")
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("mine")]);
}
