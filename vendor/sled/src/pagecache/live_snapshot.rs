//! tasq patch: snapshots of the page table written while the store is open and being written,
//! so that the next open (after a crash too) replays only the log written after the newest one
//! instead of everything since the last open.
//!
//! The newest snapshot on disk is advanced with the log up to the synced (durable) offset: a
//! snapshot may point only at messages that survive a power cut. Unlike recovery this writes
//! nothing into the log file (no zeroed tail, no zeroed torn segments, no removed blobs): the
//! log is live. The first message that does not read whole ends the replay there (the
//! snapshot then covers less), where recovery would skip to the next segment. A segment
//! reused between the listing of the segments and its read could be read torn, so each
//! segment is checked right after its read, and nothing is written if one was reassigned by
//! then. (One reused after its read is harmless: what superseded its pages was synced first,
//! and the next open replays everything after the snapshot's `stable_lsn`.)
//!
//! It works page by page, never holding the page table: the old snapshot is read as bytes,
//! the log's messages are applied to the pages they touch only, and the new file is written
//! by copying every untouched page's bytes. A store of 10,000,000 tasks has a 45 MB snapshot;
//! deserialized whole it took some 150 MB more, each time.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::*;

use super::{
    snapshot::{read_snapshot_bytes, write_snapshot_with, PageState},
    DiskPtr, LogIter, LogKind, LogOffset, Lsn, PageId, MAX_MSG_HEADER_LEN,
    SEG_HEADER_LEN,
};

/// A message of the log: (kind, page, lsn, where, size), as `LogIter` yields it.
type Message = (LogKind, PageId, Lsn, DiskPtr, u64);

/// Advances the newest snapshot with `iter` (bounded by the synced offset) and writes the
/// result as the new one, if `intact` says of every segment, right after it was read, that
/// it had not been reused. Returns its `stable_lsn`, or `None` when there was nothing to add
/// or the cut fell where a snapshot cannot be taken (the next call tries another).
pub(in crate::pagecache) fn advance_snapshot_live(
    mut iter: LogIter,
    config: &RunningConfig,
    intact: impl Fn(&[(Lsn, LogOffset)]) -> bool,
) -> Result<Option<Lsn>> {
    let old = read_snapshot_bytes(config)?.unwrap_or_default();
    let mut cursor = old.as_slice();
    let (old_stable_lsn, _active): (Option<Lsn>, Option<LogOffset>) = if old.is_empty() {
        (None, None)
    } else {
        (Serialize::deserialize(&mut cursor)?, Serialize::deserialize(&mut cursor)?)
    };
    let pages_at = old.len() - cursor.len();

    // The messages after the old snapshot, up to the cut.
    let mut messages: Vec<Message> = Vec::new();
    loop {
        let msg = iter.next();
        if !iter.read_segments.is_empty() {
            if !intact(&iter.read_segments) {
                debug!("live snapshot not written: a segment was reused as it was read");
                return Ok(None);
            }
            iter.read_segments.clear();
        }
        match msg {
            Some(msg) if msg.2 >= old_stable_lsn.unwrap_or(-1) => messages.push(msg),
            Some(_) => {}
            None => break,
        }
    }
    let iterated_lsn = match iter.cur_lsn {
        Some(lsn) if Some(lsn) > old_stable_lsn => lsn,
        _ => return Ok(None),
    };
    let segment_size = config.segment_size as Lsn;
    let segment_progress: Lsn = iterated_lsn % segment_size;
    let monotonic = segment_progress >= SEG_HEADER_LEN as Lsn
        || (segment_progress == 0 && iter.segment_base.is_none());
    if !monotonic {
        // recovery would call this corruption; live, it is a read that raced a writer
        return Ok(None);
    }
    // the same tip as `advance_snapshot` computes for the same log
    let (stable_lsn, active_segment) =
        if segment_progress + MAX_MSG_HEADER_LEN as Lsn >= segment_size {
            (config.normalize(iterated_lsn) + segment_size, None)
        } else {
            (iterated_lsn, iter.segment_base.as_ref().map(|bb| bb.offset))
        };
    if Some(stable_lsn) <= old_stable_lsn {
        return Ok(None);
    }

    // The old states of the pages the messages touch, then the messages applied to them.
    let touched: HashSet<PageId> = messages.iter().map(|m| m.1).collect();
    let mut pages: HashMap<PageId, PageState> = HashMap::new();
    let mut walk = &old[pages_at..];
    let mut old_len: PageId = 0;
    while !walk.is_empty() {
        let state = PageState::deserialize(&mut walk)?;
        if touched.contains(&old_len) {
            pages.insert(old_len, state);
        }
        old_len += 1;
    }
    let mut len = old_len;
    for (kind, pid, lsn, ptr, sz) in messages {
        apply(&mut pages, &mut len, kind, pid, lsn, ptr, sz)?;
    }
    if (old_len..len).any(|pid| !pages.contains_key(&pid))
        || pages.values().any(|page| *page == PageState::Uninitialized)
    {
        // A page allocated before the cut whose first message lies after it (pages are
        // allocated concurrently, out of log order). Recovery always reads on to that message;
        // a snapshot cannot hold the gap, so the next flush tries again at another cut.
        debug!("live snapshot not written: a page allocated before the cut is written after it");
        return Ok(None);
    }

    write_snapshot_with(config, Some(stable_lsn), |file| {
        let mut out = Hashed::new(std::io::BufWriter::with_capacity(1 << 20, file));
        out.write_all(&Some(stable_lsn).serialize())?;
        out.write_all(&active_segment.serialize())?;
        let mut walk = &old[pages_at..];
        for pid in 0..len {
            let before = walk;
            if pid < old_len {
                let _ = PageState::deserialize(&mut walk)?;
            }
            match pages.get(&pid) {
                Some(page) => out.write_all(&page.serialize())?,
                None => out.write_all(&before[..before.len() - walk.len()])?,
            }
        }
        let (len, crc, writer) = out.finish();
        writer.into_inner().map_err(|e| e.into_error())?;
        Ok((len, crc))
    })?;
    Ok(Some(stable_lsn))
}

/// `Snapshot::apply` on the touched pages only: `pages` holds every page a message names
/// (with its old state, if it had one); `len` is the page table's length.
fn apply(
    pages: &mut HashMap<PageId, PageState>,
    len: &mut PageId,
    kind: LogKind,
    pid: PageId,
    lsn: Lsn,
    ptr: DiskPtr,
    sz: u64,
) -> Result<()> {
    let pushed = pid >= *len;
    if pushed {
        *len = pid + 1;
    }
    match kind {
        LogKind::Replace => {
            pages.insert(pid, PageState::Present { base: (lsn, ptr, sz), frags: vec![] });
        }
        LogKind::Link => match pages.get_mut(&pid) {
            // as `PageState::push`: a fragment older than the newest one is skipped
            Some(PageState::Present { base, frags }) => {
                if frags.last().map_or(base.0, |f| f.0) < lsn {
                    frags.push((lsn, ptr, sz));
                }
            }
            // a dangling append: its page was relocated to a later Replace
            _ => {
                if pushed {
                    *len = pid;
                }
            }
        },
        LogKind::Free => {
            pages.insert(pid, PageState::Free(lsn, ptr));
        }
        LogKind::Corrupted | LogKind::Skip => {
            error!(
                "unexpected messagekind in live snapshot for pid {}: {:?}",
                pid, kind
            );
            return Err(Error::corruption(None));
        }
    }
    Ok(())
}

/// A writer that counts and checksums what goes through it (the snapshot file's length and
/// crc trail the body).
struct Hashed<W: Write> {
    inner: W,
    len: u64,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Hashed<W> {
    fn new(inner: W) -> Self {
        Hashed { inner, len: 0, hasher: crc32fast::Hasher::new() }
    }

    fn finish(self) -> (u64, u32, W) {
        (self.len, self.hasher.finalize(), self.inner)
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
