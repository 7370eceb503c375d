//! Cluster mode: a request for a queue that another node owns goes on to that node, and its
//! answer comes back as it is. Clients know nothing of the cluster: any node answers any
//! request.
//!
//! What goes on: every route under a queue's path (`{q}/…`: adds, polls, long polls
//! included, status, cancel, list tasks, config, dead letters) and under a lease
//! (`/api/v1/leases/{lease}/…`: its queue is in the token), here in the middleware; a
//! describe asks each type's owner for its stats ([`describe_type`]); a WebSocket session
//! is relayed frame by frame ([`relay_socket`]). A forwarded request carries the
//! node it came from and the cluster secret; the owner checks the secret and serves it
//! itself, never sending it on again (two nodes that briefly disagree on the owner cannot
//! bounce a request between them). The client's own headers go along, its API key included,
//! so the owner checks it as the first node did.

use std::time::Duration;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName};
use actix_web::web::BytesMut;
use actix_web::{HttpMessage, HttpResponse, ResponseError};
use futures_util::StreamExt;

use crate::cluster::Owner;
use crate::error::Error;
use crate::model::{LeaseToken, QueueKey};
use crate::service::Tasq;

/// The node a forwarded request comes from.
pub const FORWARDED_BY: &str = "x-tasq-forwarded-by";
/// The cluster secret, on a forwarded request.
pub const CLUSTER_SECRET: &str = "x-tasq-cluster-secret";

/// On a forwarded describe: the one queue type to describe (the caller describes the other
/// itself, or asks its owner).
pub const DESCRIBE_TYPE: &str = "x-tasq-describe-type";

/// Longest a forwarded request may take: past the longest long poll a client may ask for.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Headers that belong to one connection, not to the request: never passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "host"
            | "content-length"
            | FORWARDED_BY
            | CLUSTER_SECRET
            | DESCRIBE_TYPE
    )
}

/// What to do with a request in cluster mode.
pub enum Route {
    /// Serve it here.
    Here,
    /// Send it on to the owner of this queue at this base URL.
    To(QueueKey, String),
    /// A forwarded request with a wrong secret.
    Refused(Error),
}

/// Where `req` is served.
pub fn route(tasq: &Tasq, req: &ServiceRequest) -> Route {
    let Some(cluster) = tasq.cluster() else {
        return Route::Here;
    };
    if let Some(from) = req.headers().get(FORWARDED_BY) {
        let given = req
            .headers()
            .get(CLUSTER_SECRET)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !crate::auth::same_secret(given, cluster.secret().as_bytes()) {
            return Route::Refused(Error::Unauthenticated(format!(
                "a request forwarded by {:?} carries no valid cluster secret",
                from.to_str().unwrap_or("?")
            )));
        }
        return Route::Here;
    }
    // A WebSocket session stays on the node it reached (not sent on yet).
    if req.headers().contains_key(header::UPGRADE) {
        return Route::Here;
    }
    let Some(queue) = queue_of(req.path()) else {
        return Route::Here;
    };
    match tasq.owner(&queue) {
        Owner::Remote { url, .. } if !url.is_empty() => Route::To(queue, url),
        _ => Route::Here,
    }
}

/// The queue a path acts on: `{q}/…`, or a lease's.
fn queue_of(path: &str) -> Option<QueueKey> {
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "api", "v1", "namespaces", ns, "task-queues", q, ty, ..] => {
            super::queue_key(ns, q, ty).ok()
        }
        ["", "api", "v1", "leases", lease, _, ..] if *lease != "settle" => {
            LeaseToken::decode(lease).ok().map(|t| t.queue)
        }
        _ => None,
    }
}

/// Sends `req` on to the node at `base`, the owner of `queue`, and answers what it answers.
/// A node that cannot be reached is a 503, and so is one that stops answering while the
/// queue moves to another node (a node paused or cut off still accepts connections, and a
/// long poll may wait minutes): the client retries, and reaches the new owner.
pub async fn forward(
    tasq: &Tasq,
    queue: &QueueKey,
    base: &str,
    mut req: ServiceRequest,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(cluster) = tasq.cluster() else {
        return Err(Error::Internal("forwarding outside cluster mode".into()).into());
    };
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let limit = tasq.config().max_payload_bytes;
    let mut payload = req.take_payload();
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > limit {
            let e = Error::PayloadTooLarge(format!(
                "the request body is over max_payload_bytes ({limit})"
            ));
            return Ok(req.into_response(e.error_response()));
        }
        body.extend_from_slice(&chunk);
    }
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    let out = client(cluster)
        .request(req.method().clone(), format!("{base}{path}"))
        .timeout(FORWARD_TIMEOUT);
    let out = onward(out, req.headers(), cluster);
    tasq.metrics()
        .cluster
        .forwarded_requests
        .with_label_values(&[&route])
        .inc();
    let sent = tokio::select! {
        sent = out.send_body(body.freeze()) => sent.map_err(|e| e.to_string()),
        () = moved(tasq, queue, base) => Err("it stopped answering and the queue moved".into()),
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            let e = owner_unreachable(tasq, "this queue", base, e);
            return Ok(req.into_response(e.error_response()));
        }
    };
    let mut res = HttpResponse::build(answer.status());
    for (name, value) in answer.headers().iter() {
        if !hop_by_hop(name) {
            res.append_header((name.clone(), value.clone()));
        }
    }
    Ok(req.into_response(res.streaming(answer)))
}

/// `out` with the client's own headers of `req` (its API key among them, less those of its
/// connection) and this node's name and the cluster secret: a request sent on to the owner.
fn onward(
    mut out: awc::ClientRequest,
    req: &actix_web::http::header::HeaderMap,
    cluster: &crate::cluster::Cluster,
) -> awc::ClientRequest {
    for (name, value) in req.iter() {
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    out.insert_header((FORWARDED_BY, cluster.node_id()))
        .insert_header((CLUSTER_SECRET, cluster.secret()))
}

/// The 503 for an owner (of `queue`, as the message names it) at `base` that did not answer,
/// counted: queues whose owner stays unreachable are queues nobody serves.
fn owner_unreachable(tasq: &Tasq, queue: &str, base: &str, e: impl std::fmt::Display) -> Error {
    tasq.metrics().cluster.owner_unreachable.inc();
    let message = format!("the node that owns {queue} ({base}) cannot be reached: {e}; retry");
    log::warn!("cluster: {message}");
    Error::Unavailable(message)
}

/// Resolves once `queue` is no longer placed on the node at `base` (checked every
/// heartbeat), that node having been found dead or another having joined.
async fn moved(tasq: &Tasq, queue: &QueueKey, base: &str) {
    let every = tasq.config().cluster.heartbeat_interval;
    loop {
        tokio::time::sleep(every).await;
        match tasq.owner(queue) {
            Owner::Remote { url, .. } if url == base => continue,
            _ => return,
        }
    }
}

/// True when `req` was forwarded by another node (its secret was checked by
/// [`route`] before any handler ran).
pub fn forwarded(req: &actix_web::HttpRequest) -> bool {
    req.headers().contains_key(FORWARDED_BY)
}

/// The stats of one type of the queue that `req` describes, from the node at `base` that
/// owns it: the same request, forwarded, naming the type.
pub async fn describe_type(
    tasq: &Tasq,
    base: &str,
    req: &actix_web::HttpRequest,
    kind: crate::model::QueueType,
) -> crate::error::Result<serde_json::Value> {
    let what = format!("the {} queue", kind.as_str());
    let ask = Ask {
        what: &what,
        route: "/api/v1/namespaces/{namespace}/task-queues/{queue}",
        method: actix_web::http::Method::GET,
        path: req.path().to_string(),
        body: None,
        header: Some((DESCRIBE_TYPE, kind.as_str())),
    };
    let body = ask_owner(tasq, base, req, ask).await?;
    Ok(body["types"][kind.as_str()].clone())
}

/// A request this node makes of a queue's owner on behalf of the client's `req`.
pub struct Ask<'a> {
    /// What the owner owns, for the error message ("the activity queue").
    pub what: &'a str,
    /// The route pattern, for the forwarded-requests metric.
    pub route: &'a str,
    /// The method.
    pub method: actix_web::http::Method,
    /// The path (and query) on the owner.
    pub path: String,
    /// A JSON body.
    pub body: Option<serde_json::Value>,
    /// One more header.
    pub header: Option<(&'static str, &'a str)>,
}

/// Sends `ask` to the node at `base`, with the client's headers of `req`, and answers the
/// owner's JSON answer when it is a 2xx; anything else (unreachable, an error answer) is a
/// 503 naming the owner.
pub async fn ask_owner(
    tasq: &Tasq,
    base: &str,
    req: &actix_web::HttpRequest,
    ask: Ask<'_>,
) -> crate::error::Result<serde_json::Value> {
    let unreachable = |e: String| owner_unreachable(tasq, ask.what, base, e);
    let Some(cluster) = tasq.cluster() else {
        return Err(Error::Internal("forwarding outside cluster mode".into()));
    };
    let out = client(cluster)
        .request(ask.method.clone(), format!("{base}{}", ask.path))
        .timeout(Duration::from_secs(30));
    let mut out = onward(out, req.headers(), cluster);
    if let Some(h) = ask.header {
        out = out.insert_header(h);
    }
    let sent = match &ask.body {
        Some(body) => {
            // A body of this node's making: the client's encoding of its own does not apply.
            out.headers_mut().remove(header::CONTENT_ENCODING);
            out.send_json(body).await
        }
        None => out.send().await,
    };
    let mut answer = sent.map_err(|e| unreachable(e.to_string()))?;
    tasq.metrics()
        .cluster
        .forwarded_requests
        .with_label_values(&[ask.route])
        .inc();
    let body: serde_json::Value = answer
        .json()
        .limit(64 << 20)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if !answer.status().is_success() {
        return Err(unreachable(format!(
            "it answered {}: {body}",
            answer.status()
        )));
    }
    Ok(body)
}

/// The base URL of the node that owns `key`, when it is another node and `req` was not
/// forwarded already (a forwarded request is served here, never sent on).
pub fn remote_owner(tasq: &Tasq, req: &actix_web::HttpRequest, key: &QueueKey) -> Option<String> {
    if forwarded(req) {
        return None;
    }
    match tasq.owner(key) {
        Owner::Remote { url, .. } if !url.is_empty() => Some(url),
        _ => None,
    }
}

/// A WebSocket session for a queue another node owns: the worker's socket stays on this
/// node, and every frame goes to and from a socket this node opens on the owner, pings and
/// pongs included (so each end still notices the other going silent). An owner that cannot
/// be reached is a 503 to the upgrade.
pub async fn relay_socket(
    tasq: &Tasq,
    base: &str,
    req: actix_web::HttpRequest,
    body: actix_web::web::Payload,
) -> crate::error::Result<HttpResponse> {
    use actix_ws::AggregatedMessage;
    use awc::ws::{Frame, Message};
    use futures_util::SinkExt;

    let Some(cluster) = tasq.cluster() else {
        return Err(Error::Internal("relaying outside cluster mode".into()));
    };
    let slot = tasq.take_socket_slot()?;
    let limit = tasq.config().max_payload_bytes;
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.path(), |p| p.as_str());
    let target = format!("ws{}{path}", base.strip_prefix("http").unwrap_or(base));
    let mut up = client(cluster).ws(target).max_frame_size(limit);
    for (name, value) in req.headers().iter() {
        if !hop_by_hop(name) && !name.as_str().starts_with("sec-websocket-") {
            up = up.header(name.clone(), value.clone());
        }
    }
    let (_, framed) = up
        .header(FORWARDED_BY, cluster.node_id())
        .header(CLUSTER_SECRET, cluster.secret())
        .connect()
        .await
        .map_err(|e| owner_unreachable(tasq, "this queue", base, e))?;
    let (response, mut session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| Error::invalid(format!("not a WebSocket upgrade: {e}")))?;
    let mut worker = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let (mut owner_tx, mut owner_rx) = framed.split();
    tasq.metrics()
        .cluster
        .forwarded_requests
        .with_label_values(&[&format!("{}/connect", super::QUEUE_PATH)])
        .inc();
    actix_rt::spawn(async move {
        let _slot = slot;
        loop {
            tokio::select! {
                from_worker = worker.next() => {
                    let to_owner = match from_worker {
                        Some(Ok(AggregatedMessage::Text(t))) => Message::Text(t),
                        Some(Ok(AggregatedMessage::Binary(b))) => Message::Binary(b),
                        Some(Ok(AggregatedMessage::Ping(b))) => Message::Ping(b),
                        Some(Ok(AggregatedMessage::Pong(b))) => Message::Pong(b),
                        Some(Ok(AggregatedMessage::Close(reason))) => {
                            let _ = owner_tx.send(Message::Close(reason)).await;
                            return;
                        }
                        _ => {
                            let _ = owner_tx.send(Message::Close(None)).await;
                            return;
                        }
                    };
                    if owner_tx.send(to_owner).await.is_err() {
                        break;
                    }
                }
                from_owner = owner_rx.next() => {
                    let sent = match from_owner {
                        Some(Ok(Frame::Text(b))) => match std::str::from_utf8(&b) {
                            Ok(text) => session.text(text.to_string()).await,
                            Err(_) => break,
                        },
                        Some(Ok(Frame::Binary(b))) => session.binary(b).await,
                        Some(Ok(Frame::Ping(b))) => session.ping(&b).await,
                        Some(Ok(Frame::Pong(b))) => session.pong(&b).await,
                        Some(Ok(Frame::Close(reason))) => {
                            let _ = session.close(reason).await;
                            return;
                        }
                        // tasq sends whole frames; a fragment here is not one of its sockets.
                        _ => break,
                    };
                    if sent.is_err() {
                        let _ = owner_tx.send(Message::Close(None)).await;
                        return;
                    }
                }
            }
        }
        let _ = owner_tx.send(Message::Close(None)).await;
        let _ = session.close(None).await;
    });
    Ok(response)
}

thread_local! {
    /// One client per HTTP worker thread (the client is not `Send`), its connections kept,
    /// with the TLS settings it was built for (an embedder may run two clusters).
    static CLIENT: std::cell::RefCell<Option<(usize, awc::Client)>> =
        const { std::cell::RefCell::new(None) };
}

/// This thread's client for calls to the other nodes of `cluster`.
fn client(cluster: &crate::cluster::Cluster) -> awc::Client {
    let tls = cluster.client_tls();
    let id = std::sync::Arc::as_ptr(tls) as usize;
    CLIENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Some((built_for, client)) if *built_for == id => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    .connector(awc::Connector::new().rustls_0_23(tls.clone()))
                    .disable_redirects()
                    .timeout(FORWARD_TIMEOUT)
                    .finish();
                *slot = Some((id, client.clone()));
                client
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_is_found_in_its_path_or_its_lease() {
        let q = queue_of("/api/v1/namespaces/ns/task-queues/emails/activity/tasks/t1");
        assert_eq!(q.map(|q| q.to_string()), Some("ns/emails/activity".into()));
        assert!(queue_of("/api/v1/namespaces/ns/task-queues/emails/nope/poll").is_none());
        assert!(queue_of("/api/v1/namespaces/ns/task-queues").is_none());
        assert!(queue_of("/api/v1/leases/settle").is_none());
        assert!(queue_of("/metrics").is_none());
        let key = QueueKey::new("ns", "emails", crate::model::QueueType::Workflow).unwrap();
        let token = LeaseToken {
            queue: key.clone(),
            task_id: "t".into(),
            lease_id: 7,
        }
        .encode();
        assert_eq!(
            queue_of(&format!("/api/v1/leases/{token}/complete")),
            Some(key)
        );
    }
}
