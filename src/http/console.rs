//! The web console at `/ui`: its page and assets, built into the binary (nothing to install or
//! fetch at run time), and `GET /api/v1/whoami`, which tells the console what its key may do.
//!
//! The page holds no authority of its own: it asks for an API key, keeps it in the browser's
//! session storage and sends it as `Authorization: Bearer` on every API call, so a write needs
//! the header a cross-site form cannot send (no cookie, nothing for CSRF to ride on).

use actix_web::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{Role, RouteSpec};
use crate::auth::Role as KeyRole;
use crate::error::{Error, Result};
use crate::service::Tasq;

/// The console's files: (name, content type, body).
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../ui/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_str!("../../ui/icon.svg"),
    ),
];

/// Everything the page loads comes from this server; it may not be framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console routes.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/ui", Role::Public, || web::get().to(index)),
        // `/ui/` (empty file) is the page too.
        RouteSpec::new(Method::GET, "/ui/{file:.*}", Role::Public, || {
            web::get().to(asset)
        })
        .in_contract_as("/ui/{file}"),
        RouteSpec::new(Method::GET, "/api/v1/whoami", Role::Public, || {
            web::get().to(whoami)
        }),
    ]
}

async fn index() -> HttpResponse {
    serve("index.html").unwrap_or_else(|| HttpResponse::InternalServerError().finish())
}

async fn asset(file: web::Path<String>) -> Result<HttpResponse> {
    let name = if file.is_empty() {
        "index.html"
    } else {
        file.as_str()
    };
    serve(name).ok_or_else(|| Error::NotFound(format!("no console file {name:?}")))
}

fn serve(name: &str) -> Option<HttpResponse> {
    let (_, kind, body) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    let mut res = HttpResponse::Ok().body(*body);
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Small files, served from memory: always ask again, so an upgrade shows at once.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        actix_web::http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        actix_web::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        actix_web::http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(res)
}

/// Who the caller's key is: its name, roles and namespaces (`null` = all). With auth off,
/// everyone may do everything; with it on, a missing or wrong key answers 401.
async fn whoami(tasq: web::Data<Tasq>, req: HttpRequest) -> Result<HttpResponse> {
    if !tasq.auth().enabled() {
        return Ok(HttpResponse::Ok().json(json!({
            "auth_enabled": false,
            "name": null,
            "roles": [KeyRole::Producer, KeyRole::Worker, KeyRole::Admin],
            "namespaces": null,
        })));
    }
    let grant = tasq
        .auth()
        .authenticate(super::authorization(req.headers()))?;
    Ok(HttpResponse::Ok().json(json!({
        "auth_enabled": true,
        "name": grant.name,
        "roles": grant.roles(),
        "namespaces": grant.namespaces(),
    })))
}
