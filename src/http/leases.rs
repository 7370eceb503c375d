//! Settling leases: `POST /api/v1/leases/{lease}/complete | fail | heartbeat`.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{AppState, MaybeJson, Role, RouteSpec};
use crate::error::Result;
use crate::model::{LeaseToken, TaskError};
use crate::queue::messages::{Heartbeat, Settle, SettleOp};
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

async fn settle(state: &AppState, lease: &str, op: SettleOp) -> Result<HttpResponse> {
    let token = LeaseToken::decode(lease)?;
    let msg = Settle {
        task_id: token.task_id,
        lease_id: token.lease_id,
        op,
    };
    let answer = state
        .queues
        .settle_one(&token.queue, msg, &*state.store)
        .await?;
    Ok(HttpResponse::Ok().json(answer))
}

async fn complete(
    state: web::Data<AppState>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<CompleteRequest>,
) -> Result<HttpResponse> {
    let op = SettleOp::Complete {
        result: body.result.unwrap_or_else(crate::model::null_json),
    };
    settle(&state, &lease, op).await
}

async fn fail(
    state: web::Data<AppState>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<FailRequest>,
) -> Result<HttpResponse> {
    let op = SettleOp::Fail {
        error: body.error.unwrap_or(TaskError {
            message: "failed".into(),
            kind: None,
        }),
        non_retryable: body.non_retryable,
        retry_after_ms: body.retry_after_ms,
    };
    settle(&state, &lease, op).await
}

async fn heartbeat(
    state: web::Data<AppState>,
    lease: web::Path<String>,
    MaybeJson(body): MaybeJson<HeartbeatRequest>,
) -> Result<HttpResponse> {
    let token = LeaseToken::decode(&lease)?;
    let msg = Heartbeat {
        task_id: token.task_id,
        lease_id: token.lease_id,
        details: body.details,
    };
    let answer = state.queues.call(&token.queue, msg).await??;
    Ok(HttpResponse::Ok().json(answer))
}
