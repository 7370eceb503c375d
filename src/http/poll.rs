//! Long poll: `POST {q}/poll`.
//!
//! The waiting is the service's ([`Tasq::poll`]): the deadline lives on the waiting future,
//! not on an actor timer. If the client goes away, actix drops this future; the service then
//! tells the actor to forget the waiter, and a delivery already in flight returns its tasks
//! to the queue when dropped.

use std::time::Duration;

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::{queue_key, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::error::{Error, Result};
use crate::model::{present, Task, DEFAULT_POLL_WAIT_MS, MAX_POLL_TASKS, MAX_POLL_WAIT_MS};
use crate::service::{PollSpec, Tasq};

/// The poll route.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::POST,
        format!("{QUEUE_PATH}/poll"),
        Role::Worker,
        || web::post().to(poll),
    )]
}

/// The body of `POST {q}/poll`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PollRequest {
    identity: String,
    max_tasks: Option<i64>,
    wait_ms: Option<i64>,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    max_tasks_per_second: Option<Option<f64>>,
}

/// `next` on a settle: a poll of the lease's queue once the settle is on disk, its identity
/// by default the one that polled the lease.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct NextRequest {
    max_tasks: Option<i64>,
    wait_ms: Option<i64>,
    task_types: Option<Vec<String>>,
    build_id: Option<String>,
    identity: Option<String>,
}

impl NextRequest {
    /// The poll, by `identity` unless the request names one.
    pub(super) fn into_spec(self, identity: &str) -> Result<PollSpec> {
        PollRequest {
            identity: self.identity.unwrap_or_else(|| identity.to_string()),
            max_tasks: self.max_tasks,
            wait_ms: self.wait_ms,
            task_types: self.task_types,
            build_id: self.build_id,
            max_tasks_per_second: None,
        }
        .into_spec()
    }
}

impl PollRequest {
    /// The poll as the service states it; ranges are checked there, once.
    pub(super) fn into_spec(self) -> Result<PollSpec> {
        let max_tasks = self.max_tasks.unwrap_or(1);
        let max_tasks = u32::try_from(max_tasks).map_err(|_| {
            Error::invalid(format!(
                "max_tasks must be 1–{MAX_POLL_TASKS}, got {max_tasks}"
            ))
        })?;
        let wait_ms = self.wait_ms.unwrap_or(DEFAULT_POLL_WAIT_MS as i64);
        let wait_ms = u64::try_from(wait_ms).map_err(|_| {
            Error::invalid(format!(
                "wait_ms must be 0–{MAX_POLL_WAIT_MS}, got {wait_ms}"
            ))
        })?;
        let mut spec = PollSpec::new(self.identity)
            .max_tasks(max_tasks)
            .wait(Duration::from_millis(wait_ms));
        if let Some(types) = self.task_types {
            spec = spec.task_types(types);
        }
        if let Some(b) = self.build_id {
            spec = spec.build_id(b);
        }
        if let Some(rate) = self.max_tasks_per_second.flatten() {
            spec = spec.max_tasks_per_second(rate);
        }
        Ok(spec)
    }
}

async fn poll(
    tasq: web::Data<Tasq>,
    path: web::Path<(String, String, String)>,
    JsonBody(body): JsonBody<PollRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let tasks: Vec<Task> = tasq.poll(&key, body.into_spec()?).await?;
    Ok(HttpResponse::Ok().json(Polled { tasks: &tasks }))
}

/// A poll's answer. Serialised straight from the tasks (never through `serde_json::Value`),
/// so each payload goes out as the exact JSON text it was added with, whatever it holds.
#[derive(Serialize)]
struct Polled<'a> {
    /// The tasks leased.
    pub tasks: &'a [Task],
}
