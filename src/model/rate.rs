//! A queue's dispatch limit (`PUT {q}/config`, or a poller's `max_tasks_per_second`), as the
//! store keeps it and a client asks for it. The token bucket that enforces it is the queue's
//! (`queue::throttle`).

use serde::{Deserialize, Serialize};

/// A dispatch limit as stored or requested.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Tasks per second; 0 pauses dispatch.
    pub max_tasks_per_second: f64,
    /// Bucket size: dispatches allowed at once after a quiet spell.
    pub burst: u32,
}

/// The largest `burst` a client may set.
pub const MAX_BURST: u64 = 1_000_000;

impl RateLimit {
    /// The default burst for a rate: one second's worth, at least 1, at most [`MAX_BURST`]
    /// (what an explicit `burst` may be).
    pub fn default_burst(rate: f64) -> u32 {
        (rate.ceil().min(MAX_BURST as f64) as u32).max(1)
    }

    /// The limit a client asked for (`PUT {q}/config`, or an embedder): `None` removes the
    /// limit, `0` pauses dispatch; `burst` defaults to one second's worth. Out of range is
    /// `invalid_argument`.
    pub fn requested(rate: Option<f64>, burst: Option<u64>) -> crate::error::Result<Option<Self>> {
        use crate::error::Error;
        if let Some(b) = burst {
            if !(1..=MAX_BURST).contains(&b) {
                return Err(Error::invalid(format!(
                    "burst must be 1–{MAX_BURST}, got {b}"
                )));
            }
        }
        match rate {
            None => Ok(None),
            Some(r) if !r.is_finite() || !(0.0..=1e9).contains(&r) => Err(Error::invalid(format!(
                "max_tasks_per_second must be 0–1e9 or null, got {r}"
            ))),
            Some(r) => Ok(Some(RateLimit {
                max_tasks_per_second: r,
                burst: burst.map_or_else(|| RateLimit::default_burst(r), |b| b as u32),
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_burst_stays_in_the_range_an_explicit_one_may_take() {
        assert_eq!(RateLimit::default_burst(0.0), 1);
        assert_eq!(RateLimit::default_burst(2.5), 3);
        assert_eq!(RateLimit::default_burst(1e9), MAX_BURST as u32);
        let fast = RateLimit::requested(Some(1e9), None).unwrap().unwrap();
        assert_eq!(u64::from(fast.burst), MAX_BURST);
    }
}
