//! Durability capability: acknowledged adds and settles survive SIGKILL, leased tasks come
//! back after a crash, duplicates are still detected after a restart, and SIGTERM answers
//! parked polls, exits 0 and keeps everything.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const A: &str = "activity";

#[test]
fn kill9_loses_no_acknowledged_add_or_settle() {
    let started = Instant::now();
    let mut s = TestServer::start();
    let queue = "durability-kill9";
    let qp = q(NS, queue, A);
    // A 5 s lease keeps the test bounded whether the server requeues leased tasks at once
    // on recovery or waits for their lease to end.
    let spec = |i: usize| {
        json!({
            "task_type": "t",
            "task_id": format!("t-{i:02}"),
            "payload": {"n": i},
            "start_to_close_timeout_ms": 5000,
            "retry": {"initial_interval_ms": 100},
        })
    };
    for i in 0..25 {
        add_task(&s, &qp, spec(i));
    }
    let batch: Vec<Value> = (25..50).map(spec).collect();
    let (status, body) = post(
        &s.url(&format!("{qp}/tasks/batch")),
        &json!({ "tasks": batch }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(25));
    assert_eq!(backlog(&s, NS, queue, A), 50);

    // Complete 10.
    let mut completed = BTreeMap::new();
    while completed.len() < 10 {
        let t = poll_one(&s, &qp, "w", 0).expect("ready task");
        let id = t["task_id"].as_str().expect("id").to_string();
        let result = json!({"done": t["payload"]["n"].clone()});
        let (status, body) = complete(&s, &lease_of(&t), result.clone());
        assert_eq!(status, 200, "{body}");
        completed.insert(id, result);
    }
    // Lease 5 more, never settled.
    let mut leased = BTreeSet::new();
    while leased.len() < 5 {
        let t = poll_one(&s, &qp, "w", 0).expect("ready task");
        assert_eq!(t["attempt"], json!(1));
        leased.insert(t["task_id"].as_str().expect("id").to_string());
    }

    s.kill9();
    s.restart();
    s.wait_ready();

    // The leased tasks are back in the backlog with the age they had, not an age computed
    // from their place in the fair-share order.
    let age = describe(&s, NS, queue)["types"][A]["backlog_age_ms"]
        .as_u64()
        .expect("backlog_age_ms");
    assert!(
        age <= started.elapsed().as_millis() as u64,
        "backlog age {age} ms is older than this test ({:?})",
        started.elapsed()
    );

    // A duplicate add of a pending task is still a duplicate after the crash.
    let pending_id = (0..50)
        .map(|i| format!("t-{i:02}"))
        .find(|id| !completed.contains_key(id) && !leased.contains(id))
        .expect("a pending id");
    let (status, body) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "t", "task_id": pending_id}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], json!(true));

    // Drain: exactly the 40 not completed, each once, completing as we go.
    let mut drained: BTreeMap<String, u64> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while drained.len() < 40 && Instant::now() < deadline {
        let tasks = poll_tasks(
            &s,
            &qp,
            json!({"identity": "w2", "wait_ms": 2000, "max_tasks": 10}),
        );
        for t in tasks {
            let id = t["task_id"].as_str().expect("id").to_string();
            let attempt = t["attempt"].as_u64().expect("attempt");
            assert!(
                !completed.contains_key(&id),
                "completed task {id} was dispatched again after the crash"
            );
            assert!(
                drained.insert(id.clone(), attempt).is_none(),
                "{id} given twice"
            );
            let (status, body) = complete(&s, &lease_of(&t), json!("after-restart"));
            assert_eq!(status, 200, "{body}");
        }
    }
    let expected: BTreeSet<String> = (0..50)
        .map(|i| format!("t-{i:02}"))
        .filter(|id| !completed.contains_key(id))
        .collect();
    let got: BTreeSet<String> = drained.keys().cloned().collect();
    assert_eq!(
        got, expected,
        "after restart the 40 unfinished tasks must come back"
    );
    for (id, attempt) in &drained {
        let want = if leased.contains(id) { 2 } else { 1 };
        assert_eq!(
            *attempt,
            want,
            "attempt of {id} (leased before crash: {})",
            leased.contains(id)
        );
    }
    assert!(poll_one(&s, &qp, "w2", 0).is_none());

    // Completed tasks keep their state and result, and stay duplicates.
    for (id, result) in &completed {
        let st = status_of(&s, &qp, id);
        assert_eq!(st["state"], json!("completed"), "{st}");
        assert_eq!(&st["result"], result, "{st}");
    }
    let done = completed.keys().next().expect("a completed id");
    let (status, body) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "t", "task_id": done}),
    );
    assert_eq!(status, 200, "{body}");
    assert_subset(&body, &json!({"task_id": done, "duplicate": true}));
}

#[test]
fn sigterm_answers_parked_polls_exits_zero_and_keeps_tasks() {
    let mut s = TestServer::start();
    let kept = "durability-sigterm-kept";
    let idle = "durability-sigterm-idle";
    let kept_q = q(NS, kept, A);
    let idle_q = q(NS, idle, A);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            add_task(
                &s,
                &kept_q,
                json!({"task_type": "t", "task_id": format!("k-{i}")}),
            )
        })
        .collect();
    let (status, body) = put(
        &s.url(&format!("{kept_q}/config")),
        &json!({"max_tasks_per_second": 50.0, "burst": 10}),
    );
    assert_eq!(status, 200, "{body}");

    let (tx, rx) = mpsc::channel();
    let poll_url = s.url(&format!("{idle_q}/poll"));
    thread::spawn(move || {
        let answer = try_post(&poll_url, &json!({"identity": "parked", "wait_ms": 60000}));
        let _ = tx.send(answer);
    });
    wait_for_poller(&s, NS, idle, A, "parked");

    let sent = Instant::now();
    s.terminate();
    let answer = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("parked poll must be answered on SIGTERM, not left hanging");
    let (status, body) = answer.unwrap_or_else(|e| panic!("parked poll got no HTTP answer: {e}"));
    assert_eq!(status, 200, "{body}");
    assert_subset(&body, &json!({"tasks": []}));
    assert!(sent.elapsed() < Duration::from_secs(20));

    let exit = s
        .wait_exit(Duration::from_secs(20))
        .expect("server must exit within 20 s of SIGTERM");
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");

    s.restart();
    s.wait_ready();
    assert_eq!(backlog(&s, NS, kept, A), 3);
    for id in &ids {
        assert_eq!(status_of(&s, &kept_q, id)["state"], json!("pending"));
        let (status, body) = post(
            &s.url(&format!("{kept_q}/tasks")),
            &json!({"task_type": "t", "task_id": id}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["duplicate"], json!(true));
    }
    let st = stats(&s, NS, kept, A);
    let rl = &st["rate_limit"];
    assert_eq!(rl["max_tasks_per_second"].as_f64(), Some(50.0), "{rl}");
    assert_eq!(rl["burst"].as_f64(), Some(10.0), "{rl}");
    assert_eq!(rl["source"], json!("api"), "{rl}");
}

/// A task added while a worker waits goes to that worker without waiting for the add's flush
/// (README, "Durability and recovery"), but its lease is in the same write as the add: once
/// the add is answered, a crash must bring the task back with the attempt counted.
#[test]
fn sync_matched_task_comes_back_after_kill9_once_its_add_is_answered() {
    let mut s = TestServer::start();
    let queue = "durability-sync-match";
    let qp = q(NS, queue, A);
    let poller = spawn_poll(&s, &qp, json!({"identity": "parked", "wait_ms": 30000}));
    wait_for_poller(&s, NS, queue, A, "parked");
    let id = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "payload": {"n": 1}, "start_to_close_timeout_ms": 5000}),
    );
    let (status, body, _) = poller.join().expect("poller thread");
    assert_eq!(status, 200, "{body}");
    let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        tasks.len(),
        1,
        "the parked poll should get the task: {body}"
    );
    assert_eq!(tasks[0]["task_id"], json!(id));
    assert_eq!(tasks[0]["attempt"], json!(1));
    let sync = labels_with(NS, queue, A, &[("match", "sync")]);
    assert_eq!(
        metric_sum(&metrics_text(&s), "tasq_tasks_dispatched_total", &sync),
        1.0,
        "the task should have gone out by sync match"
    );

    s.kill9();
    s.restart();
    s.wait_ready();

    let t = poll_one(&s, &qp, "after-crash", 10_000).expect("the leased task comes back");
    assert_eq!(t["task_id"], json!(id));
    assert_eq!(t["attempt"], json!(2), "the first lease was on disk: {t}");
    let (status, body) = complete(&s, &lease_of(&t), json!("done"));
    assert_eq!(status, 200, "{body}");
}
