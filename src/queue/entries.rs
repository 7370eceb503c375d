//! The queue's rules for what goes in the indexes: the entry of a ready task, a leased task
//! put back in its place, and the recovery at start of every task that was leased when the
//! server stopped.

use std::collections::HashMap;

use crate::error::Result;
use crate::model::{QueueKey, Queued, TaskRecord, TaskState};
use crate::storage::{Entry, EntryRoute, QueueMeta, ReadyPos, Store, Txn};

/// The index entry of a pending record that became ready at `ready_at`.
pub fn entry_of(rec: &TaskRecord, ready_at: u64) -> Entry {
    Entry {
        priority: rec.priority,
        task_type: rec.task_type.as_str().into(),
        task_id: rec.task_id.as_str().into(),
        ready_at,
        route: rec.route_to.as_ref().map(|r| {
            Box::new(EntryRoute {
                identity: r.identity.clone(),
                fallback_at: r.fallback_after_ms.map(|f| ready_at.saturating_add(f)),
            })
        }),
        serial_key: serial_key(rec),
    }
}

/// The serial key of a serial task: its fairness key, `""` without one.
pub fn serial_key(rec: &TaskRecord) -> Option<Box<str>> {
    rec.serial
        .then(|| rec.fairness_key.as_deref().unwrap_or_default().into())
}

/// Makes a leased record pending again (crash recovery, a poller that never received it) at
/// the place its lease kept in the ready order and with the backlog age it had; answers its
/// position and entry in the ready index. A record without a lease goes back as of its last
/// update.
pub fn requeue_leased(rec: &mut TaskRecord) -> (ReadyPos, Entry) {
    let (order, ready_at) = rec
        .lease
        .as_ref()
        .map_or((rec.updated_at, rec.updated_at), |l| {
            (l.order, l.ready_since())
        });
    rec.state = TaskState::Pending;
    rec.lease = None;
    rec.queued = Some(Queued::Ready { order });
    let pos = ReadyPos {
        priority: rec.priority,
        order,
        seq: rec.seq,
    };
    (pos, entry_of(rec, ready_at))
}

/// Puts every task that was leased when the server stopped back in its queue's ready index
/// (the attempt it was on stays counted), before any queue actor starts; answers how many.
pub fn requeue_in_flight(store: &dyn Store) -> Result<usize> {
    let mut metas: HashMap<QueueKey, QueueMeta> = HashMap::new();
    let mut txn = Txn::default();
    let mut n = 0;
    for (queue, task_id) in store.leased_tasks()? {
        txn.del_inflight(&queue, &task_id);
        let meta = match metas.get_mut(&queue) {
            Some(m) => m,
            None => {
                let m = store.meta(&queue)?.unwrap_or_default();
                metas.entry(queue.clone()).or_insert(m)
            }
        };
        meta.in_flight = meta.in_flight.saturating_sub(1);
        let Some(mut rec) = store.task(&queue, &task_id)? else {
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
        txn.put_meta(queue, meta);
    }
    store.commit(txn)?;
    store.flush()?;
    Ok(n)
}
