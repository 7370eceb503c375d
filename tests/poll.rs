//! Long-poll capability: immediate and parked polls, sync match, timeouts, `max_tasks`,
//! priority and age ordering, delays, `task_types` filters, arrival order of waiters,
//! disconnected pollers, and concurrent first use of a queue.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const A: &str = "activity";

const TASK_FIELDS: &[&str] = &[
    "task_id",
    "task_type",
    "payload",
    "headers",
    "attempt",
    "priority",
    "fairness_key",
    "lease",
    "added_at",
    "dispatched_at",
    "lease_expires_at",
    "start_to_close_timeout_ms",
    "heartbeat_timeout_ms",
];

fn tasks_of(resp: &Value) -> Vec<Value> {
    resp["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("poll answer lacks tasks: {resp}"))
        .clone()
}

/// Polls `qpath` (`max_tasks` at a time, no waiting) until it is empty; the tasks given, at
/// most `bound` of them.
fn drain_ready(s: &TestServer, qpath: &str, max_tasks: u32, bound: usize) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let tasks = poll_tasks(
            s,
            qpath,
            json!({"identity": "w", "wait_ms": 0, "max_tasks": max_tasks}),
        );
        if tasks.is_empty() {
            return got;
        }
        got.extend(tasks);
        assert!(
            got.len() <= bound,
            "more than {bound} tasks drained: {got:?}"
        );
    }
}

#[test]
fn poll_with_wait_zero_on_empty_queue_answers_at_once() {
    let s = TestServer::start();
    let qp = q(NS, "poll-empty-now", A);
    let started = Instant::now();
    let (status, body) = post(
        &s.url(&format!("{qp}/poll")),
        &json!({"identity": "w", "wait_ms": 0}),
    );
    assert_eq!(status, 200, "{body}");
    assert_subset(&body, &json!({"tasks": []}));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "wait_ms 0 took {:?}",
        started.elapsed()
    );
}

#[test]
fn parked_poll_gets_task_added_later_by_sync_match() {
    let s = TestServer::start();
    let queue = "poll-sync-match";
    let qp = q(NS, queue, A);
    let sync_labels = labels_with(NS, queue, A, &[("match", "sync")]);
    let before = metric_sum(
        &metrics_text(&s),
        "tasq_tasks_dispatched_total",
        &sync_labels,
    );

    let poller = spawn_poll(&s, &qp, json!({"identity": "parked-1", "wait_ms": 30000}));
    wait_for_poller(&s, NS, queue, A, "parked-1");
    let added = Instant::now();
    let id = add_task(
        &s,
        &qp,
        json!({
            "task_type": "send-email",
            "payload": {"to": "a@example.com"},
            "priority": 2,
            "fairness_key": "tenant-a",
            "headers": {"trace-id": "abc"},
            "start_to_close_timeout_ms": 30000,
            "heartbeat_timeout_ms": 5000,
        }),
    );
    let (status, body, _) = poller.join().expect("poller thread");
    assert_eq!(status, 200, "{body}");
    assert!(
        added.elapsed() < Duration::from_secs(10),
        "parked poll answered {:?} after the add",
        added.elapsed()
    );
    let tasks = tasks_of(&body);
    assert_eq!(tasks.len(), 1, "{body}");
    let t = &tasks[0];
    assert_has_keys(t, TASK_FIELDS);
    assert_eq!(t["task_id"], json!(id));
    assert_eq!(t["task_type"], json!("send-email"));
    assert_eq!(t["payload"], json!({"to": "a@example.com"}));
    assert_eq!(t["headers"], json!({"trace-id": "abc"}));
    assert_eq!(t["attempt"], json!(1));
    assert_eq!(t["priority"], json!(2));
    assert_eq!(t["fairness_key"], json!("tenant-a"));
    assert_eq!(t["start_to_close_timeout_ms"], json!(30000));
    assert_eq!(t["heartbeat_timeout_ms"], json!(5000));
    assert_instant(t, "added_at");
    assert_instant(t, "dispatched_at");
    assert_instant(t, "lease_expires_at");
    let lease = lease_of(t);
    assert!(
        lease
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.~=".contains(c)),
        "lease must be URL-safe: {lease:?}"
    );
    assert_eq!(status_of(&s, &qp, &id)["state"], json!("running"));

    let ok = wait_until(EVENTUALLY, || {
        metric_sum(
            &metrics_text(&s),
            "tasq_tasks_dispatched_total",
            &sync_labels,
        ) >= before + 1.0
    });
    assert!(
        ok,
        "tasq_tasks_dispatched_total{{match=\"sync\"}} did not increase:\n{}",
        metrics_text(&s)
    );
}

#[test]
fn long_poll_times_out_with_empty_list() {
    let s = TestServer::start();
    let qp = q(NS, "poll-timeout", A);
    let started = Instant::now();
    let (status, body) = post(
        &s.url(&format!("{qp}/poll")),
        &json!({"identity": "w", "wait_ms": 1000}),
    );
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert_subset(&body, &json!({"tasks": []}));
    assert!(
        elapsed >= Duration::from_millis(900),
        "wait_ms 1000 answered after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}

#[test]
fn max_tasks_returns_up_to_n_ready_tasks() {
    let s = TestServer::start();
    let queue = "poll-max-tasks";
    let qp = q(NS, queue, A);
    let mut added = BTreeSet::new();
    for i in 0..5 {
        added.insert(add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": format!("m-{i}")}),
        ));
    }
    let first = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 3}),
    );
    assert_eq!(first.len(), 3, "5 ready, max_tasks 3");
    let second = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 10}),
    );
    assert_eq!(second.len(), 2, "2 left, max_tasks 10");
    let got: BTreeSet<String> = first
        .iter()
        .chain(second.iter())
        .map(|t| t["task_id"].as_str().expect("task_id").to_string())
        .collect();
    assert_eq!(got, added, "each task given exactly once");
    let leases: BTreeSet<String> = first.iter().chain(second.iter()).map(lease_of).collect();
    assert_eq!(leases.len(), 5, "every task has its own lease");
    assert!(poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "wait_ms": 0, "max_tasks": 10})
    )
    .is_empty());
    assert_eq!(stat_u64(&stats(&s, NS, queue, A), "in_flight_count"), 5);
}

#[test]
fn priority_first_then_oldest_first() {
    let s = TestServer::start();
    let qp = q(NS, "poll-priority", A);
    for (id, priority) in [
        ("e1", 5),
        ("c1", 3),
        ("a1", 1),
        ("c2", 3),
        ("a2", 1),
        ("e2", 5),
        ("d1", 3),
    ] {
        add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": id, "priority": priority}),
        );
    }
    let mut order = Vec::new();
    while let Some(t) = poll_one(&s, &qp, "w", 0) {
        order.push(t["task_id"].as_str().expect("task_id").to_string());
        assert!(order.len() <= 7, "more tasks than added: {order:?}");
    }
    assert_eq!(order, vec!["a1", "a2", "c1", "c2", "d1", "e1", "e2"]);
}

#[test]
fn delayed_task_is_not_given_before_its_delay() {
    let s = TestServer::start();
    let queue = "poll-delay";
    let qp = q(NS, queue, A);
    let delay = Duration::from_millis(1500);
    let before_add = Instant::now();
    let id = add_task(&s, &qp, json!({"task_type": "t", "delay_ms": 1500}));

    let early = poll_one(&s, &qp, "w", 0);
    if early.is_some() {
        assert!(
            before_add.elapsed() >= delay,
            "a task with delay_ms 1500 was given after {:?}",
            before_add.elapsed()
        );
    }
    let st = stats(&s, NS, queue, A);
    if before_add.elapsed() < delay {
        assert_eq!(stat_u64(&st, "delayed_count"), 1, "{st}");
        assert_eq!(stat_u64(&st, "backlog_count"), 0, "{st}");
        assert_eq!(status_of(&s, &qp, &id)["state"], json!("pending"));
    }

    let task = match early {
        Some(t) => t,
        None => poll_one(&s, &qp, "w", 20000).expect("delayed task given by a long poll"),
    };
    assert_eq!(task["task_id"], json!(id));
    assert!(
        before_add.elapsed() >= delay,
        "given after {:?}, before its delay",
        before_add.elapsed()
    );
    assert!(before_add.elapsed() < Duration::from_secs(20));
}

#[test]
fn task_types_filter_what_a_poller_is_given() {
    let s = TestServer::start();
    let queue = "poll-task-types";
    let qp = q(NS, queue, A);

    let a_poller = spawn_poll(
        &s,
        &qp,
        json!({"identity": "only-a", "wait_ms": 20000, "task_types": ["a"]}),
    );
    wait_for_poller(&s, NS, queue, A, "only-a");
    let b_id = add_task(&s, &qp, json!({"task_type": "b"}));
    let a_id = add_task(&s, &qp, json!({"task_type": "a"}));
    let (status, body, _) = a_poller.join().expect("poller thread");
    assert_eq!(status, 200, "{body}");
    let tasks = tasks_of(&body);
    assert_eq!(tasks.len(), 1, "{body}");
    assert_eq!(
        tasks[0]["task_id"],
        json!(a_id),
        "the 'a' poller must only get 'a' tasks"
    );
    assert_eq!(tasks[0]["task_type"], json!("a"));

    // A filtered poller never gets the 'b' task, not even with nothing else around.
    let tasks = poll_tasks(
        &s,
        &qp,
        json!({"identity": "only-a", "wait_ms": 1000, "task_types": ["a"], "max_tasks": 10}),
    );
    assert!(tasks.is_empty(), "'a' poller got {tasks:?}");
    assert_eq!(status_of(&s, &qp, &b_id)["state"], json!("pending"));

    // A poller declaring no types gets any type.
    let any = poll_one(&s, &qp, "any", 0).expect("unfiltered poller gets the 'b' task");
    assert_eq!(any["task_id"], json!(b_id));
    assert_eq!(any["task_type"], json!("b"));
}

#[test]
fn waiting_pollers_are_served_in_arrival_order() {
    let s = TestServer::start();
    let queue = "poll-arrival-order";
    let qp = q(NS, queue, A);
    let first = spawn_poll(&s, &qp, json!({"identity": "first", "wait_ms": 30000}));
    wait_for_poller(&s, NS, queue, A, "first");
    let second = spawn_poll(&s, &qp, json!({"identity": "second", "wait_ms": 30000}));
    wait_for_poller(&s, NS, queue, A, "second");

    let t1 = add_task(&s, &qp, json!({"task_type": "t", "task_id": "one"}));
    let (status, body, _) = first.join().expect("first poller");
    assert_eq!(status, 200, "{body}");
    let tasks = tasks_of(&body);
    assert_eq!(tasks.len(), 1, "first poller: {body}");
    assert_eq!(
        tasks[0]["task_id"],
        json!(t1),
        "the earliest waiter gets the first task"
    );

    let t2 = add_task(&s, &qp, json!({"task_type": "t", "task_id": "two"}));
    let (status, body, _) = second.join().expect("second poller");
    assert_eq!(status, 200, "{body}");
    let tasks = tasks_of(&body);
    assert_eq!(tasks.len(), 1, "second poller: {body}");
    assert_eq!(tasks[0]["task_id"], json!(t2));
}

#[test]
fn poller_that_disconnected_is_never_given_a_task() {
    let s = TestServer::start();
    let queue = "poll-disconnect";
    let qp = q(NS, queue, A);

    // A raw poll that we abandon before any task exists.
    let hostport = s.base().trim_start_matches("http://").to_string();
    let mut ghost = TcpStream::connect(&hostport).expect("connect");
    let body = json!({"identity": "ghost", "wait_ms": 60000}).to_string();
    let request = format!(
        "POST {qp}/poll HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    ghost.write_all(request.as_bytes()).expect("send raw poll");
    ghost.flush().expect("flush");
    wait_for_poller(&s, NS, queue, A, "ghost");
    let _ = ghost.shutdown(std::net::Shutdown::Both);
    drop(ghost);

    let live = spawn_poll(&s, &qp, json!({"identity": "live", "wait_ms": 15000}));
    wait_for_poller(&s, NS, queue, A, "live");
    let added = Instant::now();
    let id = add_task(&s, &qp, json!({"task_type": "t"}));
    let (status, body, _) = live.join().expect("live poller");
    let waited = added.elapsed();
    assert_eq!(status, 200, "{body}");
    let tasks = tasks_of(&body);
    assert_eq!(
        tasks.len(),
        1,
        "the live poller must get the task, not the disconnected one: {body}"
    );
    assert_eq!(tasks[0]["task_id"], json!(id));
    assert_eq!(
        tasks[0]["attempt"],
        json!(1),
        "no attempt may be lost to the ghost"
    );
    assert!(
        waited < Duration::from_secs(10),
        "task reached the live poller only after {waited:?}"
    );
}

#[test]
fn concurrent_first_use_of_a_queue_loses_nothing() {
    let s = TestServer::start();
    let queue = "poll-concurrent-first-use";
    let qp = q(NS, queue, A);
    let url = s.url(&format!("{qp}/tasks"));
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                post(
                    &url,
                    &json!({"task_type": "t", "task_id": format!("c-{i}")}),
                )
            })
        })
        .collect();
    for h in handles {
        let (status, body) = h.join().expect("adder thread");
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["duplicate"], json!(false));
    }
    assert_eq!(backlog(&s, NS, queue, A), 20);

    let got: Vec<String> = drain_ready(&s, &qp, 7, 20)
        .iter()
        .map(|t| t["task_id"].as_str().expect("id").to_string())
        .collect();
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("c-{i}")).collect();
    assert_eq!(got.len(), 20, "drained {got:?}");
    assert_eq!(distinct, expected);
}

#[test]
fn polls_arriving_together_each_get_their_own_tasks() {
    // Polls that reach the queue together are planned into one write: none may be given a
    // task another was given, and between them they take every ready task, each of its type.
    let s = TestServer::start();
    let queue = "poll-together";
    let qp = q(NS, queue, A);
    for i in 0..30 {
        let ty = if i % 3 == 0 { "b" } else { "a" };
        add_task(
            &s,
            &qp,
            json!({"task_type": ty, "task_id": format!("t-{i}")}),
        );
    }
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let url = s.url(&format!("{qp}/poll"));
            let barrier = Arc::clone(&barrier);
            // Half the pollers take up to two tasks of type "a", half one task of any type.
            let body = if i % 2 == 0 {
                json!({"identity": format!("w{i}"), "wait_ms": 0, "max_tasks": 2, "task_types": ["a"]})
            } else {
                json!({"identity": format!("w{i}"), "wait_ms": 0, "max_tasks": 1})
            };
            thread::spawn(move || {
                barrier.wait();
                post(&url, &body)
            })
        })
        .collect();
    let mut given = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (status, body) = h.join().expect("poller thread");
        assert_eq!(status, 200, "{body}");
        for t in tasks_of(&body) {
            if i % 2 == 0 {
                assert_eq!(t["task_type"], json!("a"), "poller {i} was given {t}");
            }
            given.push(t);
        }
    }
    // Whatever the pollers left is still ready.
    given.extend(drain_ready(&s, &qp, 10, 30));
    // Every lease handed out was written (each completes), and no task was given twice.
    let mut got = Vec::new();
    for t in &given {
        let (status, body) = complete(&s, t["lease"].as_str().expect("lease"), json!(null));
        assert_eq!(status, 200, "completing {t}: {body}");
        got.push(t["task_id"].as_str().expect("id").to_string());
    }
    let distinct: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), 30, "given {got:?}");
    assert_eq!(distinct, (0..30).map(|i| format!("t-{i}")).collect());
}

/// Reads one HTTP/1.1 response with a Content-Length body from `stream`.
fn read_response(stream: &mut std::io::BufReader<TcpStream>) -> (u16, Value) {
    use std::io::Read;
    let (status_line, length) = read_http_head(stream);
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    (status, value)
}

/// One keep-alive connection through what the server does to hold less memory per waiting
/// request (vendor/actix-http): two pipelined requests in one write, one of them with many
/// headers; then a poll that parks (its buffers released while it waits) and is answered;
/// then one more request on the same connection.
#[test]
fn a_keep_alive_connection_serves_pipelined_requests_around_a_parked_poll() {
    let s = TestServer::start();
    let qp = q(NS, "poll-keepalive", A);
    let authority = s.base().trim_start_matches("http://").to_string();
    let tcp = TcpStream::connect(&authority).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let mut writer = tcp.try_clone().expect("clone");
    let mut reader = std::io::BufReader::new(tcp);
    let add_body = json!({"task_id": "ka-1", "task_type": "t"}).to_string();
    let many_headers: String = (0..40)
        .map(|i| format!("X-Extra-{i}: value-{i}\r\n"))
        .collect();
    let pipelined = format!(
        "POST {qp}/tasks HTTP/1.1\r\nHost: {authority}\r\n{many_headers}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{add_body}\
         GET /healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n",
        add_body.len()
    );
    writer.write_all(pipelined.as_bytes()).expect("write");
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["task_id"], "ka-1");
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, 200, "healthz after the pipelined add");

    // Take the task, so the next poll on this connection parks.
    let task = poll_one(&s, &qp, "other", 0).expect("the added task");
    assert_eq!(task["task_id"], "ka-1");
    let poll_body = json!({"identity": "ka", "wait_ms": 20000}).to_string();
    write!(
        writer,
        "POST {qp}/poll HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{poll_body}",
        poll_body.len()
    )
    .expect("write poll");
    let parked = wait_until(Duration::from_secs(10), || {
        poller_identities(&s, NS, "poll-keepalive", A).contains(&"ka".to_string())
    });
    assert!(parked, "the poll did not park");
    add_task(&s, &qp, json!({"task_id": "ka-2", "task_type": "t"}));
    let (status, body) = read_response(&mut reader);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tasks"][0]["task_id"], "ka-2", "{body}");

    write!(writer, "GET /healthz HTTP/1.1\r\nHost: {authority}\r\n\r\n").expect("write");
    let (status, _) = read_response(&mut reader);
    assert_eq!(status, 200, "healthz after the parked poll");
}
