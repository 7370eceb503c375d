//! The group commit's sync on PostgreSQL: everything pending written with one statement
//! (`write`), and in cluster mode the writes of queues this node lost dropped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::cluster::{self, Fences};
use super::conn::{Conn, Reachable};
use super::pending::{self, touches, Pending};
use super::write;
use crate::error::{Error, Result};
use crate::model::QueueKey;

/// The group commit's sync: writes every pending transaction with one statement. In cluster
/// mode a queue found lost (not held, or its fence moved on) has its transactions dropped and
/// the rest are written again.
pub fn group_commit(
    conn: Conn,
    pending: Arc<Pending>,
    reachable: Arc<Reachable>,
    fences: Option<Arc<Fences>>,
    rejections: prometheus::IntCounter,
) -> Box<dyn Fn() -> Result<()> + Send> {
    let conn = Mutex::new(conn);
    Box::new(move || {
        let mut taken = pending.take();
        let upto = taken.upto;
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if taken.txns.is_empty() {
                pending.committed(upto);
                return Ok(());
            }
            let (checks, not_held) = match &fences {
                Some(f) => f.of(&taken.queues()),
                None => Default::default(),
            };
            if !not_held.is_empty() {
                drop_lost(
                    &mut taken,
                    &not_held,
                    &pending,
                    fences.as_deref(),
                    &rejections,
                );
                continue;
            }
            // A statement that failed is rolled back by PostgreSQL: running it again is safe.
            let result =
                conn.run(&|s| write::Rows::of(taken.txns.iter().map(|(_, w)| w)).write(s, &checks));
            match result {
                Ok(true) => {
                    pending.committed(upto);
                    reachable.up();
                    return Ok(());
                }
                Ok(false) => {
                    // A fence moved on: find which, drop their writes, write the rest.
                    match conn.run(&|s| cluster::moved(s, &checks)) {
                        Ok(lost) if !lost.is_empty() => {
                            drop_lost(&mut taken, &lost, &pending, fences.as_deref(), &rejections)
                        }
                        // The fence that failed the check moved back before this read: the
                        // next commit tries again (never a loop here). The database is fine.
                        Ok(_) => {
                            pending.put_back(taken);
                            return Err(Error::Unavailable(
                                "a queue's owner changed during the commit; retry".into(),
                            ));
                        }
                        Err(e) => {
                            pending.put_back(taken);
                            reachable.saw(&e);
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    // Not committed: written first on the next try, once the database is back.
                    pending.put_back(taken);
                    reachable.saw(&e);
                    return Err(e);
                }
            }
        }
    })
}

/// Drops the transactions of `lost` queues (taken for this commit, and pending after it):
/// their waiters are answered 503 (see [`Fences::lost_after`]).
fn drop_lost(
    taken: &mut pending::Taken,
    lost: &HashSet<QueueKey>,
    pending: &Pending,
    fences: Option<&Fences>,
    rejections: &prometheus::IntCounter,
) {
    for queue in lost {
        let first = taken
            .txns
            .iter()
            .find(|(_, w)| w.iter().any(|w| w.queue() == queue))
            .map_or(taken.upto + 1, |(n, _)| *n);
        if let Some(f) = fences {
            f.lose(queue, first);
        }
        log::warn!(
            "cluster: {queue} is owned by another node now; its writes from here on are dropped"
        );
    }
    let before = taken.txns.len();
    taken.txns.retain(|(_, w)| !touches(w, lost));
    rejections.inc_by((before - taken.txns.len()) as u64);
    pending.forget(lost);
}
