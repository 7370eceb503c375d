//! Server-side dispatch throttling: a token bucket per queue.
//!
//! Only dispatch takes tokens; adds never wait. When the bucket is empty the actor keeps its
//! pollers parked and arms its one timer for the instant the next token is due.

use std::time::Instant;

pub use crate::model::rate::{RateLimit, MAX_BURST};

/// The longest the actor's timer waits for a token; it checks again when it fires. A tiny
/// positive rate (`1e-300` per second is valid) puts the next token beyond any `Duration`.
const MAX_TOKEN_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where the queue's limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `PUT {q}/config`, stored.
    Api,
    /// A poller's `max_tasks_per_second` (the latest wins).
    Worker,
}

impl Source {
    /// The name describe shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Api => "api",
            Source::Worker => "worker",
        }
    }
}

/// A token bucket; `None` limit = unlimited.
#[derive(Debug)]
pub struct Throttle {
    limit: Option<(RateLimit, Source)>,
    tokens: f64,
    refilled: Instant,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            limit: None,
            tokens: 0.0,
            refilled: Instant::now(),
        }
    }
}

impl Throttle {
    /// The limit in force and its source.
    pub fn limit(&self) -> Option<(RateLimit, Source)> {
        self.limit
    }

    /// Sets (or clears) the limit. A new limit starts with a full bucket, except a pause
    /// (rate 0), which holds back everything at once.
    pub fn set(&mut self, limit: Option<(RateLimit, Source)>, now: Instant) {
        if self.limit.map(|l| l.0) != limit.map(|l| l.0) {
            self.tokens = limit
                .filter(|(l, _)| l.max_tasks_per_second > 0.0)
                .map_or(0.0, |(l, _)| l.burst as f64);
            self.refilled = now;
        }
        self.limit = limit;
    }

    fn refill(&mut self, now: Instant) {
        if let Some((l, _)) = self.limit {
            let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * l.max_tasks_per_second).min(l.burst as f64);
        }
        self.refilled = now;
    }

    /// True (and one token spent) when a dispatch may happen now.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.limit.is_none() {
            return true;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// True when a dispatch could happen now, without spending.
    pub fn has_token(&mut self, now: Instant) -> bool {
        if self.limit.is_none() {
            return true;
        }
        self.refill(now);
        self.tokens >= 1.0
    }

    /// When the next token is due; `None` when unlimited or paused.
    pub fn next_token_in(&mut self, now: Instant) -> Option<std::time::Duration> {
        let (l, _) = self.limit?;
        if l.max_tasks_per_second <= 0.0 {
            return None;
        }
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        let wait = std::time::Duration::try_from_secs_f64(missing / l.max_tasks_per_second);
        Some(wait.map_or(MAX_TOKEN_WAIT, |w| w.min(MAX_TOKEN_WAIT)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut t = Throttle::default();
        let start = Instant::now();
        assert!(t.try_take(start));
        t.set(
            Some((
                RateLimit {
                    max_tasks_per_second: 10.0,
                    burst: 3,
                },
                Source::Api,
            )),
            Instant::now(),
        );
        let now = t.refilled;
        assert!(t.try_take(now) && t.try_take(now) && t.try_take(now));
        assert!(!t.try_take(now));
        let wait = t.next_token_in(now).unwrap();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::from_millis(90));
        assert!(t.try_take(now + Duration::from_millis(100)));
        // After a long pause, at most `burst` at once.
        let later = now + Duration::from_secs(60);
        let n = (0..10).filter(|_| t.try_take(later)).count();
        assert_eq!(n, 3);
    }

    /// Found by schemathesis: `max_tasks_per_second: 5e-324` made the wait for the next token
    /// infinite, and `Duration::from_secs_f64` panicked in the queue actor.
    #[test]
    fn a_tiny_rate_waits_at_most_the_cap() {
        for rate in [5e-324, 1e-300, 1e-9] {
            let mut t = Throttle::default();
            t.set(
                Some((
                    RateLimit {
                        max_tasks_per_second: rate,
                        burst: 1,
                    },
                    Source::Api,
                )),
                Instant::now(),
            );
            let now = t.refilled;
            assert!(t.try_take(now));
            assert_eq!(t.next_token_in(now), Some(MAX_TOKEN_WAIT), "rate {rate}");
        }
    }

    #[test]
    fn zero_pauses() {
        let mut t = Throttle::default();
        t.set(
            Some((
                RateLimit {
                    max_tasks_per_second: 0.0,
                    burst: 1,
                },
                Source::Api,
            )),
            Instant::now(),
        );
        let now = Instant::now();
        assert!(!t.try_take(now));
        assert!(!t.try_take(now + Duration::from_secs(100)));
        assert_eq!(t.next_token_in(now), None);
    }
}
