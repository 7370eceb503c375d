//! Leases of running tasks, by id and by deadline, so the actor finds what expired with one
//! ordered read and arms a single timer for the next deadline; and the serial keys held by a
//! running task (no second task of such a key is given out meanwhile).

use std::collections::{BTreeSet, HashMap};

/// One running attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The task.
    pub task_id: String,
    /// When the lease ends unless settled or heartbeated (ms).
    pub expires_at: u64,
    /// The serial key it holds, if the task is serial.
    pub serial_key: Option<Box<str>>,
}

/// The queue's running attempts.
#[derive(Debug, Default)]
pub struct Leases {
    by_id: HashMap<u64, Lease>,
    by_deadline: BTreeSet<(u64, u64)>,
    /// Running serial tasks per serial key.
    busy: HashMap<Box<str>, u32>,
}

impl Leases {
    /// Number of running attempts.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when nothing runs.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Records a lease (holding `serial_key`, for a serial task).
    pub fn insert(
        &mut self,
        id: u64,
        task_id: String,
        expires_at: u64,
        serial_key: Option<Box<str>>,
    ) {
        if let Some(k) = &serial_key {
            *self.busy.entry(k.clone()).or_default() += 1;
        }
        let lease = Lease {
            task_id,
            expires_at,
            serial_key,
        };
        if let Some(old) = self.by_id.insert(id, lease) {
            self.by_deadline.remove(&(old.expires_at, id));
            self.release(old.serial_key.as_deref());
        }
        self.by_deadline.insert((expires_at, id));
    }

    fn release(&mut self, key: Option<&str>) {
        let Some(k) = key else {
            return;
        };
        if let Some(n) = self.busy.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                self.busy.remove(k);
            }
        }
    }

    /// True while a task of serial key `key` runs.
    pub fn busy(&self, key: &str) -> bool {
        self.busy.contains_key(key)
    }

    /// True while any serial task runs.
    pub fn any_busy(&self) -> bool {
        !self.busy.is_empty()
    }

    /// A lease by id.
    pub fn get(&self, id: u64) -> Option<Lease> {
        self.by_id.get(&id).cloned()
    }

    /// Forgets a lease (settled, returned or expired).
    pub fn remove(&mut self, id: u64) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(lease.expires_at, id));
        self.release(lease.serial_key.as_deref());
        Some(lease)
    }

    /// Moves a lease's deadline (a heartbeat).
    pub fn extend(&mut self, id: u64, expires_at: u64) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            self.by_deadline.remove(&(lease.expires_at, id));
            lease.expires_at = expires_at;
            self.by_deadline.insert((expires_at, id));
        }
    }

    /// The ids of leases whose deadline is at or before `now`.
    pub fn expired(&self, now: u64) -> Vec<u64> {
        self.by_deadline
            .range(..=(now, u64::MAX))
            .map(|(_, id)| *id)
            .collect()
    }

    /// The next deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first().map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_deadlines_and_extensions() {
        let mut l = Leases::default();
        l.insert(1, "a".into(), 100, None);
        l.insert(2, "b".into(), 50, Some("g".into()));
        assert!(l.busy("g") && !l.busy("h"));
        assert_eq!(l.next_deadline(), Some(50));
        assert_eq!(l.expired(60), vec![2]);
        l.extend(2, 200);
        assert_eq!(l.expired(150), vec![1]);
        l.remove(1);
        assert_eq!(l.next_deadline(), Some(200));
        assert!(l.expired(199).is_empty());
        assert_eq!(l.len(), 1);
        assert!(l.busy("g"), "a serial key is held until its lease ends");
        l.remove(2);
        assert!(!l.busy("g") && !l.any_busy());
    }
}
