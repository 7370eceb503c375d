//! The SQS-compatible endpoint (`[sqs] enabled`): its own listener (ElasticMQ's port 9324 by
//! default) that speaks Amazon SQS's API, both the AWS JSON 1.0 and the query protocol, so
//! boto3, the AWS CLI and the frameworks built on them (kombu/Celery, …) use tasq unchanged.
//!
//! SQS queues are tasq queues of type `activity` in `[sqs] namespace`; a message is a task
//! (see [`messages`]), so what is sent over SQS is visible over tasq's own API and the other
//! way round. Queue URLs are `http://<host>:<port>/<account id>/<queue name>`, the host being
//! the one the client called (or `[sqs] advertise`).
//!
//! Like the HTTP edge, this reaches the queues and the store only through the service.

pub mod attributes;
pub mod error;
pub mod md5;
pub mod messages;
pub mod protocol;
pub mod queues;
pub mod sigv4;
pub mod xml;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::auth::{Grant, Role};
use crate::config::SqsConfig;
use crate::model::{QueueKey, QueueType};
use crate::service::Tasq;
use attributes::QueueAttrs;
use error::SqsError;
use protocol::{Call, Params};

/// Largest request body: a batch of ten messages of 256 KiB, form-encoded, with room.
const MAX_BODY: usize = 4 << 20;

/// The endpoint's shared state.
pub struct State {
    /// The service.
    pub tasq: Tasq,
    /// `[sqs]`.
    pub settings: SqsConfig,
    purged: Mutex<HashMap<String, Instant>>,
    deleted: Mutex<HashMap<String, Instant>>,
    moves: Mutex<HashMap<String, Value>>,
}

/// A queue a request names: its SQS name, its tasq queue and its attributes.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    /// The SQS queue name.
    pub name: String,
    /// The tasq queue.
    pub key: QueueKey,
    /// Its attributes.
    pub attrs: QueueAttrs,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    crate::clock::now_ms() / 1000
}

impl State {
    /// The endpoint's state over `tasq`.
    pub fn new(tasq: Tasq, settings: SqsConfig) -> Arc<State> {
        Arc::new(State {
            tasq,
            settings,
            purged: Mutex::default(),
            deleted: Mutex::default(),
            moves: Mutex::default(),
        })
    }

    /// The tasq queue of the SQS queue `name`.
    pub fn key(&self, name: &str) -> Result<QueueKey, SqsError> {
        QueueKey::new(&self.settings.namespace, name, QueueType::Activity)
            .map_err(|_| SqsError::no_queue())
    }

    /// The attributes of the SQS queue `name`; `None` when there is no such queue.
    pub fn load(&self, name: &str) -> Result<Option<QueueAttrs>, SqsError> {
        if attributes::check_name(name).is_err() {
            return Ok(None);
        }
        let Some(text) = self.tasq.queue_attributes(&self.key(name)?)? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            SqsError::from(crate::Error::Internal(format!(
                "queue attributes of {name}: {e}"
            )))
        })
    }

    /// Stores (with `None` removes) the attributes of the SQS queue `name`, durably.
    pub async fn save(&self, name: &str, attrs: Option<&QueueAttrs>) -> Result<(), SqsError> {
        let text = attrs
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| SqsError::from(crate::Error::Internal(e.to_string())))?;
        self.tasq
            .set_queue_attributes(&self.key(name)?, text)
            .await
            .map_err(SqsError::from)
    }

    /// The queue a request's `QueueUrl` names; `QueueDoesNotExist` when it names none.
    pub async fn queue(&self, p: &Params) -> Result<SqsQueue, SqsError> {
        let url = p.required("QueueUrl")?;
        let name = self.name_of_url(url).ok_or_else(SqsError::no_queue)?;
        let attrs = self.load(name)?.ok_or_else(SqsError::no_queue)?;
        Ok(SqsQueue {
            name: name.to_string(),
            key: self.key(name)?,
            attrs,
        })
    }

    /// The queue name in a queue URL (`…/<account>/<name>`, or a bare name).
    fn name_of_url<'a>(&self, url: &'a str) -> Option<&'a str> {
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
            None => url,
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut parts = path.split('/').filter(|s| !s.is_empty()).rev();
        let name = parts.next()?;
        match parts.next() {
            Some(account) if account != self.settings.account_id => None,
            _ => Some(name),
        }
    }

    /// The queue name in an ARN of this endpoint's (`arn:aws:sqs:<region>:<account>:<name>`).
    pub fn name_of_arn<'a>(&self, arn: &'a str) -> Option<&'a str> {
        let parts: Vec<&str> = arn.split(':').collect();
        match parts.as_slice() {
            ["arn", _, "sqs", _, account, name] if *account == self.settings.account_id => {
                Some(name)
            }
            _ => None,
        }
    }

    /// The URL of queue `name`, on `base` (`http://host:port`).
    pub fn url(&self, base: &str, name: &str) -> String {
        format!("{base}/{}/{name}", self.settings.account_id)
    }

    /// The ARN of queue `name`.
    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sqs:{}:{}:{name}",
            self.settings.region, self.settings.account_id
        )
    }

    fn deleted_recently(&self, name: &str) -> bool {
        queues::recent(lock(&self.deleted).get(name))
    }

    fn mark_deleted(&self, name: &str) {
        lock(&self.deleted).insert(name.to_string(), Instant::now());
    }

    /// True (and noted) unless the queue was purged within the last minute.
    fn may_purge(&self, name: &str) -> bool {
        let mut purged = lock(&self.purged);
        if queues::recent(purged.get(name)) {
            return false;
        }
        purged.insert(name.to_string(), Instant::now());
        true
    }

    fn record_move(&self, dlq: &str, task: Value) {
        lock(&self.moves).insert(dlq.to_string(), task);
    }

    fn moves_of(&self, dlq: &str) -> Vec<Value> {
        lock(&self.moves).get(dlq).cloned().into_iter().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Mounts the endpoint on an actix-web `App`: every path, every method.
pub fn configure(state: Arc<State>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(state))
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .default_service(web::to(entry));
    }
}

/// One SQS request, whichever its protocol.
async fn entry(state: web::Data<State>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let request_id = uuid::Uuid::new_v4().to_string();
    let base = base_url(&state.settings, &req);
    let call = match protocol::parse(&req, &body, &base) {
        Ok(call) => call,
        Err((proto, e)) => return protocol::error(proto, &request_id, &e),
    };
    let allowed =
        sigv4::check(&state.tasq, &state.settings, &req, &body).and_then(|grant| match grant {
            Some(g) => authorize(&g, &call.action, &state.settings.namespace),
            None => Ok(()),
        });
    if let Err(e) = allowed {
        return protocol::error(call.protocol, &request_id, &e);
    }
    let identity = match req.peer_addr() {
        Some(a) => format!("sqs@{}", a.ip()),
        None => "sqs".to_string(),
    };
    let answer = run(&state, &call, &base, &identity).await;
    // The action as a label only when this endpoint serves it (a bounded set of series):
    // `run` answers any other with UnsupportedOperation.
    let unsupported = matches!(&answer, Err(e) if e.shape == "UnsupportedOperation");
    let action = if unsupported {
        "other"
    } else {
        call.action.as_str()
    };
    let code = answer.as_ref().map_or_else(|e| e.code, |_| "ok");
    state
        .tasq
        .metrics()
        .sqs_requests
        .with_label_values(&[action, code])
        .inc();
    match answer {
        Ok(result) => protocol::respond(&call, &request_id, result),
        Err(e) => {
            if e.status >= 500 {
                log::warn!("SQS {} failed: {}", call.action, e.message);
            }
            protocol::error(call.protocol, &request_id, &e)
        }
    }
}

/// Checks that the key a request was signed with may take `action` on the endpoint's
/// namespace: sending is a producer's, receiving and settling a worker's, changing queues an
/// admin's; finding and reading queues any role's (a producer needs `GetQueueUrl`).
fn authorize(grant: &Grant, action: &str, namespace: &str) -> Result<(), SqsError> {
    let role = match action {
        "SendMessage" | "SendMessageBatch" => Role::Producer,
        "ReceiveMessage"
        | "DeleteMessage"
        | "DeleteMessageBatch"
        | "ChangeMessageVisibility"
        | "ChangeMessageVisibilityBatch" => Role::Worker,
        "GetQueueUrl"
        | "ListQueues"
        | "GetQueueAttributes"
        | "ListQueueTags"
        | "ListDeadLetterSourceQueues"
        | "ListMessageMoveTasks" => {
            return if grant.covers(namespace) {
                Ok(())
            } else {
                Err(SqsError::access_denied(format!(
                    "the access key may not act on namespace {namespace:?}"
                )))
            };
        }
        _ => Role::Admin,
    };
    grant
        .allows(role, namespace)
        .map_err(|e| SqsError::access_denied(e.to_string()))
}

/// The base of queue URLs: `[sqs] advertise`, or the scheme and host the client called.
fn base_url(settings: &SqsConfig, req: &HttpRequest) -> String {
    if !settings.advertise.is_empty() {
        return settings.advertise.trim_end_matches('/').to_string();
    }
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

async fn run(state: &State, call: &Call, base: &str, identity: &str) -> Result<Value, SqsError> {
    let p = &call.params;
    match call.action.as_str() {
        "CreateQueue" => queues::create(state, p, base).await,
        "GetQueueUrl" => queues::get_url(state, p, base).await,
        "ListQueues" => queues::list(state, p, base).await,
        "DeleteQueue" => queues::delete(state, p).await,
        "GetQueueAttributes" => queues::get_attributes(state, p).await,
        "SetQueueAttributes" => queues::set_attributes(state, p).await,
        "PurgeQueue" => queues::purge(state, p).await,
        "ListDeadLetterSourceQueues" => queues::dead_letter_sources(state, p, base).await,
        "StartMessageMoveTask" => queues::start_move(state, p).await,
        "ListMessageMoveTasks" => queues::list_moves(state, p).await,
        "TagQueue" => queues::tag(state, p).await,
        "UntagQueue" => queues::untag(state, p).await,
        "ListQueueTags" => queues::list_tags(state, p).await,
        "SendMessage" => messages::send(state, p).await,
        "SendMessageBatch" => messages::send_batch(state, p).await,
        "ReceiveMessage" => messages::receive(state, p, identity).await,
        "DeleteMessage" => messages::delete(state, p).await,
        "DeleteMessageBatch" => messages::delete_batch(state, p).await,
        "ChangeMessageVisibility" => messages::change_visibility(state, p).await,
        "ChangeMessageVisibilityBatch" => messages::change_visibility_batch(state, p).await,
        other => Err(SqsError::unsupported(other)),
    }
}
