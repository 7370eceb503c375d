//! Settling leases: `POST /api/v1/leases/{lease}/complete | fail | heartbeat`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{MaybeJson, Role, RouteSpec};
use crate::error::Result;
use crate::model::{LeaseToken, TaskError};
use crate::service::{SettleOp, Tasq};
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
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    error: Option<TaskError>,
    #[serde(default)]
    non_retryable: bool,
    retry_after_ms: Option<u64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    details: Option<Box<RawValue>>,
}

async fn settle(tasq: &Tasq, lease: &str, op: SettleOp) -> Result<HttpResponse> {
    let answer = tasq.settle(LeaseToken::decode(lease)?, op).await?;
    Ok(HttpResponse::Ok().json(answer))
}

async fn complete(
    tasq: web::Data<Tasq>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<CompleteRequest>,
) -> Result<HttpResponse> {
    let op = SettleOp::Complete {
        result: body.result.unwrap_or_else(crate::model::null_json),
    };
    settle(&tasq, &lease, op).await
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
    settle(&tasq, &lease, op).await
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
