//! Everything a PostgreSQL store holds, as domain writes (`tasq store copy` out of it).

use postgres::Row;

use super::conn::Pool;
use super::rows::{meta_of, u64_of, Q};
use crate::error::{Error, Result};
use crate::storage::txn::Write;
use crate::storage::{Entry, ReadyPos, Txn};

/// Rows fetched per query.
const PAGE: i64 = 5000;

/// One table: its query (ordered by its key, paged by `OFFSET`) and how a row becomes writes.
struct Table {
    sql: &'static str,
    write: fn(&Row) -> Option<Write>,
}

fn queue(r: &Row, at: usize) -> Option<crate::model::QueueKey> {
    Q(r.get(at), r.get(at + 1), r.get(at + 2)).key()
}

const TABLES: &[Table] = &[
    Table {
        sql: "SELECT namespace, queue, queue_type, attributes FROM tasq_queue_attributes",
        write: |r| Some(Write::Attributes(queue(r, 0)?, Some(r.get(3)))),
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, task_id, record FROM tasq_tasks",
        write: |r| {
            Some(Write::Task {
                queue: queue(r, 0)?,
                task_id: r.get(3),
                record: r.get(4),
            })
        },
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, task_id, payload FROM tasq_payloads",
        write: |r| {
            Some(Write::Payload {
                queue: queue(r, 0)?,
                task_id: r.get(3),
                text: r.get(4),
            })
        },
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, priority, pass, seq, entry FROM tasq_ready",
        write: |r| {
            let pos = ReadyPos {
                priority: u8::try_from(r.get::<_, i16>(3)).ok()?,
                order: u64_of(r.get(4)),
                seq: u64_of(r.get(5)),
            };
            Some(Write::Ready(queue(r, 0)?, pos, Entry::decode(r.get(6))?))
        },
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, due, seq, entry FROM tasq_delayed",
        write: |r| {
            let entry = Entry::decode(r.get(5))?;
            Some(Write::Delayed(
                queue(r, 0)?,
                u64_of(r.get(3)),
                u64_of(r.get(4)),
                entry,
            ))
        },
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, task_id FROM tasq_in_flight",
        write: |r| Some(Write::InFlight(queue(r, 0)?, r.get(3))),
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, died_at, seq, task_id FROM tasq_dead",
        write: |r| {
            Some(Write::Dead(
                queue(r, 0)?,
                u64_of(r.get(3)),
                u64_of(r.get(4)),
                r.get(5),
            ))
        },
    },
    Table {
        sql: "SELECT expires_at, namespace, queue, queue_type, task_id FROM tasq_expiry",
        write: |r| Some(Write::Expiry(u64_of(r.get(0)), queue(r, 1)?, r.get(4))),
    },
    Table {
        sql: "SELECT deadline, namespace, queue, queue_type, task_id FROM tasq_waiting",
        write: |r| Some(Write::Waiting(u64_of(r.get(0)), queue(r, 1)?, r.get(4))),
    },
    Table {
        sql: "SELECT namespace, queue, queue_type, ready, delayed, in_flight, dead, \
              max_tasks_per_second, burst FROM tasq_queues",
        write: |r| Some(Write::Meta(queue(r, 0)?, meta_of(r))),
    },
];

/// Hands every row of every table to `sink` as writes, `batch` at a time.
pub fn run(pool: &Pool, batch: usize, sink: &mut dyn FnMut(Txn) -> Result<()>) -> Result<()> {
    let mut txn = Txn::default();
    for table in TABLES {
        let mut offset = 0i64;
        loop {
            let sql = format!(
                "{} ORDER BY 1, 2, 3, 4 LIMIT {PAGE} OFFSET {offset}",
                table.sql
            );
            let rows = pool.run(move |c| c.query(sql.as_str(), &[]))?;
            let n = rows.len();
            for r in &rows {
                let w = (table.write)(r).ok_or_else(|| {
                    Error::Internal(format!("a row does not decode: {}", table.sql))
                })?;
                txn.push(w);
                if txn.len() >= batch {
                    sink(std::mem::take(&mut txn))?;
                }
            }
            if (n as i64) < PAGE {
                break;
            }
            offset += PAGE;
        }
    }
    if !txn.is_empty() {
        sink(txn)?;
    }
    Ok(())
}
