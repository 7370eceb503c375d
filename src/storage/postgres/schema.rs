//! The PostgreSQL schema, as numbered migrations applied at start-up in one transaction.
//!
//! `tasq_schema` holds the version applied. A database at a newer version than this binary
//! knows is refused (an older tasq must not write a schema it does not understand). Text
//! columns use the `C` collation, so names sort byte by byte as in the sled store, and every
//! primary key is the order a queue reads in: ready tasks by (priority, fairness pass,
//! sequence), delayed tasks by due time, dead letters by time of death (read backwards),
//! purge schedules and schedule-to-start deadlines by time across queues.
//!
//! Cluster mode (version 2): `tasq_nodes` holds each node's heartbeat (by the database's
//! clock, so the nodes' own clocks do not matter), `tasq_owners` each queue's owner and fence
//! number, and `tasq_check_fences` fails a write (SQLSTATE `TQ001`) for a queue whose fence
//! moved on since the writer took it.
//!
//! Version 3: `tasq_queue_attributes`, the attributes a front end keeps per queue (the SQS
//! endpoint's queue attributes, as JSON text).

use postgres::Client;

use crate::error::{Error, Result};

/// The migrations, in order; the schema's version is how many have been applied.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasq_tasks (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, task_id)
);
CREATE TABLE tasq_payloads (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    payload text NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, task_id)
);
CREATE TABLE tasq_ready (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    priority smallint NOT NULL,
    pass bigint NOT NULL,
    seq bigint NOT NULL,
    entry bytea NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, priority, pass, seq)
);
CREATE TABLE tasq_delayed (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    due bigint NOT NULL,
    seq bigint NOT NULL,
    entry bytea NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, due, seq)
);
CREATE TABLE tasq_in_flight (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, task_id)
);
CREATE TABLE tasq_dead (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    died_at bigint NOT NULL,
    seq bigint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type, died_at, seq)
);
CREATE TABLE tasq_expiry (
    expires_at bigint NOT NULL,
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (expires_at, namespace, queue, queue_type, task_id)
);
CREATE TABLE tasq_waiting (
    deadline bigint NOT NULL,
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    task_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (deadline, namespace, queue, queue_type, task_id)
);
CREATE TABLE tasq_queues (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    ready bigint NOT NULL,
    delayed bigint NOT NULL,
    in_flight bigint NOT NULL,
    dead bigint NOT NULL,
    max_tasks_per_second double precision,
    burst bigint,
    PRIMARY KEY (namespace, queue, queue_type)
);
CREATE INDEX tasq_queues_holding ON tasq_queues (namespace, queue, queue_type)
    WHERE ready + delayed + in_flight + dead > 0;
CREATE SEQUENCE tasq_seq INCREMENT BY 1000;
"#,
    r#"
CREATE TABLE tasq_nodes (
    node_id text COLLATE "C" PRIMARY KEY,
    advertise text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tasq_owners (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    owner text COLLATE "C" NOT NULL,
    fence bigint NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type)
);
CREATE FUNCTION tasq_check_fences(n text[], q text[], k smallint[], f bigint[])
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    held integer;
BEGIN
    -- FOR SHARE: a takeover (an UPDATE of the fence) waits for this write to commit, and a
    -- takeover that committed first is seen here even if it came after the snapshot.
    SELECT count(*) INTO held FROM (
        SELECT 1 FROM tasq_owners o
        JOIN unnest(n, q, k, f) AS x(n, q, k, f)
          ON o.namespace = x.n AND o.queue = x.q AND o.queue_type = x.k
        WHERE o.fence = x.f
        FOR SHARE OF o
    ) s;
    IF held <> cardinality(n) THEN
        RAISE EXCEPTION 'tasq: a queue of this write is owned by another node now'
            USING ERRCODE = 'TQ001';
    END IF;
    RETURN held;
END
$$;
"#,
    r#"
CREATE TABLE tasq_queue_attributes (
    namespace text COLLATE "C" NOT NULL,
    queue text COLLATE "C" NOT NULL,
    queue_type smallint NOT NULL,
    attributes text NOT NULL,
    PRIMARY KEY (namespace, queue, queue_type)
);
"#,
];

/// The schema version this binary writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database to [`VERSION`], in one transaction (a second tasq starting at the same
/// moment waits on an advisory lock, then finds the work done).
pub fn migrate(client: &mut Client) -> Result<()> {
    let failed = |e: postgres::Error| {
        Error::Unavailable(format!(
            "migrating the schema: {}",
            super::conn::describe(&e)
        ))
    };
    let mut tx = client.transaction().map_err(failed)?;
    // Nodes of a cluster start together: one migrates, the others wait on this lock and then
    // find the work done (two `CREATE TABLE IF NOT EXISTS` at once can both try to create).
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7370606);
         CREATE TABLE IF NOT EXISTS tasq_schema (version integer NOT NULL);
         LOCK TABLE tasq_schema IN EXCLUSIVE MODE;",
    )
    .map_err(failed)?;
    let current: i32 = match tx
        .query_opt("SELECT version FROM tasq_schema", &[])
        .map_err(failed)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO tasq_schema (version) VALUES (0)", &[])
                .map_err(failed)?;
            0
        }
    };
    if current > VERSION {
        return Err(Error::Unavailable(format!(
            "the database's tasq schema is version {current}, newer than this tasq knows \
             ({VERSION}); run a tasq at least as new as the one that migrated it"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(sql).map_err(failed)?;
        let version = i as i32 + 1;
        tx.execute("UPDATE tasq_schema SET version = $1", &[&version])
            .map_err(failed)?;
        log::info!("postgres: schema migrated to version {version}");
    }
    tx.commit().map_err(failed)
}
