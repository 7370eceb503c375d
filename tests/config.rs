//! Configuration capability: the TOML config file, `TASQ_*` environment variables and the
//! command line (file < env < command line), exit code 2 naming the key on bad
//! configuration, and settings that take effect (`max_payload_bytes`,
//! `metrics.max_queue_series`).

mod common;

use common::auth::config_file;
use common::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

const A: &str = "activity";

/// Runs the server with `config` and expects it to refuse: exit code 2, stderr naming `key`.
fn assert_config_rejected(config: &str, key: &str) {
    let (_dir, path) = config_file(config);
    let path = path.to_str().expect("utf-8 path").to_string();
    let (status, stderr) = run_to_exit(&["--config", &path], &[], Duration::from_secs(30));
    let status = status.unwrap_or_else(|| {
        panic!("server kept running with bad config {config:?}; stderr:\n{stderr}")
    });
    assert_eq!(
        status.code(),
        Some(2),
        "bad config {config:?} must exit 2, got {status:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains(key)),
        "stderr should name {key:?} for config {config:?}:\n{stderr}"
    );
}

/// Adds a task whose body is exactly `size` bytes; returns the status.
fn add_of_size(s: &TestServer, queue: &str, size: usize) -> (u16, serde_json::Value) {
    raw_request(
        s.base(),
        "POST",
        &format!("{}/tasks", q(NS, queue, A)),
        task_body_of_size(size).into_bytes(),
    )
}

#[test]
fn unknown_config_key_exits_2_naming_the_key() {
    assert_config_rejected("frobnicate_widgets = 3\n", "frobnicate_widgets");
    assert_config_rejected("[metrics]\nmax_queue_seriez = 5\n", "max_queue_seriez");
}

#[test]
fn bad_config_value_exits_2_naming_the_key() {
    assert_config_rejected("max_payload_bytes = \"lots\"\n", "max_payload_bytes");
    assert_config_rejected("durability = \"sometimes\"\n", "durability");
    // A misspelt level would start a server that logs nothing.
    assert_config_rejected("log_level = \"verbose\"\n", "log_level");
    assert_config_rejected("log_level = \"info,tasq=loud\"\n", "log_level");
    assert_config_rejected("queue_idle_timeout = \"whenever\"\n", "queue_idle_timeout");
    assert_config_rejected(
        "[metrics]\nmax_queue_series = \"many\"\n",
        "max_queue_series",
    );
}

#[test]
fn bad_env_value_exits_2_naming_the_variable() {
    let (status, stderr) = run_to_exit(
        &[],
        &[("TASQ_MAX_PAYLOAD_BYTES", "lots")],
        Duration::from_secs(30),
    );
    let status = status.unwrap_or_else(|| panic!("server kept running; stderr:\n{stderr}"));
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    assert!(
        stderr.to_ascii_lowercase().contains("max_payload_bytes"),
        "stderr should name the setting:\n{stderr}"
    );
}

#[test]
fn env_max_payload_bytes_limits_bodies() {
    let s = TestServer::start_with(&[], &[("TASQ_MAX_PAYLOAD_BYTES", "1000")]);
    let queue = "config-env-payload";
    let (status, body) = add_of_size(&s, queue, 2000);
    assert_error(status, &body, 413, "payload_too_large");
    assert_eq!(backlog(&s, NS, queue, A), 0);
    let (status, body) = add_of_size(&s, queue, 500);
    assert_eq!(status, 201, "{body}");
    assert_eq!(backlog(&s, NS, queue, A), 1);
}

#[test]
fn config_file_sets_max_payload_bytes() {
    let (_dir, path) = config_file("max_payload_bytes = 500\n");
    let path = path.to_str().unwrap().to_string();
    let s = TestServer::start_with(&["--config", &path], &[]);
    let queue = "config-file-payload";
    let (status, body) = add_of_size(&s, queue, 1000);
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = add_of_size(&s, queue, 400);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn env_beats_config_file() {
    let (_dir, path) = config_file("max_payload_bytes = 500\n");
    let path = path.to_str().unwrap().to_string();
    let s = TestServer::start_with(&["--config", &path], &[("TASQ_MAX_PAYLOAD_BYTES", "2000")]);
    let queue = "config-env-beats-file";
    let (status, body) = add_of_size(&s, queue, 1000);
    assert_eq!(status, 201, "env 2000 beats file 500: {body}");
    let (status, body) = add_of_size(&s, queue, 2500);
    assert_error(status, &body, 413, "payload_too_large");
    assert_eq!(backlog(&s, NS, queue, A), 1);
}

#[test]
fn command_line_beats_env() {
    let other = tempfile::Builder::new()
        .prefix("tasq-other-data-")
        .tempdir()
        .expect("temp dir");
    let other_path = other.path().to_str().unwrap().to_string();
    // Where the store lands is a question for the sled store: it holds the data directory.
    let s = TestServer::start_with(
        &[],
        &[
            ("TASQ_BIND", "127.0.0.1:1"),
            ("TASQ_DATA_DIR", &other_path),
            ("TASQ_STORAGE_BACKEND", "sled"),
        ],
    );
    assert!(
        !s.base().ends_with(":1"),
        "--bind 127.0.0.1:0 must beat TASQ_BIND, listening on {}",
        s.base()
    );
    let (status, _) = get(&s.url("/healthz"));
    assert_eq!(status, 200);
    add_task(
        &s,
        &q(NS, "config-cli-beats-env", A),
        json!({"task_type": "t"}),
    );
    let used = std::fs::read_dir(s.data_dir()).expect("data dir").count();
    assert!(used > 0, "--data-dir must hold the store");
    let unused = std::fs::read_dir(other.path()).expect("other dir").count();
    assert_eq!(unused, 0, "TASQ_DATA_DIR must lose to --data-dir");
}

#[test]
fn config_with_many_keys_is_accepted_and_applied() {
    let (_dir, path) = config_file(
        r#"
durability = "relaxed"
max_payload_bytes = 4096
queue_idle_timeout = "5m"
completed_retention = "24h"
shutdown_timeout = "10s"
log_level = "warn"

[metrics]
max_queue_series = 100
"#,
    );
    let path = path.to_str().unwrap().to_string();
    let s = TestServer::start_with(&["--config", &path], &[]);
    let queue = "config-many-keys";
    let (status, body) = add_of_size(&s, queue, 5000);
    assert_error(status, &body, 413, "payload_too_large");
    let (status, body) = add_of_size(&s, queue, 3000);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn shipped_example_config_names_every_key_and_is_accepted() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/tasq.toml");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    for key in [
        "bind",
        "data_dir",
        "durability",
        "max_payload_bytes",
        "queue_idle_timeout",
        "completed_retention",
        "backlog_window",
        "shutdown_timeout",
        "http_workers",
        "queue_threads",
        "cache_capacity_bytes",
        "log_level",
        "[metrics]",
        "max_queue_series",
    ] {
        assert!(
            text.contains(key),
            "config/tasq.toml does not mention {key}"
        );
    }
    // --bind and --data-dir from the harness beat whatever the file says.
    let s = TestServer::start_with(&["--config", path.to_str().unwrap()], &[]);
    let (status, _) = get(&s.url("/healthz"));
    assert_eq!(status, 200);
    add_task(&s, &q(NS, "config-shipped", A), json!({"task_type": "t"}));
}

#[test]
fn max_queue_series_folds_extra_queues_into_other() {
    let s = TestServer::start_with(&[], &[("TASQ_METRICS_MAX_QUEUE_SERIES", "2")]);
    for i in 0..5 {
        add_task(
            &s,
            &q(NS, &format!("config-series-{i}"), A),
            json!({"task_type": "t"}),
        );
    }
    let text = metrics_text(&s);
    let samples: Vec<Sample> = parse_metrics(&text)
        .into_iter()
        .filter(|m| m.name == "tasq_tasks_added_total")
        .collect();
    let queues: BTreeSet<String> = samples
        .iter()
        .filter_map(|m| m.labels.get("task_queue").cloned())
        .collect();
    let real: Vec<&String> = queues.iter().filter(|q| q.as_str() != "_other").collect();
    assert!(
        real.len() <= 2,
        "more than 2 queue series: {queues:?}\n{text}"
    );
    assert!(
        queues.contains("_other"),
        "extra queues must report as _other:\n{text}"
    );
    let total: f64 = samples.iter().map(|m| m.value).sum();
    assert_eq!(total, 5.0, "no add may be lost from the metrics:\n{text}");
}

/// The PostgreSQL backend's settings: checked like any other, and a database that cannot be
/// reached stops start-up with one line naming `storage.postgres_url` (exit 2).
#[test]
fn postgres_settings_are_checked_and_an_unreachable_database_exits_2() {
    assert_config_rejected(
        "[storage]\nbackend = \"postgres\"\n",
        "storage.postgres_url",
    );
    assert_config_rejected("[storage]\nbackend = \"mysql\"\n", "storage.backend");
    assert_config_rejected(
        "[storage]\npostgres_pool_size = 0\n",
        "storage.postgres_pool_size",
    );
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://tasq@127.0.0.1:{port}/tasq");
    let (status, stderr) = run_to_exit(
        &[],
        &[
            ("TASQ_STORAGE_BACKEND", "postgres"),
            ("TASQ_STORAGE_POSTGRES_URL", &url),
        ],
        Duration::from_secs(60),
    );
    let status = status.expect("tasq must stop when its database cannot be reached");
    assert_eq!(status.code(), Some(2), "stderr:\n{stderr}");
    let named: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("storage.postgres_url"))
        .collect();
    assert_eq!(named.len(), 1, "one line naming the key; stderr:\n{stderr}");
}

/// `[cluster]` settings are checked like any other: a cluster needs PostgreSQL, a secret, a
/// node timeout of at least two heartbeats, and a readable `ca_cert` when one is named.
#[test]
fn cluster_settings_are_checked() {
    assert_config_rejected("[cluster]\nenabled = true\n", "cluster.enabled");
    let pg = "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgres://127.0.0.1:1/x\"\n";
    assert_config_rejected(
        &format!("{pg}[cluster]\nenabled = true\n"),
        "cluster.secret",
    );
    assert_config_rejected(
        &format!(
            "{pg}[cluster]\nenabled = true\nsecret = \"0123456789abcdef\"\n\
             heartbeat_interval = \"5s\"\nnode_timeout = \"6s\"\n"
        ),
        "cluster.node_timeout",
    );
    assert_config_rejected(
        &format!(
            "{pg}[cluster]\nenabled = true\nsecret = \"0123456789abcdef\"\n\
             ca_cert = \"/nonexistent/ca.pem\"\n"
        ),
        "cluster.ca_cert",
    );
    assert_config_rejected("[cluster]\nsurprise = 1\n", "cluster.surprise");
}

/// `[sqs]` settings: a 12-digit account, a namespace name, credentials that name a key, no
/// cluster yet, and a non-loopback listener only with auth on or `--insecure`.
#[test]
fn sqs_settings_are_checked() {
    let on = "[sqs]\nenabled = true\n";
    assert_config_rejected(&format!("{on}account_id = \"12\"\n"), "sqs.account_id");
    assert_config_rejected(&format!("{on}namespace = \"a b\"\n"), "sqs.namespace");
    assert_config_rejected(
        &format!("{on}advertise = \"sqs.example.com\"\n"),
        "sqs.advertise",
    );
    assert_config_rejected(
        &format!(
            "[auth]\nenabled = true\n{on}\n[[sqs.credentials]]\naccess_key_id = \"AKIA0000000000000001\"\n\
             secret_access_key = \"0123456789abcdef\"\nkey = \"nobody\"\n"
        ),
        "sqs.credentials[0].key",
    );
    assert_config_rejected(&format!("{on}bind = \"0.0.0.0:9324\"\n"), "sqs.bind");
    let pg = "[storage]\nbackend = \"postgres\"\npostgres_url = \"postgres://127.0.0.1:1/x\"\n";
    assert_config_rejected(
        &format!("{pg}[cluster]\nenabled = true\nsecret = \"0123456789abcdef\"\n{on}"),
        "sqs.enabled",
    );
    assert_config_rejected(&format!("{on}surprise = 1\n"), "sqs.surprise");
}

/// The three node configs of `config/cluster-example/` load and validate, and differ only
/// in where each node listens and what it is called.
#[test]
fn the_cluster_example_configs_are_valid() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/cluster-example");
    let mut ids = Vec::new();
    for i in 1..=3 {
        let path = dir.join(format!("node{i}.toml"));
        let config = tasq::config::Config::load(
            Some(&path),
            Vec::<(String, String)>::new(),
            &tasq::config::Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(config.cluster.enabled);
        assert_eq!(config.storage.backend, tasq::config::Backend::Postgres);
        ids.push(config.cluster.node_id(config.bind));
    }
    assert_eq!(ids, ["node1", "node2", "node3"]);
}

/// A key for a namespace no request can name is refused when made and when configured.
#[test]
fn keys_name_namespaces_a_request_can_match() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["key", "new", "--namespace", "bad ns", "--role", "worker"])
        .output()
        .expect("run tasq key new");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--namespace \"bad ns\""), "{stderr}");
    assert!(out.stdout.is_empty(), "no key printed: {out:?}");
    let digest = "0".repeat(64);
    assert_config_rejected(
        &format!(
            "[auth]\nenabled = true\n[[auth.keys]]\nname = \"k\"\nsha256 = \"{digest}\"\n\
             namespaces = [\"bad ns\"]\nroles = [\"worker\"]\n"
        ),
        "auth.keys[0].namespaces",
    );
}

/// The server says at start what it runs with, and warns when auth is on without a key and
/// of a `TASQ_*` variable that names no setting.
#[test]
fn the_start_line_tells_auth_tls_and_keys() {
    let (_dir, path) = config_file("[auth]\nenabled = true\n");
    let s = TestServer::start_with(
        &["--config", path.to_str().expect("utf-8")],
        &[("RUST_LOG", "info"), ("TASQ_AUTH_ENABLD", "true")],
    );
    let log = s.stderr();
    // A misspelt variable is named, not ignored in silence.
    assert!(
        log.contains("TASQ_AUTH_ENABLD names no tasq setting"),
        "{log}"
    );
    assert!(
        log.contains("TLS off") && log.contains("auth on, 0 API keys"),
        "{log}"
    );
    assert!(log.contains("no API key is configured"), "{log}");
}

/// `tasq key metrics-token` prints a token and the config line that makes /metrics take it.
#[test]
fn key_metrics_token_prints_a_token_and_its_config_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["key", "metrics-token"])
        .output()
        .expect("run tasq key metrics-token");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = text.lines().next().expect("the token").trim().to_string();
    let line = text
        .lines()
        .find(|l| l.starts_with("metrics_token_sha256 = "))
        .expect("the config line");
    let (_dir, path) = config_file(&format!("[auth]\nenabled = true\n{line}\n"));
    let s = TestServer::start_with(&["--config", path.to_str().expect("utf-8")], &[]);
    let url = s.url("/metrics");
    let with = ureq::get(&url)
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .expect("/metrics with the token");
    assert_eq!(with.status(), 200);
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("/metrics without the token: {other:?}"),
    }
}
