//! Writes applied but not yet committed to PostgreSQL.
//!
//! [`super::PgStore::commit`] puts a transaction here and answers at once, as sled's
//! `apply_batch` does; the group commit takes everything here into one database transaction.
//! Until that commits, the records and counters it writes are read from here (a queue reads a
//! record right after writing it), and reads of ranges first wait for it to commit. Once
//! committed, the records go on to [`Recent`], under the same lock, so that a read never
//! falls between the two.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use super::recent::{Recent, CAPACITY_BYTES};
use crate::model::QueueKey;
use crate::storage::txn::Write;
use crate::storage::QueueMeta;

/// A record (and its payload kept apart) as a write left it: `None` deleted.
#[derive(Clone)]
pub struct PendingTask {
    /// The encoded record.
    pub record: Option<Vec<u8>>,
    /// The payload kept apart (`None` when there is none).
    pub payload: Option<String>,
}

struct Inner {
    /// Transactions in the order applied, each with its number.
    txns: VecDeque<(u64, Vec<Write>)>,
    /// The latest write of each record, and the transaction that made it.
    tasks: HashMap<(QueueKey, String), (u64, PendingTask)>,
    /// The latest counters of each queue, and the transaction that wrote them.
    metas: HashMap<QueueKey, (u64, QueueMeta)>,
    /// Records committed lately.
    recent: Recent,
}

/// The writes applied and not yet committed, and the records committed lately.
pub struct Pending {
    inner: Mutex<Inner>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            inner: Mutex::new(Inner {
                txns: VecDeque::new(),
                tasks: HashMap::new(),
                metas: HashMap::new(),
                recent: Recent::with_capacity(CAPACITY_BYTES),
            }),
        }
    }
}

/// Transactions taken for one commit, and the number of the last.
pub struct Taken {
    /// The transactions, in order.
    pub txns: Vec<(u64, Vec<Write>)>,
    /// The number of the last one.
    pub upto: u64,
}

impl Taken {
    /// The queues the transactions write.
    pub fn queues(&self) -> HashSet<QueueKey> {
        self.txns
            .iter()
            .flat_map(|(_, w)| w.iter().map(|w| w.queue().clone()))
            .collect()
    }
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a transaction, numbered by `number` (called under the lock, so numbers go up in
    /// the order transactions are added: the group commit's [`WriteSeq`] numbers, so that a
    /// transaction's number says which waiters it concerns); reads see it from now on.
    ///
    /// [`WriteSeq`]: crate::storage::WriteSeq
    pub fn push(&self, writes: Vec<Write>, number: impl FnOnce() -> u64) {
        let mut inner = self.lock();
        let n = number();
        for w in &writes {
            match w {
                Write::Task {
                    queue,
                    task_id,
                    record,
                } => {
                    let key = (queue.clone(), task_id.clone());
                    // A record rewritten keeps its payload kept apart (written once, at add).
                    let payload = match inner.tasks.get(&key) {
                        Some((_, t)) => t.payload.clone(),
                        None => inner.recent.get(&key).and_then(|t| t.payload.clone()),
                    };
                    let task = PendingTask {
                        record: Some(record.clone()),
                        payload,
                    };
                    inner.tasks.insert(key, (n, task));
                }
                Write::Payload {
                    queue,
                    task_id,
                    text,
                } => {
                    let key = (queue.clone(), task_id.clone());
                    let entry = inner.tasks.entry(key).or_insert((
                        n,
                        PendingTask {
                            record: None,
                            payload: None,
                        },
                    ));
                    entry.0 = n;
                    entry.1.payload = Some(text.clone());
                }
                Write::DeletePayload { queue, task_id } => {
                    if let Some(entry) = inner.tasks.get_mut(&(queue.clone(), task_id.clone())) {
                        entry.0 = n;
                        entry.1.payload = None;
                    }
                }
                Write::DeleteTask { queue, task_id } => {
                    let task = PendingTask {
                        record: None,
                        payload: None,
                    };
                    inner
                        .tasks
                        .insert((queue.clone(), task_id.clone()), (n, task));
                }
                Write::Meta(queue, meta) => {
                    inner.metas.insert(queue.clone(), (n, *meta));
                }
                _ => {}
            }
        }
        inner.txns.push_back((n, writes));
    }

    /// The latest write of a record, pending or committed lately (`record: None` when it
    /// was deleted); `None` when the database must be asked.
    pub fn task(&self, queue: &QueueKey, task_id: &str) -> Option<PendingTask> {
        let inner = self.lock();
        let key = (queue.clone(), task_id.to_string());
        inner
            .tasks
            .get(&key)
            .map(|(_, t)| t)
            .or_else(|| inner.recent.get(&key))
            .cloned()
    }

    /// Which of `ids` [`Pending::task`] knows.
    pub fn knows(&self, queue: &QueueKey, ids: &[&str]) -> Vec<bool> {
        let inner = self.lock();
        ids.iter()
            .map(|id| {
                let key = (queue.clone(), id.to_string());
                inner.tasks.contains_key(&key) || inner.recent.get(&key).is_some()
            })
            .collect()
    }

    /// A stamp to pass to [`Pending::keep_read`] for a read of the database starting now.
    pub fn read_stamp(&self) -> u64 {
        self.lock().recent.stamp()
    }

    /// Keeps records read from the database by a read that started at `since`, unless a
    /// write of one is pending or newer than the read (see [`Recent::keep_read`]).
    pub fn keep_read(&self, queue: &QueueKey, read: Vec<(String, PendingTask)>, since: u64) {
        let mut inner = self.lock();
        for (id, task) in read {
            let key = (queue.clone(), id);
            if !inner.tasks.contains_key(&key) {
                inner.recent.keep_read(key, task, since);
            }
        }
    }

    /// The latest pending counters of a queue.
    pub fn meta(&self, queue: &QueueKey) -> Option<QueueMeta> {
        self.lock().metas.get(queue).map(|(_, m)| *m)
    }

    /// Takes every transaction pending, for one commit.
    pub fn take(&self) -> Taken {
        let mut inner = self.lock();
        let txns: Vec<_> = inner.txns.drain(..).collect();
        let upto = txns.last().map_or(0, |(n, _)| *n);
        Taken { txns, upto }
    }

    /// The transactions taken committed: what they wrote is read from the database now,
    /// unless a later transaction wrote it again.
    pub fn committed(&self, upto: u64) {
        let mut inner = self.lock();
        let done: Vec<_> = inner
            .tasks
            .iter()
            .filter(|(_, (n, _))| *n <= upto)
            .map(|(k, _)| k.clone())
            .collect();
        for key in done {
            if let Some((_, task)) = inner.tasks.remove(&key) {
                inner.recent.keep_written(key, task);
            }
        }
        inner.metas.retain(|_, (n, _)| *n > upto);
    }

    /// The transactions taken did not commit: they go back first, to be committed next time.
    pub fn put_back(&self, taken: Taken) {
        let mut inner = self.lock();
        for txn in taken.txns.into_iter().rev() {
            inner.txns.push_front(txn);
        }
    }

    /// Drops everything about `queues`: their pending transactions (a transaction that
    /// writes one of them goes whole), records and counters. Another node owns them now.
    pub fn forget(&self, queues: &HashSet<QueueKey>) {
        let mut inner = self.lock();
        inner.txns.retain(|(_, w)| !touches(w, queues));
        inner.tasks.retain(|(q, _), _| !queues.contains(q));
        inner.metas.retain(|q, _| !queues.contains(q));
        inner.recent.forget(queues);
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.lock().txns.is_empty()
    }
}

/// True when `writes` write one of `queues`.
pub fn touches(writes: &[Write], queues: &HashSet<QueueKey>) -> bool {
    writes.iter().any(|w| queues.contains(w.queue()))
}
