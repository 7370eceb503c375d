//! Events per second over the last 30 seconds, in one-second buckets.

/// Window length in seconds.
const WINDOW: usize = 30;

/// A sliding 30-second rate.
#[derive(Debug, Default)]
pub struct Rate {
    counts: [u32; WINDOW],
    seconds: [u64; WINDOW],
}

impl Rate {
    /// Counts `n` events at `now_ms`.
    pub fn add(&mut self, now_ms: u64, n: u32) {
        let sec = now_ms / 1000;
        let i = (sec % WINDOW as u64) as usize;
        if self.seconds[i] != sec {
            self.seconds[i] = sec;
            self.counts[i] = 0;
        }
        self.counts[i] = self.counts[i].saturating_add(n);
    }

    /// Events per second over the last 30 seconds.
    pub fn per_second(&self, now_ms: u64) -> f64 {
        let sec = now_ms / 1000;
        let total: u64 = self
            .seconds
            .iter()
            .zip(self.counts.iter())
            .filter(|(s, _)| sec.saturating_sub(**s) < WINDOW as u64)
            .map(|(_, c)| *c as u64)
            .sum();
        total as f64 / WINDOW as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_thirty_seconds() {
        let mut r = Rate::default();
        r.add(1_000, 30);
        r.add(2_500, 30);
        assert_eq!(r.per_second(3_000), 2.0);
        assert_eq!(r.per_second(31_500), 1.0);
        assert_eq!(r.per_second(100_000), 0.0);
    }
}
