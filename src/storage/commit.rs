//! Group commit: one flusher thread for the whole database.
//!
//! A writer applies its batch to sled (in memory and the log buffer), then asks for durability.
//! The flusher takes every request that arrived while the previous flush ran and covers them
//! all with one `flush` (one fsync), so durability costs one flush per batch, not per write.
//! A request is only taken after its write was applied, so the flush that answers it covers it.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

type Waiter = oneshot::Sender<Result<()>>;

/// A handle to the flusher; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: Option<mpsc::Sender<Waiter>>,
}

impl GroupCommit {
    /// Starts the flusher thread for `db` (`fsync = false`: no flusher, sled flushes on its own
    /// timer and writes are answered at once).
    pub fn start(db: sled::Db, fsync: bool, metrics: Arc<Metrics>) -> Self {
        if !fsync {
            return GroupCommit { tx: None };
        }
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("tasq-flusher".into())
            .spawn(move || run(db, rx, metrics))
            .expect("spawning the flusher thread");
        GroupCommit { tx: Some(tx) }
    }

    /// Resolves once every write applied before this call is on disk.
    pub async fn durable(&self) -> Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (done, wait) = oneshot::channel();
        tx.send(done)
            .map_err(|_| Error::Unavailable("the storage flusher has stopped".into()))?;
        wait.await
            .map_err(|_| Error::Unavailable("the storage flusher has stopped".into()))?
    }
}

fn run(db: sled::Db, rx: mpsc::Receiver<Waiter>, metrics: Arc<Metrics>) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let started = Instant::now();
        let result = db.flush().map(|_| ()).map_err(|e| {
            log::error!("storage flush failed: {e}");
            Error::Unavailable(format!("storage flush failed: {e}"))
        });
        metrics
            .storage_flush_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics
            .storage_flush_batch_size
            .observe(waiters.len() as f64);
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
