//! Security and hardening (issue 7), black-box over real HTTP(S) against the real binary.
//!
//! - **Auth**: API keys from `tasq key new` (its printed entry pasted into a config) and
//!   hand-made ones (hex SHA-256 computed here) against every endpoint group: the right role
//!   passes, a wrong role or namespace is 403 `permission_denied`, a wrong, malformed or
//!   missing key is 401 `unauthenticated`, and denied requests change nothing. A lease taken in
//!   one namespace cannot be settled with a key for another (HTTP and WebSocket). Probes stay
//!   open; `/metrics` needs its own token. SIGHUP swaps the keys without dropping a parked poll.
//! - **Start-up**: a non-loopback bind with auth off is refused (exit 2, naming `--insecure`)
//!   unless `--insecure` is given.
//! - **TLS**: a certificate generated with rcgen; HTTPS and WSS work end to end, plain HTTP
//!   and a client that does not trust the certificate do not.
//! - **Bounds**, each reached and recovered from: parked polls per queue and in total,
//!   in-flight tasks per queue, WebSocket connections, connections per client, request body
//!   size; and the disk bound, where adds answer 429 while dispatch and settle go on.

mod common;

use common::auth::*;
use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

const A: &str = "activity";

// ---------------------------------------------------------------------------------------
// Keys and config files
// ---------------------------------------------------------------------------------------

/// Runs `tasq key new ARGS`; returns the key (first line) and the rest of stdout (the entry).
fn cli_key_raw(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["key", "new"])
        .args(args)
        .output()
        .expect("run tasq key new");
    assert!(
        out.status.success(),
        "tasq key new {args:?} failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let (key, entry) = text.split_once('\n').expect("key line then entry");
    let key = key.trim().to_string();
    assert!(
        !key.is_empty(),
        "tasq key new printed an empty key:\n{text}"
    );
    (key, entry.to_string())
}

/// A key from `tasq key new --namespace NS --role ROLE` and the printed config entry.
fn cli_key(namespace: &str, role: &str) -> (String, String) {
    cli_key_raw(&["--namespace", namespace, "--role", role])
}

// ---------------------------------------------------------------------------------------
// HTTP with headers
// ---------------------------------------------------------------------------------------

/// An answer: status, parsed body and the `Retry-After` header.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<String>,
}

impl Reply {
    #[track_caller]
    fn denied(&self, status: u16, code: &str) {
        assert_error(self.status, &self.body, status, code);
    }

    #[track_caller]
    fn exhausted(&self) {
        self.denied(429, "resource_exhausted");
        let Some(after) = &self.retry_after else {
            panic!("429 without Retry-After: {self:?}");
        };
        assert!(
            after.trim().parse::<u64>().is_ok(),
            "Retry-After is not a number of seconds: {after:?}"
        );
    }

    #[track_caller]
    fn ok(&self) -> &Value {
        assert!(
            (200..300).contains(&self.status),
            "expected 2xx, got {self:?}"
        );
        &self.body
    }
}

fn build_agent(tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(90))
        .max_idle_connections(0)
        .redirects(0);
    if let Some(tls) = tls {
        b = b.tls_config(tls);
    }
    b.build()
}

fn plain_agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| build_agent(None))
}

/// A client for one server: base URL plus the agent that can talk to it.
#[derive(Clone)]
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn plain(s: &TestServer) -> Client {
        Client {
            base: s.base().to_string(),
            agent: plain_agent().clone(),
        }
    }

    /// Sends a request with a raw `Authorization` header value (or none).
    fn try_call_header(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, String> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        if let Some(a) = authorization {
            req = req.set("Authorization", a);
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = resp.status();
        let retry_after = resp.header("Retry-After").map(str::to_string);
        let text = resp.into_string().map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            body: parse_body(&text),
            retry_after,
        })
    }

    #[track_caller]
    fn call_header(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        self.try_call_header(method, path, authorization, body)
            .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
    }

    /// Sends a request with `Authorization: Bearer KEY` (or no header for `None`).
    #[track_caller]
    fn call(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Reply {
        let header = key.map(|k| format!("Bearer {k}"));
        self.call_header(method, path, header.as_deref(), body)
    }
}

// ---------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

/// Opens `GET {qpath}/connect?identity=ID` as a WebSocket, with the key in the
/// `Authorization` header. An HTTP answer instead of the upgrade comes back as `Err(Reply)`.
fn ws_connect(base: &str, qpath: &str, identity: &str, key: Option<&str>) -> Result<Ws, Reply> {
    let url = format!(
        "{}{qpath}/connect?identity={identity}",
        base.replacen("http://", "ws://", 1)
    );
    let mut req = url.into_client_request().expect("WebSocket request");
    if let Some(k) = key {
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {k}")).expect("header value"),
        );
    }
    match tungstenite::connect(req) {
        Ok((ws, _)) => {
            if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
                s.set_read_timeout(Some(Duration::from_secs(30)))
                    .expect("set read timeout");
            }
            Ok(ws)
        }
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| parse_body(&String::from_utf8_lossy(b)))
                .unwrap_or(Value::Null);
            Err(Reply {
                status: resp.status().as_u16(),
                body,
                retry_after: resp
                    .headers()
                    .get("Retry-After")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            })
        }
        Err(e) => panic!("WebSocket connect to {qpath} failed: {e}"),
    }
}

#[track_caller]
fn ws_ok(base: &str, qpath: &str, identity: &str, key: Option<&str>) -> Ws {
    ws_connect(base, qpath, identity, key)
        .unwrap_or_else(|r| panic!("WebSocket connect refused: {r:?}"))
}

#[track_caller]
fn ws_refused(base: &str, qpath: &str, identity: &str, key: Option<&str>) -> Reply {
    match ws_connect(base, qpath, identity, key) {
        Ok(_) => panic!("WebSocket connect to {qpath} with key {key:?} was accepted"),
        Err(r) => r,
    }
}

/// Closes a socket and reads until the server's close arrives (or the connection ends).
fn ws_close<S: Read + Write>(mut ws: tungstenite::WebSocket<S>) {
    let _ = ws.close(None);
    let deadline = Instant::now() + EVENTUALLY;
    while Instant::now() < deadline {
        if ws.read().is_err() {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Metrics-based waits (auth off, or no metrics token)
// ---------------------------------------------------------------------------------------

/// Polls parked on one queue, from `tasq_pollers`.
fn parked(s: &TestServer, ns: &str, queue: &str) -> f64 {
    metric_sum(
        &metrics_text(s),
        "tasq_pollers",
        &queue_labels(ns, queue, A),
    )
}

#[track_caller]
fn wait_parked(s: &TestServer, ns: &str, queue: &str, n: f64) {
    assert!(
        wait_until(EVENTUALLY, || parked(s, ns, queue) == n),
        "{ns}/{queue} never had {n} parked polls (has {})",
        parked(s, ns, queue)
    );
}

/// Starts a long poll in a thread; joins to (status, body, Retry-After).
fn spawn_poll(
    c: &Client,
    qpath: &str,
    identity: &str,
    wait_ms: u64,
    key: Option<&str>,
) -> JoinHandle<Reply> {
    let c = c.clone();
    let path = format!("{qpath}/poll");
    let body = json!({"identity": identity, "max_tasks": 1, "wait_ms": wait_ms});
    let key = key.map(str::to_string);
    thread::spawn(move || c.call("POST", &path, key.as_deref(), Some(&body)))
}

/// Joins a poll thread and returns its one task (asserting 200 with exactly one).
#[track_caller]
fn joined_task(h: JoinHandle<Reply>) -> Value {
    let r = h.join().expect("poll thread");
    let tasks = r.ok()["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 1, "expected one task: {r:?}");
    tasks[0].clone()
}

// ---------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------

/// One endpoint of the matrix: the role it needs and a request in a given namespace.
struct Endpoint {
    name: &'static str,
    role: &'static str,
    method: &'static str,
    /// Path in the `alpha` namespace; `None` for the beta variant means the namespace comes
    /// from a lease (settles), checked with a beta-only key instead.
    path: String,
    beta_path: Option<String>,
    body: Option<Value>,
}

#[test]
fn every_role_against_every_endpoint_group() {
    // Role keys for namespace alpha from `tasq key new`, their printed entries pasted as is;
    // a hand-made beta-only worker key and a hand-made all-namespace key with every role.
    let (producer, producer_entry) = cli_key("alpha", "producer");
    let (worker, worker_entry) = cli_key("alpha", "worker");
    let (admin, admin_entry) = cli_key("alpha", "admin");
    let (beta_worker, beta_entry) = hand_key("beta-worker", &["beta"], &["worker"]);
    let (root, root_entry) = hand_key("root", &["*"], &["producer", "worker", "admin"]);
    let (s, _dir, _path) = start_with_config(&auth_config(
        "",
        &[
            &producer_entry,
            &worker_entry,
            &admin_entry,
            &beta_entry,
            &root_entry,
        ],
        "",
    ));
    let c = Client::plain(&s);
    let qa = q("alpha", "jobs", A);
    let qb = q("beta", "jobs", A);

    // Set-up with the right keys: T1, T2 leased (L1, L2), T3 pending.
    for id in ["t1", "t2", "t3"] {
        let r = c.call(
            "POST",
            &format!("{qa}/tasks"),
            Some(&producer),
            Some(&json!({"task_type": "t", "task_id": id})),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let r = c.call(
        "POST",
        &format!("{qa}/poll"),
        Some(&worker),
        Some(&json!({"identity": "w", "max_tasks": 2, "wait_ms": 0})),
    );
    let tasks = r.ok()["tasks"].as_array().cloned().unwrap_or_default();
    assert_eq!(tasks.len(), 2, "{r:?}");
    let (l1, l2) = (lease_of(&tasks[0]), lease_of(&tasks[1]));
    let pending: Vec<&str> = ["t1", "t2", "t3"]
        .into_iter()
        .filter(|id| tasks.iter().all(|t| t["task_id"] != json!(id)))
        .collect();
    assert_eq!(pending.len(), 1, "{tasks:?}");
    let pending = pending[0];

    let ep = |name, role, method, path: String, beta_path: Option<String>, body: Option<Value>| {
        Endpoint {
            name,
            role,
            method,
            path,
            beta_path,
            body,
        }
    };
    let endpoints = vec![
        ep(
            "add",
            "producer",
            "POST",
            format!("{qa}/tasks"),
            Some(format!("{qb}/tasks")),
            Some(json!({"task_type": "t"})),
        ),
        ep(
            "batch",
            "producer",
            "POST",
            format!("{qa}/tasks/batch"),
            Some(format!("{qb}/tasks/batch")),
            Some(json!({"tasks": [{"task_type": "t"}]})),
        ),
        ep(
            "status",
            "producer",
            "GET",
            format!("{qa}/tasks/t1"),
            Some(format!("{qb}/tasks/t1")),
            None,
        ),
        ep(
            "cancel",
            "producer",
            "DELETE",
            format!("{qa}/tasks/{pending}"),
            Some(format!("{qb}/tasks/{pending}")),
            None,
        ),
        ep(
            "poll",
            "worker",
            "POST",
            format!("{qa}/poll"),
            Some(format!("{qb}/poll")),
            Some(json!({"identity": "w2", "max_tasks": 1, "wait_ms": 0})),
        ),
        ep(
            "heartbeat",
            "worker",
            "POST",
            format!("/api/v1/leases/{l1}/heartbeat"),
            None,
            Some(json!({"details": null})),
        ),
        ep(
            "complete",
            "worker",
            "POST",
            format!("/api/v1/leases/{l1}/complete"),
            None,
            Some(json!({"result": 1})),
        ),
        ep(
            "fail",
            "worker",
            "POST",
            format!("/api/v1/leases/{l2}/fail"),
            None,
            Some(json!({"error": {"message": "no"}})),
        ),
        ep(
            "config",
            "admin",
            "PUT",
            format!("{qa}/config"),
            Some(format!("{qb}/config")),
            Some(json!({"max_tasks_per_second": null})),
        ),
        ep(
            "dead-letters",
            "admin",
            "GET",
            format!("{qa}/dead-letters"),
            Some(format!("{qb}/dead-letters")),
            None,
        ),
        ep(
            "redrive",
            "admin",
            "POST",
            format!("{qa}/dead-letters/redrive"),
            Some(format!("{qb}/dead-letters/redrive")),
            Some(json!({"all": true})),
        ),
        ep(
            "describe",
            "admin",
            "GET",
            describe_path("alpha", "jobs"),
            Some(describe_path("beta", "jobs")),
            None,
        ),
        ep(
            "list",
            "admin",
            "GET",
            "/api/v1/namespaces/alpha/task-queues".into(),
            Some("/api/v1/namespaces/beta/task-queues".into()),
            None,
        ),
    ];
    let role_keys = [
        ("producer", producer.as_str()),
        ("worker", worker.as_str()),
        ("admin", admin.as_str()),
    ];
    let snapshot = |c: &Client| {
        let d = c.call("GET", &describe_path("alpha", "jobs"), Some(&admin), None);
        let st = d.ok()["types"][A].clone();
        let status = c.call(
            "GET",
            &format!("{qa}/tasks/{pending}"),
            Some(&producer),
            None,
        );
        (
            stat_u64(&st, "backlog_count"),
            stat_u64(&st, "in_flight_count"),
            stat_u64(&st, "dead_letter_count"),
            status.ok()["state"].clone(),
        )
    };
    let before = snapshot(&c);
    assert_eq!(before, (1, 2, 0, json!("pending")));

    // Pass 1: everything that must be refused, before anything is allowed to act.
    for e in &endpoints {
        let body = e.body.as_ref();
        let what = |who: &str| format!("{} {} ({}) with {who}", e.method, e.path, e.name);
        for (role, key) in role_keys {
            // An admin key reads everything (status included).
            if role == e.role || (role == "admin" && e.method == "GET") {
                continue;
            }
            let r = c.call(e.method, &e.path, Some(key), body);
            assert_eq!(r.status, 403, "{}: {r:?}", what(role));
            r.denied(403, "permission_denied");
        }
        // The right role in a namespace the key does not cover.
        let right = role_keys
            .iter()
            .find(|(r, _)| *r == e.role)
            .expect("role")
            .1;
        if let Some(beta) = &e.beta_path {
            let r = c.call(e.method, beta, Some(right), body);
            assert_eq!(r.status, 403, "{} {beta} with the alpha key: {r:?}", e.name);
            r.denied(403, "permission_denied");
        }
        // A worker key for beta only: for settles the namespace comes from the lease.
        let r = c.call(e.method, &e.path, Some(&beta_worker), body);
        assert_eq!(r.status, 403, "{}: {r:?}", what("the beta worker key"));
        r.denied(403, "permission_denied");
        // No valid key.
        let wrong = format!("tq_{}", uuid::Uuid::new_v4().simple());
        c.call(e.method, &e.path, Some(&wrong), body)
            .denied(401, "unauthenticated");
        c.call(e.method, &e.path, None, body)
            .denied(401, "unauthenticated");
        c.call_header(e.method, &e.path, Some(&format!("Basic {right}")), body)
            .denied(401, "unauthenticated");
        c.call_header(e.method, &e.path, Some("Bearer "), body)
            .denied(401, "unauthenticated");
        // The key's digest is not the key.
        c.call(e.method, &e.path, Some(&sha256_hex(right)), body)
            .denied(401, "unauthenticated");
    }
    // connect: the WebSocket handshake carries the key in the Authorization header.
    for key in [&producer, &admin] {
        ws_refused(s.base(), &qa, "ws", Some(key)).denied(403, "permission_denied");
    }
    ws_refused(s.base(), &qa, "ws", Some(&beta_worker)).denied(403, "permission_denied");
    ws_refused(s.base(), &qb, "ws", Some(&worker)).denied(403, "permission_denied");
    ws_refused(s.base(), &qa, "ws", Some("tq_wrong")).denied(401, "unauthenticated");
    ws_refused(s.base(), &qa, "ws", None).denied(401, "unauthenticated");
    assert_eq!(
        snapshot(&c),
        before,
        "refused requests must change nothing (backlog, in flight, dead letters, T3)"
    );

    // Pass 2: the right role acts.
    for e in &endpoints {
        let right = role_keys
            .iter()
            .find(|(r, _)| *r == e.role)
            .expect("role")
            .1;
        let r = c.call(e.method, &e.path, Some(right), e.body.as_ref());
        assert!(
            (200..300).contains(&r.status),
            "{} {} ({}) with the {} key: {r:?}",
            e.method,
            e.path,
            e.name,
            e.role
        );
    }
    let mut ws = ws_ok(s.base(), &qa, "ws", Some(&worker));
    ws_send(&mut ws, json!({"op": "credit", "n": 1}));
    let r = c.call(
        "POST",
        &format!("{qa}/tasks"),
        Some(&producer),
        Some(&json!({"task_type": "t", "task_id": "via-ws"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    // The socket may first get tasks left by the matrix; settle each until ours is settled.
    let deadline = Instant::now() + EVENTUALLY;
    let mut ours = None;
    loop {
        assert!(Instant::now() < deadline, "task via-ws was never settled");
        let f = ws_next(&mut ws);
        match f["op"].as_str() {
            Some("task") => {
                let lease = lease_of(&f["task"]);
                if f["task"]["task_id"] == json!("via-ws") {
                    ours = Some(lease.clone());
                }
                ws_send(
                    &mut ws,
                    json!({"op": "complete", "lease": lease, "result": null}),
                );
            }
            Some("settled") => {
                assert_eq!(f["state"], json!("completed"), "{f}");
                if ours.is_some() && f["lease"].as_str() == ours.as_deref() {
                    break;
                }
            }
            _ => panic!("unexpected frame {f}"),
        }
    }
    ws_close(ws);

    // A key for every namespace and role acts anywhere.
    let r = c.call(
        "POST",
        &format!("{qb}/tasks"),
        Some(&root),
        Some(&json!({"task_type": "t"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let d = c.call("GET", &describe_path("beta", "jobs"), Some(&root), None);
    assert_eq!(stat_u64(&d.ok()["types"][A], "backlog_count"), 1, "{d:?}");
    let r = c.call(
        "POST",
        &format!("{qb}/poll"),
        Some(&beta_worker),
        Some(&json!({"identity": "b", "max_tasks": 1, "wait_ms": 0})),
    );
    assert_eq!(r.ok()["tasks"].as_array().map(Vec::len), Some(1), "{r:?}");
}

#[test]
fn probes_are_open_and_metrics_needs_its_own_token() {
    let (admin, admin_entry) = hand_key("admin", &["*"], &["admin"]);
    let token = format!("metrics-{}", uuid::Uuid::new_v4().simple());
    let (s, _dir, _path) = start_with_config(&auth_config(
        &format!("metrics_token_sha256 = \"{}\"", sha256_hex(&token)),
        &[&admin_entry],
        "",
    ));
    let c = Client::plain(&s);
    for path in ["/healthz", "/readyz"] {
        let r = c.call("GET", path, None, None);
        assert_eq!(r.status, 200, "{path} must stay open: {r:?}");
    }
    c.call("GET", "/metrics", None, None)
        .denied(401, "unauthenticated");
    c.call("GET", "/metrics", Some("not-the-token"), None)
        .denied(401, "unauthenticated");
    let (status, ctype, text) = {
        let resp = plain_agent()
            .get(&s.url("/metrics"))
            .set("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET /metrics with the token");
        let ctype = resp.content_type().to_string();
        (resp.status(), ctype, resp.into_string().expect("body"))
    };
    assert_eq!(status, 200);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    assert!(text.contains("tasq_"), "{text}");
    // The API keys still work on the API while /metrics is guarded.
    let r = c.call("GET", &describe_path("a", "q"), Some(&admin), None);
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_lease_cannot_be_settled_with_a_key_for_another_namespace() {
    let (alpha, alpha_entry) = hand_key("alpha-worker", &["alpha"], &["worker"]);
    let (beta, beta_entry) = hand_key("beta-worker", &["beta"], &["worker"]);
    let (producer, producer_entry) = hand_key("producer", &["*"], &["producer"]);
    let (s, _dir, _path) = start_with_config(&auth_config(
        "",
        &[&alpha_entry, &beta_entry, &producer_entry],
        "",
    ));
    let c = Client::plain(&s);
    let qa = q("alpha", "jobs", A);
    for id in ["x1", "x2"] {
        let r = c.call(
            "POST",
            &format!("{qa}/tasks"),
            Some(&producer),
            Some(&json!({"task_type": "t", "task_id": id})),
        );
        assert_eq!(r.status, 201, "{r:?}");
    }
    let poll = |id: &str| {
        let r = c.call(
            "POST",
            &format!("{qa}/poll"),
            Some(&alpha),
            Some(&json!({"identity": id, "max_tasks": 1, "wait_ms": 0})),
        );
        let tasks = r.ok()["tasks"].as_array().cloned().unwrap_or_default();
        assert_eq!(tasks.len(), 1, "{r:?}");
        tasks[0].clone()
    };
    let task = poll("w1");
    let lease = lease_of(&task);
    let id = task["task_id"].as_str().expect("task_id").to_string();

    // Over HTTP: the beta key holds the worker role, but not in alpha.
    for (op, body) in [
        ("heartbeat", json!({"details": null})),
        (
            "fail",
            json!({"error": {"message": "x"}, "non_retryable": true}),
        ),
        ("complete", json!({"result": "stolen"})),
    ] {
        let r = c.call(
            "POST",
            &format!("/api/v1/leases/{lease}/{op}"),
            Some(&beta),
            Some(&body),
        );
        r.denied(403, "permission_denied");
    }
    // In a settle many the item fails on its own: 200, its error permission_denied.
    let r = c.call(
        "POST",
        "/api/v1/leases/settle",
        Some(&beta),
        Some(&json!({"settles": [{"lease": lease, "op": "complete", "result": "stolen"}]})),
    );
    assert_eq!(
        r.ok()["results"][0]["error"]["code"],
        json!("permission_denied"),
        "{r:?}"
    );
    let st = c.call("GET", &format!("{qa}/tasks/{id}"), Some(&producer), None);
    assert_eq!(st.ok()["state"], json!("running"), "{st:?}");

    // Over a WebSocket opened with the beta key (on a beta queue): the settle frame is
    // refused, the socket stays usable.
    let mut ws = ws_ok(s.base(), &q("beta", "jobs", A), "b", Some(&beta));
    ws_send(
        &mut ws,
        json!({"op": "complete", "lease": lease, "result": "stolen"}),
    );
    let f = ws_next(&mut ws);
    assert_eq!(f["op"], json!("error"), "{f}");
    assert_eq!(f["lease"], json!(lease), "{f}");
    assert_eq!(f["error"]["code"], json!("permission_denied"), "{f}");
    ws_send(&mut ws, json!({"op": "heartbeat", "lease": lease}));
    let f = ws_next(&mut ws);
    assert_eq!(f["error"]["code"], json!("permission_denied"), "{f}");
    ws_close(ws);
    let st = c.call("GET", &format!("{qa}/tasks/{id}"), Some(&producer), None);
    assert_eq!(st.ok()["state"], json!("running"), "{st:?}");

    // The alpha key settles it.
    let r = c.call(
        "POST",
        &format!("/api/v1/leases/{lease}/heartbeat"),
        Some(&alpha),
        Some(&json!({"details": 1})),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.call(
        "POST",
        &format!("/api/v1/leases/{lease}/complete"),
        Some(&alpha),
        Some(&json!({"result": "done"})),
    );
    assert_eq!(r.ok()["state"], json!("completed"), "{r:?}");
    let st = c.call("GET", &format!("{qa}/tasks/{id}"), Some(&producer), None);
    assert_eq!(st.ok()["result"], json!("done"), "{st:?}");

    // And over a WebSocket opened with the alpha key.
    let mut ws = ws_ok(s.base(), &qa, "a", Some(&alpha));
    ws_send(&mut ws, json!({"op": "credit", "n": 1}));
    let f = ws_next(&mut ws);
    assert_eq!(f["op"], json!("task"), "{f}");
    let lease2 = lease_of(&f["task"]);
    ws_send(
        &mut ws,
        json!({"op": "complete", "lease": lease2, "result": 2}),
    );
    let f = ws_next(&mut ws);
    assert_eq!(f["op"], json!("settled"), "{f}");
    assert_eq!(f["state"], json!("completed"), "{f}");
    ws_close(ws);
}

#[test]
fn key_new_prints_a_key_and_only_its_hash() {
    let args = [
        "--namespace",
        "orders",
        "--namespace",
        "billing",
        "--role",
        "producer",
        "--role",
        "admin",
        "--name",
        "ops",
    ];
    let (key, entry) = cli_key_raw(&args);
    let (key2, _) = cli_key_raw(&args);
    assert_ne!(key, key2, "two runs must print different keys");
    assert!(
        key.len() >= 32 && !key.contains(char::is_whitespace),
        "{key:?}"
    );
    assert!(
        !entry.contains(&key),
        "the entry must not hold the key:\n{entry}"
    );
    let parsed: toml::Table = toml::from_str(&entry)
        .unwrap_or_else(|e| panic!("the printed entry is not TOML ({e}):\n{entry}"));
    let keys = parsed["auth"]["keys"].as_array().expect("auth.keys array");
    assert_eq!(keys.len(), 1, "{entry}");
    let k = &keys[0];
    assert_eq!(k["sha256"].as_str(), Some(sha256_hex(&key).as_str()));
    assert_eq!(k["name"].as_str(), Some("ops"));
    let strings = |v: &toml::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("string").to_string())
            .collect()
    };
    assert_eq!(strings(&k["namespaces"]), ["orders", "billing"]);
    assert_eq!(strings(&k["roles"]), ["producer", "admin"]);

    // Pasted under [auth], the entry gives exactly those roles in those namespaces.
    let (s, _dir, _path) = start_with_config(&auth_config("", &[&entry], ""));
    let c = Client::plain(&s);
    for ns in ["orders", "billing"] {
        let r = c.call(
            "POST",
            &format!("{}/tasks", q(ns, "q", A)),
            Some(&key),
            Some(&json!({"task_type": "t"})),
        );
        assert_eq!(r.status, 201, "{r:?}");
        let r = c.call("GET", &describe_path(ns, "q"), Some(&key), None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    c.call(
        "POST",
        &format!("{}/poll", q("orders", "q", A)),
        Some(&key),
        Some(&json!({"identity": "w", "wait_ms": 0})),
    )
    .denied(403, "permission_denied");
    c.call("GET", &describe_path("other", "q"), Some(&key), None)
        .denied(403, "permission_denied");
}

#[test]
fn sighup_swaps_keys_without_dropping_a_parked_poll() {
    let (k1, k1_entry) = hand_key("k1", &["*"], &["producer", "worker", "admin"]);
    let (k2, k2_entry) = hand_key("k2", &["*"], &["producer", "worker", "admin"]);
    let (s, _dir, path) = start_with_config(&auth_config("", &[&k1_entry], ""));
    let c = Client::plain(&s);
    let qp = q("ns", "hup", A);
    let describe = describe_path("ns", "hup");
    assert_eq!(c.call("GET", &describe, Some(&k1), None).status, 200);
    c.call("GET", &describe, Some(&k2), None)
        .denied(401, "unauthenticated");

    // A long poll authenticated with K1 parks (/metrics is open: no token configured).
    let poll = spawn_poll(&c, &qp, "parked", 60_000, Some(&k1));
    wait_parked(&s, "ns", "hup", 1.0);

    std::fs::write(&path, auth_config("", &[&k2_entry], "")).expect("rewrite config");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(s.pid().to_string())
        .status()
        .expect("run kill -HUP");
    assert!(status.success(), "kill -HUP failed: {status}");
    let flipped = wait_until(EVENTUALLY, || {
        c.call("GET", &describe, Some(&k2), None).status == 200
    });
    assert!(flipped, "K2 never worked after SIGHUP:\n{}", s.stderr());
    c.call("GET", &describe, Some(&k1), None)
        .denied(401, "unauthenticated");

    // The poll parked before the reload is still there and gets the next task.
    assert!(!poll.is_finished(), "the parked poll ended on reload");
    assert_eq!(parked(&s, "ns", "hup"), 1.0);
    let r = c.call(
        "POST",
        &format!("{qp}/tasks"),
        Some(&k2),
        Some(&json!({"task_type": "t", "task_id": "after-hup"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let task = joined_task(poll);
    assert_eq!(task["task_id"], json!("after-hup"));
    let lease = lease_of(&task);
    c.call(
        "POST",
        &format!("/api/v1/leases/{lease}/complete"),
        Some(&k1),
        Some(&json!({"result": null})),
    )
    .denied(401, "unauthenticated");
    let r = c.call(
        "POST",
        &format!("/api/v1/leases/{lease}/complete"),
        Some(&k2),
        Some(&json!({"result": null})),
    );
    assert_eq!(r.ok()["state"], json!("completed"), "{r:?}");
}

// ---------------------------------------------------------------------------------------
// Start-up
// ---------------------------------------------------------------------------------------

#[test]
fn non_loopback_bind_with_auth_off_needs_insecure() {
    let (status, stderr) = run_to_exit(&["--bind", "0.0.0.0:0"], &[], Duration::from_secs(30));
    let status = status.unwrap_or_else(|| panic!("served 0.0.0.0 with auth off:\n{stderr}"));
    assert_eq!(status.code(), Some(2), "{status:?}\n{stderr}");
    assert!(
        stderr.contains("--insecure"),
        "stderr must name --insecure:\n{stderr}"
    );

    // With --insecure it serves (reached over loopback only).
    let s = TestServer::start_with(&["--bind", "0.0.0.0:0", "--insecure"], &[]);
    assert!(s.base().starts_with("http://127.0.0.1:"), "{}", s.base());
    let c = Client::plain(&s);
    let r = c.call(
        "POST",
        &format!("{}/tasks", q(NS, "open", A)),
        None,
        Some(&json!({"task_type": "t"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    drop(s);

    // With auth on, a non-loopback bind needs no --insecure.
    let (key, entry) = hand_key("k", &["*"], &["admin"]);
    let (_dir, path) = config_file(&auth_config("", &[&entry], ""));
    let s = TestServer::start_with(
        &[
            "--bind",
            "0.0.0.0:0",
            "--config",
            path.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    let c = Client::plain(&s);
    c.call("GET", &describe_path(NS, "q"), None, None)
        .denied(401, "unauthenticated");
    assert_eq!(
        c.call("GET", &describe_path(NS, "q"), Some(&key), None)
            .status,
        200
    );
}

// ---------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------

#[test]
fn tls_serves_https_and_wss_with_a_generated_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("generate certificate");
    let dir = tempfile::Builder::new()
        .prefix("tasq-tls-")
        .tempdir()
        .expect("temp dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let (_cdir, config) = config_file(&format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert_path.to_str().expect("utf-8"),
        key_path.to_str().expect("utf-8")
    ));
    let s = TestServer::start_unready(&["--config", config.to_str().expect("utf-8")], &[]);
    assert!(
        s.base().starts_with("https://127.0.0.1:"),
        "the listening line must say https://: {}",
        s.base()
    );
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("add root");
    let tls = tls_client_config(roots);
    let c = Client {
        base: s.base().to_string(),
        agent: build_agent(Some(tls.clone())),
    };
    assert!(
        wait_until(EVENTUALLY, || c
            .try_call_header("GET", "/readyz", None, None)
            .is_ok_and(|r| r.status == 200)),
        "not ready over HTTPS:\n{}",
        s.stderr()
    );

    // add → poll → complete over HTTPS.
    let qp = q(NS, "tls", A);
    let r = c.call(
        "POST",
        &format!("{qp}/tasks"),
        None,
        Some(&json!({"task_type": "t", "task_id": "secret", "payload": {"n": 1}})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let r = c.call(
        "POST",
        &format!("{qp}/poll"),
        None,
        Some(&json!({"identity": "w", "max_tasks": 1, "wait_ms": 5000})),
    );
    let task = r.ok()["tasks"][0].clone();
    assert_eq!(task["payload"], json!({"n": 1}), "{r:?}");
    let r = c.call(
        "POST",
        &format!("/api/v1/leases/{}/complete", lease_of(&task)),
        None,
        Some(&json!({"result": "ok"})),
    );
    assert_eq!(r.ok()["state"], json!("completed"), "{r:?}");
    let r = c.call("GET", &format!("{qp}/tasks/secret"), None, None);
    assert_eq!(r.ok()["result"], json!("ok"), "{r:?}");

    // WSS: the streaming route over the same TLS listener.
    let r = c.call(
        "POST",
        &format!("{qp}/tasks"),
        None,
        Some(&json!({"task_type": "t", "task_id": "over-wss"})),
    );
    assert_eq!(r.status, 201, "{r:?}");
    let port = s.base().rsplit(':').next().expect("port").to_string();
    let mut ws = wss_connect(&port, &format!("{qp}/connect?identity=wss"), tls.clone());
    let f = ws_take_and_complete(&mut ws, "over-wss");
    assert_eq!(f["state"], json!("completed"), "{f}");
    ws_close(ws);

    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://127.0.0.1:{port}/healthz");
    match plain_agent().get(&plain).call() {
        Err(ureq::Error::Transport(_)) => {}
        Ok(r) => panic!("plain HTTP to the TLS port answered {}", r.status()),
        Err(ureq::Error::Status(code, _)) => {
            panic!("plain HTTP to the TLS port answered {code}")
        }
    }
    // A client that does not trust the certificate refuses the server.
    let untrusting = build_agent(None);
    assert!(
        untrusting.get(&s.url("/healthz")).call().is_err(),
        "a client without the certificate as root must fail the handshake"
    );
}

// ---------------------------------------------------------------------------------------
// Bounds
// ---------------------------------------------------------------------------------------

#[test]
fn parked_polls_per_queue_bound() {
    let (s, _dir, _path) = start_with_config("[limits]\nmax_parked_polls_per_queue = 2\n");
    let c = Client::plain(&s);
    let qp = q(NS, "parked", A);
    let p1 = spawn_poll(&c, &qp, "p1", 60_000, None);
    wait_parked(&s, NS, "parked", 1.0);
    let p2 = spawn_poll(&c, &qp, "p2", 60_000, None);
    wait_parked(&s, NS, "parked", 2.0);

    let third = json!({"identity": "p3", "max_tasks": 1, "wait_ms": 2_000});
    c.call("POST", &format!("{qp}/poll"), None, Some(&third))
        .exhausted();
    // The bound is per queue: another queue still parks (and times out empty).
    let r = c.call(
        "POST",
        &format!("{}/poll", q(NS, "elsewhere", A)),
        None,
        Some(&json!({"identity": "o", "max_tasks": 1, "wait_ms": 300})),
    );
    assert_eq!(r.ok()["tasks"], json!([]), "{r:?}");

    // One returns (the first parked gets the task); then a new poll parks again.
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "first"}));
    assert_eq!(joined_task(p1)["task_id"], json!("first"));
    wait_parked(&s, NS, "parked", 1.0);
    let p3 = spawn_poll(&c, &qp, "p3", 60_000, None);
    wait_parked(&s, NS, "parked", 2.0);
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "second"}));
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "third"}));
    let mut got = [joined_task(p2), joined_task(p3)]
        .map(|t| t["task_id"].as_str().expect("id").to_string())
        .to_vec();
    got.sort();
    assert_eq!(got, ["second", "third"]);
}

#[test]
fn parked_polls_total_bound() {
    let (s, _dir, _path) = start_with_config("[limits]\nmax_parked_polls = 2\n");
    let c = Client::plain(&s);
    let (q1, q2, q3) = (q(NS, "t1", A), q(NS, "t2", A), q(NS, "t3", A));
    let p1 = spawn_poll(&c, &q1, "p1", 60_000, None);
    wait_parked(&s, NS, "t1", 1.0);
    let p2 = spawn_poll(&c, &q2, "p2", 60_000, None);
    wait_parked(&s, NS, "t2", 1.0);
    let body = json!({"identity": "p3", "max_tasks": 1, "wait_ms": 2_000});
    c.call("POST", &format!("{q3}/poll"), None, Some(&body))
        .exhausted();

    add_task(&s, &q1, json!({"task_type": "t", "task_id": "one"}));
    assert_eq!(joined_task(p1)["task_id"], json!("one"));
    wait_parked(&s, NS, "t1", 0.0);
    let p3 = spawn_poll(&c, &q3, "p3", 60_000, None);
    wait_parked(&s, NS, "t3", 1.0);
    add_task(&s, &q3, json!({"task_type": "t", "task_id": "three"}));
    assert_eq!(joined_task(p3)["task_id"], json!("three"));
    add_task(&s, &q2, json!({"task_type": "t", "task_id": "two"}));
    assert_eq!(joined_task(p2)["task_id"], json!("two"));
}

#[test]
fn in_flight_per_queue_bound() {
    let (s, _dir, _path) = start_with_config("[limits]\nmax_in_flight_per_queue = 2\n");
    let c = Client::plain(&s);
    let qp = q(NS, "busy", A);
    for i in 0..4 {
        add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": format!("b{i}")}),
        );
    }
    let first = poll_one(&s, &qp, "w", 0).expect("a task");
    let _second = poll_one(&s, &qp, "w", 0).expect("a task");
    for wait_ms in [0, 5_000] {
        let body = json!({"identity": "w", "max_tasks": 1, "wait_ms": wait_ms});
        c.call("POST", &format!("{qp}/poll"), None, Some(&body))
            .exhausted();
    }
    assert_eq!(stat_u64(&stats(&s, NS, "busy", A), "in_flight_count"), 2);
    let (status, body) = complete(&s, &lease_of(&first), json!(null));
    assert_eq!(status, 200, "{body}");
    let third = poll_one(&s, &qp, "w", 0).expect("a poll after a settle gets a task");
    assert_ne!(third["task_id"], first["task_id"]);
    c.call(
        "POST",
        &format!("{qp}/poll"),
        None,
        Some(&json!({"identity": "w", "max_tasks": 1, "wait_ms": 0})),
    )
    .exhausted();
    // Another queue is not affected.
    add_task(&s, &q(NS, "calm", A), json!({"task_type": "t"}));
    assert!(poll_one(&s, &q(NS, "calm", A), "w", 0).is_some());
}

#[test]
fn websocket_bound() {
    let (s, _dir, _path) = start_with_config("[limits]\nmax_websockets = 1\n");
    let qp = q(NS, "sockets", A);
    let ws1 = ws_ok(s.base(), &qp, "one", None);
    assert!(
        wait_until(EVENTUALLY, || metric_sum(
            &metrics_text(&s),
            "tasq_websocket_connections",
            &[]
        ) == 1.0),
        "tasq_websocket_connections never showed the open socket"
    );
    ws_refused(s.base(), &qp, "two", None).exhausted();
    ws_close(ws1);
    let mut ws2 = None;
    let opened = wait_until(EVENTUALLY, || {
        match ws_connect(s.base(), &qp, "two", None) {
            Ok(ws) => {
                ws2 = Some(ws);
                true
            }
            Err(r) => {
                r.exhausted();
                false
            }
        }
    });
    assert!(opened, "no WebSocket could open after the first closed");
    let mut ws2 = ws2.expect("socket");
    ws_send(&mut ws2, json!({"op": "credit", "n": 1}));
    add_task(&s, &qp, json!({"task_type": "t", "task_id": "ws"}));
    let f = ws_next(&mut ws2);
    assert_eq!(f["task"]["task_id"], json!("ws"), "{f}");
    ws_close(ws2);
}

/// Sends one keep-alive request on `stream` and reads its answer: (status, head, body).
fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String, Value) {
    stream.write_all(request.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if buf.len() >= pos + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let body = parse_body(&String::from_utf8_lossy(&buf[pos + 4..pos + 4 + len]));
                return (status, head, body);
            }
        }
        let n = stream.read(&mut chunk).expect("read answer");
        assert!(n > 0, "connection closed before the answer was read");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn connections_per_client_bound() {
    const MAX: usize = 3;
    let (s, _dir, _path) =
        start_with_config(&format!("[limits]\nmax_connections_per_client = {MAX}\n"));
    let addr = s.base().trim_start_matches("http://").to_string();
    let request = |close: bool| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: {}\r\n\r\n",
            if close { "close" } else { "keep-alive" }
        )
    };
    let open = || {
        let s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        s
    };
    // MAX connections, each used (so each is surely counted) and kept open.
    let mut held: Vec<TcpStream> = Vec::new();
    for i in 0..MAX {
        let mut conn = open();
        let (status, head, body) = exchange(&mut conn, &request(false));
        assert_eq!(status, 200, "held connection #{i}: {head}\n{body}");
        held.push(conn);
    }
    // One more: its request is refused.
    let mut extra = open();
    let (status, head, body) = exchange(&mut extra, &request(true));
    assert_error(status, &body, 429, "resource_exhausted");
    assert!(
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("retry-after:")),
        "429 without Retry-After:\n{head}"
    );
    drop(extra);
    // Close two: new connections work again.
    held.truncate(MAX - 2);
    let recovered = wait_until(EVENTUALLY, || {
        let mut conn = open();
        exchange(&mut conn, &request(true)).0 == 200
    });
    assert!(recovered, "new connections stayed refused after two closed");
    drop(held);
}

#[test]
fn request_body_bound() {
    let (s, _dir, _path) = start_with_config("max_payload_bytes = 2000\n");
    let path = format!("{}/tasks", q(NS, "sizes", A));
    let (status, body) = raw_request(
        s.base(),
        "POST",
        &path,
        task_body_of_size(2001).into_bytes(),
    );
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = raw_request(
        s.base(),
        "POST",
        &path,
        task_body_of_size(2000).into_bytes(),
    );
    assert_eq!(status, 201, "{body}");
    // Far over the bound: still 413, and the server goes on.
    let big = json!({"task_type": "t", "payload": "y".repeat(50_000)});
    let r = Client::plain(&s).call("POST", &path, None, Some(&big));
    r.denied(413, "payload_too_large");
    add_task(&s, &q(NS, "sizes", A), json!({"task_type": "t"}));
    assert_eq!(backlog(&s, NS, "sizes", A), 2);
}

#[test]
fn disk_bound_refuses_adds_while_dispatch_and_settle_go_on() {
    // An empty store is a few hundred bytes; each task here carries 20 KB. The bound is on
    // the sled store's files in data_dir (PostgreSQL guards its own disk).
    let (_dir, path) = config_file("completed_retention = \"1s\"\n[storage]\nmax_bytes = 300000\n");
    let s = TestServer::start_with(
        &["--config", path.to_str().expect("utf-8 path")],
        &[("TASQ_STORAGE_BACKEND", "sled")],
    );
    let c = Client::plain(&s);
    let qp = q(NS, "disk", A);
    let payload = "z".repeat(20_000);
    let mut accepted: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refused = loop {
        assert!(
            Instant::now() < deadline && accepted.len() < 500,
            "adds never answered 429 ({} accepted)",
            accepted.len()
        );
        let id = format!("d{}", accepted.len());
        let r = c.call(
            "POST",
            &format!("{qp}/tasks"),
            None,
            Some(&json!({"task_type": "t", "task_id": id, "payload": payload})),
        );
        match r.status {
            201 => accepted.push(id),
            429 => break r,
            _ => panic!("add answered {r:?}"),
        }
        thread::sleep(Duration::from_millis(50));
    };
    refused.exhausted();
    // 20 KB tasks against a 300 KB bound: more than one is accepted before the first 429.
    assert!(accepted.len() >= 2, "{} accepted", accepted.len());
    // A batch larger than the whole bound is refused whatever the watcher measured last (a
    // measurement of the live data may already have let single adds in again).
    let batch = json!({"tasks": vec![json!({"task_type": "t", "payload": payload}); 16]});
    c.call("POST", &format!("{qp}/tasks/batch"), None, Some(&batch))
        .exhausted();

    // While full: every acknowledged task is dispatched and settled, status reads work. One
    // task fails for good (a dead letter, kept until redriven); the rest complete and are
    // purged after `completed_retention`, so the store gets back under the bound however many
    // adds the size watcher let in before it noticed (more dead letters could keep it over).
    let mut seen = Vec::new();
    for i in 0..accepted.len() {
        let task = poll_one(&s, &qp, "drain", 0).expect("a pending task");
        let lease = lease_of(&task);
        let (status, body) = if i != 1 {
            heartbeat(&s, &lease, json!(null));
            complete(&s, &lease, json!(i))
        } else {
            fail(
                &s,
                &lease,
                json!({"error": {"message": "x"}, "non_retryable": true}),
            )
        };
        assert_eq!(status, 200, "settle while full: {body}");
        seen.push(task["task_id"].as_str().expect("id").to_string());
    }
    seen.sort();
    accepted.sort();
    assert_eq!(seen, accepted, "every acknowledged task must drain");
    assert!(poll_one(&s, &qp, "drain", 0).is_none());
    for id in &accepted {
        // Finished, or already purged: under disk pressure finished records go before their
        // completed_retention ends (README, "A full disk is a 429"); the drain above already
        // saw every acknowledged task.
        let (code, st) = get(&s.url(&format!("{qp}/tasks/{id}")));
        assert!(
            code == 404 || st["state"] == json!("completed") || st["state"] == json!("failed"),
            "{code} {st}"
        );
    }
    // Dead letters can still be read (redrive is an add in all but name, not checked here).
    let r = c.call("GET", &format!("{qp}/dead-letters"), None, None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(c.call("GET", "/readyz", None, None).status == 200);

    // Recovered: once completed records are purged, the live data is under the bound again
    // (sled's files do not shrink; the bound is on what the store holds) and adds resume.
    let resumed = wait_until(Duration::from_secs(60), || {
        let r = c.call(
            "POST",
            &format!("{qp}/tasks"),
            None,
            Some(&json!({"task_type": "t", "payload": "small"})),
        );
        r.status == 201
    });
    assert!(resumed, "adds never resumed after the store drained");
}
