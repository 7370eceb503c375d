//! The examples run as tests: `examples/embedded.rs` in-process (no port), and
//! `examples/worker.rs` against a real server started like every black-box test.

mod common;

#[allow(dead_code)]
#[path = "../examples/embedded.rs"]
mod embedded;

#[allow(dead_code)]
#[path = "../examples/worker.rs"]
mod worker;

use common::*;
use serde_json::json;
use tasq::{Config, Tasq};

#[test]
fn embedded_example_squares_every_number() {
    actix_rt::System::new().block_on(async {
        let tasq = Tasq::builder(Config::default())
            .temporary()
            .start()
            .await
            .expect("start");
        let results = embedded::run(&tasq, 12).await.expect("example runs");
        assert_eq!(results.len(), 12);
        for (i, r) in results.iter().enumerate() {
            let n = i as i64 + 1;
            assert_eq!(r["square"], json!(n * n), "{r}");
            // Every fifth task fails its first attempt and is retried.
            let want_attempt = if n % 5 == 0 { 2 } else { 1 };
            assert_eq!(r["attempt"], json!(want_attempt), "{r}");
        }
        tasq.shutdown().await.expect("shutdown");
    });
}

#[test]
fn worker_example_settles_tasks_of_a_remote_server() {
    let s = TestServer::start();
    let qp = q(NS, "example-worker", "activity");
    add_task(
        &s,
        &qp,
        json!({"task_type": "echo", "task_id": "e-1", "payload": {"hi": 1}}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "sum", "task_id": "s-1", "payload": [1, 2, 3.5]}),
    );
    add_task(
        &s,
        &qp,
        json!({"task_type": "sum", "task_id": "s-2", "payload": "nope"}),
    );
    let settled = worker::run(s.base(), NS, "example-worker", Some(3)).expect("worker runs");
    assert_eq!(settled, 3);
    let e = status_of(&s, &qp, "e-1");
    assert_eq!(e["state"], json!("completed"), "{e}");
    assert_eq!(e["result"], json!({"hi": 1}));
    let sum = status_of(&s, &qp, "s-1");
    assert_eq!(sum["result"], json!(6.5), "{sum}");
    let bad = status_of(&s, &qp, "s-2");
    assert_eq!(bad["state"], json!("failed"), "{bad}");
    assert_eq!(bad["last_error"]["type"], json!("BadPayload"), "{bad}");
}
