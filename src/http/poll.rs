//! Long poll: `POST {q}/poll`.
//!
//! The deadline lives here, on the waiting future, not on an actor timer. If the client goes
//! away, actix drops this future; the guard then tells the actor to forget the waiter, and a
//! delivery already in flight returns its tasks to the queue when dropped.

use std::time::{Duration, Instant};

use actix::Addr;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{queue_key, AppState, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::error::{Error, Result};
use crate::model::{
    present, validate_identity, validate_name, Task, MAX_POLL_TASKS, MAX_POLL_WAIT_MS,
};
use crate::queue::messages::{ForgetWaiter, GaveUp, Poll, PollOutcome};
use crate::queue::pollers::Delivery;
use crate::queue::QueueActor;
use actix_web::http::Method;

/// Default `wait_ms` of a poll.
pub const DEFAULT_POLL_WAIT_MS: u64 = 60_000;

/// The poll route.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::POST,
        format!("{QUEUE_PATH}/poll"),
        Role::Worker,
        || web::post().to(poll),
    )]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PollRequest {
    identity: String,
    max_tasks: Option<i64>,
    wait_ms: Option<i64>,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    max_tasks_per_second: Option<Option<f64>>,
}

impl PollRequest {
    fn validate(self, park_from: Instant) -> Result<Poll> {
        validate_identity(&self.identity)?;
        let max_tasks = self.max_tasks.unwrap_or(1);
        if !(1..=MAX_POLL_TASKS as i64).contains(&max_tasks) {
            return Err(Error::invalid(format!(
                "max_tasks must be 1–{MAX_POLL_TASKS}, got {max_tasks}"
            )));
        }
        let wait_ms = self.wait_ms.unwrap_or(DEFAULT_POLL_WAIT_MS as i64);
        if !(0..=MAX_POLL_WAIT_MS as i64).contains(&wait_ms) {
            return Err(Error::invalid(format!(
                "wait_ms must be 0–{MAX_POLL_WAIT_MS}, got {wait_ms}"
            )));
        }
        if let Some(types) = &self.task_types {
            for t in types {
                validate_name("task_types[]", t)?;
            }
        }
        if let Some(b) = &self.build_id {
            validate_name("build_id", b)?;
        }
        let rate = self.max_tasks_per_second.flatten();
        if rate.is_some_and(|r| !r.is_finite() || r < 0.0) {
            return Err(Error::invalid(
                "max_tasks_per_second must be a number ≥ 0 or null",
            ));
        }
        Ok(Poll {
            identity: self.identity,
            max_tasks: max_tasks as usize,
            task_types: self.task_types,
            build_id: self.build_id,
            max_tasks_per_second: rate,
            park_until: (wait_ms > 0).then(|| park_from + Duration::from_millis(wait_ms as u64)),
        })
    }
}

/// Tells the actor to forget a parked poll whose client went away (this future dropped).
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

/// Answers with the tasks once their dispatch (attempt counted) is on disk, so a task given
/// out just before a crash comes back with its attempt counted. The delivery is only accepted
/// after that wait: if the client leaves meanwhile, the tasks go back to the queue.
async fn respond(state: &AppState, delivery: Delivery) -> Result<HttpResponse> {
    if !delivery.is_empty() {
        state.store.durable().await?;
    }
    let tasks: Vec<Task> = delivery.accept();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tasks": tasks })))
}

async fn poll(
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    JsonBody(body): JsonBody<PollRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let msg = body.validate(Instant::now())?;
    let park_until = msg.park_until;
    match state.queues.call(&key, msg).await?? {
        PollOutcome::Now(delivery) => respond(&state, delivery).await,
        PollOutcome::Parked {
            owner,
            waiter_id,
            mut rx,
        } => {
            let guard = ParkGuard {
                owner: Some(owner),
                waiter_id,
            };
            let deadline = park_until.unwrap_or_else(Instant::now);
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
                    respond(&state, d).await
                }
                None => {
                    guard.finish(Some(GaveUp::Timeout));
                    respond(&state, Delivery::empty()).await
                }
            }
        }
    }
}
