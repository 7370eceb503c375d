//! The soak's worker processes: an HTTP worker (poll, complete or fail) and a WebSocket
//! worker (tasq::client::Worker), each logging every task it settles for the final check.

use super::*;

pub(super) fn worker_main(role: &str, args: &SoakArgs) -> Result<(), String> {
    let addr_file = args.addr_file.clone().ok_or("--addr-file is required")?;
    let log = Arc::new(Log::open(
        args.worker_log
            .as_deref()
            .ok_or("--worker-log is required")?,
    )?);
    let queue = args
        .worker_queue
        .clone()
        .ok_or("--worker-queue is required")?;
    let fail_p = f64::from(args.fail_percent.min(100)) / 100.0;
    match role {
        "http" => http_worker(&addr_file, &log, &queue, fail_p),
        "ws" => ws_worker(addr_file, log, queue, fail_p),
        other => Err(format!("unknown worker role {other:?}")),
    }
}

pub(super) fn may_fail(payload: &Value) -> bool {
    payload["may_fail"].as_bool().unwrap_or(false)
}

pub(super) fn http_worker(
    addr_file: &Path,
    log: &Log,
    queue: &str,
    fail_p: f64,
) -> Result<(), String> {
    let agent = agent();
    let identity = format!("soak-http@{}", std::process::id());
    let mut rng = rand::thread_rng();
    loop {
        let Some(addr) = read_addr(addr_file) else {
            thread::sleep(Duration::from_millis(200));
            continue;
        };
        let poll = json!({"identity": identity, "max_tasks": 4, "wait_ms": 2000});
        let req = agent.post(&format!("{}/poll", queue_url(&addr, queue)));
        let tasks = match send(req, Some(&poll)) {
            Ok((200, v)) => v["tasks"].as_array().cloned().unwrap_or_default(),
            _ => {
                thread::sleep(Duration::from_millis(300));
                continue;
            }
        };
        for t in tasks {
            let id = t["task_id"].as_str().unwrap_or("?").to_string();
            let lease = t["lease"].as_str().unwrap_or("").to_string();
            log.line(format!("D {id} {lease}"));
            thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
            let fail = may_fail(&t["payload"]) && rng.gen_bool(fail_p);
            let (op, body) = if fail {
                let b = json!({"error": {"message": "soak: random failure", "type": "Soak"},
                               "non_retryable": false});
                ("fail", b)
            } else {
                ("complete", json!({"result": {"by": identity}}))
            };
            let url = format!("http://{addr}/api/v1/leases/{lease}/{op}");
            let tag = if fail { "F" } else { "C" };
            match send(agent.post(&url), Some(&body)) {
                Ok((status, v)) => {
                    let code = if status == 200 { "ok" } else { error_code(&v) };
                    log.line(format!("{tag} {id} {lease} {status} {code}"));
                }
                Err(_) => log.line(format!("{tag} {id} {lease} 0 transport")),
            }
        }
    }
}

pub(super) fn ws_worker(
    addr_file: PathBuf,
    log: Arc<Log>,
    queue: String,
    fail_p: f64,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        loop {
            let Some(addr) = read_addr(&addr_file) else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let worker =
                crate::client::Worker::builder(format!("http://{addr}"), NAMESPACE, &queue)
                    .identity(format!("soak-ws@{}", std::process::id()))
                    .concurrency(4)
                    .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(1))
                    .build()
                    .map_err(|e| e.to_string())?;
            let hlog = log.clone();
            let handler = move |task: crate::client::WorkerTask| {
                let log = hlog.clone();
                async move {
                    log.line(format!("D {} {}", task.task_id, task.lease));
                    let (ms, fail) = {
                        let mut rng = rand::thread_rng();
                        (
                            rng.gen_range(0..30),
                            may_fail(&task.payload) && rng.gen_bool(fail_p),
                        )
                    };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if fail {
                        log.line(format!("F {} {} - handler", task.task_id, task.lease));
                        Err(crate::client::WorkerError::retryable(
                            "soak: random failure",
                        ))
                    } else {
                        log.line(format!("C {} {} - handler", task.task_id, task.lease));
                        Ok(json!({"by": "ws"}))
                    }
                }
            };
            let changed = {
                let addr_file = addr_file.clone();
                let addr = addr.clone();
                async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if let Some(a) = read_addr(&addr_file) {
                            if a != addr {
                                return;
                            }
                        }
                    }
                }
            };
            // The old address is gone: stop (settles of running handlers cannot reach the
            // dead server and come back as redeliveries) and reconnect to the new one. Bound
            // the graceful stop, as the old server will never answer.
            let run = worker.run_until(handler, changed);
            let _ = tokio::time::timeout(Duration::from_secs(LEASE_MS / 1000 + 30), run).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The orchestrator
