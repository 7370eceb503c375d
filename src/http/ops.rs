//! Operations: `/healthz`, `/readyz`, `/metrics`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Role, RouteSpec};
use crate::error::Error;
use crate::service::Tasq;
use actix_web::http::Method;

/// The operations routes.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/healthz", Role::Public, || {
            web::get().to(healthz)
        }),
        RouteSpec::new(Method::GET, "/readyz", Role::Public, || {
            web::get().to(readyz)
        }),
        RouteSpec::new(Method::GET, "/metrics", Role::Metrics, || {
            web::get().to(metrics)
        }),
    ]
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(tasq: web::Data<Tasq>) -> Result<HttpResponse, Error> {
    if !tasq.is_serving() {
        return Err(Error::Unavailable(
            "not ready: starting up or shutting down".into(),
        ));
    }
    // A store that failed a write or sync acknowledges nothing: not ready.
    tasq.storage_healthy()?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

async fn metrics(tasq: web::Data<Tasq>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(tasq.metrics().render())
}
