//! Time: wall-clock milliseconds since the Unix epoch, RFC 3339 formatting, and the [`Clock`]
//! the queues read, so that tests can drive time by hand ([`ManualClock`]).
//!
//! Every persisted instant is a `u64` of milliseconds, so stored keys sort by time and survive
//! restarts; the API shows them as RFC 3339 UTC strings with milliseconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the queue logic reads the time: the system's in a server, a [`ManualClock`] in tests.
/// Both readings move together: `now_ms` for what is stored and shown, `instant` for waits
/// measured on this process (parked polls, the dispatch throttle).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// A monotonic instant.
    fn instant(&self) -> Instant;
}

/// The system's clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that stands still until [`ManualClock::advance`] moves it: queue logic tested
/// with leases, backoff and timeouts of any length, and no sleeps.
#[derive(Debug)]
pub struct ManualClock {
    start_ms: u64,
    start: Instant,
    elapsed_ms: AtomicU64,
}

impl ManualClock {
    /// A clock at `start_ms` (epoch milliseconds).
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            start_ms,
            start: Instant::now(),
            elapsed_ms: AtomicU64::new(0),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.elapsed_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.start_ms + self.elapsed_ms.load(Ordering::SeqCst)
    }

    fn instant(&self) -> Instant {
        self.start + Duration::from_millis(self.elapsed_ms.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Formats an epoch-milliseconds instant as RFC 3339 UTC, e.g. `2026-11-22T08:00:00.123Z`.
pub fn rfc3339(ms: u64) -> String {
    // RFC 3339 stops at year 9999; later instants (never reached by validated durations)
    // show as its last millisecond rather than failing.
    const LAST: u64 = 253_402_300_799_999;
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.min(LAST))).to_string()
}

/// Reads an RFC 3339 instant (as [`rfc3339`] writes them) back as epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(1_000);
        let at = clock.instant();
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_millis(2_500));
        assert_eq!(clock.now_ms(), 3_500);
        assert_eq!(clock.instant() - at, Duration::from_millis(2_500));
    }
}
