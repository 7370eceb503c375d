//! `POST /api/v1/leases/settle`: up to 1,000 settles in one request, each on its own.
//!
//! Each item's lease names its queue: the items are checked one by one (a lease that does
//! not decode, or one of a namespace the key may not act on, fails only its own item),
//! grouped by queue and settled together per queue by the service (one write and one group
//! commit per queue). In cluster mode the items of queues another node owns go to that node
//! in one request per node. Every item that succeeded is on disk before the answer.

use std::collections::BTreeMap;

use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{JsonBody, Role, RouteSpec};
use crate::auth::Grant;
use crate::error::{Error, Result};
use crate::model::{LeaseToken, TaskError};
use crate::service::{SettleOp, Settlement, Tasq};

/// Most settles in one request.
pub const MAX_SETTLES: usize = 1000;

/// The route.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::POST,
        "/api/v1/leases/settle",
        Role::Worker,
        || web::post().to(settle_many),
    )]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleManyRequest {
    settles: Vec<Item>,
}

/// One settle; sent on as it came when its queue's owner is another node.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Item {
    lease: String,
    op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Box<RawValue>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    non_retryable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

#[derive(Deserialize, Serialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Op {
    Complete,
    Fail,
}

impl Item {
    /// The settle it asks for; a field of the other op is a malformed item (`at`: its index).
    fn op(&self, at: usize) -> Result<SettleOp> {
        let other = |field: &str, op: &str| {
            Error::invalid(format!("settles[{at}]: `{field}` is for op {op}"))
        };
        match self.op {
            Op::Complete => {
                if self.error.is_some() {
                    return Err(other("error", "fail"));
                }
                if self.non_retryable.is_some() {
                    return Err(other("non_retryable", "fail"));
                }
                if self.retry_after_ms.is_some() {
                    return Err(other("retry_after_ms", "fail"));
                }
                Ok(SettleOp::Complete {
                    result: self.result.clone().unwrap_or_else(crate::model::null_json),
                })
            }
            Op::Fail => {
                if self.result.is_some() {
                    return Err(other("result", "complete"));
                }
                Ok(SettleOp::Fail {
                    error: self.error.clone().unwrap_or_else(TaskError::unspecified),
                    non_retryable: self.non_retryable.unwrap_or(false),
                    retry_after_ms: self.retry_after_ms,
                })
            }
        }
    }
}

async fn settle_many(
    tasq: web::Data<Tasq>,
    req: HttpRequest,
    JsonBody(body): JsonBody<SettleManyRequest>,
) -> Result<HttpResponse> {
    let items = body.settles;
    if items.is_empty() || items.len() > MAX_SETTLES {
        return Err(Error::invalid(format!(
            "settles must hold 1–{MAX_SETTLES} items, got {}",
            items.len()
        )));
    }
    // The whole request is checked before anything is settled.
    let ops = items
        .iter()
        .enumerate()
        .map(|(at, item)| item.op(at))
        .collect::<Result<Vec<_>>>()?;
    let grant = req.extensions().get::<Grant>().cloned();
    let mut answers: Vec<Option<Value>> = (0..items.len()).map(|_| None).collect();
    let mut local: Vec<(usize, LeaseToken, SettleOp)> = Vec::new();
    let mut remote: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (at, (item, op)) in items.iter().zip(ops).enumerate() {
        let token = LeaseToken::decode(&item.lease).and_then(|t| {
            if let Some(g) = &grant {
                g.allows(Role::Worker, t.queue.namespace())?;
            }
            Ok(t)
        });
        match token {
            Err(e) => answers[at] = Some(failed(&item.lease, &e)),
            Ok(t) => match super::owner_elsewhere(&tasq, &req, &t.queue) {
                Some(base) => remote.entry(base).or_default().push(at),
                None => local.push((at, t, op)),
            },
        }
    }
    let (at, settles): (Vec<usize>, Vec<(LeaseToken, SettleOp)>) =
        local.into_iter().map(|(i, t, op)| (i, (t, op))).unzip();
    let here = tasq.settle_many(settles);
    let there = futures_util::future::join_all(remote.iter().map(|(base, which)| {
        let body = json!({"settles": which.iter().map(|i| &items[*i]).collect::<Vec<_>>()});
        on_owner(&tasq, base, &req, body)
    }));
    let (here, there) = futures_util::join!(here, there);
    for (i, answer) in at.into_iter().zip(here?) {
        answers[i] = Some(match answer {
            Ok(settled) => succeeded(&items[i].lease, &settled),
            Err(e) => failed(&items[i].lease, &e),
        });
    }
    for ((_, which), answer) in remote.iter().zip(there) {
        for (n, i) in which.iter().enumerate() {
            answers[*i] = Some(match &answer {
                Ok(results) => results.get(n).cloned().unwrap_or_else(|| {
                    let e = Error::Internal("the owner answered fewer settles".into());
                    failed(&items[*i].lease, &e)
                }),
                Err(e) => failed(&items[*i].lease, e),
            });
        }
    }
    let results: Vec<Value> = answers
        .into_iter()
        .map(|a| a.unwrap_or(Value::Null))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

/// The items of one owner's queues, settled there: its answers, in order.
#[cfg(feature = "postgres")]
async fn on_owner(tasq: &Tasq, base: &str, req: &HttpRequest, body: Value) -> Result<Vec<Value>> {
    let ask = super::forward::Ask {
        what: "these leases' queues",
        route: "/api/v1/leases/settle",
        method: Method::POST,
        path: "/api/v1/leases/settle".into(),
        body: Some(body),
        header: None,
    };
    let mut answer = super::forward::ask_owner(tasq, base, req, ask).await?;
    match answer.get_mut("results").map(Value::take) {
        Some(Value::Array(results)) => Ok(results),
        _ => Err(Error::Internal(format!(
            "the owner at {base} answered no results"
        ))),
    }
}

/// Outside cluster mode no queue has another owner.
#[cfg(not(feature = "postgres"))]
async fn on_owner(_: &Tasq, base: &str, _: &HttpRequest, _: Value) -> Result<Vec<Value>> {
    Err(Error::Internal(format!("no cluster to reach {base} in")))
}

/// A settle's answer plus its lease.
fn succeeded(lease: &str, settled: &Settlement) -> Value {
    let mut v = serde_json::to_value(settled).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("lease".into(), Value::String(lease.to_string()));
    }
    v
}

/// `{"lease", "error": {"code", "message"}}`.
fn failed(lease: &str, e: &Error) -> Value {
    json!({"lease": lease, "error": e.detail()})
}
