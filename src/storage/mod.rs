//! The storage seam: the [`Store`] trait, everything the queues ask of a store in their own
//! words, and the stores behind it: sled ([`sled_store`]), the embedded default, and
//! PostgreSQL (`postgres`, feature `postgres`), chosen by `storage.backend`.
//!
//! A store holds, per queue: task records; the ready index in dispatch order ([`ReadyPos`] →
//! [`Entry`]); the delayed index by due time; the leased tasks; the dead letters by time of
//! death; the queue's counters and settings ([`QueueMeta`]); and, across queues, the
//! schedule-to-start deadlines and the retention ends of finished records.
//!
//! Writes go in a [`Txn`] (a list of domain [`txn::Write`]s) that [`Store::commit`] applies
//! atomically: a crash never leaves a record without its index entry. Commit is asynchronous
//! in two steps: it applies the writes so that every later read sees them and answers at
//! once; [`Store::durable_since`] resolves once they are durable, and many writes share one
//! sync (group commit). A write can be refused: [`Store::admit`] before an add when space is
//! short, and every write once the store has failed ([`Health`]). Reads of the ready index
//! are batched: a queue holds a window of it in memory and refills it a page at a time.
//!
//! The PostgreSQL store shows how a SQL backend fits: a [`Txn`]'s writes are rows of tables
//! shaped like the key spaces of `sled_store`; [`GroupCommit`] takes, as its sync, one
//! database transaction holding every [`Txn`] committed since the last one (reads see those
//! from the moment [`Store::commit`] returns, as sled's do); page tokens are the last key of
//! a page; and a task record is stored as the bytes of [`record::encode`].

pub mod commit;
pub mod copy;
pub mod disk;
pub mod health;
mod index;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod record;
pub mod sled_store;
pub mod txn;

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::metrics::Metrics;
use crate::model::rate::RateLimit;
use crate::model::{QueueKey, TaskRecord};
pub use commit::{GroupCommit, WriteSeq};
pub use disk::DiskSpace;
pub use health::Health;
pub use index::{Entry, EntryRoute, ReadyPos};
pub use sled_store::SledStore;
pub use txn::Txn;

/// Payloads longer than this are stored apart from their record, written once at add, so
/// the record rewritten on every lease and settle stays small.
pub const PAYLOAD_APART_BYTES: usize = 2048;

/// Entries of each index read by [`Store::resting`].
pub const RESTING_SCAN: usize = 1000;

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

/// A queue no actor holds, as [`Store::resting`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resting {
    /// Tasks ready now, due delayed tasks included.
    pub backlog: u64,
    /// When the oldest of them became ready.
    pub oldest_ready_at: Option<u64>,
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
    /// sled: a snapshot of the page table each time this many bytes of log are synced, which
    /// bounds the log a start replays (0 = only when opening).
    pub snapshot_after_bytes: u64,
}

impl StoreOptions {
    /// A temporary store, deleted when closed, with relaxed durability and a small cache: for
    /// tests and benchmarks of the logic above the store.
    pub fn scratch() -> Self {
        StoreOptions {
            fsync: false,
            cache_capacity_bytes: 1 << 20,
            temporary: true,
            max_bytes: 0,
            reserve_bytes: 0,
            snapshot_after_bytes: 0,
        }
    }
}

/// Delayed entries due now, and the due time of the first one not yet due.
pub type DueDelayed = (Vec<(u64, u64, Entry)>, Option<u64>);

/// A page of results and the token of the next page (opaque bytes the store gave).
pub type Page<T> = (Vec<T>, Option<Vec<u8>>);

/// What the queues ask of a store. Every method may be called from any thread.
pub trait Store: Send + Sync + 'static {
    /// `Ok` when an add of about `bytes` fits the space the store may use; else the 429 to
    /// answer (see [`DiskSpace`]).
    fn admit(&self, bytes: u64) -> Result<()>;

    /// A unique, increasing sequence number that survives restarts.
    fn next_seq(&self) -> Result<u64>;

    /// Applies `txn` atomically: every read after this call sees it. Durable once
    /// [`Store::durable_since`] of [`Store::latest_write`] resolves. Refused (and nothing
    /// applied) once the store has failed.
    fn commit(&self, txn: Txn) -> Result<()>;

    /// The place of the latest write applied so far: taken right after a commit, what to
    /// wait for to have that commit durable.
    fn latest_write(&self) -> WriteSeq;

    /// Resolves once `write` and every write before it is durable (per the durability
    /// setting); at once when it already is.
    fn durable_since(&self, write: WriteSeq) -> BoxFuture<'_, Result<()>>;

    /// [`Store::durable_since`] for a write of `queue`; fails when the write may not have
    /// committed after all (in a cluster: this node lost the queue meanwhile).
    fn durable_for<'a>(
        &'a self,
        queue: &'a QueueKey,
        write: WriteSeq,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = queue;
        self.durable_since(write)
    }

    /// Resolves once every write applied so far is durable.
    fn durable(&self) -> BoxFuture<'_, Result<()>> {
        self.durable_since(self.latest_write())
    }

    /// Makes everything durable now (shutdown, recovery).
    fn flush(&self) -> Result<()>;

    /// `Ok` while writes can be acknowledged; else the 503 every write answers meanwhile
    /// (sled: after a failed write or sync, for good; PostgreSQL: while it is unreachable).
    fn writable(&self) -> Result<()>;

    /// What failed for good, once something did (see [`Health`]).
    fn failure(&self) -> Option<String>;

    /// Resolves once the store failed for good and only a restart recovers it (sled, after a
    /// failed write or sync); never for a store that recovers by itself.
    fn failed(&self) -> BoxFuture<'_, ()>;

    /// One task record, its payload in place.
    fn task(&self, queue: &QueueKey, task_id: &str) -> Result<Option<TaskRecord>>;

    /// Several records of one queue at once, in the order of `ids`.
    fn tasks(&self, queue: &QueueKey, ids: &[&str]) -> Result<Vec<Option<TaskRecord>>> {
        ids.iter().map(|id| self.task(queue, id)).collect()
    }

    /// True when a read costs a round trip, so a queue reads ahead the records it is about
    /// to dispatch ([`Store::read_ahead`]); a local store reads each as it goes.
    fn prefers_batched_reads(&self) -> bool {
        false
    }

    /// Reads the records of `ids` (the next ready tasks of `queue`, in dispatch order) into
    /// the store's memory in one go, when one of the first `needed` is not there already, so
    /// that [`Store::task`] finds them. A store without round trips does nothing.
    fn read_ahead(&self, queue: &QueueKey, ids: &[&str], needed: usize) -> Result<()> {
        let _ = (queue, ids, needed);
        Ok(())
    }

    /// Called by a queue's actor before it reads the queue: in cluster mode, takes the
    /// queue for this node (the node that held it can write for it no more); nothing else.
    fn acquire(&self, queue: &QueueKey) -> Result<()> {
        let _ = queue;
        Ok(())
    }

    /// Called by a queue's actor once it stopped (idle): in cluster mode, once the writes
    /// it made are committed, this node forgets its hold on the queue (the database still
    /// names it the owner; the next actor takes the queue again), so queues that come and
    /// go leave nothing behind in memory. Nothing else.
    fn unload<'a>(&'a self, queue: &'a QueueKey) -> BoxFuture<'a, ()> {
        let _ = queue;
        Box::pin(async {})
    }

    /// A queue's counters (`None` for a queue never used).
    fn meta(&self, queue: &QueueKey) -> Result<Option<QueueMeta>>;

    /// Up to `limit` ready entries of `queue` after `after` (from the start when `None`), in
    /// dispatch order.
    fn scan_ready(
        &self,
        queue: &QueueKey,
        after: Option<ReadyPos>,
        limit: usize,
    ) -> Result<Vec<(ReadyPos, Entry)>>;

    /// Up to `limit` delayed entries of `queue` due at or before `now` as (due, seq, entry),
    /// and the due time of the first one left.
    fn due_delayed(&self, queue: &QueueKey, now: u64, limit: usize) -> Result<DueDelayed>;

    /// Schedule-to-start deadlines due at or before `now`, across all queues, at most `limit`.
    fn due_waiting(&self, now: u64, limit: usize) -> Result<Vec<(QueueKey, String)>>;

    /// Task ids of the dead letters of `queue`, newest first, after the page token `before`.
    fn dead_letters(
        &self,
        queue: &QueueKey,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<String>>;

    /// Up to `limit` task ids of `queue` after `after` (from the first when `None`), in id
    /// order: every task the queue keeps, whatever its state (listing tasks by state).
    fn task_ids(&self, queue: &QueueKey, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// The records of the tasks leased in `queue`.
    fn in_flight_records(&self, queue: &QueueKey) -> Result<Vec<TaskRecord>>;

    /// Every leased task of every queue (recovery at start).
    fn leased_tasks(&self) -> Result<Vec<(QueueKey, String)>>;

    /// Queues of a namespace with their counters, in name order, after the page token `after`.
    fn list_queues(
        &self,
        namespace: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<(QueueKey, QueueMeta)>>;

    /// The attributes a front end keeps for `queue` (JSON text), if any.
    fn attributes(&self, queue: &QueueKey) -> Result<Option<String>>;

    /// The queues of `namespace` that have attributes, with them, in order (name, then
    /// type): `limit` of them after the queue named `after`.
    fn attributed_queues(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, String)>>;

    /// The namespaces that hold a queue, in name order: `limit` of them after `after`.
    fn namespaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Up to `limit` queues, of every namespace, that hold ready, delayed, leased or dead
    /// tasks, with their counters.
    fn queues_holding_tasks(&self, limit: usize) -> Result<Vec<(QueueKey, QueueMeta)>>;

    /// Deletes finished records whose retention ended at or before `now`; at most `limit`.
    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize>;

    /// Number of task records stored (tests and diagnostics).
    fn task_count(&self) -> usize;

    /// True when the store holds nothing: no task, no queue.
    fn is_empty(&self) -> Result<bool>;

    /// Everything the store holds, as transactions of at most about `batch` writes handed
    /// to `sink` in turn (`tasq store copy`). The store must not change meanwhile.
    fn export(&self, batch: usize, sink: &mut dyn FnMut(Txn) -> Result<()>) -> Result<()>;

    /// Makes every later [`Store::next_seq`] larger than `seq` (after a copy into it).
    fn reserve_seq(&self, seq: u64) -> Result<()>;

    /// A queue no actor holds, as an operator sees it at `now`: its backlog counts the
    /// delayed tasks already due (an actor would make them ready the moment it loaded), and
    /// its oldest ready task is looked for among the first [`RESTING_SCAN`] entries of each
    /// index (the ready index is in dispatch order, not age). Without `with_age` the ready
    /// index is not read (`oldest_ready_at` is then only from due delayed tasks).
    fn resting(
        &self,
        queue: &QueueKey,
        meta: &QueueMeta,
        now: u64,
        with_age: bool,
    ) -> Result<Resting> {
        let ready = if with_age {
            self.scan_ready(queue, None, RESTING_SCAN)?
        } else {
            Vec::new()
        };
        let (due, _) = self.due_delayed(queue, now, RESTING_SCAN)?;
        let oldest = ready
            .iter()
            .map(|(_, e)| e.ready_at)
            .chain(due.iter().map(|(at, _, _)| *at))
            .min();
        Ok(Resting {
            backlog: meta.ready + due.len() as u64,
            oldest_ready_at: oldest,
        })
    }
}

/// Opens (or creates) the sled store in `dir` (the PostgreSQL store opens with
/// `postgres::PgStore::open`).
pub fn open(dir: &Path, opts: &StoreOptions, metrics: Arc<Metrics>) -> Result<Arc<dyn Store>> {
    Ok(SledStore::open(dir, opts, metrics)?)
}
