//! [`Txn`]: the writes of one change, in the store's domain terms (records, index entries,
//! leases, dead letters, expiry, counters), applied atomically by [`super::Store::commit`].
//! A transaction is a list of [`Write`]s; each backend turns the list into its own writes
//! (the sled store into one batch of keys).

use super::{record, Entry, QueueMeta, ReadyPos, PAYLOAD_APART_BYTES};
use crate::model::{QueueKey, TaskRecord};

/// One write of a [`Txn`].
#[derive(Debug, Clone)]
pub enum Write {
    /// Stores a task record, encoded with [`record::encode`] (every backend keeps the same
    /// bytes, so a record reads the same wherever it was written).
    Task {
        /// The queue.
        queue: QueueKey,
        /// The task.
        task_id: String,
        /// The encoded record.
        record: Vec<u8>,
    },
    /// Stores a task's payload apart from its record (see [`PAYLOAD_APART_BYTES`]).
    Payload {
        /// The queue.
        queue: QueueKey,
        /// The task.
        task_id: String,
        /// The payload's JSON text.
        text: String,
    },
    /// Deletes a payload stored apart (a new task of an id whose earlier task had one).
    DeletePayload {
        /// The queue.
        queue: QueueKey,
        /// The task.
        task_id: String,
    },
    /// Deletes a task record and its payload.
    DeleteTask {
        /// The queue.
        queue: QueueKey,
        /// The task.
        task_id: String,
    },
    /// Adds an entry to the ready index.
    Ready(QueueKey, ReadyPos, Entry),
    /// Removes an entry from the ready index.
    DeleteReady(QueueKey, ReadyPos),
    /// Adds an entry to the delayed index, due at `.1`, unique by the sequence `.2`.
    Delayed(QueueKey, u64, u64, Entry),
    /// Removes an entry from the delayed index.
    DeleteDelayed(QueueKey, u64, u64),
    /// Marks a task leased.
    InFlight(QueueKey, String),
    /// Unmarks a leased task.
    DeleteInFlight(QueueKey, String),
    /// Lists a dead letter that died at `.1`, unique by the sequence `.2`.
    Dead(QueueKey, u64, u64, String),
    /// Unlists a dead letter.
    DeleteDead(QueueKey, u64, u64),
    /// Schedules the purge of a finished record at `.0`.
    Expiry(u64, QueueKey, String),
    /// Drops a purge schedule (the purge ran).
    DeleteExpiry(u64, QueueKey, String),
    /// Records a task's schedule-to-start deadline `.0`.
    Waiting(u64, QueueKey, String),
    /// Clears a task's schedule-to-start deadline.
    DeleteWaiting(u64, QueueKey, String),
    /// Stores a queue's counters and settings.
    Meta(QueueKey, QueueMeta),
    /// Stores the attributes a protocol front end keeps for a queue (the SQS endpoint's
    /// queue attributes), as JSON text; `None` deletes them.
    Attributes(QueueKey, Option<String>),
}

impl Write {
    /// The queue it writes.
    pub fn queue(&self) -> &QueueKey {
        match self {
            Write::Task { queue, .. }
            | Write::Payload { queue, .. }
            | Write::DeletePayload { queue, .. }
            | Write::DeleteTask { queue, .. }
            | Write::Ready(queue, ..)
            | Write::DeleteReady(queue, ..)
            | Write::Delayed(queue, ..)
            | Write::DeleteDelayed(queue, ..)
            | Write::InFlight(queue, ..)
            | Write::DeleteInFlight(queue, ..)
            | Write::Dead(queue, ..)
            | Write::DeleteDead(queue, ..)
            | Write::Meta(queue, ..)
            | Write::Attributes(queue, ..) => queue,
            Write::Expiry(_, queue, _)
            | Write::DeleteExpiry(_, queue, _)
            | Write::Waiting(_, queue, _)
            | Write::DeleteWaiting(_, queue, _) => queue,
        }
    }
}

/// Writes to apply atomically with [`super::Store::commit`], in domain terms.
#[derive(Debug, Default)]
pub struct Txn {
    writes: Vec<Write>,
}

impl Txn {
    /// The writes, in the order they were made.
    pub fn into_writes(self) -> Vec<Write> {
        self.writes
    }

    /// True when the transaction writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// How many writes it holds.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Adds a write as it is (a copy of a store replays them).
    pub fn push(&mut self, write: Write) {
        self.writes.push(write);
    }

    /// Stores a task record.
    pub fn put_task(&mut self, queue: &QueueKey, rec: &TaskRecord) {
        self.writes.push(Write::Task {
            queue: queue.clone(),
            task_id: rec.task_id.clone(),
            record: record::encode(rec),
        });
    }

    /// Stores the record of a task just added, its payload apart when it is large: the
    /// record is rewritten on every lease and settle, the payload never.
    pub fn put_new_task(&mut self, queue: &QueueKey, rec: &mut TaskRecord) {
        rec.payload_apart = rec.payload.get().len() > PAYLOAD_APART_BYTES;
        let (q, task_id) = (queue.clone(), rec.task_id.clone());
        self.writes.push(if rec.payload_apart {
            let text = rec.payload.get().to_string();
            Write::Payload {
                queue: q,
                task_id,
                text,
            }
        } else {
            // A payload left apart by an earlier task of this id is not this task's.
            Write::DeletePayload { queue: q, task_id }
        });
        self.put_task(queue, rec);
    }

    /// Deletes a task record and its payload.
    pub fn delete_task(&mut self, queue: &QueueKey, task_id: &str) {
        self.writes.push(Write::DeleteTask {
            queue: queue.clone(),
            task_id: task_id.to_string(),
        });
    }

    /// Adds a ready index entry.
    pub fn put_ready(&mut self, queue: &QueueKey, pos: ReadyPos, entry: &Entry) {
        self.writes
            .push(Write::Ready(queue.clone(), pos, entry.clone()));
    }

    /// Removes a ready index entry.
    pub fn del_ready(&mut self, queue: &QueueKey, pos: ReadyPos) {
        self.writes.push(Write::DeleteReady(queue.clone(), pos));
    }

    /// Adds a delayed index entry.
    pub fn put_delayed(&mut self, queue: &QueueKey, due: u64, seq: u64, entry: &Entry) {
        self.writes
            .push(Write::Delayed(queue.clone(), due, seq, entry.clone()));
    }

    /// Removes a delayed index entry.
    pub fn del_delayed(&mut self, queue: &QueueKey, due: u64, seq: u64) {
        self.writes
            .push(Write::DeleteDelayed(queue.clone(), due, seq));
    }

    /// Marks a task leased.
    pub fn put_inflight(&mut self, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::InFlight(queue.clone(), task_id.to_string()));
    }

    /// Unmarks a leased task.
    pub fn del_inflight(&mut self, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::DeleteInFlight(queue.clone(), task_id.to_string()));
    }

    /// Lists a dead letter.
    pub fn put_dead(&mut self, queue: &QueueKey, at: u64, seq: u64, task_id: &str) {
        self.writes
            .push(Write::Dead(queue.clone(), at, seq, task_id.to_string()));
    }

    /// Unlists a dead letter.
    pub fn del_dead(&mut self, queue: &QueueKey, at: u64, seq: u64) {
        self.writes.push(Write::DeleteDead(queue.clone(), at, seq));
    }

    /// Schedules the purge of a finished record.
    pub fn put_expiry(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::Expiry(at, queue.clone(), task_id.to_string()));
    }

    /// Drops the purge schedule of a record (the purge ran).
    pub fn del_expiry(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::DeleteExpiry(at, queue.clone(), task_id.to_string()));
    }

    /// Records a task's schedule-to-start deadline.
    pub fn put_waiting(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::Waiting(at, queue.clone(), task_id.to_string()));
    }

    /// Clears a task's schedule-to-start deadline.
    pub fn del_waiting(&mut self, at: u64, queue: &QueueKey, task_id: &str) {
        self.writes
            .push(Write::DeleteWaiting(at, queue.clone(), task_id.to_string()));
    }

    /// Stores a queue's counters.
    pub fn put_meta(&mut self, queue: &QueueKey, meta: &QueueMeta) {
        self.writes.push(Write::Meta(queue.clone(), *meta));
    }
}
