//! The fault suite's shared load and ledger: producers add tasks (some with large payloads,
//! which sled keeps in files of their own) and workers poll and complete them, each recording
//! what the server acknowledged; after the fault, [`Ledger::verify`] counts what was lost.

use super::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What the server answered 2xx for, by task id.
#[derive(Default)]
pub struct Ledger {
    /// Adds answered 201.
    pub added: Mutex<BTreeSet<String>>,
    /// Completes answered 200.
    pub completed: Mutex<BTreeSet<String>>,
}

/// What survived a fault.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Adds acknowledged.
    pub acknowledged: usize,
    /// Acknowledged adds whose task is gone.
    pub lost: usize,
    /// Acknowledged completes whose task is no longer completed.
    pub resurrected: usize,
}

/// The shape of the load.
#[derive(Clone, Copy)]
pub struct Load {
    /// Threads adding tasks.
    pub producers: usize,
    /// Threads polling and completing.
    pub workers: usize,
    /// Every `big_every`-th add of a producer carries a payload of `big_bytes` (0: never).
    pub big_every: usize,
    /// Size of a large payload.
    pub big_bytes: usize,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            producers: 4,
            workers: 2,
            big_every: 0,
            big_bytes: 300_000,
        }
    }
}

/// A running load; [`Running::stop`] ends it and hands back the ledger.
pub struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    ledger: Arc<Ledger>,
}

impl Running {
    /// Asks every thread to stop, waits for them (a thread whose server died stops at its next
    /// request) and answers what was acknowledged.
    pub fn stop(self) -> Arc<Ledger> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        self.ledger
    }

    /// The ledger so far.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// Starts `load` on the queue `qpath` of the server at `base`.
pub fn start_load(base: &str, qpath: &str, load: Load) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Ledger::default());
    let mut threads = Vec::new();
    let big = format!("\"{}\"", "b".repeat(load.big_bytes));
    for p in 0..load.producers {
        let (stop, ledger, base, qpath, big) = (
            stop.clone(),
            ledger.clone(),
            base.to_string(),
            qpath.to_string(),
            big.clone(),
        );
        threads.push(thread::spawn(move || {
            let url = format!("{base}{qpath}/tasks");
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = format!("p{p}-{i}");
                let payload = if load.big_every > 0 && i.is_multiple_of(load.big_every) {
                    big.as_str()
                } else {
                    r#"{"n": 1}"#
                };
                let body =
                    format!(r#"{{"task_type": "t", "task_id": "{id}", "payload": {payload}}}"#);
                let res = ureq::post(&url)
                    .set("Content-Type", "application/json")
                    .timeout(Duration::from_secs(30))
                    .send_string(&body);
                match res {
                    Ok(r) if r.status() == 201 => {
                        ledger.added.lock().expect("ledger").insert(id);
                    }
                    Ok(_) | Err(ureq::Error::Status(..)) => {}
                    Err(_) => return,
                }
            }
        }));
    }
    for w in 0..load.workers {
        let (stop, ledger, base, qpath) = (
            stop.clone(),
            ledger.clone(),
            base.to_string(),
            qpath.to_string(),
        );
        threads.push(thread::spawn(move || {
            let poll = json!({"identity": format!("w{w}"), "max_tasks": 10, "wait_ms": 200});
            while !stop.load(Ordering::SeqCst) {
                let tasks = match try_post(&format!("{base}{qpath}/poll"), &poll) {
                    Ok((200, body)) => body["tasks"].as_array().cloned().unwrap_or_default(),
                    Ok(_) => continue,
                    Err(_) => return,
                };
                for t in tasks {
                    let id = t["task_id"].as_str().unwrap_or_default().to_string();
                    let url = format!("{base}/api/v1/leases/{}/complete", lease_of(&t));
                    match try_post(&url, &json!({"result": 1})) {
                        Ok((200, _)) => {
                            ledger.completed.lock().expect("ledger").insert(id);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    Running {
        stop,
        threads,
        ledger,
    }
}

impl Ledger {
    /// Reads back every acknowledged task from the server `s` and counts what was lost;
    /// prints the counts (the fault suite's report).
    pub fn verify(&self, s: &TestServer, qpath: &str, fault: &str) -> Outcome {
        let added = self.added.lock().expect("ledger").clone();
        let completed = self.completed.lock().expect("ledger").clone();
        let mut lost = Vec::new();
        let mut resurrected = Vec::new();
        for id in &added {
            let (code, body) = get(&s.url(&format!("{qpath}/tasks/{id}")));
            match code {
                200 => {
                    if completed.contains(id) && body["state"] != "completed" {
                        resurrected.push(id.clone());
                    }
                }
                404 => lost.push(id.clone()),
                other => panic!("status of {id}: {other} {body}"),
            }
        }
        let outcome = Outcome {
            acknowledged: added.len(),
            lost: lost.len(),
            resurrected: resurrected.len(),
        };
        println!(
            "{fault}: acknowledged {} adds and {} completes; lost {}, resurrected {} \
             (lost {:.5?}, resurrected {:.5?})",
            outcome.acknowledged,
            completed.len(),
            outcome.lost,
            outcome.resurrected,
            lost,
            resurrected
        );
        outcome
    }
}

/// The log sequence number of the newest snapshot of sled's page table in `data` (its files
/// are `snap.<16 hex digits>`), 0 when there is none.
pub fn newest_snapshot_lsn(data: &Path) -> u64 {
    std::fs::read_dir(data)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let hex = name.strip_prefix("snap.")?;
                    u64::from_str_radix(hex, 16).ok()
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Waits until the server has written a snapshot newer than `after` (it writes them while
/// serving, as its log grows; panics after 60 s) and answers its number.
pub fn wait_for_snapshot(s: &TestServer, after: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let lsn = newest_snapshot_lsn(&s.data_dir());
        if lsn > after {
            return lsn;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot past {after} written within 60 s"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Runs `tasq store verify DIR`: its exit code and output.
pub fn verify(dir: &Path) -> (i32, String) {
    exit_code_and_output(tasq_command().args(["store", "verify"]).arg(dir))
}
