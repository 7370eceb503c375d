//! What spans a namespace rather than one queue's tasks: the namespaces that hold queues, and
//! the attributes front ends keep per queue (the SQS endpoint's), read straight from the
//! database (they are written through the group commit like everything else).

use super::conn::Pool;
use super::rows::{i64_of, Q};
use crate::error::Result;
use crate::model::QueueKey;

/// The attributes of `queue`, if any.
pub fn attributes(pool: &Pool, queue: &QueueKey) -> Result<Option<String>> {
    let q = Q::of(queue);
    let row = pool.run(move |c| {
        c.query_opt(
            "SELECT attributes FROM tasq_queue_attributes \
             WHERE namespace = $1 AND queue = $2 AND queue_type = $3",
            &[&q.0, &q.1, &q.2],
        )
    })?;
    Ok(row.map(|r| r.get(0)))
}

/// The queues of `namespace` with attributes, after the queue named `after`.
pub fn attributed_queues(
    pool: &Pool,
    namespace: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(QueueKey, String)>> {
    let (ns, after, limit) = (
        namespace.to_string(),
        after.map(str::to_string),
        i64_of(limit as u64),
    );
    let rows = pool.run(move |c| {
        c.query(
            "SELECT namespace, queue, queue_type, attributes FROM tasq_queue_attributes \
             WHERE namespace = $1 AND ($2::text IS NULL OR queue > $2) \
             ORDER BY queue, queue_type LIMIT $3",
            &[&ns, &after, &limit],
        )
    })?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((Q(r.get(0), r.get(1), r.get(2)).key()?, r.get(3))))
        .collect())
}

/// The namespaces that hold queues, in name order, after `after`.
pub fn namespaces(pool: &Pool, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
    let (after, limit) = (after.unwrap_or("").to_string(), i64_of(limit as u64));
    let rows = pool.run(move |c| {
        c.query(
            // A skip scan of the primary key: one index probe per namespace.
            "WITH RECURSIVE ns(namespace) AS ( \
               (SELECT namespace FROM tasq_queues WHERE namespace > $1 \
                ORDER BY namespace LIMIT 1) \
               UNION ALL \
               SELECT (SELECT t.namespace FROM tasq_queues t \
                       WHERE t.namespace > ns.namespace ORDER BY t.namespace LIMIT 1) \
               FROM ns WHERE ns.namespace IS NOT NULL) \
             SELECT namespace FROM ns WHERE namespace IS NOT NULL LIMIT $2",
            &[&after, &limit],
        )
    })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
