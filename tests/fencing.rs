//! Queue ownership is fenced in the PostgreSQL store (cluster issue, first step): two stores
//! opened in cluster mode on one real PostgreSQL database play two nodes. A node writes only
//! the queues it took; once another node takes a queue, the first one's writes for it never
//! land (their waiters get 503 `unavailable`), while its other queues go on; no write that
//! was answered durable is lost across a takeover.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL's programs); `.ci/postgres` runs them.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tasq::error::Error;
use tasq::metrics::Metrics;
use tasq::model::{QueueKey, QueueType};
use tasq::storage::postgres::{PgOptions, PgStore};
use tasq::storage::{Store, Txn};

fn node(url: &str) -> Arc<PgStore> {
    let opts = PgOptions {
        url: url.to_string(),
        pool_size: 2,
        statement_timeout: Duration::from_secs(30),
        synchronous_commit: true,
        node: Some("fencing-test".into()),
        node_timeout: Duration::from_secs(10),
    };
    PgStore::open(&opts, Metrics::new(10)).expect("open the store")
}

fn queue(name: &str) -> QueueKey {
    QueueKey::new("fencing", name, QueueType::Activity).expect("a valid queue")
}

/// Marks `task_id` leased in `q`: a row of its own, read back with `leased_tasks`.
fn mark(store: &PgStore, q: &QueueKey, task_id: &str) -> Result<(), Error> {
    let mut txn = Txn::default();
    txn.put_inflight(q, task_id);
    store.commit(txn)?;
    let write = store.latest_write();
    block_on(store.durable_for(q, write))
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// The tasks marked in `q`, as the database holds them.
fn marked(store: &PgStore, q: &QueueKey) -> BTreeSet<String> {
    store
        .leased_tasks()
        .expect("read the marks")
        .into_iter()
        .filter(|(k, _)| k == q)
        .map(|(_, id)| id)
        .collect()
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_node_writes_only_the_queues_it_took() {
    let url = common::postgres::new_database();
    let a = node(&url);
    let q = queue("untaken");
    let e = mark(&a, &q, "t1").expect_err("a queue never taken");
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    a.take_queue(&q, "a").expect("take");
    mark(&a, &q, "t1").expect("taken: written");
    assert_eq!(marked(&a, &q), BTreeSet::from(["t1".to_string()]));
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_node_that_lost_a_queue_never_writes_for_it_again() {
    let url = common::postgres::new_database();
    let (a, b) = (node(&url), node(&url));
    let (q, other) = (queue("moving"), queue("staying"));
    a.take_queue(&q, "a").expect("take");
    a.take_queue(&other, "a").expect("take");
    mark(&a, &q, "before").expect("written while held");

    // b takes the queue; a does not know yet: its next write is accepted in memory, then
    // refused by the fence in the same commit as a write for a queue it still holds.
    b.take_queue(&q, "b").expect("take over");
    let mut txn = Txn::default();
    txn.put_inflight(&q, "after");
    a.commit(txn).expect("a still believes it holds the queue");
    let lost_write = a.latest_write();
    let mut txn = Txn::default();
    txn.put_inflight(&other, "kept");
    a.commit(txn).expect("the other queue");
    let kept_write = a.latest_write();
    let e = block_on(a.durable_for(&q, lost_write)).expect_err("fenced out");
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    block_on(a.durable_for(&other, kept_write)).expect("the other queue's write commits");

    // Found out: a refuses writes for it at once; b's view has only what a wrote before.
    assert!(mark(&a, &q, "later").is_err());
    assert_eq!(marked(&b, &q), BTreeSet::from(["before".to_string()]));
    assert_eq!(marked(&b, &other), BTreeSet::from(["kept".to_string()]));
    mark(&b, &q, "b1").expect("the new owner writes");

    // Taking it back works as a fresh take: a's old view of it is gone.
    a.take_queue(&q, "a").expect("take back");
    mark(&a, &q, "back").expect("written again");
    assert!(mark(&b, &q, "b2").is_err(), "b lost it in turn");
    assert_eq!(
        marked(&a, &q),
        BTreeSet::from(["back".to_string(), "before".to_string(), "b1".to_string()])
    );
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn a_takeover_under_writes_loses_no_acknowledged_write() {
    let url = common::postgres::new_database();
    let (a, b) = (node(&url), node(&url));
    let q = queue("busy");
    a.take_queue(&q, "a").expect("take");
    let writer = {
        let a = a.clone();
        let q = q.clone();
        std::thread::spawn(move || {
            let mut acknowledged = BTreeSet::new();
            let mut refused = 0;
            for i in 0..2000 {
                let id = format!("t{i:05}");
                match mark(&a, &q, &id) {
                    Ok(()) => {
                        assert_eq!(refused, 0, "{id} acknowledged after a refusal");
                        acknowledged.insert(id);
                    }
                    Err(Error::Unavailable(_)) => refused += 1,
                    Err(e) => panic!("{id}: {e:?}"),
                }
            }
            (acknowledged, refused)
        })
    };
    // Let a write a while, then take the queue over under its feet.
    while marked(&b, &q).len() < 200 {
        std::thread::sleep(Duration::from_millis(5));
    }
    b.take_queue(&q, "b").expect("take over");
    let at_takeover = marked(&b, &q);
    let (acknowledged, refused) = writer.join().expect("the writer");
    assert!(refused > 0, "the writer never saw the takeover");
    let stored = marked(&b, &q);
    assert!(
        acknowledged.is_subset(&stored),
        "acknowledged and lost: {:?}",
        acknowledged.difference(&stored).collect::<Vec<_>>()
    );
    assert_eq!(stored, at_takeover, "a wrote after b took the queue");
    eprintln!(
        "{} acknowledged before the takeover, {refused} refused after it",
        acknowledged.len()
    );
}
