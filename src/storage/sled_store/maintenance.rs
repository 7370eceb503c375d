//! What spans queues rather than serving one: listing queues, the leased tasks of every
//! queue, the purge of finished records, and the measurements the disk-space watcher takes.
//! (The [`Store`] impl answers with these.)

use std::ops::Bound;

use super::*;
use crate::storage::txn::Write;

impl SledStore {
    /// Queues of a namespace with their counters, in name order, after `after` (a queue prefix).
    pub(super) fn queues_page(
        &self,
        namespace: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Page<(QueueKey, QueueMeta)>> {
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

    /// The queues of `namespace` with attributes, after the queue named `after`.
    pub(super) fn attributes_page(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(QueueKey, String)>> {
        let prefix = keys::namespace_prefix(namespace);
        let start = match after {
            // Past every type of the queue named `after`.
            Some(name) => {
                let mut k = prefix.clone();
                k.extend_from_slice(name.as_bytes());
                k.push(1);
                Bound::Included(k)
            }
            None => Bound::Included(prefix.clone()),
        };
        let mut out = Vec::new();
        for item in self
            .attributes
            .range((start, Bound::Excluded(prefix_end(&prefix))))
        {
            let (k, v) = item?;
            if out.len() >= limit {
                break;
            }
            if let Some((queue, _)) = keys::split_queue(&k) {
                out.push((queue, String::from_utf8_lossy(&v).into_owned()));
            }
        }
        Ok(out)
    }

    /// The namespaces of the queues tree, after `after`: one seek per namespace (past the
    /// last key of the one before), not a read of every queue.
    pub(super) fn namespace_names(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut from = match after {
            Some(ns) => prefix_end(&keys::namespace_prefix(ns)),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        while out.len() < limit {
            let Some((k, _)) = self
                .queues
                .range((Bound::Included(from.clone()), Bound::Unbounded))
                .next()
                .transpose()?
            else {
                break;
            };
            let Some((queue, _)) = keys::split_queue(&k) else {
                break;
            };
            from = prefix_end(&keys::namespace_prefix(queue.namespace()));
            out.push(queue.namespace().to_string());
        }
        Ok(out)
    }

    /// Up to `limit` queues, of every namespace, that hold ready, delayed, leased or dead
    /// tasks, with their counters: what `/metrics` shows from the moment the server is ready.
    pub(super) fn queues_with_tasks(&self, limit: usize) -> Result<Vec<(QueueKey, QueueMeta)>> {
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

    /// Every leased task of every queue.
    pub(super) fn leased(&self) -> Result<Vec<(QueueKey, String)>> {
        let mut out = Vec::new();
        for item in self.inflight.iter() {
            let (k, _) = item?;
            if let Some((queue, rest)) = keys::split_queue(&k) {
                out.push((queue, String::from_utf8_lossy(rest).into_owned()));
            }
        }
        Ok(out)
    }

    /// Deletes finished records whose retention ended at or before `now`; at most `limit`.
    pub(super) fn purge(&self, now: u64, limit: usize) -> Result<usize> {
        let end = (now + 1).to_be_bytes().to_vec();
        let mut n = 0;
        for item in self
            .expiry
            .range((Bound::Unbounded, Bound::Excluded(end)))
            .take(limit)
        {
            let (k, more) = item?;
            let mut txn = Txn::default();
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
            let (mut batch, bytes) = batch::of(txn)?;
            batch.remove(spaced(Prefix::Expiry as u8, &k));
            self.apply(batch, bytes)?;
        }
        Ok(n)
    }
}

impl SledStore {
    /// Every key of the store as domain writes, `batch` at a time (`tasq store copy`).
    pub(super) fn export_all(
        &self,
        batch: usize,
        sink: &mut dyn FnMut(Txn) -> Result<()>,
    ) -> Result<()> {
        let mut txn = Txn::default();
        for item in self.tree.iter() {
            let (key, value) = item?;
            let Some((&space, rest)) = key.split_first() else {
                continue;
            };
            for w in writes_of(space, rest, &value)? {
                txn.push(w);
            }
            if txn.len() >= batch {
                sink(std::mem::take(&mut txn))?;
            }
        }
        if !txn.is_empty() {
            sink(txn)?;
        }
        Ok(())
    }
}

/// The domain writes that put back one key of the space `space` (its key without the space
/// byte, and its value).
fn writes_of(space: u8, key: &[u8], value: &[u8]) -> Result<Vec<Write>> {
    let damaged = || {
        Error::Internal(format!(
            "a key of space {:?} does not decode",
            space as char
        ))
    };
    fn queue_and(key: &[u8]) -> Result<(QueueKey, &[u8])> {
        keys::split_queue(key)
            .ok_or_else(|| Error::Internal("a key does not name its queue".into()))
    }
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| damaged());
    let w = match space {
        s if s == Prefix::Tasks as u8 => {
            let (queue, id) = queue_and(key)?;
            vec![Write::Task {
                queue,
                task_id: text(id)?,
                record: value.to_vec(),
            }]
        }
        s if s == Prefix::Payloads as u8 => {
            let (queue, id) = queue_and(key)?;
            vec![Write::Payload {
                queue,
                task_id: text(id)?,
                text: text(value)?,
            }]
        }
        s if s == Prefix::Ready as u8 => {
            let (queue, rest) = queue_and(key)?;
            let pos = ReadyPos::decode(rest).ok_or_else(damaged)?;
            vec![Write::Ready(
                queue,
                pos,
                Entry::decode(value).ok_or_else(damaged)?,
            )]
        }
        s if s == Prefix::Delayed as u8 => {
            let (queue, rest) = queue_and(key)?;
            let (due, seq) = keys::decode_delayed(rest).ok_or_else(damaged)?;
            let entry = Entry::decode(value).ok_or_else(damaged)?;
            vec![Write::Delayed(queue, due, seq, entry)]
        }
        s if s == Prefix::Inflight as u8 => {
            let (queue, id) = queue_and(key)?;
            vec![Write::InFlight(queue, text(id)?)]
        }
        s if s == Prefix::Dead as u8 => {
            let (queue, rest) = queue_and(key)?;
            let (at, seq) = keys::decode_delayed(rest).ok_or_else(damaged)?;
            vec![Write::Dead(queue, at, seq, text(value)?)]
        }
        s if s == Prefix::Expiry as u8 => {
            let (at, queue, first) = keys::decode_expiry(key).ok_or_else(damaged)?;
            std::iter::once(first.as_str())
                .chain(keys::expiry_ids(value))
                .map(|id| Write::Expiry(at, queue.clone(), id.to_string()))
                .collect()
        }
        s if s == Prefix::Waiting as u8 => {
            let (at, queue, id) = keys::decode_expiry(key).ok_or_else(damaged)?;
            vec![Write::Waiting(at, queue, id)]
        }
        s if s == Prefix::Attributes as u8 => {
            let (queue, _) = queue_and(key)?;
            vec![Write::Attributes(queue, Some(text(value)?))]
        }
        s if s == Prefix::Queues as u8 => {
            let (queue, _) = queue_and(key)?;
            let meta: QueueMeta = serde_json::from_slice(value).map_err(|_| damaged())?;
            vec![Write::Meta(queue, meta)]
        }
        _ => Vec::new(),
    };
    Ok(w)
}

impl disk::Measure for SledStore {
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
        self.purge(u64::MAX - 1, limit)
    }
}
