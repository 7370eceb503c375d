//! Streaming workers: pushing tasks to sockets within their credit, and what a closed socket
//! gives back.

use super::*;

impl QueueActor {
    /// Sends leased tasks on a socket once `written` is on disk, spending its credit, and
    /// queues it again at the back while credit is left.
    pub(super) fn send_to_socket(
        &mut self,
        socket_id: u64,
        mut w: Waiter,
        recs: Vec<TaskRecord>,
        written: WriteSeq,
    ) {
        let now = self.now_ms();
        let mut unsent = Vec::new();
        let Some(socket) = self.sockets.get_mut(&socket_id) else {
            let leases: Vec<_> = recs.iter().filter_map(lease_of).collect();
            self.return_tasks(&leases);
            return;
        };
        for rec in &recs {
            let (Some(task), Some((task_id, lease_id))) = (rec.to_task(&self.key), lease_of(rec))
            else {
                continue;
            };
            if socket
                .tx
                .send(SocketEvent::Task(Box::new(task), written))
                .is_err()
            {
                unsent.push((task_id, lease_id));
                continue;
            }
            socket.credit = socket.credit.saturating_sub(1);
            socket.outstanding.insert(lease_id);
            self.lease_sockets.insert(lease_id, socket_id);
        }
        self.metrics.polls_task.inc();
        self.dispatch_rate
            .add(now, (recs.len() - unsent.len()) as u32);
        socket.waiting = socket.credit > 0 && unsent.is_empty();
        if socket.waiting {
            w.id = self.waiters.next_id();
            self.waiters.push(w);
        }
        // A socket that went away: its SocketClosed releases what it held.
        self.return_tasks(&unsent);
    }

    /// A lease ended (settled, expired, returned): a socket that held it gets its credit back.
    pub(super) fn lease_ended(&mut self, lease_id: u64) {
        let Some(socket_id) = self.lease_sockets.remove(&lease_id) else {
            return;
        };
        if let Some(socket) = self.sockets.get_mut(&socket_id) {
            if socket.outstanding.remove(&lease_id) && !socket.draining {
                socket.credit = socket.credit.saturating_add(1);
            }
        }
        self.queue_socket(socket_id);
    }

    /// Puts a socket with credit back among the waiters.
    pub(super) fn queue_socket(&mut self, socket_id: u64) {
        let Some(socket) = self.sockets.get_mut(&socket_id) else {
            return;
        };
        if socket.waiting || socket.credit == 0 {
            return;
        }
        socket.waiting = true;
        let w = Waiter {
            id: self.waiters.next_id(),
            identity: socket.identity.clone(),
            task_types: socket.task_types.clone(),
            max_tasks: 1,
            deadline: far_future(),
            sink: Sink::Socket(socket_id),
            slot: None,
        };
        self.waiters.push(w);
    }

    /// A socket closed: every task still out on it goes back to the queue at once, as a failed
    /// attempt (no backoff, but counted, so a task that kills its worker cannot loop forever).
    pub(super) fn close_socket(&mut self, socket_id: u64) {
        let Some(socket) = self.sockets.remove(&socket_id) else {
            return;
        };
        self.waiters.remove_socket(socket_id);
        let now = self.now_ms();
        for lease_id in socket.outstanding {
            self.lease_sockets.remove(&lease_id);
            let Some(lease) = self.leases.get(lease_id) else {
                continue;
            };
            let failure = FailedAttempt {
                error: TaskError {
                    message: "the worker's connection closed before it settled the task".into(),
                    kind: Some("WorkerDisconnected".into()),
                },
                non_retryable: false,
                retry_after_ms: Some(0),
            };
            if let Err(e) = self.fail_lease(lease_id, &lease.task_id, failure, now) {
                log::error!("{}: releasing {} failed: {e}", self.key, lease.task_id);
            }
        }
    }
}
