//! Settling leases: complete, fail (retry with backoff or dead letter), heartbeat, and tasks
//! handed back by a poller that never received them.

use super::*;

impl QueueActor {
    /// Ends a running lease as a failed attempt (expiry, closed socket); false when the lease
    /// was not running any more.
    pub(super) fn fail_lease(
        &mut self,
        lease_id: u64,
        task_id: &str,
        failure: FailedAttempt,
        now: u64,
    ) -> Result<bool> {
        let held = self.store().task(&self.key, task_id)?;
        let Some(mut rec) = held.filter(|r| r.held_by(lease_id)) else {
            self.leases.remove(lease_id);
            self.lease_ended(lease_id);
            return Ok(false);
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let after = self.plan_failure(&mut rec, &mut txn, &mut meta, failure, now);
        txn.put_task(&self.key, &rec);
        self.commit(txn, meta)?;
        self.leases.remove(lease_id);
        self.lease_ended(lease_id);
        self.apply_failure(&rec.task_id, after);
        Ok(true)
    }

    /// Puts tasks that a poller never received back where they were, attempt not counted.
    pub(super) fn return_tasks(&mut self, leases: &[(String, u64)]) {
        for (task_id, lease_id) in leases {
            if let Err(e) = self.return_task(task_id, *lease_id) {
                log::error!("{}: returning {task_id} failed: {e}", self.key);
            }
        }
    }

    pub(super) fn return_task(&mut self, task_id: &str, lease_id: u64) -> Result<()> {
        let held = self.store().task(&self.key, task_id)?;
        let Some(mut rec) = held.filter(|r| r.held_by(lease_id)) else {
            return Ok(());
        };
        rec.attempt = rec.attempt.saturating_sub(1);
        let (pos, entry) = requeue_leased(&mut rec);
        let mut txn = Txn::default();
        let mut meta = self.meta;
        txn.put_task(&self.key, &rec);
        txn.del_inflight(&self.key, task_id);
        txn.put_ready(&self.key, pos, &entry);
        meta.in_flight = meta.in_flight.saturating_sub(1);
        meta.ready += 1;
        self.commit(txn, meta)?;
        self.leases.remove(lease_id);
        self.lease_ended(lease_id);
        self.backlog.insert(pos, entry);
        Ok(())
    }

    /// Plans what a failed attempt does to `rec`: retry (ready or delayed) or dead letter.
    pub(super) fn plan_failure(
        &mut self,
        rec: &mut TaskRecord,
        txn: &mut Txn,
        meta: &mut QueueMeta,
        failure: FailedAttempt,
        now: u64,
    ) -> AfterFailure {
        let FailedAttempt {
            error,
            non_retryable,
            retry_after_ms,
        } = failure;
        // A serial task goes back to its place, before its key's later tasks.
        let place = rec.lease.as_ref().map(|l| (l.order, l.ready_since()));
        rec.last_error = Some(error);
        rec.lease = None;
        rec.updated_at = now;
        txn.del_inflight(&self.key, &rec.task_id);
        meta.in_flight = meta.in_flight.saturating_sub(1);
        if rec.cancel_requested {
            rec.state = TaskState::Cancelled;
            txn.put_expiry(self.retention_end(now), &self.key, &rec.task_id);
            return AfterFailure::Cancelled;
        }
        if non_retryable || rec.retry.exhausted(rec.attempt) {
            rec.state = TaskState::Failed;
            txn.put_dead(&self.key, now, rec.seq, &rec.task_id);
            meta.dead += 1;
            return AfterFailure::Dead;
        }
        rec.state = TaskState::Pending;
        if let (true, Some((order, ready_at))) = (rec.serial, place) {
            rec.queued = Some(Queued::Ready { order });
            let pos = ReadyPos {
                priority: rec.priority,
                order,
                seq: rec.seq,
            };
            let entry = entry_of(rec, ready_at);
            txn.put_ready(&self.key, pos, &entry);
            meta.ready += 1;
            return AfterFailure::Ready(pos, entry);
        }
        let delay = retry_after_ms.unwrap_or_else(|| rec.retry.backoff_ms(rec.attempt));
        if delay == 0 {
            let (pos, entry) = self.enqueue_ready(rec, txn, meta, now);
            AfterFailure::Ready(pos, entry)
        } else {
            let due = now.saturating_add(delay);
            rec.queued = Some(Queued::Delayed { due });
            txn.put_delayed(&self.key, due, rec.seq, &entry_of(rec, due));
            meta.delayed += 1;
            AfterFailure::Delayed(due)
        }
    }

    pub(super) fn apply_failure(&mut self, task_id: &str, after: AfterFailure) {
        match after {
            AfterFailure::Cancelled => self.notify(task_id),
            AfterFailure::Dead => {
                self.metrics.failed_dead.inc();
                self.notify(task_id);
            }
            AfterFailure::Ready(pos, entry) => {
                self.metrics.failed_retry.inc();
                self.backlog.insert(pos, entry);
            }
            AfterFailure::Delayed(due) => {
                self.metrics.failed_retry.inc();
                self.next_delayed = Some(self.next_delayed.map_or(due, |d| d.min(due)));
            }
        }
    }

    /// Settles a batch of leases with one write (one `apply_batch`, one group commit for the
    /// caller to wait on); each item answers on its own, in order. A task settled twice in one
    /// batch starts a second write, so every settle reads the record the one before it wrote.
    pub(super) fn settle_all(&mut self, msgs: &[&Settle]) -> Vec<Result<Settlement>> {
        let now = self.now_ms();
        let mut answers: Vec<Option<Result<Settlement>>> = Vec::with_capacity(msgs.len());
        let mut batch = SettleBatchWrite::new(self.meta);
        for msg in msgs {
            if batch.task_ids.contains(msg.task_id.as_str()) {
                self.finish_settles(batch, &mut answers);
                batch = SettleBatchWrite::new(self.meta);
            }
            let answer = match self.plan_settle(msg, &mut batch, now) {
                Ok(Planned::Answered(settlement)) => Some(Ok(settlement)),
                Ok(Planned::Write(planned)) => {
                    batch.task_ids.insert(msg.task_id.clone());
                    batch.planned.push((answers.len(), planned));
                    None
                }
                Err(e) => Some(Err(e)),
            };
            answers.push(answer);
        }
        self.finish_settles(batch, &mut answers);
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::lease_lost())))
            .collect()
    }

    /// Plans one settle's writes into `batch`, or answers it at once when it needs none.
    pub(super) fn plan_settle(
        &mut self,
        msg: &Settle,
        batch: &mut SettleBatchWrite,
        now: u64,
    ) -> Result<Planned> {
        if let SettleOp::Fail {
            retry_after_ms: Some(ms),
            ..
        } = msg.op
        {
            crate::model::check_duration("retry_after_ms", ms)?;
        }
        let Some(mut rec) = self.store().task(&self.key, &msg.task_id)? else {
            return Err(Error::lease_lost());
        };
        let kind = match msg.op {
            SettleOp::Complete { .. } => SettleKind::Complete,
            SettleOp::Fail { .. } => SettleKind::Fail,
        };
        if !rec.held_by(msg.lease_id) {
            // A repeat of the settle that already succeeded answers the same.
            return match &rec.settled {
                Some(s) if s.lease_id == msg.lease_id && s.kind == kind => {
                    Ok(Planned::Answered(Settlement {
                        task_id: rec.task_id.clone(),
                        state: s.state,
                        next_attempt_at: s.next_attempt_at.map(rfc3339),
                        identity: None,
                    }))
                }
                _ => Err(Error::lease_lost()),
            };
        }
        let dispatched_at = rec.lease.as_ref().map_or(now, |l| l.dispatched_at);
        let identity = rec.lease.as_ref().map(|l| l.identity.clone());
        let txn = &mut batch.txn;
        let meta = &mut batch.meta;
        let after = match &msg.op {
            SettleOp::Complete { result } => {
                rec.state = TaskState::Completed;
                rec.result = Some(result.clone());
                rec.lease = None;
                rec.updated_at = now;
                txn.del_inflight(&self.key, &rec.task_id);
                meta.in_flight = meta.in_flight.saturating_sub(1);
                txn.put_expiry(self.retention_end(now), &self.key, &rec.task_id);
                None
            }
            SettleOp::Fail {
                error,
                non_retryable,
                retry_after_ms,
            } => Some(self.plan_failure(
                &mut rec,
                txn,
                meta,
                FailedAttempt {
                    error: error.clone(),
                    non_retryable: *non_retryable,
                    retry_after_ms: *retry_after_ms,
                },
                now,
            )),
        };
        let next_attempt_at = match &after {
            Some(AfterFailure::Delayed(due)) => Some(*due),
            Some(AfterFailure::Ready(..)) => Some(now),
            _ => None,
        };
        rec.settled = Some(Settled {
            lease_id: msg.lease_id,
            kind,
            state: rec.state,
            next_attempt_at,
        });
        txn.put_task(&self.key, &rec);
        Ok(Planned::Write(PlannedSettle {
            lease_id: msg.lease_id,
            ran_ms: now.saturating_sub(dispatched_at),
            after,
            answer: Settlement {
                task_id: rec.task_id,
                state: rec.state,
                next_attempt_at: next_attempt_at.map(rfc3339),
                identity,
            },
        }))
    }

    /// Writes a planned batch; then, only if the write succeeded, changes memory (leases,
    /// credit, backlog) and fills in each planned settle's answer.
    pub(super) fn finish_settles(
        &mut self,
        batch: SettleBatchWrite,
        answers: &mut [Option<Result<Settlement>>],
    ) {
        if batch.planned.is_empty() {
            return;
        }
        if let Err(e) = self.commit(batch.txn, batch.meta) {
            for (i, _) in batch.planned {
                answers[i] = Some(Err(e.clone()));
            }
            return;
        }
        for (i, p) in batch.planned {
            self.leases.remove(p.lease_id);
            self.lease_ended(p.lease_id);
            self.metrics.task_run.observe(p.ran_ms as f64 / 1000.0);
            match p.after {
                None => {
                    self.metrics.completed.inc();
                    self.notify(&p.answer.task_id);
                }
                Some(after) => self.apply_failure(&p.answer.task_id, after),
            }
            answers[i] = Some(Ok(p.answer));
        }
    }

    pub(super) fn retention_end(&self, now: u64) -> u64 {
        now.saturating_add(self.shared.config.completed_retention.as_millis() as u64)
    }

    pub(super) fn heartbeat(&mut self, msg: &Heartbeat) -> Result<HeartbeatAnswer> {
        let now = self.now_ms();
        let Some(mut rec) = self.store().task(&self.key, &msg.task_id)? else {
            return Err(Error::lease_lost());
        };
        let hb_timeout = rec.heartbeat_timeout_ms;
        let held = rec.held_by(msg.lease_id);
        let Some(lease) = rec.lease.as_mut().filter(|_| held) else {
            return Err(Error::lease_lost());
        };
        if now >= lease.expires_at() {
            return Err(Error::lease_lost());
        }
        if let Some(h) = hb_timeout {
            lease.heartbeat_deadline = Some(now.saturating_add(h));
        }
        if let Some(ms) = msg.lease_for_ms {
            lease.close_deadline = now.saturating_add(ms);
        }
        let expires_at = lease.expires_at();
        if let Some(details) = &msg.details {
            rec.heartbeat_details = Some(details.clone());
        }
        let mut txn = Txn::default();
        txn.put_task(&self.key, &rec);
        self.commit(txn, self.meta)?;
        self.leases.extend(msg.lease_id, expires_at);
        Ok(HeartbeatAnswer {
            lease_expires_at: rfc3339(expires_at),
            cancel_requested: rec.cancel_requested,
        })
    }
}
