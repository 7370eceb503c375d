//! Unit tests of the store: group commit, record encodings, grouped expiry keys.

use super::*;
use crate::model::{QueueType, TaskSpec, TaskState};

fn store() -> Arc<SledStore> {
    store_with(false, Metrics::new(10))
}

/// A temporary store; `fsync`: writes made durable by the group commit.
fn store_with(fsync: bool, metrics: Arc<Metrics>) -> Arc<SledStore> {
    let opts = StoreOptions {
        fsync,
        ..StoreOptions::scratch()
    };
    let dir = std::env::temp_dir().join(format!("tasq-store-{}", uuid::Uuid::new_v4()));
    SledStore::open(&dir, &opts, metrics).unwrap()
}

#[tokio::test]
async fn a_write_is_flushed_once_without_waiting_to_be_asked() {
    let metrics = Metrics::new(10);
    let store = store_with(true, metrics.clone());
    let flushes = || metrics.storage_flush_seconds.get_sample_count();
    let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
    let write = |id: &str| {
        let mut txn = Txn::default();
        txn.put_task(&q, &record(id, TaskState::Pending));
        store.commit(txn).unwrap();
        store.latest_write()
    };
    store.durable().await.unwrap();
    assert_eq!(flushes(), 0, "nothing written, nothing to flush");

    // A write that nobody waits for is flushed all the same (the writer asked).
    let a = write("a");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while flushes() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(flushes(), 1, "the write asked for its flush");
    assert_eq!(metrics.storage_flush_batch_size.get_sample_sum(), 1.0);
    // Asking afterwards needs no other flush.
    store.durable_since(a).await.unwrap();
    store.durable().await.unwrap();
    assert_eq!(flushes(), 1, "a is on disk already");

    // Two writes: one flush each at most, and once on disk no further one.
    let b = write("b");
    let c = write("c");
    assert!(a < b && b < c);
    store.durable_since(c).await.unwrap();
    store.durable_since(b).await.unwrap();
    let after = flushes();
    assert!((2..=3).contains(&after), "{after} flushes for three writes");
    assert_eq!(metrics.storage_flush_batch_size.get_sample_sum(), 3.0);
    store.durable_since(WriteSeq::NOTHING).await.unwrap();
    store.durable().await.unwrap();
    assert_eq!(flushes(), after, "b and c are on disk already");
}

#[tokio::test]
async fn with_durability_relaxed_nothing_waits_for_a_flush() {
    let metrics = Metrics::new(10);
    let store = store_with(false, metrics.clone());
    let mut txn = Txn::default();
    let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
    txn.put_task(&q, &record("a", TaskState::Pending));
    store.commit(txn).unwrap();
    store.durable_since(store.latest_write()).await.unwrap();
    assert_eq!(metrics.storage_flush_seconds.get_sample_count(), 0);
}

fn record(id: &str, state: TaskState) -> TaskRecord {
    let req: TaskSpec =
        serde_json::from_str(&format!(r#"{{"task_type": "t", "task_id": "{id}"}}"#)).unwrap();
    let mut rec = TaskRecord::new(&req.validate().unwrap(), 1, 1);
    rec.state = state;
    rec
}

#[test]
fn a_record_stored_as_json_by_an_earlier_version_still_reads() {
    let store = store();
    let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
    let old = record("old", TaskState::Completed);
    let mut batch = ::sled::Batch::default();
    batch.insert(
        spaced(Prefix::Tasks as u8, &keys::task_key(&q, "old")),
        serde_json::to_vec(&old).unwrap(),
    );
    store.apply(batch, 0).unwrap();
    let back = store.task(&q, "old").unwrap().expect("the record");
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&old).unwrap()
    );
    // Written again, it is stored in the binary form and reads the same.
    let mut txn = Txn::default();
    txn.put_task(&q, &back);
    store.commit(txn).unwrap();
    let raw = store
        .tasks
        .get(&keys::task_key(&q, "old"))
        .unwrap()
        .unwrap();
    assert_ne!(raw.first(), Some(&b'{'));
    let again = store.task(&q, "old").unwrap().expect("the record");
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::to_value(&old).unwrap()
    );
}

#[test]
fn records_finished_together_share_an_expiry_key_and_are_all_purged() {
    let store = store();
    let q = QueueKey::new("ns", "q", QueueType::Activity).unwrap();
    let mut txn = Txn::default();
    for (id, state, at) in [
        ("a", TaskState::Completed, 100),
        ("b", TaskState::Completed, 100),
        ("c", TaskState::Cancelled, 100),
        ("later", TaskState::Completed, 200),
        ("redriven", TaskState::Pending, 100),
    ] {
        txn.put_task(&q, &record(id, state));
        txn.put_expiry(at, &q, id);
    }
    store.commit(txn).unwrap();
    assert_eq!(
        store
            .expiry
            .range((Bound::Unbounded, Bound::Unbounded))
            .count(),
        2
    );

    assert_eq!(store.purge_expired(150, 10).unwrap(), 3);
    for (id, kept) in [("a", false), ("b", false), ("c", false), ("later", true)] {
        assert_eq!(store.task(&q, id).unwrap().is_some(), kept, "{id}");
    }
    // A record no longer finished when its retention ends is kept.
    assert!(store.task(&q, "redriven").unwrap().is_some());
    assert_eq!(store.purge_expired(250, 10).unwrap(), 1);
    assert_eq!(store.task_count(), 1);
    assert_eq!(
        store
            .expiry
            .range((Bound::Unbounded, Bound::Unbounded))
            .count(),
        0
    );
}
