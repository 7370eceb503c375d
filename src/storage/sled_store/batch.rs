//! A [`Txn`] as one sled batch: each domain write becomes the keys of its key space.

use std::collections::BTreeMap;

use ::sled::{Batch, IVec};

use super::{keys, spaced, Prefix, Txn};
use crate::error::{Error, Result};
use crate::storage::txn::Write;

/// The batch of `txn`, and the bytes of the keys and values it inserts (counted against the
/// disk's space).
pub(super) fn of(txn: Txn) -> Result<(Batch, u64)> {
    let mut b = Builder::default();
    // Records of one queue whose retention ends at the same millisecond (a burst of settles)
    // share one expiry key: a settle costs a write per key, and most of a burst's records end
    // together.
    let mut expiring: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for write in txn.into_writes() {
        match write {
            Write::Task {
                queue,
                task_id,
                record,
            } => b.insert(Prefix::Tasks, &keys::task_key(&queue, &task_id), record),
            Write::Payload {
                queue,
                task_id,
                text,
            } => b.insert(
                Prefix::Payloads,
                &keys::task_key(&queue, &task_id),
                text.into_bytes(),
            ),
            Write::DeletePayload { queue, task_id } => {
                b.remove(Prefix::Payloads, &keys::task_key(&queue, &task_id))
            }
            Write::DeleteTask { queue, task_id } => {
                let key = keys::task_key(&queue, &task_id);
                b.remove(Prefix::Tasks, &key);
                b.remove(Prefix::Payloads, &key);
            }
            Write::Ready(queue, pos, entry) => {
                b.insert(Prefix::Ready, &pos.key(&queue), entry.encode())
            }
            Write::DeleteReady(queue, pos) => b.remove(Prefix::Ready, &pos.key(&queue)),
            Write::Delayed(queue, due, seq, entry) => b.insert(
                Prefix::Delayed,
                &keys::delayed_key(&queue, due, seq),
                entry.encode(),
            ),
            Write::DeleteDelayed(queue, due, seq) => {
                b.remove(Prefix::Delayed, &keys::delayed_key(&queue, due, seq))
            }
            Write::InFlight(queue, task_id) => {
                b.insert(Prefix::Inflight, &keys::task_key(&queue, &task_id), &[])
            }
            Write::DeleteInFlight(queue, task_id) => {
                b.remove(Prefix::Inflight, &keys::task_key(&queue, &task_id))
            }
            Write::Dead(queue, at, seq, task_id) => b.insert(
                Prefix::Dead,
                &keys::dead_key(&queue, at, seq),
                task_id.into_bytes(),
            ),
            Write::DeleteDead(queue, at, seq) => {
                b.remove(Prefix::Dead, &keys::dead_key(&queue, at, seq))
            }
            Write::Expiry(at, queue, task_id) => expiring
                .entry(keys::expiry_key(at, &queue, ""))
                .or_default()
                .push(task_id),
            // The key of a group of records ending together names its first task (the purge
            // of sled deletes the whole group by its key).
            Write::DeleteExpiry(at, queue, task_id) => {
                b.remove(Prefix::Expiry, &keys::expiry_key(at, &queue, &task_id))
            }
            Write::Waiting(at, queue, task_id) => b.insert(
                Prefix::Waiting,
                &keys::expiry_key(at, &queue, &task_id),
                &[],
            ),
            Write::DeleteWaiting(at, queue, task_id) => {
                b.remove(Prefix::Waiting, &keys::expiry_key(at, &queue, &task_id))
            }
            Write::Attributes(queue, Some(text)) => b.insert(
                Prefix::Attributes,
                &keys::queue_prefix(&queue),
                text.into_bytes(),
            ),
            Write::Attributes(queue, None) => {
                b.remove(Prefix::Attributes, &keys::queue_prefix(&queue))
            }
            Write::Meta(queue, meta) => {
                let raw = serde_json::to_vec(&meta).map_err(|e| {
                    Error::Internal(format!("cannot encode the counters of {queue}: {e}"))
                })?;
                b.insert(Prefix::Queues, &keys::queue_prefix(&queue), raw)
            }
        }
    }
    for (mut key, ids) in expiring {
        let Some((first, more)) = ids.split_first() else {
            continue;
        };
        key.extend_from_slice(first.as_bytes());
        b.insert(Prefix::Expiry, &key, keys::expiry_value(more));
    }
    Ok((b.batch, b.bytes))
}

#[derive(Default)]
struct Builder {
    batch: Batch,
    bytes: u64,
}

impl Builder {
    fn insert(&mut self, space: Prefix, key: &[u8], value: impl Into<IVec>) {
        let value = value.into();
        self.bytes += (key.len() + 1 + value.len()) as u64;
        self.batch.insert(spaced(space as u8, key), value);
    }

    fn remove(&mut self, space: Prefix, key: &[u8]) {
        self.batch.remove(spaced(space as u8, key));
    }
}
