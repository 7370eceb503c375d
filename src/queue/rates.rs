//! Events per second over the last 30 seconds, in one-second buckets.

/// Window length in seconds.
const WINDOW: u64 = 30;

/// A sliding 30-second rate. Every loaded queue keeps two (adds, dispatches) inside its
/// actor, so it is kept small: one count per second of the window and the latest second
/// counted, rather than the second of each bucket beside it (128 bytes instead of 360).
#[derive(Debug, Default)]
pub struct Rate {
    /// Events of second `s` in bucket `s % WINDOW`, for the window ending at `latest`.
    counts: [u32; WINDOW as usize],
    /// The latest second counted.
    latest: u64,
}

impl Rate {
    /// Counts `n` events at `now_ms`.
    pub fn add(&mut self, now_ms: u64, n: u32) {
        let sec = now_ms / 1000;
        if sec > self.latest {
            // The buckets of the seconds since the latest (all of them after a window
            // without events) held seconds that have left the window.
            let fresh = (sec - self.latest).min(WINDOW);
            for s in sec + 1 - fresh..=sec {
                self.counts[bucket(s)] = 0;
            }
            self.latest = sec;
        } else if self.latest - sec >= WINDOW {
            // Older than the window (the wall clock stepped back): not counted.
            return;
        }
        let c = &mut self.counts[bucket(sec)];
        *c = c.saturating_add(n);
    }

    /// Events per second over the last 30 seconds.
    pub fn per_second(&self, now_ms: u64) -> f64 {
        let sec = now_ms / 1000;
        let first = (sec.max(self.latest) + 1).saturating_sub(WINDOW);
        let last = sec.min(self.latest);
        if first > last {
            return 0.0;
        }
        let total: u64 = (first..=last).map(|s| self.counts[bucket(s)] as u64).sum();
        total as f64 / WINDOW as f64
    }
}

fn bucket(sec: u64) -> usize {
    (sec % WINDOW) as usize
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

    #[test]
    fn agrees_with_a_list_of_every_event_as_time_goes_on() {
        // Seconds with events, gaps shorter and longer than the window, a clock that steps
        // back a little and a lot; the rate is compared at every second against a plain list.
        let mut r = Rate::default();
        let mut events: Vec<(u64, u32)> = Vec::new();
        let mut sec = 1_700_000_000u64;
        for step in 0..400u64 {
            sec = match step % 37 {
                0 => sec + 45,
                13 => sec.saturating_sub(3),
                29 => sec.saturating_sub(40),
                _ => sec + step % 3,
            };
            let n = (step % 5) as u32;
            let newest = events.iter().map(|e| e.0).max().unwrap_or(0);
            if sec + WINDOW > newest {
                events.push((sec, n));
            }
            r.add(sec * 1000 + step % 1000, n);
            for now in [sec, sec + 1, sec + 29, sec + 30] {
                let want: u64 = events
                    .iter()
                    .filter(|(s, _)| {
                        *s <= now && now - *s < WINDOW && newest.max(sec) - *s < WINDOW
                    })
                    .map(|(_, n)| *n as u64)
                    .sum();
                assert_eq!(
                    r.per_second(now * 1000),
                    want as f64 / 30.0,
                    "step {step}, now {now}"
                );
            }
        }
    }

    #[test]
    fn stays_small() {
        assert!(std::mem::size_of::<Rate>() <= 128);
    }
}
