//! The worker's engine: one connection at a time, the frames of the streaming protocol, the
//! credit bookkeeping, handler tasks with their heartbeats, reconnects and shutdown.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{sleep, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::frames::settle_frame;
use super::{ClientError, WorkerError, WorkerTask};

/// How long one connection attempt (TCP + upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a clean close waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a built [`super::Worker`] holds.
#[derive(Debug)]
pub(crate) struct Settings {
    pub url: String,
    pub identity: String,
    pub api_key: Option<String>,
    pub concurrency: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    /// TLS settings for a `wss://` server.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Told each task's state once its settle is on disk.
    pub on_settled: Option<SettledHook>,
}

/// Called with a task's id and its state once its settle is on disk (`completed`; `pending`:
/// it will run again; `failed` or `timed_out`: a dead letter; `cancelled`).
#[derive(Clone)]
pub struct SettledHook(pub Arc<SettledFn>);

/// The function of a [`SettledHook`]: task id, state.
pub type SettledFn = dyn Fn(&str, &str) + Send + Sync;

impl std::fmt::Debug for SettledHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SettledHook")
    }
}

/// What handler tasks tell the driver.
enum Event {
    /// A handler finished (or panicked): settle the task.
    Done {
        lease: String,
        outcome: Result<Value, WorkerError>,
    },
    /// A running task is due a heartbeat.
    Heartbeat { lease: String },
}

/// A task whose handler runs.
struct Running {
    /// The task.
    task_id: String,
    /// The connection it came on.
    conn: u64,
    /// Shared with the handler's [`WorkerTask`].
    cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Shared with the handler's [`WorkerTask`].
    lost: Arc<std::sync::atomic::AtomicBool>,
}

/// How a connection ended.
enum End {
    /// Shutdown finished: everything settled and acknowledged, socket closed.
    Done,
    /// The connection dropped (or was given up); connect again.
    Lost(String),
}

/// The state of one [`super::Worker::run_until`] call.
pub(crate) struct Driver<H> {
    cfg: Arc<Settings>,
    handler: Arc<H>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Tasks whose handler runs, by lease.
    running: HashMap<String, Running>,
    /// Settle frames not sent yet (no connection when they were due), with their lease.
    pending: VecDeque<(String, String)>,
    /// Settle frames sent on the current connection, not yet answered, by lease.
    unacked: HashMap<String, String>,
    /// The task of each settle not answered yet, by lease (for [`Settings::on_settled`]).
    settling: HashMap<String, String>,
    /// Counts connections; the current one's number.
    conn: u64,
    /// Credit given on the current connection (the server gives it back on each settle).
    credit: u32,
    shutting_down: bool,
}

impl<H, F> Driver<H>
where
    H: Fn(WorkerTask) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, WorkerError>> + Send + 'static,
{
    pub fn new(cfg: Arc<Settings>, handler: Arc<H>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver {
            cfg,
            handler,
            tx,
            rx,
            running: HashMap::new(),
            pending: VecDeque::new(),
            unacked: HashMap::new(),
            settling: HashMap::new(),
            conn: 0,
            credit: 0,
            shutting_down: false,
        }
    }

    pub async fn run<S: Future<Output = ()>>(mut self, shutdown: S) -> Result<(), ClientError> {
        let mut shutdown = pin!(shutdown);
        let mut backoff = self.cfg.backoff_initial;
        let mut first = true;
        loop {
            if !first {
                let delay = jitter(backoff);
                backoff = (backoff * 2).min(self.cfg.backoff_max);
                if !self.wait(delay, shutdown.as_mut()).await {
                    return Ok(());
                }
            }
            first = false;
            let ws = match self.connect(shutdown.as_mut()).await {
                Ok(Some(ws)) => ws,
                Ok(None) => return Ok(()),
                Err(Attempt::Retry(why)) => {
                    log::warn!(
                        "tasq worker {}: the server is unavailable ({why}); connecting again",
                        self.cfg.identity
                    );
                    continue;
                }
                Err(Attempt::Fatal(e)) => return Err(e),
            };
            backoff = self.cfg.backoff_initial;
            match self.session(ws, shutdown.as_mut()).await {
                End::Done => return Ok(()),
                End::Lost(why) => {
                    log::warn!("tasq worker {}: connection lost: {why}", self.cfg.identity);
                    // Settles the server may not have seen: send them again (idempotent).
                    let unacked: Vec<_> = self.unacked.drain().collect();
                    for entry in unacked.into_iter().rev() {
                        self.pending.push_front(entry);
                    }
                }
            }
        }
    }

    /// True when a stopping worker has nothing left to wait for without a connection.
    fn stopped_offline(&mut self) -> bool {
        if !(self.shutting_down && self.running.is_empty()) {
            return false;
        }
        if !self.pending.is_empty() {
            log::warn!(
                "tasq worker {}: stopping without a connection; {} settle(s) not confirmed by \
                 the server (a task whose settle was lost runs again)",
                self.cfg.identity,
                self.pending.len()
            );
        }
        true
    }

    /// Sleeps `delay` while handling handler events; false when the worker should stop.
    async fn wait<S: Future<Output = ()>>(
        &mut self,
        delay: Duration,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> bool {
        let mut timer = pin!(sleep(delay));
        loop {
            if self.stopped_offline() {
                return false;
            }
            tokio::select! {
                _ = &mut timer => return true,
                _ = shutdown.as_mut(), if !self.shutting_down => self.shutting_down = true,
                Some(ev) = self.rx.recv() => self.on_event_offline(ev),
            }
        }
    }

    /// One connection attempt, handling handler events meanwhile. `Ok(None)`: stop.
    async fn connect<S: Future<Output = ()>>(
        &mut self,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> Result<Option<Ws>, Attempt> {
        let mut request = self
            .cfg
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Attempt::Fatal(ClientError::InvalidConfig(e.to_string())))?;
        if let Some(key) = &self.cfg.api_key {
            let value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                Attempt::Fatal(ClientError::InvalidConfig(
                    "the API key is not a valid header value".into(),
                ))
            })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let mut attempt = pin!(tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(
                request,
                None,
                true,
                self.cfg
                    .tls
                    .clone()
                    .map(tokio_tungstenite::Connector::Rustls),
            ),
        ));
        loop {
            if self.stopped_offline() {
                return Ok(None);
            }
            tokio::select! {
                r = &mut attempt => return match r {
                    Err(_) => Err(Attempt::Retry(format!("no answer within {CONNECT_TIMEOUT:?}"))),
                    Ok(Ok((ws, _))) => Ok(Some(ws)),
                    Ok(Err(e)) => Err(classify(e)),
                },
                _ = shutdown.as_mut(), if !self.shutting_down => self.shutting_down = true,
                Some(ev) = self.rx.recv() => self.on_event_offline(ev),
            }
        }
    }

    /// Serves one connection until it ends.
    async fn session<S: Future<Output = ()>>(
        &mut self,
        mut ws: Ws,
        mut shutdown: std::pin::Pin<&mut S>,
    ) -> End {
        self.conn += 1;
        self.credit = 0;
        log::debug!(
            "tasq worker {}: connected (#{})",
            self.cfg.identity,
            self.conn
        );
        while let Some((lease, frame)) = self.pending.pop_front() {
            if let Err(e) = ws.send(Message::text(frame.clone())).await {
                self.pending.push_front((lease, frame));
                return End::Lost(e.to_string());
            }
            self.unacked.insert(lease, frame);
        }
        if let Err(e) = self.top_up(&mut ws).await {
            return End::Lost(e.to_string());
        }
        let idle = self.cfg.idle_timeout;
        let mut deadline = pin!(tokio::time::sleep(idle));
        loop {
            if self.shutting_down
                && self.running.is_empty()
                && self.pending.is_empty()
                && self.unacked.is_empty()
            {
                close(ws).await;
                return End::Done;
            }
            tokio::select! {
                frame = ws.next() => {
                    deadline.as_mut().reset(Instant::now() + idle);
                    match frame {
                        None => return End::Lost("the server closed the connection".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(Message::Text(text))) => self.on_frame(text.as_str()),
                        Some(Ok(Message::Close(Some(c)))) => log::info!(
                            "tasq worker {}: the server closes the socket: {} {}",
                            self.cfg.identity, u16::from(c.code), c.reason
                        ),
                        // Pings are answered by tungstenite; nothing else is expected.
                        Some(Ok(_)) => {}
                    }
                }
                Some(ev) = self.rx.recv() => {
                    if let Err(e) = self.on_event(ev, &mut ws).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = shutdown.as_mut(), if !self.shutting_down => {
                    log::info!(
                        "tasq worker {}: shutting down; waiting for {} running task(s)",
                        self.cfg.identity, self.running.len()
                    );
                    self.shutting_down = true;
                    // Stop the pushes: settles from now on give no credit back.
                    let drain = Message::text(json!({"op": "drain"}).to_string());
                    if let Err(e) = ws.send(drain).await {
                        return End::Lost(e.to_string());
                    }
                }
                _ = &mut deadline => {
                    return End::Lost(format!("no frame from the server for {idle:?}"));
                }
            }
        }
    }

    /// Gives credit so that credit on this connection plus tasks still running from earlier
    /// connections make `concurrency`.
    async fn top_up(&mut self, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        if self.shutting_down {
            return Ok(());
        }
        let conn = self.conn;
        let older = self.running.values().filter(|r| r.conn != conn).count() as u32;
        let want = self.cfg.concurrency.saturating_sub(older);
        if want > self.credit {
            let n = want - self.credit;
            ws.send(Message::text(json!({"op": "credit", "n": n}).to_string()))
                .await?;
            self.credit = want;
        }
        Ok(())
    }

    /// A server frame.
    fn on_frame(&mut self, text: &str) {
        let frame = match serde_json::from_str::<Value>(text) {
            Ok(frame) => frame,
            Err(e) => return self.on_unreadable(text, &e),
        };
        let lease = frame.get("lease").and_then(Value::as_str);
        match frame.get("op").and_then(Value::as_str) {
            Some("task") => self.on_task(frame.get("task").cloned().unwrap_or(Value::Null)),
            Some("settled") => {
                if let Some(lease) = lease {
                    self.unacked.remove(lease);
                    let task_id = self.settling.remove(lease);
                    let state = frame.get("state").and_then(Value::as_str);
                    if let (Some(hook), Some(task_id), Some(state)) =
                        (&self.cfg.on_settled, task_id, state)
                    {
                        (hook.0)(&task_id, state);
                    }
                }
            }
            Some("heartbeat") => {
                let cancel = frame.get("cancel_requested").and_then(Value::as_bool);
                if let (Some(lease), Some(true)) = (lease, cancel) {
                    if let Some(r) = self.running.get(lease) {
                        r.cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            Some("error") => {
                let code = frame["error"]["code"].as_str().unwrap_or("?");
                let message = frame["error"]["message"].as_str().unwrap_or("");
                if let (Some(l), "lease_lost") = (lease, code) {
                    // The answer to a heartbeat of a task whose lease ended, or to the settle
                    // of one: the handler says so (once); nothing more to log.
                    if let Some(r) = self.running.get(l) {
                        r.lost.store(true, Ordering::Relaxed);
                    }
                    self.unacked.remove(l);
                    self.settling.remove(l);
                    log::debug!("tasq worker {}: lease {l}: {message}", self.cfg.identity);
                    return;
                }
                match lease {
                    Some(l) if self.unacked.remove(l).is_some() => log::warn!(
                        "tasq worker {}: a settle was refused: {code}: {message}",
                        self.cfg.identity
                    ),
                    _ => log::warn!(
                        "tasq worker {}: the server answered {code}: {message}",
                        self.cfg.identity
                    ),
                }
            }
            other => log::debug!(
                "tasq worker {}: ignoring a frame with op {other:?}",
                self.cfg.identity
            ),
        }
    }

    /// A frame this client cannot turn into a JSON tree (a payload holding a lone surrogate,
    /// nested past 128 levels, or a number no float holds: valid JSON text the server keeps
    /// as sent). A task frame's task is failed for good, saying why, so that it becomes a dead
    /// letter and gives its credit back instead of coming back to this worker lease after
    /// lease; any other frame is ignored.
    fn on_unreadable(&mut self, text: &str, e: &serde_json::Error) {
        /// The fields read without building a tree (serde skips the rest unparsed).
        #[derive(serde::Deserialize)]
        struct Head {
            op: String,
            task: Option<TaskHead>,
        }
        #[derive(serde::Deserialize)]
        struct TaskHead {
            lease: String,
            task_id: String,
        }
        let head = serde_json::from_str::<Head>(text).ok();
        let Some((lease, task_id)) = head
            .filter(|h| h.op == "task")
            .and_then(|h| h.task)
            .map(|t| (t.lease, t.task_id))
        else {
            log::warn!(
                "tasq worker {}: ignoring a frame that is not JSON this client reads: {e}",
                self.cfg.identity
            );
            return;
        };
        log::error!(
            "tasq worker {}: task {task_id} cannot be read here ({e}); failing it for good",
            self.cfg.identity
        );
        self.running.insert(
            lease.clone(),
            Running {
                task_id: task_id.clone(),
                conn: self.conn,
                cancel: Arc::default(),
                lost: Arc::default(),
            },
        );
        let error = WorkerError::non_retryable(format!("the worker cannot read the task: {e}"))
            .with_type("UnreadableTask");
        let _ = self.tx.send(Event::Done {
            lease,
            outcome: Err(error),
        });
    }

    /// A task frame: start its handler (unless stopping).
    fn on_task(&mut self, task: Value) {
        let task: WorkerTask = match serde_json::from_value(task) {
            Ok(t) => t,
            Err(e) => {
                log::error!(
                    "tasq worker {}: unreadable task frame ({e}); it returns to the queue \
                     when its lease ends",
                    self.cfg.identity
                );
                return;
            }
        };
        if task.lease.is_empty() {
            log::error!(
                "tasq worker {}: task {} came without a lease; it returns to the queue when \
                 its lease ends",
                self.cfg.identity,
                task.task_id
            );
            return;
        }
        if self.shutting_down {
            log::info!(
                "tasq worker {}: not starting task {} while shutting down; it goes back to \
                 the queue when the socket closes",
                self.cfg.identity,
                task.task_id
            );
            return;
        }
        self.running.insert(
            task.lease.clone(),
            Running {
                task_id: task.task_id.clone(),
                conn: self.conn,
                cancel: task.cancel.clone(),
                lost: task.lost.clone(),
            },
        );
        tokio::spawn(run_task(self.handler.clone(), task, self.tx.clone()));
    }

    /// A handler event while connected.
    async fn on_event(&mut self, ev: Event, ws: &mut Ws) -> Result<(), tungstenite::Error> {
        match ev {
            Event::Heartbeat { lease } => {
                if self.running.contains_key(&lease) {
                    let frame = json!({"op": "heartbeat", "lease": lease, "details": null});
                    ws.send(Message::text(frame.to_string())).await?;
                }
            }
            Event::Done { lease, outcome } => {
                let Some(task) = self.running.remove(&lease) else {
                    return Ok(());
                };
                let frame = settle_frame(&lease, outcome, self.cfg.max_frame_bytes);
                if let Err(e) = ws.send(Message::text(frame.clone())).await {
                    self.pending.push_back((lease, frame));
                    return Err(e);
                }
                self.settling.insert(lease.clone(), task.task_id.clone());
                self.unacked.insert(lease, frame);
                if task.conn != self.conn {
                    // The server gives back credit only for tasks of this connection.
                    self.top_up(ws).await?;
                }
            }
        }
        Ok(())
    }

    /// A handler event while there is no connection: keep its settle for the next one.
    fn on_event_offline(&mut self, ev: Event) {
        if let Event::Done { lease, outcome } = ev {
            if self.running.remove(&lease).is_some() {
                let frame = settle_frame(&lease, outcome, self.cfg.max_frame_bytes);
                self.pending.push_back((lease, frame));
            }
        }
    }
}

/// Why a connection attempt failed.
enum Attempt {
    /// Try again after a backoff.
    Retry(String),
    /// Stop: retrying cannot help.
    Fatal(ClientError),
}

/// Sorts a failed upgrade: a 4xx other than 408 / 429 is final, anything else is retried.
fn classify(e: tungstenite::Error) -> Attempt {
    match e {
        tungstenite::Error::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            if (400..500).contains(&status) && status != 408 && status != 429 {
                Attempt::Fatal(ClientError::Rejected { status, body })
            } else {
                Attempt::Retry(format!("HTTP {status}: {body}"))
            }
        }
        tungstenite::Error::Url(e) => Attempt::Fatal(ClientError::InvalidConfig(e.to_string())),
        other => Attempt::Retry(other.to_string()),
    }
}

/// A delay between `d / 2` and `d`.
fn jitter(d: Duration) -> Duration {
    let half = d / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

/// Closes cleanly: a close frame, then read until the server's close (bounded).
async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Runs one handler on a task of its own, heartbeating until it finishes.
async fn run_task<H, F>(handler: Arc<H>, task: WorkerTask, tx: mpsc::UnboundedSender<Event>)
where
    H: Fn(WorkerTask) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Value, WorkerError>> + Send + 'static,
{
    let lease = task.lease.clone();
    let every = task.heartbeat_interval();
    let mut job = tokio::spawn(handler(task));
    let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            r = &mut job => break match r {
                Ok(outcome) => outcome,
                Err(e) if e.is_panic() => {
                    Err(WorkerError::retryable("the handler panicked").with_type("Panic"))
                }
                Err(_) => Err(WorkerError::retryable("the handler was cancelled")),
            },
            _ = ticks.tick() => {
                let _ = tx.send(Event::Heartbeat { lease: lease.clone() });
            }
        }
    };
    let _ = tx.send(Event::Done { lease, outcome });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100));
        }
    }

    #[test]
    fn tasks_parse_leniently() {
        let t: WorkerTask = serde_json::from_value(json!({
            "task_id": "t", "task_type": "x", "payload": {"a": 1}, "lease": "L",
            "attempt": 2, "start_to_close_timeout_ms": 900, "heartbeat_timeout_ms": null,
            "something_new": true
        }))
        .expect("parse");
        assert_eq!(t.attempt, 2);
        assert_eq!(t.heartbeat_interval(), Duration::from_millis(300));
        assert!(!t.cancel_requested());
    }
}
