//! One group commit on PostgreSQL: the transactions taken from [`super::pending`], reduced to
//! the last write of each row, written by one statement (an insert or a delete of arrays,
//! `unnest`ed, per table and kind, each a part of the statement) that commits by itself.

use std::collections::HashMap;

use postgres::types::ToSql;

use super::rows::{i64_of, Q};
use super::Session;
use crate::model::QueueKey;
use crate::storage::txn::Write;
use crate::storage::QueueMeta;

/// The last write of every row that the transactions touch (`None`: deleted).
#[derive(Default)]
pub struct Rows {
    tasks: HashMap<(Q, String), Option<Vec<u8>>>,
    payloads: HashMap<(Q, String), Option<String>>,
    ready: HashMap<(Q, i16, i64, i64), Option<Vec<u8>>>,
    delayed: HashMap<(Q, i64, i64), Option<Vec<u8>>>,
    in_flight: HashMap<(Q, String), bool>,
    dead: HashMap<(Q, i64, i64), Option<String>>,
    expiry: HashMap<(i64, Q, String), bool>,
    waiting: HashMap<(i64, Q, String), bool>,
    queues: HashMap<Q, QueueMeta>,
    attributes: HashMap<Q, Option<String>>,
}

impl Rows {
    /// The rows of `txns`, later writes over earlier ones.
    pub fn of<'a>(txns: impl IntoIterator<Item = &'a Vec<Write>>) -> Rows {
        let mut r = Rows::default();
        let q = |k: &QueueKey| Q::of(k);
        for w in txns.into_iter().flatten() {
            match w {
                Write::Task {
                    queue,
                    task_id,
                    record,
                } => {
                    r.tasks
                        .insert((q(queue), task_id.clone()), Some(record.clone()));
                }
                Write::Payload {
                    queue,
                    task_id,
                    text,
                } => {
                    r.payloads
                        .insert((q(queue), task_id.clone()), Some(text.clone()));
                }
                Write::DeletePayload { queue, task_id } => {
                    r.payloads.insert((q(queue), task_id.clone()), None);
                }
                Write::DeleteTask { queue, task_id } => {
                    r.tasks.insert((q(queue), task_id.clone()), None);
                    r.payloads.insert((q(queue), task_id.clone()), None);
                }
                Write::Ready(queue, pos, entry) => {
                    let key = (
                        q(queue),
                        pos.priority as i16,
                        i64_of(pos.order),
                        i64_of(pos.seq),
                    );
                    r.ready.insert(key, Some(entry.encode()));
                }
                Write::DeleteReady(queue, pos) => {
                    let key = (
                        q(queue),
                        pos.priority as i16,
                        i64_of(pos.order),
                        i64_of(pos.seq),
                    );
                    r.ready.insert(key, None);
                }
                Write::Delayed(queue, due, seq, entry) => {
                    let key = (q(queue), i64_of(*due), i64_of(*seq));
                    r.delayed.insert(key, Some(entry.encode()));
                }
                Write::DeleteDelayed(queue, due, seq) => {
                    r.delayed
                        .insert((q(queue), i64_of(*due), i64_of(*seq)), None);
                }
                Write::InFlight(queue, task_id) => {
                    r.in_flight.insert((q(queue), task_id.clone()), true);
                }
                Write::DeleteInFlight(queue, task_id) => {
                    r.in_flight.insert((q(queue), task_id.clone()), false);
                }
                Write::Dead(queue, at, seq, task_id) => {
                    let key = (q(queue), i64_of(*at), i64_of(*seq));
                    r.dead.insert(key, Some(task_id.clone()));
                }
                Write::DeleteDead(queue, at, seq) => {
                    r.dead.insert((q(queue), i64_of(*at), i64_of(*seq)), None);
                }
                Write::Expiry(at, queue, task_id) => {
                    r.expiry
                        .insert((i64_of(*at), q(queue), task_id.clone()), true);
                }
                Write::DeleteExpiry(at, queue, task_id) => {
                    r.expiry
                        .insert((i64_of(*at), q(queue), task_id.clone()), false);
                }
                Write::Waiting(at, queue, task_id) => {
                    r.waiting
                        .insert((i64_of(*at), q(queue), task_id.clone()), true);
                }
                Write::DeleteWaiting(at, queue, task_id) => {
                    r.waiting
                        .insert((i64_of(*at), q(queue), task_id.clone()), false);
                }
                Write::Meta(queue, meta) => {
                    r.queues.insert(q(queue), *meta);
                }
                Write::Attributes(queue, text) => {
                    r.attributes.insert(q(queue), text.clone());
                }
            }
        }
        r
    }

    /// Writes the rows and commits them with one statement, one round trip: each table and
    /// kind that has rows is a data-modifying `WITH` part of it, and a statement outside a
    /// transaction block commits by itself (its answer comes once `COMMIT` is done). The
    /// parts touch different rows (one write per row), so running them on one snapshot is
    /// the same as running them in turn. A mix of parts is prepared once per connection.
    ///
    /// With `fences` (cluster mode: each queue written and the fence this node holds it
    /// with), the statement first checks them all (`tasq_check_fences`); `Ok(false)` when one
    /// moved on, and nothing was written.
    pub fn write(
        self,
        session: &mut Session,
        fences: &[(Q, i64)],
    ) -> Result<bool, postgres::Error> {
        let mut parts: Vec<(String, Columns)> = Vec::new();
        if !fences.is_empty() {
            let mut c = Columns::default();
            for (queue, fence) in fences {
                c.row().queue(queue).int(*fence);
            }
            let check = "SELECT tasq_check_fences($1::text[], $2::text[], $3::int2[], \
                         $4::int8[]) AS held";
            parts.push((check.to_string(), c));
        }
        parts.extend(
            self.statements()
                .into_iter()
                .filter(|(_, cols)| cols.rows > 0),
        );
        let sql = match parts.as_slice() {
            [] => return Ok(true),
            [(sql, _)] if fences.is_empty() => sql.clone(),
            _ => {
                let mut sql = String::from("WITH ");
                let mut offset = 0;
                for (i, (part, cols)) in parts.iter().enumerate() {
                    if i > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("w{i} AS ({})", renumber(part, offset)));
                    offset += cols.cols.len();
                }
                // The check is read by the statement itself, so it runs (a part nothing
                // reads would not) and its error undoes the whole statement.
                sql.push_str(if fences.is_empty() {
                    " SELECT 1"
                } else {
                    " SELECT held FROM w0"
                });
                sql
            }
        };
        let st = session.prepare(&sql)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            parts.iter().flat_map(|(_, cols)| cols.params()).collect();
        match session.client().execute(&st, &params) {
            Ok(_) => Ok(true),
            Err(e) if e.code().map(|c| c.code()) == Some(super::cluster::FENCE_REJECTED) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Each statement to run and its parameters.
    fn statements(self) -> Vec<(String, Columns)> {
        let mut work = Vec::new();
        let (put, del) = split(self.tasks);
        let mut c = Columns::default();
        for ((queue, id), record) in put {
            c.row().queue(&queue).text(id).bytes(record);
        }
        work.push(("INSERT INTO tasq_tasks SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::bytea[]) ON CONFLICT (namespace, queue, queue_type, task_id) DO UPDATE SET record = EXCLUDED.record".to_string(), c));
        let mut c = Columns::default();
        for (queue, id) in del {
            c.row().queue(&queue).text(id);
        }
        work.push(("DELETE FROM tasq_tasks t USING unnest($1::text[], $2::text[], $3::int2[], $4::text[]) AS d(n, q, k, id) WHERE (t.namespace, t.queue, t.queue_type, t.task_id) = (d.n, d.q, d.k, d.id)".to_string(), c));

        let (put, del) = split(self.payloads);
        let mut c = Columns::default();
        for ((queue, id), text) in put {
            c.row().queue(&queue).text(id).text(text);
        }
        work.push(("INSERT INTO tasq_payloads SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[], $5::text[]) ON CONFLICT (namespace, queue, queue_type, task_id) DO UPDATE SET payload = EXCLUDED.payload".to_string(), c));
        let mut c = Columns::default();
        for (queue, id) in del {
            c.row().queue(&queue).text(id);
        }
        work.push(("DELETE FROM tasq_payloads t USING unnest($1::text[], $2::text[], $3::int2[], $4::text[]) AS d(n, q, k, id) WHERE (t.namespace, t.queue, t.queue_type, t.task_id) = (d.n, d.q, d.k, d.id)".to_string(), c));

        let (put, del) = split(self.ready);
        let mut c = Columns::default();
        for ((queue, priority, pass, seq), entry) in put {
            c.row()
                .queue(&queue)
                .small(priority)
                .int(pass)
                .int(seq)
                .bytes(entry);
        }
        work.push(("INSERT INTO tasq_ready SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int2[], $5::int8[], $6::int8[], $7::bytea[]) ON CONFLICT (namespace, queue, queue_type, priority, pass, seq) DO UPDATE SET entry = EXCLUDED.entry".to_string(), c));
        let mut c = Columns::default();
        for (queue, priority, pass, seq) in del {
            c.row().queue(&queue).small(priority).int(pass).int(seq);
        }
        work.push(("DELETE FROM tasq_ready t USING unnest($1::text[], $2::text[], $3::int2[], $4::int2[], $5::int8[], $6::int8[]) AS d(n, q, k, p, o, s) WHERE (t.namespace, t.queue, t.queue_type, t.priority, t.pass, t.seq) = (d.n, d.q, d.k, d.p, d.o, d.s)".to_string(), c));

        let (put, del) = split(self.delayed);
        let mut c = Columns::default();
        for ((queue, due, seq), entry) in put {
            c.row().queue(&queue).int(due).int(seq).bytes(entry);
        }
        work.push(("INSERT INTO tasq_delayed SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[], $6::bytea[]) ON CONFLICT (namespace, queue, queue_type, due, seq) DO UPDATE SET entry = EXCLUDED.entry".to_string(), c));
        let mut c = Columns::default();
        for (queue, due, seq) in del {
            c.row().queue(&queue).int(due).int(seq);
        }
        work.push(("DELETE FROM tasq_delayed t USING unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[]) AS d(n, q, k, due, s) WHERE (t.namespace, t.queue, t.queue_type, t.due, t.seq) = (d.n, d.q, d.k, d.due, d.s)".to_string(), c));

        let (put, del) = split_flags(self.in_flight);
        let mut c = Columns::default();
        for (queue, id) in put {
            c.row().queue(&queue).text(id);
        }
        work.push(("INSERT INTO tasq_in_flight SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[]) ON CONFLICT DO NOTHING".to_string(), c));
        let mut c = Columns::default();
        for (queue, id) in del {
            c.row().queue(&queue).text(id);
        }
        work.push(("DELETE FROM tasq_in_flight t USING unnest($1::text[], $2::text[], $3::int2[], $4::text[]) AS d(n, q, k, id) WHERE (t.namespace, t.queue, t.queue_type, t.task_id) = (d.n, d.q, d.k, d.id)".to_string(), c));

        let (put, del) = split(self.dead);
        let mut c = Columns::default();
        for ((queue, at, seq), id) in put {
            c.row().queue(&queue).int(at).int(seq).text(id);
        }
        work.push(("INSERT INTO tasq_dead SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[], $6::text[]) ON CONFLICT (namespace, queue, queue_type, died_at, seq) DO UPDATE SET task_id = EXCLUDED.task_id".to_string(), c));
        let mut c = Columns::default();
        for (queue, at, seq) in del {
            c.row().queue(&queue).int(at).int(seq);
        }
        work.push(("DELETE FROM tasq_dead t USING unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[]) AS d(n, q, k, a, s) WHERE (t.namespace, t.queue, t.queue_type, t.died_at, t.seq) = (d.n, d.q, d.k, d.a, d.s)".to_string(), c));

        for (table, rows) in [("tasq_expiry", self.expiry), ("tasq_waiting", self.waiting)] {
            let (put, del) = split_flags(rows);
            let mut c = Columns::default();
            for (at, queue, id) in put {
                c.row().int(at).queue(&queue).text(id);
            }
            work.push((format!("INSERT INTO {table} SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[]) ON CONFLICT DO NOTHING"), c));
            let mut c = Columns::default();
            for (at, queue, id) in del {
                c.row().int(at).queue(&queue).text(id);
            }
            work.push((format!("DELETE FROM {table} t USING unnest($1::int8[], $2::text[], $3::text[], $4::int2[], $5::text[]) AS d(a, n, q, k, id) WHERE (t.{}, t.namespace, t.queue, t.queue_type, t.task_id) = (d.a, d.n, d.q, d.k, d.id)", if table == "tasq_expiry" { "expires_at" } else { "deadline" }), c));
        }

        let (put, del) = split(self.attributes);
        let mut c = Columns::default();
        for (queue, text) in put {
            c.row().queue(&queue).text(text);
        }
        work.push(("INSERT INTO tasq_queue_attributes SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::text[]) ON CONFLICT (namespace, queue, queue_type) DO UPDATE SET attributes = EXCLUDED.attributes".to_string(), c));
        let mut c = Columns::default();
        for queue in del {
            c.row().queue(&queue);
        }
        work.push(("DELETE FROM tasq_queue_attributes t USING unnest($1::text[], $2::text[], $3::int2[]) AS d(n, q, k) WHERE (t.namespace, t.queue, t.queue_type) = (d.n, d.q, d.k)".to_string(), c));

        let mut c = Columns::default();
        for (queue, m) in self.queues {
            c.row()
                .queue(&queue)
                .int(i64_of(m.ready))
                .int(i64_of(m.delayed))
                .int(i64_of(m.in_flight))
                .int(i64_of(m.dead))
                .float(m.rate_limit.map(|r| r.max_tasks_per_second))
                .opt_int(m.rate_limit.map(|r| i64::from(r.burst)));
        }
        work.push(("INSERT INTO tasq_queues SELECT * FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::float8[], $9::int8[]) ON CONFLICT (namespace, queue, queue_type) DO UPDATE SET ready = EXCLUDED.ready, delayed = EXCLUDED.delayed, in_flight = EXCLUDED.in_flight, dead = EXCLUDED.dead, max_tasks_per_second = EXCLUDED.max_tasks_per_second, burst = EXCLUDED.burst".to_string(), c));
        work
    }
}

/// Rows written (with their value) and rows deleted.
fn split<K, V>(rows: HashMap<K, Option<V>>) -> (Vec<(K, V)>, Vec<K>) {
    let mut put = Vec::new();
    let mut del = Vec::new();
    for (k, v) in rows {
        match v {
            Some(v) => put.push((k, v)),
            None => del.push(k),
        }
    }
    (put, del)
}

/// Rows present and rows deleted, of a table that holds only keys.
fn split_flags<K>(rows: HashMap<K, bool>) -> (Vec<K>, Vec<K>) {
    let (put, del): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, p)| *p);
    (
        put.into_iter().map(|(k, _)| k).collect(),
        del.into_iter().map(|(k, _)| k).collect(),
    )
}

/// The parameters of one statement: one array per column, in column order.
#[derive(Default)]
struct Columns {
    cols: Vec<Column>,
    /// The column the next value goes to (values are added row by row).
    at: usize,
    rows: usize,
}

enum Column {
    Text(Vec<String>),
    Small(Vec<i16>),
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Bytes(Vec<Vec<u8>>),
}

impl Columns {
    /// Starts a row: the values added next go to the columns from the first on.
    fn row(&mut self) -> &mut Self {
        self.at = 0;
        self.rows += 1;
        self
    }

    fn next(&mut self, make: impl FnOnce() -> Column) -> &mut Column {
        if self.cols.len() == self.at {
            self.cols.push(make());
        }
        let i = self.at;
        self.at += 1;
        &mut self.cols[i]
    }

    /// The three columns of a queue's key.
    fn queue(&mut self, q: &Q) -> &mut Self {
        self.text(q.0.clone()).text(q.1.clone()).small(q.2)
    }

    fn text(&mut self, v: String) -> &mut Self {
        if let Column::Text(c) = self.next(|| Column::Text(Vec::new())) {
            c.push(v);
        }
        self
    }

    fn small(&mut self, v: i16) -> &mut Self {
        if let Column::Small(c) = self.next(|| Column::Small(Vec::new())) {
            c.push(v);
        }
        self
    }

    fn int(&mut self, v: i64) -> &mut Self {
        if let Column::Int(c) = self.next(|| Column::Int(Vec::new())) {
            c.push(v);
        }
        self
    }

    fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        if let Column::OptInt(c) = self.next(|| Column::OptInt(Vec::new())) {
            c.push(v);
        }
        self
    }

    fn float(&mut self, v: Option<f64>) -> &mut Self {
        if let Column::Float(c) = self.next(|| Column::Float(Vec::new())) {
            c.push(v);
        }
        self
    }

    fn bytes(&mut self, v: Vec<u8>) -> &mut Self {
        if let Column::Bytes(c) = self.next(|| Column::Bytes(Vec::new())) {
            c.push(v);
        }
        self
    }

    /// One parameter per column, in order.
    fn params(&self) -> impl Iterator<Item = &(dyn ToSql + Sync)> + '_ {
        self.cols.iter().map(|c| -> &(dyn ToSql + Sync) {
            match c {
                Column::Text(v) => v,
                Column::Small(v) => v,
                Column::Int(v) => v,
                Column::OptInt(v) => v,
                Column::Float(v) => v,
                Column::Bytes(v) => v,
            }
        })
    }
}

/// `sql` with its parameters `$n` numbered from `offset + 1` on (a part of a larger statement).
fn renumber(sql: &str, offset: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = 0usize;
        let mut digits = false;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + d as usize;
            digits = true;
            chars.next();
        }
        if digits {
            out.push_str(&(n + offset).to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::renumber;

    #[test]
    fn renumber_shifts_every_parameter() {
        assert_eq!(
            renumber("unnest($1::text[], $2::int8[]) WHERE x = $10", 7),
            "unnest($8::text[], $9::int8[]) WHERE x = $17"
        );
        assert_eq!(renumber("no parameters", 3), "no parameters");
    }
}
