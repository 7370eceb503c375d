//! Black-box tests of streaming workers (`GET {q}/connect`, "Streaming workers" in the API
//! contract) with a real WebSocket client (tungstenite, blocking) against the real binary:
//! credit, push, release on close and on a dropped connection, HTTP and WebSocket workers on
//! one queue, task type filters, bad and oversized frames, settles, heartbeats, the connection
//! gauge and describe.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Generous bound for a frame that must come.
const FRAME_WAIT: Duration = Duration::from_secs(10);
/// How long "no further frame" is watched for.
const QUIET_WAIT: Duration = Duration::from_secs(2);

const QUEUE: &str = "ws";

fn qp() -> String {
    q(NS, QUEUE, "activity")
}

/// One blocking WebSocket connection to `{q}/connect`.
struct Ws {
    sock: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Connects with `query` (e.g. `identity=w1`) and checks the 101 answer.
    #[track_caller]
    fn connect(s: &TestServer, qpath: &str, query: &str) -> Ws {
        let base = s.base().replacen("http://", "ws://", 1);
        let url = format!("{base}{qpath}/connect?{query}");
        let (sock, resp) = match tungstenite::connect(url.as_str()) {
            Ok(r) => r,
            Err(e) => panic!("WebSocket connect to {url} failed: {e}"),
        };
        assert_eq!(resp.status().as_u16(), 101, "upgrade answer: {resp:?}");
        Ws { sock }
    }

    fn tcp(&self) -> &TcpStream {
        match self.sock.get_ref() {
            MaybeTlsStream::Plain(t) => t,
            _ => panic!("expected a plain TCP stream"),
        }
    }

    #[track_caller]
    fn send(&mut self, frame: Value) {
        self.send_text(frame.to_string());
    }

    #[track_caller]
    fn send_text(&mut self, text: String) {
        if let Err(e) = self.sock.send(Message::text(text)) {
            panic!("WebSocket send failed: {e}");
        }
    }

    /// The next message other than ping / pong, or None when `timeout` passes first.
    #[track_caller]
    fn next_message(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.tcp()
                .set_read_timeout(Some(left))
                .expect("set read timeout");
            match self.sock.read() {
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
                Ok(m) => return Some(m),
                Err(tungstenite::Error::Io(e))
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut =>
                {
                    return None
                }
                Err(e) => panic!("WebSocket read failed: {e}"),
            }
        }
    }

    /// The next JSON text frame, or None when `timeout` passes first.
    #[track_caller]
    fn frame(&mut self, timeout: Duration) -> Option<Value> {
        match self.next_message(timeout)? {
            Message::Text(t) => match serde_json::from_str(t.as_str()) {
                Ok(v) => Some(v),
                Err(e) => panic!("server frame is not JSON ({e}): {t}"),
            },
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must come within [`FRAME_WAIT`].
    #[track_caller]
    fn expect(&mut self, what: &str) -> Value {
        match self.frame(FRAME_WAIT) {
            Some(f) => f,
            None => panic!("no frame ({what}) within {FRAME_WAIT:?}"),
        }
    }

    /// The next frame, which must have op `op`.
    #[track_caller]
    fn expect_op(&mut self, op: &str) -> Value {
        let f = self.expect(op);
        assert_eq!(f["op"], op, "expected a {op} frame, got {f}");
        f
    }

    /// The next frame must be a task; returns the Task.
    #[track_caller]
    fn expect_task(&mut self) -> Value {
        let f = self.expect_op("task");
        let task = f["task"].clone();
        assert_has_keys(
            &task,
            &[
                "task_id",
                "task_type",
                "payload",
                "attempt",
                "lease",
                "lease_expires_at",
            ],
        );
        task
    }

    /// No frame at all comes within [`QUIET_WAIT`].
    #[track_caller]
    fn expect_quiet(&mut self, why: &str) {
        if let Some(f) = self.frame(QUIET_WAIT) {
            panic!("{why}: expected no frame, got {f}");
        }
    }

    /// An error frame with `code`; returns it.
    #[track_caller]
    fn expect_error(&mut self, code: &str, lease: Value) -> Value {
        let f = self.expect_op("error");
        assert_eq!(f["error"]["code"], code, "error frame {f}");
        assert!(
            f["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error frame without message: {f}"
        );
        assert_eq!(f["lease"], lease, "error frame {f}");
        f
    }

    #[track_caller]
    fn credit(&mut self, n: i64) {
        self.send(json!({"op": "credit", "n": n}));
    }

    #[track_caller]
    fn complete(&mut self, task: &Value, result: Value) {
        self.send(json!({"op": "complete", "lease": lease_of(task), "result": result}));
    }

    /// Closes cleanly: close frame, then read until the server's close arrives.
    fn close(mut self) {
        let _ = self.sock.close(None);
        let deadline = Instant::now() + FRAME_WAIT;
        while Instant::now() < deadline {
            let _ = self
                .tcp()
                .set_read_timeout(Some(Duration::from_millis(500)));
            match self.sock.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
        panic!("the server never answered the close frame");
    }

    /// Drops the TCP connection without a close frame.
    fn drop_abruptly(self) {
        let _ = self.tcp().shutdown(std::net::Shutdown::Both);
        drop(self);
    }
}

/// Adds `n` tasks of type `ty`; returns their ids in order.
fn add_n(s: &TestServer, n: usize, ty: &str, extra: Value) -> Vec<String> {
    (0..n)
        .map(|i| {
            let mut body = json!({"task_type": ty, "payload": {"i": i}});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    b.insert(k.clone(), v.clone());
                }
            }
            add_task(s, &qp(), body)
        })
        .collect()
}

/// Adds one task, connects a socket as `identity` with credit 1 and takes the task pushed
/// to it: (task id, socket, task).
#[track_caller]
fn one_task_on_a_socket(s: &TestServer, identity: &str) -> (String, Ws, Value) {
    let id = add_task(s, &qp(), json!({"task_type": "t"}));
    let mut ws = Ws::connect(s, &qp(), &format!("identity={identity}"));
    ws.credit(1);
    let task = ws.expect_task();
    (id, ws, task)
}

fn ws_gauge(s: &TestServer) -> f64 {
    metric_sum(&metrics_text(s), "tasq_websocket_connections", &[])
}

/// Polls over HTTP until `n` tasks came or `within` passes; returns them.
fn poll_http_until(s: &TestServer, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        got.extend(poll_tasks(
            s,
            &qp(),
            json!({"identity": "http-check", "max_tasks": 100,
                   "wait_ms": left.as_millis() as u64}),
        ));
    }
    got
}

#[test]
fn credit_is_never_exceeded() {
    let s = TestServer::start();
    add_n(&s, 5, "t", json!({}));
    let mut ws = Ws::connect(&s, &qp(), "identity=credit-2");
    ws.credit(2);
    let a = ws.expect_task();
    let b = ws.expect_task();
    assert_ne!(a["task_id"], b["task_id"]);
    ws.expect_quiet("credit 2 was used up by two tasks");
    assert_eq!(backlog(&s, NS, QUEUE, "activity"), 3);
}

#[test]
fn settling_gives_the_credit_back() {
    let s = TestServer::start();
    add_n(&s, 3, "t", json!({}));
    let mut ws = Ws::connect(&s, &qp(), "identity=credit-back");
    ws.credit(1);
    let mut task = ws.expect_task();
    ws.expect_quiet("credit 1 with one task out");
    let mut seen = BTreeSet::new();
    for round in 0..2 {
        seen.insert(task["task_id"].to_string());
        ws.complete(&task, json!(round));
        // The settled frame and the next task may come in either order.
        let mut settled = None;
        let mut next = None;
        for _ in 0..2 {
            let f = ws.expect("settled and the next task");
            match f["op"].as_str() {
                Some("settled") => settled = Some(f),
                Some("task") => next = Some(f["task"].clone()),
                _ => panic!("unexpected frame {f}"),
            }
        }
        let settled = settled.expect("a settled frame");
        assert_eq!(settled["lease"], task["lease"], "{settled}");
        assert_eq!(settled["state"], "completed", "{settled}");
        task = next.expect("the next task after the credit came back");
        ws.expect_quiet("still one unsettled task for credit 1");
    }
    seen.insert(task["task_id"].to_string());
    assert_eq!(seen.len(), 3, "three distinct tasks: {seen:?}");
}

#[test]
fn a_task_added_is_pushed_to_a_socket_with_credit() {
    let s = TestServer::start();
    let mut ws = Ws::connect(&s, &qp(), "identity=pushed");
    ws.credit(1);
    wait_for_poller(&s, NS, QUEUE, "activity", "pushed");
    ws.expect_quiet("nothing to push yet");
    let started = Instant::now();
    let id = add_task(&s, &qp(), json!({"task_type": "t", "payload": 7}));
    let task = ws.expect_task();
    let took = started.elapsed();
    eprintln!("add → task frame took {took:?}");
    assert!(took < Duration::from_secs(5), "push took {took:?}");
    assert_eq!(task["task_id"], id.as_str());
    assert_eq!(task["payload"], 7);
    assert_eq!(task["attempt"], 1);
}

#[test]
fn closing_the_socket_releases_its_tasks_at_once() {
    let s = TestServer::start();
    let ids = add_n(&s, 2, "t", json!({"start_to_close_timeout_ms": 60000}));
    let mut ws = Ws::connect(&s, &qp(), "identity=closer");
    ws.credit(2);
    ws.expect_task();
    ws.expect_task();
    ws.close();
    // Well before the 60 s lease could end.
    let back = poll_http_until(&s, 2, Duration::from_secs(10));
    let got: BTreeSet<_> = back
        .iter()
        .filter_map(|t| t["task_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        got,
        ids.iter().cloned().collect(),
        "released tasks: {back:?}"
    );
    for t in &back {
        assert_eq!(t["attempt"], 2, "the closed socket's attempt counts: {t}");
    }
}

#[test]
fn dropping_the_connection_releases_its_tasks_at_once() {
    let s = TestServer::start();
    let ids = add_n(&s, 2, "t", json!({"start_to_close_timeout_ms": 60000}));
    let mut ws = Ws::connect(&s, &qp(), "identity=dropper");
    ws.credit(5);
    ws.expect_task();
    ws.expect_task();
    ws.drop_abruptly();
    let back = poll_http_until(&s, 2, Duration::from_secs(10));
    let got: BTreeSet<_> = back
        .iter()
        .filter_map(|t| t["task_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        got,
        ids.iter().cloned().collect(),
        "released tasks: {back:?}"
    );
    for t in &back {
        assert_eq!(t["attempt"], 2, "the dropped socket's attempt counts: {t}");
    }
}

#[test]
fn http_and_websocket_workers_share_one_queue() {
    const N: usize = 30;
    let s = TestServer::start();
    let base = s.base().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let http_ids = Arc::new(Mutex::new(Vec::<String>::new()));
    let worker = {
        let (stop, http_ids, qpath) = (stop.clone(), http_ids.clone(), qp());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = post(
                    &format!("{base}{qpath}/poll"),
                    &json!({"identity": "http-worker", "max_tasks": 1, "wait_ms": 1000}),
                );
                assert_eq!(status, 200, "poll: {body}");
                for t in body["tasks"].as_array().cloned().unwrap_or_default() {
                    let lease = lease_of(&t);
                    let (st, b) = post(
                        &format!("{base}/api/v1/leases/{lease}/complete"),
                        &json!({"result": "http"}),
                    );
                    assert_eq!(st, 200, "complete: {b}");
                    let id = t["task_id"].as_str().unwrap_or_default().to_string();
                    http_ids.lock().expect("lock").push(id);
                }
            }
        })
    };
    wait_for_poller(&s, NS, QUEUE, "activity", "http-worker");
    let mut ws = Ws::connect(&s, &qp(), "identity=ws-worker");
    ws.credit(3);
    wait_for_poller(&s, NS, QUEUE, "activity", "ws-worker");

    let batch: Vec<Value> = (0..N)
        .map(|i| json!({"task_type": "t", "payload": i}))
        .collect();
    let (status, body) = post(
        &s.url(&format!("{}/tasks/batch", qp())),
        &json!({ "tasks": batch }),
    );
    assert_eq!(status, 201, "batch add: {body}");
    let added: BTreeSet<String> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["task_id"].as_str().expect("task_id").to_string())
        .collect();
    assert_eq!(added.len(), N);

    let mut ws_ids = Vec::new();
    let mut unacked = HashSet::new();
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let http_done = http_ids.lock().expect("lock").len();
        if ws_ids.len() + http_done >= N && unacked.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all tasks done: ws {} http {http_done}",
            ws_ids.len()
        );
        let Some(f) = ws.frame(Duration::from_millis(200)) else {
            continue;
        };
        match f["op"].as_str() {
            Some("task") => {
                let t = &f["task"];
                ws_ids.push(t["task_id"].as_str().expect("task_id").to_string());
                unacked.insert(lease_of(t));
                ws.complete(t, json!("ws"));
            }
            Some("settled") => {
                assert_eq!(f["state"], "completed", "{f}");
                unacked.remove(f["lease"].as_str().expect("lease"));
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().expect("http worker thread");
    ws.close();

    let http_ids = http_ids.lock().expect("lock").clone();
    let mut all: Vec<String> = ws_ids.iter().chain(http_ids.iter()).cloned().collect();
    all.sort();
    let unique: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(
        all.len(),
        unique.len(),
        "a task was delivered twice: {all:?}"
    );
    assert_eq!(unique, added, "every task delivered exactly once");
    assert!(!ws_ids.is_empty(), "the socket got no task");
    assert!(!http_ids.is_empty(), "the HTTP worker got no task");
    eprintln!("ws {} http {}", ws_ids.len(), http_ids.len());
    for id in &added {
        assert_eq!(status_of(&s, &qp(), id)["state"], "completed", "{id}");
    }
}

/// Tasks that become ready together are dealt in turns: a socket takes one and goes to the
/// back of the line, so a poll parked after it is served before the socket's credit is spent.
#[test]
fn a_socket_and_a_parked_poll_take_turns_on_tasks_ready_together() {
    let s = TestServer::start();
    add_n(&s, 3, "t", json!({}));
    let mut holder = Ws::connect(&s, &qp(), "identity=holder");
    holder.credit(3);
    for _ in 0..3 {
        holder.expect_task();
    }
    let mut ws = Ws::connect(&s, &qp(), "identity=ws-turns");
    ws.credit(3);
    wait_for_poller(&s, NS, QUEUE, "activity", "ws-turns");
    let poll = {
        let url = s.url(&format!("{}/poll", qp()));
        thread::spawn(move || {
            post(
                &url,
                &json!({"identity": "http-turns", "max_tasks": 1, "wait_ms": 20_000}),
            )
        })
    };
    wait_for_poller(&s, NS, QUEUE, "activity", "http-turns");

    // The holder's three tasks come back at once when it closes.
    holder.close();
    let (status, body) = poll.join().expect("poll thread");
    assert_eq!(status, 200, "poll: {body}");
    assert_eq!(body["tasks"].as_array().map(Vec::len), Some(1), "{body}");
    ws.expect_task();
    ws.expect_task();
    ws.expect_quiet("the poll had its turn: two of the three tasks for the socket");
}

#[test]
fn task_types_filter_what_a_socket_gets() {
    let s = TestServer::start();
    let a = add_n(&s, 2, "a", json!({}));
    let b = add_n(&s, 2, "b", json!({}));
    let mut ws = Ws::connect(&s, &qp(), "identity=only-b&task_types=b");
    ws.credit(5);
    let got: BTreeSet<String> = (0..2)
        .map(|_| {
            let t = ws.expect_task();
            assert_eq!(t["task_type"], "b", "{t}");
            t["task_id"].as_str().expect("id").to_string()
        })
        .collect();
    assert_eq!(got, b.into_iter().collect());
    ws.expect_quiet("no task of type b is left");
    let rest = poll_tasks(
        &s,
        &qp(),
        json!({"identity": "a-worker", "max_tasks": 10, "wait_ms": 0, "task_types": ["a"]}),
    );
    let rest: BTreeSet<String> = rest
        .iter()
        .map(|t| t["task_id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(rest, a.into_iter().collect());
}

#[test]
fn bad_frames_get_an_error_and_the_socket_stays_usable() {
    let s = TestServer::start();
    let mut ws = Ws::connect(&s, &qp(), "identity=sloppy");

    ws.send_text("this is not json".into());
    ws.expect_error("invalid_argument", Value::Null);

    ws.send(json!({"op": "dance"}));
    ws.expect_error("invalid_argument", Value::Null);

    ws.send(json!({"op": "complete", "lease": "no-such-lease", "result": 1}));
    ws.expect_error("lease_lost", json!("no-such-lease"));

    ws.send(json!({"op": "heartbeat", "lease": "no-such-lease"}));
    ws.expect_error("lease_lost", json!("no-such-lease"));

    ws.credit(0);
    ws.expect_error("invalid_argument", Value::Null);

    ws.credit(1001);
    ws.expect_error("invalid_argument", Value::Null);

    ws.send(json!({"op": "credit", "n": 1, "extra": true}));
    ws.expect_error("invalid_argument", Value::Null);

    if let Err(e) = ws.sock.send(Message::binary(vec![1u8, 2, 3])) {
        panic!("send binary: {e}");
    }
    ws.expect_error("invalid_argument", Value::Null);

    // None of that gave credit; the socket still works.
    ws.credit(1);
    let id = add_task(&s, &qp(), json!({"task_type": "t"}));
    let task = ws.expect_task();
    assert_eq!(task["task_id"], id.as_str());
}

#[test]
fn an_oversized_frame_closes_the_socket_with_1009() {
    let s = TestServer::start_with(&[], &[("TASQ_MAX_PAYLOAD_BYTES", "4096")]);
    let mut ws = Ws::connect(&s, &qp(), "identity=big");
    let big = json!({"op": "heartbeat", "lease": "x", "details": "y".repeat(10_000)});
    ws.send(big);
    match ws.next_message(FRAME_WAIT) {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Size, "close frame {frame:?}");
        }
        other => panic!("expected a close frame with 1009, got {other:?}"),
    }
    assert!(
        wait_until(EVENTUALLY, || ws_gauge(&s) == 0.0),
        "the closed socket still counts"
    );
}

#[test]
fn a_settle_on_the_socket_is_durable() {
    let s = TestServer::start();
    let (id, mut ws, task) = one_task_on_a_socket(&s, "settler");
    ws.complete(&task, json!({"ok": 1}));
    let f = ws.expect_op("settled");
    assert_eq!(f["lease"], task["lease"], "{f}");
    assert_eq!(f["state"], "completed", "{f}");
    assert_eq!(f["task_id"], id.as_str(), "{f}");
    let st = status_of(&s, &qp(), &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], json!({"ok": 1}), "{st}");
    // Repeating the same complete answers the same again.
    ws.complete(&task, json!({"ok": 1}));
    let again = ws.expect_op("settled");
    assert_eq!(again["state"], "completed", "{again}");
}

/// Settle frames that arrive together are written together (one batch per queue): each
/// still gets its own answer, a repeat in the same burst answers like a repeat, a bad one gets
/// its error without failing the others, and the queue's counts stay right.
#[test]
fn settles_sent_in_one_burst_are_each_answered() {
    let s = TestServer::start();
    let ids = add_n(&s, 4, "t", json!({}));
    let mut ws = Ws::connect(&s, &qp(), "identity=burst");
    ws.credit(4);
    let tasks: Vec<Value> = (0..4).map(|_| ws.expect_task()).collect();
    let by_id = |id: &str| {
        tasks
            .iter()
            .find(|t| t["task_id"] == id)
            .unwrap_or_else(|| panic!("task {id} was not pushed"))
            .clone()
    };
    let (t1, t2, t3, t4) = (
        by_id(&ids[0]),
        by_id(&ids[1]),
        by_id(&ids[2]),
        by_id(&ids[3]),
    );
    let frames = [
        json!({"op": "complete", "lease": lease_of(&t1), "result": 1}),
        json!({"op": "complete", "lease": lease_of(&t2), "result": 2}),
        json!({"op": "complete", "lease": lease_of(&t1), "result": 1}),
        json!({"op": "fail", "lease": lease_of(&t3), "error": {"message": "later"}, "retry_after_ms": 60000}),
        json!({"op": "complete", "lease": "not-a-lease", "result": 0}),
        json!({"op": "complete", "lease": lease_of(&t4), "result": 4}),
    ];
    // Queued without flushing, then written at once: the server reads them in one go.
    for f in &frames {
        if let Err(e) = ws.sock.write(Message::text(f.to_string())) {
            panic!("WebSocket write failed: {e}");
        }
    }
    if let Err(e) = ws.sock.flush() {
        panic!("WebSocket flush failed: {e}");
    }
    let mut answers: Vec<Value> = (0..frames.len()).map(|_| ws.expect("an answer")).collect();
    let errors: Vec<Value> = answers
        .iter()
        .filter(|f| f["op"] == "error")
        .cloned()
        .collect();
    assert_eq!(errors.len(), 1, "one bad frame: {answers:?}");
    assert_eq!(errors[0]["lease"], "not-a-lease", "{}", errors[0]);
    answers.retain(|f| f["op"] == "settled");
    let state_of = |t: &Value| -> Vec<Value> {
        answers
            .iter()
            .filter(|f| f["lease"] == t["lease"])
            .map(|f| f["state"].clone())
            .collect()
    };
    assert_eq!(state_of(&t1), vec![json!("completed"), json!("completed")]);
    assert_eq!(state_of(&t2), vec![json!("completed")]);
    assert_eq!(state_of(&t3), vec![json!("pending")]);
    assert_eq!(state_of(&t4), vec![json!("completed")]);
    for (id, want) in [
        (&ids[0], json!(1)),
        (&ids[1], json!(2)),
        (&ids[3], json!(4)),
    ] {
        let st = status_of(&s, &qp(), id);
        assert_eq!(st["state"], "completed", "{st}");
        assert_eq!(st["result"], want, "{st}");
    }
    let st = stats(&s, NS, QUEUE, "activity");
    assert_eq!(stat_u64(&st, "in_flight_count"), 0, "{st}");
    assert_eq!(stat_u64(&st, "delayed_count"), 1, "{st}");
    // The repeat completed nothing a second time.
    let completed = metric_sum(&metrics_text(&s), "tasq_tasks_completed_total", &[]);
    assert_eq!(completed, 3.0);
}

/// A complete that arrives together with the close frame is applied before the socket's
/// tasks are released: the task ends completed, not back in the queue for another attempt.
#[test]
fn a_complete_sent_with_the_close_is_applied_before_the_release() {
    let s = TestServer::start();
    let (id, mut ws, task) = one_task_on_a_socket(&s, "closer");
    let complete = json!({"op": "complete", "lease": lease_of(&task), "result": "done"});
    // Queued, then written with the close frame in one flush.
    if let Err(e) = ws.sock.write(Message::text(complete.to_string())) {
        panic!("WebSocket write failed: {e}");
    }
    ws.close();
    let done = wait_until(FRAME_WAIT, || {
        status_of(&s, &qp(), &id)["state"] != "running"
    });
    assert!(done, "the task stayed running");
    let st = status_of(&s, &qp(), &id);
    assert_eq!(st["state"], "completed", "{st}");
    assert_eq!(st["result"], "done", "{st}");
    assert_eq!(st["attempt"], 1, "{st}");
}

#[test]
fn a_heartbeat_frame_is_answered() {
    let s = TestServer::start();
    let id = add_task(
        &s,
        &qp(),
        json!({"task_type": "t", "heartbeat_timeout_ms": 30000}),
    );
    let mut ws = Ws::connect(&s, &qp(), "identity=beater");
    ws.credit(1);
    let task = ws.expect_task();
    let lease = lease_of(&task);
    ws.send(json!({"op": "heartbeat", "lease": lease, "details": {"progress": 1}}));
    let f = ws.expect_op("heartbeat");
    assert_eq!(f["lease"], lease.as_str(), "{f}");
    assert_eq!(f["cancel_requested"], false, "{f}");
    assert_instant(&f, "lease_expires_at");

    let (status, body) = delete(&s.url(&format!("{}/tasks/{id}", qp())));
    assert_eq!(status, 200, "cancel: {body}");
    ws.send(json!({"op": "heartbeat", "lease": lease}));
    let f = ws.expect_op("heartbeat");
    assert_eq!(f["cancel_requested"], true, "{f}");
}

#[test]
fn the_connection_gauge_counts_open_sockets() {
    let s = TestServer::start();
    assert_eq!(ws_gauge(&s), 0.0);
    let ws = Ws::connect(&s, &qp(), "identity=gauge");
    assert!(
        wait_until(EVENTUALLY, || ws_gauge(&s) == 1.0),
        "gauge never reached 1: {}",
        ws_gauge(&s)
    );
    ws.close();
    assert!(
        wait_until(EVENTUALLY, || ws_gauge(&s) == 0.0),
        "gauge never went back to 0: {}",
        ws_gauge(&s)
    );
}

#[test]
fn describe_lists_the_socket_as_a_poller() {
    let s = TestServer::start();
    let _ws = Ws::connect(
        &s,
        &qp(),
        "identity=ws%20worker%401&task_types=a,b&build_id=v7",
    );
    wait_for_poller(&s, NS, QUEUE, "activity", "ws worker@1");
    let st = stats(&s, NS, QUEUE, "activity");
    let pollers = st["pollers"].as_array().expect("pollers");
    let p = pollers
        .iter()
        .find(|p| p["identity"] == "ws worker@1")
        .expect("the socket's poller");
    assert_eq!(p["build_id"], "v7", "{p}");
    assert_eq!(p["task_types"], json!(["a", "b"]), "{p}");
}

#[test]
fn a_failed_task_comes_back_on_the_socket() {
    let s = TestServer::start();
    let (id, mut ws, task) = one_task_on_a_socket(&s, "failer");
    assert_eq!(task["attempt"], 1);
    ws.send(json!({
        "op": "fail", "lease": lease_of(&task),
        "error": {"message": "try again", "type": "Flaky"},
        "non_retryable": false, "retry_after_ms": 0
    }));
    let mut settled = None;
    let mut again = None;
    for _ in 0..2 {
        let f = ws.expect("settled and the retried task");
        match f["op"].as_str() {
            Some("settled") => settled = Some(f),
            Some("task") => again = Some(f["task"].clone()),
            _ => panic!("unexpected frame {f}"),
        }
    }
    let settled = settled.expect("settled frame");
    assert_eq!(settled["state"], "pending", "{settled}");
    let again = again.expect("the task again");
    assert_eq!(again["task_id"], id.as_str());
    assert_eq!(again["attempt"], 2, "{again}");
    assert_ne!(again["lease"], task["lease"]);
}

#[test]
fn connect_without_identity_is_refused() {
    let s = TestServer::start();
    let base = s.base().replacen("http://", "ws://", 1);
    let url = format!("{base}{}/connect", qp());
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 400, "{resp:?}");
        }
        Err(e) => panic!("expected HTTP 400, got {e}"),
        Ok(_) => panic!("connect without identity was accepted"),
    }
}

#[test]
fn a_draining_socket_is_pushed_nothing_more() {
    let s = TestServer::start();
    add_n(&s, 4, "t", json!({}));
    let mut ws = Ws::connect(&s, &qp(), "identity=drainer");
    ws.credit(2);
    let first = ws.expect_task();
    let _second = ws.expect_task();
    ws.send(json!({"op": "drain"}));
    ws.expect_op("drained");
    // Settling gives no credit back while draining: the two tasks left stay in the queue.
    ws.complete(&first, json!("done"));
    ws.expect_op("settled");
    ws.expect_quiet("a draining socket gets no new task");
    assert_eq!(backlog(&s, NS, QUEUE, "activity"), 2);
    // New credit ends the drain.
    ws.credit(1);
    ws.expect_task();
}
