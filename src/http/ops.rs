//! Operations: `/healthz`, `/readyz`, `/metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AppState;
use crate::error::Error;

/// Mounts the operations routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    if state.lifecycle.serving() {
        Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
    } else {
        Err(Error::Unavailable(
            "not ready: starting up or shutting down".into(),
        ))
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
