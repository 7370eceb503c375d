//! A cluster of three tasq processes on one real PostgreSQL database (loopback): every node
//! serves every queue (requests for a queue owned elsewhere are forwarded), and kill -9 of a
//! queue's owner under producers and workers spread over the other nodes loses no
//! acknowledged task and dispatches no completed one again.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL's programs); `.ci/postgres` runs them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const NS: &str = "cluster";
const A: &str = "activity";

/// Three nodes on a fresh database, named n1..n3; a node is unheard of after 2 s.
fn cluster() -> (String, Vec<TestServer>) {
    common::cluster::three_nodes()
}

/// The node that owns `queue` now, as the database says (`None`: nobody took it yet).
fn owner_of(url: &str, queue: &str) -> Option<String> {
    let mut db = common::postgres::connect(url, Duration::from_secs(10));
    db.query_opt(
        "SELECT owner FROM tasq_owners WHERE namespace = $1 AND queue = $2",
        &[&NS, &queue],
    )
    .expect("read the owner")
    .map(|r| r.get(0))
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn every_node_serves_every_queue() {
    let (url, nodes) = cluster();
    let mut owners = BTreeSet::new();
    for i in 0..12 {
        let name = format!("q{i}");
        let qp = q(NS, &name, A);
        let (adder, poller, settler) = (&nodes[i % 3], &nodes[(i + 1) % 3], &nodes[(i + 2) % 3]);
        let id = add_task(adder, &qp, json!({"task_type": "t", "payload": {"i": i}}));
        let task = poll_one(poller, &qp, "w", 5000).expect("the task, polled through any node");
        assert_eq!(task["task_id"], json!(id));
        let (code, body) = complete(settler, &lease_of(&task), json!(i));
        assert_eq!(code, 200, "complete through any node: {body}");
        for n in &nodes {
            assert_eq!(status_of(n, &qp, &id)["state"], json!("completed"));
        }
        owners.insert(owner_of(&url, &name).expect("an owner"));
    }
    assert!(owners.len() > 1, "12 queues all on one node: {owners:?}");
    // The nodes' own accounts agree: forwarded requests counted, queues owned reported.
    let forwarded = common::cluster::sum_over(&nodes, "tasq_cluster_forwarded_requests_total", &[]);
    assert!(forwarded > 0.0, "no request was forwarded");
    let (code, body) = get(&nodes[0].url("/api/v1/cluster"));
    assert_eq!(code, 200);
    let owned: u64 = body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["queues_owned"].as_u64().expect("a count"))
        .sum();
    assert_eq!(owned, 12, "{body}");
    // `tasq cluster status` prints the three, through any node.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["cluster", "status", "--server", nodes[1].base()])
        .output()
        .expect("run tasq cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for id in ["n1", "n2 (this)", "n3"] {
        assert!(text.contains(id), "{id} missing:\n{text}");
    }
    // A forwarded request with a wrong secret is refused.
    let (code, _) = raw_forwarded(&nodes[0], "wrong-secret");
    assert_eq!(code, 401);
}

/// `GET {q}/tasks/x` sent as if forwarded by a node, with `secret`.
fn raw_forwarded(s: &TestServer, secret: &str) -> (u16, Value) {
    let path = format!("{}/tasks/x", q(NS, "q0", A));
    let r = ureq::get(&s.url(&path))
        .set("x-tasq-forwarded-by", "n9")
        .set("x-tasq-cluster-secret", secret)
        .call();
    match r {
        Ok(r) => (r.status(), Value::Null),
        Err(ureq::Error::Status(code, _)) => (code, Value::Null),
        Err(e) => panic!("{e}"),
    }
}

/// What the load saw: adds acknowledged, completes acknowledged, and every dispatch.
#[derive(Default)]
struct Ledger {
    added: BTreeSet<String>,
    completed: BTreeSet<String>,
    /// Task id → times dispatched after its complete was acknowledged.
    after_complete: BTreeMap<String, usize>,
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn kill_9_of_an_owner_under_load_loses_nothing_and_runs_nothing_twice() {
    let (url, mut nodes) = cluster();
    let name = "failover";
    let qp = q(NS, name, A);
    add_task(
        &nodes[0],
        &qp,
        json!({"task_type": "t", "task_id": "first"}),
    );
    let owner = owner_of(&url, name).expect("an owner");
    let victim = nodes
        .iter()
        .position(|n| {
            let (_, body) = get(&n.url("/api/v1/cluster"));
            body["node"] == json!(owner)
        })
        .expect("the owner is one of the three");
    let others: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| nodes[i].base().to_string())
        .collect();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    ledger.lock().unwrap().added.insert("first".into());
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (p, base) in others.iter().enumerate() {
        let (ledger, stop, base, qp) = (ledger.clone(), stop.clone(), base.clone(), qp.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{p}-{i}");
                let body = json!({"task_type": "t", "task_id": id});
                if let Ok((201, _)) = try_post(&format!("{base}{qp}/tasks"), &body) {
                    ledger.lock().unwrap().added.insert(id);
                    i += 1;
                } else {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }));
    }
    let work = |base: String, ledger: Arc<Mutex<Ledger>>, stop: Arc<AtomicBool>, qp: String| {
        move || {
            while !stop.load(Ordering::Relaxed) {
                let poll = json!({"identity": "w", "wait_ms": 500, "max_tasks": 4});
                let Ok((200, body)) = try_post(&format!("{base}{qp}/poll"), &poll) else {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                for t in body["tasks"].as_array().cloned().unwrap_or_default() {
                    let id = t["task_id"].as_str().unwrap_or_default().to_string();
                    {
                        let mut l = ledger.lock().unwrap();
                        if l.completed.contains(&id) {
                            *l.after_complete.entry(id.clone()).or_default() += 1;
                        }
                    }
                    let lease = lease_of(&t);
                    let url = format!("{base}/api/v1/leases/{lease}/complete");
                    if let Ok((200, _)) = try_post(&url, &json!({"result": 1})) {
                        ledger.lock().unwrap().completed.insert(id);
                    }
                }
            }
        }
    };
    for base in &others {
        threads.push(std::thread::spawn(work(
            base.clone(),
            ledger.clone(),
            stop.clone(),
            qp.clone(),
        )));
    }
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    nodes[victim].kill9();
    // Served again: an add through a surviving node answers 201.
    let served = wait_until(Duration::from_secs(30), || {
        let body = json!({"task_type": "t"});
        matches!(
            try_post(&format!("{}{qp}/tasks", others[0]), &body),
            Ok((201, _))
        )
    });
    let takeover = killed_at.elapsed();
    assert!(
        served,
        "the queue was not served again within 30 s of kill -9"
    );
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }
    // Drain what is left through a surviving node; tasks leased by the workers when they
    // stopped come back once their lease ends.
    let drained = wait_until(Duration::from_secs(120), || {
        let s = &nodes[(victim + 1) % 3];
        while let Some(t) = poll_one(s, &qp, "drain", 200) {
            let id = t["task_id"].as_str().unwrap_or_default().to_string();
            let mut l = ledger.lock().unwrap();
            if l.completed.contains(&id) {
                *l.after_complete.entry(id.clone()).or_default() += 1;
            }
            if complete(s, &lease_of(&t), json!(0)).0 == 200 {
                l.completed.insert(id);
            }
        }
        let l = ledger.lock().unwrap();
        l.added.is_subset(&l.completed) || unanswered_completes(s, &qp, &l).is_empty()
    });
    let l = ledger.lock().unwrap();
    // A complete the old owner committed just before kill -9 never reached its worker: the
    // task is completed all the same, and must not run again.
    let lost = unanswered_completes(&nodes[(victim + 1) % 3], &qp, &l);
    eprintln!(
        "failover: {} acknowledged adds, {} completed; takeover after kill -9: {:.2} s",
        l.added.len(),
        l.completed.len(),
        takeover.as_secs_f64()
    );
    assert!(
        drained && lost.is_empty(),
        "acknowledged and never completed: {lost:?}"
    );
    assert!(
        l.after_complete.is_empty(),
        "dispatched again after a 200 complete: {:?}",
        l.after_complete
    );
    drop(l);
    forget_the_dead(&nodes[(victim + 1) % 3], &owner);
}

/// The killed node `dead` shows as dead (listed, counted by `tasq_cluster_nodes`) until
/// `tasq cluster forget` removes it; a live node cannot be forgotten.
fn forget_the_dead(survivor: &TestServer, dead: &str) {
    let dead_nodes = || {
        metric_sum(
            &metrics_text(survivor),
            "tasq_cluster_nodes",
            &[("state", "dead")],
        )
    };
    assert_eq!(dead_nodes(), 1.0);
    let (_, me) = get(&survivor.url("/api/v1/cluster"));
    let me = me["node"].as_str().expect("a name").to_string();
    let (code, body) = delete(&survivor.url(&format!("/api/v1/cluster/nodes/{me}")));
    assert_error(code, &body, 400, "invalid_argument");
    let (code, body) = delete(&survivor.url("/api/v1/cluster/nodes/nobody"));
    assert_error(code, &body, 404, "not_found");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["cluster", "forget", dead, "--server", survivor.base()])
        .output()
        .expect("run tasq cluster forget");
    assert!(out.status.success(), "{out:?}");
    let (_, body) = get(&survivor.url("/api/v1/cluster"));
    let names: Vec<&str> = body["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert!(!names.contains(&dead), "{body}");
    assert!(
        wait_until(Duration::from_secs(10), || dead_nodes() == 0.0),
        "still counted dead"
    );
}

/// Acknowledged adds not seen completed by a worker whose task is not completed either: lost.
fn unanswered_completes(s: &TestServer, qp: &str, l: &Ledger) -> Vec<String> {
    l.added
        .difference(&l.completed)
        .filter(|id| status_of(s, qp, id)["state"] != json!("completed"))
        .cloned()
        .collect()
}

/// The first node that does not own `queue` (after something made it take an owner).
fn a_non_owner<'a>(url: &str, nodes: &'a [TestServer], queue: &str) -> &'a TestServer {
    let owner = owner_of(url, queue).expect("an owner");
    nodes
        .iter()
        .find(|n| get(&n.url("/api/v1/cluster")).1["node"] != json!(owner))
        .expect("a node that is not the owner")
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_worker_socket_on_any_node_gets_the_owners_tasks_and_describe_shows_it() {
    use tungstenite::Message;
    let (url, nodes) = cluster();
    let name = "streamed";
    let qp = q(NS, name, A);
    let ids: Vec<String> = (0..3)
        .map(|i| add_task(&nodes[i], &qp, json!({"task_type": "t", "payload": i})))
        .collect();
    let via = a_non_owner(&url, &nodes, name);
    let ws_url = format!(
        "{}{qp}/connect?identity=relayed",
        via.base().replacen("http://", "ws://", 1)
    );
    let (mut ws, resp) =
        tungstenite::connect(ws_url.as_str()).expect("connect through a non-owner");
    assert_eq!(resp.status().as_u16(), 101);
    let send = |ws: &mut tungstenite::WebSocket<_>, v: Value| {
        ws.send(Message::text(v.to_string())).expect("send a frame");
    };
    send(&mut ws, json!({"op": "credit", "n": 10}));
    let mut settled = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while settled.len() < ids.len() && Instant::now() < deadline {
        let text = match ws.read().expect("read a frame") {
            Message::Text(t) => t.to_string(),
            _ => continue,
        };
        let frame: Value = serde_json::from_str(&text).expect("a JSON frame");
        match frame["op"].as_str() {
            Some("task") => {
                let lease = frame["task"]["lease"].clone();
                send(
                    &mut ws,
                    json!({"op": "complete", "lease": lease, "result": 1}),
                );
            }
            Some("settled") => {
                settled.insert(frame["task_id"].as_str().expect("an id").to_string());
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    let want: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(settled, want, "every task, through the relay");
    // Describe through any node shows the worker, whatever node owns each type.
    for n in &nodes {
        let d = describe(n, NS, name);
        let pollers = d["types"][A]["pollers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            pollers.iter().any(|p| p["identity"] == json!("relayed")),
            "describe through {}: {d}",
            n.base()
        );
        assert_eq!(d["types"]["workflow"]["backlog_count"], json!(0), "{d}");
    }
    let _ = ws.close(None);
}

/// The node of `nodes` that owns `queue` now.
fn owner_node(url: &str, nodes: &[TestServer], queue: &str) -> usize {
    let owner = owner_of(url, queue).expect("an owner");
    nodes
        .iter()
        .position(|n| get(&n.url("/api/v1/cluster")).1["node"] == json!(owner))
        .expect("the owner is one of the nodes")
}

fn signal(s: &TestServer, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &s.pid().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {}", s.pid());
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_paused_owner_comes_back_fenced_out_and_nothing_runs_twice() {
    let (url, nodes) = cluster();
    let name = "paused";
    let qp = q(NS, name, A);
    // A lease that ends while its owner is stopped: the stopped owner's timer fires on
    // SIGCONT and tries to put the task back; the fence must refuse that write.
    let id = add_task(
        &nodes[0],
        &qp,
        json!({"task_type": "t", "start_to_close_timeout_ms": 4000}),
    );
    let victim = owner_node(&url, &nodes, name);
    let other = &nodes[(victim + 1) % 3];
    let task = poll_one(other, &qp, "w1", 5000).expect("the task");
    assert_eq!(task["task_id"], json!(id));
    signal(&nodes[victim], "-STOP");
    let stopped_at = Instant::now();
    let served = wait_until(Duration::from_secs(30), || {
        let body = json!({"task_type": "t", "task_id": "after-stop"});
        matches!(
            try_post(&other.url(&format!("{qp}/tasks")), &body),
            Ok((201, _))
        )
    });
    assert!(
        served,
        "the queue was not served while its owner was stopped"
    );
    eprintln!(
        "pause: served by another node {:.2} s after SIGSTOP",
        stopped_at.elapsed().as_secs_f64()
    );
    // The lease granted by the stopped owner settles on the new one.
    let (code, body) = complete(other, &lease_of(&task), json!("done"));
    assert_eq!(code, 200, "the old lease settles on the new owner: {body}");
    // Stopped past the lease's end, then back.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(stopped_at.elapsed()));
    signal(&nodes[victim], "-CONT");
    std::thread::sleep(Duration::from_secs(3));
    // Whatever the old owner did on waking, the task stays completed and runs no more.
    for n in &nodes {
        let st = status_of(n, &qp, &id);
        assert_eq!(
            st["state"],
            json!("completed"),
            "through {}: {st}",
            n.base()
        );
        assert_eq!(st["result"], json!("done"), "{st}");
    }
    let mut seen = Vec::new();
    for n in &nodes {
        while let Some(t) = poll_one(n, &qp, "w2", 300) {
            seen.push(t["task_id"].as_str().unwrap_or_default().to_string());
            complete(n, &lease_of(&t), json!(0));
        }
    }
    assert!(
        !seen.contains(&id),
        "dispatched again after its complete: {seen:?}"
    );
    assert_eq!(seen, vec!["after-stop".to_string()], "{seen:?}");
    let rejected = metric_sum(
        &metrics_text(&nodes[victim]),
        "tasq_cluster_fence_rejections_total",
        &[],
    );
    eprintln!("pause: writes of the woken owner refused by the fence: {rejected}");
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_rolling_restart_under_load_fails_nothing_but_retryable_503s() {
    let (_url, mut nodes) = cluster();
    let qp = q(NS, "rolling", A);
    let load = Arc::new(RollingLoad {
        bases: Mutex::new(nodes.iter().map(|n| n.base().to_string()).collect()),
        ledger: Mutex::default(),
        bad: Mutex::default(),
        stop: AtomicBool::new(false),
        qp: qp.clone(),
    });
    let mut threads = Vec::new();
    for p in 0..2 {
        let load = load.clone();
        threads.push(std::thread::spawn(move || {
            let (mut i, mut at) = (0, p);
            while !load.stop.load(Ordering::Relaxed) {
                let id = format!("r{p}-{i}");
                let body = json!({"task_type": "t", "task_id": id});
                match try_post(&format!("{}{}/tasks", load.base(at), load.qp), &body) {
                    Ok((201, _)) => {
                        load.ledger.lock().unwrap().added.insert(id);
                        i += 1;
                    }
                    Ok((503, _)) | Err(_) => at += 1,
                    Ok((code, body)) => load.bad.lock().unwrap().push(format!("add {code} {body}")),
                }
            }
        }));
    }
    for w in 0..2 {
        let load = load.clone();
        threads.push(std::thread::spawn(move || {
            let mut at = w + 1;
            while !load.stop.load(Ordering::Relaxed) {
                let base = load.base(at);
                let poll = json!({"identity": "w", "wait_ms": 300, "max_tasks": 4});
                let tasks = match try_post(&format!("{base}{}/poll", load.qp), &poll) {
                    Ok((200, body)) => body["tasks"].as_array().cloned().unwrap_or_default(),
                    Ok((503, _)) | Err(_) => {
                        at += 1;
                        continue;
                    }
                    Ok((code, body)) => {
                        load.bad.lock().unwrap().push(format!("poll {code} {body}"));
                        continue;
                    }
                };
                for t in tasks {
                    let id = t["task_id"].as_str().unwrap_or_default().to_string();
                    {
                        let mut l = load.ledger.lock().unwrap();
                        if l.completed.contains(&id) {
                            *l.after_complete.entry(id.clone()).or_default() += 1;
                        }
                    }
                    // A settle is retried on any node until it is answered.
                    for attempt in 0..50 {
                        let base = load.base(at + attempt);
                        let url = format!("{base}/api/v1/leases/{}/complete", lease_of(&t));
                        match try_post(&url, &json!({"result": 1})) {
                            Ok((200, _)) => {
                                load.ledger.lock().unwrap().completed.insert(id.clone());
                                break;
                            }
                            Ok((503, _)) | Err(_) => {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            Ok((code, body)) => {
                                load.bad
                                    .lock()
                                    .unwrap()
                                    .push(format!("complete {code} {body}"));
                                break;
                            }
                        }
                    }
                }
            }
        }));
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        std::thread::sleep(Duration::from_millis(1500));
        node.terminate();
        assert!(
            node.wait_exit(Duration::from_secs(30)).is_some(),
            "node {i} did not stop"
        );
        node.restart();
        load.bases.lock().unwrap()[i] = node.base().to_string();
        let back = wait_until(Duration::from_secs(20), || {
            get(&node.url("/api/v1/cluster")).1["live"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        });
        assert!(back, "node {i} did not rejoin");
    }
    std::thread::sleep(Duration::from_secs(1));
    load.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a load thread");
    }
    let l = load.ledger.lock().unwrap();
    let lost: Vec<String> = l
        .added
        .difference(&l.completed)
        .filter(|id| status_of(&nodes[0], &qp, id)["state"] != json!("completed"))
        .cloned()
        .collect();
    // What no worker took before the load stopped is still there, ready: drain it.
    let mut left = BTreeSet::new();
    while let Some(t) = poll_one(&nodes[0], &qp, "drain", 500) {
        left.insert(t["task_id"].as_str().unwrap_or_default().to_string());
        complete(&nodes[0], &lease_of(&t), json!(0));
    }
    let lost: Vec<&String> = lost.iter().filter(|id| !left.contains(*id)).collect();
    eprintln!(
        "rolling restart: {} acknowledged adds, {} completed by the workers, {} left ready",
        l.added.len(),
        l.completed.len(),
        left.len()
    );
    assert!(lost.is_empty(), "acknowledged and gone: {lost:?}");
    assert!(
        l.after_complete.is_empty(),
        "ran twice: {:?}",
        l.after_complete
    );
    let bad = load.bad.lock().unwrap();
    assert!(bad.is_empty(), "answers other than 2xx and 503: {bad:?}");
}

/// What the threads of the rolling restart share: the nodes' current addresses, what the
/// load saw, and answers other than 2xx and 503 (a transport error to a node restarting is
/// retried elsewhere).
struct RollingLoad {
    bases: Mutex<Vec<String>>,
    ledger: Mutex<Ledger>,
    bad: Mutex<Vec<String>>,
    stop: AtomicBool,
    qp: String,
}

impl RollingLoad {
    /// The `i`-th node's address, round the nodes.
    fn base(&self, i: usize) -> String {
        let b = self.bases.lock().unwrap();
        b[i % b.len()].clone()
    }
}

/// A queue whose actor stops for idleness leaves no hold behind on its node (queues that
/// come and go do not grow its memory), and is taken again by the next request.
#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn idle_queues_are_let_go_and_taken_again() {
    let url = common::postgres::new_database();
    let node = common::cluster::start_node(&url, "solo", &[("TASQ_QUEUE_IDLE_TIMEOUT", "3s")]);
    node.wait_ready();
    let owned = || {
        metric_sum(
            &metrics_text(&node),
            "tasq_cluster_queues_owned",
            &[("node", "solo")],
        )
    };
    for round in 0..2 {
        for i in 0..20 {
            let qp = q(NS, &format!("idle{i}"), A);
            let id = add_task(&node, &qp, json!({"task_type": "t", "payload": round}));
            let task = poll_one(&node, &qp, "w", 5000).expect("the task");
            assert_eq!(task["task_id"], json!(id));
            assert_eq!(complete(&node, &lease_of(&task), json!(1)).0, 200);
        }
        // The gauge is set every heartbeat (250 ms); the queues idle out after 3 s.
        assert!(
            wait_until(Duration::from_secs(2), || owned() >= 20.0),
            "round {round}: {} held",
            owned()
        );
        assert!(
            wait_until(Duration::from_secs(30), || owned() == 0.0),
            "round {round}: idle queues still held: {}",
            owned()
        );
    }
}
