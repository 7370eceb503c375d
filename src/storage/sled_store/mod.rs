//! The sled store, the embedded default [`Store`]: one sled database in a local directory.
//!
//! Key spaces (keys in `keys`), each a one-byte prefix in one sled tree, so that every change
//! is one atomic `apply_batch` on one tree: a crash never leaves a record without its index
//! entry, and a batch costs far less than a transaction across several trees.
//! - `tasks`: queue prefix + task id → [`TaskRecord`] (binary, see `record`);
//! - `ready`: queue prefix + priority + order + seq → [`Entry`]: the dispatch index;
//! - `delayed`: queue prefix + due + seq → [`Entry`]: delayed tasks and retry backoff;
//! - `inflight`: queue prefix + task id → (): leased tasks, requeued on recovery;
//! - `dead`: queue prefix + time + seq → task id: dead letters, newest last;
//! - `expiry`: time + queue prefix + task id → more task ids of that queue and time: finished
//!   records to purge;
//! - `queues`: queue prefix → [`QueueMeta`]: counters and settings of each queue;
//! - `waiting`: deadline + queue prefix + task id → (): schedule-to-start deadlines;
//! - `payloads`: queue prefix + task id → payload text, for payloads over
//!   [`PAYLOAD_APART_BYTES`](super::PAYLOAD_APART_BYTES).

mod batch;
pub mod keys;
mod maintenance;
pub mod verify;
pub mod watermark;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use ::sled::{IVec, Tree};
use futures_util::future::BoxFuture;

use super::{
    disk, record, DiskSpace, DueDelayed, Entry, GroupCommit, Health, Page, QueueMeta, ReadyPos,
    Store, StoreOptions, Txn, WriteSeq,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{QueueKey, TaskRecord};

/// The open database and its trees.
pub struct SledStore {
    db: ::sled::Db,
    tree: Tree,
    tasks: Space,
    delayed: Space,
    inflight: Space,
    dead: Space,
    expiry: Space,
    queues: Space,
    waiting: Space,
    payloads: Space,
    /// Front ends' queue attributes (the SQS endpoint's), by queue.
    attributes: Space,
    ready: Space,
    commit: GroupCommit,
    disk: Arc<DiskSpace>,
    health: Arc<Health>,
}

/// The one-byte prefix of each key space.
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Prefix {
    Tasks = b't',
    Ready = b'r',
    Delayed = b'd',
    Inflight = b'i',
    Dead = b'x',
    Expiry = b'e',
    Queues = b'q',
    Waiting = b'w',
    Payloads = b'p',
    Attributes = b'a',
}

/// One key space: the keys of one prefix in the shared tree, read without the prefix.
struct Space {
    tree: Tree,
    prefix: u8,
}

type Item = ::sled::Result<(IVec, IVec)>;

impl Space {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        spaced(self.prefix, k)
    }

    fn get(&self, k: &[u8]) -> ::sled::Result<Option<IVec>> {
        self.tree.get(self.key(k))
    }

    fn bound(&self, b: Bound<Vec<u8>>, start: bool) -> Bound<Vec<u8>> {
        match b {
            Bound::Included(k) => Bound::Included(self.key(&k)),
            Bound::Excluded(k) => Bound::Excluded(self.key(&k)),
            Bound::Unbounded if start => Bound::Included(vec![self.prefix]),
            Bound::Unbounded => Bound::Excluded(vec![self.prefix + 1]),
        }
    }

    /// Keys in `range` (given without the prefix), returned without the prefix.
    fn range(
        &self,
        range: (Bound<Vec<u8>>, Bound<Vec<u8>>),
    ) -> impl DoubleEndedIterator<Item = Item> {
        let range = (self.bound(range.0, true), self.bound(range.1, false));
        self.tree
            .range(range)
            .map(|item| item.map(|(k, v)| (IVec::from(&k[1..]), v)))
    }

    fn scan_prefix(&self, p: &[u8]) -> impl DoubleEndedIterator<Item = Item> {
        self.range((Bound::Included(p.to_vec()), Bound::Excluded(prefix_end(p))))
    }

    fn iter(&self) -> impl DoubleEndedIterator<Item = Item> {
        self.range((Bound::Unbounded, Bound::Unbounded))
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, opts: &StoreOptions, metrics: Arc<Metrics>) -> Result<Arc<Self>> {
        let db = open_sled(dir, opts)?;
        // The watermark guards what the group commit synced; relaxed durability syncs nothing.
        let watermark = if opts.fsync && !opts.temporary {
            Some(watermark::Watermark::open(dir, &db)?)
        } else {
            None
        };
        let tree = db.open_tree("tasq")?;
        let health = Arc::new(Health::new(metrics.storage_healthy.clone()));
        let space = |p: Prefix| Space {
            tree: tree.clone(),
            prefix: p as u8,
        };
        let sync = sync_with(db.clone(), health.clone(), watermark);
        let store = Arc::new(SledStore {
            tasks: space(Prefix::Tasks),
            ready: space(Prefix::Ready),
            delayed: space(Prefix::Delayed),
            inflight: space(Prefix::Inflight),
            dead: space(Prefix::Dead),
            expiry: space(Prefix::Expiry),
            queues: space(Prefix::Queues),
            waiting: space(Prefix::Waiting),
            payloads: space(Prefix::Payloads),
            attributes: space(Prefix::Attributes),
            commit: GroupCommit::start(opts.fsync, metrics, sync),
            disk: DiskSpace::new(opts.max_bytes, opts.reserve_bytes),
            health,
            tree,
            db,
        });
        let measure: std::sync::Weak<dyn disk::Measure> = Arc::downgrade(&store) as _;
        store.disk.watch(dir, measure);
        Ok(store)
    }

    /// Records a failed write or sync in [`Health`] and answers the error.
    fn failed(&self, e: ::sled::Error) -> Error {
        self.health.fail(&e.to_string());
        e.into()
    }

    /// Applies a sled batch of `bytes` atomically, counted for the group commit.
    fn apply(&self, batch: ::sled::Batch, bytes: u64) -> Result<()> {
        self.health.check()?;
        self.disk.wrote(bytes);
        self.tree.apply_batch(batch).map_err(|e| self.failed(e))?;
        self.commit.applied();
        Ok(())
    }
}

/// One group commit of the sled store: stamps the watermark, syncs, and records the stamp
/// once synced. A failure is recorded in `health`, and once failed it never syncs again: a
/// later sync could succeed over pages the kernel dropped.
fn sync_with(
    db: ::sled::Db,
    health: Arc<Health>,
    watermark: Option<watermark::Watermark>,
) -> Box<dyn Fn() -> Result<()> + Send> {
    Box::new(move || {
        health.check()?;
        let failed = |e: String| {
            health.fail(&format!("flush: {e}"));
            Error::Unavailable(format!("storage flush failed: {e}"))
        };
        let stamp = match &watermark {
            Some(w) => Some(w.stamp().map_err(|e| failed(e.to_string()))?),
            None => None,
        };
        db.flush().map_err(|e| failed(e.to_string()))?;
        if let (Some(w), Some(stamp)) = (&watermark, stamp) {
            w.synced(stamp);
        }
        Ok(())
    })
}

impl Store for SledStore {
    fn admit(&self, bytes: u64) -> Result<()> {
        self.disk.admit(bytes)
    }

    /// sled's id generator survives restarts.
    fn next_seq(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    fn commit(&self, txn: Txn) -> Result<()> {
        let (batch, bytes) = batch::of(txn)?;
        self.apply(batch, bytes)
    }

    fn latest_write(&self) -> WriteSeq {
        self.commit.latest()
    }

    fn durable_since(&self, write: WriteSeq) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.commit.durable_since(write))
    }

    fn flush(&self) -> Result<()> {
        self.health.check()?;
        self.db.flush().map_err(|e| self.failed(e))?;
        Ok(())
    }

    fn writable(&self) -> Result<()> {
        self.health.check()
    }

    fn failure(&self) -> Option<String> {
        self.health.failure().map(str::to_string)
    }

    fn failed(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.health.failed())
    }

    /// Reads one task record.
    fn task(&self, queue: &QueueKey, task_id: &str) -> Result<Option<TaskRecord>> {
        let key = keys::task_key(queue, task_id);
        let Some(raw) = self.tasks.get(&key)? else {
            return Ok(None);
        };
        let mut rec = decode_record(&raw)?;
        if rec.payload_apart {
            let text = self.payloads.get(&key)?.ok_or_else(|| {
                Error::Internal(format!("the payload of {queue}/{task_id} is missing"))
            })?;
            rec.payload = std::str::from_utf8(&text)
                .ok()
                .and_then(|t| serde_json::value::RawValue::from_string(t.to_string()).ok())
                .ok_or_else(|| {
                    Error::Internal(format!("the payload of {queue}/{task_id} is damaged"))
                })?;
        }
        Ok(Some(rec))
    }

    /// Reads a queue's counters (zero for a queue never used).
    fn meta(&self, queue: &QueueKey) -> Result<Option<QueueMeta>> {
        match self.queues.get(&keys::queue_prefix(queue))? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("corrupt queue record for {queue}: {e}"))),
        }
    }

    /// Reads up to `limit` ready entries of `queue` after `after` (from the start when `None`),
    /// in dispatch order.
    fn scan_ready(
        &self,
        queue: &QueueKey,
        after: Option<ReadyPos>,
        limit: usize,
    ) -> Result<Vec<(ReadyPos, Entry)>> {
        let prefix = keys::queue_prefix(queue);
        let start = match after {
            Some(pos) => Bound::Excluded(pos.key(queue)),
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for item in self
            .ready
            .range((start, Bound::Excluded(prefix_end(&prefix))))
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let pos = ReadyPos::decode(&k[prefix.len()..]);
            let entry = Entry::decode(&v);
            match (pos, entry) {
                (Some(p), Some(e)) => out.push((p, e)),
                _ => log::error!("skipping a corrupt ready entry in {queue}"),
            }
        }
        Ok(out)
    }

    /// Reads up to `limit` delayed entries of `queue` due at or before `now`, and the due time
    /// of the first one not yet due.
    fn due_delayed(&self, queue: &QueueKey, now: u64, limit: usize) -> Result<DueDelayed> {
        let prefix = keys::queue_prefix(queue);
        let mut due = Vec::new();
        for item in self.delayed.scan_prefix(&prefix) {
            let (k, v) = item?;
            let Some((at, seq)) = keys::decode_delayed(&k[prefix.len()..]) else {
                continue;
            };
            if at > now {
                return Ok((due, Some(at)));
            }
            if due.len() >= limit {
                return Ok((due, Some(at)));
            }
            if let Some(e) = Entry::decode(&v) {
                due.push((at, seq, e));
            }
        }
        Ok((due, None))
    }

    /// Schedule-to-start deadlines due at or before `now`, across all queues, at most `limit`.
    fn due_waiting(&self, now: u64, limit: usize) -> Result<Vec<(QueueKey, String)>> {
        let end = (now + 1).to_be_bytes().to_vec();
        let mut out = Vec::new();
        for item in self
            .waiting
            .range((Bound::Unbounded, Bound::Excluded(end)))
            .take(limit)
        {
            let (k, _) = item?;
            if let Some((_, queue, task_id)) = keys::decode_expiry(&k) {
                out.push((queue, task_id));
            }
        }
        Ok(out)
    }

    /// Task ids of the dead letters of `queue`, newest first, after the page token `before`.
    fn dead_letters(
        &self,
        queue: &QueueKey,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<String>> {
        let prefix = keys::queue_prefix(queue);
        let end = match before {
            Some(b) => {
                let mut k = prefix.clone();
                k.extend_from_slice(b);
                Bound::Excluded(k)
            }
            None => Bound::Excluded(prefix_end(&prefix)),
        };
        let mut ids = Vec::new();
        let mut last = None;
        for item in self
            .dead
            .range((Bound::Included(prefix.clone()), end))
            .rev()
        {
            let (k, v) = item?;
            if ids.len() >= limit {
                return Ok((ids, last));
            }
            last = Some(k[prefix.len()..].to_vec());
            ids.push(String::from_utf8_lossy(&v).into_owned());
        }
        Ok((ids, None))
    }

    /// The records of the tasks leased in `queue` (a queue actor reloading after a restart).
    fn task_ids(&self, queue: &QueueKey, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let prefix = keys::queue_prefix(queue);
        let start = match after {
            Some(id) => Bound::Excluded(keys::task_key(queue, id)),
            None => Bound::Included(prefix.clone()),
        };
        let mut ids = Vec::new();
        for item in self
            .tasks
            .range((start, Bound::Excluded(prefix_end(&prefix))))
        {
            if ids.len() >= limit {
                break;
            }
            let (k, _) = item?;
            ids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(ids)
    }

    fn in_flight_records(&self, queue: &QueueKey) -> Result<Vec<TaskRecord>> {
        let prefix = keys::queue_prefix(queue);
        let mut out = Vec::new();
        for item in self.inflight.scan_prefix(&prefix) {
            let (k, _) = item?;
            let task_id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(rec) = self.task(queue, &task_id)? {
                out.push(rec);
            }
        }
        Ok(out)
    }

    /// Number of task records stored (for tests and diagnostics).
    fn task_count(&self) -> usize {
        self.tasks.iter().count()
    }

    fn leased_tasks(&self) -> Result<Vec<(QueueKey, String)>> {
        self.leased()
    }

    fn list_queues(
        &self,
        namespace: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<(QueueKey, QueueMeta)>> {
        self.queues_page(namespace, after, limit)
    }

    fn attributes(&self, queue: &QueueKey) -> Result<Option<String>> {
        let raw = self.attributes.get(&keys::queue_prefix(queue))?;
        Ok(raw.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn attributed_queues(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, String)>> {
        self.attributes_page(namespace, after, limit)
    }

    fn namespaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.namespace_names(after, limit)
    }

    fn queues_holding_tasks(&self, limit: usize) -> Result<Vec<(QueueKey, QueueMeta)>> {
        self.queues_with_tasks(limit)
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize> {
        self.purge(now, limit)
    }

    fn is_empty(&self) -> Result<bool> {
        Ok(self.tree.is_empty())
    }

    fn export(&self, batch: usize, sink: &mut dyn FnMut(Txn) -> Result<()>) -> Result<()> {
        self.export_all(batch, sink)
    }

    /// sled's ids cannot be set: they are drawn until past `seq` (a copy's largest; its id
    /// generator hands out about a million a second).
    fn reserve_seq(&self, seq: u64) -> Result<()> {
        while self.db.generate_id()? <= seq {}
        Ok(())
    }
}

/// Opens sled in `dir`. A damaged file can make sled panic while it recovers: that is caught
/// and answered as an error naming the directory, like any other reason it cannot open.
fn open_sled(dir: &Path, opts: &StoreOptions) -> Result<::sled::Db> {
    let config = ::sled::Config::new()
        .path(dir)
        .temporary(opts.temporary)
        .cache_capacity(opts.cache_capacity_bytes)
        .snapshot_after_bytes(Some(opts.snapshot_after_bytes).filter(|&b| b > 0))
        // In relaxed mode sled's own timer flushes; in fsync mode the group commit does.
        .flush_every_ms(Some(500));
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    let hint = format!(
        "`tasq store verify {}` reports what is damaged",
        dir.display()
    );
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(Error::Unavailable(format!(
            "cannot open the store in {dir:?}: {e}; {hint}"
        ))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(Error::Unavailable(format!(
                "the store in {dir:?} is damaged: sled failed to recover it ({what}); {hint}"
            )))
        }
    }
}

fn decode_record(raw: &[u8]) -> Result<TaskRecord> {
    record::decode(raw).map_err(|e| Error::Internal(format!("corrupt task record: {e}")))
}

/// `key` in the key space `prefix`: the full key in the shared tree.
fn spaced(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix);
    k.extend_from_slice(key);
    k
}

/// The smallest key greater than every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests;
