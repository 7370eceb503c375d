//! Operator requests: cancel, configure the rate limit, redrive dead letters, schedule-to-start
//! expiry, and the queue's stats for describe.

use super::*;

impl QueueActor {
    /// Takes a pending task out of the ready or delayed index; returns its ready position, so
    /// the caller can drop it from the window once the change is committed.
    pub(super) fn dequeue(
        &self,
        rec: &mut TaskRecord,
        txn: &mut Txn,
        meta: &mut QueueMeta,
    ) -> Option<ReadyPos> {
        match rec.queued.take()? {
            Queued::Ready { order } => {
                let pos = ReadyPos {
                    priority: rec.priority,
                    order,
                    seq: rec.seq,
                };
                txn.del_ready(&self.key, pos);
                meta.ready = meta.ready.saturating_sub(1);
                Some(pos)
            }
            Queued::Delayed { due } => {
                txn.del_delayed(&self.key, due, rec.seq);
                meta.delayed = meta.delayed.saturating_sub(1);
                None
            }
        }
    }

    pub(super) fn cancel(&mut self, task_id: &str) -> Result<TaskRecord> {
        let now = self.now_ms();
        let Some(mut rec) = self.store().task(&self.key, task_id)? else {
            return Err(Error::NotFound(format!(
                "no task {task_id:?} in {}",
                self.key
            )));
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        match rec.state {
            TaskState::Pending => {
                let removed = self.dequeue(&mut rec, &mut txn, &mut meta);
                rec.state = TaskState::Cancelled;
                rec.updated_at = now;
                txn.put_expiry(self.retention_end(now), &self.key, task_id);
                txn.put_task(&self.key, &rec);
                self.commit(txn, meta)?;
                if let Some(pos) = removed {
                    self.backlog.remove(&pos);
                }
                self.notify(task_id);
            }
            TaskState::Running if !rec.cancel_requested => {
                rec.cancel_requested = true;
                rec.updated_at = now;
                txn.put_task(&self.key, &rec);
                self.commit(txn, meta)?;
            }
            _ => {}
        }
        Ok(rec)
    }

    pub(super) fn notify(&mut self, task_id: &str) {
        if let Some(watchers) = self.watchers.remove(task_id) {
            for w in watchers {
                let _ = w.send(());
            }
        }
    }

    pub(super) fn rate_limit_view(&self) -> RateLimitView {
        match self.throttle.limit() {
            Some((l, source)) => RateLimitView {
                max_tasks_per_second: Some(l.max_tasks_per_second),
                burst: Some(l.burst),
                source: source.as_str(),
            },
            None => RateLimitView {
                max_tasks_per_second: None,
                burst: None,
                source: "none",
            },
        }
    }

    pub(super) fn set_config(&mut self, limit: Option<RateLimit>) -> Result<RateLimitView> {
        let meta = QueueMeta {
            rate_limit: limit,
            ..self.meta
        };
        self.commit(Txn::default(), meta)?;
        self.apply_limit();
        Ok(match limit {
            Some(l) => RateLimitView {
                max_tasks_per_second: Some(l.max_tasks_per_second),
                burst: Some(l.burst),
                source: Source::Api.as_str(),
            },
            None => RateLimitView {
                max_tasks_per_second: None,
                burst: None,
                source: "none",
            },
        })
    }

    /// Puts dead letters back as pending with attempts reset; `None` = all of them.
    pub(super) fn redrive(&mut self, task_ids: Option<&[String]>) -> Result<usize> {
        let now = self.now_ms();
        let records: Vec<TaskRecord> = match task_ids {
            Some(ids) => {
                let mut recs = Vec::with_capacity(ids.len());
                let mut missing = Vec::new();
                for id in ids {
                    match self.store().task(&self.key, id)? {
                        Some(r) if r.state.is_dead_letter() => recs.push(r),
                        _ => missing.push(id.as_str()),
                    }
                }
                if !missing.is_empty() {
                    return Err(Error::NotFound(format!(
                        "not dead letters of {}: {}",
                        self.key,
                        missing.join(", ")
                    )));
                }
                recs
            }
            None => {
                let mut recs = Vec::new();
                let mut before = None;
                loop {
                    let (ids, next) =
                        self.store()
                            .dead_letters(&self.key, before.as_deref(), 1000)?;
                    for id in ids {
                        if let Some(r) = self.store().task(&self.key, &id)? {
                            if r.state.is_dead_letter() {
                                recs.push(r);
                            }
                        }
                    }
                    match next {
                        Some(n) => before = Some(n),
                        None => break,
                    }
                }
                recs
            }
        };
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut ready = Vec::with_capacity(records.len());
        let mut seen = HashSet::new();
        for mut rec in records {
            if !seen.insert(rec.task_id.clone()) {
                continue;
            }
            txn.del_dead(&self.key, rec.updated_at, rec.seq);
            meta.dead = meta.dead.saturating_sub(1);
            rec.attempt = 0;
            rec.settled = None;
            rec.updated_at = now;
            // The schedule-to-start wait was used up; a redriven task waits as long as it must.
            rec.schedule_to_start_timeout_ms = None;
            ready.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, now));
            txn.put_task(&self.key, &rec);
        }
        self.commit(txn, meta)?;
        let n = ready.len();
        for (pos, entry) in ready {
            self.backlog.insert(pos, entry);
        }
        Ok(n)
    }

    /// Tasks whose schedule-to-start deadline passed before a first dispatch become
    /// `timed_out` dead letters.
    pub(super) fn expire_waiting(&mut self, task_ids: &[String]) -> Result<()> {
        let now = self.now_ms();
        for task_id in task_ids {
            let Some(mut rec) = self.store().task(&self.key, task_id)? else {
                continue;
            };
            let Some(timeout) = rec.schedule_to_start_timeout_ms else {
                continue;
            };
            let deadline = rec.added_at.saturating_add(timeout);
            let mut txn = Txn::default();
            let mut meta = self.meta;
            txn.del_waiting(deadline, &self.key, task_id);
            let waiting = rec.state == TaskState::Pending && rec.attempt == 0 && deadline <= now;
            let mut removed = None;
            if waiting {
                removed = self.dequeue(&mut rec, &mut txn, &mut meta);
                rec.state = TaskState::TimedOut;
                rec.updated_at = now;
                rec.last_error = Some(TaskError {
                    message: format!(
                        "schedule-to-start timeout: not dispatched within {timeout} ms"
                    ),
                    kind: Some("ScheduleToStartTimeout".into()),
                });
                txn.put_dead(&self.key, now, rec.seq, task_id);
                meta.dead += 1;
                txn.put_task(&self.key, &rec);
            }
            self.commit(txn, meta)?;
            if waiting {
                if let Some(pos) = removed {
                    self.backlog.remove(&pos);
                }
                self.metrics.expired_schedule_to_start.inc();
                self.notify(task_id);
            }
        }
        Ok(())
    }

    /// The pollers seen lately, open sockets counted as seen now.
    pub(super) fn refresh_pollers(&mut self, now: u64) {
        for socket in self.sockets.values() {
            // An open socket is a live poller, however long ago it connected.
            self.seen.saw(
                &socket.identity,
                now,
                socket.task_types.clone(),
                socket.build_id.clone(),
                None,
            );
        }
        self.seen.prune(now);
    }

    pub(super) fn stats(&mut self) -> Stats {
        let now = self.now_ms();
        self.refresh_pollers(now);
        Stats {
            backlog_count: self.meta.ready,
            backlog_age_ms: self
                .backlog
                .oldest_ready_at()
                .map_or(0, |t| now.saturating_sub(t)),
            delayed_count: self.meta.delayed,
            in_flight_count: self.leases.len() as u64,
            dead_letter_count: self.meta.dead,
            add_rate: self.add_rate.per_second(now),
            dispatch_rate: self.dispatch_rate.per_second(now),
            pollers: self.seen.list(),
            rate_limit: self.rate_limit_view(),
            registration_mismatch: self.seen.mismatch(self.backlog.types()),
            parked_polls: self.waiters.len(),
        }
    }
}
