//! A small blocking HTTP client for the tasq API (`ureq`), used by the command line, the shell
//! worker and `examples/worker.rs`.
//!
//! Every answer that is not 2xx becomes a [`crate::Error`] with the server's code and message,
//! so callers see the same typed errors as embedders; a server that cannot be reached is
//! [`Error::Unavailable`].

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
    /// A client for the server at `base` (`http://host:port`, a trailing `/` is fine; a bare
    /// `host:port` means `http://host:port`).
    pub fn new(base: &str) -> Self {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Client {
            base,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .redirects(0)
                .build(),
            authorization: None,
        }
    }

    /// Checks the server's certificate against the authorities of the PEM file `ca_cert`
    /// (`--ca-cert`, `TASQ_CA_CERT`: a private CA) instead of the public web ones.
    pub fn with_ca_cert(mut self, ca_cert: Option<&str>) -> Result<Self> {
        let Some(path) = ca_cert.filter(|p| !p.is_empty()) else {
            return Ok(self);
        };
        let tls =
            crate::config::pem::trusting("--ca-cert", path).map_err(Error::InvalidArgument)?;
        self.agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .redirects(0)
            .tls_config(tls)
            .build();
        Ok(self)
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
            let message = if body.trim().is_empty() {
                format!(
                    "HTTP {status} with no tasq error in the answer (is --server a tasq server?)"
                )
            } else {
                format!("HTTP {status}, not a tasq answer (is --server a tasq server?): {body}")
            };
            (code.to_string(), message)
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
        key.queue_type().as_str()
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
        // Not a tasq answer: the message says so rather than ending in an empty body.
        let e = error_from(404, None, "");
        assert!(e.to_string().contains("is --server a tasq server"), "{e}");
    }

    #[test]
    fn a_server_without_a_scheme_is_plain_http() {
        assert_eq!(
            Client::new("127.0.0.1:7280").base(),
            "http://127.0.0.1:7280"
        );
        assert_eq!(Client::new("https://h:1/").base(), "https://h:1");
    }
}
