//! Tasks: add, add many, status (with `wait_ms`), cancel.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{decode, queue_key, AppState, JsonBody, Role, RouteSpec, QUEUE_PATH};
use crate::error::{Error, Result};
use crate::model::{
    validate_name, AddTaskRequest, NewTask, QueueKey, TaskRecord, MAX_BATCH, MAX_STATUS_WAIT_MS,
};
use crate::queue::messages::{Cancel, Watch, WatchTask};
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
    ]
}

type QueuePath = web::Path<(String, String, String)>;
type TaskPath = web::Path<(String, String, String, String)>;

async fn add(
    state: web::Data<AppState>,
    path: QueuePath,
    JsonBody(body): JsonBody<AddTaskRequest>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let task = body.validate()?;
    let result = state.queues.add_one(&key, task, &*state.store).await?;
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

/// Validates every task of a batch; the first bad one rejects the whole batch, by index.
fn validate_batch(body: BatchRequest) -> Result<Vec<NewTask>> {
    if body.tasks.is_empty() || body.tasks.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "tasks must hold 1–{MAX_BATCH} tasks, got {}",
            body.tasks.len()
        )));
    }
    body.tasks
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            decode::<AddTaskRequest>(raw.get().as_bytes())
                .and_then(AddTaskRequest::validate)
                .map_err(|e| Error::invalid(format!("tasks[{i}]: {e}")))
        })
        .collect()
}

async fn add_batch(
    state: web::Data<AppState>,
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
    let tasks = validate_batch(body)?;
    let results = state
        .queues
        .add(&key, Arc::new(tasks), &*state.store)
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "results": results })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusQuery {
    wait_ms: Option<u64>,
}

fn task_path(path: TaskPath) -> Result<(QueueKey, String)> {
    let (ns, queue, ty, task_id) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    validate_name("task_id", &task_id)?;
    Ok((key, task_id))
}

fn status_response(key: &QueueKey, task_id: &str, rec: Option<TaskRecord>) -> Result<HttpResponse> {
    match rec {
        Some(rec) => Ok(HttpResponse::Ok().json(rec.status())),
        None => Err(Error::NotFound(format!("no task {task_id:?} in {key}"))),
    }
}

async fn status(
    state: web::Data<AppState>,
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
    if wait_ms > 0 {
        let watch = state
            .queues
            .call(
                &key,
                WatchTask {
                    task_id: task_id.clone(),
                },
            )
            .await??;
        match watch {
            Watch::Now(rec) => return status_response(&key, &task_id, rec.map(|r| *r)),
            Watch::Later(rx) => {
                let _ = tokio::time::timeout(Duration::from_millis(wait_ms), rx).await;
            }
        }
    }
    status_response(&key, &task_id, state.store.task(&key, &task_id)?)
}

async fn cancel(state: web::Data<AppState>, path: TaskPath) -> Result<HttpResponse> {
    let (key, task_id) = task_path(path)?;
    let rec = state
        .queues
        .call_durable(&key, Cancel { task_id }, &*state.store)
        .await?;
    Ok(HttpResponse::Ok().json(rec.status()))
}
