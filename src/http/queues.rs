//! Queues: describe (both types of a name) and list (paged).

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use super::{queue_key, AppState, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::clock::{now_ms, rfc3339};
use crate::error::{Error, Result};
use crate::model::{
    present, validate_name, validate_task_ids, QueueKey, QueueType, TaskError, TaskRecord,
    TaskState, MAX_LIST_LIMIT,
};
use crate::queue::messages::{Describe, Redrive, SetConfig};
use crate::queue::throttle::RateLimit;
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
    state: web::Data<AppState>,
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
    let rate_limit = RateLimit::requested(rate, body.burst)?;
    let stored = state
        .queues
        .call_durable(&key, SetConfig { rate_limit }, &*state.store)
        .await?;
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
    fn limit(&self) -> Result<usize> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit must be 1–{MAX_LIST_LIMIT}, got {limit}"
            )));
        }
        Ok(limit)
    }

    /// The decoded page token (a storage key this server gave out).
    fn after(&self) -> Result<Option<Vec<u8>>> {
        match self.page_token.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => URL_SAFE_NO_PAD
                .decode(t)
                .map(Some)
                .map_err(|_| Error::invalid("page_token is not one this server gave")),
        }
    }
}

async fn dead_letters(
    state: web::Data<AppState>,
    path: QueuePath,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let limit = query.limit()?;
    let (ids, next) = state
        .store
        .dead_letters(&key, query.after()?.as_deref(), limit)?;
    let mut records = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(rec) = state.store.task(&key, &id)? {
            records.push(rec);
        }
    }
    let page = DeadLetterPage {
        dead_letters: records.iter().map(DeadLetter::of).collect(),
        next_page_token: next.map(|k| URL_SAFE_NO_PAD.encode(k)),
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
    state: web::Data<AppState>,
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
        (Some(ids), false) => {
            validate_task_ids(&ids)?;
            Some(ids)
        }
        (None, true) => None,
        (None, false) => {
            return Err(Error::invalid(
                "give task_ids: [...] or all: true to say which dead letters to redrive",
            ))
        }
    };
    let n = state
        .queues
        .call_durable(&key, Redrive { task_ids }, &*state.store)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "redriven": n })))
}

async fn describe(
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let (ns, queue) = path.into_inner();
    let mut types = serde_json::Map::new();
    for kind in QueueType::ALL {
        let key = QueueKey::new(&ns, &queue, kind)?;
        let stats = state.queues.call(&key, Describe).await??;
        types.insert(
            kind.as_str().into(),
            serde_json::to_value(stats).unwrap_or_default(),
        );
    }
    Ok(HttpResponse::Ok().json(json!({ "namespace": ns, "name": queue, "types": types })))
}

#[derive(Serialize)]
struct ListedQueue {
    name: String,
    #[serde(rename = "type")]
    kind: QueueType,
    backlog_count: u64,
    in_flight_count: u64,
    pollers: usize,
}

async fn list(
    state: web::Data<AppState>,
    ns: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse> {
    let ns = ns.into_inner();
    validate_name("namespace", &ns)?;
    let (page, next) = state
        .store
        .list_queues(&ns, query.after()?.as_deref(), query.limit()?)?;
    let mut out = Vec::with_capacity(page.len());
    for (key, meta) in page {
        let (backlog_count, in_flight_count, pollers) = if state.queues.is_loaded(&key) {
            let s = state.queues.call(&key, Describe).await??;
            (s.backlog_count, s.in_flight_count, s.pollers.len())
        } else {
            // Delayed tasks already due count as ready, as once an actor loads the queue.
            let resting = state.store.resting(&key, &meta, now_ms(), false)?;
            (resting.backlog, meta.in_flight, 0)
        };
        out.push(ListedQueue {
            name: key.name().to_string(),
            kind: key.queue_type(),
            backlog_count,
            in_flight_count,
            pollers,
        });
    }
    Ok(HttpResponse::Ok().json(json!({
        "task_queues": out,
        "next_page_token": next.map(|k| URL_SAFE_NO_PAD.encode(k)),
    })))
}
