//! Why a task is or is not running now (`GET {q}/tasks/{id}/explain`): read from the task's
//! record and the queue's own state (its rate limit, pollers, leases and ready order).

use serde_json::{json, Map, Value};

use super::*;

/// Ready tasks counted ahead of one before the count stops ("at least" this many).
const MAX_AHEAD: usize = 100_000;

impl QueueActor {
    /// The explanation of `task_id`, or [`Error::NotFound`].
    pub(super) fn explain(&mut self, task_id: &str) -> Result<Explanation> {
        let Some(rec) = self.store().task(&self.key, task_id)? else {
            return Err(Error::NotFound(format!(
                "no task {task_id:?} in {}",
                self.key
            )));
        };
        let reasons = match (rec.state, rec.queued) {
            (TaskState::Running, _) => vec![running(&rec)],
            (TaskState::Pending, Some(Queued::Delayed { due })) => vec![waiting_until(&rec, due)],
            (TaskState::Pending, _) => self.why_ready_waits(&rec)?,
            (state, _) => vec![finished(state)],
        };
        Ok(Explanation {
            task_id: rec.task_id,
            state: rec.state,
            reasons,
        })
    }

    /// What holds back a ready task: whatever applies of the queue's pause or rate limit,
    /// its in-flight bound, its pollers, the task's route, and the tasks ahead of it.
    fn why_ready_waits(&mut self, rec: &TaskRecord) -> Result<Vec<Reason>> {
        let now = self.now_ms();
        let mut reasons = Vec::new();
        if let Some((limit, source)) = self.throttle.limit() {
            let rate = limit.max_tasks_per_second;
            if rate <= 0.0 {
                reasons.push(reason(
                    "paused",
                    format!(
                        "Dispatch from this queue is paused (max_tasks_per_second = 0, set by \
                         the {}); resume it with PUT {{q}}/config.",
                        source.as_str()
                    ),
                    json!({}),
                ));
            } else if self.throttled || !self.throttle.has_token(Instant::now()) {
                reasons.push(reason(
                    "rate_limited",
                    format!(
                        "The queue's rate limit ({rate} tasks/s, set by the {}) is holding \
                         dispatch back.",
                        source.as_str()
                    ),
                    json!({ "max_tasks_per_second": rate }),
                ));
            }
        }
        let max_in_flight = self.shared.config.limits.max_in_flight_per_queue;
        if self.leases.len() >= max_in_flight {
            reasons.push(reason(
                "in_flight_limit",
                format!(
                    "{} tasks of this queue are running, its bound \
                     (limits.max_in_flight_per_queue): one must finish first.",
                    self.leases.len()
                ),
                json!({ "in_flight": self.leases.len(), "max_in_flight": max_in_flight }),
            ));
        }
        self.refresh_pollers(now);
        let pollers = self.seen.list();
        if pollers.is_empty() {
            reasons.push(reason(
                "no_poller",
                "No worker has polled this queue in the last 5 minutes: start one.".into(),
                json!({}),
            ));
        } else if !pollers.iter().any(|p| {
            p.task_types
                .as_ref()
                .is_none_or(|t| t.contains(&rec.task_type))
        }) {
            reasons.push(reason(
                "no_poller_for_type",
                format!(
                    "Workers poll this queue, but none declares the task type {:?} in its \
                     task_types.",
                    rec.task_type
                ),
                json!({ "task_type": rec.task_type }),
            ));
        }
        if let Some(key) = entries::serial_key(rec).filter(|k| self.leases.busy(k)) {
            reasons.push(reason(
                "key_in_flight",
                format!(
                    "A task of its key {key:?} is running: tasks of a serial key (an SQS FIFO \
                     message group) run one at a time, in order."
                ),
                json!({ "key": key }),
            ));
        }
        let (ahead, entry) = self.ahead_of(rec)?;
        if let Some(route) = entry.as_ref().and_then(|e| e.route.as_ref()) {
            if route.fallback_at.is_none_or(|at| at > now) {
                let until = route.fallback_at.map(rfc3339);
                let message = match &until {
                    Some(at) => format!(
                        "It is routed to the worker {:?} until {at}, then to any worker.",
                        route.identity
                    ),
                    None => format!(
                        "It is routed to the worker {:?} only (no fallback).",
                        route.identity
                    ),
                };
                reasons.push(reason(
                    "routed",
                    message,
                    json!({ "identity": route.identity, "fallback_at": until }),
                ));
            }
        }
        if ahead > 0 || reasons.is_empty() {
            let message = match ahead {
                0 => "It is next: the next poll that takes its type gets it.".to_string(),
                n if n >= MAX_AHEAD => format!("At least {n} ready tasks will be given first."),
                n => format!("{n} ready tasks will be given first."),
            };
            reasons.push(reason("waiting_behind", message, json!({ "ahead": ahead })));
        }
        Ok(reasons)
    }

    /// How many ready tasks come before `rec` in dispatch order (up to [`MAX_AHEAD`]), and
    /// its own index entry once reached.
    fn ahead_of(&self, rec: &TaskRecord) -> Result<(usize, Option<Entry>)> {
        let Some(Queued::Ready { order }) = rec.queued else {
            return Ok((0, None));
        };
        let pos = ReadyPos {
            priority: rec.priority,
            order,
            seq: rec.seq,
        };
        let mut ahead = 0;
        let mut after = None;
        while ahead < MAX_AHEAD {
            let chunk = self.store().scan_ready(&self.key, after, 1000)?;
            let Some(last) = chunk.last().map(|(p, _)| *p) else {
                break;
            };
            for (p, entry) in chunk {
                if p == pos {
                    return Ok((ahead, Some(entry)));
                }
                if p > pos {
                    return Ok((ahead, None));
                }
                ahead += 1;
            }
            after = Some(last);
        }
        Ok((ahead, None))
    }
}

fn reason(code: &'static str, message: String, details: Value) -> Reason {
    let details = match details {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Reason {
        code,
        message,
        details,
    }
}

fn running(rec: &TaskRecord) -> Reason {
    let (identity, until) = rec
        .lease
        .as_ref()
        .map(|l| (l.identity.clone(), rfc3339(l.expires_at())))
        .unwrap_or_default();
    reason(
        "running",
        format!(
            "It is running on {identity:?} (attempt {}); its lease ends at {until} unless the \
             worker settles it or heartbeats.",
            rec.attempt
        ),
        json!({ "identity": identity, "lease_expires_at": until }),
    )
}

fn waiting_until(rec: &TaskRecord, due: u64) -> Reason {
    let at = rfc3339(due);
    if rec.attempt > 0 {
        let why = rec
            .last_error
            .as_ref()
            .map(|e| format!(" after attempt {} failed ({})", rec.attempt, e.message))
            .unwrap_or_default();
        reason(
            "retry_backoff",
            format!("It waits for its next attempt{why}, due at {at}."),
            json!({ "due_at": at }),
        )
    } else {
        reason(
            "delayed",
            format!("It was added with a delay: it becomes ready at {at}."),
            json!({ "due_at": at }),
        )
    }
}

fn finished(state: TaskState) -> Reason {
    let message = match state {
        TaskState::Completed => "It completed: it will not run again.",
        TaskState::Cancelled => "It was cancelled: it will not run.",
        TaskState::Failed => {
            "It failed for good (attempts used up or not retryable): it is a dead letter, \
             and runs again only if redriven."
        }
        _ => {
            "It waited longer than its schedule-to-start timeout: it is a dead letter, and \
             runs again only if redriven."
        }
    };
    reason("finished", message.into(), json!({}))
}
