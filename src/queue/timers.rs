//! The actor's one timer: delayed tasks coming due, leases running out, the idle stop; and
//! pacing, so one busy queue does not starve the others on its thread.

use super::*;

impl QueueActor {
    /// Lets the other queue actors on this thread run after [`YIELD_EVERY`] of work. actix
    /// handles every message in a mailbox before it returns to the thread's scheduler, so a
    /// queue whose mailbox never empties (producers that send again as soon as answered)
    /// starved every queue that shares its thread: a describe of another queue waited over a
    /// minute behind a bulk load. Waiting on a one-poll future ends the mailbox loop for now.
    pub(super) fn pace(&mut self, ctx: &mut Context<Self>) {
        if self.last_yield.elapsed() >= YIELD_EVERY {
            self.last_yield = Instant::now();
            ctx.wait(actix::fut::wrap_future(tokio::task::yield_now()));
        }
    }

    /// Moves delayed tasks that are due into the ready index.
    pub(super) fn promote_due(&mut self, now: u64) -> Result<()> {
        let (due, next) = self
            .shared
            .store
            .due_delayed(&self.key, now, PROMOTE_BATCH)?;
        self.next_delayed = next;
        if due.is_empty() {
            return Ok(());
        }
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut promoted = Vec::with_capacity(due.len());
        for (at, seq, entry) in due {
            txn.del_delayed(&self.key, at, seq);
            meta.delayed = meta.delayed.saturating_sub(1);
            let Some(mut rec) = self.store().task(&self.key, &entry.task_id)? else {
                continue;
            };
            if rec.state != TaskState::Pending || rec.queued != Some(Queued::Delayed { due: at }) {
                continue;
            }
            promoted.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, at));
            txn.put_task(&self.key, &rec);
        }
        self.commit(txn, meta)?;
        for (pos, entry) in promoted {
            self.backlog.insert(pos, entry);
        }
        Ok(())
    }

    /// Ends leases whose deadline passed: each is a failed attempt, retried per policy.
    pub(super) fn expire_leases(&mut self, now: u64) -> Result<()> {
        for lease_id in self.leases.expired(now) {
            let Some(lease) = self.leases.get(lease_id) else {
                continue;
            };
            let Some(rec) = self.store().task(&self.key, &lease.task_id)? else {
                self.leases.remove(lease_id);
                continue;
            };
            let by_heartbeat = rec
                .lease
                .as_ref()
                .filter(|l| l.id == lease_id)
                .is_some_and(|l| l.heartbeat_deadline.is_some_and(|h| h < l.close_deadline));
            let (message, kind) = if by_heartbeat {
                (
                    "heartbeat timeout: no heartbeat in time",
                    "HeartbeatTimeout",
                )
            } else {
                (
                    "start-to-close timeout: the lease ran out",
                    "StartToCloseTimeout",
                )
            };
            let failure = FailedAttempt {
                error: TaskError {
                    message: message.into(),
                    kind: Some(kind.into()),
                },
                non_retryable: false,
                retry_after_ms: None,
            };
            if self.fail_lease(lease_id, &lease.task_id, failure, now)? {
                if by_heartbeat {
                    self.metrics.expired_heartbeat.inc();
                } else {
                    self.metrics.expired_start_to_close.inc();
                }
            }
        }
        Ok(())
    }

    /// Nobody waits on the queue and nothing of it runs: its backlog, if any, is on disk, and
    /// a delayed task falling due later wakes it through the registry (`QueueStopped`).
    pub(super) fn is_idle(&self, now: u64) -> bool {
        let idle_ms = self.shared.config.queue_idle_timeout.as_millis() as u64;
        self.waiters.is_empty()
            && self.sockets.is_empty()
            && self.leases.is_empty()
            && self.watchers.is_empty()
            && self
                .next_delayed
                .is_none_or(|d| d > now.saturating_add(idle_ms))
    }

    pub(super) fn on_timer(&mut self, ctx: &mut Context<Self>) {
        let now = self.now_ms();
        if let Err(e) = self.expire_leases(now) {
            log::error!("{}: expiring leases failed: {e}", self.key);
        }
        if self.next_delayed.is_some_and(|d| d <= now) {
            if let Err(e) = self.promote_due(now) {
                log::error!("{}: promoting delayed tasks failed: {e}", self.key);
            }
        }
        self.throttled = false;
        self.dispatch_waiting(ctx);
        self.watchers.retain(|_, w| {
            w.retain(|s| !s.is_closed());
            !w.is_empty()
        });
        let idle_ms = self.shared.config.queue_idle_timeout.as_millis() as u64;
        if self.is_idle(now) && self.idle_since.is_some_and(|s| now >= s + idle_ms) {
            log::debug!("{}: idle, stopping", self.key);
            ctx.stop();
            return;
        }
        self.after_change(ctx);
    }

    /// Reports gauges and arms the timer for the next thing due.
    pub(super) fn after_change(&mut self, ctx: &mut Context<Self>) {
        self.pace(ctx);
        let now = self.now_ms();
        self.metrics.report(GaugeValues {
            pollers: self.waiters.len() as i64,
            backlog: self.meta.ready as i64,
            backlog_age_seconds: self
                .backlog
                .oldest_ready_at()
                .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
            in_flight: self.leases.len() as i64,
            dead: self.meta.dead as i64,
            mismatch: self.seen.mismatch(self.backlog.types()) as i64,
        });
        let idle_ms = self.shared.config.queue_idle_timeout.as_millis() as u64;
        let idle_at = if self.is_idle(now) {
            let since = *self.idle_since.get_or_insert(now);
            Some(since + idle_ms)
        } else {
            self.idle_since = None;
            None
        };
        // Parked pollers wait for a token, or for a routed task's fallback.
        let serving = !self.waiters.is_empty() && self.meta.ready > 0;
        let token_at = if serving && self.throttled {
            self.throttle
                .next_token_in(self.shared.clock.instant())
                .map(|d| now + d.as_millis() as u64 + 1)
        } else {
            None
        };
        let fallback_at = if serving {
            self.backlog.next_fallback(now)
        } else {
            None
        };
        let next = [
            self.leases.next_deadline(),
            self.next_delayed,
            idle_at,
            token_at,
            fallback_at,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = next {
            self.arm(at, ctx);
        }
    }

    pub(super) fn arm(&mut self, at: u64, ctx: &mut Context<Self>) {
        if let Some((armed, handle)) = self.timer {
            if armed <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let wait = Duration::from_millis(at.saturating_sub(self.now_ms()));
        let handle = ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.on_timer(ctx);
        });
        self.timer = Some((at, handle));
    }
}
