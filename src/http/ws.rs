//! Streaming workers: `GET {q}/connect`, a WebSocket with credit-based flow control.
//!
//! The socket is a long-lived poller in the queue actor: the actor pushes a task whenever the
//! socket has credit, and never has more unsettled tasks out on it than the credit given.
//! Settles on the socket go through the same actor messages as HTTP and are acknowledged with
//! a `settled` frame once durable. When the socket closes (cleanly, by a network drop, or after
//! missed pongs) the actor puts its unsettled tasks back at once, attempt counted.

use std::time::{Duration, Instant};

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use crate::auth::Grant;
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use futures_util::{FutureExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::{queue_key, Role, RouteSpec, QUEUE_PATH};
use crate::error::{Error, Result};
use crate::model::{LeaseToken, QueueKey, Task, TaskError};
use crate::service::{
    Settle, SettleOp, Settlement, Slot, SocketEvent, Tasq, WorkerSocket, WriteSeq,
};
use actix_web::http::Method;

/// How often the server pings.
const PING_EVERY: Duration = Duration::from_secs(15);
/// A socket that answered no ping for this long is closed and released.
const PONG_TIMEOUT: Duration = Duration::from_secs(45);
/// Largest `n` of one credit frame.
const MAX_CREDIT: i64 = 1000;
/// Most frames handled in one turn before their settles are sent (bounds one write's size).
const MAX_BURST: usize = 256;

/// The streaming route.
pub fn routes() -> Vec<RouteSpec> {
    vec![RouteSpec::new(
        Method::GET,
        format!("{QUEUE_PATH}/connect"),
        Role::Worker,
        || web::get().to(connect),
    )]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectQuery {
    identity: String,
    task_types: Option<String>,
    build_id: Option<String>,
}

async fn connect(
    req: HttpRequest,
    body: web::Payload,
    tasq: web::Data<Tasq>,
    path: web::Path<(String, String, String)>,
    query: web::Query<ConnectQuery>,
) -> Result<HttpResponse> {
    let (ns, queue, ty) = path.into_inner();
    let key = queue_key(&ns, &queue, &ty)?;
    let q = query.into_inner();
    let task_types = q.task_types.as_deref().and_then(|list| {
        let types: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        (!types.is_empty()).then_some(types)
    });
    #[cfg(feature = "postgres")]
    if let Some(base) = super::forward::remote_owner(&tasq, &req, &key) {
        return super::forward::relay_socket(&tasq, &base, req, body).await;
    }
    let (socket, events) = tasq
        .open_socket(&key, q.identity, task_types, q.build_id)
        .await?;
    // Every early return from here closes the socket in its queue (`WorkerSocket` on drop).
    let slot = tasq.take_socket_slot()?;
    let grant = req.extensions().get::<Grant>().cloned();
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|e| Error::invalid(format!("not a WebSocket upgrade: {e}")))?;
    let limit = tasq.config().max_payload_bytes;
    let stream = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit);
    let conn = Connection {
        tasq: tasq.into_inner(),
        socket,
        session,
        grant,
        _slot: slot,
        settling: Vec::new(),
    };
    actix_rt::spawn(conn.run(stream, events));
    Ok(response)
}

/// One open socket.
struct Connection {
    tasq: std::sync::Arc<Tasq>,
    socket: WorkerSocket,
    session: Session,
    /// The key the socket connected with (auth on): settles on it are checked against it.
    grant: Option<Grant>,
    /// Its place among `limits.max_websockets`, given back when the connection ends.
    _slot: Slot,
    /// Settles sent to their queue and not yet answered: awaited before the socket's tasks
    /// are released, so a complete that came before the close is applied, not undone.
    settling: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Connection {
    async fn run(
        mut self,
        mut stream: actix_ws::AggregatedMessageStream,
        mut rx: mpsc::UnboundedReceiver<SocketEvent>,
    ) {
        self.tasq.metrics().websocket_connections.inc();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let mut last_pong = Instant::now();
        let reason = loop {
            tokio::select! {
                frame = stream.next() => {
                    // Take every frame already read in the same turn, so a burst of complete
                    // frames becomes one write and one group commit per queue.
                    let mut burst = SettleBurst::default();
                    let mut next = Some(frame);
                    let mut closed = None;
                    let mut taken = 0;
                    while let Some(frame) = next {
                        if let Some(reason) = self.on_frame(frame, &mut burst, &mut last_pong).await {
                            closed = Some(reason);
                            break;
                        }
                        taken += 1;
                        next = if taken < MAX_BURST { stream.next().now_or_never() } else { None };
                    }
                    self.send_settles(burst);
                    if let Some(reason) = closed {
                        break reason;
                    }
                }
                event = rx.recv() => match event {
                    Some(SocketEvent::Task(task, written)) => {
                        if !self.send_tasks(task, written, &mut rx).await {
                            break None;
                        }
                    }
                    Some(SocketEvent::Drained) => {
                        let frame = json!({ "op": "drained" }).to_string();
                        if self.session.text(frame).await.is_err() {
                            break None;
                        }
                    }
                    Some(SocketEvent::Close) | None => break Some(CloseReason {
                        code: CloseCode::Away,
                        description: Some("the server is shutting down".into()),
                    }),
                },
                _ = ping.tick() => {
                    if last_pong.elapsed() > PONG_TIMEOUT {
                        break Some(CloseReason {
                            code: CloseCode::Policy,
                            description: Some("no pong for 45 s".into()),
                        });
                    }
                    if self.session.ping(b"").await.is_err() {
                        break None;
                    }
                }
            }
        };
        // Settles read before the close are applied first (each waits at most for a group
        // commit); then the rest of the socket's tasks go back, even if the close frame
        // cannot be written.
        for settling in std::mem::take(&mut self.settling) {
            let _ = settling.await;
        }
        drop(self.socket);
        self.tasq.metrics().websocket_connections.dec();
        let _ = self.session.close(reason).await;
    }

    /// Handles one frame read from the client; `Some` ends the connection with that close
    /// reason (`None` inside: no close frame to send).
    async fn on_frame(
        &mut self,
        frame: Option<std::result::Result<AggregatedMessage, ProtocolError>>,
        burst: &mut SettleBurst,
        last_pong: &mut Instant,
    ) -> Option<Option<CloseReason>> {
        match frame {
            None => Some(None),
            Some(Err(ProtocolError::Overflow)) => Some(Some(CloseReason {
                code: CloseCode::Size,
                description: Some(format!(
                    "a frame is over max_payload_bytes ({})",
                    self.tasq.config().max_payload_bytes
                )),
            })),
            Some(Err(e)) => Some(Some(CloseReason {
                code: CloseCode::Protocol,
                description: Some(e.to_string()),
            })),
            Some(Ok(AggregatedMessage::Text(text))) => {
                self.on_text(&text, burst);
                None
            }
            Some(Ok(AggregatedMessage::Binary(_))) => {
                self.send_error(
                    None,
                    &Error::invalid("binary frames are not supported; send JSON text frames"),
                );
                None
            }
            Some(Ok(AggregatedMessage::Ping(bytes))) => {
                let _ = self.session.pong(&bytes).await;
                None
            }
            Some(Ok(AggregatedMessage::Pong(_))) => {
                *last_pong = Instant::now();
                None
            }
            Some(Ok(AggregatedMessage::Close(reason))) => Some(reason),
        }
    }

    /// Sends a task and every other one already waiting, once their dispatch is durable (one
    /// group commit covers the batch). False when the socket is gone.
    async fn send_tasks(
        &mut self,
        first: Box<crate::model::Task>,
        mut written: WriteSeq,
        rx: &mut mpsc::UnboundedReceiver<SocketEvent>,
    ) -> bool {
        let mut tasks = vec![first];
        let mut close = false;
        let mut drained = false;
        while let Ok(ev) = rx.try_recv() {
            match ev {
                SocketEvent::Task(t, w) => {
                    tasks.push(t);
                    written = written.max(w);
                }
                SocketEvent::Drained => drained = true,
                SocketEvent::Close => close = true,
            }
        }
        if let Err(e) = self.tasq.durable(self.socket.queue(), written).await {
            self.send_error(None, &e);
            return false;
        }
        for task in tasks {
            if self.session.text(task_frame(&task)).await.is_err() {
                return false;
            }
        }
        if drained {
            let frame = json!({ "op": "drained" }).to_string();
            if self.session.text(frame).await.is_err() {
                return false;
            }
        }
        !close
    }

    fn send_error(&self, lease: Option<&str>, e: &Error) {
        let frame = error_frame(lease, e);
        let mut session = self.session.clone();
        actix_rt::spawn(async move {
            let _ = session.text(frame).await;
        });
    }

    /// Handles one client text frame. Complete and fail frames join `burst` (sent by
    /// [`Connection::send_settles`]); heartbeats run at once. Each answers on the socket when
    /// done, so a slow flush never holds up reading.
    fn on_text(&self, text: &str, burst: &mut SettleBurst) {
        let head: FrameHead = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => return self.send_error(None, &Error::invalid(format!("not JSON: {e}"))),
        };
        let lease = string_field(&head.lease);
        let op = string_field(&head.op).unwrap_or_default();
        match op.as_str() {
            "credit" => match frame::<CreditFrame>(text) {
                Ok(c) if (1..=MAX_CREDIT).contains(&c.n) => self.socket.add_credit(c.n as u32),
                Ok(c) => self.send_error(
                    None,
                    &Error::invalid(format!("credit n must be 1–{MAX_CREDIT}, got {}", c.n)),
                ),
                Err(e) => self.send_error(None, &e),
            },
            // Stop pushing (a worker shutting down): credit drops to 0 and stays there until
            // the next credit frame; a `drained` frame follows the last task sent.
            "drain" => self.socket.drain(),
            "complete" | "fail" => match settle_of(self.grant.as_ref(), &op, text) {
                Ok((queue, item)) => burst.push(queue, item),
                Err(e) => self.send_error(lease.as_deref(), &e),
            },
            "heartbeat" => {
                let tasq = self.tasq.clone();
                let mut session = self.session.clone();
                let grant = self.grant.clone();
                let text = text.to_string();
                actix_rt::spawn(async move {
                    let frame = match heartbeat(&tasq, grant.as_ref(), &text).await {
                        Ok(frame) => frame,
                        Err(e) => error_frame(lease.as_deref(), &e),
                    };
                    let _ = session.text(frame).await;
                });
            }
            other => self.send_error(
                lease.as_deref(),
                &Error::invalid(format!(
                    "unknown op {other:?}; expected credit, drain, complete, fail or heartbeat"
                )),
            ),
        }
    }

    /// Runs the settles of a burst, one request per queue, and answers each with a
    /// `settled` (or `error`) frame once the batch is durable.
    fn send_settles(&mut self, burst: SettleBurst) {
        self.settling.retain(|h| !h.is_finished());
        for (queue, items) in burst.by_queue {
            let tasq = self.tasq.clone();
            let mut session = self.session.clone();
            let handle = actix_rt::spawn(async move {
                let (leases, items): (Vec<String>, Vec<Settle>) = items.into_iter().unzip();
                let answers = tasq.settle_batch(&queue, items).await;
                for (i, lease) in leases.iter().enumerate() {
                    let frame = match &answers {
                        Ok(answers) => match answers.get(i) {
                            Some(Ok(s)) => settled_frame(lease, s),
                            Some(Err(e)) => error_frame(Some(lease), e),
                            None => error_frame(Some(lease), &Error::lease_lost()),
                        },
                        Err(e) => error_frame(Some(lease), e),
                    };
                    if session.text(frame).await.is_err() {
                        return;
                    }
                }
            });
            self.settling.push(handle);
        }
    }
}

/// The complete and fail frames of one read, grouped by the queue their leases belong to.
#[derive(Default)]
struct SettleBurst {
    /// (queue, [(lease token as sent, settle)]), queues in the order first seen.
    by_queue: Vec<(QueueKey, Vec<(String, Settle)>)>,
}

impl SettleBurst {
    fn push(&mut self, queue: QueueKey, item: (String, Settle)) {
        match self.by_queue.iter_mut().find(|(q, _)| *q == queue) {
            Some((_, items)) => items.push(item),
            None => self.by_queue.push((queue, vec![item])),
        }
    }
}

/// A `settled` frame: the lease and the same fields as the HTTP settle's answer.
#[derive(Serialize)]
struct SettledFrame<'a> {
    op: &'static str,
    lease: &'a str,
    #[serde(flatten)]
    settlement: &'a Settlement,
}

fn settled_frame(lease: &str, settlement: &Settlement) -> String {
    serde_json::to_string(&SettledFrame {
        op: "settled",
        lease,
        settlement,
    })
    .unwrap_or_default()
}

#[derive(Serialize)]
struct TaskFrame<'a> {
    op: &'static str,
    task: &'a Task,
}

fn task_frame(task: &Task) -> String {
    serde_json::to_string(&TaskFrame { op: "task", task }).unwrap_or_default()
}

fn error_frame(lease: Option<&str>, e: &Error) -> String {
    json!({
        "op": "error",
        "lease": lease,
        "error": e.detail(),
    })
    .to_string()
}

/// Decodes a whole frame. Values a worker sends (`result`, `details`) stay JSON text, kept and
/// sent on exactly as written, like the HTTP bodies.
fn frame<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::invalid(format!("bad frame: {e}")))
}

/// The fields every frame is dispatched on, each kept as text until it is known to be a
/// string: a frame whose `lease` is not a string is still answered, with `"lease": null`.
#[derive(Deserialize)]
struct FrameHead {
    op: Option<Box<RawValue>>,
    lease: Option<Box<RawValue>>,
}

/// The string in a field of a [`FrameHead`], if it is one.
fn string_field(raw: &Option<Box<RawValue>>) -> Option<String> {
    raw.as_deref()
        .and_then(|r| serde_json::from_str::<String>(r.get()).ok())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditFrame {
    #[allow(dead_code)]
    op: String,
    n: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleFrame {
    #[allow(dead_code)]
    op: String,
    lease: String,
    result: Option<Box<RawValue>>,
    error: Option<TaskError>,
    #[serde(default)]
    non_retryable: bool,
    retry_after_ms: Option<u64>,
    details: Option<Box<RawValue>>,
}

/// Reads a complete or fail frame into the settle it asks for, with the queue of its lease.
fn settle_of(grant: Option<&Grant>, op: &str, text: &str) -> Result<(QueueKey, (String, Settle))> {
    let f: SettleFrame = frame(text)?;
    let token = lease_token(grant, &f.lease)?;
    let op = if op == "complete" {
        SettleOp::Complete {
            result: f.result.unwrap_or_else(crate::model::null_json),
        }
    } else {
        SettleOp::Fail {
            error: f.error.unwrap_or_else(TaskError::unspecified),
            non_retryable: f.non_retryable,
            retry_after_ms: f.retry_after_ms,
        }
    };
    let msg = Settle {
        task_id: token.task_id,
        lease_id: token.lease_id,
        op,
    };
    Ok((token.queue, (f.lease, msg)))
}

/// Decodes a lease token sent on the socket; with auth on, the socket's key must cover its
/// namespace (a lease taken in one namespace cannot be settled with a key for another).
fn lease_token(grant: Option<&Grant>, lease: &str) -> Result<LeaseToken> {
    let token = LeaseToken::decode(lease)?;
    if let Some(g) = grant {
        g.allows(Role::Worker, token.queue.namespace())?;
    }
    Ok(token)
}

/// Runs a heartbeat frame and returns the frame that answers it.
async fn heartbeat(tasq: &Tasq, grant: Option<&Grant>, text: &str) -> Result<String> {
    let f: SettleFrame = frame(text)?;
    let token = lease_token(grant, &f.lease)?;
    let answer = tasq.heartbeat_lease(token, f.details).await?;
    Ok(json!({
        "op": "heartbeat",
        "lease": f.lease,
        "lease_expires_at": answer.lease_expires_at,
        "cancel_requested": answer.cancel_requested,
    })
    .to_string())
}
