//! The message handlers of the queue actor: each takes its message to the methods of the
//! concern it belongs to (add, dispatch, settle, sockets, admin, timers).

use super::*;

impl Handler<TakeAdds> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakeAdds(inboxes): TakeAdds, ctx: &mut Self::Context) {
        let pending = inboxes.adds.take();
        if pending.is_empty() {
            return;
        }
        let requests: Vec<&[crate::model::NewTask]> =
            pending.iter().map(|(tasks, _)| tasks.as_slice()).collect();
        let result = self.add(&requests, ctx);
        self.after_change(ctx);
        match result {
            Ok(results) => {
                for ((_, reply), r) in pending.into_iter().zip(results) {
                    let _ = reply.send(Ok(Durable::applied(r, &self.key, self.store())));
                }
            }
            Err(e) => {
                for (_, reply) in pending {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Handler<TakePolls> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakePolls(inboxes): TakePolls, ctx: &mut Self::Context) {
        let pending = inboxes.polls.take();
        if pending.is_empty() {
            return;
        }
        // Every poll's leases are planned into one batch and written once; only then is any
        // poll answered or parked.
        let mut batch = LeaseBatch::new(self.meta);
        let demand: usize = pending.iter().map(|(poll, _)| poll.max_tasks).sum();
        self.prefetch(demand);
        let planned: Vec<_> = pending
            .into_iter()
            .map(|(poll, reply)| (self.plan_poll(&poll, &mut batch), poll, reply))
            .collect();
        let written = self.commit_leases(batch);
        for (plan, poll, reply) in planned {
            let answer = match (plan, &written) {
                (Err(e), _) => Err(e),
                (Ok(recs), Err(e)) if !recs.is_empty() => Err(e.clone()),
                (Ok(recs), _) => self.poll_outcome(&poll, recs, ctx),
            };
            let _ = reply.send(answer);
        }
        self.after_change(ctx);
    }
}

impl Handler<ForgetWaiter> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ForgetWaiter, ctx: &mut Self::Context) {
        self.waiters.remove(msg.waiter_id);
        match msg.reason {
            GaveUp::Timeout => self.metrics.polls_timeout.inc(),
            GaveUp::Cancelled => self.metrics.polls_cancelled.inc(),
        }
        self.after_change(ctx);
    }
}

impl Handler<ReturnTasks> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ReturnTasks, ctx: &mut Self::Context) {
        self.return_tasks(&msg.leases);
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<TakeSettles> for QueueActor {
    type Result = ();

    fn handle(&mut self, TakeSettles(inboxes): TakeSettles, ctx: &mut Self::Context) {
        let pending = inboxes.settles.take();
        if pending.is_empty() {
            return;
        }
        let all: Vec<&Settle> = pending.iter().flat_map(|(items, _)| items.iter()).collect();
        let mut answers = self.settle_all(&all).into_iter();
        for (items, reply) in pending {
            let mine: Vec<_> = answers.by_ref().take(items.len()).collect();
            let _ = reply.send(Durable::applied(mine, &self.key, self.store()));
        }
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<Heartbeat> for QueueActor {
    type Result = Result<HeartbeatAnswer>;

    fn handle(&mut self, msg: Heartbeat, ctx: &mut Self::Context) -> Self::Result {
        let result = self.heartbeat(&msg);
        self.after_change(ctx);
        result
    }
}

impl Handler<Cancel> for QueueActor {
    type Result = Result<Durable<TaskRecord>>;

    fn handle(&mut self, msg: Cancel, ctx: &mut Self::Context) -> Self::Result {
        let result = self.cancel(&msg.task_id);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, &self.key, self.store()))
    }
}

impl Handler<WatchTask> for QueueActor {
    type Result = Result<Watch>;

    fn handle(&mut self, msg: WatchTask, ctx: &mut Self::Context) -> Self::Result {
        let rec = self.store().task(&self.key, &msg.task_id)?;
        let watch = match rec {
            Some(r) if !r.state.is_terminal() => {
                let (tx, rx) = oneshot::channel();
                self.watchers.entry(msg.task_id).or_default().push(tx);
                Watch::Later(rx)
            }
            other => Watch::Now(other.map(Box::new)),
        };
        self.after_change(ctx);
        Ok(watch)
    }
}

impl Handler<Describe> for QueueActor {
    type Result = Result<Stats>;

    fn handle(&mut self, _msg: Describe, ctx: &mut Self::Context) -> Self::Result {
        let stats = self.stats();
        self.after_change(ctx);
        Ok(stats)
    }
}

impl Handler<Explain> for QueueActor {
    type Result = Result<Explanation>;

    fn handle(&mut self, msg: Explain, _ctx: &mut Self::Context) -> Self::Result {
        self.explain(&msg.task_id)
    }
}

impl Handler<Shutdown> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, ctx: &mut Self::Context) {
        self.shutting_down = true;
        for w in self.waiters.drain() {
            if let Sink::Poll(tx) = w.sink {
                self.metrics.polls_timeout.inc();
                let _ = tx.send(Delivery::empty());
            }
        }
        for socket in self.sockets.values() {
            let _ = socket.tx.send(SocketEvent::Close);
        }
        self.after_change(ctx);
    }
}

impl Handler<HandOver> for QueueActor {
    type Result = ();

    fn handle(&mut self, _msg: HandOver, ctx: &mut Self::Context) {
        <Self as Handler<Shutdown>>::handle(self, Shutdown, ctx);
        log::info!("{}: handed over to another node", self.key);
        ctx.stop();
    }
}

impl Handler<SetConfig> for QueueActor {
    type Result = Result<Durable<RateLimitView>>;

    fn handle(&mut self, msg: SetConfig, ctx: &mut Self::Context) -> Self::Result {
        let result = self.set_config(msg.rate_limit);
        self.throttled = false;
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, &self.key, self.store()))
    }
}

impl Handler<SetAttributes> for QueueActor {
    type Result = Result<Durable<()>>;

    fn handle(&mut self, msg: SetAttributes, ctx: &mut Self::Context) -> Self::Result {
        let mut txn = Txn::default();
        txn.push(crate::storage::txn::Write::Attributes(
            self.key.clone(),
            msg.attributes,
        ));
        let result = self.commit(txn, self.meta);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, &self.key, self.store()))
    }
}

impl Handler<Redrive> for QueueActor {
    type Result = Result<Durable<usize>>;

    fn handle(&mut self, msg: Redrive, ctx: &mut Self::Context) -> Self::Result {
        let result = self.redrive(msg.task_ids.as_deref());
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
        result.map(|r| Durable::applied(r, &self.key, self.store()))
    }
}

impl Handler<ExpireWaiting> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: ExpireWaiting, ctx: &mut Self::Context) {
        if let Err(e) = self.expire_waiting(&msg.task_ids) {
            log::error!("{}: schedule-to-start expiry failed: {e}", self.key);
        }
        self.after_change(ctx);
    }
}

impl Handler<OpenSocket> for QueueActor {
    type Result = Result<(Addr<QueueActor>, u64)>;

    fn handle(&mut self, msg: OpenSocket, ctx: &mut Self::Context) -> Self::Result {
        let now = self.now_ms();
        if self.shutting_down {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        self.seen.saw(
            &msg.identity,
            now,
            msg.task_types.clone(),
            msg.build_id.clone(),
            None,
        );
        if !self.meta_stored {
            self.commit(Txn::default(), self.meta)?;
        }
        self.next_socket += 1;
        let id = self.next_socket;
        self.sockets.insert(
            id,
            Socket {
                identity: msg.identity,
                task_types: msg.task_types,
                build_id: msg.build_id,
                credit: 0,
                outstanding: HashSet::new(),
                waiting: false,
                draining: false,
                tx: msg.tx,
            },
        );
        self.after_change(ctx);
        Ok((ctx.address(), id))
    }
}

impl Handler<AddCredit> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: AddCredit, ctx: &mut Self::Context) {
        if let Some(socket) = self.sockets.get_mut(&msg.socket_id) {
            socket.draining = false;
            socket.credit = socket.credit.saturating_add(msg.n);
            self.queue_socket(msg.socket_id);
            self.dispatch_waiting(ctx);
        }
        self.after_change(ctx);
    }
}

impl Handler<SocketClosed> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: SocketClosed, ctx: &mut Self::Context) {
        self.close_socket(msg.socket_id);
        self.dispatch_waiting(ctx);
        self.after_change(ctx);
    }
}

impl Handler<DrainSocket> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: DrainSocket, ctx: &mut Self::Context) {
        if let Some(socket) = self.sockets.get_mut(&msg.socket_id) {
            socket.draining = true;
            socket.credit = 0;
            socket.waiting = false;
            let _ = socket.tx.send(SocketEvent::Drained);
            self.waiters.remove_socket(msg.socket_id);
        }
        self.after_change(ctx);
    }
}

impl Handler<Tick> for QueueActor {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.on_timer(ctx);
    }
}
