//! Producer and workers in one process, through the embedding API: no HTTP, no port.
//!
//! ```sh
//! cargo run --example embedded            # a temporary store, deleted at exit
//! cargo run --example embedded -- ./data  # a store that persists in ./data
//! ```
//!
//! Two workers long-poll the queue `squares`; the producer adds a batch of tasks and waits for
//! each result. Every fifth task fails its first attempt and is retried, as a flaky job would.

use std::time::Duration;

use serde_json::{json, Value};
use tasq::{Config, Failure, PollSpec, QueueKey, QueueType, TaskSpec, Tasq};

/// The queue this example uses.
pub const QUEUE: &str = "squares";

/// One worker: polls, heartbeats, computes, settles; forever (the caller stops it).
async fn work(tasq: Tasq, queue: QueueKey, identity: String) -> Result<(), tasq::Error> {
    loop {
        let poll = PollSpec::new(identity.clone())
            .max_tasks(5)
            .wait(Duration::from_secs(5))
            .task_types(["square"]);
        for task in tasq.poll(&queue, poll).await? {
            // A long job would heartbeat now and then; the answer tells about a cancel.
            let beat = tasq
                .heartbeat(&task.lease, Some(json!({"step": 1})))
                .await?;
            if beat.cancel_requested {
                tasq.fail(&task.lease, Failure::new("cancelled").non_retryable())
                    .await?;
                continue;
            }
            let payload: Value = serde_json::from_str(task.payload.get()).unwrap_or(Value::Null);
            let n = payload["n"].as_i64().unwrap_or(0);
            if n % 5 == 0 && task.attempt == 1 {
                let flaky = Failure::new("flaky: try again").retry_after(Duration::from_millis(10));
                tasq.fail(&task.lease, flaky).await?;
                continue;
            }
            let result = json!({"n": n, "square": n * n, "by": identity, "attempt": task.attempt});
            tasq.complete(&task.lease, result).await?;
        }
    }
}

/// Adds `count` tasks to [`QUEUE`], works them off with two workers and answers the results
/// in order. Must run inside an actix system.
pub async fn run(tasq: &Tasq, count: i64) -> Result<Vec<Value>, tasq::Error> {
    let queue = QueueKey::new("default", QUEUE, QueueType::Activity)?;
    let workers: Vec<_> = (1..=2)
        .map(|i| actix_rt::spawn(work(tasq.clone(), queue.clone(), format!("worker-{i}"))))
        .collect();

    let specs = (1..=count).map(|n| {
        TaskSpec::new("square")
            .task_id(format!("square-{n}"))
            .payload(json!({ "n": n }))
    });
    let added = tasq.add_batch(&queue, specs).await?;

    let mut results = Vec::new();
    for a in &added {
        let info = tasq
            .wait(&queue, &a.task_id, Duration::from_secs(30))
            .await?;
        let result = info
            .result
            .and_then(|r| serde_json::from_str(r.get()).ok())
            .unwrap_or(Value::Null);
        results.push(result);
    }
    // Stopping a worker drops its parked poll: the queue forgets it at once.
    for w in workers {
        w.abort();
    }
    Ok(results)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    actix_rt::System::new().block_on(async {
        let builder = Tasq::builder(Config::default());
        let tasq = match std::env::args().nth(1) {
            Some(dir) => builder.data_dir(dir),
            None => builder.temporary(),
        }
        .start()
        .await?;
        for result in run(&tasq, 10).await? {
            println!("{result}");
        }
        let stats = tasq
            .describe(&QueueKey::new("default", QUEUE, QueueType::Activity)?)
            .await?;
        println!(
            "backlog {}, in flight {}, added {:.2}/s",
            stats.backlog_count, stats.in_flight_count, stats.add_rate
        );
        tasq.shutdown().await?;
        Ok(())
    })
}
