//! The in-memory window over a queue's ready index.
//!
//! The ready index in sled holds every ready task in dispatch order; the window holds the
//! first `capacity`–`2 × capacity` of them, so a queue with ten million waiting tasks keeps
//! a bounded amount in memory. Invariant: unless `complete`, every stored entry at or before
//! `high` is in the window and nothing after it is; when the window runs low it is refilled
//! by a range scan that starts after `high`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::Result;
use crate::model::QueueKey;
use crate::storage::{Entry, ReadyPos, Store};

/// How many stored entries a type-filtered poll may scan beyond the window.
const SCAN_BEYOND_LIMIT: usize = 10_000;

/// Most remembered misses (distinct task-type filters); past it the memo starts over.
const MAX_MISSES: usize = 256;

/// A bounded window of ready tasks in dispatch order.
#[derive(Debug)]
pub struct Backlog {
    window: BTreeMap<ReadyPos, Entry>,
    /// Fallback instants of routed entries in the window, to wake waiters when one passes.
    fallbacks: BTreeSet<(u64, ReadyPos)>,
    /// The window holds every ready entry of the queue.
    complete: bool,
    /// The last position loaded from the store while not complete.
    high: Option<ReadyPos>,
    capacity: usize,
    /// Type-filtered scans beyond the window that found nothing: the filter's task types and
    /// the `beyond_gen` they saw. Until the stored entries past the window change other than
    /// by deletion, the same scan finds nothing again and is skipped, so a poller whose types
    /// have no task (a rolling upgrade) does not cost a 10,000-entry scan per dispatch try.
    misses: HashMap<Vec<String>, u64>,
    /// Bumped whenever the entries past the window may have gained one: an insert past
    /// `high`, or `high` / `complete` moving (refill, trim).
    beyond_gen: u64,
}

impl Backlog {
    /// An empty window that still has to be loaded.
    pub fn new(capacity: usize) -> Self {
        Backlog {
            window: BTreeMap::new(),
            fallbacks: BTreeSet::new(),
            complete: false,
            high: None,
            capacity: capacity.max(1),
            misses: HashMap::new(),
            beyond_gen: 0,
        }
    }

    /// Number of entries in memory.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// True when nothing is in memory.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    fn put(&mut self, pos: ReadyPos, entry: Entry) {
        if let Some(at) = entry.route.as_ref().and_then(|r| r.fallback_at) {
            self.fallbacks.insert((at, pos));
        }
        self.window.insert(pos, entry);
    }

    fn pop(&mut self, pos: &ReadyPos) -> Option<Entry> {
        let entry = self.window.remove(pos)?;
        if let Some(at) = entry.route.as_ref().and_then(|r| r.fallback_at) {
            self.fallbacks.remove(&(at, *pos));
        }
        Some(entry)
    }

    /// Adds an entry just written to the ready index, if it falls inside the window.
    pub fn insert(&mut self, pos: ReadyPos, entry: Entry) {
        // `high` itself was loaded: an entry put back there belongs in the window.
        if self.complete || self.high.is_some_and(|h| pos <= h) {
            self.put(pos, entry);
            self.trim();
        } else {
            self.beyond_gen += 1;
        }
    }

    /// The task ids of the first `n` entries of the window, in dispatch order.
    pub fn first_ids(&self, n: usize) -> Vec<&str> {
        self.window.values().take(n).map(|e| &*e.task_id).collect()
    }

    /// Forgets an entry (cancelled, or dispatched from beyond the window).
    pub fn remove(&mut self, pos: &ReadyPos) {
        self.pop(pos);
    }

    fn trim(&mut self) {
        if self.window.len() <= 2 * self.capacity {
            return;
        }
        while self.window.len() > self.capacity {
            if let Some(last) = self.window.last_key_value().map(|(k, _)| *k) {
                self.pop(&last);
            }
        }
        self.complete = false;
        self.high = self.window.last_key_value().map(|(k, _)| *k);
        self.beyond_gen += 1;
    }

    /// Reads more entries from the store when the window runs low.
    pub fn refill(&mut self, store: &dyn Store, queue: &QueueKey) -> Result<()> {
        if self.complete || self.window.len() > self.capacity / 2 {
            return Ok(());
        }
        let want = self.capacity - self.window.len().min(self.capacity);
        let loaded = store.scan_ready(queue, self.high, want)?;
        if loaded.len() < want {
            self.complete = true;
        }
        if let Some((last, _)) = loaded.last() {
            self.high = Some(*last);
        }
        self.beyond_gen += 1;
        for (pos, entry) in loaded {
            self.put(pos, entry);
        }
        Ok(())
    }

    /// Takes the first entry (in dispatch order) that `accepts`, looking past the window into
    /// the store if the window has none, so a filtered poller is not blocked by other types.
    /// `types` is the taker's task-type filter when `accepts` is that filter (plus routing):
    /// it keys the memo of scans past the window that found nothing.
    pub fn take(
        &mut self,
        store: &dyn Store,
        queue: &QueueKey,
        accepts: impl Fn(&Entry) -> bool,
        types: Option<&[String]>,
    ) -> Result<Option<(ReadyPos, Entry)>> {
        self.refill(store, queue)?;
        let found = self
            .window
            .iter()
            .find(|(_, e)| accepts(e))
            .map(|(p, _)| *p);
        if let Some(pos) = found {
            return Ok(self.pop(&pos).map(|e| (pos, e)));
        }
        if self.complete {
            return Ok(None);
        }
        if types.is_some_and(|t| self.misses.get(t) == Some(&self.beyond_gen)) {
            return Ok(None);
        }
        let mut after = self.high;
        let mut scanned = 0;
        // A routed entry's eligibility changes with time (its fallback), so a scan that met
        // one is not remembered as a miss.
        let mut saw_routed = false;
        while scanned < SCAN_BEYOND_LIMIT {
            let chunk = store.scan_ready(queue, after, 500)?;
            if chunk.is_empty() {
                break;
            }
            scanned += chunk.len();
            after = chunk.last().map(|(p, _)| *p);
            saw_routed |= chunk.iter().any(|(_, e)| e.route.is_some());
            if let Some(hit) = chunk.into_iter().find(|(_, e)| accepts(e)) {
                return Ok(Some(hit));
            }
        }
        if let (Some(types), false) = (types, saw_routed) {
            if self.misses.len() >= MAX_MISSES {
                self.misses.clear();
            }
            self.misses.insert(types.to_vec(), self.beyond_gen);
        }
        Ok(None)
    }

    /// Puts back an entry that was taken but could not be dispatched.
    pub fn put_back(&mut self, pos: ReadyPos, entry: Entry) {
        self.insert(pos, entry);
    }

    /// The first entry of each priority level in the window.
    fn firsts(&self) -> impl Iterator<Item = (&ReadyPos, &Entry)> {
        (1..=5u8).filter_map(|p| {
            let start = ReadyPos {
                priority: p,
                order: 0,
                seq: 0,
            };
            self.window
                .range(start..)
                .next()
                .filter(|(pos, _)| pos.priority == p)
        })
    }

    /// When the oldest task in the window became ready (the first of each priority).
    pub fn oldest_ready_at(&self) -> Option<u64> {
        self.firsts().map(|(_, e)| e.ready_at).min()
    }

    /// The first routed entry's fallback instant after `now`: when more pollers may take it.
    pub fn next_fallback(&self, now: u64) -> Option<u64> {
        self.fallbacks
            .range(
                (
                    now + 1,
                    ReadyPos {
                        priority: 0,
                        order: 0,
                        seq: 0,
                    },
                )..,
            )
            .next()
            .map(|(at, _)| *at)
    }

    /// The first position of each priority level in the window.
    pub fn first_positions(&self) -> Vec<ReadyPos> {
        self.firsts().map(|(pos, _)| *pos).collect()
    }

    /// Task types of the entries in the window.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.window.values().map(|e| &*e.task_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::model::QueueType;
    use crate::storage::{StoreOptions, Txn};

    fn store() -> std::sync::Arc<dyn Store> {
        let dir = tempfile::tempdir().unwrap();
        crate::storage::open(dir.path(), &StoreOptions::scratch(), Metrics::new(10)).unwrap()
    }

    fn entry(id: u64, ty: &str, priority: u8) -> Entry {
        Entry {
            priority,
            task_type: ty.into(),
            task_id: format!("t{id}").into(),
            ready_at: id,
            route: None,
            serial_key: None,
        }
    }

    fn fill(store: &dyn Store, q: &QueueKey, items: &[(u8, u64, &str)]) {
        let mut txn = Txn::default();
        for (i, (priority, order, ty)) in items.iter().enumerate() {
            let pos = ReadyPos {
                priority: *priority,
                order: *order,
                seq: i as u64,
            };
            txn.put_ready(q, pos, &entry(i as u64, ty, *priority));
        }
        store.commit(txn).unwrap();
    }

    /// Writes one ready entry at `order` (its seq too) and returns its position.
    fn store_one(store: &dyn Store, q: &QueueKey, order: u64, e: &Entry) -> ReadyPos {
        let pos = ReadyPos {
            priority: e.priority,
            order,
            seq: order,
        };
        let mut txn = Txn::default();
        txn.put_ready(q, pos, e);
        store.commit(txn).unwrap();
        pos
    }

    fn drain(b: &mut Backlog, store: &dyn Store, q: &QueueKey) -> Vec<String> {
        let mut out = vec![];
        while let Some((_, e)) = b.take(store, q, |_| true, None).unwrap() {
            out.push(e.task_id.into());
        }
        out
    }

    #[test]
    fn dispatch_order_is_priority_then_age_through_refills() {
        let s = store();
        let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
        fill(
            &*s,
            &q,
            &[
                (3, 10, "a"),
                (1, 20, "a"),
                (3, 5, "a"),
                (5, 1, "a"),
                (1, 10, "a"),
            ],
        );
        // A window of 2 must refill several times and still keep the order.
        let mut b = Backlog::new(2);
        // Takes do not delete from the store; emulate dispatch by only reading.
        assert_eq!(drain(&mut b, &*s, &q), vec!["t4", "t1", "t2", "t0", "t3"]);
    }

    #[test]
    fn filtered_take_looks_past_the_window() {
        let s = store();
        let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
        let mut items: Vec<(u8, u64, &str)> = (0..50).map(|i| (3, i, "a")).collect();
        items.push((3, 100, "b"));
        fill(&*s, &q, &items);
        let mut b = Backlog::new(4);
        let hit = b
            .take(&*s, &q, |e| &*e.task_type == "b", None)
            .unwrap()
            .unwrap();
        assert_eq!(&*hit.1.task_id, "t50");
        assert!(b.len() <= 8);
        assert!(b
            .take(&*s, &q, |e| &*e.task_type == "c", None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_filtered_miss_is_remembered_until_an_entry_lands_past_the_window() {
        let s = store();
        let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
        let items: Vec<(u8, u64, &str)> = (0..50).map(|i| (3, i, "a")).collect();
        fill(&*s, &q, &items);
        let mut b = Backlog::new(4);
        let types = vec!["new".to_string()];
        let wants_new = |e: &Entry| &*e.task_type == "new";
        assert!(b.take(&*s, &q, wants_new, Some(&types)).unwrap().is_none());
        let gen = b.beyond_gen;
        assert_eq!(b.misses.get(&types), Some(&gen), "the miss is remembered");
        // A task of that type lands past the window: the memo no longer applies.
        let pos = store_one(&*s, &q, 1000, &entry(1000, "new", 3));
        b.insert(pos, entry(1000, "new", 3));
        let hit = b.take(&*s, &q, wants_new, Some(&types)).unwrap().unwrap();
        assert_eq!(&*hit.1.task_id, "t1000");
    }

    #[test]
    fn a_scan_that_met_a_routed_entry_is_not_remembered() {
        let s = store();
        let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
        let items: Vec<(u8, u64, &str)> = (0..20).map(|i| (3, i, "a")).collect();
        fill(&*s, &q, &items);
        let mut routed = entry(500, "new", 3);
        routed.route = Some(Box::new(crate::storage::EntryRoute {
            identity: "w-7".into(),
            fallback_at: Some(10),
        }));
        store_one(&*s, &q, 500, &routed);
        let mut b = Backlog::new(4);
        let types = vec!["new".to_string()];
        // Not eligible yet (another identity, before the fallback): a miss, not remembered.
        let before = |e: &Entry| &*e.task_type == "new" && e.route.is_none();
        assert!(b.take(&*s, &q, before, Some(&types)).unwrap().is_none());
        assert!(b.misses.is_empty());
        // Once the fallback passed, the same filter finds it.
        let after = |e: &Entry| &*e.task_type == "new";
        assert!(b.take(&*s, &q, after, Some(&types)).unwrap().is_some());
    }

    #[test]
    fn window_stays_bounded_on_inserts() {
        let s = store();
        let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
        let mut b = Backlog::new(3);
        b.refill(&*s, &q).unwrap();
        for i in 0..100 {
            b.insert(
                ReadyPos {
                    priority: 3,
                    order: i,
                    seq: i,
                },
                entry(i, "a", 3),
            );
        }
        assert!(b.len() <= 6, "{}", b.len());
        assert_eq!(b.oldest_ready_at(), Some(0));
    }
}
