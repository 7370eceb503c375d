//! Leases of running tasks, by id and by deadline, so the actor finds what expired with one
//! ordered read and arms a single timer for the next deadline.

use std::collections::{BTreeSet, HashMap};

/// One running attempt.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The task.
    pub task_id: String,
    /// When the lease ends unless settled or heartbeated (ms).
    pub expires_at: u64,
}

/// The queue's running attempts.
#[derive(Debug, Default)]
pub struct Leases {
    by_id: HashMap<u64, Lease>,
    by_deadline: BTreeSet<(u64, u64)>,
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

    /// Records a lease.
    pub fn insert(&mut self, id: u64, task_id: String, expires_at: u64) {
        if let Some(old) = self.by_id.insert(
            id,
            Lease {
                task_id,
                expires_at,
            },
        ) {
            self.by_deadline.remove(&(old.expires_at, id));
        }
        self.by_deadline.insert((expires_at, id));
    }

    /// A lease by id.
    pub fn get(&self, id: u64) -> Option<Lease> {
        self.by_id.get(&id).cloned()
    }

    /// Forgets a lease (settled, returned or expired).
    pub fn remove(&mut self, id: u64) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        self.by_deadline.remove(&(lease.expires_at, id));
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
        l.insert(1, "a".into(), 100);
        l.insert(2, "b".into(), 50);
        assert_eq!(l.next_deadline(), Some(50));
        assert_eq!(l.expired(60), vec![2]);
        l.extend(2, 200);
        assert_eq!(l.expired(150), vec![1]);
        l.remove(1);
        assert_eq!(l.next_deadline(), Some(200));
        assert!(l.expired(199).is_empty());
        assert_eq!(l.len(), 1);
    }
}
