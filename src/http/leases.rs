//! Settling leases: `POST /api/v1/leases/{lease}/complete | fail | heartbeat`, with `next`
//! on complete and fail: once the settle is on disk, a poll of the lease's queue in the same
//! request (an HTTP worker's loop is then one request per task).

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::poll::NextRequest;
use super::{MaybeJson, Role, RouteSpec};
use crate::error::Result;
use crate::model::{LeaseToken, Task, TaskError};
use crate::service::{SettleOp, Settlement, Tasq};
use actix_web::http::Method;

/// The lease routes.
pub fn routes() -> Vec<RouteSpec> {
    let at = |op: &str| format!("{}/{op}", super::LEASE_PATH);
    vec![
        RouteSpec::new(Method::POST, at("complete"), Role::Worker, || {
            web::post().to(complete)
        }),
        RouteSpec::new(Method::POST, at("fail"), Role::Worker, || {
            web::post().to(fail)
        }),
        RouteSpec::new(Method::POST, at("heartbeat"), Role::Worker, || {
            web::post().to(heartbeat)
        }),
    ]
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    result: Option<Box<RawValue>>,
    next: Option<NextRequest>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    error: Option<TaskError>,
    #[serde(default)]
    non_retryable: bool,
    retry_after_ms: Option<u64>,
    next: Option<NextRequest>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    details: Option<Box<RawValue>>,
}

/// A settle's answer with the tasks its `next` poll took (or why it took none: the settle
/// stands, it is on disk).
#[derive(Serialize)]
struct SettledThenPolled<'a> {
    #[serde(flatten)]
    settled: &'a Settlement,
    next: Next<'a>,
}

#[derive(Serialize)]
struct Next<'a> {
    tasks: &'a [Task],
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<serde_json::Value>,
}

async fn settle(
    tasq: &Tasq,
    lease: &str,
    op: SettleOp,
    next: Option<NextRequest>,
) -> Result<HttpResponse> {
    let token = LeaseToken::decode(lease)?;
    // A bad `next` is refused before anything is settled (the identity is checked below).
    if let Some(n) = &next {
        n.clone().into_spec("-")?.check()?;
    }
    let Some(next) = next else {
        return Ok(HttpResponse::Ok().json(tasq.settle(token, op).await?));
    };
    // A repeated settle no longer knows who held the lease: it polls as `unknown` unless
    // `next` names the worker.
    let (settled, polled) = tasq
        .settle_then_poll(token, op, |settled| {
            next.into_spec(settled.identity.as_deref().unwrap_or("unknown"))
        })
        .await?;
    let (tasks, error) = match &polled {
        Ok(tasks) => (tasks.as_slice(), None),
        Err(e) => (&[][..], Some(e.detail())),
    };
    Ok(HttpResponse::Ok().json(SettledThenPolled {
        settled: &settled,
        next: Next { tasks, error },
    }))
}

async fn complete(
    tasq: web::Data<Tasq>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<CompleteRequest>,
) -> Result<HttpResponse> {
    let op = SettleOp::Complete {
        result: body.result.unwrap_or_else(crate::model::null_json),
    };
    settle(&tasq, &lease, op, body.next).await
}

async fn fail(
    tasq: web::Data<Tasq>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<FailRequest>,
) -> Result<HttpResponse> {
    let op = SettleOp::Fail {
        error: body.error.unwrap_or_else(TaskError::unspecified),
        non_retryable: body.non_retryable,
        retry_after_ms: body.retry_after_ms,
    };
    settle(&tasq, &lease, op, body.next).await
}

async fn heartbeat(
    tasq: web::Data<Tasq>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<HeartbeatRequest>,
) -> Result<HttpResponse> {
    let token = LeaseToken::decode(&lease)?;
    let answer = tasq.heartbeat_lease(token, body.details).await?;
    Ok(HttpResponse::Ok().json(answer))
}
