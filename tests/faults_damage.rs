//! Fault suite: damaged stores. A store with 300 tasks (some with 300 KB payloads, which sled
//! keeps in blob files) and 100 completes is stopped cleanly, then a copy of it is damaged in
//! one way at a time: the `db` file cut to half, cut by 100 bytes, a range zeroed, bytes
//! flipped, a blob file overwritten. The server must refuse each with a message naming
//! `tasq store verify` (never serve an older store as if nothing happened, never panic), and
//! `tasq store verify` must report it damaged; the undamaged store verifies clean and serves.

mod common;

use common::faults::verify;
use common::*;
use serde_json::json;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const QUEUE: &str = "damage";

/// These are faults of the sled store's files: its servers run on sled, whatever the harness's
/// backend.
const SLED: &[(&str, &str)] = &[("TASQ_STORAGE_BACKEND", "sled")];

/// Builds the store once; answers the stopped server (which holds its directory).
fn populated() -> TestServer {
    let mut s = TestServer::start_with(&[], SLED);
    let qp = q(NS, QUEUE, "activity");
    let big = "x".repeat(300_000);
    for i in 0..300 {
        let payload = if i % 50 == 0 {
            json!(big)
        } else {
            json!({"n": i})
        };
        add_task(
            &s,
            &qp,
            json!({"task_type": "t", "task_id": format!("t{i}"), "payload": payload}),
        );
    }
    for _ in 0..100 {
        let t = poll_one(&s, &qp, "w", 0).expect("a task");
        assert_eq!(complete(&s, &lease_of(&t), json!(1)).0, 200);
    }
    s.terminate();
    assert!(s.wait_exit(Duration::from_secs(30)).is_some(), "stops");
    s
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// Runs `tasq serve` on `dir` expecting it to refuse: answers its exit code and stderr.
fn serve_expecting_refusal(dir: &Path) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tasq"))
        .args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tasq");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let out = child.wait_with_output().expect("output");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.contains("listening on"),
                "it served the damaged store: {stdout}"
            );
            return (
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tasq served a damaged store in {dir:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn overwrite(file: &Path, at: u64, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open for damage");
    f.seek(SeekFrom::Start(at)).expect("seek");
    f.write_all(bytes).expect("damage");
}

fn truncate(file: &Path, len: impl FnOnce(u64) -> u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open for truncation");
    let size = f.metadata().expect("metadata").len();
    f.set_len(len(size)).expect("truncate");
}

fn first_blob(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("blobs"))
        .expect("blobs/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .min()
        .expect("the 300 KB payloads made blob files")
}

#[test]
fn a_damaged_store_is_refused_at_start_and_reported_by_verify() {
    let s = populated();
    let pristine = s.data_dir();
    let scratch = tempfile::tempdir().expect("scratch");

    let (code, out) = verify(&pristine);
    assert_eq!(code, 0, "the undamaged store verifies clean: {out}");
    assert!(out.contains("300 task records"), "{out}");

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("db cut to half", |d| truncate(&d.join("db"), |n| n / 2)),
        ("db cut by 100 bytes", |d| {
            truncate(&d.join("db"), |n| n - 100)
        }),
        ("64 KiB of db zeroed", |d| {
            overwrite(&d.join("db"), 12_288, &[0u8; 65_536])
        }),
        ("bytes of db flipped", |d| {
            overwrite(&d.join("db"), 20_000, &[0xff; 4])
        }),
        ("a blob overwritten", |d| {
            overwrite(&first_blob(d), 100, &[0, 0x11, 0x22, 0x33])
        }),
    ];
    let mut refused = 0;
    for (name, damage) in damages {
        let dir = scratch.path().join(name.replace(' ', "-"));
        copy_dir(&pristine, &dir);
        damage(&dir);
        let (code, stderr) = serve_expecting_refusal(&dir);
        assert_ne!(code, 0, "{name}: {stderr}");
        assert_ne!(code, 101, "{name}: a panic is not a refusal: {stderr}");
        assert!(
            stderr.contains("tasq store verify"),
            "{name}: the refusal says how to look: {stderr}"
        );
        let (code, out) = verify(&dir);
        assert_eq!(code, 1, "{name}: verify reports it damaged: {out}");
        assert!(out.contains("damaged"), "{name}: {out}");
        refused += 1;
        println!("damage: {name}: refused at start, verify exit 1");
    }
    println!("damage: {refused} of 5 damaged stores refused; 0 served");

    // Verifying changed nothing: the store it read still verifies clean.
    let (code, out) = verify(&pristine);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_task_whose_record_cannot_be_read_does_not_hold_up_the_others() {
    let mut s = TestServer::start_with(&[], SLED);
    let qp = q(NS, "damage-one", "activity");
    // Added first, so it heads the ready index; its payload is stored apart (over 2 KiB).
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "bad", "payload": "b".repeat(5000)}),
    );
    for id in ["good1", "good2"] {
        add_task(&s, &qp, json!({"task_type": "t", "task_id": id}));
    }
    s.terminate();
    assert!(s.wait_exit(Duration::from_secs(30)).is_some());

    // Damage: the payload of "bad" is gone from the store (as a lost page would leave it).
    {
        let db = sled::open(s.data_dir()).expect("open the stopped store");
        let tree = db.open_tree("tasq").expect("tree");
        let queue = tasq::model::QueueKey::new(NS, "damage-one", tasq::model::QueueType::Activity)
            .expect("queue");
        let mut key = vec![b'p'];
        key.extend_from_slice(&tasq::storage::sled_store::keys::task_key(&queue, "bad"));
        assert!(
            tree.remove(key).expect("remove").is_some(),
            "the payload was apart"
        );
        db.flush().expect("flush");
    }
    let (code, out) = verify(&s.data_dir());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("payload of default/damage-one"), "{out}");

    s.restart();
    let tasks = poll_tasks(
        &s,
        &qp,
        json!({"identity": "w", "max_tasks": 10, "wait_ms": 0}),
    );
    let ids: Vec<&str> = tasks.iter().filter_map(|t| t["task_id"].as_str()).collect();
    assert_eq!(ids, ["good1", "good2"], "the readable tasks are dispatched");
    println!("damage: one unreadable task left out of dispatch; 2 of 2 others delivered");
}
