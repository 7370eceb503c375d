//! Idle means idle: a queue with a backlog but no pollers, leases or watchers unloads after
//! `queue_idle_timeout` (its backlog is on disk, its gauges stay), and a delayed task that
//! falls due while its queue is unloaded becomes ready on time, without a poll to load it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const A: &str = "activity";

fn loaded(s: &TestServer) -> f64 {
    metric_sum(&metrics_text(s), "tasq_loaded_task_queues", &[])
}

#[test]
fn a_queue_with_a_backlog_and_nobody_polling_unloads_and_keeps_its_tasks() {
    let s = TestServer::start_with(&[], &[("TASQ_QUEUE_IDLE_TIMEOUT", "1s")]);
    for i in 0..20 {
        add_task(
            &s,
            &q(NS, &format!("idle-{i}"), A),
            json!({"task_type": "t", "task_id": "x"}),
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || loaded(&s) == 0.0),
        "queues with a backlog stayed loaded: {}",
        loaded(&s)
    );
    // The gauges still count the backlog of an unloaded queue.
    let backlog = metric_sum(
        &metrics_text(&s),
        "tasq_backlog_tasks",
        &queue_labels(NS, "idle-3", A),
    );
    assert_eq!(backlog, 1.0);
    // A poll loads it again and gets the task.
    let task = poll_one(&s, &q(NS, "idle-3", A), "w", 2000).expect("the task kept on disk");
    assert_eq!(task["task_id"], json!("x"));
}

#[test]
fn a_delayed_task_falls_due_on_time_in_an_unloaded_queue() {
    let s = TestServer::start_with(&[], &[("TASQ_QUEUE_IDLE_TIMEOUT", "1s")]);
    let qp = q(NS, "idle-later", A);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "later", "delay_ms": 6000}),
    );
    // Unloaded well before it is due (it is due after the idle timeout)...
    assert!(
        wait_until(Duration::from_secs(5), || loaded(&s) == 0.0),
        "the queue stayed loaded: {}",
        loaded(&s)
    );
    let listed = |state: &str| {
        let (_, page) = get(&s.url(&format!("{qp}/tasks?state={state}")));
        page["tasks"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(listed("delayed"), 1);
    // ...and ready once due, with nobody polling (listing does not load the queue).
    assert!(
        wait_until(Duration::from_secs(30), || listed("pending") == 1),
        "the delayed task never became ready"
    );
    assert_eq!(listed("delayed"), 0);
}

#[test]
fn after_a_restart_a_delayed_task_still_falls_due_with_nobody_polling() {
    let mut s = TestServer::start();
    let qp = q(NS, "idle-restart", A);
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "later", "delay_ms": 3000}),
    );
    s.kill9();
    s.restart();
    assert_eq!(loaded(&s), 0.0, "nothing loads a queue at start");
    assert!(
        wait_until(Duration::from_secs(30), || {
            let (_, page) = get(&s.url(&format!("{qp}/tasks?state=pending")));
            page["tasks"].as_array().is_some_and(|t| t.len() == 1)
        }),
        "the delayed task never became ready after the restart"
    );
}
