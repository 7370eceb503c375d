//! sled's page-table snapshots written while serving (`[storage] snapshot_after_bytes`): sled
//! on its own writes one only when it opens, so a start after hours of writes replayed all of
//! them. The store now writes them as its log grows; these kill the server with SIGKILL while
//! they are being written, again and again, and every acknowledged add and complete must be
//! there after each start. (The same under a power cut is in `faults_powercut.rs`.)

mod common;

use common::faults::{newest_snapshot_lsn, start_load, verify, wait_for_snapshot, Load};
use common::*;

/// These are about the sled store's files: its servers run on sled, whatever the harness's
/// backend.
const SLED: (&str, &str) = ("TASQ_STORAGE_BACKEND", "sled");

/// A snapshot each time 64 KiB of log is synced: one at nearly every flush (500 ms).
const OFTEN: (&str, &str) = ("TASQ_STORAGE_SNAPSHOT_AFTER_BYTES", "65536");

#[test]
fn sigkill_while_snapshots_are_written_loses_nothing_start_after_start() {
    let mut s = TestServer::start_with(&[], &[SLED, OFTEN]);
    let qpath = q(NS, "snapshots-kill9", "activity");
    let mut seen = newest_snapshot_lsn(&s.data_dir());
    let load = Load {
        big_every: 25,
        ..Load::default()
    };
    for round in 0..3 {
        // Past the snapshot the start wrote, then one more while the load goes on: the kill
        // lands after a snapshot written while serving and amid the writes that follow it.
        let running = start_load(s.base(), &qpath, load);
        let first = wait_for_snapshot(&s, seen);
        let second = wait_for_snapshot(&s, first);
        let added_by_then = running.ledger().added.lock().expect("ledger").len();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while running.ledger().added.lock().expect("ledger").len() < added_by_then + 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "no adds answered in 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s.kill9();
        let ledger = running.stop();
        s.restart();
        let outcome = ledger.verify(&s, &qpath, &format!("snapshots, start {round}"));
        assert!(outcome.acknowledged > 0, "the load added nothing");
        assert_eq!((outcome.lost, outcome.resurrected), (0, 0), "{outcome:?}");
        seen = newest_snapshot_lsn(&s.data_dir());
        assert!(
            seen >= second,
            "the start went back to an older snapshot: {seen} < {second}"
        );
    }
    // Every record, index entry and counter of the store agrees, read through the page table
    // the last snapshot written while serving gave it.
    let running = start_load(s.base(), &qpath, load);
    wait_for_snapshot(&s, seen);
    s.kill9();
    drop(running.stop());
    let (code, report) = verify(&s.data_dir());
    assert_eq!(code, 0, "tasq store verify after snapshots: {report}");
}

#[test]
fn with_snapshots_off_only_a_start_writes_one() {
    let mut s = TestServer::start_with(&[], &[SLED, ("TASQ_STORAGE_SNAPSHOT_AFTER_BYTES", "0")]);
    let qpath = q(NS, "snapshots-off", "activity");
    let at_start = newest_snapshot_lsn(&s.data_dir());
    let running = start_load(s.base(), &qpath, Load::default());
    std::thread::sleep(std::time::Duration::from_secs(3));
    let ledger = running.stop();
    assert_eq!(
        newest_snapshot_lsn(&s.data_dir()),
        at_start,
        "a snapshot was written while serving with snapshot_after_bytes = 0"
    );
    s.kill9();
    s.restart();
    let outcome = ledger.verify(&s, &qpath, "snapshots off");
    assert!(outcome.acknowledged > 0, "the load added nothing");
    assert_eq!((outcome.lost, outcome.resurrected), (0, 0), "{outcome:?}");
    assert!(
        newest_snapshot_lsn(&s.data_dir()) > at_start,
        "the start after the writes wrote no snapshot"
    );
}
