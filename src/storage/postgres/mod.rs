//! The PostgreSQL store (`storage.backend = "postgres"`): the same [`Store`] on a database
//! that outlives the machine.
//!
//! - Tables (`schema`): one per key space of the sled store, keyed in the order a queue
//!   reads; a task record is the bytes of [`record::encode`], as in sled.
//! - Writes: [`Store::commit`] puts the transaction in `pending` and answers at once; the
//!   group commit (one thread, one connection of its own) writes everything pending with one
//!   statement that commits by itself (`write`: the last write of each row, a part per
//!   table), one round trip, and answers every waiter when it returns. With `durability =
//!   "fsync"` that is PostgreSQL's own durable commit (`synchronous_commit = on`); with
//!   `"relaxed"`, `off`.
//! - Reads: a record or a queue's counters written but not yet committed come from
//!   `pending`, a record committed or read lately from `recent` (one tasq writes a queue, so
//!   what it wrote last is what the database holds); everything else is read from the
//!   database, ranges once the writes applied before them committed. A queue about to
//!   dispatch reads the records ahead, many per query. Reads run on a pool of threads with a
//!   connection each (`conn`).
//! - Cluster mode (`PgOptions::node`, `cluster`): a node writes only the queues it took,
//!   each commit checking their fence numbers in the same statement; the writes of a queue
//!   another node took meanwhile are dropped (`sync`) and their waiters answered 503.
//! - Losing the database: a commit that fails puts its transactions back, to be written
//!   first once it is back; meanwhile every write answers 503 `unavailable`, `/readyz` 503 and
//!   `tasq_storage_healthy` 0, and a watcher retries every second.

mod catalog;
mod cluster;
mod conn;
mod export;
mod pending;
mod recent;
mod records;
mod rows;
mod schema;
mod sync;
mod write;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{
    record, DueDelayed, Entry, GroupCommit, Page, QueueMeta, ReadyPos, Store, Txn, WriteSeq,
};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::{QueueKey, TaskRecord};
pub use cluster::NodeRow;
use cluster::{not_owner, Fences};
use conn::{Conn, Pool, Reachable, Session, Settings};
use pending::{Pending, PendingTask};
use rows::{
    decode_dead_token, decode_queue_token, i64_of, queue_rows, queue_token, task_keys, u64_of, Q,
};
use std::collections::HashMap;

/// Sequence numbers taken from the database at once (the sequence steps by as many).
const SEQ_BLOCK: u64 = 1000;

/// Options of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The libpq URL.
    pub url: String,
    /// Connections for reads.
    pub pool_size: usize,
    /// `statement_timeout`.
    pub statement_timeout: Duration,
    /// Wait for PostgreSQL's durable commit (`synchronous_commit = on`).
    pub synchronous_commit: bool,
    /// Cluster mode, as this node: it writes only the queues it took
    /// ([`PgStore::take_queue`], [`Store::acquire`]), each commit checking their fences.
    pub node: Option<String>,
    /// In cluster mode, how long a silent node is still alive (a take from a node silent
    /// for longer counts as a takeover).
    pub node_timeout: Duration,
}

/// The PostgreSQL store.
pub struct PgStore {
    pool: Pool,
    pending: Arc<Pending>,
    commit: GroupCommit,
    reachable: Arc<Reachable>,
    /// The next sequence numbers, `(next, end)`, taken a block at a time.
    seqs: Mutex<(u64, u64)>,
    /// The watcher stops when the store is dropped.
    stop: Arc<AtomicBool>,
    /// The queues held, in cluster mode.
    fences: Option<Arc<Fences>>,
    /// This node's name, in cluster mode.
    node: Option<String>,
    node_timeout: Duration,
    /// Queues taken from a node that stopped heartbeating.
    takeovers: prometheus::IntCounter,
}

impl PgStore {
    /// Connects, migrates the schema, and starts the group commit and the pool. (On a thread
    /// of its own: the blocking client must not be used on one that drives a runtime.)
    pub fn open(opts: &PgOptions, metrics: Arc<Metrics>) -> Result<Arc<PgStore>> {
        std::thread::scope(|s| {
            s.spawn(|| Self::open_here(opts, metrics))
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("opening PostgreSQL panicked".into())))
        })
    }

    fn open_here(opts: &PgOptions, metrics: Arc<Metrics>) -> Result<Arc<PgStore>> {
        let settings = Settings {
            url: opts.url.clone(),
            statement_timeout: opts.statement_timeout,
            synchronous_commit: None,
        };
        let mut writer = Conn::open(Settings {
            synchronous_commit: Some(opts.synchronous_commit),
            ..settings.clone()
        })?;
        writer.run(&|s| Ok(schema::migrate(s.client())))??;
        let reachable = Arc::new(Reachable::new(metrics.storage_healthy.clone()));
        let pool = Pool::start(&settings, opts.pool_size, reachable.clone())?;
        let pending = Arc::new(Pending::default());
        let fences = opts.node.is_some().then(|| Arc::new(Fences::default()));
        let sync = sync::group_commit(
            writer,
            pending.clone(),
            reachable.clone(),
            fences.clone(),
            metrics.cluster.fence_rejections.clone(),
        );
        let takeovers = metrics.cluster.takeovers.clone();
        let store = Arc::new(PgStore {
            pool,
            pending,
            commit: GroupCommit::start(true, metrics, sync),
            reachable,
            seqs: Mutex::new((0, 0)),
            stop: Arc::new(AtomicBool::new(false)),
            fences,
            node: opts.node.clone(),
            node_timeout: opts.node_timeout,
            takeovers,
        });
        watch(Arc::downgrade(&store), store.stop.clone());
        Ok(store)
    }

    /// Waits until every write applied so far is committed: what a read of a range must see.
    fn settled(&self) -> Result<()> {
        self.commit.wait_durable(self.commit.latest())
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// While the database is unreachable, tries every second to commit what is pending (the
/// group commit reconnects), so that tasq carries on by itself once it is back.
fn watch(store: std::sync::Weak<PgStore>, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("tasq-pg-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if stop.load(Ordering::Acquire) {
                return;
            }
            let Some(store) = store.upgrade() else { return };
            if store.reachable.is_up() {
                continue;
            }
            let probe = store
                .pool
                .run(|s| s.client().simple_query("SELECT 1").map(|_| ()));
            if probe.is_ok() && !store.pending.is_empty() {
                let _ = store.settled();
            }
        });
    if let Err(e) = spawned {
        log::error!("postgres: cannot start the watcher: {e}");
    }
}

impl Store for PgStore {
    /// The database guards its own disk; a full one fails the commit (503).
    fn admit(&self, _bytes: u64) -> Result<()> {
        Ok(())
    }

    fn next_seq(&self) -> Result<u64> {
        let mut seqs = self.seqs.lock().unwrap_or_else(|e| e.into_inner());
        if seqs.0 >= seqs.1 {
            let start: i64 = self.pool.run(|c| {
                c.query_one("SELECT nextval('tasq_seq')", &[])
                    .map(|r| r.get(0))
            })?;
            let start = u64_of(start);
            *seqs = (start, start + SEQ_BLOCK);
        }
        let n = seqs.0;
        seqs.0 += 1;
        Ok(n)
    }

    fn commit(&self, txn: Txn) -> Result<()> {
        self.reachable.check()?;
        if txn.is_empty() {
            return Ok(());
        }
        let writes = txn.into_writes();
        if let Some(fences) = &self.fences {
            for w in &writes {
                fences.check(w.queue())?;
            }
        }
        self.pending.push(writes, || self.commit.applied().number());
        Ok(())
    }

    fn latest_write(&self) -> WriteSeq {
        self.commit.latest()
    }

    fn durable_since(&self, write: WriteSeq) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.commit.durable_since(write))
    }

    fn durable_for<'a>(
        &'a self,
        queue: &'a QueueKey,
        write: WriteSeq,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.commit.durable_since(write).await?;
            match &self.fences {
                Some(f) if f.lost_after(queue, write.number()) => Err(not_owner(queue)),
                _ => Ok(()),
            }
        })
    }

    fn unload<'a>(&'a self, queue: &'a QueueKey) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(fences) = &self.fences else {
                return;
            };
            let Some(fence) = fences.fence_of(queue) else {
                return;
            };
            // Its last writes still commit under the hold; a failed commit keeps it (the
            // writes are retried under it once the database is back).
            if self
                .commit
                .durable_since(self.commit.latest())
                .await
                .is_ok()
            {
                fences.unhold(queue, fence);
            }
        })
    }

    fn flush(&self) -> Result<()> {
        self.settled()
    }

    fn writable(&self) -> Result<()> {
        self.reachable.check()
    }

    fn failure(&self) -> Option<String> {
        None
    }

    /// A lost database comes back by itself: nothing here needs a restart.
    fn failed(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::pending())
    }

    fn task(&self, queue: &QueueKey, task_id: &str) -> Result<Option<TaskRecord>> {
        let known = match self.pending.task(queue, task_id) {
            Some(known) => Some(known),
            None => self
                .fetch(queue, vec![task_id.to_string()])?
                .pop()
                .map(|(_, t)| t),
        };
        match known {
            Some(t) => self.record_of(queue, task_id, t),
            None => Ok(None),
        }
    }

    fn tasks(&self, queue: &QueueKey, ids: &[&str]) -> Result<Vec<Option<TaskRecord>>> {
        let mut known: Vec<Option<PendingTask>> =
            ids.iter().map(|id| self.pending.task(queue, id)).collect();
        let missing: Vec<String> = ids
            .iter()
            .zip(&known)
            .filter(|(_, k)| k.is_none())
            .map(|(id, _)| id.to_string())
            .collect();
        if !missing.is_empty() {
            let mut found: HashMap<String, PendingTask> =
                self.fetch(queue, missing)?.into_iter().collect();
            for (slot, id) in known.iter_mut().zip(ids) {
                if slot.is_none() {
                    *slot = found.remove(*id);
                }
            }
        }
        ids.iter()
            .zip(known)
            .map(|(id, k)| match k {
                Some(t) => self.record_of(queue, id, t),
                None => Ok(None),
            })
            .collect()
    }

    fn read_ahead(&self, queue: &QueueKey, ids: &[&str], needed: usize) -> Result<()> {
        let known = self.pending.knows(queue, ids);
        if known.iter().take(needed).all(|k| *k) {
            return Ok(());
        }
        let missing: Vec<String> = ids
            .iter()
            .zip(known)
            .filter(|(_, k)| !k)
            .map(|(id, _)| id.to_string())
            .collect();
        self.fetch(queue, missing).map(|_| ())
    }

    fn prefers_batched_reads(&self) -> bool {
        true
    }

    fn acquire(&self, queue: &QueueKey) -> Result<()> {
        let Some(node) = &self.node else {
            return Ok(());
        };
        if let Some((before, alive)) = self.take_queue(queue, node)? {
            if !alive {
                self.takeovers.inc();
            }
            log::info!(
                "cluster: took {queue} from {before}{}",
                if alive {
                    ""
                } else {
                    ", which stopped heartbeating"
                }
            );
        }
        Ok(())
    }

    fn meta(&self, queue: &QueueKey) -> Result<Option<QueueMeta>> {
        if let Some(m) = self.pending.meta(queue) {
            return Ok(Some(m));
        }
        let q = Q::of(queue);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT namespace, queue, queue_type, ready, delayed, in_flight, dead, \
                 max_tasks_per_second, burst FROM tasq_queues \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3",
                &[&q.0, &q.1, &q.2],
            )
        })?;
        Ok(queue_rows(rows).pop().map(|(_, m)| m))
    }

    fn scan_ready(
        &self,
        queue: &QueueKey,
        after: Option<ReadyPos>,
        limit: usize,
    ) -> Result<Vec<(ReadyPos, Entry)>> {
        self.settled()?;
        let q = Q::of(queue);
        let (p, o, s) = after.map_or((-1i16, i64::MIN, i64::MIN), |a| {
            (a.priority as i16, i64_of(a.order), i64_of(a.seq))
        });
        let limit = i64_of(limit as u64);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT priority, pass, seq, entry FROM tasq_ready \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3 \
                 AND (priority, pass, seq) > ($4, $5, $6) \
                 ORDER BY priority, pass, seq LIMIT $7",
                &[&q.0, &q.1, &q.2, &p, &o, &s, &limit],
            )
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pos = ReadyPos {
                priority: u8::try_from(r.get::<_, i16>(0)).unwrap_or(u8::MAX),
                order: u64_of(r.get(1)),
                seq: u64_of(r.get(2)),
            };
            match Entry::decode(r.get(3)) {
                Some(e) => out.push((pos, e)),
                None => log::error!("skipping a corrupt ready entry in {queue}"),
            }
        }
        Ok(out)
    }

    fn due_delayed(&self, queue: &QueueKey, now: u64, limit: usize) -> Result<DueDelayed> {
        self.settled()?;
        let q = Q::of(queue);
        let fetch = i64_of(limit as u64 + 1);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT due, seq, entry FROM tasq_delayed \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3 \
                 ORDER BY due, seq LIMIT $4",
                &[&q.0, &q.1, &q.2, &fetch],
            )
        })?;
        let mut due = Vec::new();
        for r in rows {
            let at = u64_of(r.get(0));
            if at > now || due.len() >= limit {
                return Ok((due, Some(at)));
            }
            if let Some(e) = Entry::decode(r.get(2)) {
                due.push((at, u64_of(r.get(1)), e));
            }
        }
        Ok((due, None))
    }

    fn due_waiting(&self, now: u64, limit: usize) -> Result<Vec<(QueueKey, String)>> {
        self.settled()?;
        let (now, limit) = (i64_of(now), i64_of(limit as u64));
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT namespace, queue, queue_type, task_id FROM tasq_waiting \
                 WHERE deadline <= $1 ORDER BY deadline LIMIT $2",
                &[&now, &limit],
            )
        })?;
        Ok(task_keys(rows))
    }

    fn dead_letters(
        &self,
        queue: &QueueKey,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<String>> {
        self.settled()?;
        let (at, seq) = match before {
            None => (i64::MAX, i64::MAX),
            Some(b) => decode_dead_token(b)?,
        };
        let q = Q::of(queue);
        let fetch = i64_of(limit as u64 + 1);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT died_at, seq, task_id FROM tasq_dead \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3 \
                 AND (died_at, seq) < ($4, $5) ORDER BY died_at DESC, seq DESC LIMIT $6",
                &[&q.0, &q.1, &q.2, &at, &seq, &fetch],
            )
        })?;
        let more = rows.len() > limit;
        let mut ids = Vec::new();
        let mut last = None;
        for r in rows.into_iter().take(limit) {
            let (at, seq): (i64, i64) = (r.get(0), r.get(1));
            last = Some([at.to_be_bytes(), seq.to_be_bytes()].concat());
            ids.push(r.get(2));
        }
        Ok((ids, if more { last } else { None }))
    }

    fn task_ids(&self, queue: &QueueKey, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.settled()?;
        let q = Q::of(queue);
        let after = after.unwrap_or_default().to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.pool.run(move |c| {
            let rows = c.query(
                "SELECT task_id FROM tasq_tasks \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3 AND task_id > $4 \
                 ORDER BY task_id LIMIT $5",
                &[&q.0, &q.1, &q.2, &after, &limit],
            )?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })
    }

    fn in_flight_records(&self, queue: &QueueKey) -> Result<Vec<TaskRecord>> {
        self.settled()?;
        let q = Q::of(queue);
        let ids: Vec<String> = self.pool.run(move |c| {
            let rows = c.query(
                "SELECT task_id FROM tasq_in_flight \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3",
                &[&q.0, &q.1, &q.2],
            )?;
            Ok(rows.into_iter().map(|r| r.get(0)).collect())
        })?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        Ok(self.tasks(queue, &ids)?.into_iter().flatten().collect())
    }

    fn leased_tasks(&self) -> Result<Vec<(QueueKey, String)>> {
        self.settled()?;
        let rows = self.pool.run(|c| {
            c.query(
                "SELECT namespace, queue, queue_type, task_id FROM tasq_in_flight",
                &[],
            )
        })?;
        Ok(task_keys(rows))
    }

    fn list_queues(
        &self,
        namespace: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<(QueueKey, QueueMeta)>> {
        self.settled()?;
        let (name, kind) = match after {
            None => (String::new(), -1i16),
            Some(a) => decode_queue_token(namespace, a)?,
        };
        let ns = namespace.to_string();
        let fetch = i64_of(limit as u64 + 1);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT namespace, queue, queue_type, ready, delayed, in_flight, dead, \
                 max_tasks_per_second, burst FROM tasq_queues \
                 WHERE namespace = $1 AND (queue, queue_type) > ($2, $3) \
                 ORDER BY queue, queue_type LIMIT $4",
                &[&ns, &name, &kind, &fetch],
            )
        })?;
        let mut page = queue_rows(rows);
        let next = if page.len() > limit {
            page.truncate(limit);
            page.last().map(|(k, _)| queue_token(k))
        } else {
            None
        };
        Ok((page, next))
    }

    fn attributes(&self, queue: &QueueKey) -> Result<Option<String>> {
        self.settled()?;
        catalog::attributes(&self.pool, queue)
    }

    fn attributed_queues(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, String)>> {
        self.settled()?;
        catalog::attributed_queues(&self.pool, namespace, after, limit)
    }

    fn namespaces(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.settled()?;
        catalog::namespaces(&self.pool, after, limit)
    }

    fn queues_holding_tasks(&self, limit: usize) -> Result<Vec<(QueueKey, QueueMeta)>> {
        self.settled()?;
        let limit = i64_of(limit as u64);
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT namespace, queue, queue_type, ready, delayed, in_flight, dead, \
                 max_tasks_per_second, burst FROM tasq_queues \
                 WHERE ready + delayed + in_flight + dead > 0 \
                 ORDER BY namespace, queue, queue_type LIMIT $1",
                &[&limit],
            )
        })?;
        Ok(queue_rows(rows))
    }

    fn purge_expired(&self, now: u64, limit: usize) -> Result<usize> {
        self.settled()?;
        let (before, fetch) = (i64_of(now), i64_of(limit as u64));
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT expires_at, namespace, queue, queue_type, task_id FROM tasq_expiry \
                 WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2",
                &[&before, &fetch],
            )
        })?;
        let mut txn = Txn::default();
        let mut n = 0;
        for r in rows {
            let at = u64_of(r.get(0));
            let Some(queue) = Q(r.get(1), r.get(2), r.get(3)).key() else {
                continue;
            };
            let task_id: String = r.get(4);
            txn.del_expiry(at, &queue, &task_id);
            // A record that changed since (redriven, re-added) is not finished any more.
            if let Some(rec) = self.task(&queue, &task_id)? {
                if rec.state.is_terminal() && !rec.state.is_dead_letter() {
                    txn.delete_task(&queue, &task_id);
                    n += 1;
                }
            }
        }
        if !txn.is_empty() {
            self.commit(txn)?;
            self.settled()?;
        }
        Ok(n)
    }

    fn is_empty(&self) -> Result<bool> {
        self.settled()?;
        self.pool.run(|c| {
            let row = c.query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM tasq_tasks) \
                 AND NOT EXISTS (SELECT 1 FROM tasq_queues)",
                &[],
            )?;
            Ok(row.get(0))
        })
    }

    fn export(&self, batch: usize, sink: &mut dyn FnMut(Txn) -> Result<()>) -> Result<()> {
        self.settled()?;
        export::run(&self.pool, batch, sink)
    }

    fn reserve_seq(&self, seq: u64) -> Result<()> {
        let seq = i64_of(seq);
        self.pool.run(move |c| {
            c.execute(
                "SELECT setval('tasq_seq', GREATEST($1, (SELECT last_value FROM tasq_seq)))",
                &[&seq],
            )
        })?;
        // Blocks taken before start past the new value.
        *self.seqs.lock().unwrap_or_else(|e| e.into_inner()) = (0, 0);
        Ok(())
    }

    fn task_count(&self) -> usize {
        if self.settled().is_err() {
            return 0;
        }
        self.pool
            .run(|c| c.query_one("SELECT count(*) FROM tasq_tasks", &[]))
            .map_or(0, |r| usize::try_from(r.get::<_, i64>(0)).unwrap_or(0))
    }
}
