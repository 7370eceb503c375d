//! Reading task records from the database: many at once (kept in memory for the next reads),
//! and a record decoded with its payload put back when it is kept apart.

use super::pending::PendingTask;
use super::rows::Q;
use super::{record, PgStore};
use crate::error::{Error, Result};
use crate::model::{QueueKey, TaskRecord};

impl PgStore {
    /// The records of `ids` (those that exist) from the database, in one query; kept in
    /// memory for the next reads (see [`recent`]).
    pub(super) fn fetch(
        &self,
        queue: &QueueKey,
        ids: Vec<String>,
    ) -> Result<Vec<(String, PendingTask)>> {
        let since = self.pending.read_stamp();
        let q = Q::of(queue);
        let rows = self.pool.run(move |c| {
            c.query(
                // A join with the ids (not `= ANY`): the prepared statement's generic plan
                // then looks each id up by the primary key instead of scanning the table.
                "SELECT t.task_id, t.record, p.payload FROM unnest($4::text[]) AS i(task_id) \
                 JOIN tasq_tasks t ON t.namespace = $1 AND t.queue = $2 AND t.queue_type = $3 \
                 AND t.task_id = i.task_id \
                 LEFT JOIN tasq_payloads p ON p.namespace = t.namespace AND p.queue = t.queue \
                 AND p.queue_type = t.queue_type AND p.task_id = t.task_id",
                &[&q.0, &q.1, &q.2, &ids],
            )
        })?;
        let read: Vec<(String, PendingTask)> = rows
            .into_iter()
            .map(|r| {
                let task = PendingTask {
                    record: Some(r.get(1)),
                    payload: r.get(2),
                };
                (r.get(0), task)
            })
            .collect();
        self.pending.keep_read(queue, read.clone(), since);
        Ok(read)
    }

    /// The record a write or a read left (`None`: deleted), decoded, its payload put back
    /// when it is kept apart (read from the database when it is not at hand).
    pub(super) fn record_of(
        &self,
        queue: &QueueKey,
        task_id: &str,
        known: PendingTask,
    ) -> Result<Option<TaskRecord>> {
        let Some(raw) = known.record else {
            return Ok(None);
        };
        let mut rec = record::decode(&raw)
            .map_err(|e| Error::Internal(format!("corrupt task record {queue}/{task_id}: {e}")))?;
        if rec.payload_apart {
            let text = match known.payload {
                Some(text) => Some(text),
                None => self.stored_payload(queue, task_id)?,
            };
            let text = text.ok_or_else(|| {
                Error::Internal(format!("the payload of {queue}/{task_id} is missing"))
            })?;
            rec.payload = serde_json::value::RawValue::from_string(text).map_err(|_| {
                Error::Internal(format!("the payload of {queue}/{task_id} is damaged"))
            })?;
        }
        Ok(Some(rec))
    }

    /// The payload kept apart of a record, from the database.
    pub(super) fn stored_payload(&self, queue: &QueueKey, task_id: &str) -> Result<Option<String>> {
        let (q, id) = (Q::of(queue), task_id.to_string());
        self.pool.run(move |c| {
            let row = c.query_opt(
                "SELECT payload FROM tasq_payloads \
                 WHERE namespace = $1 AND queue = $2 AND queue_type = $3 AND task_id = $4",
                &[&q.0, &q.1, &q.2, &id],
            )?;
            Ok(row.map(|r| r.get(0)))
        })
    }
}
