//! Task records committed lately, kept in memory so that the next read of one is not a round
//! trip: a queue reads a record again at its lease, its settle, a heartbeat, a status read.
//!
//! Every committed write of a record passes through here (a deletion stays as a tombstone),
//! and so do records read from the database, so what is kept is what the database holds:
//! one tasq writes a queue's records, and only through this store. Oldest entries go first
//! once [`CAPACITY_BYTES`] is reached.

use std::collections::{HashMap, VecDeque};

use super::pending::PendingTask;
use crate::model::QueueKey;

/// Bytes of records kept (keys, records and payloads).
pub const CAPACITY_BYTES: usize = 64 << 20;

/// What an entry costs besides its bytes (the map's and the queue's own).
const ENTRY_OVERHEAD: usize = 96;

type Key = (QueueKey, String);

/// The records kept, oldest first in `order`.
#[derive(Default)]
pub struct Recent {
    /// Each record (a tombstone: `record` is `None`) and the stamp it was kept with.
    map: HashMap<Key, (u64, PendingTask)>,
    /// Keys in the order kept; a key kept again has a later stamp, the earlier one is stale.
    order: VecDeque<(Key, u64)>,
    bytes: usize,
    next: u64,
    /// The stamp of the newest entry dropped for room (see [`Recent::keep_read`]).
    evicted_upto: u64,
    capacity: usize,
}

fn size(key: &Key, task: &PendingTask) -> usize {
    // The queue's key is shared (an `Arc`), the task id is not.
    ENTRY_OVERHEAD
        + key.1.len()
        + task.record.as_ref().map_or(0, Vec::len)
        + task.payload.as_ref().map_or(0, String::len)
}

impl Recent {
    /// Keeps up to `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Recent {
            capacity,
            ..Recent::default()
        }
    }

    /// The record kept for a task: `Some` with `record: None` when it was deleted.
    pub fn get(&self, key: &Key) -> Option<&PendingTask> {
        self.map.get(key).map(|(_, t)| t)
    }

    /// A stamp to pass to [`Recent::keep_read`] for a read of the database starting now.
    pub fn stamp(&self) -> u64 {
        self.next
    }

    /// Keeps a record as a commit wrote it.
    pub fn keep_written(&mut self, key: Key, task: PendingTask) {
        self.next += 1;
        let stamp = self.next;
        self.bytes += size(&key, &task);
        self.order.push_back((key.clone(), stamp));
        if let Some((_, old)) = self.map.insert(key.clone(), (stamp, task)) {
            self.bytes -= size(&key, &old);
        }
        self.make_room();
    }

    /// Keeps a record read from the database by a read that started at `since` (a
    /// [`Recent::stamp`]), unless something newer may be known: the record is kept already
    /// (written since), or entries were dropped since (one of them may have been its write).
    pub fn keep_read(&mut self, key: Key, task: PendingTask, since: u64) {
        if self.evicted_upto > since || self.map.contains_key(&key) {
            return;
        }
        self.keep_written(key, task);
    }

    /// Drops the records of `queues` (another node writes them now).
    pub fn forget(&mut self, queues: &std::collections::HashSet<QueueKey>) {
        let before = self.map.len();
        let mut freed = 0;
        self.map.retain(|k, (_, t)| {
            let keep = !queues.contains(&k.0);
            if !keep {
                freed += size(k, t);
            }
            keep
        });
        self.bytes -= freed;
        if self.map.len() != before {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(kept, _)| kept == s));
        }
    }

    /// Drops the oldest entries until what is kept fits, and stale places in the order.
    fn make_room(&mut self) {
        while self.bytes > self.capacity {
            let Some((key, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&key).is_some_and(|(s, _)| *s == stamp) {
                if let Some((_, old)) = self.map.remove(&key) {
                    self.bytes -= size(&key, &old);
                }
                self.evicted_upto = self.evicted_upto.max(stamp);
            }
        }
        // A record kept again leaves its earlier place behind: drop those now and then.
        if self.order.len() > 2 * self.map.len() + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, s)| map.get(k).is_some_and(|(kept, _)| kept == s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QueueType;

    fn key(id: &str) -> Key {
        (
            QueueKey::new_unchecked("ns".into(), "q".into(), QueueType::Activity),
            id.to_string(),
        )
    }

    fn rec(bytes: usize) -> PendingTask {
        PendingTask {
            record: Some(vec![7; bytes]),
            payload: None,
        }
    }

    #[test]
    fn keeps_the_latest_write_and_tombstones() {
        let mut r = Recent::with_capacity(1 << 20);
        r.keep_written(key("a"), rec(10));
        r.keep_written(key("a"), rec(20));
        assert_eq!(
            r.get(&key("a")).and_then(|t| t.record.clone()),
            Some(vec![7; 20])
        );
        r.keep_written(
            key("a"),
            PendingTask {
                record: None,
                payload: None,
            },
        );
        assert!(r.get(&key("a")).is_some_and(|t| t.record.is_none()));
    }

    #[test]
    fn oldest_go_first_and_bytes_stay_bounded() {
        let mut r = Recent::with_capacity(10 * (ENTRY_OVERHEAD + 100));
        for i in 0..100 {
            r.keep_written(key(&format!("t{i:03}")), rec(90));
            // A record rewritten stays, and its earlier place does not count twice.
            r.keep_written(key("t000"), rec(90));
        }
        assert!(r.bytes <= r.capacity, "{} > {}", r.bytes, r.capacity);
        assert!(r.get(&key("t099")).is_some());
        assert!(r.get(&key("t050")).is_none());
        assert!(r.get(&key("t000")).is_some());
        assert!(r.order.len() <= 2 * r.map.len() + 1024);
    }

    #[test]
    fn a_read_never_hides_a_newer_write() {
        let mut r = Recent::with_capacity(1 << 20);
        // Written (or deleted) while the read was under way: the read's older value is not kept.
        let since = r.stamp();
        r.keep_written(
            key("a"),
            PendingTask {
                record: None,
                payload: None,
            },
        );
        r.keep_read(key("a"), rec(5), since);
        assert!(r.get(&key("a")).is_some_and(|t| t.record.is_none()));
        // Nothing happened to it meanwhile: kept.
        let since = r.stamp();
        r.keep_read(key("b"), rec(5), since);
        assert!(r.get(&key("b")).is_some());
    }

    #[test]
    fn a_read_across_an_eviction_is_not_kept() {
        let mut r = Recent::with_capacity(3 * (ENTRY_OVERHEAD + 100));
        let since = r.stamp();
        for i in 0..10 {
            r.keep_written(key(&format!("w{i}")), rec(90));
        }
        // Its write may have been one of those dropped: the value read may be older.
        r.keep_read(key("w0"), rec(5), since);
        assert!(r.get(&key("w0")).is_none());
    }
}
