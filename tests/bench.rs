//! Smoke test of the load generator (`tasq bench`): every workload runs briefly (small N)
//! against a real server, in-process through `tasq::bench::run_report`, so it keeps working.
//! Benchmarks are not pass/fail tests: only that each run finishes and counts right is
//! checked, never a figure's size.

mod common;

use clap::Parser;
use common::TestServer;
use tasq::bench::{run_report, BenchArgs, Report};

/// `tasq bench …` as the binary parses it.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

/// Runs `tasq bench --server BASE --no-progress ARGS…`.
fn bench(server: &TestServer, args: &[&str]) -> Report {
    let mut argv = vec!["bench", "--server", server.base(), "--no-progress"];
    argv.extend_from_slice(args);
    let cli = match Cli::try_parse_from(&argv) {
        Ok(cli) => cli,
        Err(e) => panic!("bad arguments {argv:?}: {e}"),
    };
    match run_report(cli.bench) {
        Ok(report) => report,
        Err(e) => panic!(
            "tasq bench {args:?} failed: {e}\nserver stderr:\n{}",
            server.stderr()
        ),
    }
}

#[track_caller]
fn assert_all_completed(r: &Report, n: f64) {
    assert_eq!(r.get("completed"), Some(n), "{}", r.render());
    assert_eq!(r.get("lease_lost"), Some(0.0), "{}", r.render());
}

#[test]
fn throughput_workloads_run_over_http_and_websocket() {
    let server = TestServer::start();

    let r = bench(&server, &["backlog", "-n", "300", "-c", "4", "-p", "8"]);
    assert_all_completed(&r, 300.0);
    assert!(r.get("add_rate").is_some_and(|v| v > 0.0), "{}", r.render());
    assert!(
        r.get("drain_rate").is_some_and(|v| v > 0.0),
        "{}",
        r.render()
    );

    let r = bench(
        &server,
        &[
            "backlog",
            "-n",
            "200",
            "--max-tasks",
            "10",
            "--fairness-keys",
            "7",
        ],
    );
    assert_all_completed(&r, 200.0);

    let r = bench(&server, &["live", "-n", "300", "-c", "4"]);
    assert_all_completed(&r, 300.0);
    assert_eq!(r.get("receipt_samples"), Some(300.0), "{}", r.render());

    // Fewer requests per task: one settle many per poll, and complete with `next`.
    for (settle, max_tasks) in [("batch", "10"), ("next", "1"), ("next", "4")] {
        let r = bench(
            &server,
            &[
                "live",
                "-n",
                "300",
                "-c",
                "4",
                "--settle",
                settle,
                "--max-tasks",
                max_tasks,
            ],
        );
        assert_all_completed(&r, 300.0);
        assert_eq!(r.get("receipt_samples"), Some(300.0), "{}", r.render());
    }
    let r = bench(
        &server,
        &[
            "backlog",
            "-n",
            "300",
            "--settle",
            "batch",
            "--max-tasks",
            "100",
        ],
    );
    assert_all_completed(&r, 300.0);

    let r = bench(
        &server,
        &[
            "live",
            "-n",
            "300",
            "-c",
            "2",
            "--transport",
            "ws",
            "--credit",
            "8",
            "--add-batch",
            "7",
        ],
    );
    // 300 is not a multiple of 7: the last batch is short, and every task still arrives once.
    assert_all_completed(&r, 300.0);
    assert_eq!(r.get("receipt_samples"), Some(300.0), "{}", r.render());

    let r = bench(
        &server,
        &[
            "latency",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "-c",
            "2",
        ],
    );
    assert_all_completed(&r, 200.0);
    assert!(
        r.get("receipt_samples").is_some_and(|v| v > 100.0),
        "{}",
        r.render()
    );
    assert!(r.get("receipt_p99_ms").is_some(), "{}", r.render());

    // --json output is one object with the figures.
    let json = r.to_json();
    assert_eq!(json["workload"], "latency");
    assert!(json["results"]["receipt_p50_ms"].is_number(), "{json}");
}

#[test]
fn memory_workloads_read_the_server_rss() {
    let server = TestServer::start_with(&[], &[("TASQ_QUEUE_IDLE_TIMEOUT", "1s")]);
    let pid = server.pid().to_string();

    let r = bench(
        &server,
        &[
            "queues",
            "-n",
            "50",
            "--idle-wait",
            "10s",
            "--probe",
            "10",
            "--server-pid",
            &pid,
        ],
    );
    // Every task is there after its queue unloaded: 10 by the probe, the rest by the drain.
    assert_eq!(r.get("probe_hits"), Some(10.0), "{}", r.render());
    assert_eq!(r.get("drained"), Some(50.0), "{}", r.render());
    assert!(
        r.get("rss_peak_mib").is_some_and(|v| v > 0.0),
        "{}",
        r.render()
    );
    assert!(
        r.get("loaded_queues_peak").is_some_and(|v| v >= 50.0),
        "{}",
        r.render()
    );
    assert_eq!(r.get("loaded_queues_idle"), Some(0.0), "{}", r.render());

    // Without --server-pid the generator finds the server by its port.
    let r = bench(&server, &["pollers", "-n", "40", "--per-queue", "15"]);
    assert_eq!(r.get("parked"), Some(40.0), "{}", r.render());
    assert_eq!(r.get("parked_after_release"), Some(0.0), "{}", r.render());
    assert!(
        r.get("rss_parked_mib").is_some_and(|v| v > 0.0),
        "{}",
        r.render()
    );
}

#[test]
fn runs_on_queues_past_the_metric_series_bound() {
    // One queue gets its own series; every later run's queue reports under `_other`, and the
    // generator must still see its workers parked before it starts adding.
    let server = TestServer::start_with(&[], &[("TASQ_METRICS_MAX_QUEUE_SERIES", "1")]);
    for args in [
        &["live", "-n", "50", "-c", "2"][..],
        &["live", "-n", "50", "-c", "3"][..],
        &["live", "-n", "50", "-c", "2", "--transport", "ws"][..],
    ] {
        let r = bench(&server, args);
        assert_all_completed(&r, 50.0);
    }
    let (status, _, metrics) = common::get_text(&server.url("/metrics"));
    assert_eq!(status, 200);
    assert!(
        metrics.contains("task_queue=\"_other\""),
        "the later runs' queues should be past the bound:\n{metrics}"
    );
}
