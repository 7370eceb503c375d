//! `tasq store verify DIR`: reports what is damaged in a store, without changing it.
//!
//! sled repairs as it opens (it cuts its log at the first broken entry), so the store is
//! copied to a temporary directory and the copy is opened. Then: can sled open it at all
//! (a panic while recovering is caught), did it lose synced writes (the watermark), and does
//! every record decode, every index entry point at a record in the right state, every payload
//! kept apart exist, and every queue's counters match its indexes.

use std::collections::HashMap;
use std::path::Path;

use super::{keys, watermark, Prefix, SledStore};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{QueueKey, TaskState};
use crate::storage::{record, Store, StoreOptions};

/// What a verification found.
#[derive(Debug, Default)]
pub struct Report {
    /// Task records read.
    pub tasks: u64,
    /// Queues with counters.
    pub queues: u64,
    /// Each problem found, as a sentence.
    pub problems: Vec<String>,
}

impl Report {
    /// True when nothing is damaged.
    pub fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, what: String) {
        // A badly damaged store can have millions; the first thousand say enough.
        if self.problems.len() < 1000 {
            self.problems.push(what);
        }
    }
}

/// Counts of one queue's indexes, to compare with its stored counters.
#[derive(Default)]
struct Counted {
    ready: u64,
    delayed: u64,
    in_flight: u64,
    dead: u64,
}

/// Verifies the store in `dir` (see the module doc). An error means it could not be looked
/// at (no such directory, no room for the copy); damage is in the report.
pub fn verify(dir: &Path) -> Result<Report> {
    if !dir.join("db").is_file() {
        return Err(Error::invalid(format!(
            "{dir:?} holds no tasq store (no db file)"
        )));
    }
    let copy = Scratch(std::env::temp_dir().join(format!("tasq-verify-{}", uuid::Uuid::new_v4())));
    copy_dir(dir, copy.path())
        .map_err(|e| Error::Internal(format!("cannot copy {dir:?} to look at it: {e}")))?;
    let mut report = Report::default();
    let opts = StoreOptions {
        fsync: false,
        cache_capacity_bytes: 64 << 20,
        temporary: false,
        ..StoreOptions::scratch()
    };
    // With durability relaxed and no bounds the store opens sled alone: no watermark check
    // of its own, no flusher, no disk watcher.
    let store = match SledStore::open(copy.path(), &opts, Metrics::new(1)) {
        Ok(store) => store,
        Err(e) => {
            report.problem(e.to_string());
            return Ok(report);
        }
    };
    let marks = watermark::read(copy.path(), &store.db)?;
    if marks.lost_writes() {
        report.problem(format!(
            "writes were lost: the store was synced up to commit {} but holds commits up \
             to {} only",
            marks.file.unwrap_or(0),
            marks.store
        ));
    }
    store.check_indexes(&mut report);
    Ok(report)
}

/// A directory removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

impl SledStore {
    /// Reads every key and checks records, indexes and counters against each other.
    fn check_indexes(&self, report: &mut Report) {
        let mut counted: HashMap<QueueKey, Counted> = HashMap::new();
        let state_of = |report: &mut Report, queue: &QueueKey, id: &str, what: &str| match self
            .task(queue, id)
        {
            Ok(Some(rec)) => Some(rec.state),
            Ok(None) => {
                report.problem(format!("{what} of {queue}/{id} has no task record"));
                None
            }
            Err(e) => {
                report.problem(format!("{queue}/{id}: {e}"));
                None
            }
        };
        for item in self.tree.iter() {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    report.problem(format!("reading the store failed: {e}"));
                    return;
                }
            };
            let Some((&prefix, rest)) = key.split_first() else {
                continue;
            };
            let Some((queue, tail)) = keys::split_queue(rest) else {
                if prefix != Prefix::Expiry as u8 && prefix != Prefix::Waiting as u8 {
                    report.problem(format!("a key of space {:?} is damaged", prefix as char));
                }
                continue;
            };
            let c = counted.entry(queue.clone()).or_default();
            match prefix {
                p if p == Prefix::Tasks as u8 => {
                    report.tasks += 1;
                    match record::decode(&value) {
                        Ok(rec) if rec.payload_apart => {
                            if !matches!(self.payloads.get(rest), Ok(Some(_))) {
                                report.problem(format!(
                                    "the payload of {queue}/{} is missing",
                                    rec.task_id
                                ));
                            }
                        }
                        Ok(_) => {}
                        Err(e) => report.problem(format!("a task record of {queue}: {e}")),
                    }
                }
                p if p == Prefix::Ready as u8 => {
                    c.ready += 1;
                    match super::Entry::decode(&value) {
                        Some(e) => {
                            let state = state_of(report, &queue, &e.task_id, "a ready entry");
                            if state.is_some_and(|s| s != TaskState::Pending) {
                                report.problem(format!(
                                    "{queue}/{} is ready but {state:?}",
                                    e.task_id
                                ));
                            }
                        }
                        None => report.problem(format!("a ready entry of {queue} is damaged")),
                    }
                }
                p if p == Prefix::Delayed as u8 => {
                    c.delayed += 1;
                    if super::Entry::decode(&value).is_none() {
                        report.problem(format!("a delayed entry of {queue} is damaged"));
                    }
                }
                p if p == Prefix::Inflight as u8 => {
                    c.in_flight += 1;
                    let id = String::from_utf8_lossy(tail).into_owned();
                    state_of(report, &queue, &id, "a lease");
                }
                p if p == Prefix::Dead as u8 => {
                    c.dead += 1;
                    let id = String::from_utf8_lossy(&value).into_owned();
                    let state = state_of(report, &queue, &id, "a dead letter");
                    if state.is_some_and(|s| !s.is_dead_letter()) {
                        report.problem(format!("{queue}/{id} is listed dead but {state:?}"));
                    }
                }
                _ => {}
            }
        }
        for item in self.queues.iter() {
            let Ok((k, _)) = item else { continue };
            let Some((queue, _)) = keys::split_queue(&k) else {
                continue;
            };
            report.queues += 1;
            let meta = match self.meta(&queue) {
                Ok(m) => m.unwrap_or_default(),
                Err(e) => {
                    report.problem(e.to_string());
                    continue;
                }
            };
            let c = counted.remove(&queue).unwrap_or_default();
            for (what, stored, found) in [
                ("ready", meta.ready, c.ready),
                ("delayed", meta.delayed, c.delayed),
                ("in flight", meta.in_flight, c.in_flight),
                ("dead", meta.dead, c.dead),
            ] {
                if stored != found {
                    report.problem(format!(
                        "{queue} counts {stored} {what} tasks but its index holds {found}"
                    ));
                }
            }
        }
    }
}
