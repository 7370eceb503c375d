//! What spans queues rather than serving one: listing queues, the recovery of leased tasks
//! at start, the purge of finished records, what operators see of queues no actor holds, and
//! the measurements the disk-space watcher takes.

use std::collections::HashMap;
use std::ops::Bound;

use super::*;

/// Entries of each index read by [`Store::resting`].
pub const RESTING_SCAN: usize = 1000;

/// A queue no actor holds, as [`Store::resting`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resting {
    /// Tasks ready now, due delayed tasks included.
    pub backlog: u64,
    /// When the oldest of them became ready.
    pub oldest_ready_at: Option<u64>,
}

impl Store {
    /// Queues of a namespace with their counters, in name order, after `after` (a queue prefix).
    #[allow(clippy::type_complexity)]
    pub fn list_queues(
        &self,
        namespace: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<(QueueKey, QueueMeta)>, Option<Vec<u8>>)> {
        let prefix = keys::namespace_prefix(namespace);
        let start = match after {
            Some(a) if a.starts_with(&prefix) => Bound::Excluded(a.to_vec()),
            Some(_) => {
                return Err(Error::invalid(
                    "page_token is not one this server gave for this namespace",
                ))
            }
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        for item in self
            .queues
            .range((start, Bound::Excluded(prefix_end(&prefix))))
        {
            let (k, v) = item?;
            if out.len() >= limit {
                return Ok((out, last));
            }
            let Some((queue, _)) = keys::split_queue(&k) else {
                continue;
            };
            let meta: QueueMeta = serde_json::from_slice(&v).unwrap_or_default();
            last = Some(k.to_vec());
            out.push((queue, meta));
        }
        Ok((out, None))
    }

    /// Up to `limit` queues, of every namespace, that hold ready, delayed, leased or dead
    /// tasks, with their counters: what `/metrics` shows from the moment the server is ready.
    pub fn queues_holding_tasks(&self, limit: usize) -> Result<Vec<(QueueKey, QueueMeta)>> {
        let mut out = Vec::new();
        for item in self.queues.iter() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some((queue, _)) = keys::split_queue(&k) else {
                continue;
            };
            let Ok(meta) = serde_json::from_slice::<QueueMeta>(&v) else {
                log::error!("skipping the damaged counters of {queue}");
                continue;
            };
            if meta.ready + meta.delayed + meta.in_flight + meta.dead > 0 {
                out.push((queue, meta));
            }
        }
        Ok(out)
    }

    /// A queue no actor holds, as an operator sees it at `now`: its backlog counts the
    /// delayed tasks already due (an actor would make them ready the moment it loaded), and
    /// its oldest ready task is looked for among the first [`RESTING_SCAN`] entries of each
    /// index (the ready index is in dispatch order, not age).
    /// Without `with_age` the ready index is not read (`oldest_ready_at` is then only
    /// from due delayed tasks).
    pub fn resting(
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

    /// Puts every task that was leased when the server stopped back in its queue's ready
    /// index (the attempt it was on stays counted), before any queue actor starts.
    pub fn recover_in_flight(&self) -> Result<usize> {
        let mut metas: HashMap<QueueKey, QueueMeta> = HashMap::new();
        let mut txn = Txn::default();
        let mut n = 0;
        for item in self.inflight.iter() {
            let (k, _) = item?;
            let Some((queue, rest)) = keys::split_queue(&k) else {
                continue;
            };
            let task_id = String::from_utf8_lossy(rest).into_owned();
            txn.del_inflight(&queue, &task_id);
            let meta = match metas.get_mut(&queue) {
                Some(m) => m,
                None => {
                    let m = self.meta(&queue)?.unwrap_or_default();
                    metas.entry(queue.clone()).or_insert(m)
                }
            };
            meta.in_flight = meta.in_flight.saturating_sub(1);
            let Some(mut rec) = self.task(&queue, &task_id)? else {
                continue;
            };
            if rec.state != TaskState::Running {
                continue;
            }
            let (pos, entry) = requeue_leased(&mut rec);
            txn.put_ready(&queue, pos, &entry);
            txn.put_task(&queue, &rec);
            meta.ready += 1;
            n += 1;
        }
        for (queue, meta) in &metas {
            txn.put_meta(queue, meta)?;
        }
        self.commit(txn)?;
        self.flush()?;
        Ok(n)
    }

    /// Deletes finished records whose retention ended at or before `now`; at most `limit`.
    pub fn purge_expired(&self, now: u64, limit: usize) -> Result<usize> {
        let end = (now + 1).to_be_bytes().to_vec();
        let mut n = 0;
        for item in self
            .expiry
            .range((Bound::Unbounded, Bound::Excluded(end)))
            .take(limit)
        {
            let (k, more) = item?;
            let mut txn = Txn::default();
            txn.remove(Prefix::Expiry, &k);
            if let Some((_, queue, first)) = keys::decode_expiry(&k) {
                for task_id in std::iter::once(first.as_str()).chain(keys::expiry_ids(&more)) {
                    // A record that changed since (redriven, re-added) is not finished any more.
                    if let Some(rec) = self.task(&queue, task_id)? {
                        if rec.state.is_terminal() && !rec.state.is_dead_letter() {
                            txn.delete_task(&queue, task_id);
                            n += 1;
                        }
                    }
                }
            }
            self.commit(txn)?;
        }
        Ok(n)
    }
}

impl disk::Measure for Store {
    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    fn live_bytes(&self) -> Result<u64> {
        let mut n = 0;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            n += (k.len() + v.len()) as u64;
        }
        Ok(n)
    }

    fn purge_finished(&self, limit: usize) -> Result<usize> {
        self.purge_expired(u64::MAX - 1, limit)
    }
}
