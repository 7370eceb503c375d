//! Plain actix-web: `POST /echo` reads a small JSON body and answers a small JSON. The ceiling
//! for an actix-web server on this machine, for the peer comparison (bench/peers/run).
//!
//! Usage: `plain-actix [ADDR] [WORKERS]` (default `127.0.0.1:7390`, 2 workers, as tasq).

use actix_web::{post, web, App, HttpResponse, HttpServer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Body {
    t: u64,
    #[allow(dead_code)]
    p: String,
}

#[post("/echo")]
async fn echo(body: web::Json<Body>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!("{{\"ok\":true,\"t\":{}}}", body.t))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7390".to_string());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(|| App::new().service(echo))
        .workers(workers)
        .bind(&addr)?
        .run()
        .await
}
