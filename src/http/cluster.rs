//! `GET /api/v1/cluster`: the nodes of the cluster as the database knows them;
//! `DELETE /api/v1/cluster/nodes/{node_id}`: forget a dead one.

use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{Role, RouteSpec};
use crate::error::Error;
use crate::service::Tasq;

/// The cluster's routes.
pub fn routes() -> Vec<RouteSpec> {
    vec![
        RouteSpec::new(Method::GET, "/api/v1/cluster", Role::Admin, || {
            web::get().to(nodes)
        }),
        RouteSpec::new(
            Method::DELETE,
            "/api/v1/cluster/nodes/{node_id}",
            Role::Admin,
            || web::delete().to(forget),
        ),
    ]
}

/// Forgets a node that died and is not coming back (it is then no longer listed, nor counted
/// dead); a node alive is refused (400), an unknown one is 404.
async fn forget(tasq: web::Data<Tasq>, node: web::Path<String>) -> Result<HttpResponse, Error> {
    let node = node.into_inner();
    tasq.forget_node(node.clone()).await?;
    Ok(HttpResponse::Ok().json(json!({"node_id": node, "forgotten": true})))
}

/// Every node (name, address, alive, since its last heartbeat, queues owned), this node's
/// name and the nodes it counts alive now (what it places queues on); outside cluster mode
/// `{"enabled": false, "nodes": []}`.
async fn nodes(tasq: web::Data<Tasq>) -> Result<HttpResponse, Error> {
    let Some(rows) = tasq.cluster_nodes().await? else {
        return Ok(HttpResponse::Ok().json(json!({"enabled": false, "nodes": []})));
    };
    let node = tasq.cluster().map(|c| c.node_id().to_string());
    let live = tasq.cluster().map(|c| c.live_ids()).unwrap_or_default();
    let nodes: Vec<_> = rows
        .into_iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "advertise": n.advertise,
                "alive": n.alive,
                "last_heartbeat_ms_ago": n.silent_for.as_millis() as u64,
                "queues_owned": n.queues_owned,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "enabled": true,
        "node": node,
        "live": live,
        "nodes": nodes,
    })))
}
