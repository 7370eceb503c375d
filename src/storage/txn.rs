//! [`Txn`]: the writes of one change, in the store's domain terms (records, index entries,
//! leases, dead letters, expiry, counters), applied atomically by [`super::Store::commit`].

use std::collections::BTreeMap;

use sled::{Batch, IVec};

use super::{keys, record, spaced, Entry, Prefix, QueueMeta, ReadyPos, PAYLOAD_APART_BYTES};
use crate::error::{Error, Result};
use crate::model::{QueueKey, TaskRecord};

/// Writes to apply atomically with [`super::Store::commit`], in domain terms.
#[derive(Default)]
pub struct Txn {
    batch: Batch,
    /// Records whose retention ends, grouped by (end, queue): written as one expiry key per
    /// group when the transaction is committed (see [`Txn::put_expiry`]).
    expiring: BTreeMap<Vec<u8>, Vec<String>>,
    /// Bytes of the keys and values inserted (counted against the disk's space).
    pub(super) bytes: u64,
}

impl Txn {
    /// The sled batch, with the expiry keys of the records grouped so far.
    pub(super) fn into_batch(mut self) -> Batch {
        for (mut key, ids) in std::mem::take(&mut self.expiring) {
            let Some((first, more)) = ids.split_first() else {
                continue;
            };
            key.extend_from_slice(first.as_bytes());
            self.insert(Prefix::Expiry, &key, keys::expiry_value(more));
        }
        self.batch
    }

    pub(super) fn insert(&mut self, space: Prefix, key: &[u8], value: impl Into<IVec>) {
        let value = value.into();
        self.bytes += (key.len() + 1 + value.len()) as u64;
        self.batch.insert(spaced(space as u8, key), value);
    }

    pub(super) fn remove(&mut self, space: Prefix, key: &[u8]) {
        self.batch.remove(spaced(space as u8, key));
    }

    /// Stores a task record.
    pub fn put_task(&mut self, queue: &QueueKey, rec: &TaskRecord) {
        self.insert(
            Prefix::Tasks,
            &keys::task_key(queue, &rec.task_id),
            record::encode(rec),
        );
    }

    /// Stores the record of a task just added, its payload apart when it is large.
    pub fn put_new_task(&mut self, queue: &QueueKey, rec: &mut TaskRecord) {
        let key = keys::task_key(queue, &rec.task_id);
        rec.payload_apart = rec.payload.get().len() > PAYLOAD_APART_BYTES;
        if rec.payload_apart {
            self.insert(Prefix::Payloads, &key, rec.payload.get().as_bytes());
        } else {
            // A payload left apart by an earlier task of this id is not this task's.
            self.remove(Prefix::Payloads, &key);
        }
        self.insert(Prefix::Tasks, &key, record::encode(rec));
    }

    /// Deletes a task record and its payload.
    pub fn delete_task(&mut self, queue: &QueueKey, task_id: &str) {
        let key = keys::task_key(queue, task_id);
        self.remove(Prefix::Tasks, &key);
        self.remove(Prefix::Payloads, &key);
    }

    /// Adds a ready index entry.
    pub fn put_ready(&mut self, queue: &QueueKey, pos: ReadyPos, entry: &Entry) {
        self.insert(Prefix::Ready, &pos.key(queue), entry.encode());
    }

    /// Removes a ready index entry.
    pub fn del_ready(&mut self, queue: &QueueKey, pos: ReadyPos) {
        self.remove(Prefix::Ready, &pos.key(queue));
    }

    /// Adds a delayed index entry.
    pub fn put_delayed(&mut self, queue: &QueueKey, due: u64, seq: u64, entry: &Entry) {
        self.insert(
            Prefix::Delayed,
            &keys::delayed_key(queue, due, seq),
            entry.encode(),
        );
    }

    /// Removes a delayed index entry.
    pub fn del_delayed(&mut self, queue: &QueueKey, due: u64, seq: u64) {
        self.remove(Prefix::Delayed, &keys::delayed_key(queue, due, seq));
    }

    /// Marks a task leased.
    pub fn put_inflight(&mut self, queue: &QueueKey, task_id: &str) {
        self.insert(Prefix::Inflight, &keys::task_key(queue, task_id), &[]);
    }

    /// Unmarks a leased task.
    pub fn del_inflight(&mut self, queue: &QueueKey, task_id: &str) {
        self.remove(Prefix::Inflight, &keys::task_key(queue, task_id));
    }

    /// Lists a dead letter.
    pub fn put_dead(&mut self, queue: &QueueKey, at: u64, seq: u64, task_id: &str) {
        self.insert(
            Prefix::Dead,
            &keys::dead_key(queue, at, seq),
            task_id.as_bytes(),
        );
    }

    /// Unlists a dead letter.
    pub fn del_dead(&mut self, queue: &QueueKey, at: u64, seq: u64) {
        self.remove(Prefix::Dead, &keys::dead_key(queue, at, seq));
    }

    /// Schedules the purge of a finished record. The records of one queue whose retention
    /// ends at the same millisecond (a burst of settles) share one expiry key: a settle
    /// costs a write to the store per key, and most of a burst's records end together.
    pub fn put_expiry(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.expiring
            .entry(keys::expiry_key(at, queue, ""))
            .or_default()
            .push(task_id.to_string());
    }

    /// Records a task's schedule-to-start deadline.
    pub fn put_waiting(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.insert(Prefix::Waiting, &keys::expiry_key(at, queue, task_id), &[]);
    }

    /// Clears a task's schedule-to-start deadline.
    pub fn del_waiting(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.remove(Prefix::Waiting, &keys::expiry_key(at, queue, task_id));
    }

    /// Stores a queue's counters.
    pub fn put_meta(&mut self, queue: &QueueKey, meta: &QueueMeta) -> Result<()> {
        let raw = serde_json::to_vec(meta)
            .map_err(|e| Error::Internal(format!("cannot encode queue counters: {e}")))?;
        self.insert(Prefix::Queues, &keys::queue_prefix(queue), raw);
        Ok(())
    }
}
