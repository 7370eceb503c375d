//! Fewer requests per task over HTTP: `POST /api/v1/leases/settle` (up to 1,000 settles, each
//! on its own) and `next` on `complete` and `fail` (settle, then poll the same queue, in one
//! request), against a real server.

mod common;

use common::*;
use serde_json::{json, Value};

const A: &str = "activity";

/// Adds `n` tasks `t0…` to `qp` and polls them all: their tasks, in id order.
fn leased(s: &TestServer, qp: &str, n: usize, identity: &str) -> Vec<Value> {
    for i in 0..n {
        add_task(s, qp, json!({"task_type": "t", "task_id": format!("t{i}")}));
    }
    let mut tasks = Vec::new();
    while tasks.len() < n {
        let got = poll_tasks(
            s,
            qp,
            json!({"identity": identity, "max_tasks": 100, "wait_ms": 2000}),
        );
        assert!(!got.is_empty(), "only {} of {n} tasks polled", tasks.len());
        tasks.extend(got);
    }
    tasks.sort_by_key(|t| t["task_id"].as_str().unwrap_or_default().to_string());
    tasks
}

fn settle_many(s: &TestServer, body: Value) -> (u16, Value) {
    post(&s.url("/api/v1/leases/settle"), &body)
}

#[test]
fn each_settle_of_a_batch_stands_alone_and_answers_in_order() {
    let s = TestServer::start();
    let qp = q(NS, "many", A);
    let other = q(NS, "many-other", A);
    let tasks = leased(&s, &qp, 3, "w");
    let elsewhere = leased(&s, &other, 1, "w");
    let (code, done) = complete(&s, &lease_of(&tasks[2]), json!("before"));
    assert_eq!(code, 200, "{done}");
    let (code, body) = settle_many(
        &s,
        json!({"settles": [
            {"lease": lease_of(&tasks[0]), "op": "complete", "result": {"n": 0}},
            {"lease": lease_of(&tasks[1]), "op": "fail", "error": {"message": "boom", "type": "E"},
             "retry_after_ms": 60000},
            {"lease": "not-a-lease", "op": "complete"},
            {"lease": lease_of(&tasks[2]), "op": "fail"},
            {"lease": lease_of(&tasks[0]), "op": "complete", "result": {"n": 0}},
            {"lease": lease_of(&elsewhere[0]), "op": "complete", "result": 9},
        ]}),
    );
    assert_eq!(code, 200, "{body}");
    let r = body["results"].as_array().expect("results");
    assert_eq!(r.len(), 6, "{body}");
    assert_eq!(r[0]["lease"], json!(lease_of(&tasks[0])));
    assert_eq!(r[0]["task_id"], json!("t0"));
    assert_eq!(r[0]["state"], json!("completed"));
    assert_eq!(r[1]["state"], json!("pending"));
    assert!(
        is_rfc3339_utc(r[1]["next_attempt_at"].as_str().unwrap_or("")),
        "{}",
        r[1]
    );
    assert_eq!(r[2]["lease"], json!("not-a-lease"));
    assert_eq!(r[2]["error"]["code"], json!("lease_lost"), "{}", r[2]);
    // t2 was completed before: a fail of its lease is a different settle.
    assert_eq!(r[3]["error"]["code"], json!("lease_lost"), "{}", r[3]);
    // The same complete twice answers the same.
    assert_eq!(r[4]["state"], json!("completed"), "{}", r[4]);
    assert_eq!(r[5]["state"], json!("completed"), "{}", r[5]);

    assert_eq!(status_of(&s, &qp, "t0")["result"], json!({"n": 0}));
    let t1 = status_of(&s, &qp, "t1");
    assert_eq!(t1["state"], json!("pending"));
    assert_eq!(t1["last_error"]["message"], json!("boom"));
    assert_eq!(status_of(&s, &qp, "t2")["result"], json!("before"));
    assert_eq!(status_of(&s, &other, "t0")["result"], json!(9));
    // A settle many is on disk like a single settle: after kill -9 nothing comes back.
    let mut s = s;
    s.kill9();
    s.restart();
    assert_eq!(status_of(&s, &qp, "t0")["state"], json!("completed"));
    assert_eq!(status_of(&s, &other, "t0")["state"], json!("completed"));
    assert!(poll_one(&s, &qp, "after", 200).is_none(), "t1 waits 60 s");
}

#[test]
fn a_malformed_settle_many_is_refused_whole() {
    let s = TestServer::start();
    let qp = q(NS, "malformed", A);
    let tasks = leased(&s, &qp, 1, "w");
    let lease = lease_of(&tasks[0]);
    for (body, names) in [
        (json!({"settles": []}), "1–1000"),
        (json!({"settles": {"lease": lease}}), "settles"),
        (
            json!({"settles": [{"lease": lease, "op": "finish"}]}),
            "finish",
        ),
        (
            json!({"settles": [{"lease": lease, "op": "complete", "surprise": 1}]}),
            "surprise",
        ),
        (
            json!({"settles": [{"lease": lease, "op": "complete"},
                               {"lease": lease, "op": "complete", "error": {"message": "x"}}]}),
            "settles[1]",
        ),
        (
            json!({"settles": [{"lease": lease, "op": "fail", "result": 1}]}),
            "result",
        ),
        (json!({"nothing": []}), "nothing"),
    ] {
        let (code, answer) = settle_many(&s, body.clone());
        let message = assert_error(code, &answer, 400, "invalid_argument");
        assert!(message.contains(names), "{body}: {message}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"lease": lease, "op": "complete"}))
        .collect();
    let (code, answer) = settle_many(&s, json!({ "settles": many }));
    assert_error(code, &answer, 400, "invalid_argument");
    // Nothing was settled by any of them.
    assert_eq!(status_of(&s, &qp, "t0")["state"], json!("running"));
    assert_eq!(complete(&s, &lease, json!(1)).0, 200);
}

#[test]
fn complete_with_next_settles_then_polls_the_same_queue() {
    let s = TestServer::start();
    let qp = q(NS, "next", A);
    let tasks = leased(&s, &qp, 1, "worker-7");
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "second"}));
    let url = s.url(&format!("/api/v1/leases/{}/complete", lease_of(&tasks[0])));
    let (code, body) = post(
        &url,
        &json!({"result": 1, "next": {"max_tasks": 5, "wait_ms": 1000}}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["task_id"], json!("t0"));
    assert_eq!(body["state"], json!("completed"));
    let next = body["next"]["tasks"].as_array().expect("next tasks");
    assert_eq!(next.len(), 1, "{body}");
    assert_eq!(next[0]["task_id"], json!("second"));
    assert_eq!(status_of(&s, &qp, "t0")["state"], json!("completed"));
    assert_eq!(status_of(&s, &qp, "second")["state"], json!("running"));

    // `fail` with `next` on an empty queue waits like a long poll, as the identity that
    // polled the lease (describe shows it parked).
    let lease = lease_of(&next[0]);
    let url = s.url(&format!("/api/v1/leases/{lease}/fail"));
    let waiting = std::thread::spawn(move || {
        post(
            &url,
            &json!({"error": {"message": "x"}, "retry_after_ms": 600000,
                    "next": {"wait_ms": 3000}}),
        )
    });
    wait_for_poller(&s, NS, "next", A, "worker-7");
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "third"}));
    let (code, body) = waiting.join().expect("the fail");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["state"], json!("pending"));
    assert_eq!(
        body["next"]["tasks"][0]["task_id"],
        json!("third"),
        "{body}"
    );

    // Nothing comes: an empty list once wait_ms passes; a named identity is used.
    let lease = lease_of(&body["next"]["tasks"][0]);
    let url = s.url(&format!("/api/v1/leases/{lease}/complete"));
    let (code, body) = post(
        &url,
        &json!({"next": {"wait_ms": 0, "identity": "other", "task_types": ["t"]}}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["next"], json!({"tasks": []}));
}

#[test]
fn a_bad_next_settles_nothing_and_a_lost_lease_polls_nothing() {
    let s = TestServer::start();
    let qp = q(NS, "bad-next", A);
    let tasks = leased(&s, &qp, 1, "w");
    let lease = lease_of(&tasks[0]);
    let url = s.url(&format!("/api/v1/leases/{lease}/complete"));
    for next in [
        json!({"max_tasks": 0}),
        json!({"max_tasks": 101}),
        json!({"wait_ms": -1}),
        json!({"identity": ""}),
        json!({"max_tasks_per_second": 1}),
    ] {
        let (code, body) = post(&url, &json!({"result": 1, "next": next}));
        assert_error(code, &body, 400, "invalid_argument");
    }
    assert_eq!(status_of(&s, &qp, "t0")["state"], json!("running"));
    assert_eq!(complete(&s, &lease, json!(1)).0, 200);
    // A settle that fails answers its error and polls nothing: the task added stays ready.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "waiting"}));
    let (code, body) = post(
        &s.url(&format!("/api/v1/leases/{lease}/fail")),
        &json!({"next": {"wait_ms": 0}}),
    );
    assert_error(code, &body, 409, "lease_lost");
    assert_eq!(status_of(&s, &qp, "waiting")["state"], json!("pending"));
}
