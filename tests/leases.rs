//! Leases capability: complete, fail (retry with backoff, non-retryable, attempts
//! exhausted, `retry_after_ms`), heartbeat, idempotent settles, `lease_lost`, and lease
//! expiry by start-to-close and heartbeat timeouts.

mod common;

use common::*;
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, Instant};

const A: &str = "activity";

fn expired(s: &TestServer, queue: &str, reason: &str) -> f64 {
    metric_sum(
        &metrics_text(s),
        "tasq_tasks_expired_total",
        &labels_with(NS, queue, A, &[("reason", reason)]),
    )
}

fn failed(s: &TestServer, queue: &str, outcome: &str) -> f64 {
    metric_sum(
        &metrics_text(s),
        "tasq_tasks_failed_total",
        &labels_with(NS, queue, A, &[("outcome", outcome)]),
    )
}

fn text_of(v: &Value) -> String {
    v.to_string()
}

#[test]
fn complete_stores_result_and_repeats_idempotently() {
    let s = TestServer::start();
    let queue = "leases-complete";
    let qp = q(NS, queue, A);
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "in_flight_count"), 1);

    let (status, first) = complete(&s, &lease, json!({"ok": true, "n": 7}));
    assert_eq!(status, 200, "{first}");
    assert_subset(&first, &json!({"task_id": id, "state": "completed"}));

    let st = status_of(&s, &qp, &id);
    assert_eq!(st["state"], json!("completed"));
    assert_eq!(st["result"], json!({"ok": true, "n": 7}));
    assert_eq!(st["attempt"], json!(1));

    // The same complete again: the same 200.
    let (status, again) = complete(&s, &lease, json!({"ok": true, "n": 7}));
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);

    // A different settle of the settled lease: 409.
    let (status, body) = fail(
        &s,
        &lease,
        json!({"error": {"message": "late", "type": "X"}}),
    );
    assert_error(status, &body, 409, "lease_lost");
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("completed"));

    let st = stats(&s, NS, queue, A);
    assert_eq!(stat_u64(&st, "in_flight_count"), 0);
    assert_eq!(stat_u64(&st, "backlog_count"), 0);
    assert!(
        poll_one(&s, &qp, "w", 0).is_none(),
        "a completed task is never given again"
    );
}

#[test]
fn unknown_or_garbage_leases_are_lease_lost() {
    let s = TestServer::start();
    let qp = q(NS, "leases-garbage", A);
    add_task(&s, &qp, json!({"task_type": "t"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let real = lease_of(&task);

    for lease in ["not-a-lease", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x"] {
        let (status, body) = complete(&s, lease, json!(1));
        assert_error(status, &body, 409, "lease_lost");
        let (status, body) = fail(&s, lease, json!({"error": {"message": "m", "type": "t"}}));
        assert_error(status, &body, 409, "lease_lost");
        let (status, body) = heartbeat(&s, lease, json!(null));
        assert_error(status, &body, 409, "lease_lost");
    }
    // The real lease is unaffected by the garbage.
    let (status, body) = heartbeat(&s, &real, json!(null));
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&s, &real, json!(1));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn fail_retries_after_backoff_with_next_attempt() {
    let s = TestServer::start();
    let queue = "leases-fail-retry";
    let qp = q(NS, queue, A);
    let id = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "retry": {"initial_interval_ms": 200}}),
    );
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    assert_eq!(task["attempt"], json!(1));
    let lease = lease_of(&task);

    let fail_body = json!({"error": {"message": "boom-disk-full", "type": "IOError"}});
    let failed_at = Instant::now();
    let (status, first) = fail(&s, &lease, fail_body.clone());
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["task_id"], json!(id));
    assert_eq!(first["state"], json!("pending"));
    assert_instant(&first, "next_attempt_at");

    // Repeating the same fail answers the same 200.
    let (status, again) = fail(&s, &lease, fail_body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again, first);

    let st = status_of(&s, &qp, &id);
    assert_eq!(st["state"], json!("pending"));
    assert!(
        text_of(&st["last_error"]).contains("boom-disk-full"),
        "last_error should carry the failure: {st}"
    );
    let early = poll_one(&s, &qp, "w", 0);
    if early.is_some() {
        assert!(
            failed_at.elapsed() >= Duration::from_millis(200),
            "retry given before its 200 ms backoff"
        );
    }
    let again = match early {
        Some(t) => t,
        None => poll_one(&s, &qp, "w", 15000).expect("the task comes back after its backoff"),
    };
    assert_eq!(again["task_id"], json!(id));
    assert_eq!(again["attempt"], json!(2));
    assert_ne!(lease_of(&again), lease, "a new attempt has a new lease");
    assert!(failed_at.elapsed() >= Duration::from_millis(200));

    // The first lease is superseded.
    let (status, body) = complete(&s, &lease, json!(null));
    assert_error(status, &body, 409, "lease_lost");
    let (status, body) = complete(&s, &lease_of(&again), json!("second time lucky"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("completed"));
    assert!(failed(&s, queue, "retry") >= 1.0);
}

#[test]
fn non_retryable_fail_makes_a_dead_letter() {
    let s = TestServer::start();
    let queue = "leases-non-retryable";
    let qp = q(NS, queue, A);
    let id = add_task(&s, &qp, json!({"task_type": "t", "payload": {"k": "v"}}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let (status, body) = fail(
        &s,
        &lease_of(&task),
        json!({"error": {"message": "bad input", "type": "Validation"}, "non_retryable": true}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_id"], json!(id));
    assert_eq!(body["state"], json!("failed"));

    let st = status_of(&s, &qp, &id);
    assert_eq!(st["state"], json!("failed"));
    assert!(text_of(&st["last_error"]).contains("bad input"), "{st}");
    let stats = stats(&s, NS, queue, A);
    assert_eq!(stat_u64(&stats, "dead_letter_count"), 1, "{stats}");
    assert_eq!(stat_u64(&stats, "in_flight_count"), 0, "{stats}");
    assert_eq!(stat_u64(&stats, "backlog_count"), 0, "{stats}");
    assert!(
        poll_one(&s, &qp, "w", 1000).is_none(),
        "a dead letter is not retried"
    );

    let (status, body) = get(&s.url(&format!("{qp}/dead-letters")));
    assert_eq!(status, 200, "{body}");
    let dl = body["dead_letters"].as_array().expect("dead_letters array");
    assert!(
        dl.iter()
            .any(|d| d["task_id"] == json!(id) && d["state"] == json!("failed")),
        "dead letter list lacks the task: {body}"
    );
    assert!(failed(&s, queue, "dead_letter") >= 1.0);
}

#[test]
fn exhausted_max_attempts_fails_the_task() {
    let s = TestServer::start();
    let queue = "leases-max-attempts";
    let qp = q(NS, queue, A);
    let id = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "retry": {"max_attempts": 2, "initial_interval_ms": 100}}),
    );
    let t1 = poll_one(&s, &qp, "w", 0).expect("attempt 1");
    assert_eq!(t1["attempt"], json!(1));
    let (status, body) = fail(
        &s,
        &lease_of(&t1),
        json!({"error": {"message": "one", "type": "E"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("pending"));

    let t2 = poll_one(&s, &qp, "w", 15000).expect("attempt 2 after backoff");
    assert_eq!(t2["task_id"], json!(id));
    assert_eq!(t2["attempt"], json!(2));
    let (status, body) = fail(
        &s,
        &lease_of(&t2),
        json!({"error": {"message": "two", "type": "E"}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["state"],
        json!("failed"),
        "2 of 2 attempts used: {body}"
    );

    let st = status_of(&s, &qp, &id);
    assert_eq!(st["state"], json!("failed"));
    assert_eq!(st["attempt"], json!(2));
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "dead_letter_count"), 1);
    assert!(poll_one(&s, &qp, "w", 1000).is_none());
}

#[test]
fn retry_after_ms_overrides_the_backoff() {
    let s = TestServer::start();
    let queue = "leases-retry-after";
    let qp = q(NS, queue, A);

    // Longer than the policy's 100 ms: the task must wait the full 2 s.
    let slow = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "slow", "retry": {"initial_interval_ms": 100}}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("ready task");
    let failed_at = Instant::now();
    let (status, body) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "busy", "type": "E"}, "retry_after_ms": 2000}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("pending"));
    assert_instant(&body, "next_attempt_at");
    let t = poll_one(&s, &qp, "w", 20000).expect("comes back after retry_after_ms");
    assert_eq!(t["task_id"], json!(slow));
    assert_eq!(t["attempt"], json!(2));
    assert!(
        failed_at.elapsed() >= Duration::from_millis(2000),
        "retry_after_ms 2000 ignored: task back after {:?}",
        failed_at.elapsed()
    );
    let (status, body) = complete(&s, &lease_of(&t), json!(null));
    assert_eq!(status, 200, "{body}");

    // Shorter than the policy's 60 s: the task comes back quickly.
    let fast = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "fast", "retry": {"initial_interval_ms": 60000}}),
    );
    let t = poll_one(&s, &qp, "w", 0).expect("ready task");
    let failed_at = Instant::now();
    let (status, body) = fail(
        &s,
        &lease_of(&t),
        json!({"error": {"message": "busy", "type": "E"}, "retry_after_ms": 300}),
    );
    assert_eq!(status, 200, "{body}");
    let t = poll_one(&s, &qp, "w", 20000).expect("retry_after_ms 300 beats a 60 s backoff");
    assert_eq!(t["task_id"], json!(fast));
    assert_eq!(t["attempt"], json!(2));
    assert!(failed_at.elapsed() < Duration::from_secs(20));
}

#[test]
fn heartbeat_reports_lease_expiry_and_no_cancel() {
    let s = TestServer::start();
    let qp = q(NS, "leases-heartbeat", A);
    add_task(&s, &qp, json!({"task_type": "t"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    let (status, body) = heartbeat(&s, &lease, json!({"progress": 10}));
    assert_eq!(status, 200, "{body}");
    assert_instant(&body, "lease_expires_at");
    assert_eq!(body["cancel_requested"], json!(false));
    let (status, body) = post(
        &s.url(&format!("/api/v1/leases/{lease}/heartbeat")),
        &json!({"details": null, "detials": 1}),
    );
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(msg.contains("detials"), "{msg}");
}

#[test]
fn start_to_close_expiry_redispatches_with_next_attempt() {
    let s = TestServer::start();
    let queue = "leases-start-to-close";
    let qp = q(NS, queue, A);
    let id = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "start_to_close_timeout_ms": 300, "retry": {"initial_interval_ms": 100}}),
    );
    let first = poll_one(&s, &qp, "w", 0).expect("ready task");
    assert_eq!(first["attempt"], json!(1));
    assert_eq!(first["start_to_close_timeout_ms"], json!(300));
    let old = lease_of(&first);

    // Never settled: a long poll gets it again.
    let again = poll_one(&s, &qp, "w", 20000).expect("expired task is dispatched again");
    assert_eq!(again["task_id"], json!(id));
    assert_eq!(again["attempt"], json!(2));

    let (status, body) = complete(&s, &old, json!("too late"));
    assert_error(status, &body, 409, "lease_lost");
    let (status, body) = heartbeat(&s, &old, json!(null));
    assert_error(status, &body, 409, "lease_lost");
    let (status, body) = complete(&s, &lease_of(&again), json!("in time"));
    assert_eq!(status, 200, "{body}");
    let st = status_of(&s, &qp, &id);
    assert_eq!(st["state"], json!("completed"));
    assert_eq!(st["result"], json!("in time"));

    let ok = wait_until(EVENTUALLY, || expired(&s, queue, "start_to_close") >= 1.0);
    assert!(
        ok,
        "tasq_tasks_expired_total{{reason=\"start_to_close\"}} not counted"
    );
}

#[test]
fn heartbeats_keep_the_lease_and_stopping_them_expires_it() {
    let s = TestServer::start();
    let queue = "leases-heartbeat-timeout";
    let qp = q(NS, queue, A);
    let heartbeat_timeout = Duration::from_millis(1000);
    let id = add_task(
        &s,
        &qp,
        json!({
            "task_type": "t",
            "start_to_close_timeout_ms": 60000,
            "heartbeat_timeout_ms": 1000,
            "retry": {"initial_interval_ms": 100},
        }),
    );
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    assert_eq!(task["heartbeat_timeout_ms"], json!(1000));
    let lease = lease_of(&task);

    // Heartbeat every 150 ms for three heartbeat timeouts: the lease holds.
    let started = Instant::now();
    while started.elapsed() < heartbeat_timeout * 3 {
        let (status, body) = heartbeat(
            &s,
            &lease,
            json!({"at_ms": started.elapsed().as_millis() as u64}),
        );
        assert_eq!(
            status,
            200,
            "heartbeat after {:?}: {body}",
            started.elapsed()
        );
        assert_eq!(body["cancel_requested"], json!(false));
        thread::sleep(Duration::from_millis(150));
    }
    let st = status_of(&s, &qp, &id);
    assert_eq!(
        st["state"],
        json!("running"),
        "heartbeats must keep the lease: {st}"
    );
    assert_eq!(st["attempt"], json!(1));
    assert!(
        poll_one(&s, &qp, "other", 0).is_none(),
        "a held lease is not given out"
    );

    // Stop heartbeating: the lease ends and the task comes back.
    let again = poll_one(&s, &qp, "w", 20000).expect("task returns once heartbeats stop");
    assert_eq!(again["task_id"], json!(id));
    assert_eq!(again["attempt"], json!(2));
    let (status, body) = heartbeat(&s, &lease, json!(null));
    assert_error(status, &body, 409, "lease_lost");

    let ok = wait_until(EVENTUALLY, || expired(&s, queue, "heartbeat") >= 1.0);
    assert!(
        ok,
        "tasq_tasks_expired_total{{reason=\"heartbeat\"}} not counted"
    );
}

#[test]
fn fail_then_complete_on_same_lease_is_lease_lost() {
    let s = TestServer::start();
    let qp = q(NS, "leases-fail-then-complete", A);
    let id = add_task(
        &s,
        &qp,
        json!({"task_type": "t", "retry": {"initial_interval_ms": 60000}}),
    );
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    let (status, body) = fail(&s, &lease, json!({"error": {"message": "x", "type": "E"}}));
    assert_eq!(status, 200, "{body}");
    let (status, body) = complete(&s, &lease, json!(null));
    assert_error(status, &body, 409, "lease_lost");
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("pending"));
}
