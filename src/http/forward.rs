//! Cluster mode: a request for a queue that another node owns goes on to that node, and its
//! answer comes back as it is. Clients know nothing of the cluster: any node answers any
//! request.
//!
//! What goes on: every route under a queue's path (`{q}/…`: adds, polls, long polls
//! included, status, cancel, list tasks, config, dead letters) and under a lease
//! (`/api/v1/leases/{lease}/…`: its queue is in the token). A forwarded request carries the
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
    )
}

/// What to do with a request in cluster mode.
pub enum Route {
    /// Serve it here.
    Here,
    /// Send it on to the owner at this base URL.
    To(String),
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
    match queue_of(req.path()).map(|q| tasq.owner(&q)) {
        Some(Owner::Remote { url, .. }) if !url.is_empty() => Route::To(url),
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

/// Sends `req` on to the node at `base` and answers what it answers; a node that cannot be
/// reached is a 503 (the client retries; the cluster moves the queue if the node is gone).
pub async fn forward(
    tasq: &Tasq,
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
    let client = client();
    let mut out = client
        .request(req.method().clone(), format!("{base}{path}"))
        .timeout(FORWARD_TIMEOUT);
    for (name, value) in req.headers().iter() {
        if !hop_by_hop(name) {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    out = out
        .insert_header((FORWARDED_BY, cluster.node_id()))
        .insert_header((CLUSTER_SECRET, cluster.secret()));
    tasq.metrics()
        .cluster
        .forwarded_requests
        .with_label_values(&[&route])
        .inc();
    let answer = match out.send_body(body.freeze()).await {
        Ok(answer) => answer,
        Err(e) => {
            let e = Error::Unavailable(format!(
                "the node that owns this queue ({base}) cannot be reached: {e}; retry"
            ));
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

thread_local! {
    /// One client per HTTP worker thread (the client is not `Send`), its connections kept.
    static CLIENT: awc::Client = awc::Client::builder()
        .disable_redirects()
        .timeout(FORWARD_TIMEOUT)
        .finish();
}

fn client() -> awc::Client {
    CLIENT.with(awc::Client::clone)
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
