//! What a cluster keeps in the database: the nodes and their heartbeats, and which node owns
//! each queue, fenced.
//!
//! A node takes a queue by bumping the queue's fence number in `tasq_owners`. In cluster mode
//! (`PgOptions::node`) every group commit checks, in the same statement, that each queue it
//! writes still has the fence this node took it with (`tasq_check_fences`, under a share
//! lock, so a takeover and a write are ordered one way or the other). A queue whose fence
//! moved on is lost: its writes are dropped, the rest of the commit goes ahead, and the
//! waiters of the dropped writes are answered 503 (see [`Fences::lost_after`]).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use super::rows::Q;
use super::PgStore;
use crate::error::{Error, Result};
use crate::model::QueueKey;

/// The SQLSTATE `tasq_check_fences` raises.
pub const FENCE_REJECTED: &str = "TQ001";

/// The queues this node holds, with their fence numbers, and those it lost.
#[derive(Default)]
pub struct Fences {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Queues held: the fence, and whether it is being handed over (no new writes).
    held: HashMap<QueueKey, (i64, bool)>,
    /// Lost queues, with the number of the first of their writes that did not commit.
    lost: HashMap<QueueKey, u64>,
}

impl Fences {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node took `queue` with `fence`.
    pub fn hold(&self, queue: &QueueKey, fence: i64) {
        let mut inner = self.lock();
        inner.lost.remove(queue);
        inner.held.insert(queue.clone(), (fence, false));
    }

    /// `Ok` when this node holds `queue` and takes writes for it; else the 503 they answer.
    pub fn check(&self, queue: &QueueKey) -> Result<()> {
        match self.lock().held.get(queue) {
            Some((_, false)) => Ok(()),
            _ => Err(not_owner(queue)),
        }
    }

    /// The fence `queue` is held with, if held.
    pub fn fence_of(&self, queue: &QueueKey) -> Option<i64> {
        self.lock().held.get(queue).map(|(f, _)| *f)
    }

    /// Forgets the hold on `queue` taken with `fence` (its actor stopped and its writes are
    /// committed); a hold taken again since (another fence) stays.
    pub fn unhold(&self, queue: &QueueKey, fence: i64) {
        let mut inner = self.lock();
        if inner.held.get(queue).is_some_and(|(f, _)| *f == fence) {
            inner.held.remove(queue);
        }
    }

    /// Takes no new writes for `queue`; those taken still commit under its fence.
    pub fn hand_over(&self, queue: &QueueKey) {
        if let Some((_, handing)) = self.lock().held.get_mut(queue) {
            *handing = true;
        }
    }

    /// The fences of `queues` held, for the commit's check, and the queues not held (their
    /// writes must not commit).
    pub fn of(&self, queues: &HashSet<QueueKey>) -> (Vec<(Q, i64)>, HashSet<QueueKey>) {
        let inner = self.lock();
        let mut fences = Vec::with_capacity(queues.len());
        let mut not_held = HashSet::new();
        for q in queues {
            match inner.held.get(q) {
                Some((f, _)) => fences.push((Q::of(q), *f)),
                None => {
                    not_held.insert(q.clone());
                }
            }
        }
        (fences, not_held)
    }

    /// This node lost `queue`: its writes numbered `first` and later never commit.
    pub fn lose(&self, queue: &QueueKey, first: u64) {
        let mut inner = self.lock();
        inner.held.remove(queue);
        let at = inner.lost.entry(queue.clone()).or_insert(first);
        *at = (*at).min(first);
    }

    /// True when the write numbered `write` for `queue` (or one before it, up to the
    /// queue's loss) may have been dropped: its waiter must not be told it is durable.
    pub fn lost_after(&self, queue: &QueueKey, write: u64) -> bool {
        self.lock()
            .lost
            .get(queue)
            .is_some_and(|first| write >= *first)
    }

    /// How many queues this node holds.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }
}

/// The 503 a write for a queue this node does not own answers.
pub fn not_owner(queue: &QueueKey) -> Error {
    Error::Unavailable(format!(
        "queue {queue} is owned by another node of the cluster now; retry"
    ))
}

/// A node as the database knows it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    /// Its name.
    pub node_id: String,
    /// The base URL the other nodes reach it at.
    pub advertise: String,
    /// Since its last heartbeat, by the database's clock.
    pub silent_for: Duration,
    /// Its heartbeat is within the node timeout.
    pub alive: bool,
    /// Queues it owns.
    pub queues_owned: u64,
}

impl PgStore {
    /// Records that `node` is alive, reachable at `advertise`; true when it was not known
    /// alive before (joined, or back after its timeout).
    pub fn heartbeat(&self, node: &str, advertise: &str) -> Result<bool> {
        let (node, advertise) = (node.to_string(), advertise.to_string());
        let timeout_ms = self.node_timeout.as_millis() as f64;
        let row = self.pool.run(move |c| {
            c.query_one(
                "WITH before AS (SELECT heartbeat_at > now() - $3 * interval '1 millisecond' \
                   AS alive FROM tasq_nodes WHERE node_id = $1), \
                 up AS (INSERT INTO tasq_nodes (node_id, advertise) VALUES ($1, $2) \
                   ON CONFLICT (node_id) DO UPDATE \
                   SET advertise = EXCLUDED.advertise, heartbeat_at = now() RETURNING 1) \
                 SELECT NOT coalesce((SELECT alive FROM before), false) FROM up",
                &[&node, &advertise, &timeout_ms],
            )
        })?;
        Ok(row.get(0))
    }

    /// Every node known, alive or not (unheard of for `timeout`), by name.
    pub fn nodes(&self, timeout: Duration) -> Result<Vec<NodeRow>> {
        let timeout_ms = timeout.as_millis() as f64;
        let rows = self.pool.run(move |c| {
            c.query(
                "SELECT n.node_id, n.advertise, \
                 (extract(epoch FROM now() - n.heartbeat_at) * 1000)::float8, \
                 (SELECT count(*) FROM tasq_owners o WHERE o.owner = n.node_id) \
                 FROM tasq_nodes n ORDER BY n.node_id",
                &[],
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let silent_ms: f64 = r.get(2);
                let owned: i64 = r.get(3);
                NodeRow {
                    node_id: r.get(0),
                    advertise: r.get(1),
                    silent_for: Duration::from_millis(silent_ms.max(0.0) as u64),
                    alive: silent_ms < timeout_ms,
                    queues_owned: u64::try_from(owned).unwrap_or(0),
                }
            })
            .collect())
    }

    /// `node` leaves the cluster (a graceful stop): the others need not wait for its timeout.
    pub fn leave(&self, node: &str) -> Result<()> {
        let node = node.to_string();
        self.pool
            .run(move |c| c.execute("DELETE FROM tasq_nodes WHERE node_id = $1", &[&node]))?;
        Ok(())
    }

    /// Forgets `node`, gone for good without leaving (killed, its machine lost), once it
    /// has been silent for `node_timeout`: `Some(true)` forgotten, `Some(false)` refused (it
    /// is alive), `None` unknown. Its queues stay fenced to it until their next owner takes
    /// them, as after any death.
    pub fn forget_node(&self, node: &str) -> Result<Option<bool>> {
        let node = node.to_string();
        let timeout_ms = self.node_timeout.as_millis() as f64;
        let row = self.pool.run(move |c| {
            // Both parts read the same snapshot: `known` sees the row the DELETE removes.
            c.query_one(
                "WITH gone AS (DELETE FROM tasq_nodes WHERE node_id = $1 \
                   AND heartbeat_at <= now() - $2 * interval '1 millisecond' RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM gone), \
                   EXISTS (SELECT 1 FROM tasq_nodes WHERE node_id = $1)",
                &[&node, &timeout_ms],
            )
        })?;
        let (gone, known): (bool, bool) = (row.get(0), row.get(1));
        Ok(known.then_some(gone))
    }

    /// Takes `queue` for `node`: bumps its fence, so the node that held it cannot write for
    /// it any more, and forgets what this node kept of it (the other wrote since). Call it
    /// before reading the queue's state. Answers the node that held it before, if another,
    /// and whether that one was still heard from within `node_timeout`.
    pub fn take_queue(&self, queue: &QueueKey, node: &str) -> Result<Option<(String, bool)>> {
        let fences = self.fences()?;
        let (q, node) = (Q::of(queue), node.to_string());
        let timeout_ms = self.node_timeout.as_millis() as f64;
        let row = self.pool.run(move |c| {
            c.query_one(
                "WITH before AS ( \
                   SELECT o.owner, EXISTS (SELECT 1 FROM tasq_nodes n WHERE n.node_id = o.owner \
                     AND n.heartbeat_at > now() - $5 * interval '1 millisecond') AS alive \
                   FROM tasq_owners o \
                   WHERE o.namespace = $1 AND o.queue = $2 AND o.queue_type = $3), \
                 up AS ( \
                   INSERT INTO tasq_owners (namespace, queue, queue_type, owner, fence) \
                   VALUES ($1, $2, $3, $4, 1) \
                   ON CONFLICT (namespace, queue, queue_type) DO UPDATE \
                   SET owner = EXCLUDED.owner, fence = tasq_owners.fence + 1 \
                   RETURNING fence) \
                 SELECT up.fence, before.owner, before.alive FROM up LEFT JOIN before ON true",
                &[&q.0, &q.1, &q.2, &node, &timeout_ms],
            )
        })?;
        let fence: i64 = row.get(0);
        let before: Option<String> = row.get(1);
        let alive: Option<bool> = row.get(2);
        self.pending.forget(&HashSet::from([queue.clone()]));
        fences.hold(queue, fence);
        Ok(before
            .filter(|b| *b != node_name(&self.node))
            .map(|b| (b, alive.unwrap_or(false))))
    }

    /// Hands `queue` over (this node stops serving it): new writes for it are refused, the
    /// ones taken before commit, then this node forgets it. The next owner takes it.
    pub fn release_queue(&self, queue: &QueueKey) -> Result<()> {
        let fences = self.fences()?;
        fences.hand_over(queue);
        self.settled()?;
        fences.lose(queue, self.commit.latest().number() + 1);
        self.pending.forget(&HashSet::from([queue.clone()]));
        Ok(())
    }

    /// True when this node holds `queue` (took it, and no other node took it since, as far
    /// as its commits found).
    pub fn holds_queue(&self, queue: &QueueKey) -> bool {
        self.fences.as_ref().is_some_and(|f| f.check(queue).is_ok())
    }

    /// The queues this node owns (0 outside cluster mode).
    pub fn queues_held(&self) -> usize {
        self.fences.as_ref().map_or(0, |f| f.held())
    }

    fn fences(&self) -> Result<&Fences> {
        self.fences
            .as_deref()
            .ok_or_else(|| Error::Internal("queue ownership needs cluster mode".into()))
    }
}

/// Which of the queues checked have a fence other than the one held (taken by another node).
pub fn moved(
    session: &mut super::Session,
    checks: &[(Q, i64)],
) -> std::result::Result<HashSet<QueueKey>, postgres::Error> {
    let (mut n, mut q, mut k, mut f) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (queue, fence) in checks {
        n.push(queue.0.clone());
        q.push(queue.1.clone());
        k.push(queue.2);
        f.push(*fence);
    }
    let rows = session.query(
        "SELECT x.n, x.q, x.k FROM unnest($1::text[], $2::text[], $3::int2[], $4::int8[]) \
         AS x(n, q, k, f) LEFT JOIN tasq_owners o \
         ON o.namespace = x.n AND o.queue = x.q AND o.queue_type = x.k \
         WHERE o.fence IS DISTINCT FROM x.f",
        &[&n, &q, &k, &f],
    )?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Q(r.get(0), r.get(1), r.get(2)).key())
        .collect())
}

/// This node's name (empty outside cluster mode).
fn node_name(node: &Option<String>) -> &str {
    node.as_deref().unwrap_or("")
}
