//! Wall-clock time in milliseconds since the Unix epoch, and RFC 3339 formatting.
//!
//! Every persisted instant is a `u64` of milliseconds, so stored keys sort by time and survive
//! restarts; the API shows them as RFC 3339 UTC strings with milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_millis() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
