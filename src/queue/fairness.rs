//! Fair dispatch across fairness keys: stride scheduling, decided when a task is enqueued.
//!
//! Each task gets a virtual "pass" at enqueue, `max(key's last pass, level's current pass) +
//! STRIDE / weight`, and the ready index sorts by (priority, pass, seq). Dispatching in index
//! order then shares each priority level across keys in proportion to their weights, and a new
//! key starts at the current pass instead of behind another key's flood. Tasks without a key
//! share the key "". Only keys still ahead of the current pass carry information, so the
//! per-key map is pruned to those and capped, keeping memory bounded with millions of keys.

use std::collections::HashMap;

/// Pass advance of one task of weight 1.
pub const STRIDE: u64 = 1_000_000;
/// Most fairness keys remembered per queue.
const MAX_KEYS: usize = 100_000;

/// Virtual time of one queue.
#[derive(Debug, Default)]
pub struct FairClock {
    /// The pass of the last task dispatched, per priority (index 1–5).
    current: [u64; 6],
    /// The last pass given to each key, per priority.
    last: HashMap<(u8, String), u64>,
}

impl FairClock {
    /// The pass for a new ready task of `key` with `weight` at `priority`.
    pub fn enqueue(&mut self, priority: u8, key: Option<&str>, weight: f64) -> u64 {
        let p = priority.min(5) as usize;
        let stride = (STRIDE as f64 / weight.max(0.001)).round().max(1.0) as u64;
        let slot = (priority, key.unwrap_or("").to_string());
        let start = self
            .last
            .get(&slot)
            .copied()
            .unwrap_or(0)
            .max(self.current[p]);
        let pass = start.saturating_add(stride);
        if self.last.len() >= MAX_KEYS && !self.last.contains_key(&slot) {
            self.prune();
        }
        self.last.insert(slot, pass);
        pass
    }

    /// Advances the level's current pass past a dispatched task.
    pub fn dispatched(&mut self, priority: u8, pass: u64) {
        let p = priority.min(5) as usize;
        self.current[p] = self.current[p].max(pass);
    }

    /// Starts the clock at the first ready pass of each level (after a reload).
    pub fn resume(&mut self, priority: u8, first_pass: u64) {
        let p = priority.min(5) as usize;
        self.current[p] = self.current[p].max(first_pass.saturating_sub(1));
    }

    /// Forgets keys with no pass ahead of their level's current one (they carry nothing);
    /// if still over the cap, forgets arbitrary keys (they lose only their accumulated debt).
    fn prune(&mut self) {
        let current = self.current;
        self.last
            .retain(|(p, _), pass| *pass > current[(*p).min(5) as usize]);
        if self.last.len() >= MAX_KEYS {
            let excess = self.last.len() - MAX_KEYS / 2;
            let victims: Vec<_> = self.last.keys().take(excess).cloned().collect();
            for v in victims {
                self.last.remove(&v);
            }
        }
    }

    /// Keys remembered (for tests and diagnostics).
    pub fn keys(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Enqueues `n` tasks per key, then dispatches in pass order; returns the first `take`.
    fn shares(keys: &[(&str, f64)], n: usize, take: usize) -> HashMap<String, usize> {
        let mut clock = FairClock::default();
        let mut all = Vec::new();
        let mut seq = 0;
        for (k, w) in keys {
            for _ in 0..n {
                seq += 1;
                all.push((clock.enqueue(3, Some(k), *w), seq, k.to_string()));
            }
        }
        all.sort();
        let mut out = HashMap::new();
        for (pass, _, k) in all.into_iter().take(take) {
            clock.dispatched(3, pass);
            *out.entry(k).or_default() += 1;
        }
        out
    }

    #[test]
    fn equal_keys_share_equally_even_after_a_flood() {
        let s = shares(&[("flood", 1.0), ("small", 1.0)], 1000, 200);
        assert_eq!(s["flood"], 100);
        assert_eq!(s["small"], 100);
    }

    #[test]
    fn weights_set_the_shares() {
        let s = shares(&[("a", 3.0), ("b", 2.0), ("c", 1.0)], 1000, 600);
        assert!((s["a"] as i64 - 300).abs() <= 2, "{s:?}");
        assert!((s["b"] as i64 - 200).abs() <= 2, "{s:?}");
        assert!((s["c"] as i64 - 100).abs() <= 2, "{s:?}");
    }

    #[test]
    fn a_late_key_is_not_queued_behind_a_flood() {
        let mut clock = FairClock::default();
        let flood: Vec<u64> = (0..1000)
            .map(|_| clock.enqueue(3, Some("a"), 1.0))
            .collect();
        clock.dispatched(3, flood[9]);
        let late = clock.enqueue(3, Some("b"), 1.0);
        assert!(late < flood[20], "late {late} flood[20] {}", flood[20]);
    }

    #[test]
    fn no_key_is_fifo() {
        let mut clock = FairClock::default();
        let passes: Vec<u64> = (0..10).map(|_| clock.enqueue(3, None, 1.0)).collect();
        assert!(passes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn memory_stays_bounded() {
        let mut clock = FairClock::default();
        for i in 0..(MAX_KEYS + 10_000) {
            let pass = clock.enqueue(3, Some(&format!("k{i}")), 1.0);
            clock.dispatched(3, pass);
        }
        assert!(clock.keys() <= MAX_KEYS, "{}", clock.keys());
    }
}
