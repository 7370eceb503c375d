//! Dispatch: leasing ready tasks to polls and waiters in one write, and answering them.

use super::*;

/// Records read ahead at most, for one dispatch.
const PREFETCH: usize = 256;

impl QueueActor {
    /// When a read costs the store a round trip: makes sure the records of the first `n`
    /// ready tasks (the dispatch under way leases them in that order) are in the store's
    /// memory, reading the next [`PREFETCH`] in one go when one is not. A failed read ahead
    /// is left to the reads one by one.
    pub(super) fn prefetch(&mut self, n: usize) {
        if !self.shared.store.prefers_batched_reads() || n == 0 {
            return;
        }
        let ids = self.backlog.first_ids(PREFETCH.max(n));
        if let Err(e) = self.shared.store.read_ahead(&self.key, &ids, n) {
            log::warn!("{}: reading ahead failed: {e}", self.key);
        }
    }

    /// Plans the lease of one ready task found at `pos` into `batch`; `None` when the index
    /// entry was stale (its deletion joins the batch).
    pub(super) fn lease_entry(
        &mut self,
        pos: ReadyPos,
        entry: Entry,
        identity: &str,
        now: u64,
        batch: &mut LeaseBatch,
    ) -> Result<Option<TaskRecord>> {
        let read = match self.store().task(&self.key, &entry.task_id) {
            // A record that cannot be read (damaged on disk) must not hold up every poll
            // behind it: its entry leaves the ready index, the record stays for
            // `tasq store verify` to report.
            Err(Error::Internal(e)) => {
                log::error!(
                    "{}: task {} cannot be read ({e}); it is left out of dispatch",
                    self.key,
                    entry.task_id
                );
                None
            }
            // A store that cannot be read now (a database gone): the task stays ready, back in
            // the window, for the next try.
            Err(e) => {
                self.backlog.put_back(pos, entry);
                return Err(e);
            }
            Ok(read) => read,
        };
        let rec = match read {
            Some(rec)
                if rec.state == TaskState::Pending
                    && matches!(rec.queued, Some(Queued::Ready { .. })) =>
            {
                rec
            }
            Some(_) | None => {
                log::warn!(
                    "{}: dropping a stale ready entry for {}",
                    self.key,
                    entry.task_id
                );
                batch.txn.del_ready(&self.key, pos);
                batch.meta.ready = batch.meta.ready.saturating_sub(1);
                batch.dropped_stale = true;
                return Ok(None);
            }
        };
        let mut rec = rec;
        self.start_lease(&mut rec, identity, now, (pos.order, entry.ready_at));
        // Nothing fails from here on: the batch holds all of this lease or none of it.
        batch.txn.put_task(&self.key, &rec);
        batch.txn.del_ready(&self.key, pos);
        self.end_waiting(&rec, &mut batch.txn);
        batch.txn.put_inflight(&self.key, &rec.task_id);
        batch.meta.ready = batch.meta.ready.saturating_sub(1);
        batch.meta.in_flight += 1;
        batch.task_ids.insert(rec.task_id.clone());
        if let Some(lease) = &rec.lease {
            batch.leased.push(PlannedLease {
                pos,
                entry,
                at: now,
                lease_id: lease.id,
                expires_at: lease.expires_at(),
            });
        }
        Ok(Some(rec))
    }

    /// Plans the lease of up to `max` ready tasks that a poller with `identity` and task-type
    /// filter `types` may take (see [`eligible`]), in dispatch order, into `batch`, and puts
    /// their records in `out`; they are the poller's once [`QueueActor::commit_leases`] wrote
    /// the batch. On an error, `out` still holds every lease planned before it (they are in
    /// the batch, so the caller delivers them).
    pub(super) fn lease_ready(
        &mut self,
        types: Option<&[String]>,
        max: usize,
        identity: &str,
        batch: &mut LeaseBatch,
        out: &mut Vec<TaskRecord>,
    ) -> Result<()> {
        let now = self.now_ms();
        let instant = self.shared.clock.instant();
        let start = out.len();
        let max_in_flight = self.shared.config.limits.max_in_flight_per_queue;
        while out.len() - start < max
            && batch.meta.ready > 0
            && self.leases.len() + batch.leased.len() < max_in_flight
        {
            if !self.throttle.has_token(instant) {
                self.throttled = true;
                self.metrics.rate_limited.inc();
                break;
            }
            // A task leased earlier in this batch is still ready in the store until the batch
            // is written: a scan past the window must not find it again.
            let taken = &batch.task_ids;
            // A serial key held by a running task, or by one leased earlier in this batch,
            // gives nothing more until that task is done.
            let batch_keys: Vec<&str> = batch
                .leased
                .iter()
                .filter_map(|l| l.entry.serial_key.as_deref())
                .collect();
            let leases = &self.leases;
            let free = |k: &str| !leases.busy(k) && !batch_keys.contains(&k);
            let accepts = |e: &Entry| {
                eligible(types, identity, e, now)
                    && !taken.contains(&*e.task_id)
                    && e.serial_key.as_deref().is_none_or(free)
            };
            // A scan that found nothing only because of held keys must not be remembered as
            // finding nothing for these types.
            let memo = if leases.any_busy() || !batch_keys.is_empty() {
                None
            } else {
                types
            };
            let Some((pos, entry)) =
                self.backlog
                    .take(&*self.shared.store, &self.key, accepts, memo)?
            else {
                break;
            };
            if let Some(rec) = self.lease_entry(pos, entry, identity, now, batch)? {
                self.throttle.try_take(instant);
                out.push(rec);
            }
        }
        Ok(())
    }

    /// Writes the leases planned in `batch`; then, only if the write succeeded, tracks them.
    /// On failure their entries go back into the window (their pollers get nothing).
    pub(super) fn commit_leases(&mut self, batch: LeaseBatch) -> Result<()> {
        if batch.leased.is_empty() && !batch.dropped_stale {
            return Ok(());
        }
        if let Err(e) = self.commit(batch.txn, batch.meta) {
            for l in batch.leased {
                self.backlog.put_back(l.pos, l.entry);
            }
            return Err(e);
        }
        for l in batch.leased {
            self.fair.dispatched(l.pos.priority, l.pos.order);
            self.metrics.dispatched_backlog.inc();
            self.metrics
                .schedule_to_start
                .observe(l.at.saturating_sub(l.entry.ready_at) as f64 / 1000.0);
            self.leases.insert(
                l.lease_id,
                l.entry.task_id.into(),
                l.expires_at,
                l.entry.serial_key,
            );
        }
        Ok(())
    }

    /// Gives leased tasks to a waiter once `write` is on disk; if it went away meanwhile, they
    /// go back at once.
    pub(super) fn deliver(
        &mut self,
        w: Waiter,
        recs: Vec<TaskRecord>,
        write: WriteSeq,
        ctx: &mut Context<Self>,
    ) {
        match w.sink {
            Sink::Poll(tx) => {
                let delivery = self.delivery(recs, write, ctx);
                if let Err(undelivered) = tx.send(delivery) {
                    let leases = undelivered.disarm();
                    self.return_tasks(&leases);
                }
            }
            Sink::Socket(id) => self.send_to_socket(id, w, recs, write),
        }
    }

    /// The poller's answer: `recs`, given once `write` is on disk.
    pub(super) fn delivery(
        &mut self,
        recs: Vec<TaskRecord>,
        write: WriteSeq,
        ctx: &mut Context<Self>,
    ) -> Delivery {
        let now = self.now_ms();
        self.metrics.polls_task.inc();
        self.dispatch_rate.add(now, recs.len() as u32);
        let leases = recs.iter().filter_map(lease_of).collect();
        let tasks = recs.iter().filter_map(|r| r.to_task(&self.key)).collect();
        Delivery::new(tasks, leases, write, ctx.address())
    }

    /// The part of a poll before its leases are written: notes the poller, checks the limits,
    /// and plans the tasks it takes into `batch`. A read that fails after some tasks were
    /// planned is logged and those tasks are delivered; with nothing planned it is the answer.
    pub(super) fn plan_poll(
        &mut self,
        msg: &Poll,
        batch: &mut LeaseBatch,
    ) -> Result<Vec<TaskRecord>> {
        let now = self.now_ms();
        self.seen.saw(
            &msg.identity,
            now,
            msg.task_types.clone(),
            msg.build_id.clone(),
            msg.max_tasks_per_second,
        );
        if !self.meta_stored {
            // Listed from now on, as a queue with pollers.
            self.commit(Txn::default(), self.meta)?;
        }
        if self.shutting_down {
            return Ok(Vec::new());
        }
        if let Some(rate) = msg.max_tasks_per_second {
            // The latest poll wins; an API setting still overrides it.
            self.worker_limit = Some(RateLimit {
                max_tasks_per_second: rate,
                burst: RateLimit::default_burst(rate),
            });
            self.apply_limit();
        }
        let max_in_flight = self.shared.config.limits.max_in_flight_per_queue;
        if self.leases.len() + batch.leased.len() >= max_in_flight {
            return Err(Error::exhausted(format!(
                "{} already has {max_in_flight} tasks in flight (limits.max_in_flight_per_queue)",
                self.key
            )));
        }
        let mut recs = Vec::new();
        match self.lease_ready(
            msg.task_types.as_deref(),
            msg.max_tasks,
            &msg.identity,
            batch,
            &mut recs,
        ) {
            Err(e) if recs.is_empty() => Err(e),
            Err(e) => {
                log::error!("{}: poll stopped early: {e}", self.key);
                Ok(recs)
            }
            Ok(()) => Ok(recs),
        }
    }

    /// The answer to a poll once its planned leases (`recs`) are written: them, or a parked
    /// waiter when there are none and the poll waits, or nothing.
    pub(super) fn poll_outcome(
        &mut self,
        msg: &Poll,
        recs: Vec<TaskRecord>,
        ctx: &mut Context<Self>,
    ) -> Result<PollOutcome> {
        if !recs.is_empty() {
            // The leases were written just now: the poller has them once that is on disk.
            let write = self.store().latest_write();
            return Ok(PollOutcome::Now(self.delivery(recs, write, ctx)));
        }
        if self.shutting_down {
            return Ok(PollOutcome::Now(Delivery::empty()));
        }
        let Some(deadline) = msg.park_until else {
            self.metrics.polls_timeout.inc();
            return Ok(PollOutcome::Now(Delivery::empty()));
        };
        let limits = &self.shared.config.limits;
        if self.waiters.polls() >= limits.max_parked_polls_per_queue {
            return Err(Error::exhausted(format!(
                "{} already has {} parked polls (limits.max_parked_polls_per_queue)",
                self.key, limits.max_parked_polls_per_queue
            )));
        }
        let slot = Slot::take(&self.shared.parked, limits.max_parked_polls).ok_or_else(|| {
            Error::exhausted(format!(
                "the server already has {} parked polls (limits.max_parked_polls)",
                limits.max_parked_polls
            ))
        })?;
        let (tx, rx) = oneshot::channel();
        let id = self.waiters.next_id();
        self.waiters.push(Waiter {
            id,
            identity: msg.identity.clone(),
            task_types: msg.task_types.clone(),
            max_tasks: msg.max_tasks,
            deadline,
            sink: Sink::Poll(tx),
            slot: Some(slot),
        });
        Ok(PollOutcome::Parked {
            owner: ctx.address(),
            waiter_id: id,
            rx,
        })
    }

    /// Serves parked polls from the backlog, oldest waiter first, in rounds: each round offers
    /// every waiter its share in order (a poll its `max_tasks`, once; a socket one task a
    /// round while its credit lasts, so sockets and polls take turns as if each socket went
    /// back to the end of the line after every task). All rounds are planned into one write,
    /// then every waiter served gets its tasks.
    pub(super) fn dispatch_waiting(&mut self, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        self.waiters.prune(self.shared.clock.instant());
        if self.waiters.is_empty() || self.meta.ready == 0 {
            return;
        }
        let mut shares: Vec<Share> = self
            .waiters
            .iter()
            .map(|w| Share {
                waiter: w.id,
                task_types: w.task_types.clone(),
                identity: w.identity.clone(),
                per_round: w.max_tasks,
                left: match w.sink {
                    Sink::Poll(_) => w.max_tasks,
                    Sink::Socket(id) => self.sockets.get(&id).map_or(0, |s| s.credit as usize),
                },
                recs: Vec::new(),
            })
            .collect();
        let demand: usize = shares.iter().map(|s| s.left).sum();
        self.prefetch(demand);
        let mut batch = LeaseBatch::new(self.meta);
        'rounds: loop {
            let mut progressed = false;
            for share in shares.iter_mut().filter(|s| s.left > 0) {
                if batch.meta.ready == 0 || self.throttled {
                    break 'rounds;
                }
                let before = share.recs.len();
                let want = share.per_round.min(share.left);
                let planned = self.lease_ready(
                    share.task_types.as_deref(),
                    want,
                    &share.identity,
                    &mut batch,
                    &mut share.recs,
                );
                // What was planned before an error is in the batch: it is delivered too.
                if let Err(e) = planned {
                    log::error!("{}: dispatch failed: {e}", self.key);
                    break 'rounds;
                }
                let got = share.recs.len() - before;
                // Given less than it asked for, a waiter has nothing eligible left this time
                // (and a poll, asking for all of its `max_tasks` at once, is served).
                share.left = if got < want { 0 } else { share.left - got };
                progressed |= got > 0;
            }
            if !progressed {
                break;
            }
        }
        if let Err(e) = self.commit_leases(batch) {
            log::error!("{}: dispatch failed: {e}", self.key);
            return;
        }
        let written = self.store().latest_write();
        for share in shares.into_iter().filter(|s| !s.recs.is_empty()) {
            match self.waiters.remove(share.waiter) {
                // The leases were written just now: they go out once that is on disk.
                Some(w) => self.deliver(w, share.recs, written, ctx),
                None => {
                    let leases: Vec<_> = share.recs.iter().filter_map(lease_of).collect();
                    self.return_tasks(&leases);
                }
            }
        }
    }
}
