//! Whether the store may still acknowledge writes.
//!
//! A failed write or sync is final for the open store: after a failed writeback the kernel
//! may drop the pages it could not write and report the next sync as a success without them
//! (PostgreSQL's "fsyncgate", 2018), so once one fails, no later write is acknowledged. Every
//! write is refused with 503 from then on, `/readyz` answers 503 and `tasq_storage_healthy`
//! drops to 0; the server then exits ([`crate::server`]) so that a supervisor starts it again
//! and sled recovers from what is on disk.

use std::sync::OnceLock;

use prometheus::IntGauge;
use tokio::sync::Notify;

use crate::error::{Error, Result};

/// The store's health: healthy until the first failed write or sync, then failed for good.
pub struct Health {
    /// The first failure, once there was one.
    failure: OnceLock<String>,
    /// `tasq_storage_healthy`.
    gauge: IntGauge,
    /// Woken once, at the first failure.
    failed: Notify,
}

impl Health {
    /// A healthy store; sets `gauge` to 1.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(1);
        Health {
            failure: OnceLock::new(),
            gauge,
            failed: Notify::new(),
        }
    }

    /// True until a write or sync failed.
    pub fn is_healthy(&self) -> bool {
        self.failure.get().is_none()
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records a failed write or sync (the first one is kept) and stops acknowledgements.
    pub fn fail(&self, what: &str) {
        if self.failure.set(what.to_string()).is_ok() {
            log::error!("storage failed, no write is acknowledged from now on: {what}");
            self.gauge.set(0);
            // Wakes every `failed()` future made so far, polled or not; later ones see
            // the failure before they wait.
            self.failed.notify_waiters();
        }
    }

    /// `Ok` while healthy; else the 503 that every write is answered with.
    pub fn check(&self) -> Result<()> {
        match self.failure.get() {
            None => Ok(()),
            Some(what) => Err(Error::Unavailable(format!(
                "storage failed ({what}); no write is acknowledged until tasq restarts \
                 and recovers the store"
            ))),
        }
    }

    /// Resolves at the first failure (at once if there was one).
    pub async fn failed(&self) {
        loop {
            let notified = self.failed.notified();
            if !self.is_healthy() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_refuses_every_write_after_it() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let health = Health::new(gauge.clone());
        assert!(health.check().is_ok());
        assert_eq!(gauge.get(), 1);
        health.fail("fdatasync: EIO");
        health.fail("a later one");
        assert_eq!(health.failure(), Some("fdatasync: EIO"));
        assert_eq!(gauge.get(), 0);
        let err = health.check().unwrap_err();
        assert_eq!(err.code(), "unavailable");
        // Already failed: resolves at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), health.failed())
            .await
            .expect("failed() resolves once failed");
    }
}
