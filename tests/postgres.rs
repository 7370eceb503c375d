//! The PostgreSQL store against a real PostgreSQL that each test starts and stops itself
//! (`tests/common/postgres.rs`): a schema newer than the binary is refused; losing the
//! database answers 503 and tasq carries on by itself when it is back; an immediate restart
//! of PostgreSQL under concurrent adds and completes loses no acknowledged task and
//! dispatches no completed one again.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL's programs); `.ci/postgres` runs them
//! with `--ignored`, after the whole black-box suite on PostgreSQL.

mod common;

use common::postgres::{connect, Cluster};
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const A: &str = "activity";

fn on(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TASQ_STORAGE_BACKEND", "postgres".to_string()),
        ("TASQ_STORAGE_POSTGRES_URL", url.to_string()),
    ]
}

fn env_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/postgres"]
fn a_schema_newer_than_the_binary_is_refused() {
    let cluster = Cluster::start();
    let url = cluster.new_database();
    let mut client = connect(&url, Duration::from_secs(30));
    client
        .batch_execute(
            "CREATE TABLE tasq_schema (version integer NOT NULL);
             INSERT INTO tasq_schema VALUES (999);",
        )
        .expect("a schema from the future");
    let env = on(&url);
    let (status, stderr) = run_to_exit(&[], &env_of(&env), Duration::from_secs(60));
    let status = status.expect("tasq must refuse a newer schema");
    assert!(!status.success(), "stderr:\n{stderr}");
    assert!(
        stderr.contains("schema is version 999"),
        "one clear line; stderr:\n{stderr}"
    );
}

/// Every task of `queue` polled and completed until none is left: their ids.
fn drain(s: &TestServer, queue: &str) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let tasks = poll_tasks(
            s,
            queue,
            json!({"identity": "drainer", "max_tasks": 100, "wait_ms": 0}),
        );
        if tasks.is_empty() {
            return ids;
        }
        for t in tasks {
            ids.push(t["task_id"].as_str().expect("task id").to_string());
            let (status, body) = complete(s, &lease_of(&t), json!(null));
            assert_eq!(status, 200, "{body}");
        }
    }
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/postgres"]
fn losing_the_database_answers_503_and_tasq_carries_on_when_it_is_back() {
    let cluster = Cluster::start();
    let env = on(&cluster.new_database());
    let s = TestServer::start_with(&[], &env_of(&env));
    let queue = q(NS, "pg-lost", A);
    let mut acked = BTreeSet::new();
    for i in 0..20 {
        acked.insert(add_task(
            &s,
            &queue,
            json!({"task_type": "t", "task_id": format!("a{i}")}),
        ));
    }
    cluster.stop_immediate();
    // Writes answer 503 (never a 2xx), and the server says it is not ready.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let (status, body) = post(
            &s.url(&format!("{queue}/tasks")),
            &json!({"task_type": "t", "task_id": "while-down"}),
        );
        if status == 503 {
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            break;
        }
        // Never a 2xx: nothing can commit while the database is gone.
        assert!(status >= 500, "{status} {body}");
        assert!(Instant::now() < deadline, "adds never answered 503");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ready, _) = get(&s.url("/readyz"));
    assert_eq!(ready, 503);
    let (_, _, metrics) = get_text(&s.url("/metrics"));
    assert!(
        metrics.lines().any(|l| l == "tasq_storage_healthy 0"),
        "tasq_storage_healthy must be 0 while the database is gone"
    );
    cluster.start_again();
    // Back by itself: adds are acknowledged again and /readyz is 200.
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let (status, body) = post(
            &s.url(&format!("{queue}/tasks")),
            &json!({"task_type": "t", "task_id": "after"}),
        );
        if status == 201 || status == 200 {
            acked.insert("after".to_string());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasq did not carry on: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ready, _) = get(&s.url("/readyz"));
    assert_eq!(ready, 200);
    let drained: BTreeSet<String> = drain(&s, &queue).into_iter().collect();
    let lost: Vec<_> = acked.difference(&drained).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/postgres"]
fn an_immediate_postgres_restart_under_load_loses_nothing_and_runs_nothing_twice() {
    let cluster = Cluster::start();
    let env = on(&cluster.new_database());
    let s = TestServer::start_with(&[], &env_of(&env));
    let queue = q(NS, "pg-restart", A);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for p in 0..4 {
        let (base, queue, stop, acked) = (
            s.base().to_string(),
            queue.clone(),
            stop.clone(),
            acked.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{p}-{i}");
                i += 1;
                if let Ok((status, _)) = try_post(
                    &format!("{base}{queue}/tasks"),
                    &json!({"task_type": "t", "task_id": id}),
                ) {
                    if status == 201 || status == 200 {
                        acked.lock().expect("lock").insert(id);
                    }
                }
            }
        }));
    }
    for w in 0..2 {
        let (base, queue, stop, completed) = (
            s.base().to_string(),
            queue.clone(),
            stop.clone(),
            completed.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let identity = format!("w{w}");
            while !stop.load(Ordering::Relaxed) {
                let Ok((200, body)) = try_post(
                    &format!("{base}{queue}/poll"),
                    &json!({"identity": identity, "max_tasks": 10, "wait_ms": 200}),
                ) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                for t in body["tasks"].as_array().cloned().unwrap_or_default() {
                    let lease = t["lease"].as_str().unwrap_or_default().to_string();
                    let url = format!("{base}/api/v1/leases/{lease}/complete");
                    if let Ok((200, _)) = try_post(&url, &json!({})) {
                        let id = t["task_id"].as_str().unwrap_or_default().to_string();
                        completed.lock().expect("lock").push(id);
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(2));
    cluster.stop_immediate();
    std::thread::sleep(Duration::from_secs(2));
    cluster.start_again();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let acked = acked.lock().expect("lock").clone();
    let completed = completed.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "too little load to mean anything: {}",
        acked.len()
    );
    // Wait until every lease of the load has ended or been given back (a lease whose poll
    // got no answer runs out after 60 s and is retried after its backoff), taking the rest.
    let mut rest = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        rest.extend(drain(&s, &queue));
        let st = stats(&s, NS, "pg-restart", A);
        let left = ["in_flight_count", "backlog_count", "delayed_count"];
        if left.iter().all(|f| stat_u64(&st, f) == 0) {
            rest.extend(drain(&s, &queue));
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let done: BTreeSet<String> = completed.iter().chain(rest.iter()).cloned().collect();
    // A task whose complete went in but whose answer was lost (the database went just then)
    // is completed without a worker knowing: done, not lost.
    let lost: Vec<_> = acked
        .difference(&done)
        .filter(|id| {
            let (status, body) = get(&s.url(&format!("{queue}/tasks/{id}")));
            status != 200 || body["state"] != "completed"
        })
        .collect();
    let states: Vec<String> = lost
        .iter()
        .take(3)
        .map(|id| format!("{:?}", get(&s.url(&format!("{queue}/tasks/{id}")))))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged tasks lost: {lost:?}; the first as the server has them: {states:?}; \
         the queue: {}",
        lost.len(),
        stats(&s, NS, "pg-restart", A)
    );
    // A task whose complete was acknowledged is never dispatched again.
    let twice: Vec<_> = rest.iter().filter(|id| completed.contains(id)).collect();
    assert!(
        twice.is_empty(),
        "completed, then dispatched again: {twice:?}"
    );
    let mut seen = BTreeSet::new();
    let dup: Vec<_> = completed.iter().filter(|id| !seen.insert(*id)).collect();
    assert!(dup.is_empty(), "completed twice: {dup:?}");
}

/// Runs `tasq store copy --from FROM --to TO`: its exit code and output.
fn store_copy(from: &str, to: &str) -> (i32, String) {
    exit_code_and_output(tasq_command().args(["store", "copy", "--from", from, "--to", to]))
}

/// Stops a server with SIGTERM (it flushes) and waits for it.
fn stop(s: &mut TestServer) {
    s.terminate();
    assert!(
        s.wait_exit(Duration::from_secs(30)).is_some(),
        "the server did not stop"
    );
}

/// What a store copy must carry: ready tasks (one with a payload kept apart), delayed ones,
/// a dead letter, a completed task, a queue's dispatch limit.
fn fill(s: &TestServer, queue: &str) -> String {
    let big = "x".repeat(5000);
    for i in 0..5 {
        add_task(
            s,
            queue,
            json!({"task_type": "t", "task_id": format!("r{i}"), "payload": {"i": i}}),
        );
    }
    add_task(
        s,
        queue,
        json!({"task_type": "t", "task_id": "big", "payload": {"big": big}}),
    );
    for i in 0..2 {
        add_task(
            s,
            queue,
            json!({"task_type": "t", "task_id": format!("d{i}"), "delay_ms": 3_600_000}),
        );
    }
    add_task(
        s,
        queue,
        json!({"task_type": "t", "task_id": "dead", "retry": {"max_attempts": 1}, "priority": 1}),
    );
    add_task(
        s,
        queue,
        json!({"task_type": "t", "task_id": "done", "priority": 1}),
    );
    for t in poll_tasks(
        s,
        queue,
        json!({"identity": "w", "max_tasks": 2, "wait_ms": 0}),
    ) {
        let lease = lease_of(&t);
        if t["task_id"] == "dead" {
            assert_eq!(fail(s, &lease, json!({"error": {"message": "no"}})).0, 200);
        } else {
            assert_eq!(complete(s, &lease, json!({"ok": true})).0, 200);
        }
    }
    let (status, _) = put(
        &s.url(&format!("{queue}/config")),
        &json!({"max_tasks_per_second": 50, "burst": 7}),
    );
    assert_eq!(status, 200);
    big
}

/// The queue as [`fill`] left it, on whatever store `s` runs.
fn check_filled(s: &TestServer, queue: &str, name: &str, big: &str) {
    let st = stats(s, NS, name, A);
    assert_eq!(stat_u64(&st, "backlog_count"), 6, "{st}");
    assert_eq!(stat_u64(&st, "delayed_count"), 2, "{st}");
    assert_eq!(stat_u64(&st, "dead_letter_count"), 1, "{st}");
    assert_eq!(st["rate_limit"]["burst"], 7, "{st}");
    assert_eq!(status_of(s, queue, "done")["state"], "completed");
    assert_eq!(status_of(s, queue, "dead")["state"], "failed");
    let tasks = poll_tasks(
        s,
        queue,
        json!({"identity": "w", "max_tasks": 10, "wait_ms": 0}),
    );
    let ids: BTreeSet<String> = tasks
        .iter()
        .map(|t| t["task_id"].as_str().unwrap_or_default().to_string())
        .collect();
    let want: BTreeSet<String> = ["r0", "r1", "r2", "r3", "r4", "big"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(ids, want);
    let big_task = tasks.iter().find(|t| t["task_id"] == "big").expect("big");
    assert_eq!(big_task["payload"]["big"].as_str(), Some(big));
}

#[test]
#[ignore = "needs PostgreSQL: run by .ci/postgres"]
fn store_copy_moves_a_sled_store_to_postgres_and_back() {
    let cluster = Cluster::start();
    let url = cluster.new_database();
    let name = "copied";
    let queue = q(NS, name, A);
    let sqs_on = [
        ("TASQ_SQS_ENABLED", "true"),
        ("TASQ_SQS_BIND", "127.0.0.1:0"),
    ];
    let mut sled = TestServer::start_with(
        &[],
        &[("TASQ_STORAGE_BACKEND", "sled"), sqs_on[0], sqs_on[1]],
    );
    let big = fill(&sled, &queue);
    // An SQS queue's attributes travel with the copy.
    let made = json!({"QueueName": "copied-sqs", "Attributes": {"VisibilityTimeout": "77"}});
    common::sqs::call(&sled.sqs_base(), "CreateQueue", made).ok();
    stop(&mut sled);
    let from = format!("sled:{}", sled.data_dir().display());

    let (code, out) = store_copy(&from, &url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("copied 10 task records"), "{out}");
    let mut env = on(&url);
    env.extend(sqs_on.iter().map(|(k, v)| (*k, v.to_string())));
    let mut pg = TestServer::start_with(&[], &env_of(&env));
    check_filled(&pg, &queue, name, &big);
    check_sqs_queue(&pg);
    stop(&mut pg);

    // A target that holds anything is refused, and keeps what it had.
    let (code, out) = store_copy(&from, &url);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not empty"), "{out}");

    // And back, into the empty store of a new sled server. (The tasks leased by
    // check_filled's poll were in flight when the server stopped: they come back ready, as
    // after any restart.)
    let mut sled_again = TestServer::start_with(
        &[],
        &[("TASQ_STORAGE_BACKEND", "sled"), sqs_on[0], sqs_on[1]],
    );
    stop(&mut sled_again);
    let to = format!("sled:{}", sled_again.data_dir().display());
    let (code, out) = store_copy(&url, &to);
    assert_eq!(code, 0, "{out}");
    sled_again.restart();
    check_filled(&sled_again, &queue, name, &big);
    check_sqs_queue(&sled_again);
}

/// The SQS queue made before the copy is there with its attributes.
fn check_sqs_queue(s: &TestServer) {
    let sqs = s.sqs_base();
    let url = format!("{sqs}/000000000000/copied-sqs");
    let asked = json!({"QueueUrl": url, "AttributeNames": ["VisibilityTimeout"]});
    let answer = common::sqs::call(&sqs, "GetQueueAttributes", asked);
    let body = answer.ok();
    assert_eq!(
        body["Attributes"]["VisibilityTimeout"],
        json!("77"),
        "{body}"
    );
}
