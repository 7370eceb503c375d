//! Criterion micro-benchmarks of the queue actor's in-memory dispatch structures: the fairness
//! clock (stride scheduler) and the backlog window over the ready index.
//!
//! Measured:
//! - `fairness/enqueue/N`: the pass of a new ready task, round-robin over N fairness keys
//!   (N = 1, 100, 10,000) already known to the clock; `fairness/enqueue/none`: a task without a
//!   key (the common case); `fairness/dispatched/N`: advancing the clock past a dispatch.
//! - `backlog/insert_take`: the steady state of a live queue whose window holds everything
//!   (500 entries): one task added to the window, the first one taken (what one add plus one
//!   dispatch do to the window).
//! - `backlog/take_refill`: taking through 100,000 stored ready entries with the default
//!   window (1000): the window's range scans of the sled store, amortised per take.
//! - `backlog/take_filtered_miss`: one poll whose type filter matches nothing in a 20,000-entry
//!   queue: the whole window, then up to 10,000 stored entries beyond it, are scanned.
//!
//! The store is the real one: `Store::open` on a temporary sled database (no fsync, the
//! default 64 MiB cache), filled with `Txn::put_ready` as the queue actor does.
//!
//! Run: `cargo bench --bench backlog` (a short run: `cargo bench --bench backlog --
//! --warm-up-time 1 --measurement-time 3`; one group: `cargo bench --bench backlog -- fairness`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use tasq::metrics::Metrics;
use tasq::queue::backlog::Backlog;
use tasq::queue::fairness::{FairClock, STRIDE};
use tasq::storage::{Entry, ReadyPos, Store, StoreOptions, Txn};
use tasq::{QueueKey, QueueType};

/// The server's default `backlog_window`.
const WINDOW: usize = 1000;

fn fairness(c: &mut Criterion) {
    let mut g = c.benchmark_group("fairness");
    for n in [1usize, 100, 10_000] {
        let keys: Vec<String> = (0..n).map(|i| format!("tenant-{i}")).collect();
        let mut clock = FairClock::default();
        for k in &keys {
            clock.enqueue(3, Some(k), 1.0);
        }
        let mut i = 0;
        g.bench_function(BenchmarkId::new("enqueue", n), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                clock.enqueue(3, Some(black_box(&keys[i])), black_box(1.0))
            })
        });
        assert_eq!(clock.keys(), n);
        let mut pass = 0;
        g.bench_function(BenchmarkId::new("dispatched", n), |b| {
            b.iter(|| {
                pass += STRIDE;
                clock.dispatched(3, black_box(pass))
            })
        });
    }
    let mut clock = FairClock::default();
    g.bench_function(BenchmarkId::new("enqueue", "none"), |b| {
        b.iter(|| clock.enqueue(3, black_box(None), black_box(1.0)))
    });
    g.finish();
}

/// The store and its directory (kept until the end, deleted with the store).
fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = tasq::storage::open(
        dir.path(),
        &StoreOptions {
            fsync: false,
            cache_capacity_bytes: 64 << 20,
            temporary: true,
            max_bytes: 0,
            reserve_bytes: 0,
            snapshot_after_bytes: 0,
        },
        Metrics::new(10),
    )
    .expect("a temporary store");
    (dir, store)
}

fn pos(i: u64) -> ReadyPos {
    ReadyPos {
        priority: 3,
        order: i * STRIDE,
        seq: i,
    }
}

fn entry(i: u64, task_type: &str) -> Entry {
    Entry {
        priority: 3,
        task_type: task_type.into(),
        task_id: format!("{i:08x}-9d4a-4b7e-8f1c-2a6d5e9b0c47").into(),
        ready_at: 1_750_000_000_000 + i,
        route: None,
        serial_key: None,
    }
}

/// Writes `n` ready entries of `task_type` to `queue`, in batches as big as a busy add.
fn fill(store: &dyn Store, queue: &QueueKey, n: u64, task_type: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let mut txn = Txn::default();
        for &i in chunk {
            txn.put_ready(queue, pos(i), &entry(i, task_type));
        }
        store.commit(txn).expect("commit");
    }
}

fn backlog(c: &mut Criterion) {
    let (_dir, store) = store();
    let mut g = c.benchmark_group("backlog");

    // A live queue: the window holds every ready entry (complete), 500 of them.
    let live = QueueKey::new("acme-prod", "live", QueueType::Activity).unwrap();
    let mut window = Backlog::new(WINDOW);
    window.refill(&*store, &live).unwrap();
    let mut next = 0u64;
    while window.len() < WINDOW / 2 {
        window.insert(pos(next), entry(next, "welcome-email"));
        next += 1;
    }
    let template = entry(0, "welcome-email");
    g.bench_function("insert_take", |b| {
        b.iter_batched(
            || template.clone(),
            |e| {
                window.insert(pos(next), e);
                next += 1;
                window.take(&*store, &live, |_| true, None).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    assert_eq!(window.len(), WINDOW / 2);

    // A deep queue: 100,000 stored entries read through the window. Takes do not delete from
    // the store (the actor's commit does), so a drained window starts over.
    let deep = QueueKey::new("acme-prod", "deep", QueueType::Activity).unwrap();
    fill(&*store, &deep, 100_000, "welcome-email");
    let mut window = Backlog::new(WINDOW);
    g.bench_function("take_refill", |b| {
        b.iter(
            || match window.take(&*store, &deep, |_| true, None).unwrap() {
                Some(hit) => Some(hit),
                None => {
                    window = Backlog::new(WINDOW);
                    None
                }
            },
        )
    });

    // A poll for a type the queue does not hold.
    let mixed = QueueKey::new("acme-prod", "mixed", QueueType::Activity).unwrap();
    fill(&*store, &mixed, 20_000, "welcome-email");
    let mut window = Backlog::new(WINDOW);
    g.sample_size(20);
    // Without the filter's types the miss is not remembered: every call scans 10,000 stored
    // entries (the cost before the miss memo). With them, later calls skip the scan.
    g.bench_function("take_filtered_miss", |b| {
        b.iter(|| {
            let hit = window
                .take(&*store, &mixed, |e| &*e.task_type == "invoice", None)
                .unwrap();
            assert!(hit.is_none());
        })
    });
    let invoice = vec!["invoice".to_string()];
    g.bench_function("take_filtered_miss_remembered", |b| {
        b.iter(|| {
            let hit = window
                .take(
                    &*store,
                    &mixed,
                    |e| &*e.task_type == "invoice",
                    Some(&invoice),
                )
                .unwrap();
            assert!(hit.is_none());
        })
    });
    g.finish();
}

criterion_group!(benches, fairness, backlog);
criterion_main!(benches);
