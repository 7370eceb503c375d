//! Adding tasks: one write for the tasks of every add request waiting, each handed to a live
//! waiter at once (sync match) or put in the ready or delayed index.

use super::*;

impl QueueActor {
    /// Adds the tasks of several requests with one write, all or nothing; answers each
    /// request's results in order. A task id given twice (in one request or two) is added
    /// once; the later one answers `duplicate`.
    pub(super) fn add(
        &mut self,
        requests: &[&[crate::model::NewTask]],
        ctx: &mut Context<Self>,
    ) -> Result<Vec<Vec<AddResult>>> {
        // About what the tasks take on disk: a record and its index entries each.
        let bytes: u64 = requests
            .iter()
            .flat_map(|r| r.iter())
            .map(|t| t.payload.get().len() as u64 + ADD_OVERHEAD_BYTES)
            .sum();
        self.shared.store.admit(bytes)?;
        let now = self.now_ms();
        let instant = self.shared.clock.instant();
        let mut txn = Txn::default();
        let mut meta = self.meta;
        let mut results: Vec<Vec<AddResult>> = Vec::with_capacity(requests.len());
        let mut ids = HashSet::new();
        let mut to_backlog = Vec::new();
        let mut sync: Vec<(Waiter, TaskRecord)> = Vec::new();
        let mut first_due: Option<u64> = None;
        for request in requests {
            let mut answers = Vec::with_capacity(request.len());
            for spec in request.iter() {
                let duplicate = !ids.insert(spec.task_id.as_str())
                    || (spec.id_given && self.store().task(&self.key, &spec.task_id)?.is_some());
                answers.push(AddResult {
                    task_id: spec.task_id.clone(),
                    duplicate,
                });
                if duplicate {
                    continue;
                }
                let seq = self.store().next_seq()?;
                let mut rec = TaskRecord::new(spec, now, seq);
                if let Some(t) = spec.schedule_to_start_timeout_ms {
                    txn.put_waiting(now.saturating_add(t), &self.key, &rec.task_id);
                }
                if spec.delay_ms > 0 {
                    let due = now.saturating_add(spec.delay_ms);
                    rec.queued = Some(Queued::Delayed { due });
                    txn.put_delayed(&self.key, due, seq, &entry_of(&rec, due));
                    meta.delayed += 1;
                    first_due = Some(first_due.map_or(due, |d| d.min(due)));
                } else {
                    let entry = entry_of(&rec, now);
                    let full = self.leases.len() + sync.len()
                        >= self.shared.config.limits.max_in_flight_per_queue;
                    let waiter = if self.shutting_down || self.waiters.is_empty() || full {
                        None
                    } else if !self.throttle.has_token(instant) {
                        self.throttled = true;
                        self.metrics.rate_limited.inc();
                        None
                    } else {
                        self.waiters.take_for(&entry, instant, now)
                    };
                    match waiter {
                        Some(w) => {
                            self.throttle.try_take(instant);
                            let pass = self.fair.enqueue(
                                rec.priority,
                                rec.fairness_key.as_deref(),
                                rec.fairness_weight,
                            );
                            self.fair.dispatched(rec.priority, pass);
                            self.start_lease(&mut rec, &w.identity, now, (pass, now));
                            self.end_waiting(&rec, &mut txn);
                            txn.put_inflight(&self.key, &rec.task_id);
                            meta.in_flight += 1;
                            sync.push((w, rec.clone()));
                        }
                        None => {
                            to_backlog.push(self.enqueue_ready(&mut rec, &mut txn, &mut meta, now));
                        }
                    }
                }
                txn.put_new_task(&self.key, &mut rec);
            }
            results.push(answers);
        }
        // On failure the waiters taken above are dropped: their polls answer empty.
        self.commit(txn, meta)?;
        let added = results.iter().flatten().filter(|r| !r.duplicate).count() as u64;
        self.metrics.added.inc_by(added);
        self.add_rate.add(now, added as u32);
        for (pos, entry) in to_backlog {
            self.backlog.insert(pos, entry);
        }
        if let Some(due) = first_due {
            self.next_delayed = Some(self.next_delayed.map_or(due, |d| d.min(due)));
        }
        // A task handed to a waiting worker goes out now, without waiting for the flush that
        // makes its add durable (Temporal's sync match does not even persist it): the worker
        // starts one fsync sooner, and nothing acknowledged is at risk. The add is answered
        // only once that flush covered it, and a crash before then loses an add nobody was
        // told about; the producer retries it (at-least-once), the worker's settle of the
        // lost lease answers `lease_lost`.
        for (w, rec) in sync {
            self.track_lease(&rec);
            self.metrics.dispatched_sync.inc();
            self.metrics.schedule_to_start.observe(0.0);
            self.deliver(w, vec![rec], WriteSeq::NOTHING, ctx);
        }
        Ok(results)
    }
}
