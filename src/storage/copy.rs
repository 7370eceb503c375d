//! `tasq store copy`: everything one store holds written into another, empty one (sled to
//! PostgreSQL to move a single node onto a shared database, or back).

use super::txn::Write;
use super::{record, Store, Txn};
use crate::error::{Error, Result};

/// Writes per transaction of the copy.
const BATCH: usize = 1000;

/// What a copy wrote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Task records.
    pub tasks: u64,
    /// Queues (their counters and settings).
    pub queues: u64,
    /// Every write, records and queues included.
    pub writes: u64,
}

/// Copies everything `from` holds into `to`, which must be empty, each batch durable before
/// the next; `to`'s sequence numbers then start past every one copied.
pub fn copy(from: &dyn Store, to: &dyn Store) -> Result<Copied> {
    if !to.is_empty()? {
        return Err(Error::invalid(
            "the target store is not empty; copy into a new data directory or database",
        ));
    }
    let mut copied = Copied::default();
    let mut max_seq = 0u64;
    from.export(BATCH, &mut |txn: Txn| {
        let writes = txn.into_writes();
        let mut out = Txn::default();
        for w in writes {
            copied.writes += 1;
            match &w {
                Write::Task { record: raw, .. } => {
                    copied.tasks += 1;
                    if let Ok(rec) = record::decode(raw) {
                        max_seq = max_seq.max(rec.seq);
                    }
                }
                Write::Meta(..) => copied.queues += 1,
                Write::Ready(_, pos, _) => max_seq = max_seq.max(pos.seq),
                Write::Delayed(_, _, seq, _) | Write::Dead(_, _, seq, _) => {
                    max_seq = max_seq.max(*seq)
                }
                _ => {}
            }
            out.push(w);
        }
        to.commit(out)?;
        to.flush()
    })?;
    to.reserve_seq(max_seq)?;
    to.flush()?;
    Ok(copied)
}
