//! Criterion micro-benchmarks of the storage key encoding and the lease token: what every add,
//! dispatch and settle pays before sled sees a byte.
//!
//! Measured, each on a realistic queue (`acme-prod` / `send-email`, activity) and a UUID task id:
//! - `keys/queue_prefix`, `keys/task_key`: the prefix of every per-queue key, and the key of a
//!   task record (and of its in-flight marker);
//! - `keys/ready_key`, `keys/ready_decode`: a ready-index position, written on add and decoded
//!   for every entry a backlog refill scans;
//! - `keys/delayed_key`, `keys/delayed_decode`: the delayed index;
//! - `keys/expiry_key`, `keys/expiry_decode`: the global purge index (decoding splits the queue);
//! - `keys/entry_encode`, `keys/entry_decode` (plain and routed): the ready/delayed index value;
//! - `keys/txn_put_ready`: all of the above that one ready write does, into a `Txn` (sled batch);
//! - `lease_token/encode`, `lease_token/decode`: the token given with each dispatched task and
//!   parsed back on every heartbeat, complete and fail;
//! - `record/encode`, `record/decode`: a running task's record (200-byte payload) in its stored
//!   binary form, written on every add, lease and settle and read on every lease and settle;
//!   `record/json_encode`, `record/json_decode`: the same record as JSON, the form before.
//!
//! Run: `cargo bench --bench keys` (a short run: `cargo bench --bench keys -- --warm-up-time 1
//! --measurement-time 3`; one group: `cargo bench --bench keys -- lease_token`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tasq::model::{ActiveLease, LeaseToken, TaskRecord, TaskSpec, TaskState};
use tasq::storage::sled_store::keys::{
    decode_delayed, decode_expiry, delayed_key, expiry_key, queue_prefix, task_key,
};
use tasq::storage::{record, Entry, EntryRoute, ReadyPos, Txn};
use tasq::{QueueKey, QueueType};

/// A task id as the server makes them (UUID v4, 36 characters).
const TASK_ID: &str = "3f2b8c1e-9d4a-4b7e-8f1c-2a6d5e9b0c47";

fn queue() -> QueueKey {
    QueueKey::new("acme-prod", "send-email", QueueType::Activity).unwrap()
}

fn pos() -> ReadyPos {
    ReadyPos {
        priority: 3,
        order: 1_750_000_000_000,
        seq: 123_456_789,
    }
}

fn entry(routed: bool) -> Entry {
    Entry {
        priority: 3,
        task_type: "welcome-email".into(),
        task_id: TASK_ID.into(),
        ready_at: 1_750_000_000_000,
        route: routed.then(|| {
            Box::new(EntryRoute {
                identity: "worker-7@host-3".into(),
                fallback_at: Some(1_750_000_030_000),
            })
        }),
        serial_key: None,
    }
}

fn keys(c: &mut Criterion) {
    let q = queue();
    let prefix_len = queue_prefix(&q).len();
    let mut g = c.benchmark_group("keys");

    g.bench_function("queue_prefix", |b| b.iter(|| queue_prefix(black_box(&q))));
    g.bench_function("task_key", |b| {
        b.iter(|| task_key(black_box(&q), black_box(TASK_ID)))
    });

    let p = pos();
    g.bench_function("ready_key", |b| b.iter(|| black_box(p).key(black_box(&q))));
    let ready = p.key(&q);
    g.bench_function("ready_decode", |b| {
        b.iter(|| ReadyPos::decode(black_box(&ready[prefix_len..])))
    });

    g.bench_function("delayed_key", |b| {
        b.iter(|| delayed_key(black_box(&q), black_box(1_750_000_000_000), black_box(42)))
    });
    let delayed = delayed_key(&q, 1_750_000_000_000, 42);
    g.bench_function("delayed_decode", |b| {
        b.iter(|| decode_delayed(black_box(&delayed[prefix_len..])))
    });

    g.bench_function("expiry_key", |b| {
        b.iter(|| {
            expiry_key(
                black_box(1_750_000_000_000),
                black_box(&q),
                black_box(TASK_ID),
            )
        })
    });
    let expiry = expiry_key(1_750_000_000_000, &q, TASK_ID);
    g.bench_function("expiry_decode", |b| {
        b.iter(|| decode_expiry(black_box(&expiry)))
    });

    for (name, routed) in [("plain", false), ("routed", true)] {
        let e = entry(routed);
        g.bench_function(format!("entry_encode/{name}"), |b| {
            b.iter(|| black_box(&e).encode())
        });
        let raw = e.encode();
        g.bench_function(format!("entry_decode/{name}"), |b| {
            b.iter(|| Entry::decode(black_box(&raw)))
        });
    }

    let e = entry(false);
    g.bench_function("txn_put_ready", |b| {
        b.iter(|| {
            let mut txn = Txn::default();
            txn.put_ready(black_box(&q), black_box(p), black_box(&e));
            txn
        })
    });
    g.finish();
}

fn lease_token(c: &mut Criterion) {
    let token = LeaseToken {
        queue: queue(),
        task_id: TASK_ID.into(),
        lease_id: 0x1234_5678_9abc_def0,
    };
    let encoded = token.encode();
    assert_eq!(LeaseToken::decode(&encoded).unwrap(), token);
    let mut g = c.benchmark_group("lease_token");
    g.bench_function("encode", |b| b.iter(|| black_box(&token).encode()));
    g.bench_function("decode", |b| {
        b.iter(|| LeaseToken::decode(black_box(&encoded)).unwrap())
    });
    g.finish();
}

/// A running task as `tasq bench` adds them: 200-byte JSON payload, defaults otherwise.
fn running_record() -> TaskRecord {
    let payload = format!(r#"{{"data": "{}"}}"#, "x".repeat(188));
    let req: TaskSpec = serde_json::from_str(&format!(
        r#"{{"task_type": "bench", "task_id": "{TASK_ID}", "payload": {payload}}}"#
    ))
    .unwrap();
    let mut rec = TaskRecord::new(&req.validate().unwrap(), 1_750_000_000_000, 123_456_789);
    rec.state = TaskState::Running;
    rec.attempt = 1;
    rec.lease = Some(ActiveLease {
        id: 0x1234_5678_9abc_def0,
        identity: "worker-1".into(),
        dispatched_at: 1_750_000_000_100,
        close_deadline: 1_750_000_300_100,
        heartbeat_deadline: None,
        order: 1_750_000_000_000,
        ready_at: 1_750_000_000_000,
    });
    rec
}

fn records(c: &mut Criterion) {
    let rec = running_record();
    let raw = record::encode(&rec);
    let json = serde_json::to_vec(&rec).unwrap();
    let mut g = c.benchmark_group("record");
    g.bench_function("encode", |b| b.iter(|| record::encode(black_box(&rec))));
    g.bench_function("decode", |b| {
        b.iter(|| record::decode(black_box(&raw)).unwrap())
    });
    g.bench_function("json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&rec)).unwrap())
    });
    g.bench_function("json_decode", |b| {
        b.iter(|| record::decode(black_box(&json)).unwrap())
    });
    g.finish();
    eprintln!(
        "record: {} bytes stored, {} bytes as JSON",
        raw.len(),
        json.len()
    );
}

criterion_group!(benches, keys, lease_token, records);
criterion_main!(benches);
