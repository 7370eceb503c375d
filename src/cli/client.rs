//! A small blocking HTTP client for the tasq API (`ureq`), used by the command line, the shell
//! worker and `examples/worker.rs`.
//!
//! Every answer that is not 2xx becomes a [`crate::Error`] with the server's code and message,
//! so callers see the same typed errors as embedders; a server that cannot be reached is
//! [`Error::Unavailable`].

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{validate_name, QueueKey};

/// The server address used when neither `--server` nor `TASQ_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7280";

/// How long a request may take beyond the time the server was asked to wait.
const SLACK: Duration = Duration::from_secs(30);

/// A client for one tasq server. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// `Authorization` header value, when an API key is set.
    authorization: Option<String>,
}

impl Client {
    /// A client for the server at `base` (`http://host:port`, a trailing `/` is fine).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .redirects(0)
                .build(),
            authorization: None,
        }
    }

    /// Sends `key` as `Authorization: Bearer KEY` with every request (`None`: no header).
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        // A key is printable; control characters would break the header.
        self.authorization = key.map(|k| {
            let k: String = k.trim().chars().filter(|c| !c.is_control()).collect();
            format!("Bearer {k}")
        });
        self
    }

    /// The server's base URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path`; `wait` is how long the server may hold the answer (long polls).
    pub fn get(&self, path: &str, wait: Duration) -> Result<Value> {
        self.send("GET", path, None, wait)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value, wait: Duration) -> Result<Value> {
        self.send("POST", path, Some(body), wait)
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value> {
        self.send("PUT", path, Some(body), Duration::ZERO)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Value> {
        self.send("DELETE", path, None, Duration::ZERO)
    }

    /// Sends one request and decodes the JSON answer; a non-2xx answer is the server's error.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Result<Value> {
        self.send_as(method, path, body, wait)
    }

    /// Like [`Client::send`], decoding the answer as `T` (e.g. a struct that keeps the
    /// payload as the exact text the server sent, with `Box<RawValue>`).
    pub fn send_as<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> Result<T> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.agent.request(method, &url).timeout(wait + SLACK);
        if let Some(auth) = &self.authorization {
            req = req.set("Authorization", auth);
        }
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(resp) => {
                let text = resp.into_string().map_err(|e| {
                    Error::Unavailable(format!("reading the answer of {method} {url}: {e}"))
                })?;
                let text = if text.trim().is_empty() {
                    "null"
                } else {
                    &text
                };
                serde_json::from_str(text).map_err(|e| {
                    Error::Internal(format!(
                        "{method} {url} answered JSON that is not what tasq expects: {e}"
                    ))
                })
            }
            Err(ureq::Error::Status(status, resp)) => Err(error_of(status, resp)),
            Err(ureq::Error::Transport(t)) => {
                let why = match std::error::Error::source(&t) {
                    Some(cause) => format!("{}: {cause}", t.kind()),
                    None => t.message().unwrap_or("no answer").to_string(),
                };
                Err(Error::Unavailable(format!(
                    "cannot reach the tasq server at {}: {}",
                    self.base,
                    one_line(&why)
                )))
            }
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("api_key", &self.authorization.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Client {
    /// True when [`Client::post_cancellable`] can reach the server (a plain `http://` URL).
    pub fn can_cancel(&self) -> bool {
        self.base.starts_with("http://")
    }

    /// `POST path` over a connection of its own, handing a clone of the socket to `on_connect`
    /// first, so that another thread can give up the request: `shutdown(Write)` on that clone
    /// tells the server the client is gone (a parked poll is forgotten at once and takes no
    /// task), while an answer the server had sent already is still read and returned.
    /// Only for `http://` servers ([`Client::can_cancel`]).
    pub fn post_cancellable<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        wait: Duration,
        on_connect: impl FnOnce(TcpStream),
    ) -> Result<T> {
        let unreachable = |e: std::io::Error| {
            Error::Unavailable(format!(
                "cannot reach the tasq server at {}: {e}",
                self.base
            ))
        };
        let rest = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| Error::invalid(format!("{} is not an http:// URL", self.base)))?;
        let (hostport, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let addr = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_string()
        } else {
            format!("{hostport}:80")
        };
        let addrs: Vec<_> = addr.to_socket_addrs().map_err(unreachable)?.collect();
        let mut stream = TcpStream::connect_timeout(
            addrs
                .first()
                .ok_or_else(|| unreachable(std::io::ErrorKind::NotFound.into()))?,
            Duration::from_secs(10),
        )
        .map_err(unreachable)?;
        stream
            .set_read_timeout(Some(wait + SLACK))
            .map_err(unreachable)?;
        on_connect(stream.try_clone().map_err(unreachable)?);
        let payload = body.to_string();
        let auth = self
            .authorization
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "POST {prefix}{path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
             {auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            payload.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(payload.as_bytes()))
            .map_err(unreachable)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(unreachable)?;
        let (status, headers, body) = parse_response(&raw).ok_or_else(|| {
            Error::Unavailable(format!(
                "the connection to {} closed without an answer",
                self.base
            ))
        })?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            let retry_after = header(&headers, "retry-after");
            return Err(error_from(status, retry_after, &text));
        }
        serde_json::from_str(&text).map_err(|e| {
            Error::Internal(format!(
                "POST {path} answered JSON that is not what tasq expects: {e}"
            ))
        })
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// An HTTP answer: status, headers, body.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// Splits an HTTP/1.1 answer read to its end into status, headers and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    if header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(n) = header(&headers, "content-length").and_then(|v| v.parse().ok()) {
        body.truncate(n);
    }
    Some((status, headers, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Turns an error answer into the error of its code (by status when the body is not the
/// contract's shape, e.g. from a proxy).
fn error_of(status: u16, resp: ureq::Response) -> Error {
    let retry_after = resp.header("Retry-After").map(str::to_string);
    let text = resp.into_string().unwrap_or_default();
    error_from(status, retry_after.as_deref(), &text)
}

/// The error of an answer with `status`, `Retry-After` header and body `text`.
fn error_from(status: u16, retry_after: Option<&str>, text: &str) -> Error {
    let retry_after_secs = retry_after.and_then(|v| v.trim().parse().ok()).unwrap_or(1);
    let parsed: Option<(String, String)> = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        let e = v.get("error")?;
        Some((
            e.get("code")?.as_str()?.to_string(),
            e.get("message")?.as_str().unwrap_or_default().to_string(),
        ))
    });
    let (code, message) = match parsed {
        Some(pair) => pair,
        None => {
            let code = match status {
                400 => "invalid_argument",
                401 => "unauthenticated",
                403 => "permission_denied",
                404 => "not_found",
                409 => "lease_lost",
                413 => "payload_too_large",
                429 => "resource_exhausted",
                503 => "unavailable",
                _ => "internal",
            };
            let body = one_line(text);
            let body: String = body.chars().take(200).collect();
            (code.to_string(), format!("HTTP {status}: {body}"))
        }
    };
    match code.as_str() {
        "invalid_argument" => Error::InvalidArgument(message),
        "unauthenticated" => Error::Unauthenticated(message),
        "permission_denied" => Error::PermissionDenied(message),
        "not_found" => Error::NotFound(message),
        "lease_lost" => Error::LeaseLost(message),
        "payload_too_large" => Error::PayloadTooLarge(message),
        "resource_exhausted" => Error::ResourceExhausted {
            message,
            retry_after_secs,
        },
        "unavailable" => Error::Unavailable(message),
        "internal" => Error::Internal(message),
        other => Error::Internal(format!("{other}: {message}")),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `/api/v1/namespaces/{ns}/task-queues/{name}/{type}`: the contract's `{q}`.
pub fn queue_path(key: &QueueKey) -> String {
    format!(
        "/api/v1/namespaces/{}/task-queues/{}/{}",
        key.namespace(),
        key.name(),
        key.kind().as_str()
    )
}

/// `{q}/tasks/{task_id}`, after checking the id is a valid name (so it needs no escaping).
pub fn task_path(key: &QueueKey, task_id: &str) -> Result<String> {
    validate_name("task_id", task_id)?;
    Ok(format!("{}/tasks/{task_id}", queue_path(key)))
}

/// `/api/v1/leases/{lease}/{op}` (`complete`, `fail` or `heartbeat`). A lease is URL-safe.
pub fn lease_path(lease: &str, op: &str) -> Result<String> {
    if lease.is_empty()
        || !lease
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::lease_lost());
    }
    Ok(format!("/api/v1/leases/{lease}/{op}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        let (status, _, body) = parse_response(plain).unwrap();
        assert_eq!((status, body.as_slice()), (200, &b"{}"[..]));
        let chunked =
            b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (status, headers, body) = parse_response(chunked).unwrap();
        assert_eq!((status, body.as_slice()), (429, &b"abcde"[..]));
        assert_eq!(header(&headers, "retry-after"), Some("3"));
        assert!(parse_response(b"HTTP/1.1 200").is_none());
    }

    #[test]
    fn error_bodies_keep_their_code() {
        let e = error_from(
            404,
            None,
            r#"{"error": {"code": "not_found", "message": "no task"}}"#,
        );
        assert!(matches!(e, Error::NotFound(ref m) if m == "no task"));
        let e = error_from(429, Some("7"), "busy");
        assert!(matches!(
            e,
            Error::ResourceExhausted {
                retry_after_secs: 7,
                ..
            }
        ));
        assert_eq!(error_from(502, None, "<html>").code(), "internal");
    }
}
