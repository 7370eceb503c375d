//! One HTTP worker of the generator: it polls, and settles what it got the way `--settle`
//! says (a complete per task, one settle-many per poll, or complete with `next`, which polls
//! in the same request), until the run is done.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;

use super::http::{parse_poll, Answer, Conn, NextAnswer, PollAnswer};
use super::workers::{histogram, Shared};
use super::{BenchError, BenchResult, SettleMode};

/// An HTTP worker and what it sends.
pub struct HttpWorker {
    /// Its connection.
    pub conn: Conn,
    /// `{q}/poll`.
    pub poll_path: Arc<str>,
    /// The poll's body.
    pub poll_body: Bytes,
    /// A complete's body with `next` (the poll's fields).
    pub next_body: Bytes,
    /// The polls' wait.
    pub wait: Duration,
    /// How it settles.
    pub settle: SettleMode,
    /// The run.
    pub shared: Arc<Shared>,
}

impl HttpWorker {
    /// Runs until the run is done; answers the receipt histogram.
    pub async fn run(mut self) -> BenchResult<Histogram<u64>> {
        let mut hist = histogram();
        let mut done = self.shared.done();
        // A complete's answer whose `next` holds the next tasks, when the last settle had one.
        let mut next: Option<Answer> = None;
        loop {
            if self.shared.is_done() {
                return Ok(hist);
            }
            let (answer, from_next) = match next.take() {
                Some(a) => (a, true),
                None => {
                    let poll = self
                        .conn
                        .poll(&self.poll_path, self.poll_body.clone(), self.wait);
                    tokio::select! {
                        biased;
                        _ = done.wait_for(|d| *d) => return Ok(hist),
                        a = poll => (a?, false),
                    }
                }
            };
            let tasks: PollAnswer<'_> = if from_next {
                serde_json::from_slice::<NextAnswer<'_>>(&answer.body)
                    .map_err(|e| BenchError::new(format!("complete with next: {e}")))?
                    .next
            } else {
                parse_poll(&answer.body)?
            };
            let now = self.shared.now_ns();
            for task in &tasks.tasks {
                self.shared.on_received(&mut hist, task.payload.get(), now);
            }
            let leases: Vec<String> = tasks.tasks.iter().map(|t| t.lease.to_string()).collect();
            drop(tasks);
            next = self.settle(&leases, &mut done).await?;
        }
    }

    /// Settles `leases`; with `next`, the last one's complete brings the next tasks (its
    /// answer is returned).
    async fn settle(
        &mut self,
        leases: &[String],
        done: &mut tokio::sync::watch::Receiver<bool>,
    ) -> BenchResult<Option<Answer>> {
        let Some((last, rest)) = leases.split_last() else {
            return Ok(None);
        };
        let mode = match self.settle {
            SettleMode::Next if self.shared.all_received() => SettleMode::Batch,
            mode => mode,
        };
        match mode {
            SettleMode::Single => {
                for lease in leases {
                    let ok = self.conn.complete(lease).await?;
                    self.count(u64::from(ok), u64::from(!ok));
                }
                Ok(None)
            }
            SettleMode::Batch => {
                let refs: Vec<&str> = leases.iter().map(String::as_str).collect();
                let (ok, lost) = self.conn.settle_all(&refs).await?;
                self.count(ok, lost);
                Ok(None)
            }
            SettleMode::Next => {
                if !rest.is_empty() {
                    let refs: Vec<&str> = rest.iter().map(String::as_str).collect();
                    let (ok, lost) = self.conn.settle_all(&refs).await?;
                    self.count(ok, lost);
                }
                let complete = self
                    .conn
                    .complete_next(last, self.next_body.clone(), self.wait);
                let answer = tokio::select! {
                    biased;
                    // The run ended while the complete's poll waits: the task was settled
                    // (or will be) all the same; nothing more is counted.
                    _ = done.wait_for(|d| *d) => return Ok(None),
                    a = complete => a?,
                };
                match answer {
                    Some(a) => {
                        self.count(1, 0);
                        Ok(Some(a))
                    }
                    None => {
                        self.count(0, 1);
                        Ok(None)
                    }
                }
            }
        }
    }

    fn count(&self, completed: u64, lost: u64) {
        for _ in 0..completed {
            self.shared.on_completed();
        }
        self.shared.lost.fetch_add(lost, Ordering::Relaxed);
    }
}
