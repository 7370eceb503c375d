//! Tasks: add, add many, status (with `wait_ms`), cancel; list by state, explain.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{decode, queue_key, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::error::{Error, Result};
use crate::model::listing::{ListState, TaskFilter};
use crate::model::{check_batch_len, QueueKey, TaskSpec, MAX_STATUS_WAIT_MS};
use crate::service::Tasq;
use actix_web::http::Method;

/// The task routes.
pub fn routes() -> Vec<RouteSpec> {
    let task = format!("{QUEUE_PATH}/tasks/{{task_id}}");
    vec![
        RouteSpec::new(
            Method::POST,
            format!("{QUEUE_PATH}/tasks"),
            Role::Producer,
            || web::post().to(add),
        ),
        // `POST .../tasks/batch` shares the pattern of `.../tasks/{task_id}`, so that a task
        // may still be called "batch"; the handler answers 404 for any other id.
        RouteSpec::new(Method::POST, &task, Role::Producer, || {
            web::post().to(add_batch)
        })
        .in_contract_as(format!("{QUEUE_PATH}/tasks/batch")),
        RouteSpec::new(Method::GET, &task, Role::Producer, || web::get().to(status)),
        RouteSpec::new(Method::DELETE, &task, Role::Producer, || {
            web::delete().to(cancel)
        }),
        RouteSpec::new(
            Method::GET,
            format!("{QUEUE_PATH}/tasks"),
            Role::Producer,
            || web::get().to(list),
        ),
        RouteSpec::new(
            Method::GET,
            format!("{task}/explain"),
            Role::Producer,
            || web::get().to(explain),
        ),
    ]
}

type QueuePath = web::Path<(String, String, String)>;
type TaskPath = web::Path<(String, String, String, String)>;

async fn add(
    tasq: web::Data<Tasq>,
    path: QueuePath,
    JsonBody(body): JsonBody<TaskSpec>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let result = tasq.add(&key, body).await?;
    Ok(if result.duplicate {
        HttpResponse::Ok().json(result)
    } else {
        HttpResponse::Created().json(result)
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    tasks: Vec<Box<RawValue>>,
}

/// Decodes every task of a batch; the first bad one rejects the whole batch, by index.
fn decode_batch(body: BatchRequest) -> Result<Vec<TaskSpec>> {
    check_batch_len(body.tasks.len())?;
    body.tasks
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            decode::<TaskSpec>(raw.get().as_bytes())
                .map_err(|e| Error::invalid(format!("tasks[{i}]: {e}")))
        })
        .collect()
}

async fn add_batch(
    tasq: web::Data<Tasq>,
    path: TaskPath,
    JsonBody(body): JsonBody<BatchRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty, last) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    if last != "batch" {
        return Err(Error::NotFound(format!(
            "no route for POST .../tasks/{last}; did you mean .../tasks/batch?"
        )));
    }
    let results = tasq.add_batch(&key, decode_batch(body)?).await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait_ms: Option<u64>,
    /// `full`: everything known of the task (payload, headers, policy), not only its status.
    view: Option<String>,
}

fn task_path(path: TaskPath) -> Result<(QueueKey, String)> {
    let (ns, queue, ty, task_id) = path.into_inner();
    Ok((queue_key(&ns, &queue, &ty)?, task_id))
}

async fn status(
    tasq: web::Data<Tasq>,
    path: TaskPath,
    query: web::Query<StatusQuery>,
) -> Result<HttpResponse> {
    let (key, task_id) = task_path(path)?;
    let wait_ms = query.wait_ms.unwrap_or(0);
    if wait_ms > MAX_STATUS_WAIT_MS {
        return Err(Error::invalid(format!(
            "wait_ms must be 0–{MAX_STATUS_WAIT_MS}, got {wait_ms}"
        )));
    }
    let full = match query.view.as_deref() {
        None | Some("status") => false,
        Some("full") => true,
        Some(other) => {
            return Err(Error::invalid(format!(
                "view must be status or full, got {other:?}"
            )))
        }
    };
    if wait_ms > 0 {
        let info = tasq
            .wait(&key, &task_id, Duration::from_millis(wait_ms))
            .await?;
        if !full {
            return Ok(HttpResponse::Ok().json(info));
        }
    }
    Ok(if full {
        HttpResponse::Ok().json(tasq.task_detail(&key, &task_id).await?)
    } else {
        HttpResponse::Ok().json(tasq.status(&key, &task_id).await?)
    })
}

async fn cancel(tasq: web::Data<Tasq>, path: TaskPath) -> Result<HttpResponse> {
    let (key, task_id) = task_path(path)?;
    Ok(HttpResponse::Ok().json(tasq.cancel(&key, &task_id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    state: Option<String>,
    task_type: Option<String>,
    fairness_key: Option<String>,
    priority: Option<i64>,
    limit: Option<usize>,
    page_token: Option<String>,
}

async fn list(
    tasq: web::Data<Tasq>,
    path: QueuePath,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let query = query.into_inner();
    let priority = query
        .priority
        .map(|p| {
            u8::try_from(p)
                .ok()
                .filter(|p| (1..=5).contains(p))
                .ok_or_else(|| Error::invalid(format!("priority must be 1–5, got {p}")))
        })
        .transpose()?;
    let filter = TaskFilter {
        state: query
            .state
            .as_deref()
            .map(ListState::parse)
            .transpose()?
            .unwrap_or_default(),
        task_type: query.task_type,
        fairness_key: query.fairness_key,
        priority,
    };
    let page = tasq
        .list_tasks(
            &key,
            filter,
            query.page_token.as_deref(),
            query.limit.unwrap_or(100),
        )
        .await?;
    Ok(HttpResponse::Ok().json(page))
}

async fn explain(tasq: web::Data<Tasq>, path: TaskPath) -> Result<HttpResponse> {
    let (key, task_id) = task_path(path)?;
    Ok(HttpResponse::Ok().json(tasq.explain(&key, &task_id).await?))
}
