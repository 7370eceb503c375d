//! Queues: describe (both types of a name) and list (paged).

use actix_web::{web, HttpMessage, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{queue_key, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::clock::rfc3339;
use crate::error::{Error, Result};
use crate::model::{present, QueueKey, QueueType, TaskError, TaskRecord, TaskState};
use crate::service::Tasq;
use actix_web::http::Method;

/// The queue routes.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(
            Method::GET,
            "/api/v1/namespaces/{namespace}/task-queues/{queue}",
            Role::Admin,
            || web::get().to(describe),
        ),
        RouteSpec::new(
            Method::GET,
            "/api/v1/namespaces/{namespace}/task-queues",
            Role::Admin,
            || web::get().to(list),
        ),
        RouteSpec::new(Method::GET, "/api/v1/namespaces", Role::Admin, || {
            web::get().to(namespaces)
        }),
        RouteSpec::new(
            Method::PUT,
            format!("{QUEUE_PATH}/config"),
            Role::Admin,
            || web::put().to(set_config),
        ),
        RouteSpec::new(
            Method::GET,
            format!("{QUEUE_PATH}/dead-letters"),
            Role::Admin,
            || web::get().to(dead_letters),
        ),
        RouteSpec::new(
            Method::POST,
            format!("{QUEUE_PATH}/dead-letters/redrive"),
            Role::Admin,
            || web::post().to(redrive),
        ),
    ]
}

type QueuePath = web::Path<(String, String, String)>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigRequest {
    #[serde(default, deserialize_with = "present")]
    max_tasks_per_second: Option<Option<f64>>,
    burst: Option<u64>,
}

async fn set_config(
    tasq: web::Data<Tasq>,
    path: QueuePath,
    JsonBody(body): JsonBody<ConfigRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let Some(rate) = body.max_tasks_per_second else {
        return Err(Error::invalid(
            "max_tasks_per_second is required: a number ≥ 0, or null to remove the limit",
        ));
    };
    let stored = tasq.set_config(&key, rate, body.burst).await?;
    Ok(HttpResponse::Ok().json(json!({
        "max_tasks_per_second": stored.max_tasks_per_second,
        "burst": stored.burst,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    page_token: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100)
    }
}

/// The namespaces holding queues that the caller's key covers.
async fn namespaces(
    tasq: web::Data<Tasq>,
    query: web::Query<PageQuery>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse> {
    let mut page = tasq
        .namespaces(query.page_token.as_deref(), query.limit())
        .await?;
    if let Some(grant) = req.extensions().get::<crate::auth::Grant>() {
        page.namespaces.retain(|ns| grant.covers(ns));
    }
    Ok(HttpResponse::Ok().json(page))
}

async fn dead_letters(
    tasq: web::Data<Tasq>,
    path: QueuePath,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let (records, next) = tasq
        .dead_letters(&key, query.page_token.as_deref(), query.limit())
        .await?;
    let page = DeadLetterPage {
        dead_letters: records.iter().map(DeadLetter::of).collect(),
        next_page_token: next,
    };
    Ok(HttpResponse::Ok().json(page))
}

/// One page of dead letters. Serialised field by field (never through `serde_json::Value`), so
/// a payload is sent as the exact JSON text it was added with, whatever it holds.
#[derive(Serialize)]
struct DeadLetterPage<'a> {
    dead_letters: Vec<DeadLetter<'a>>,
    next_page_token: Option<String>,
}

/// A dead letter as the contract lists it.
#[derive(Serialize)]
struct DeadLetter<'a> {
    task_id: &'a str,
    task_type: &'a str,
    state: TaskState,
    attempt: u32,
    last_error: &'a Option<TaskError>,
    payload: &'a RawValue,
    updated_at: String,
}

impl<'a> DeadLetter<'a> {
    fn of(rec: &'a TaskRecord) -> Self {
        DeadLetter {
            task_id: &rec.task_id,
            task_type: &rec.task_type,
            state: rec.state,
            attempt: rec.attempt,
            last_error: &rec.last_error,
            payload: &rec.payload,
            updated_at: rfc3339(rec.updated_at),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    task_ids: Option<Vec<String>>,
    all: Option<bool>,
}

async fn redrive(
    tasq: web::Data<Tasq>,
    path: QueuePath,
    JsonBody(body): JsonBody<RedriveRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let task_ids = match (body.task_ids, body.all.unwrap_or(false)) {
        (Some(_), true) => {
            return Err(Error::invalid(
                "give either task_ids or all: true, not both",
            ))
        }
        (Some(ids), false) => Some(ids),
        (None, true) => None,
        (None, false) => {
            return Err(Error::invalid(
                "give task_ids: [...] or all: true to say which dead letters to redrive",
            ))
        }
    };
    let n = tasq.redrive(&key, task_ids).await?;
    Ok(HttpResponse::Ok().json(json!({ "redriven": n })))
}

async fn describe(
    tasq: web::Data<Tasq>,
    path: web::Path<(String, String)>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse> {
    let (ns, queue) = path.into_inner();
    let mut types = serde_json::Map::new();
    for kind in described_types(&req)? {
        let key = QueueKey::new(&ns, &queue, kind)?;
        let stats = match super::owner_elsewhere(&tasq, &req, &key) {
            #[cfg(feature = "postgres")]
            Some(base) => super::forward::describe_type(&tasq, &base, &req, kind).await?,
            _ => serde_json::to_value(tasq.describe(&key).await?).unwrap_or_default(),
        };
        types.insert(kind.as_str().into(), stats);
    }
    Ok(HttpResponse::Ok().json(json!({ "namespace": ns, "name": queue, "types": types })))
}

/// The types to describe: both, or the one another node of the cluster asks its owner for.
fn described_types(req: &actix_web::HttpRequest) -> Result<Vec<QueueType>> {
    #[cfg(feature = "postgres")]
    if super::forward::forwarded(req) {
        if let Some(kind) = req.headers().get(super::forward::DESCRIBE_TYPE) {
            return Ok(vec![QueueType::parse(kind.to_str().unwrap_or_default())?]);
        }
    }
    let _ = req;
    Ok(QueueType::ALL.to_vec())
}

async fn list(
    tasq: web::Data<Tasq>,
    ns: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let page = tasq
        .list_queues(&ns, query.page_token.as_deref(), query.limit())
        .await?;
    Ok(HttpResponse::Ok().json(page))
}
