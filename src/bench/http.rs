//! The generator's HTTP/1.1 client: one keep-alive connection per producer or worker.
//!
//! hyper's connection API (`hyper::client::conn::http1`) rather than a pooled client: each
//! producer and each worker owns its connection outright, so a request costs no pool lookup
//! and no lock, and the number of connections is exactly the concurrency asked for. A
//! connection that breaks is opened again once, at the next request.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{BenchError, BenchResult};

/// How long a request may take before the benchmark gives up on it (a long poll's own
/// `wait_ms` is added to this).
const REQUEST_SLACK: Duration = Duration::from_secs(30);

/// The server the load goes to.
#[derive(Debug, Clone)]
pub struct Target {
    /// Resolved address.
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    /// `Bearer KEY`, when `--api-key` is given.
    pub auth: Option<HeaderValue>,
}

impl Target {
    /// Parses `http://host:port` (no path; `https` is not supported by the generator).
    pub fn parse(server: &str, api_key: Option<&str>) -> BenchResult<Self> {
        let rest = server.strip_prefix("http://").ok_or_else(|| {
            BenchError::new(format!(
                "--server {server:?}: the generator speaks plain http:// only"
            ))
        })?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(BenchError::new(format!(
                "--server {server:?}: expected http://HOST:PORT with no path"
            )));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        }) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| BenchError::new(format!("--server {server:?}: {e}")))?
            .next()
            .ok_or_else(|| BenchError::new(format!("--server {server:?}: no address")))?;
        let auth = match api_key {
            Some(key) => Some(
                HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| BenchError::new("--api-key holds characters a header cannot"))?,
            ),
            None => None,
        };
        Ok(Target {
            addr,
            authority: authority.to_string(),
            auth,
        })
    }

    /// True when the server listens on a loopback address.
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// One keep-alive HTTP/1.1 connection to the target.
pub struct Conn {
    target: std::sync::Arc<Target>,
    /// Local address to bind before connecting (spreads many connections over loopback
    /// addresses, below the server's `max_connections_per_client`).
    local: Option<IpAddr>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: status and body.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as text (for error messages).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }
}

impl Conn {
    /// A connection (opened at the first request).
    pub fn new(target: std::sync::Arc<Target>) -> Self {
        Conn {
            target,
            local: None,
            sender: None,
        }
    }

    /// A connection from this local address.
    pub fn with_local(target: std::sync::Arc<Target>, local: IpAddr) -> Self {
        Conn {
            target,
            local: Some(local),
            sender: None,
        }
    }

    /// Opens the TCP connection now (the first request would otherwise).
    pub async fn open(&mut self) -> BenchResult<()> {
        if self.sender.is_none() {
            self.sender = Some(self.connect().await?);
        }
        Ok(())
    }

    async fn connect(&self) -> BenchResult<SendRequest<Full<Bytes>>> {
        let addr = self.target.addr;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| BenchError::new(format!("socket: {e}")))?;
        if let Some(local) = self.local {
            socket
                .bind(SocketAddr::new(local, 0))
                .map_err(|e| BenchError::new(format!("bind {local}: {e}")))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| BenchError::new(format!("connect to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::new(format!("HTTP handshake with {addr}: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer; opens the connection again once if it
    /// broke (the server may close an idle keep-alive connection).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> BenchResult<Answer> {
        let mut retried = false;
        loop {
            match self.try_request(&method, path, body.clone(), timeout).await {
                Ok(answer) => return Ok(answer),
                Err(e) if retried => return Err(e),
                Err(_) => {
                    self.sender = None;
                    retried = true;
                }
            }
        }
    }

    async fn try_request(
        &mut self,
        method: &Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> BenchResult<Answer> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err(BenchError::new("no connection"));
        };
        sender
            .ready()
            .await
            .map_err(|e| BenchError::new(format!("connection: {e}")))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, self.target.authority.as_str());
        if !body.is_empty() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(auth) = &self.target.auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| BenchError::new(format!("request {path}: {e}")))?;
        let exchange = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| BenchError::new(format!("{method} {path}: {e}")))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| BenchError::new(format!("{method} {path}: reading answer: {e}")))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        match tokio::time::timeout(timeout + REQUEST_SLACK, exchange).await {
            Ok(r) => r,
            Err(_) => {
                self.sender = None;
                Err(BenchError::new(format!(
                    "{method} {path}: no answer within {:?}",
                    timeout + REQUEST_SLACK
                )))
            }
        }
    }

    /// `POST path` with a JSON body.
    pub async fn post(
        &mut self,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> BenchResult<Answer> {
        self.request(Method::POST, path, body, timeout).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> BenchResult<Answer> {
        self.request(Method::GET, path, Bytes::new(), Duration::ZERO)
            .await
    }

    /// Adds one task (`POST {q}/tasks`), retrying while the server answers 429 or 503.
    pub async fn add(&mut self, tasks_path: &str, body: Bytes) -> BenchResult<()> {
        let mut backoff = Duration::from_millis(20);
        loop {
            let answer = self.post(tasks_path, body.clone(), Duration::ZERO).await?;
            match answer.status {
                200 | 201 => return Ok(()),
                429 | 503 => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                s => {
                    return Err(BenchError::new(format!(
                        "add answered {s}: {}",
                        answer.text()
                    )))
                }
            }
        }
    }

    /// One poll (`POST {q}/poll`); a 429 answers as no task after a short pause.
    pub async fn poll(
        &mut self,
        poll_path: &str,
        body: Bytes,
        wait: Duration,
    ) -> BenchResult<Answer> {
        let answer = self.post(poll_path, body, wait).await?;
        match answer.status {
            200 => Ok(answer),
            429 | 503 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(Answer {
                    status: 200,
                    body: Bytes::from_static(b"{\"tasks\":[]}"),
                })
            }
            s => Err(BenchError::new(format!(
                "poll answered {s}: {}",
                answer.text()
            ))),
        }
    }

    /// Completes a lease (`POST /api/v1/leases/{lease}/complete`); `false` when the server
    /// answered 409 `lease_lost`.
    pub async fn complete(&mut self, lease: &str) -> BenchResult<bool> {
        let path = format!("/api/v1/leases/{lease}/complete");
        let answer = self
            .post(
                &path,
                Bytes::from_static(b"{\"result\":null}"),
                Duration::ZERO,
            )
            .await?;
        match answer.status {
            200 => Ok(true),
            409 => Ok(false),
            s => Err(BenchError::new(format!(
                "complete answered {s}: {}",
                answer.text()
            ))),
        }
    }

    /// Completes `leases` with one `POST /api/v1/leases/settle`: how many completed, how
    /// many had lost their lease.
    pub async fn settle_all(&mut self, leases: &[&str]) -> BenchResult<(u64, u64)> {
        let mut body = String::from(r#"{"settles":["#);
        for (i, lease) in leases.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&format!(r#"{{"lease":"{lease}","op":"complete"}}"#));
        }
        body.push_str("]}");
        let answer = self
            .post("/api/v1/leases/settle", Bytes::from(body), Duration::ZERO)
            .await?;
        if answer.status != 200 {
            return Err(BenchError::new(format!(
                "settle answered {}: {}",
                answer.status,
                answer.text()
            )));
        }
        let settled: SettleAnswer = serde_json::from_slice(&answer.body)
            .map_err(|e| BenchError::new(format!("settle answer: {e}")))?;
        let done = settled.results.iter().filter(|r| r.state.is_some()).count() as u64;
        Ok((done, settled.results.len() as u64 - done))
    }

    /// Completes `lease` with `next` (`next_body` is the whole request body): the answer
    /// holds the next tasks; `None` when the lease was lost (nothing was polled).
    pub async fn complete_next(
        &mut self,
        lease: &str,
        next_body: Bytes,
        wait: Duration,
    ) -> BenchResult<Option<Answer>> {
        let path = format!("/api/v1/leases/{lease}/complete");
        let answer = self.post(&path, next_body, wait).await?;
        match answer.status {
            200 => Ok(Some(answer)),
            409 => Ok(None),
            s => Err(BenchError::new(format!(
                "complete answered {s}: {}",
                answer.text()
            ))),
        }
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&mut self) -> BenchResult<String> {
        let answer = self.get("/metrics").await?;
        if answer.status != 200 {
            return Err(BenchError::new(format!(
                "/metrics answered {}: {}",
                answer.status,
                answer.text()
            )));
        }
        Ok(answer.text().into_owned())
    }
}

/// The parts of a poll answer the generator reads.
#[derive(Deserialize)]
pub struct PollAnswer<'a> {
    /// The tasks given.
    #[serde(borrow)]
    pub tasks: Vec<PolledTask<'a>>,
}

/// The parts of a task the generator reads.
#[derive(Deserialize)]
pub struct PolledTask<'a> {
    /// Lease token (URL-safe).
    #[serde(borrow)]
    pub lease: Cow<'a, str>,
    /// The payload, unparsed.
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

/// The parts of a settle-many answer the generator reads.
#[derive(Deserialize)]
struct SettleAnswer {
    results: Vec<SettleResult>,
}

#[derive(Deserialize)]
struct SettleResult {
    /// Set on success, absent on an error.
    state: Option<String>,
}

/// The `next` of a complete-with-next answer.
#[derive(Deserialize)]
pub struct NextAnswer<'a> {
    /// The poll's answer.
    #[serde(borrow)]
    pub next: PollAnswer<'a>,
}

/// Parses a poll answer's body.
pub fn parse_poll(body: &[u8]) -> BenchResult<PollAnswer<'_>> {
    serde_json::from_slice(body).map_err(|e| {
        BenchError::new(format!(
            "poll answer is not as expected: {e}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ))
    })
}

/// Sum of the samples of a metric in Prometheus text (all label sets).
pub fn metric_total(text: &str, name: &str) -> Option<f64> {
    metric_sum(text, name, &[])
}

/// Sum of the samples of a metric in Prometheus text whose labels include every
/// `(label, value)` of `labels` (all label sets when it is empty).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.rsplit_once('}') {
                Some((set, value)) => (set, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let wanted = labels
            .iter()
            .all(|(k, v)| label_pairs(set).any(|(pk, pv)| pk == *k && pv == *v));
        if !wanted {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *total.get_or_insert(0.0) += v;
        }
    }
    total
}

/// The `label="value"` pairs of a sample's label set (the text between its braces), values
/// unescaped only as far as a comma or quote inside them needs (`\"` is kept as is: tasq's
/// label values are names, which hold neither).
fn label_pairs(set: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = set;
    std::iter::from_fn(move || {
        let (key, after) = rest.split_once("=\"")?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                '"' if !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end?;
        let value = &after[..end];
        rest = after[end + 1..].trim_start_matches(',');
        Some((key.trim(), value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t = Target::parse("http://127.0.0.1:7280/", None).expect("parse");
        assert_eq!(t.addr, "127.0.0.1:7280".parse().expect("addr"));
        assert_eq!(t.authority, "127.0.0.1:7280");
        assert!(t.is_loopback());
        assert!(Target::parse("https://127.0.0.1:7280", None).is_err());
        assert!(Target::parse("http://127.0.0.1:7280/api", None).is_err());
    }

    #[test]
    fn reads_poll_answers_and_metrics() {
        let body =
            br#"{"tasks":[{"task_id":"a","lease":"L1","payload":{"t":5,"pad":"x"},"attempt":1}]}"#;
        let a = parse_poll(body).expect("parse");
        assert_eq!(a.tasks.len(), 1);
        assert_eq!(a.tasks[0].lease, "L1");
        assert_eq!(a.tasks[0].payload.get(), r#"{"t":5,"pad":"x"}"#);
        let text = "# HELP tasq_pollers x\ntasq_pollers{namespace=\"a\"} 3\ntasq_pollers{namespace=\"b\"} 4\ntasq_pollers_other 9\n";
        assert_eq!(metric_total(text, "tasq_pollers"), Some(7.0));
        assert_eq!(metric_total(text, "tasq_missing"), None);
        assert_eq!(
            metric_sum(text, "tasq_pollers", &[("namespace", "b")]),
            Some(4.0)
        );
        assert_eq!(
            metric_sum(text, "tasq_pollers", &[("namespace", "c")]),
            None
        );
    }

    #[test]
    fn picks_one_queue_s_series() {
        let text = concat!(
            "tasq_pollers{namespace=\"default\",task_queue=\"bench-a\",task_queue_type=\"activity\"} 2\n",
            "tasq_pollers{namespace=\"default\",task_queue=\"bench-a\",task_queue_type=\"workflow\"} 5\n",
            "tasq_pollers{namespace=\"default\",task_queue=\"bench-ab\",task_queue_type=\"activity\"} 7\n",
            "tasq_pollers{odd=\"x,y\\\"z\",task_queue=\"bench-a\"} 11\n",
            "tasq_pollers{broken 1\n",
        );
        let q = [("task_queue", "bench-a"), ("task_queue_type", "activity")];
        assert_eq!(metric_sum(text, "tasq_pollers", &q), Some(2.0));
        assert_eq!(
            metric_sum(text, "tasq_pollers", &[("task_queue", "bench-a")]),
            Some(18.0)
        );
        assert_eq!(metric_total(text, "tasq_pollers"), Some(25.0));
    }
}
