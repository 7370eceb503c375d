//! What operators see right after a restart: every queue holding tasks or dead letters is in
//! `/metrics` (backlog, its age, dead letters) and in the queue list, before any request
//! touches it, with delayed tasks that fell due while it was down counted as ready.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

const A: &str = "activity";

#[test]
fn queues_nobody_touched_since_a_restart_are_in_metrics_and_the_list() {
    let mut s = TestServer::start();
    let (ready_q, delayed_q, dead_q) = ("rs-ready", "rs-delayed", "rs-dead");
    for i in 0..3 {
        add_task(
            &s,
            &q(NS, ready_q, A),
            json!({"task_type": "t", "task_id": format!("r{i}")}),
        );
    }
    add_task(
        &s,
        &q(NS, delayed_q, A),
        json!({"task_type": "t", "task_id": "d", "delay_ms": 1500}),
    );
    add_task(
        &s,
        &q(NS, dead_q, A),
        json!({"task_type": "t", "task_id": "x"}),
    );
    let t = poll_one(&s, &q(NS, dead_q, A), "w", 0).expect("x");
    let (code, _) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "no"}, "non_retryable": true}),
    );
    assert_eq!(code, 200);

    s.kill9();
    s.restart();
    // Nothing has touched the queues: no actor holds them.
    let text = metrics_text(&s);
    let gauge =
        |text: &str, name: &str, queue: &str| metric_sum(text, name, &queue_labels(NS, queue, A));
    assert_eq!(gauge(&text, "tasq_backlog_tasks", ready_q), 3.0, "{text}");
    assert!(gauge(&text, "tasq_backlog_age_seconds", ready_q) >= 0.0);
    assert_eq!(
        gauge(&text, "tasq_dead_letter_tasks", dead_q),
        1.0,
        "{text}"
    );
    assert_eq!(metric_sum(&text, "tasq_loaded_task_queues", &[]), 0.0);

    // Once the delayed task is due, the list counts it as ready, without a describe.
    std::thread::sleep(Duration::from_millis(1600));
    let (code, body) = get(&s.url(&format!("/api/v1/namespaces/{NS}/task-queues?limit=100")));
    assert_eq!(code, 200, "{body}");
    let backlog = |name: &str| {
        body["task_queues"]
            .as_array()
            .expect("task_queues")
            .iter()
            .find(|q| q["name"] == name && q["type"] == A)
            .map(|q| q["backlog_count"].as_u64().unwrap_or(u64::MAX))
    };
    assert_eq!(backlog(ready_q), Some(3), "{body}");
    assert_eq!(backlog(delayed_q), Some(1), "{body}");
    // The metrics follow. The only actor loaded is the delayed task's queue, woken when the
    // task fell due so that it became ready on time; the others stay unloaded.
    let ok = wait_until(Duration::from_secs(30), || {
        gauge(&metrics_text(&s), "tasq_backlog_tasks", delayed_q) == 1.0
    });
    assert!(
        ok,
        "the due delayed task never showed in tasq_backlog_tasks"
    );
    assert!(metric_sum(&metrics_text(&s), "tasq_loaded_task_queues", &[]) <= 1.0);
}
