//! End-to-end tests of `tasq::client::Worker` against the real binary: it completes tasks
//! within its concurrency, fails and retries per the handler's error, heartbeats a task that
//! outlives its heartbeat timeout, sees cancellation, reconnects after a dropped connection and
//! after a server restart (through a small TCP proxy, since a restart gets a new port), stops
//! gracefully, and gives up on a connection the server refuses for good.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tasq::client::{ClientError, Worker, WorkerError, WorkerTask};

const QUEUE: &str = "cq";

fn qp() -> String {
    q(NS, QUEUE, "activity")
}

/// A worker running on its own thread with its own tokio runtime.
struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<Result<(), ClientError>>>,
}

impl Running {
    fn start<H, F>(worker: Worker, handler: H) -> Running
    where
        H: Fn(WorkerTask) -> F + Send + Sync + 'static,
        F: std::future::Future<Output = Result<Value, WorkerError>> + Send + 'static,
    {
        let _ = env_logger::builder().is_test(true).try_init();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(worker.run_until(handler, async {
                let _ = rx.await;
            }))
        });
        Running {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Signals shutdown and waits (bounded) for `run_until` to return.
    fn stop(mut self) -> Result<(), ClientError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join()
    }

    /// Waits (bounded) for `run_until` to return by itself.
    fn join(&mut self) -> Result<(), ClientError> {
        let t = self.thread.take().expect("joined once");
        let deadline = Instant::now() + EVENTUALLY;
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "the worker did not stop");
            thread::sleep(Duration::from_millis(20));
        }
        t.join().expect("worker thread panicked")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn builder(base: &str) -> tasq::client::WorkerBuilder {
    Worker::builder(base, NS, QUEUE)
        .identity("client-test")
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
}

/// Waits (long-poll status) until the task is in a terminal state; returns its status.
fn wait_terminal(s: &TestServer, id: &str) -> Value {
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let (status, body) = get(&s.url(&format!("{}/tasks/{id}?wait_ms=2000", qp())));
        assert_eq!(status, 200, "status of {id}: {body}");
        let state = body["state"].as_str().unwrap_or("");
        if !matches!(state, "pending" | "running") {
            return body;
        }
        assert!(Instant::now() < deadline, "{id} never finished: {body}");
    }
}

#[test]
fn the_worker_completes_tasks_within_its_concurrency() {
    let s = TestServer::start();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = builder(s.base()).concurrency(3).build().expect("worker");
    let handler = {
        let (now, max, calls) = (now.clone(), max.clone(), calls.clone());
        move |task: WorkerTask| {
            let (now, max, calls) = (now.clone(), max.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let i = task.payload["i"].as_i64().unwrap_or(-1);
                Ok(json!({ "double": i * 2, "attempt": task.attempt }))
            }
        }
    };
    let running = Running::start(worker, handler);
    let ids: Vec<String> = (0..12)
        .map(|i| add_task(&s, &qp(), json!({"task_type": "t", "payload": {"i": i}})))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let st = wait_terminal(&s, id);
        assert_eq!(st["state"], "completed", "{st}");
        assert_eq!(st["result"], json!({"double": i * 2, "attempt": 1}), "{st}");
    }
    running.stop().expect("clean stop");
    assert_eq!(calls.load(Ordering::SeqCst), 12);
    let max = max.load(Ordering::SeqCst);
    assert!((1..=3).contains(&max), "{max} handlers ran at once");
}

#[test]
fn the_worker_fails_and_retries_as_the_handler_says() {
    let s = TestServer::start();
    let worker = builder(s.base()).concurrency(4).build().expect("worker");
    let handler = |task: WorkerTask| async move {
        match (task.task_type.as_str(), task.attempt) {
            ("flaky", 1) => Err(WorkerError::retryable("not yet").retry_after(Duration::ZERO)),
            ("broken", _) => Err(WorkerError::non_retryable("cannot ever work").with_type("Bad")),
            ("io", 1) => {
                // Any std error converts with `?`.
                let e: Result<(), io::Error> = Err(io::Error::other("disk on fire"));
                e?;
                Ok(json!("unreachable"))
            }
            ("panics", 1) => panic!("handler bug"),
            _ => Ok(json!({ "attempt": task.attempt })),
        }
    };
    let running = Running::start(worker, handler);
    let retry = json!({"initial_interval_ms": 100, "maximum_interval_ms": 200});
    let add = |ty: &str| add_task(&s, &qp(), json!({"task_type": ty, "retry": retry.clone()}));
    let (flaky, broken, io_err, panics) = (add("flaky"), add("broken"), add("io"), add("panics"));

    let st = wait_terminal(&s, &flaky);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"attempt": 2}), "{st}");
    assert_eq!(st["last_error"]["message"], "not yet", "{st}");

    let st = wait_terminal(&s, &broken);
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(st["attempt"], 1, "{st}");
    assert_eq!(st["last_error"]["message"], "cannot ever work", "{st}");
    assert_eq!(st["last_error"]["type"], "Bad", "{st}");

    let st = wait_terminal(&s, &io_err);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"attempt": 2}), "{st}");
    assert_eq!(st["last_error"]["message"], "disk on fire", "{st}");

    let st = wait_terminal(&s, &panics);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"attempt": 2}), "{st}");
    assert_eq!(st["last_error"]["type"], "Panic", "{st}");

    running.stop().expect("clean stop");
}

#[test]
fn the_worker_heartbeats_a_task_longer_than_its_heartbeat_timeout() {
    let s = TestServer::start();
    let calls = Arc::new(AtomicUsize::new(0));
    let worker = builder(s.base()).build().expect("worker");
    let handler = {
        let calls = calls.clone();
        move |task: WorkerTask| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                // Three and a half heartbeat timeouts.
                tokio::time::sleep(Duration::from_millis(3500)).await;
                Ok(json!({ "attempt": task.attempt }))
            }
        }
    };
    let running = Running::start(worker, handler);
    let id = add_task(
        &s,
        &qp(),
        json!({"task_type": "slow", "heartbeat_timeout_ms": 1000,
               "start_to_close_timeout_ms": 60000}),
    );
    let st = wait_terminal(&s, &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["attempt"], 1, "the lease must not have expired: {st}");
    assert_eq!(st["result"], json!({"attempt": 1}), "{st}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the task ran twice");
    running.stop().expect("clean stop");
}

#[test]
fn the_handler_sees_a_cancel_through_heartbeats() {
    let s = TestServer::start();
    let saw_cancel = Arc::new(AtomicBool::new(false));
    let worker = builder(s.base()).build().expect("worker");
    let handler = {
        let saw = saw_cancel.clone();
        move |task: WorkerTask| {
            let saw = saw.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while tokio::time::Instant::now() < deadline {
                    if task.cancel_requested() {
                        saw.store(true, Ordering::SeqCst);
                        return Err(WorkerError::non_retryable("cancelled").with_type("Cancelled"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(json!("never cancelled"))
            }
        }
    };
    let running = Running::start(worker, handler);
    let id = add_task(
        &s,
        &qp(),
        json!({"task_type": "t", "heartbeat_timeout_ms": 600}),
    );
    assert!(
        wait_until(EVENTUALLY, || status_of(&s, &qp(), &id)["state"]
            == "running"),
        "the task never started"
    );
    let (status, body) = delete(&s.url(&format!("{}/tasks/{id}", qp())));
    assert_eq!(status, 200, "cancel: {body}");
    wait_terminal(&s, &id);
    assert!(
        wait_until(EVENTUALLY, || saw_cancel.load(Ordering::SeqCst)),
        "the handler never saw cancel_requested"
    );
    running.stop().expect("clean stop");
}

/// A TCP proxy on a fixed local port that forwards to a target that can change, and can cut
/// every open connection: a network drop, and a way to follow a restarted server's new port.
struct Proxy {
    port: u16,
    target: Arc<Mutex<String>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let target = Arc::new(Mutex::new(target.to_string()));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (t, c) = (target.clone(), conns.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let addr = t.lock().expect("lock").clone();
                let Ok(upstream) = TcpStream::connect(&addr) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone(), upstream.try_clone()),
                    (upstream.try_clone(), client.try_clone()),
                ];
                c.lock().expect("lock").extend(
                    [client.try_clone(), upstream.try_clone()]
                        .into_iter()
                        .flatten(),
                );
                for pair in pairs {
                    let (Ok(mut from), Ok(mut to)) = pair else {
                        continue;
                    };
                    thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            target,
            conns,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_target(&self, target: &str) {
        *self.target.lock().expect("lock") = target.to_string();
    }

    /// Cuts every connection open so far (no close frame).
    fn cut(&self) {
        for c in self.conns.lock().expect("lock").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn the_worker_reconnects_after_a_dropped_connection_and_a_server_restart() {
    let mut s = TestServer::start();
    let proxy = Proxy::start(s.base().trim_start_matches("http://"));
    let worker = builder(&proxy.base())
        .identity("reconnecting")
        .concurrency(2)
        .build()
        .expect("worker");
    let running = Running::start(worker, |task: WorkerTask| async move {
        Ok(json!({ "got": task.payload }))
    });

    let id = add_task(&s, &qp(), json!({"task_type": "t", "payload": 1}));
    assert_eq!(wait_terminal(&s, &id)["state"], "completed");

    // A network drop: the worker reconnects through the proxy.
    proxy.cut();
    let id = add_task(&s, &qp(), json!({"task_type": "t", "payload": 2}));
    let st = wait_terminal(&s, &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"got": 2}), "{st}");

    // A server restart on the same data directory (new port, which the proxy follows).
    s.restart();
    proxy.set_target(s.base().trim_start_matches("http://"));
    proxy.cut();
    let id = add_task(&s, &qp(), json!({"task_type": "t", "payload": 3}));
    let st = wait_terminal(&s, &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"got": 3}), "{st}");
    wait_for_poller(&s, NS, QUEUE, "activity", "reconnecting");

    running.stop().expect("clean stop");
}

#[test]
fn a_task_that_outlives_its_connection_keeps_its_slot_until_it_ends() {
    let s = TestServer::start();
    let proxy = Proxy::start(s.base().trim_start_matches("http://"));
    let started = Arc::new(AtomicUsize::new(0));
    let worker = builder(&proxy.base())
        .concurrency(1)
        .build()
        .expect("worker");
    let handler = {
        let started = started.clone();
        move |task: WorkerTask| {
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                if task.attempt == 1 {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                Ok(json!({ "attempt": task.attempt }))
            }
        }
    };
    let running = Running::start(worker, handler);
    let id = add_task(
        &s,
        &qp(),
        json!({"task_type": "t", "start_to_close_timeout_ms": 60000}),
    );
    assert!(
        wait_until(EVENTUALLY, || started.load(Ordering::SeqCst) == 1),
        "the task never started"
    );
    // The server releases attempt 1 when the connection drops; the worker's only slot is
    // still busy with it, so attempt 2 comes only once that handler ends and the worker gives
    // the new connection its credit.
    proxy.cut();
    let st = wait_terminal(&s, &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["attempt"], 2, "{st}");
    assert_eq!(st["result"], json!({"attempt": 2}), "{st}");
    assert_eq!(started.load(Ordering::SeqCst), 2);
    running.stop().expect("clean stop");
}

#[test]
fn shutdown_lets_running_tasks_finish_and_settle() {
    let s = TestServer::start();
    let started = Arc::new(AtomicUsize::new(0));
    let worker = builder(s.base()).concurrency(2).build().expect("worker");
    let handler = {
        let started = started.clone();
        move |_task: WorkerTask| {
            started.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                Ok(json!("finished"))
            }
        }
    };
    let running = Running::start(worker, handler);
    let ids: Vec<String> = (0..2)
        .map(|_| add_task(&s, &qp(), json!({"task_type": "t"})))
        .collect();
    assert!(
        wait_until(EVENTUALLY, || started.load(Ordering::SeqCst) == 2),
        "both tasks should start"
    );
    running.stop().expect("clean stop");
    // run_until returned only after the server acknowledged both settles.
    for id in &ids {
        let st = status_of(&s, &qp(), id);
        assert_eq!(st["state"], "completed", "{st}");
        assert_eq!(st["result"], "finished", "{st}");
    }
    // Stopped: a new task stays in the queue.
    let id = add_task(&s, &qp(), json!({"task_type": "t"}));
    thread::sleep(Duration::from_millis(500));
    assert_eq!(status_of(&s, &qp(), &id)["state"], "pending");
    assert_eq!(started.load(Ordering::SeqCst), 2);
}

#[test]
fn a_connection_refused_for_good_ends_the_run_with_an_error() {
    let s = TestServer::start();
    let worker = builder(s.base())
        .identity("x".repeat(300))
        .build()
        .expect("worker");
    let mut running = Running::start(worker, |_t: WorkerTask| async { Ok(Value::Null) });
    match running.join() {
        Err(ClientError::Rejected { status, body }) => {
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("invalid_argument"), "{body}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_task_the_client_cannot_read_is_failed_for_good_and_the_others_run() {
    let s = TestServer::start();
    // Valid JSON text that serde_json cannot turn into a tree: a lone surrogate.
    let body = br#"{"task_type": "t", "task_id": "poison", "payload": "\ud800"}"#;
    let (code, answer) = post_raw(&s.url(&format!("{}/tasks", qp())), "application/json", body);
    assert_eq!(code, 201, "{answer}");
    for i in 0..3 {
        add_task(
            &s,
            &qp(),
            json!({"task_type": "t", "task_id": format!("ok{i}")}),
        );
    }
    let done = Arc::new(Mutex::new(Vec::new()));
    let seen = done.clone();
    let worker = builder(s.base()).concurrency(1).build().expect("worker");
    let running = Running::start(worker, move |task: WorkerTask| {
        let seen = seen.clone();
        async move {
            seen.lock().expect("lock").push(task.task_id.clone());
            Ok(json!(null))
        }
    });
    let ok = wait_until(EVENTUALLY, || {
        let st = stats(&s, NS, QUEUE, "activity");
        stat_u64(&st, "dead_letter_count") == 1
            && stat_u64(&st, "backlog_count") == 0
            && stat_u64(&st, "in_flight_count") == 0
    });
    running.stop().expect("clean stop");
    assert!(ok, "{}", stats(&s, NS, QUEUE, "activity"));
    let mut ran = done.lock().expect("lock").clone();
    ran.sort();
    assert_eq!(ran, ["ok0", "ok1", "ok2"]);
    let (code, _, text) = get_text(&s.url(&format!("{}/dead-letters", qp())));
    assert_eq!(code, 200);
    assert!(text.contains("UnreadableTask"), "{text}");
}
