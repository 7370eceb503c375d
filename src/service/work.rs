//! Work: long polls, settles (one lease, or a streaming worker's burst for one queue),
//! heartbeats, and streaming workers' sockets.

use std::collections::HashMap;
use std::time::Duration;

use actix::Addr;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Failure, PollSpec, Tasq};
use crate::error::{Error, Result};
use crate::model::{LeaseToken, QueueKey, Task};
use crate::queue::messages::{
    AddCredit, DrainSocket, ForgetWaiter, GaveUp, Heartbeat, HeartbeatAnswer, OpenSocket,
    PollOutcome, Settle, SettleOp, Settlement, SocketClosed, SocketEvent,
};
use crate::queue::pollers::{Delivery, Slot};
use crate::queue::QueueActor;

impl Tasq {
    /// Long-polls for up to `max_tasks` tasks: answers as soon as at least one can be given,
    /// or an empty list once `wait` passes (or tasq shuts down). Waiting polls are served in
    /// arrival order, exactly as HTTP polls (they share the queue).
    ///
    /// Dropping the future gives up the poll: the queue forgets it, and tasks already on
    /// their way to it go back to the queue at once, as for an HTTP client that hangs up.
    /// The deadline lives on this future, not on an actor timer.
    pub async fn poll(&self, queue: &QueueKey, poll: PollSpec) -> Result<Vec<Task>> {
        let (outcome, park_until) = self.send_poll(queue, poll).await?;
        self.finish_poll(queue, outcome, park_until).await
    }

    /// The first half of a poll: checks `poll` and sends it to its queue, which answers with
    /// tasks (their lease written, not yet on disk) or a parked waiter; and how long it waits.
    async fn send_poll(
        &self,
        queue: &QueueKey,
        poll: PollSpec,
    ) -> Result<(PollOutcome, Option<std::time::Instant>)> {
        let msg = poll.validate(self.inner.clock.instant())?;
        let park_until = msg.park_until;
        Ok((self.serving_queues()?.poll(queue, msg).await?, park_until))
    }

    /// The rest of a poll once its queue answered: the tasks once their lease is on disk, or
    /// the wait of a parked poll until `park_until`.
    async fn finish_poll(
        &self,
        queue: &QueueKey,
        outcome: PollOutcome,
        park_until: Option<std::time::Instant>,
    ) -> Result<Vec<Task>> {
        match outcome {
            PollOutcome::Now(delivery) => self.accept(queue, delivery).await,
            PollOutcome::Parked {
                owner,
                waiter_id,
                mut rx,
            } => {
                let guard = ParkGuard {
                    owner: Some(owner),
                    waiter_id,
                };
                let deadline = park_until.unwrap_or_else(|| self.inner.clock.instant());
                let delivery = match tokio::time::timeout_at(deadline.into(), &mut rx).await {
                    Ok(Ok(d)) => Some(d),
                    Ok(Err(_)) => None,
                    Err(_) => {
                        // Time is up; a delivery sent at the last instant is still taken.
                        rx.close();
                        rx.try_recv().ok()
                    }
                };
                match delivery {
                    Some(d) => {
                        guard.finish(None);
                        self.accept(queue, d).await
                    }
                    None => {
                        guard.finish(Some(GaveUp::Timeout));
                        Ok(Vec::new())
                    }
                }
            }
        }
    }

    /// Takes the tasks once their delivery's write is on disk (a backlog lease; none for a
    /// sync match); if the caller gives up meanwhile, the delivery is dropped and its tasks go
    /// back to the queue.
    async fn accept(&self, queue: &QueueKey, delivery: Delivery) -> Result<Vec<Task>> {
        if !delivery.is_empty() {
            self.durable(queue, delivery.write()).await?;
        }
        Ok(delivery.accept())
    }

    /// Completes the task held with `lease`, answered once on disk. Repeating it answers the
    /// same; an expired or superseded lease is [`Error::LeaseLost`].
    pub async fn complete(&self, lease: &str, result: Value) -> Result<Settlement> {
        let result = to_raw(&result)?;
        let token = LeaseToken::decode(lease)?;
        self.settle(token, SettleOp::Complete { result }).await
    }

    /// Fails the attempt held with `lease`; the task is retried per its retry policy unless
    /// the failure is non-retryable or its attempts are used up (then it is a dead letter).
    pub async fn fail(&self, lease: &str, failure: Failure) -> Result<Settlement> {
        let token = LeaseToken::decode(lease)?;
        self.settle(token, failure.into_op()).await
    }

    /// Settles the lease `token` with `op` (the HTTP complete and fail), answered once on disk.
    pub async fn settle(&self, token: LeaseToken, op: SettleOp) -> Result<Settlement> {
        let queues = self.serving_queues()?;
        let msg = Settle {
            task_id: token.task_id,
            lease_id: token.lease_id,
            op,
        };
        queues.settle_one(&token.queue, msg, self.store()).await
    }

    /// Settles leases of one queue together (a streaming worker's burst of frames): one write
    /// and one group commit for all of them, each answered on its own, in order. Taken while
    /// shutting down too, so a worker's last settles before its socket closes land.
    pub async fn settle_batch(
        &self,
        queue: &QueueKey,
        settles: Vec<Settle>,
    ) -> Result<Vec<Result<Settlement>>> {
        self.inner.queues.settle(queue, settles, self.store()).await
    }

    /// Settles the lease `token` with `op`, then polls its queue with the spec `next` makes of
    /// the settlement (the HTTP `next`): the settle's answer, and the poll's. The poll is sent
    /// as soon as the settle is applied, so the lease it writes joins the settle's sync (one
    /// wait for the disk, not two in a row); its tasks are handed out only once the settle is
    /// on disk, and go back to the queue if it never gets there. A settle that fails polls
    /// nothing.
    pub async fn settle_then_poll(
        &self,
        token: LeaseToken,
        op: SettleOp,
        next: impl FnOnce(&Settlement) -> Result<PollSpec>,
    ) -> Result<(Settlement, Result<Vec<Task>>)> {
        let queues = self.serving_queues()?;
        let queue = token.queue.clone();
        let msg = Settle {
            task_id: token.task_id,
            lease_id: token.lease_id,
            op,
        };
        let applied = queues.settle_applied(&queue, vec![msg]).await?;
        let outcome = match applied.peek().first() {
            Some(Ok(settled)) => Some(match next(settled) {
                Ok(spec) => self.send_poll(&queue, spec).await,
                Err(e) => Err(e),
            }),
            _ => None,
        };
        let settled = applied
            .wait(self.store())
            .await
            .and_then(|mut each| each.pop().unwrap_or_else(|| Err(Error::lease_lost())));
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                if let Some(Ok((outcome, _))) = outcome {
                    give_up(outcome);
                }
                return Err(e);
            }
        };
        let polled = match outcome {
            Some(Ok((outcome, park_until))) => self.finish_poll(&queue, outcome, park_until).await,
            Some(Err(e)) => Err(e),
            None => Ok(Vec::new()),
        };
        Ok((settled, polled))
    }

    /// Settles many leases, each on its own (`POST /api/v1/leases/settle`): the settles of
    /// one queue go to it together (one write, one group commit), the queues' side by side.
    /// Answers each settle's own result, in order; every one that succeeded is on disk.
    pub async fn settle_many(
        &self,
        settles: Vec<(LeaseToken, SettleOp)>,
    ) -> Result<Vec<Result<Settlement>>> {
        self.serving_queues()?;
        let count = settles.len();
        let mut groups: HashMap<QueueKey, (Vec<usize>, Vec<Settle>)> = HashMap::new();
        for (i, (token, op)) in settles.into_iter().enumerate() {
            let (at, batch) = groups.entry(token.queue).or_default();
            at.push(i);
            batch.push(Settle {
                task_id: token.task_id,
                lease_id: token.lease_id,
                op,
            });
        }
        let answers = futures_util::future::join_all(groups.into_iter().map(
            |(queue, (at, batch))| async move { (at, self.settle_batch(&queue, batch).await) },
        ))
        .await;
        let mut out: Vec<Option<Result<Settlement>>> = (0..count).map(|_| None).collect();
        for (at, answer) in answers {
            match answer {
                Ok(each) => at.into_iter().zip(each).for_each(|(i, a)| out[i] = Some(a)),
                Err(e) => at.into_iter().for_each(|i| out[i] = Some(Err(e.clone()))),
            }
        }
        Ok(out
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Err(Error::Internal("a settle went unanswered".into()))))
            .collect())
    }

    /// Extends the lease (when the task has a heartbeat timeout) and keeps `details` with the
    /// task. The answer tells whether a cancel was asked for.
    pub async fn heartbeat(&self, lease: &str, details: Option<Value>) -> Result<HeartbeatAnswer> {
        self.serving_queues()?;
        let token = LeaseToken::decode(lease)?;
        let details = details.as_ref().map(to_raw).transpose()?;
        self.heartbeat_lease(token, details).await
    }

    /// [`Tasq::heartbeat`] of a decoded lease, with `details` as JSON text kept as is. Taken
    /// while shutting down too (a streaming worker's socket is open until it closes).
    pub async fn heartbeat_lease(
        &self,
        token: LeaseToken,
        details: Option<Box<RawValue>>,
    ) -> Result<HeartbeatAnswer> {
        let msg = Heartbeat {
            task_id: token.task_id,
            lease_id: token.lease_id,
            details,
            lease_for_ms: None,
        };
        self.inner.queues.call(&token.queue, msg).await?
    }

    /// Ends the lease `lease_for` from now instead of at its own deadline (an SQS visibility
    /// timeout): zero hands the task back to the queue at once, as if the lease had expired
    /// (the attempt counts). A lease that ended already is [`Error::LeaseLost`].
    pub async fn set_lease_end(&self, lease: &str, lease_for: Duration) -> Result<HeartbeatAnswer> {
        self.serving_queues()?;
        let token = LeaseToken::decode(lease)?;
        let msg = Heartbeat {
            task_id: token.task_id,
            lease_id: token.lease_id,
            details: None,
            lease_for_ms: Some(u64::try_from(lease_for.as_millis()).unwrap_or(u64::MAX)),
        };
        self.inner.queues.call(&token.queue, msg).await?
    }

    /// Opens a streaming worker's socket on `queue`: a long-lived poller that is pushed tasks
    /// while it has credit ([`WorkerSocket::add_credit`]), which arrive on the receiver as
    /// [`SocketEvent`]s. The worker is checked as a poll's is. Dropping the socket closes it.
    pub async fn open_socket(
        &self,
        queue: &QueueKey,
        identity: String,
        task_types: Option<Vec<String>>,
        build_id: Option<String>,
    ) -> Result<(WorkerSocket, mpsc::UnboundedReceiver<SocketEvent>)> {
        super::spec::check_worker(&identity, task_types.as_deref(), build_id.as_deref())?;
        let (tx, events) = mpsc::unbounded_channel();
        let open = OpenSocket {
            identity,
            task_types,
            build_id,
            tx,
        };
        let (owner, socket_id) = self.serving_queues()?.call(queue, open).await??;
        let socket = WorkerSocket {
            owner,
            socket_id,
            queue: queue.clone(),
        };
        Ok((socket, events))
    }

    /// A place among `limits.max_websockets` open sockets, given back when dropped; taken
    /// before a socket's handshake, so two at once cannot both pass the bound.
    pub fn take_socket_slot(&self) -> Result<Slot> {
        let max = self.inner.config.limits.max_websockets;
        Slot::take(&self.inner.sockets, max).ok_or_else(|| Error::ResourceExhausted {
            message: format!("{max} WebSocket connections are open (limits.max_websockets)"),
            retry_after_secs: 1,
        })
    }
}

/// A streaming worker's place in its queue (see [`Tasq::open_socket`]); its settles go
/// through [`Tasq::settle_batch`]. Dropped, the socket is closed: its unsettled tasks go
/// back to the queue at once, attempt counted.
pub struct WorkerSocket {
    owner: Addr<QueueActor>,
    socket_id: u64,
    queue: QueueKey,
}

impl WorkerSocket {
    /// The queue it is open on.
    pub fn queue(&self) -> &QueueKey {
        &self.queue
    }

    /// The worker has room for `n` more tasks.
    pub fn add_credit(&self, n: u32) {
        self.owner.do_send(AddCredit {
            socket_id: self.socket_id,
            n,
        });
    }

    /// Stop pushing tasks (a worker shutting down): credit drops to 0 until the next credit,
    /// and a [`SocketEvent::Drained`] follows the last task sent.
    pub fn drain(&self) {
        self.owner.do_send(DrainSocket {
            socket_id: self.socket_id,
        });
    }
}

impl Drop for WorkerSocket {
    fn drop(&mut self) {
        self.owner.do_send(SocketClosed {
            socket_id: self.socket_id,
        });
    }
}

fn to_raw(value: &Value) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
        .map_err(|e| Error::invalid(format!("the value does not encode as JSON: {e}")))
}

/// Gives up a poll its queue answered that nobody will take: a parked poll is forgotten (as
/// when its client goes away), a delivery's tasks go back to the queue (dropping it does that).
fn give_up(outcome: PollOutcome) {
    if let PollOutcome::Parked {
        owner, waiter_id, ..
    } = outcome
    {
        drop(ParkGuard {
            owner: Some(owner),
            waiter_id,
        });
    }
}

/// Tells the queue actor to forget a parked poll whose waiter went away (future dropped).
struct ParkGuard {
    owner: Option<Addr<QueueActor>>,
    waiter_id: u64,
}

impl ParkGuard {
    fn finish(mut self, reason: Option<GaveUp>) {
        if let (Some(owner), Some(reason)) = (self.owner.take(), reason) {
            owner.do_send(ForgetWaiter {
                waiter_id: self.waiter_id,
                reason,
            });
        }
    }
}

impl Drop for ParkGuard {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.do_send(ForgetWaiter {
                waiter_id: self.waiter_id,
                reason: GaveUp::Cancelled,
            });
        }
    }
}
