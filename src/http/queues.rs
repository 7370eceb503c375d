//! Queues: describe (both types of a name) and list (paged).

use actix_web::{web, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::error::{Error, Result};
use crate::model::{validate_name, QueueKey, QueueType};
use crate::queue::messages::Describe;

/// Largest page of the queue list.
const MAX_LIST_LIMIT: usize = 1000;

/// Mounts the queue routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v1/namespaces/{namespace}/task-queues/{queue}")
            .route(web::get().to(describe)),
    )
    .service(
        web::resource("/api/v1/namespaces/{namespace}/task-queues").route(web::get().to(list)),
    );
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
    page_token: Option<String>,
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
    query: web::Query<ListQuery>,
) -> Result<HttpResponse> {
    let ns = ns.into_inner();
    validate_name("namespace", &ns)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be 1–{MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    let after = match query.page_token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .map_err(|_| Error::invalid("page_token is not one this server gave"))?,
        ),
    };
    let (page, next) = state.store.list_queues(&ns, after.as_deref(), limit)?;
    let mut out = Vec::with_capacity(page.len());
    for (key, meta) in page {
        let (backlog_count, in_flight_count, pollers) = if state.queues.is_loaded(&key) {
            let s = state.queues.call(&key, Describe).await??;
            (s.backlog_count, s.in_flight_count, s.pollers.len())
        } else {
            (meta.ready, meta.in_flight, 0)
        };
        out.push(ListedQueue {
            name: key.name().to_string(),
            kind: key.kind(),
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
