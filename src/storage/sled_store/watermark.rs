//! The durability watermark: notices a store that lost writes it had acknowledged.
//!
//! sled recovers its log up to the last intact entry and silently drops the rest, so a `db`
//! file cut short, or zeroed or overwritten in the middle, opens as an older store: tasks
//! acknowledged long ago gone, completed ones pending again, without a word. To notice, every
//! group commit stamps a number into the store (a key of its own tree) before it syncs, and
//! once the sync returned writes that number into `tasq.watermark` beside sled's files. The
//! file is never ahead of what is durable, so at open a store whose own stamp is below the
//! file's has lost synced writes: it is refused, with a message saying how to look at it
//! (`tasq store verify`) and how to start from what is left anyway.
//!
//! The file is written in place without a sync of its own (16 bytes: the number and its
//! complement, so a torn write reads as absent): after a power cut it may be older than the
//! store, which only makes the check weaker for the last moments, never raises a false alarm.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The file beside sled's files.
pub const FILE: &str = "tasq.watermark";

/// The sled tree holding the stamp, and its key.
const TREE: &[u8] = b"tasq-watermark";
const KEY: &[u8] = b"stamp";

/// The stamp in the store and the file that follows it.
pub struct Watermark {
    file: File,
    tree: sled::Tree,
    /// The last stamp handed out.
    stamp: AtomicU64,
}

/// What a check of the watermark found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// The stamp the store holds (0: none yet).
    pub store: u64,
    /// The stamp the file holds (`None`: no file, or a torn one).
    pub file: Option<u64>,
}

impl Marks {
    /// True when the store holds less than what was synced before.
    pub fn lost_writes(&self) -> bool {
        self.file.is_some_and(|f| f > self.store)
    }
}

/// Reads the stamp of the store `db` and of the file in `dir`.
pub fn read(dir: &Path, db: &sled::Db) -> Result<Marks> {
    let tree = db.open_tree(TREE)?;
    let store = match tree.get(KEY)? {
        Some(raw) => u64::from_be_bytes(
            raw.as_ref()
                .try_into()
                .map_err(|_| Error::Internal("the store's watermark stamp is damaged".into()))?,
        ),
        None => 0,
    };
    let file = match std::fs::read(path(dir)) {
        Ok(raw) => decode(&raw),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::Internal(format!("cannot read {:?}: {e}", path(dir)))),
    };
    Ok(Marks { store, file })
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn decode(raw: &[u8]) -> Option<u64> {
    let a = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    let b = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    (a == !b).then_some(a)
}

fn encode(mark: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&mark.to_le_bytes());
    out[8..].copy_from_slice(&(!mark).to_le_bytes());
    out
}

impl Watermark {
    /// Checks the store in `dir` and starts stamping it; refuses a store that lost writes.
    pub fn open(dir: &Path, db: &sled::Db) -> Result<Watermark> {
        let marks = read(dir, db)?;
        if marks.lost_writes() {
            return Err(Error::Unavailable(format!(
                "the store in {dir:?} lost writes it had acknowledged: it was synced up to \
                 commit {} but holds commits up to {} only (a file of it cut short, zeroed or \
                 overwritten?). tasq refuses to start on it. `tasq store verify {}` reports \
                 what is damaged; to start anyway from what is left, restore a backup or \
                 remove {:?}",
                marks.file.unwrap_or(0),
                marks.store,
                dir.display(),
                path(dir)
            )));
        }
        let created = !path(dir).exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path(dir))
            .map_err(|e| Error::Internal(format!("cannot open {:?}: {e}", path(dir))))?;
        if created {
            // The name is durable before any stamp written in the file counts on it (a file
            // system that cannot sync a directory has no such ordering to keep).
            match File::open(dir).and_then(|d| d.sync_all()) {
                Err(e) if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => {
                    return Err(Error::Internal(format!("cannot sync {dir:?}: {e}")));
                }
                _ => {}
            }
        }
        Ok(Watermark {
            file,
            tree: db.open_tree(TREE)?,
            stamp: AtomicU64::new(marks.store.max(marks.file.unwrap_or(0))),
        })
    }

    /// Stamps the next number into the store, to be synced by the flush about to start;
    /// answers it for [`Watermark::synced`].
    pub fn stamp(&self) -> Result<u64> {
        let next = self.stamp.fetch_add(1, Ordering::AcqRel) + 1;
        self.tree.insert(KEY, &next.to_be_bytes())?;
        Ok(next)
    }

    /// Records that the flush covering `stamp` returned: the file says so from now on.
    pub fn synced(&self, stamp: u64) {
        if let Err(e) = self.file.write_all_at(&encode(stamp), 0) {
            log::warn!("cannot write {FILE}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_or_short_file_reads_as_absent() {
        assert_eq!(decode(&encode(42)), Some(42));
        let mut torn = encode(42);
        torn[12] ^= 1;
        assert_eq!(decode(&torn), None);
        assert_eq!(decode(&[1, 2, 3]), None);
    }

    #[test]
    fn a_store_behind_its_file_is_refused_and_one_ahead_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let w = Watermark::open(dir.path(), &db).unwrap();
        let a = w.stamp().unwrap();
        db.flush().unwrap();
        w.synced(a);
        // Stamped but not yet synced: the file stays behind, which is fine.
        let _b = w.stamp().unwrap();
        assert!(!read(dir.path(), &db).unwrap().lost_writes());
        // The store goes back to before `a` (as a cut-short log would): refused.
        db.open_tree(TREE).unwrap().remove(KEY).unwrap();
        let marks = read(dir.path(), &db).unwrap();
        assert_eq!(
            marks,
            Marks {
                store: 0,
                file: Some(a)
            }
        );
        assert!(marks.lost_writes());
        assert!(Watermark::open(dir.path(), &db).is_err());
    }
}
