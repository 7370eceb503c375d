//! The sled store: the single source of truth across restarts.
//!
//! The queue actors talk to storage only through this narrow interface: domain reads
//! (a record, a range of the ready index, due delayed entries, a queue's counters) and
//! [`Txn`], a set of writes applied atomically across trees. A shared store for several nodes
//! can later implement the same operations.
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
//!   [`PAYLOAD_APART_BYTES`]: written once at add, so the record rewritten on every lease and
//!   settle stays small.

pub mod commit;
pub mod disk;
pub mod health;
pub mod keys;
mod maintenance;
pub mod record;
mod txn;
pub mod verify;
pub mod watermark;

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::{IVec, Tree};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{QueueKey, Queued, TaskRecord, TaskState};
pub use commit::{GroupCommit, Written};
pub use disk::DiskSpace;
pub use health::Health;
pub use keys::{Entry, EntryRoute, ReadyPos};
pub use maintenance::{Resting, RESTING_SCAN};
pub use txn::Txn;

use crate::model::rate::RateLimit;

/// Payloads longer than this are stored apart from their record (see the `payloads` space).
pub const PAYLOAD_APART_BYTES: usize = 2048;

/// Counters and settings of one queue, kept in step by its actor in the same transaction as
/// each change, so loading a queue never counts a large backlog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// Entries in the ready index.
    pub ready: u64,
    /// Entries in the delayed index.
    pub delayed: u64,
    /// Leased tasks.
    pub in_flight: u64,
    /// Dead letters.
    pub dead: u64,
    /// The dispatch limit set with `PUT {q}/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Settings for opening the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `fsync`: every acknowledged write is flushed (group commit).
    pub fsync: bool,
    /// sled page cache.
    pub cache_capacity_bytes: u64,
    /// A temporary store, deleted when closed (tests, embedders).
    pub temporary: bool,
    /// Above this many bytes on disk adds are refused (0 = never).
    pub max_bytes: u64,
    /// Adds are refused while the disk has less free space than this (0 = never).
    pub reserve_bytes: u64,
}

/// The open database and its trees.
pub struct Store {
    db: sled::Db,
    tree: Tree,
    tasks: Space,
    delayed: Space,
    inflight: Space,
    dead: Space,
    expiry: Space,
    queues: Space,
    waiting: Space,
    payloads: Space,
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
}

/// One key space: the keys of one prefix in the shared tree, read without the prefix.
struct Space {
    tree: Tree,
    prefix: u8,
}

type Item = sled::Result<(IVec, IVec)>;

impl Space {
    fn key(&self, k: &[u8]) -> Vec<u8> {
        spaced(self.prefix, k)
    }

    fn get(&self, k: &[u8]) -> sled::Result<Option<IVec>> {
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

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, opts: &StoreOptions, metrics: Arc<Metrics>) -> Result<Arc<Self>> {
        let db = open_sled(dir, opts)?;
        // The watermark guards what the group commit synced; relaxed durability syncs nothing.
        let watermark = if opts.fsync && !opts.temporary {
            Some(Arc::new(watermark::Watermark::open(dir, &db)?))
        } else {
            None
        };
        let tree = db.open_tree("tasq")?;
        let health = Arc::new(Health::new(metrics.storage_healthy.clone()));
        let space = |p: Prefix| Space {
            tree: tree.clone(),
            prefix: p as u8,
        };
        let store = Arc::new(Store {
            tasks: space(Prefix::Tasks),
            ready: space(Prefix::Ready),
            delayed: space(Prefix::Delayed),
            inflight: space(Prefix::Inflight),
            dead: space(Prefix::Dead),
            expiry: space(Prefix::Expiry),
            queues: space(Prefix::Queues),
            waiting: space(Prefix::Waiting),
            payloads: space(Prefix::Payloads),
            commit: GroupCommit::start(db.clone(), opts.fsync, metrics, health.clone(), watermark),
            disk: DiskSpace::new(opts.max_bytes, opts.reserve_bytes),
            health,
            tree,
            db,
        });
        let measure: std::sync::Weak<dyn disk::Measure> = Arc::downgrade(&store) as _;
        store.disk.watch(dir, measure);
        Ok(store)
    }

    /// `Ok` when an add of about `bytes` fits within `storage.max_bytes` and leaves
    /// `storage.reserve_bytes` free on the disk; else the 429 to answer (see [`DiskSpace`]).
    pub fn admit(&self, bytes: u64) -> Result<()> {
        self.disk.admit(bytes)
    }

    /// A unique, increasing sequence number (sled's id generator survives restarts).
    pub fn next_seq(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Resolves once every write applied so far is on disk (per the durability setting).
    pub async fn durable(&self) -> Result<()> {
        self.commit.durable().await
    }

    /// Whether the store still acknowledges writes (see [`Health`]).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Flushes everything now (shutdown).
    pub fn flush(&self) -> Result<()> {
        self.health.check()?;
        self.db.flush().map_err(|e| self.failed(e))?;
        Ok(())
    }

    /// Records a failed write or sync in [`Health`] and answers the error.
    fn failed(&self, e: sled::Error) -> Error {
        self.health.fail(&e.to_string());
        e.into()
    }

    /// Resolves once `write` and every write before it is on disk (per the durability
    /// setting); see [`GroupCommit::durable_since`].
    pub async fn durable_since(&self, write: Written) -> Result<()> {
        self.commit.durable_since(write).await
    }

    /// The place of the latest write applied so far (see [`Written`]): taken right after a
    /// write, what to wait for to have that write on disk.
    pub fn latest_write(&self) -> Written {
        self.commit.latest()
    }

    /// Applies a set of writes atomically.
    pub fn commit(&self, txn: Txn) -> Result<()> {
        self.health.check()?;
        self.disk.wrote(txn.bytes);
        self.tree
            .apply_batch(txn.into_batch())
            .map_err(|e| self.failed(e))?;
        self.commit.applied();
        Ok(())
    }

    /// Reads one task record.
    pub fn task(&self, queue: &QueueKey, task_id: &str) -> Result<Option<TaskRecord>> {
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
    pub fn meta(&self, queue: &QueueKey) -> Result<Option<QueueMeta>> {
        match self.queues.get(&keys::queue_prefix(queue))? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw)
                .map(Some)
                .map_err(|e| Error::Internal(format!("corrupt queue record for {queue}: {e}"))),
        }
    }

    /// Reads up to `limit` ready entries of `queue` after `after` (from the start when `None`),
    /// in dispatch order.
    pub fn scan_ready(
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
    #[allow(clippy::type_complexity)]
    pub fn due_delayed(
        &self,
        queue: &QueueKey,
        now: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, u64, Entry)>, Option<u64>)> {
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
    pub fn due_waiting(&self, now: u64, limit: usize) -> Result<Vec<(QueueKey, String)>> {
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
    pub fn dead_letters(
        &self,
        queue: &QueueKey,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<String>, Option<Vec<u8>>)> {
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
    pub fn in_flight_records(&self, queue: &QueueKey) -> Result<Vec<TaskRecord>> {
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
    pub fn task_count(&self) -> usize {
        self.tasks.iter().count()
    }
}

/// Opens sled in `dir`. A damaged file can make sled panic while it recovers: that is caught
/// and answered as an error naming the directory, like any other reason it cannot open.
fn open_sled(dir: &Path, opts: &StoreOptions) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(dir)
        .temporary(opts.temporary)
        .cache_capacity(opts.cache_capacity_bytes)
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

/// Makes a leased record pending again (crash recovery, a poller that never received it) at
/// the place its lease kept in the ready order and with the backlog age it had; answers its
/// position and entry in the ready index. A record without a lease goes back as of its last
/// update.
pub fn requeue_leased(rec: &mut TaskRecord) -> (ReadyPos, Entry) {
    let (order, ready_at) = rec
        .lease
        .as_ref()
        .map_or((rec.updated_at, rec.updated_at), |l| {
            (l.order, l.ready_since())
        });
    rec.state = TaskState::Pending;
    rec.lease = None;
    rec.queued = Some(Queued::Ready { order });
    let pos = ReadyPos {
        priority: rec.priority,
        order,
        seq: rec.seq,
    };
    (pos, entry_of(rec, ready_at))
}

/// The index entry of a pending record that became ready at `ready_at`.
pub fn entry_of(rec: &TaskRecord, ready_at: u64) -> Entry {
    Entry {
        priority: rec.priority,
        task_type: rec.task_type.as_str().into(),
        task_id: rec.task_id.as_str().into(),
        ready_at,
        route: rec.route_to.as_ref().map(|r| {
            Box::new(EntryRoute {
                identity: r.identity.clone(),
                fallback_at: r.fallback_after_ms.map(|f| ready_at.saturating_add(f)),
            })
        }),
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
