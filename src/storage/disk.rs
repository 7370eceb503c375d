//! Disk space: adds are refused (429) before the store outgrows `storage.max_bytes` or eats
//! into the free space kept for everything else (`storage.reserve_bytes`), so a full disk is
//! a pause for producers, never a failed write.
//!
//! A watcher thread measures the store and the file system every [`MEASURE_EVERY`]; every
//! write applied since the last measurement is counted on top of it, so a burst cannot
//! overshoot between two measurements. A byte of key and value costs sled more than a byte
//! on disk (a log entry, then the page rewritten whole when it is consolidated, large pages as
//! blob files), so each is counted times the amplification the measurements observed
//! (growth on disk over bytes written), at least `MIN_AMPLIFICATION`, decaying slowly. Polls, settles and purges are never refused here: they write into the
//! reserve, so workers keep draining a queue whose producers are held back.
//!
//! sled reuses freed space but never shrinks its files. While adds are refused, the watcher
//! therefore measures the live data (a scan of every key and value, paid only then) and counts
//! the slack in sled's files as free; and it purges finished records (completed, cancelled)
//! oldest first before their `completed_retention` ends, so that space goes to tasks that
//! still have to run. Once enough is free again, adds resume by themselves.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often the store and the file system are measured.
pub const MEASURE_EVERY: Duration = Duration::from_millis(200);

/// How often the live data is scanned while adds are refused.
const LIVE_SCAN_EVERY: Duration = Duration::from_secs(2);

/// The least bytes on disk counted per byte of key and value written (see the module doc).
const MIN_AMPLIFICATION: u64 = 2;

/// The most: past it the estimate is left to the next measurement.
const MAX_AMPLIFICATION: u64 = 64;

/// Writes below this many bytes between two measurements say nothing about amplification.
const AMPLIFICATION_SAMPLE_BYTES: u64 = 256 << 10;

/// sled's files hold up to this many times the live data before its cleaner reuses a segment,
/// so only the slack above it is counted as free.
const SLED_OVERHEAD: u64 = 3;

/// Once refused, adds resume when a measurement finds `1 / RESUME_MARGIN` of each bound to
/// spare (a tenth of `max_bytes` under it, a tenth of `reserve_bytes` more free).
const RESUME_MARGIN: u64 = 10;

/// Which bound an add would cross.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    MaxBytes,
    Reserve,
}

/// The free space kept is at least the store's size over this (see `DiskSpace::reserve`).
const RESERVE_SHARE: u64 = 2;

/// Finished records purged per step while adds are refused.
const PRESSURE_PURGE_BATCH: usize = 25;

/// The bounds, and what the last measurement found.
pub struct DiskSpace {
    /// `storage.max_bytes` (0: none).
    max_bytes: u64,
    /// `storage.reserve_bytes` (0: none).
    reserve_bytes: u64,
    /// Bytes of keys and values written since the last measurement.
    written: AtomicU64,
    /// Bytes on disk counted per byte written (see the module doc).
    amplification: AtomicU64,
    /// The store's size on disk at the last measurement.
    last_size: AtomicU64,
    /// The store's size at the last measurement (the live data while adds are refused).
    used: AtomicU64,
    /// Free bytes for the store at the last measurement: the file system's, plus sled's slack.
    free: AtomicU64,
    /// True while the last measurement refused adds.
    pressure: AtomicBool,
}

/// What a measurement reads; supplied by the store.
pub trait Measure: Send + Sync + 'static {
    /// The store's files, in bytes.
    fn size_on_disk(&self) -> Result<u64>;
    /// Keys and values held (a scan of everything).
    fn live_bytes(&self) -> Result<u64>;
    /// Purges up to `limit` finished records, oldest first, whatever their retention.
    fn purge_finished(&self, limit: usize) -> Result<usize>;
}

impl DiskSpace {
    /// Bounds with nothing measured yet; [`DiskSpace::watch`] starts the measurements.
    pub fn new(max_bytes: u64, reserve_bytes: u64) -> Arc<DiskSpace> {
        Arc::new(DiskSpace {
            max_bytes,
            reserve_bytes,
            written: AtomicU64::new(0),
            amplification: AtomicU64::new(MIN_AMPLIFICATION),
            last_size: AtomicU64::new(0),
            used: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            pressure: AtomicBool::new(false),
        })
    }

    /// Starts measuring `dir` (the store's directory) through `measure` (the store). The
    /// watcher holds only weak handles and stops when the store is dropped.
    pub fn watch(self: &Arc<Self>, dir: &Path, measure: Weak<dyn Measure>) {
        if self.max_bytes == 0 && self.reserve_bytes == 0 {
            return;
        }
        let watched = Arc::downgrade(self);
        let dir = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("tasq-disk-watch".into())
            .spawn(move || watch_loop(&dir, &watched, &measure));
        if let Err(e) = spawned {
            log::error!("cannot watch the store's disk space: {e}");
        }
    }

    /// Counts a write of `bytes` of keys and values (every commit).
    pub fn wrote(&self, bytes: u64) {
        self.written.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `Ok` when an add of about `bytes` fits; else the 429 it is answered with. Once one add
    /// is refused, every add is, until a measurement finds room again with a margin
    /// (`RESUME_MARGIN`): small adds do not slip in ahead of a large one, and adds do not
    /// flap on and off at the bound.
    pub fn admit(&self, bytes: u64) -> Result<()> {
        let refused = if self.pressure.load(Ordering::Relaxed) {
            // Held by the margin: name the bound it is held by.
            self.over_with(0, RESUME_MARGIN).or(Some(Bound::MaxBytes))
        } else {
            self.over(bytes)
        };
        let Some(bound) = refused else {
            return Ok(());
        };
        self.pressure.store(true, Ordering::Relaxed);
        Err(Error::exhausted(match bound {
            Bound::MaxBytes if self.max_bytes > 0 => format!(
                "the store is at storage.max_bytes ({} bytes); adds resume as tasks drain",
                self.max_bytes
            ),
            _ => format!(
                "the disk holding the store is nearly full ({} bytes, storage.reserve_bytes or \
                 half the store's size, are kept for settles and polls); adds resume as tasks \
                 drain or space is freed",
                self.reserve()
            ),
        }))
    }

    /// The bound that `bytes` more (plus `margin` of each bound) would cross, if any.
    fn over_with(&self, bytes: u64, margin: u64) -> Option<Bound> {
        let coming = self
            .written
            .load(Ordering::Relaxed)
            .saturating_add(bytes)
            .saturating_mul(self.amplification.load(Ordering::Relaxed));
        let used = self.used.load(Ordering::Relaxed).saturating_add(coming);
        if self.max_bytes > 0 && used.saturating_add(self.max_bytes / margin) > self.max_bytes {
            return Some(Bound::MaxBytes);
        }
        let reserve = self.reserve();
        let wanted = reserve
            .saturating_add(coming)
            .saturating_add(reserve / margin);
        if reserve > 0 && self.free.load(Ordering::Relaxed) < wanted {
            return Some(Bound::Reserve);
        }
        None
    }

    /// The free space kept for settles, polls and sled's own rewriting: `reserve_bytes`, or
    /// half the store's size when that is more (sled rewrites pages before it frees the old
    /// ones, so what a drain needs grows with the store).
    fn reserve(&self) -> u64 {
        if self.reserve_bytes == 0 {
            return 0;
        }
        self.reserve_bytes
            .max(self.last_size.load(Ordering::Relaxed) / RESERVE_SHARE)
    }

    /// The bound that `bytes` more would cross, if any.
    fn over(&self, bytes: u64) -> Option<Bound> {
        self.over_with(bytes, u64::MAX)
    }

    /// True while adds are refused for space.
    pub fn under_pressure(&self) -> bool {
        self.pressure.load(Ordering::Relaxed)
    }
}

fn watch_loop(dir: &Path, space: &Weak<DiskSpace>, measure: &Weak<dyn Measure>) {
    let mut last_scan: Option<(Instant, u64)> = None;
    loop {
        let (Some(space), Some(measure)) = (space.upgrade(), measure.upgrade()) else {
            return;
        };
        if let Err(e) = measure_once(dir, &space, measure.as_ref(), &mut last_scan) {
            log::error!("cannot measure the store's disk space: {e}");
        }
        drop((space, measure));
        std::thread::sleep(MEASURE_EVERY);
    }
}

/// One measurement: sizes read, the write count restarted from them, pressure decided.
fn measure_once(
    dir: &Path,
    space: &DiskSpace,
    measure: &dyn Measure,
    last_scan: &mut Option<(Instant, u64)>,
) -> Result<()> {
    // Writes applied from here on are not in the sizes read below: keep counting them.
    let counted = space.written.load(Ordering::Relaxed);
    let size = measure.size_on_disk()?;
    let fs_free = if space.reserve_bytes > 0 {
        free_bytes(dir)?
    } else {
        u64::MAX
    };
    let was = space.pressure.load(Ordering::Relaxed);
    let live = if was || (space.max_bytes > 0 && size > space.max_bytes) {
        match *last_scan {
            Some((at, live)) if at.elapsed() < LIVE_SCAN_EVERY => Some(live),
            _ => {
                let live = measure.live_bytes()?;
                *last_scan = Some((Instant::now(), live));
                Some(live)
            }
        }
    } else {
        *last_scan = None;
        None
    };
    let used = live.map_or(size, |l| l.min(size));
    let slack = live.map_or(0, |l| size.saturating_sub(l.saturating_mul(SLED_OVERHEAD)));
    space.used.store(used, Ordering::Relaxed);
    space
        .free
        .store(fs_free.saturating_add(slack), Ordering::Relaxed);
    space.written.fetch_sub(counted, Ordering::Relaxed);
    let grown = size.saturating_sub(space.last_size.swap(size, Ordering::Relaxed));
    if counted >= AMPLIFICATION_SAMPLE_BYTES {
        let seen = grown.div_ceil(counted);
        let was_amp = space.amplification.load(Ordering::Relaxed);
        let amp = seen
            .max(was_amp - was_amp / 16)
            .clamp(MIN_AMPLIFICATION, MAX_AMPLIFICATION);
        space.amplification.store(amp, Ordering::Relaxed);
    }
    log::debug!(
        "disk: size {size}, live {live:?}, fs free {fs_free}, counted {counted}, reserve {}",
        space.reserve()
    );
    let pressure = if was {
        space.over_with(0, RESUME_MARGIN).is_some()
    } else {
        space.over(0).is_some()
    };
    if space.pressure.swap(pressure, Ordering::Relaxed) != pressure {
        log::warn!(
            "store {used} bytes ({size} on disk), {fs_free} bytes free on its disk: adds are {} \
             (storage.max_bytes = {}, storage.reserve_bytes = {})",
            if pressure {
                "refused"
            } else {
                "accepted again"
            },
            space.max_bytes,
            space.reserve_bytes
        );
    }
    // A purge writes before it frees (sled rewrites the pages it deletes from, into its own
    // free segments first), so it goes a few records at a time and stops while less than a
    // quarter of the reserve is left (on the file system and in sled's slack).
    if pressure && space.free.load(Ordering::Relaxed) > space.reserve() / 4 {
        let purged = measure.purge_finished(PRESSURE_PURGE_BATCH)?;
        if purged > 0 {
            log::warn!(
                "disk pressure: purged {purged} finished task records before their \
                 completed_retention ended"
            );
            *last_scan = None;
        }
    }
    Ok(())
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path: PathBuf = dir.to_path_buf();
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| Error::Internal(format!("data directory path: {e}")))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let ret = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if ret != 0 {
        return Err(Error::Internal(format!(
            "statvfs {dir:?}: {}",
            std::io::Error::last_os_error()
        )));
    }
    // A file system that reports no size at all (some FUSE ones) says nothing about its
    // free space: the reserve cannot be kept there, so it is not enforced.
    if st.f_blocks == 0 {
        return Ok(u64::MAX);
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A store of a given size and live data, whose purges free what they are told to.
    struct Fake {
        size: Mutex<u64>,
        live: Mutex<u64>,
        finished: Mutex<u64>,
    }

    impl Measure for Fake {
        fn size_on_disk(&self) -> Result<u64> {
            Ok(*self.size.lock().unwrap())
        }
        fn live_bytes(&self) -> Result<u64> {
            Ok(*self.live.lock().unwrap())
        }
        fn purge_finished(&self, _limit: usize) -> Result<usize> {
            let mut f = self.finished.lock().unwrap();
            let n = *f;
            *self.live.lock().unwrap() -= n;
            *f = 0;
            Ok(n as usize)
        }
    }

    fn space(max_bytes: u64) -> DiskSpace {
        Arc::into_inner(DiskSpace::new(max_bytes, 0)).unwrap()
    }

    #[test]
    fn writes_since_the_last_measurement_count_before_the_next_one() {
        let s = space(1000);
        assert!(s.admit(100).is_ok());
        s.wrote(400); // counts 800 (twice: the least amplification)
        assert!(s.admit(50).is_ok(), "800 + 100 ≤ 1000");
        let err = s.admit(150).unwrap_err();
        assert_eq!(err.code(), "resource_exhausted");
        // Once refused, a small add that would fit is refused too, until a measurement.
        assert!(s.admit(1).is_err());
    }

    #[test]
    fn over_the_bound_the_live_data_decides_and_finished_records_are_purged() {
        let s = space(1000);
        let fake = Fake {
            size: Mutex::new(1500),
            live: Mutex::new(1200),
            finished: Mutex::new(700),
        };
        let dir = std::env::temp_dir();
        let mut scan = None;
        measure_once(&dir, &s, &fake, &mut scan).unwrap();
        assert!(s.under_pressure(), "1200 live bytes > 1000");
        // The purge under pressure freed 700: the next scan sees 500 live, adds resume.
        measure_once(&dir, &s, &fake, &mut scan).unwrap();
        assert!(!s.under_pressure());
        assert!(s.admit(100).is_ok());
    }

    #[test]
    fn a_reserve_is_kept_free_on_the_disk() {
        let dir = std::env::temp_dir();
        let free = free_bytes(&dir).unwrap();
        assert!(free > 0);
        let mut s = space(0);
        s.reserve_bytes = free.saturating_mul(2);
        let fake = Fake {
            size: Mutex::new(10),
            live: Mutex::new(10),
            finished: Mutex::new(0),
        };
        measure_once(&dir, &s, &fake, &mut None).unwrap();
        assert!(
            s.under_pressure(),
            "a reserve larger than the disk's free space"
        );
        assert!(s.admit(1).is_err());
    }
}
