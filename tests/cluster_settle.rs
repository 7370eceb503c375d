//! Settle many in a cluster: one request through any node settles leases of queues owned by
//! every node (the items of each other owner go to it in one request), and `next` on a
//! settle polls the lease's queue on its owner.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL's programs); `.ci/postgres` runs them.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

const NS: &str = "cluster-settle";
const A: &str = "activity";

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn one_settle_many_through_any_node_settles_every_owners_leases() {
    let (_url, nodes) = common::cluster::three_nodes();
    let mut settles = Vec::new();
    let mut queues = Vec::new();
    for i in 0..9 {
        let qp = q(NS, &format!("q{i}"), A);
        for k in 0..2 {
            add_task(
                &nodes[i % 3],
                &qp,
                json!({"task_type": "t", "task_id": format!("t{k}")}),
            );
        }
        let tasks = poll_tasks(
            &nodes[(i + 1) % 3],
            &qp,
            json!({"identity": "w", "max_tasks": 2, "wait_ms": 5000}),
        );
        assert_eq!(tasks.len(), 2, "{qp}");
        settles.push(json!({"lease": lease_of(&tasks[0]), "op": "complete", "result": i}));
        settles.push(json!({"lease": lease_of(&tasks[1]), "op": "fail", "non_retryable": true}));
        queues.push(qp);
    }
    settles.push(json!({"lease": "garbage", "op": "complete"}));
    let (code, body) = post(
        &nodes[2].url("/api/v1/leases/settle"),
        &json!({ "settles": settles }),
    );
    assert_eq!(code, 200, "{body}");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 19);
    for (i, r) in results[..18].iter().enumerate() {
        let want = if i % 2 == 0 { "completed" } else { "failed" };
        assert_eq!(r["state"], json!(want), "item {i}: {r}");
        assert_eq!(r["lease"], settles[i]["lease"], "item {i}");
    }
    assert_eq!(results[18]["error"]["code"], json!("lease_lost"));
    let states: BTreeSet<String> = queues
        .iter()
        .flat_map(|qp| {
            ["t0", "t1"].map(|id| {
                let st: Value = status_of(&nodes[0], qp, id);
                st["state"].as_str().unwrap_or_default().to_string()
            })
        })
        .collect();
    assert_eq!(
        states,
        BTreeSet::from(["completed".into(), "failed".into()])
    );
    let forwarded = common::cluster::sum_over(
        &nodes,
        "tasq_cluster_forwarded_requests_total",
        &[("route", "/api/v1/leases/settle")],
    );
    assert!(forwarded >= 1.0, "no settle went to another owner");

    // `next` through a node that does not own the queue: the settle and its poll happen on
    // the owner.
    let qp = &queues[0];
    add_task(&nodes[0], qp, json!({"task_type": "t", "task_id": "a"}));
    add_task(&nodes[0], qp, json!({"task_type": "t", "task_id": "b"}));
    let first = poll_one(&nodes[1], qp, "w", 5000).expect("a task");
    let (code, body) = post(
        &nodes[2].url(&format!("/api/v1/leases/{}/complete", lease_of(&first))),
        &json!({"next": {"wait_ms": 2000}}),
    );
    assert_eq!(code, 200, "{body}");
    let next = body["next"]["tasks"][0]["task_id"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ["a", "b"].contains(&next) && next != first["task_id"],
        "{body}"
    );
}
