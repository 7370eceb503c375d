//! Tasks capability: add, batch add, status (with `wait_ms`), cancel, and rejection of every
//! kind of bad input the contract names (each rejection leaves the queue unchanged).

mod common;

use common::*;
use serde_json::{json, Value};
use std::thread;
use std::time::{Duration, Instant};

const A: &str = "activity";

const STATUS_FIELDS: &[&str] = &[
    "task_id",
    "task_type",
    "state",
    "attempt",
    "added_at",
    "updated_at",
    "result",
    "last_error",
];

#[test]
fn add_generates_task_id_and_status_has_every_field() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-add-generated", A);
    let (status, body) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "send-email", "payload": {"to": "a@example.com"}}),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["duplicate"], json!(false));
    let id = body["task_id"]
        .as_str()
        .expect("task_id string")
        .to_string();
    assert!(!id.is_empty());

    // A second add without task_id gets a different generated id.
    let id2 = add_task(&s, &qp, json!({"task_type": "send-email"}));
    assert_ne!(id, id2, "generated task ids must differ");

    let st = status_of(&s, &qp, &id);
    assert_has_keys(&st, STATUS_FIELDS);
    assert_eq!(st["task_id"], json!(id));
    assert_eq!(st["task_type"], json!("send-email"));
    assert_eq!(st["state"], json!("pending"));
    assert!(st["attempt"].is_u64(), "attempt must be an integer: {st}");
    assert_instant(&st, "added_at");
    assert_instant(&st, "updated_at");
    assert!(st["result"].is_null(), "no result yet: {st}");
    assert_eq!(backlog(&s, NS, "tasks-add-generated", A), 2);
}

#[test]
fn add_with_existing_task_id_is_duplicate_and_changes_nothing() {
    let s = TestServer::start();
    let queue = "tasks-add-duplicate";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks"));
    let (status, body) = post(
        &url,
        &json!({"task_type": "first", "task_id": "order-17-email", "payload": {"v": 1}, "priority": 2}),
    );
    assert_eq!(status, 201, "{body}");
    assert_subset(
        &body,
        &json!({"task_id": "order-17-email", "duplicate": false}),
    );

    let (status, body) = post(
        &url,
        &json!({"task_type": "second", "task_id": "order-17-email", "payload": {"v": 2}, "priority": 5}),
    );
    assert_eq!(status, 200, "{body}");
    assert_subset(
        &body,
        &json!({"task_id": "order-17-email", "duplicate": true}),
    );

    assert_eq!(backlog(&s, NS, queue, A), 1);
    let st = status_of(&s, &qp, "order-17-email");
    assert_eq!(st["task_type"], json!("first"));

    // Duplicate while running: still nothing changes.
    let task = poll_one(&s, &qp, "w1", 0).expect("the task is ready");
    assert_eq!(task["task_id"], json!("order-17-email"));
    assert_eq!(task["task_type"], json!("first"));
    assert_eq!(task["payload"], json!({"v": 1}));
    assert_eq!(task["priority"], json!(2));
    let (status, body) = post(
        &url,
        &json!({"task_type": "third", "task_id": "order-17-email"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], json!(true));
    assert_eq!(backlog(&s, NS, queue, A), 0);
    assert_eq!(
        status_of(&s, &qp, "order-17-email")["state"],
        json!("running")
    );

    // Duplicate after completion: still a duplicate, still completed.
    let (status, body) = complete(&s, &lease_of(&task), json!("done"));
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &url,
        &json!({"task_type": "fourth", "task_id": "order-17-email"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], json!(true));
    let st = status_of(&s, &qp, "order-17-email");
    assert_eq!(st["state"], json!("completed"));
    assert_eq!(st["result"], json!("done"));
    assert_eq!(backlog(&s, NS, queue, A), 0);
    assert!(poll_one(&s, &qp, "w1", 0).is_none());
}

/// Adds that arrive together are written together (one write for the adds waiting on a
/// queue): a task id sent by many at once is still added exactly once, with the payload of the
/// one add that answered 201, and every other add still lands.
#[test]
fn concurrent_adds_of_one_task_id_add_it_once() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-add-concurrent", A);
    let url = s.url(&format!("{qp}/tasks"));
    let n = 16;
    let start = std::sync::Arc::new(std::sync::Barrier::new(2 * n));
    let mut handles = Vec::new();
    for i in 0..2 * n {
        let (url, start) = (url.clone(), start.clone());
        handles.push(thread::spawn(move || {
            // Even threads all add the id "same"; odd threads add an id of their own.
            let body = if i % 2 == 0 {
                json!({"task_id": "same", "task_type": "t", "payload": {"by": i}})
            } else {
                json!({"task_id": format!("own-{i}"), "task_type": "t", "payload": {"by": i}})
            };
            start.wait();
            (i, post(&url, &body))
        }));
    }
    let answers: Vec<(usize, (u16, Value))> = handles
        .into_iter()
        .map(|h| h.join().expect("adder thread"))
        .collect();
    let mut created_same = Vec::new();
    for (i, (status, body)) in &answers {
        if i % 2 == 1 {
            assert_eq!(*status, 201, "own id of {i}: {body}");
            continue;
        }
        match status {
            201 => created_same.push(*i),
            200 => assert_eq!(body["duplicate"], json!(true), "{body}"),
            other => panic!("add of \"same\" by {i} answered {other} {body}"),
        }
    }
    assert_eq!(
        created_same.len(),
        1,
        "one add creates it: {created_same:?}"
    );
    let st = status_of(&s, &qp, "same");
    assert_eq!(st["state"], "pending", "{st}");
    assert_eq!(backlog(&s, NS, "tasks-add-concurrent", A), 1 + n as u64);
    let polled = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 100, "wait_ms": 0}),
    );
    let same: Vec<&Value> = polled.iter().filter(|t| t["task_id"] == "same").collect();
    assert_eq!(same.len(), 1, "{polled:?}");
    assert_eq!(
        same[0]["payload"],
        json!({"by": created_same[0]}),
        "{}",
        same[0]
    );
}

#[test]
fn batch_add_answers_results_in_order() {
    let s = TestServer::start();
    let queue = "tasks-batch-order";
    let qp = q(NS, queue, A);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "b-existing"}));
    let (status, body) = post(
        &s.url(&format!("{qp}/tasks/batch")),
        &json!({"tasks": [
            {"task_type": "t", "task_id": "b-0"},
            {"task_type": "t"},
            {"task_type": "t", "task_id": "b-existing"},
            {"task_type": "t", "task_id": "b-3", "priority": 1},
            {"task_type": "u", "task_id": "b-4", "payload": [1, 2, 3]},
        ]}),
    );
    assert_eq!(status, 201, "{body}");
    let results = body["results"].as_array().expect("results array");
    assert_eq!(results.len(), 5, "{body}");
    assert_subset(&results[0], &json!({"task_id": "b-0", "duplicate": false}));
    let generated = results[1]["task_id"].as_str().expect("generated id");
    assert!(!generated.is_empty());
    assert_eq!(results[1]["duplicate"], json!(false));
    assert_subset(
        &results[2],
        &json!({"task_id": "b-existing", "duplicate": true}),
    );
    assert_subset(&results[3], &json!({"task_id": "b-3", "duplicate": false}));
    assert_subset(&results[4], &json!({"task_id": "b-4", "duplicate": false}));
    assert_eq!(backlog(&s, NS, queue, A), 5);
    assert_eq!(status_of(&s, &qp, generated)["state"], json!("pending"));
    assert_eq!(status_of(&s, &qp, "b-4")["task_type"], json!("u"));
}

#[test]
fn batch_size_limits_are_1_to_1000() {
    let s = TestServer::start();
    let queue = "tasks-batch-limits";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks/batch"));

    let (status, body) = post(&url, &json!({"tasks": []}));
    assert_error(status, &body, 400, "invalid_argument");
    assert_eq!(backlog(&s, NS, queue, A), 0);

    let tasks: Vec<Value> = (0..1001)
        .map(|i| json!({"task_type": "t", "task_id": format!("big-{i}")}))
        .collect();
    let (status, body) = post(&url, &json!({ "tasks": tasks }));
    assert_error(status, &body, 400, "invalid_argument");
    assert_eq!(backlog(&s, NS, queue, A), 0);

    let tasks: Vec<Value> = (0..1000)
        .map(|i| json!({"task_type": "t", "task_id": format!("big-{i}")}))
        .collect();
    let (status, body) = post(&url, &json!({ "tasks": tasks }));
    assert_eq!(status, 201, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(
            r["task_id"],
            json!(format!("big-{i}")),
            "result {i} out of order"
        );
    }
    assert_eq!(backlog(&s, NS, queue, A), 1000);
}

#[test]
fn batch_is_all_or_nothing_and_names_the_bad_index() {
    let s = TestServer::start();
    let queue = "tasks-batch-atomic";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks/batch"));

    // Index 7 has an out-of-range priority.
    let mut tasks: Vec<Value> = (0..10)
        .map(|i| json!({"task_type": "t", "task_id": format!("atomic-{i}")}))
        .collect();
    tasks[7]["priority"] = json!(9);
    let (status, body) = post(&url, &json!({ "tasks": tasks }));
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(msg.contains('7'), "message should name index 7: {msg}");

    // Index 3 has an unknown field.
    let mut tasks: Vec<Value> = (0..5)
        .map(|i| json!({"task_type": "t", "task_id": format!("atomic-{i}")}))
        .collect();
    tasks[3]["colour"] = json!("blue");
    let (status, body) = post(&url, &json!({ "tasks": tasks }));
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(msg.contains('3'), "message should name index 3: {msg}");
    assert!(
        msg.contains("colour"),
        "message should name the field: {msg}"
    );

    // Index 1 has a bad task type name.
    let tasks = json!([
        {"task_type": "t", "task_id": "atomic-0"},
        {"task_type": "bad!type", "task_id": "atomic-x"},
        {"task_type": "t", "task_id": "atomic-2"},
    ]);
    let (status, body) = post(&url, &json!({ "tasks": tasks }));
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(msg.contains('1'), "message should name index 1: {msg}");

    // Nothing of any of those batches was added.
    assert_eq!(backlog(&s, NS, queue, A), 0);
    for id in ["atomic-0", "atomic-2", "atomic-6", "atomic-8"] {
        let (status, body) = get(&s.url(&format!("{qp}/tasks/{id}")));
        assert_error(status, &body, 404, "not_found");
    }
    assert!(poll_one(&s, &qp, "w", 0).is_none());
}

#[test]
fn status_of_unknown_task_is_404() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-status-unknown", A);
    let (status, body) = get(&s.url(&format!("{qp}/tasks/no-such-task")));
    assert_error(status, &body, 404, "not_found");
    // Known in another queue is still unknown here.
    add_task(
        &s,
        &q(NS, "tasks-status-other", A),
        json!({"task_type": "t", "task_id": "elsewhere"}),
    );
    let (status, body) = get(&s.url(&format!("{qp}/tasks/elsewhere")));
    assert_error(status, &body, 404, "not_found");
}

#[test]
fn status_wait_returns_as_soon_as_task_completes() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-status-wait", A);
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    let complete_url = s.url(&format!("/api/v1/leases/{lease}/complete"));
    let completer = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1000));
        post(&complete_url, &json!({"result": {"answer": 42}}))
    });
    let started = Instant::now();
    let (status, body) = get(&s.url(&format!("{qp}/tasks/{id}?wait_ms=30000")));
    let elapsed = started.elapsed();
    let (cstatus, cbody) = completer.join().expect("completer thread");
    assert_eq!(cstatus, 200, "{cbody}");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("completed"), "{body}");
    assert_eq!(body["result"], json!({"answer": 42}));
    assert!(
        elapsed < Duration::from_secs(15),
        "status with wait_ms=30000 should answer when the task completes, took {elapsed:?}"
    );
}

#[test]
fn status_wait_times_out_with_pending_state() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-status-wait-timeout", A);
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let started = Instant::now();
    let (status, body) = get(&s.url(&format!("{qp}/tasks/{id}?wait_ms=1000")));
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_has_keys(&body, STATUS_FIELDS);
    assert_eq!(body["state"], json!("pending"));
    assert!(
        elapsed >= Duration::from_millis(900),
        "wait_ms=1000 answered after only {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");

    // Above the 60000 ms bound is rejected.
    let (status, body) = get(&s.url(&format!("{qp}/tasks/{id}?wait_ms=60001")));
    assert_error(status, &body, 400, "invalid_argument");
}

#[test]
fn cancel_pending_task_is_never_dispatched() {
    let s = TestServer::start();
    let queue = "tasks-cancel-pending";
    let qp = q(NS, queue, A);
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let (status, body) = delete(&s.url(&format!("{qp}/tasks/{id}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_id"], json!(id));
    assert_eq!(body["state"], json!("cancelled"));
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("cancelled"));
    assert_eq!(backlog(&s, NS, queue, A), 0);
    assert!(poll_one(&s, &qp, "w", 0).is_none());
    assert!(
        poll_one(&s, &qp, "w", 1000).is_none(),
        "a cancelled task must never be dispatched"
    );

    let (status, body) = delete(&s.url(&format!("{qp}/tasks/no-such-task")));
    assert_error(status, &body, 404, "not_found");
}

#[test]
fn cancel_running_task_sets_cancel_requested() {
    let s = TestServer::start();
    let qp = q(NS, "tasks-cancel-running", A);
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    let (status, body) = heartbeat(&s, &lease, json!(null));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_requested"], json!(false));

    let (status, body) = delete(&s.url(&format!("{qp}/tasks/{id}")));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task_id"], json!(id));
    assert_eq!(body["state"], json!("running"), "{body}");

    let (status, body) = heartbeat(&s, &lease, json!({"progress": 0.5}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cancel_requested"], json!(true), "{body}");

    // The worker gives up the cancelled task: it ends `cancelled`, not retried, no dead letter.
    let (status, body) = fail(&s, &lease, json!({"error": {"message": "cancelled"}}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], json!("cancelled"), "{body}");
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("cancelled"));
    assert!(poll_one(&s, &qp, "w", 0).is_none());
    assert_eq!(
        stat_u64(
            &stats(&s, NS, "tasks-cancel-running", A),
            "dead_letter_count"
        ),
        0
    );
}

#[test]
fn durations_past_ten_years_are_rejected_and_change_nothing() {
    let s = TestServer::start();
    let queue = "tasks-durations";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks"));
    for body in [
        json!({"task_type": "t", "start_to_close_timeout_ms": u64::MAX}),
        json!({"task_type": "t", "heartbeat_timeout_ms": u64::MAX}),
        json!({"task_type": "t", "delay_ms": 1_000_000_000_000_000u64}),
        json!({"task_type": "t", "schedule_to_start_timeout_ms": u64::MAX}),
        json!({"task_type": "t", "retry": {"initial_interval_ms": u64::MAX}}),
        json!({"task_type": "t", "route_to": {"identity": "w", "fallback_after_ms": u64::MAX}}),
    ] {
        let (status, resp) = post(&url, &body);
        assert_error(status, &resp, 400, "invalid_argument");
    }
    assert_eq!(backlog(&s, NS, queue, A), 0);
    // retry_after_ms is bounded too, and a refused fail leaves the lease as it was.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "d-1"}));
    let task = poll_one(&s, &qp, "w", 0).expect("ready task");
    let lease = lease_of(&task);
    let (status, resp) = fail(
        &s,
        &lease,
        json!({"retry_after_ms": 1_000_000_000_000_000u64}),
    );
    assert_error(status, &resp, 400, "invalid_argument");
    assert_eq!(status_of(&s, &qp, "d-1")["state"], json!("running"));
    let (status, resp) = complete(&s, &lease, json!(1));
    assert_eq!(status, 200, "{resp}");
}

#[test]
fn malformed_json_is_rejected() {
    let s = TestServer::start();
    let queue = "tasks-malformed";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks"));
    let raws: [&[u8]; 7] = [
        br#"{"task_type": "t", "#,
        b"not json at all",
        b"[1, 2, 3]",
        br#"{"task_type": 5}"#,
        br#"{"payload": {}}"#,
        br#"{"task_type": "t", "priority": "high"}"#,
        br#"{"task_type": "t", "delay_ms": -1}"#,
    ];
    for raw in raws {
        let (status, body) = post_raw(&url, "application/json", raw);
        assert_error(status, &body, 400, "invalid_argument");
        assert_eq!(
            backlog(&s, NS, queue, A),
            0,
            "rejected {:?} added a task",
            String::from_utf8_lossy(raw)
        );
    }
    let (status, body) = post_raw(
        &s.url(&format!("{qp}/poll")),
        "application/json",
        br#"{"identity": "w", "#,
    );
    assert_error(status, &body, 400, "invalid_argument");
}

#[test]
fn unknown_fields_are_rejected_naming_the_field() {
    let s = TestServer::start();
    let queue = "tasks-unknown-field";
    let qp = q(NS, queue, A);
    add_task(&s, &qp, json!({"task_type": "t"}));

    let (status, body) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "t", "priorty": 2}),
    );
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(
        msg.contains("priorty"),
        "message should name the field: {msg}"
    );

    let (status, body) = post(
        &s.url(&format!("{qp}/tasks")),
        &json!({"task_type": "t", "retry": {"max_atempts": 3}}),
    );
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(
        msg.contains("max_atempts"),
        "message should name the field: {msg}"
    );

    let (status, body) = post(
        &s.url(&format!("{qp}/poll")),
        &json!({"identity": "w", "wait_ms": 0, "max_taskz": 1}),
    );
    let msg = assert_error(status, &body, 400, "invalid_argument");
    assert!(
        msg.contains("max_taskz"),
        "message should name the field: {msg}"
    );

    assert_eq!(backlog(&s, NS, queue, A), 1, "nothing added, nothing taken");
}

#[test]
fn bad_names_are_rejected() {
    let s = TestServer::start();
    let queue = "tasks-bad-names";
    let qp = q(NS, queue, A);
    let tasks_url = s.url(&format!("{qp}/tasks"));
    let long = "a".repeat(201);
    let max = "a".repeat(200);

    let bad_bodies = vec![
        json!({"task_type": ""}),
        json!({"task_type": long}),
        json!({"task_type": "bad!type"}),
        json!({"task_type": "bad type"}),
        json!({"task_type": "bad/type"}),
        json!({"task_type": "t", "task_id": ""}),
        json!({"task_type": "t", "task_id": long}),
        json!({"task_type": "t", "task_id": "id with space"}),
        json!({"task_type": "t", "task_id": "id!"}),
        json!({"task_type": "t", "fairness_key": ""}),
        json!({"task_type": "t", "fairness_key": "tenant#1"}),
    ];
    for body in bad_bodies {
        let (status, resp) = post(&tasks_url, &body);
        assert_error(status, &resp, 400, "invalid_argument");
        assert_eq!(backlog(&s, NS, queue, A), 0, "rejected {body} added a task");
    }

    // Exactly 200 characters of every allowed class is fine.
    add_task(&s, &qp, json!({"task_type": max, "task_id": "Az09._-:@"}));
    assert_eq!(backlog(&s, NS, queue, A), 1);

    // Bad names in the path: queue, namespace, and queue type.
    let bad_paths = vec![
        q(NS, &long, A),
        q(NS, "bad!queue", A),
        q(NS, "bad%20queue", A),
        q("bad!ns", queue, A),
        q(&long, queue, A),
        q("bad%20ns", queue, A),
        q(NS, queue, "foo"),
    ];
    for path in bad_paths {
        let (status, resp) = post(&s.url(&format!("{path}/tasks")), &json!({"task_type": "t"}));
        assert_error(status, &resp, 400, "invalid_argument");
    }
    let (status, resp) = get(&s.url(&describe_path(NS, "bad!queue")));
    assert_error(status, &resp, 400, "invalid_argument");
    let st = describe(&s, NS, queue);
    assert_eq!(stat_u64(&st["types"]["activity"], "backlog_count"), 1);
    assert_eq!(stat_u64(&st["types"]["workflow"], "backlog_count"), 0);

    // Identity: 1-200 printable characters.
    let poll_url = s.url(&format!("{qp}/poll"));
    for identity in [json!(""), json!("x".repeat(201)), json!("bad\nidentity")] {
        let (status, resp) = post(&poll_url, &json!({"identity": identity, "wait_ms": 0}));
        assert_error(status, &resp, 400, "invalid_argument");
    }
    let (status, resp) = post(&poll_url, &json!({"wait_ms": 0}));
    assert_error(status, &resp, 400, "invalid_argument");
    assert_eq!(backlog(&s, NS, queue, A), 1, "a rejected poll took a task");
    // Spaces are printable: a fine identity.
    let task = poll_one(&s, &qp, "host 3 @ 4711", 0).expect("task given to a valid identity");
    assert_eq!(task["task_id"], json!("Az09._-:@"));
}

#[test]
fn out_of_range_values_are_rejected() {
    let s = TestServer::start();
    let queue = "tasks-out-of-range";
    let qp = q(NS, queue, A);
    let tasks_url = s.url(&format!("{qp}/tasks"));
    let bad_bodies = vec![
        json!({"task_type": "t", "priority": 0}),
        json!({"task_type": "t", "priority": 6}),
        json!({"task_type": "t", "fairness_key": "k", "fairness_weight": 0}),
        json!({"task_type": "t", "fairness_key": "k", "fairness_weight": 2000}),
        json!({"task_type": "t", "start_to_close_timeout_ms": 50}),
        json!({"task_type": "t", "retry": {"max_attempts": -1}}),
    ];
    for body in bad_bodies {
        let (status, resp) = post(&tasks_url, &body);
        assert_error(status, &resp, 400, "invalid_argument");
        assert_eq!(backlog(&s, NS, queue, A), 0, "rejected {body} added a task");
    }

    // The boundaries themselves are accepted.
    for body in [
        json!({"task_type": "t", "priority": 1}),
        json!({"task_type": "t", "priority": 5}),
        json!({"task_type": "t", "fairness_key": "k", "fairness_weight": 0.001}),
        json!({"task_type": "t", "fairness_key": "k", "fairness_weight": 1000}),
        json!({"task_type": "t", "start_to_close_timeout_ms": 100}),
    ] {
        add_task(&s, &qp, body);
    }
    assert_eq!(backlog(&s, NS, queue, A), 5);

    // Poll ranges: a rejected poll must not take any task.
    let poll_url = s.url(&format!("{qp}/poll"));
    for body in [
        json!({"identity": "w", "wait_ms": 300001}),
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 0}),
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 101}),
        json!({"identity": "w", "wait_ms": -1}),
    ] {
        let (status, resp) = post(&poll_url, &body);
        assert_error(status, &resp, 400, "invalid_argument");
        assert_eq!(
            backlog(&s, NS, queue, A),
            5,
            "rejected poll {body} took a task"
        );
    }
    let tasks = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 100}),
    );
    assert_eq!(
        tasks.len(),
        5,
        "max_tasks 100 is allowed and drains all five"
    );
}

#[test]
fn body_over_max_payload_is_413() {
    let s = TestServer::start();
    let queue = "tasks-payload-limit";
    let qp = q(NS, queue, A);
    let limit = 1024 * 1024;

    let (status, body) = raw_request(
        s.base(),
        "POST",
        &format!("{qp}/tasks"),
        task_body_of_size(limit + 1).into_bytes(),
    );
    assert_error(status, &body, 413, "payload_too_large");
    assert_eq!(backlog(&s, NS, queue, A), 0);

    let (status, body) = raw_request(
        s.base(),
        "POST",
        &format!("{qp}/tasks/batch"),
        format!(
            r#"{{"tasks":[{{"task_type":"t","payload":"{}"}}]}}"#,
            "y".repeat(limit + 10)
        )
        .into_bytes(),
    );
    assert_error(status, &body, 413, "payload_too_large");
    assert_eq!(backlog(&s, NS, queue, A), 0);

    // Just under the limit is accepted and stored whole.
    let under = task_body_of_size(limit - 1024);
    let (status, body) = post_raw(
        &s.url(&format!("{qp}/tasks")),
        "application/json",
        under.as_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    let task = poll_one(&s, &qp, "w", 0).expect("the big task");
    let payload = task["payload"].as_str().expect("string payload");
    assert_eq!(
        payload.len(),
        limit - 1024 - r#"{"task_type":"big","payload":""}"#.len()
    );
}

#[test]
fn unknown_route_is_404_with_error_shape() {
    let s = TestServer::start();
    for path in [
        "/api/v1/nothing-here".to_string(),
        "/nothing".to_string(),
        format!("{}/bogus", q(NS, "tasks-unknown-route", A)),
        "/api/v2/namespaces/default/task-queues/x/activity/tasks".to_string(),
    ] {
        let (status, body) = get(&s.url(&path));
        assert_error(status, &body, 404, "not_found");
    }
    let (status, body) = post(
        &s.url(&format!("{}/bogus", q(NS, "tasks-unknown-route", A))),
        &json!({"task_type": "t"}),
    );
    assert_error(status, &body, 404, "not_found");
    assert_eq!(backlog(&s, NS, "tasks-unknown-route", A), 0);
}
