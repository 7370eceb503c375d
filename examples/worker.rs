//! A worker for a remote tasq server, over HTTP: long-polls a queue, heartbeats while it
//! works, and completes or fails each task. Each settle carries `next`, the poll for the
//! next task, so once it is working the loop is one request per task (plus the heartbeat).
//!
//! ```sh
//! tasq serve &                                            # or any reachable server
//! tasq task add emails echo '{"hello": "world"}'
//! tasq task add emails sum '[1, 2, 3]'
//! TASQ_SERVER=http://127.0.0.1:7280 cargo run --example worker -- emails   # TASQ_API_KEY with auth on
//! ```
//!
//! Task types: `echo` answers its payload, `sum` adds up an array of numbers (anything else
//! fails non-retryably: a retry cannot fix the payload). Any other type is left to other
//! workers, since the poll declares `task_types`.

use std::time::Duration;

use serde_json::{json, Value};
use tasq::cli::client::{lease_path, queue_path, Client, DEFAULT_SERVER};
use tasq::{QueueKey, QueueType};

/// Works one task: the result, or an error message for a non-retryable failure.
fn handle(task_type: &str, payload: &Value) -> Result<Value, String> {
    match task_type {
        "echo" => Ok(payload.clone()),
        "sum" => payload
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).sum::<Option<f64>>())
            .map(|s| json!(s))
            .ok_or_else(|| format!("sum wants an array of numbers, got {payload}")),
        other => Err(format!("no handler for task type {other:?}")),
    }
}

/// Polls `queue` at `server` and works tasks until `max_tasks` were settled (forever when
/// `None`); answers how many were settled.
pub fn run(
    server: &str,
    namespace: &str,
    queue: &str,
    max_tasks: Option<usize>,
) -> Result<usize, tasq::Error> {
    // With auth on, the key the command line uses too.
    let client = Client::new(server).with_api_key(std::env::var("TASQ_API_KEY").ok());
    let key = QueueKey::new(namespace, queue, QueueType::Activity)?;
    let identity = format!("example-worker@{}", std::process::id());
    let wait = Duration::from_secs(10);
    let poll = json!({
        "max_tasks": 1,
        "wait_ms": wait.as_millis() as u64,
        "task_types": ["echo", "sum"],
    });
    let mut held: Vec<Value> = Vec::new();
    let mut settled = 0;
    while max_tasks.is_none_or(|max| settled < max) {
        if held.is_empty() {
            let mut body = poll.clone();
            body["identity"] = json!(identity);
            let answer = client.post(&format!("{}/poll", queue_path(&key)), &body, wait)?;
            held = answer["tasks"].as_array().cloned().unwrap_or_default();
            continue;
        }
        let task = held.remove(0);
        let lease = task["lease"].as_str().unwrap_or_default();
        let task_type = task["task_type"].as_str().unwrap_or_default();
        // Real work would heartbeat now and then to keep its lease.
        client.post(
            &lease_path(lease, "heartbeat")?,
            &json!({"details": {"stage": "working"}}),
            Duration::ZERO,
        )?;
        let (op, mut body) = match handle(task_type, &task["payload"]) {
            Ok(result) => ("complete", json!({ "result": result })),
            Err(message) => (
                "fail",
                json!({"error": {"message": message, "type": "BadPayload"}, "non_retryable": true}),
            ),
        };
        settled += 1;
        // The settle polls for the next task once it is on disk (as the lease's identity),
        // unless this was the last task wanted.
        let more = max_tasks.is_none_or(|max| settled < max);
        if more && held.is_empty() {
            body["next"] = poll.clone();
        }
        let outcome = client.post(&lease_path(lease, op)?, &body, wait)?;
        println!(
            "{} {}: {}",
            task["task_id"].as_str().unwrap_or("?"),
            op,
            outcome["state"]
        );
        held.extend(
            outcome["next"]["tasks"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    Ok(settled)
}

fn main() {
    let Some(queue) = std::env::args().nth(1) else {
        eprintln!("usage: worker QUEUE   (server from TASQ_SERVER, default {DEFAULT_SERVER})");
        std::process::exit(2);
    };
    let server = std::env::var("TASQ_SERVER").unwrap_or_else(|_| DEFAULT_SERVER.into());
    let namespace = std::env::var("TASQ_NAMESPACE").unwrap_or_else(|_| "default".into());
    if let Err(e) = run(&server, &namespace, &queue, None) {
        eprintln!("worker: {}: {e}", e.code());
        std::process::exit(1);
    }
}
