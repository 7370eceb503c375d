//! The HTTP API (contract: `docs/API.md`), one module per resource.
//!
//! [`configure`] mounts every route on an actix-web `App` (ours, or an embedder's).
//! Request bodies go through [`JsonBody`], which enforces `max_payload_bytes` (413) and turns
//! every decoding problem, unknown fields included, into a 400 in the contract's shape.

#[cfg(feature = "postgres")]
pub mod cluster;
pub mod console;
#[cfg(feature = "postgres")]
pub mod forward;
pub mod leases;
pub mod ops;
pub mod poll;
pub mod queues;
pub mod settle_many;
pub mod tasks;
pub mod ws;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use actix_web::http::Method;
use actix_web::middleware::{from_fn, Next};
use actix_web::web::{self, BytesMut};
use actix_web::HttpMessage;
use actix_web::{FromRequest, HttpRequest, ResponseError};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::model::{LeaseToken, QueueKey, QueueType};

pub use crate::auth::Role;
pub use crate::model::json::decode;
use crate::service::Tasq;

/// Prefix of every queue route: `{q}` of the contract.
pub const QUEUE_PATH: &str = "/api/v1/namespaces/{namespace}/task-queues/{queue}/{queue_type}";

/// Prefix of the lease routes.
const LEASE_PATH: &str = "/api/v1/leases/{lease}";

/// The dynamic prefixes whose routes are mounted in one scope each (see [`configure`]).
const SCOPES: [&str; 2] = [QUEUE_PATH, LEASE_PATH];

/// The HTTP edge of the service: mounting tasq's routes on an embedder's own `App`.
/// (It lives here, with the routes, so that the service below knows nothing of HTTP.)
impl Tasq {
    /// Mounts the whole HTTP API (`/api/v1/…`, `/metrics`, `/healthz`, `/readyz`) on an
    /// actix-web `App` of the embedder's: `App::new().configure(tasq.configure())`.
    ///
    /// To run queue actors on the server's worker threads as `tasq serve` does (with
    /// `queue_threads = 0`), call [`Tasq::share_current_thread`] in the `HttpServer`
    /// factory.
    ///
    /// Only the routes are mounted. Wrap the `App` with [`crate::http::gatekeeper`]
    /// (`.wrap(actix_web::middleware::from_fn(tasq::http::gatekeeper))`, as
    /// [`crate::http::create_app`] does) to check API keys and client bounds, refuse requests
    /// with 503 while shutting down and record HTTP metrics; without it, `auth.enabled` has no
    /// effect on these routes.
    ///
    /// ```
    /// use actix_web::{test, web, App};
    /// use tasq::{Config, Tasq};
    ///
    /// actix_rt::System::new().block_on(async {
    ///     let tasq = Tasq::builder(Config::default()).temporary().start().await.unwrap();
    ///     let app = test::init_service(
    ///         App::new()
    ///             .route("/hello", web::get().to(|| async { "hi" }))
    ///             .configure(tasq.configure()),
    ///     )
    ///     .await;
    ///     let req = test::TestRequest::get().uri("/healthz").to_request();
    ///     assert!(test::call_service(&app, req).await.status().is_success());
    ///     tasq.shutdown().await.unwrap();
    /// });
    /// ```
    pub fn configure(&self) -> impl FnOnce(&mut web::ServiceConfig) {
        configure(self.clone())
    }
}

/// Mounts the whole API (routes, body limits, error shapes, metrics) on `cfg`.
pub fn configure(tasq: Tasq) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::new(tasq))
            .app_data(
                web::PathConfig::default()
                    .error_handler(|e, _| Error::invalid(format!("bad path: {e}")).into()),
            )
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let e = e.to_string();
                let e = e.strip_prefix("Query deserialize error: ").unwrap_or(&e);
                Error::invalid(format!(
                    "bad query string: {}",
                    crate::model::json::plain_words(e)
                ))
                .into()
            }));
        // Every method of one path must sit in one resource: actix picks the resource by path.
        let mut by_path: Vec<(String, Vec<RouteSpec>)> = Vec::new();
        for route in routes() {
            match by_path.iter_mut().find(|(p, _)| *p == route.path) {
                Some((_, list)) => list.push(route),
                None => by_path.push((route.path.clone(), vec![route])),
            }
        }
        // Routes under a dynamic prefix go in one scope per prefix: actix tries resources one
        // after another, each dynamic pattern a regex run, so the scope's one regex replaces a
        // run per route on every request (the matched pattern, the metrics label, is the same).
        // Static paths are tried first (a string comparison each; `/api/v1/leases/settle` must
        // win over the lease scope), then the scopes, which serve the hot routes, and the
        // other dynamic paths last: none of them overlaps a scope.
        let mut scoped: Vec<Vec<actix_web::Resource>> = SCOPES.iter().map(|_| Vec::new()).collect();
        let mut dynamic = Vec::new();
        for (path, list) in by_path {
            // A method the path does not serve is a route that does not exist: 404 in the
            // contract's error shape (actix would answer an empty 405).
            let scope = SCOPES.iter().position(|p| {
                path.strip_prefix(p)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            });
            let local = scope.map_or(path.as_str(), |i| &path[SCOPES[i].len()..]);
            let mut resource = web::resource(local)
                .app_data(RoutePattern(Arc::from(path.as_str())))
                .default_service(web::to(not_found));
            for route in list {
                resource = resource.route((route.handler)());
            }
            match scope {
                Some(i) => scoped[i].push(resource),
                None if path.contains('{') => dynamic.push(resource),
                None => {
                    cfg.service(resource);
                }
            }
        }
        for (prefix, resources) in SCOPES.iter().zip(scoped) {
            let scope = web::scope(prefix).default_service(web::to(not_found));
            cfg.service(resources.into_iter().fold(scope, |s, r| s.service(r)));
        }
        for resource in dynamic {
            cfg.service(resource);
        }
        cfg.default_service(web::to(not_found));
    }
}

/// The pattern of the route that served a request (the `route` label of the HTTP metrics),
/// kept in its resource's data: reading it back costs nothing, where actix's `match_pattern`
/// matches the path against the routes a second time.
struct RoutePattern(Arc<str>);

/// One route of the API: the single table that both mounts the routes and tells which role
/// each needs, so the two cannot drift apart (the OpenAPI test reads it too).
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path pattern as mounted (actix syntax, the `route` label of the HTTP metrics).
    pub path: String,
    /// Path as the contract writes it, where it differs from the mounted pattern.
    pub contract_path: String,
    /// Role needed when auth is on.
    pub role: Role,
    handler: fn() -> actix_web::Route,
}

impl RouteSpec {
    /// A route mounted at `path`.
    pub fn new(
        method: Method,
        path: impl Into<String>,
        role: Role,
        handler: fn() -> actix_web::Route,
    ) -> Self {
        let path = path.into();
        RouteSpec {
            method,
            contract_path: path.clone(),
            path,
            role,
            handler,
        }
    }

    /// Names the route in the contract by another path than its mounted pattern.
    pub fn in_contract_as(mut self, path: impl Into<String>) -> Self {
        self.contract_path = path.into();
        self
    }
}

/// Every route the server mounts.
pub fn routes() -> Vec<RouteSpec> {
    [
        ops::routes(),
        tasks::routes(),
        poll::routes(),
        leases::routes(),
        settle_many::routes(),
        queues::routes(),
        ws::routes(),
        console::routes(),
        #[cfg(feature = "postgres")]
        cluster::routes(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Builds the app that `tasq serve` runs: the API plus its middleware.
pub fn create_app(
    tasq: Tasq,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    actix_web::App::new()
        .configure(configure(tasq))
        .wrap(from_fn(gatekeeper))
}

/// The API's middleware: answers 503 to API requests while starting or stopping, checks API
/// keys and client bounds, and records request metrics by route pattern (never the raw path,
/// so label values stay bounded). Embedders mounting [`configure`] on their own `App` wrap it
/// with `.wrap(actix_web::middleware::from_fn(tasq::http::gatekeeper))`.
pub async fn gatekeeper(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<Tasq>>().cloned();
    let method = req.method().clone();
    let refused = match &state {
        Some(s) if req.path().starts_with("/api/") && !s.is_serving() => Some(Error::Unavailable(
            "the server is starting or shutting down".into(),
        )),
        Some(s) => authorize(s, &req).err(),
        None => None,
    };
    let res = match (refused, &state) {
        (Some(e), _) => req.into_response(e.error_response()),
        #[cfg(feature = "postgres")]
        (None, Some(s)) if s.cluster().is_some() => match forward::route(s, &req) {
            forward::Route::Here => next.call(req).await?.map_into_boxed_body(),
            forward::Route::To(queue, base) => forward::forward(s, &queue, &base, req).await?,
            forward::Route::Refused(e) => req.into_response(e.error_response()),
        },
        (None, _) => next.call(req).await?.map_into_boxed_body(),
    };
    if let Some(s) = state {
        let route = res
            .request()
            .app_data::<RoutePattern>()
            .map_or("unmatched", |p| &p.0);
        let method = method.as_str();
        s.metrics()
            .http_requests
            .with_label_values(&[route, method, res.status().as_str()])
            .inc();
        s.metrics()
            .http_request_duration
            .with_label_values(&[route, method])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// Counts open connections per client address (`limits.max_connections_per_client`).
#[derive(Debug)]
pub struct ClientConnections {
    open: std::sync::Mutex<HashMap<std::net::IpAddr, usize>>,
    max: usize,
}

/// A connection's place in [`ClientConnections`], kept in the connection's data and given
/// back when the connection closes.
#[derive(Debug)]
pub struct ConnectionTicket {
    owner: Arc<ClientConnections>,
    ip: std::net::IpAddr,
    /// The client had too many connections open when this one came.
    pub over: bool,
}

impl ClientConnections {
    /// A counter allowing `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ClientConnections {
            open: std::sync::Mutex::new(HashMap::new()),
            max,
        })
    }

    /// For `HttpServer::on_connect`: counts the connection and leaves its ticket in the
    /// connection data, where [`gatekeeper`] finds it.
    pub fn on_connect(
        self: &Arc<Self>,
        conn: &dyn std::any::Any,
        data: &mut actix_web::dev::Extensions,
    ) {
        let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        // Small answers and task frames go out at once, not after Nagle's delay.
        let _ = tcp.set_nodelay(true);
        let Some(ip) = tcp.peer_addr().ok().map(|a| a.ip()) else {
            return;
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        *n += 1;
        data.insert(ConnectionTicket {
            owner: self.clone(),
            ip,
            over: *n > self.max,
        });
    }
}

impl Drop for ConnectionTicket {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The role each (method, pattern) needs, from the route table.
fn role_of(method: &Method, pattern: &str) -> Option<Role> {
    static ROLES: OnceLock<HashMap<(Method, String), Role>> = OnceLock::new();
    ROLES
        .get_or_init(|| {
            routes()
                .into_iter()
                .map(|r| ((r.method, r.path), r.role))
                .collect()
        })
        .get(&(method.clone(), pattern.to_string()))
        .copied()
}

/// The namespace a request acts on: from the queue path, or from the lease token.
fn namespace_of(path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        return rest.split('/').next().map(str::to_string);
    }
    let lease = path.strip_prefix("/api/v1/leases/")?.split('/').next()?;
    LeaseToken::decode(lease)
        .ok()
        .map(|t| t.queue.namespace().to_string())
}

/// The `Authorization` header's value, when it is text.
pub(crate) fn authorization(headers: &actix_web::http::header::HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// With auth on, checks the bearer key against the route's role and namespace, and leaves
/// the grant in the request for handlers that act on more than one request (WebSocket).
fn authorize(state: &Tasq, req: &ServiceRequest) -> Result<()> {
    if req.conn_data::<ConnectionTicket>().is_some_and(|t| t.over) {
        return Err(Error::ResourceExhausted {
            message: format!(
                "too many connections from this address (limits.max_connections_per_client = {})",
                state.config().limits.max_connections_per_client
            ),
            retry_after_secs: 1,
        });
    }
    if !state.auth().enabled() {
        // Only /metrics can need a token then; no route lookup on the hot path.
        if req.path() == "/metrics" {
            return state.auth().check_metrics(authorization(req.headers()));
        }
        return Ok(());
    }
    let Some(pattern) = req.match_pattern() else {
        return Ok(());
    };
    let header = authorization(req.headers());
    match role_of(req.method(), &pattern) {
        None | Some(Role::Public) => Ok(()),
        Some(Role::Metrics) => state.auth().check_metrics(header),
        Some(role) if state.auth().enabled() => {
            let grant = state.auth().authenticate(header)?;
            // A GET changes nothing, but for a worker's (the WebSocket upgrade).
            let read = req.method() == Method::GET && role != Role::Worker;
            match namespace_of(req.path()) {
                Some(ns) => grant.allows_route(role, read, &ns)?,
                // An undecodable lease is answered lease_lost by its handler; the key must
                // still hold the role.
                None if grant.may(role, read) => {}
                None => {
                    return Err(Error::PermissionDenied(format!(
                        "this key may not act as {role}"
                    )))
                }
            }
            req.extensions_mut().insert(grant);
            Ok(())
        }
        Some(_) => Ok(()),
    }
}

async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse> {
    Err(Error::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// The base URL of the node that owns `key`, when another node of the cluster does and `req`
/// was not forwarded already (see `forward::remote_owner`); `None` outside cluster mode.
fn owner_elsewhere(tasq: &Tasq, req: &HttpRequest, key: &QueueKey) -> Option<String> {
    #[cfg(feature = "postgres")]
    return forward::remote_owner(tasq, req, key);
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (tasq, req, key);
        None
    }
}

/// The queue named by the `{namespace}/{queue}/{queue_type}` path segments.
pub fn queue_key(namespace: &str, queue: &str, queue_type: &str) -> Result<QueueKey> {
    QueueKey::new(namespace, queue, QueueType::parse(queue_type)?)
}

/// A JSON request body of at most `max_payload_bytes`; anything wrong is a contract error.
pub struct JsonBody<T>(pub T);

/// Like [`JsonBody`], but an empty body means `T::default()`.
pub struct MaybeJson<T>(pub T);

/// `max_payload_bytes` and `limits.body_timeout` of the app.
fn body_bounds(req: &HttpRequest) -> (usize, Duration) {
    req.app_data::<web::Data<Tasq>>()
        .map_or((1 << 20, Duration::from_secs(30)), |s| {
            (s.config().max_payload_bytes, s.config().limits.body_timeout)
        })
}

/// Reads the body, answering 413 past `limit`: at once, before reading anything, when the
/// declared `Content-Length` is over it (the connection then closes, with the rest unread).
/// A body that has not arrived in full within `timeout` answers 400.
async fn read_body(
    mut payload: Payload,
    limit: usize,
    declared: Option<u64>,
    timeout: Duration,
) -> Result<BytesMut> {
    let too_large = || Error::PayloadTooLarge(format!("the request body is over {limit} bytes"));
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut body = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| Error::invalid(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        Error::invalid(format!(
            "the request body did not arrive in full within {timeout:?} (limits.body_timeout)"
        ))
    })?
}

fn extract<T: 'static>(
    req: &HttpRequest,
    payload: &mut Payload,
    parse: fn(&[u8]) -> Result<T>,
) -> LocalBoxFuture<'static, Result<T>> {
    let (limit, timeout) = body_bounds(req);
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let payload = payload.take();
    Box::pin(async move {
        let body = read_body(payload, limit, declared, timeout).await?;
        parse(&body)
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = extract(req, payload, |b| {
            if b.iter().all(u8::is_ascii_whitespace) {
                return Err(Error::invalid(
                    "the request body is empty; expected a JSON object",
                ));
            }
            decode(b)
        });
        Box::pin(async move { fut.await.map(JsonBody) })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for MaybeJson<T> {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let fut = extract(req, payload, |b| {
            if b.iter().all(u8::is_ascii_whitespace) {
                return Ok(T::default());
            }
            decode(b)
        });
        Box::pin(async move { fut.await.map(MaybeJson) })
    }
}
