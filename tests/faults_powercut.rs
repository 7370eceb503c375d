//! Fault suite: a power cut. The data directory is a LazyFS mount (`tools/lazyfs/powercut`),
//! which keeps every write in its own cache until `fsync`/`fdatasync` and drops whatever is
//! not synced on `cut`, as a power loss does. Under producers and workers the server is
//! killed with SIGKILL, the power is cut, and the server must start again with every
//! acknowledged add and complete.
//!
//! These need LazyFS (built from Debian packages by `tools/lazyfs/build.sh`) and `/dev/fuse`,
//! so they are `#[ignore]`d in a plain `cargo test`; `.ci/faults` runs them.

mod common;

use common::faults::{newest_snapshot_lsn, start_load, wait_for_snapshot, Load, Outcome};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A LazyFS mount over a data directory, unmounted when dropped.
struct PowerCut {
    dir: PathBuf,
}

impl PowerCut {
    fn tool() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/lazyfs/powercut")
    }

    fn run(cmd: &str, dir: &Path) {
        let out = Command::new(Self::tool())
            .arg(cmd)
            .arg(dir)
            .output()
            .expect("run tools/lazyfs/powercut");
        assert!(
            out.status.success(),
            "powercut {cmd} {dir:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Mounts LazyFS over `dir`. LazyFS itself has been seen to abort as it starts (once in
    /// a CI run, the first mount of the suite; never again on the same machine): a mount
    /// that fails is tried again, twice, before the test fails with LazyFS's own log.
    fn mount(dir: &Path) -> PowerCut {
        for attempt in 1..=3 {
            let out = Command::new(Self::tool())
                .arg("mount")
                .arg(dir)
                .output()
                .expect("run tools/lazyfs/powercut");
            if out.status.success() {
                return PowerCut {
                    dir: dir.to_path_buf(),
                };
            }
            let log = std::fs::read_to_string(dir.with_extension("lazyfs.log")).unwrap_or_default();
            let _ = Command::new("fusermount3").arg("-uz").arg(dir).status();
            assert!(
                attempt < 3,
                "powercut mount {dir:?} failed 3 times: {}{}\nLazyFS log:\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "powercut mount {dir:?} failed (attempt {attempt}), trying again: {}\nLazyFS log:\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        unreachable!("the last attempt asserts")
    }

    /// Drops every write not yet synced.
    fn cut(&self) {
        Self::run("cut", &self.dir);
    }
}

impl Drop for PowerCut {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(&self.dir)
            .status();
    }
}

/// Starts a server on a LazyFS mount.
fn start_on_lazyfs() -> (TestServer, PowerCut) {
    start_on_lazyfs_with(&[])
}

/// [`start_on_lazyfs`] with extra environment variables.
fn start_on_lazyfs_with(env: &[(&str, &str)]) -> (TestServer, PowerCut) {
    let mut mount = None;
    let s = TestServer::start_prepared(&[], env, |data| mount = Some(PowerCut::mount(data)));
    s.wait_ready();
    (s, mount.expect("mounted"))
}

/// Runs `load` for `secs`, kills the server, cuts the power, starts it again and counts.
fn cut_under_load(name: &str, load: Load, secs: u64) -> Outcome {
    let (mut s, cut) = start_on_lazyfs();
    let qpath = q(NS, name, "activity");
    let running = start_load(s.base(), &qpath, load);
    std::thread::sleep(Duration::from_secs(secs));
    s.kill9();
    let ledger = running.stop();
    cut.cut();
    s.restart();
    let outcome = ledger.verify(&s, &qpath, name);
    assert!(outcome.acknowledged > 0, "the load added nothing");
    drop(s);
    outcome
}

#[test]
#[ignore = "needs LazyFS and /dev/fuse: run by .ci/faults"]
fn a_power_cut_under_load_loses_no_acknowledged_add_or_complete() {
    let outcome = cut_under_load("powercut-small", Load::default(), 4);
    assert_eq!((outcome.lost, outcome.resurrected), (0, 0), "{outcome:?}");
}

#[test]
#[ignore = "needs LazyFS and /dev/fuse: run by .ci/faults"]
fn a_power_cut_with_large_payloads_loses_nothing_and_the_server_starts() {
    let load = Load {
        big_every: 10,
        ..Load::default()
    };
    let outcome = cut_under_load("powercut-large", load, 5);
    assert_eq!((outcome.lost, outcome.resurrected), (0, 0), "{outcome:?}");
}

#[test]
#[ignore = "needs LazyFS and /dev/fuse: run by .ci/faults"]
fn a_power_cut_on_a_quiet_store_keeps_its_last_adds() {
    let (mut s, cut) = start_on_lazyfs();
    let qpath = q(NS, "powercut-quiet", "activity");
    for i in 0..5 {
        add_task(
            &s,
            &qpath,
            json!({"task_type": "t", "task_id": format!("q{i}")}),
        );
    }
    s.kill9();
    cut.cut();
    s.restart();
    for i in 0..5 {
        let (code, body) = get(&s.url(&format!("{qpath}/tasks/q{i}")));
        assert_eq!(code, 200, "q{i} after the cut: {body}");
    }
    println!("powercut-quiet: acknowledged 5 adds; lost 0");
}

/// sled's page-table snapshots written while serving (`[storage] snapshot_after_bytes`) may
/// point only at log the power cut cannot take: here one is written at nearly every flush, the
/// power is cut after several, and the start must find everything acknowledged, twice over.
#[test]
#[ignore = "needs LazyFS and /dev/fuse: run by .ci/faults"]
fn a_power_cut_after_snapshots_written_while_serving_loses_nothing() {
    let (mut s, cut) = start_on_lazyfs_with(&[("TASQ_STORAGE_SNAPSHOT_AFTER_BYTES", "65536")]);
    let qpath = q(NS, "powercut-snapshots", "activity");
    let load = Load {
        big_every: 25,
        ..Load::default()
    };
    let mut seen = newest_snapshot_lsn(&s.data_dir());
    for round in 0..2 {
        let running = start_load(s.base(), &qpath, load);
        let first = wait_for_snapshot(&s, seen);
        let second = wait_for_snapshot(&s, first);
        std::thread::sleep(Duration::from_millis(500));
        s.kill9();
        let ledger = running.stop();
        cut.cut();
        s.restart();
        let outcome = ledger.verify(&s, &qpath, &format!("powercut-snapshots {round}"));
        assert!(outcome.acknowledged > 0, "the load added nothing");
        assert_eq!((outcome.lost, outcome.resurrected), (0, 0), "{outcome:?}");
        assert!(second > first, "snapshots {first} → {second}");
        seen = newest_snapshot_lsn(&s.data_dir());
    }
}
