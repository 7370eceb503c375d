//! What the web console stands on, over real HTTP against the real binary: the `viewer` role
//! (reads everything, changes nothing), `whoami`, the namespace list, the extra fields of the
//! queue list and of `?view=full`, and the console's files with their security headers. (The
//! pages themselves are driven in a real browser by `tests/ui/test_console.py`.)

mod common;

use common::auth::*;
use common::*;
use serde_json::{json, Value};

const A: &str = "activity";

/// A server with auth on and keys: a viewer for every namespace, an admin for `alpha` only,
/// and a producer and a worker for every namespace.
struct Keys {
    viewer: String,
    alpha_admin: String,
    producer: String,
    worker: String,
}

fn start_keyed() -> (TestServer, Keys, tempfile::TempDir) {
    let (viewer, v) = hand_key("watcher", &["*"], &["viewer"]);
    let (alpha_admin, a) = hand_key("alpha-admin", &["alpha"], &["admin"]);
    let (producer, p) = hand_key("producer", &["*"], &["producer"]);
    let (worker, w) = hand_key("worker", &["*"], &["worker"]);
    let (s, dir, _) = start_with_config(&auth_config("", &[&v, &a, &p, &w], ""));
    let keys = Keys {
        viewer,
        alpha_admin,
        producer,
        worker,
    };
    (s, keys, dir)
}

/// POSTs `body` to `path` with `key`; the answer's body, once its status is `want`.
fn post_as(s: &TestServer, key: &str, path: &str, body: Value, want: u16) -> Value {
    let (st, b) = call_keyed("POST", &s.url(path), Some(key), Some(&body));
    assert_eq!(st, want, "POST {path}: {b}");
    b
}

/// In `ns/jobs`: `dead-1` a dead letter (failed, one attempt allowed), `live-1` completed,
/// `pending-1` pending.
fn dead_and_pending(s: &TestServer, k: &Keys, ns: &str) -> String {
    let qa = q(ns, "jobs", A);
    let add = |body: Value| post_as(s, &k.producer, &format!("{qa}/tasks"), body, 201);
    add(json!({"task_type": "t", "task_id": "dead-1", "retry": {"max_attempts": 1}}));
    add(json!({"task_type": "t", "task_id": "live-1"}));
    let poll = json!({"identity": "w", "max_tasks": 2, "wait_ms": 0});
    let b = post_as(s, &k.worker, &format!("{qa}/poll"), poll, 200);
    for t in b["tasks"].as_array().expect("tasks") {
        let (verb, body) = if t["task_id"] == json!("dead-1") {
            ("fail", json!({"error": {"message": "no"}}))
        } else {
            ("complete", json!({"result": {"ok": true}}))
        };
        let path = format!("/api/v1/leases/{}/{verb}", lease_of(t));
        post_as(s, &k.worker, &path, body, 200);
    }
    add(json!({"task_type": "t", "task_id": "pending-1"}));
    qa
}

#[test]
fn a_viewer_reads_everything_and_changes_nothing() {
    let (s, k, _dir) = start_keyed();
    let qa = dead_and_pending(&s, &k, "alpha");
    let v = Some(k.viewer.as_str());
    let get = |path: &str| call_keyed("GET", &s.url(path), v, None);

    for path in [
        describe_path("alpha", "jobs"),
        "/api/v1/namespaces/alpha/task-queues".into(),
        "/api/v1/namespaces".into(),
        format!("{qa}/tasks/pending-1"),
        format!("{qa}/tasks/pending-1?view=full"),
        format!("{qa}/tasks/dead-1/explain"),
        format!("{qa}/tasks?state=dead"),
        format!("{qa}/dead-letters"),
        "/api/v1/whoami".into(),
    ] {
        let (st, b) = get(&path);
        assert_eq!(st, 200, "viewer GET {path}: {b}");
    }
    let stats_now = || get(&describe_path("alpha", "jobs")).1["types"][A].clone();
    let before = stats_now();

    let refused: Vec<(&str, String, Option<Value>)> = vec![
        (
            "POST",
            format!("{qa}/tasks"),
            Some(json!({"task_type": "t"})),
        ),
        (
            "POST",
            format!("{qa}/tasks/batch"),
            Some(json!({"tasks": [{"task_type": "t"}]})),
        ),
        ("DELETE", format!("{qa}/tasks/pending-1"), None),
        (
            "PUT",
            format!("{qa}/config"),
            Some(json!({"max_tasks_per_second": 0})),
        ),
        (
            "POST",
            format!("{qa}/dead-letters/redrive"),
            Some(json!({"all": true})),
        ),
        (
            "POST",
            format!("{qa}/poll"),
            Some(json!({"identity": "v", "wait_ms": 0})),
        ),
    ];
    for (method, path, body) in &refused {
        let (st, b) = call_keyed(method, &s.url(path), v, body.as_ref());
        assert_error(st, &b, 403, "permission_denied");
    }
    // The upgrade to a WebSocket is a GET, but a worker's: refused too.
    let (st, b) = call_keyed("GET", &s.url(&format!("{qa}/connect?identity=v")), v, None);
    assert_error(st, &b, 403, "permission_denied");

    let after = stats_now();
    for field in [
        "backlog_count",
        "in_flight_count",
        "dead_letter_count",
        "delayed_count",
    ] {
        assert_eq!(
            stat_u64(&before, field),
            stat_u64(&after, field),
            "{field} changed after the viewer's refused requests"
        );
    }
    assert_eq!(after["rate_limit"]["source"], json!("none"), "{after}");
    let (_, st) = get(&format!("{qa}/tasks/pending-1"));
    assert_eq!(st["state"], json!("pending"), "{st}");

    // whoami: the viewer's own grant; nobody without a key.
    let (_, me) = get("/api/v1/whoami");
    assert_eq!(me["auth_enabled"], json!(true));
    assert_eq!(me["name"], json!("watcher"));
    assert_eq!(me["roles"], json!(["viewer"]));
    assert_eq!(me["namespaces"], Value::Null);
    let (st, b) = call_keyed("GET", &s.url("/api/v1/whoami"), None, None);
    assert_error(st, &b, 401, "unauthenticated");
    let (st, b) = call_keyed("GET", &s.url("/api/v1/whoami"), Some("tq_nope"), None);
    assert_error(st, &b, 401, "unauthenticated");
}

#[test]
fn an_admin_reads_and_acts_only_in_its_namespaces() {
    let (s, k, _dir) = start_keyed();
    let qa = dead_and_pending(&s, &k, "alpha");
    dead_and_pending(&s, &k, "beta");
    let admin = Some(k.alpha_admin.as_str());

    // The namespace list shows only what the key covers; the viewer's shows both.
    let (st, b) = call_keyed("GET", &s.url("/api/v1/namespaces"), admin, None);
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["namespaces"], json!(["alpha"]), "{b}");
    let (_, b) = call_keyed("GET", &s.url("/api/v1/namespaces"), Some(&k.viewer), None);
    assert_eq!(b["namespaces"], json!(["alpha", "beta"]), "{b}");
    let (_, me) = call_keyed("GET", &s.url("/api/v1/whoami"), admin, None);
    assert_eq!(me["namespaces"], json!(["alpha"]), "{me}");
    assert_eq!(me["roles"], json!(["admin"]), "{me}");

    // An admin reads a task's status (a producer's route) and explains it ...
    let (st, b) = call_keyed(
        "GET",
        &s.url(&format!("{qa}/tasks/dead-1/explain")),
        admin,
        None,
    );
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["reasons"][0]["code"], json!("finished"), "{b}");
    // ... redrives in its namespace, but not in another.
    let (st, b) = call_keyed(
        "POST",
        &s.url(&format!("{qa}/dead-letters/redrive")),
        admin,
        Some(&json!({"task_ids": ["dead-1"]})),
    );
    assert_eq!((st, &b["redriven"]), (200, &json!(1)), "{b}");
    let qb = q("beta", "jobs", A);
    let (st, b) = call_keyed("GET", &s.url(&format!("{qb}/tasks/dead-1")), admin, None);
    assert_error(st, &b, 403, "permission_denied");
}

#[test]
fn queue_list_namespaces_and_full_task_view() {
    let s = TestServer::start();
    let qd = q("ns-b", "orders", A);
    add_task(&s, &qd, json!({"task_type": "t", "task_id": "ready"}));
    add_task(
        &s,
        &qd,
        json!({"task_type": "t", "task_id": "later", "delay_ms": 3_600_000,
               "headers": {"trace-id": "abc"}, "fairness_key": "tenant-a", "priority": 2}),
    );
    for ns in ["ns-a", "ns-c"] {
        add_task(&s, &q(ns, "x", A), json!({"task_type": "t"}));
    }

    let (st, b) = get(&s.url("/api/v1/namespaces/ns-b/task-queues"));
    assert_eq!(st, 200, "{b}");
    let row = &b["task_queues"][0];
    assert_eq!(row["backlog_count"], json!(1), "{b}");
    assert_eq!(row["delayed_count"], json!(1), "{b}");
    assert_eq!(row["dead_letter_count"], json!(0), "{b}");
    assert!(row["backlog_age_ms"].as_u64().is_some(), "{b}");

    // Namespaces in name order, paged.
    let (st, p1) = get(&s.url("/api/v1/namespaces?limit=2"));
    assert_eq!(st, 200, "{p1}");
    assert_eq!(p1["namespaces"], json!(["ns-a", "ns-b"]), "{p1}");
    let token = p1["next_page_token"].as_str().expect("a next page");
    let (_, p2) = get(&s.url(&format!("/api/v1/namespaces?limit=2&page_token={token}")));
    assert_eq!(p2["namespaces"], json!(["ns-c"]), "{p2}");
    assert_eq!(p2["next_page_token"], Value::Null, "{p2}");
    let (st, b) = get(&s.url("/api/v1/namespaces?limit=0"));
    assert_error(st, &b, 400, "invalid_argument");
    let (st, b) = get(&s.url("/api/v1/namespaces?page_token=%25%25"));
    assert_error(st, &b, 400, "invalid_argument");

    // view=full: everything known of the task; view=status is the plain status.
    let (st, t) = get(&s.url(&format!("{qd}/tasks/later?view=full")));
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["headers"], json!({"trace-id": "abc"}), "{t}");
    assert_eq!(t["fairness_key"], json!("tenant-a"), "{t}");
    assert_eq!(t["priority"], json!(2), "{t}");
    assert_eq!(t["payload"], Value::Null, "{t}");
    assert!(t["due_at"].is_string(), "{t}");
    assert_eq!(t["retry"]["max_attempts"], json!(0), "{t}");
    assert_eq!(t["start_to_close_timeout_ms"], json!(60000), "{t}");
    let (_, plain) = get(&s.url(&format!("{qd}/tasks/later?view=status")));
    assert!(plain.get("headers").is_none(), "{plain}");
    assert_eq!(plain["state"], json!("pending"), "{plain}");
    let (st, b) = get(&s.url(&format!("{qd}/tasks/later?view=everything")));
    assert_error(st, &b, 400, "invalid_argument");
    let (st, b) = get(&s.url(&format!("{qd}/tasks/nope?view=full")));
    assert_error(st, &b, 404, "not_found");

    // whoami with auth off: every role, every namespace.
    let (_, me) = get(&s.url("/api/v1/whoami"));
    assert_eq!(me["auth_enabled"], json!(false), "{me}");
    assert_eq!(me["namespaces"], Value::Null, "{me}");
}

#[test]
fn the_console_is_served_from_the_binary_with_a_strict_policy() {
    let s = TestServer::start();
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let resp = ureq::get(&s.url(path)).call().expect(path);
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.content_type().starts_with(kind),
            "{path}: {}",
            resp.content_type()
        );
        let csp = resp.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
        let body = resp.into_string().expect("body");
        assert!(!body.is_empty(), "{path}");
    }
    let page = ureq::get(&s.url("/ui")).call().expect("ui");
    let html = page.into_string().expect("html");
    // Nothing from elsewhere: every script and stylesheet is the server's own.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    let (st, b) = get(&s.url("/ui/nope.js"));
    assert_error(st, &b, 404, "not_found");
}
