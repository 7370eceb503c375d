//! A Rust worker for a remote tasq server with `tasq::client::Worker`: it streams a queue's
//! tasks over a WebSocket, `concurrency` at a time, heartbeats them while they run, settles
//! each with the handler's answer, reconnects when the connection drops, and stops gracefully
//! on Ctrl-C.
//!
//! ```sh
//! tasq serve &                                            # or any reachable server
//! tasq task add emails echo '{"hello": "world"}'
//! tasq task add emails sum '[1, 2, 3]'
//! TASQ_SERVER=http://127.0.0.1:7280 cargo run --example worker -- emails
//! ```
//!
//! `TASQ_API_KEY` is sent when set (auth on); `TASQ_CA_CERT` names the PEM file of a private
//! authority for an `https://` server. Task types: `echo` answers its payload, `sum` adds up an
//! array of numbers (anything else fails non-retryably: a retry cannot fix the payload). Other
//! types are left to other workers, since the worker declares its `task_types`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use tasq::client::{ClientError, Worker, WorkerError, WorkerTask};

/// Works one task: the result, or a non-retryable failure.
async fn handle(task: WorkerTask) -> Result<Value, WorkerError> {
    match task.task_type.as_str() {
        "echo" => Ok(task.payload.clone()),
        "sum" => task
            .payload
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).sum::<Option<f64>>())
            .map(|s| json!(s))
            .ok_or_else(|| {
                WorkerError::non_retryable(format!(
                    "sum wants an array of numbers, got {}",
                    task.payload
                ))
                .with_type("BadPayload")
            }),
        other => Err(WorkerError::non_retryable(format!(
            "no handler for {other:?}"
        ))),
    }
}

/// Works `queue` at `server` until `max_tasks` tasks were settled (until Ctrl-C when `None`);
/// answers how many were settled.
pub fn run(
    server: &str,
    namespace: &str,
    queue: &str,
    max_tasks: Option<usize>,
) -> Result<usize, ClientError> {
    let settled = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let (count, done) = (settled.clone(), enough.clone());
    let mut builder = Worker::builder(server, namespace, queue)
        .task_types(["echo", "sum"])
        .concurrency(4)
        .on_settled(move |task_id, state| {
            println!("{task_id}: {state}");
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if max_tasks.is_some_and(|max| n >= max) {
                done.notify_one();
            }
        });
    if let Ok(key) = std::env::var("TASQ_API_KEY") {
        builder = builder.api_key(key);
    }
    if let Ok(path) = std::env::var("TASQ_CA_CERT") {
        let tls = tasq::config::pem::trusting("TASQ_CA_CERT", &path)
            .map_err(ClientError::InvalidConfig)?;
        builder = builder.tls(tls);
    }
    let worker = builder.build()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClientError::InvalidConfig(format!("cannot start tokio: {e}")))?;
    runtime.block_on(worker.run_until(handle, async {
        tokio::select! {
            _ = enough.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }))?;
    Ok(settled.load(Ordering::SeqCst))
}

fn main() {
    let Some(queue) = std::env::args().nth(1) else {
        eprintln!("usage: worker QUEUE   (server from TASQ_SERVER, default http://127.0.0.1:7280)");
        std::process::exit(2);
    };
    let server = std::env::var("TASQ_SERVER").unwrap_or_else(|_| "http://127.0.0.1:7280".into());
    let namespace = std::env::var("TASQ_NAMESPACE").unwrap_or_else(|_| "default".into());
    if let Err(e) = run(&server, &namespace, &queue, None) {
        eprintln!("worker: {e}");
        std::process::exit(1);
    }
}
