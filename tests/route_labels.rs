//! The `route` label of the HTTP metrics (`tasq_http_requests_total`): the pattern of the
//! route that answered, for every kind of route (static, under the queue prefix, under the
//! lease prefix, other dynamic paths), and `unmatched` for a path no route serves, including one
//! under a route prefix.

mod common;

use common::*;
use serde_json::json;

/// The `tasq_http_requests_total` value for `route`, `method` and `status`.
fn requests(s: &TestServer, route: &str, method: &str, status: &str) -> f64 {
    let (code, _, text) = get_text(&s.url("/metrics"));
    assert_eq!(code, 200);
    metric_sum(
        &text,
        "tasq_http_requests_total",
        &[("route", route), ("method", method), ("status", status)],
    )
}

#[test]
fn each_request_is_counted_under_the_pattern_of_its_route() {
    let s = TestServer::start();
    let qpath = q(NS, "route-labels", "activity");
    let queue_prefix = "/api/v1/namespaces/{namespace}/task-queues/{queue}/{queue_type}";
    add_task(&s, &qpath, json!({"task_type": "t", "task_id": "a"}));
    add_task(&s, &qpath, json!({"task_type": "t", "task_id": "b"}));
    let t = poll_one(&s, &qpath, "w", 0).expect("task a");
    assert_eq!(complete(&s, &lease_of(&t), json!(1)).0, 200);
    let t = poll_one(&s, &qpath, "w", 0).expect("task b");
    let (code, body) = post(
        &s.url("/api/v1/leases/settle"),
        &json!({"settles": [{"lease": lease_of(&t), "op": "complete", "result": 2}]}),
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(&s.url(&format!("{qpath}/tasks/a"))).0, 200);
    assert_eq!(get(&s.url(&describe_path(NS, "route-labels"))).0, 200);
    assert_eq!(get(&s.url(&format!("{qpath}/no-such-thing"))).0, 404);
    assert_eq!(get(&s.url("/api/v1/no-such-thing")).0, 404);

    let expected = [
        (format!("{queue_prefix}/tasks"), "POST", "201", 2.0),
        (format!("{queue_prefix}/poll"), "POST", "200", 2.0),
        (
            format!("{queue_prefix}/tasks/{{task_id}}"),
            "GET",
            "200",
            1.0,
        ),
        ("/api/v1/leases/{lease}/complete".into(), "POST", "200", 1.0),
        ("/api/v1/leases/settle".into(), "POST", "200", 1.0),
        (
            "/api/v1/namespaces/{namespace}/task-queues/{queue}".into(),
            "GET",
            "200",
            1.0,
        ),
        ("unmatched".into(), "GET", "404", 2.0),
    ];
    for (route, method, status, count) in expected {
        assert_eq!(
            requests(&s, &route, method, status),
            count,
            "{method} {route} answered {status}"
        );
    }
}
