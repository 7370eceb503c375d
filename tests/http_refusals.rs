//! The HTTP layer's own refusals, over raw TCP: a request head that is too large (431) or not
//! HTTP (400) answers the contract's JSON error body; a declared body over the bound answers
//! 413 at once, before anything of it is sent; a body that trickles in answers 400 once
//! `limits.body_timeout` passes. The server goes on serving after each. A value of the wrong
//! type is told in the API's words, not Rust's.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends `head` (and nothing more unless `body` is given), then reads the whole answer until
/// the server closes or 30 s pass; answers the status, the body text and how long it took.
fn exchange(s: &TestServer, head: &[u8], body: Option<&[u8]>) -> (u16, String, Duration) {
    let addr = s.base().trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    tcp.write_all(head).expect("send the head");
    if let Some(b) = body {
        let _ = tcp.write_all(b);
    }
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
        // One answer is enough: stop once the body it announces is in.
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| raw.len() >= end + 4 + n) {
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, elapsed)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks the body is the contract's error shape with `code`.
#[track_caller]
fn assert_json_error(body: &str, code: &str) {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    assert_eq!(v["error"]["code"], code, "{body}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[track_caller]
fn assert_still_serving(s: &TestServer) {
    assert_eq!(get(&s.url("/healthz")).0, 200);
}

#[test]
fn a_head_too_large_answers_431_with_a_json_error() {
    let s = TestServer::start();
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(256 * 1024)
    );
    let (status, body, _) = exchange(&s, head.as_bytes(), None);
    assert_eq!(status, 431, "{body}");
    assert_json_error(&body, "invalid_argument");
    assert_still_serving(&s);
}

#[test]
fn a_request_that_is_not_http_answers_400_with_a_json_error() {
    let s = TestServer::start();
    let (status, body, _) = exchange(&s, b"GET / HTTP/9\x01\r\n\r\n", None);
    assert_eq!(status, 400, "{body}");
    assert_json_error(&body, "invalid_argument");
    assert_still_serving(&s);
}

#[test]
fn a_declared_body_over_the_bound_answers_413_before_it_is_sent() {
    let s = TestServer::start();
    let path = format!("{}/tasks", q(NS, "refusals", "activity"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 10000000000\r\n\r\n"
    );
    // Nothing of the 10 GB is sent: the answer must not wait for it.
    let (status, body, took) = exchange(&s, head.as_bytes(), None);
    assert_eq!(status, 413, "{body}");
    assert_json_error(&body, "payload_too_large");
    assert!(took < Duration::from_secs(10), "413 took {took:?}");
    assert_still_serving(&s);
}

#[test]
fn a_body_that_trickles_in_answers_400_after_the_body_timeout() {
    let s = TestServer::start_with(&[], &[("TASQ_LIMITS_BODY_TIMEOUT", "1s")]);
    let path = format!("{}/tasks", q(NS, "refusals", "activity"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"task_type\""
    );
    let (status, body, took) = exchange(&s, head.as_bytes(), None);
    assert_eq!(status, 400, "{body}");
    assert_json_error(&body, "invalid_argument");
    assert!(body.contains("body_timeout"), "{body}");
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert_still_serving(&s);
}

/// Wrong types in a body or a query are named in the API's words (an object, an integer, an
/// array), never Rust's (`struct TaskError`, `u32`, `a sequence`), with where they are.
#[test]
fn wrong_types_are_told_in_the_apis_words() {
    let s = TestServer::start();
    let qp = q(NS, "words", "activity");
    let leases = s.url("/api/v1/leases/abc/fail");
    for (url, body, place) in [
        (
            s.url(&format!("{qp}/tasks")),
            serde_json::json!({"task_type": "t", "priority": "high"}),
            "priority",
        ),
        (leases, serde_json::json!({"error": "boom"}), "error"),
        (
            s.url(&format!("{qp}/tasks")),
            serde_json::json!({"task_type": "t", "retry": {"max_attempts": 1.5}}),
            "retry.max_attempts",
        ),
        (
            s.url("/api/v1/leases/settle"),
            serde_json::json!({"settles": {"lease": "x"}}),
            "settles",
        ),
    ] {
        let (code, answer) = post(&url, &body);
        let message = assert_error(code, &answer, 400, "invalid_argument");
        assert!(message.contains(place), "{body}: {message}");
        for rust in ["struct", "u32", "i64", "f64", "sequence", "TaskError"] {
            assert!(!message.contains(rust), "{body}: {message}");
        }
    }
    let (code, answer) = get(&s.url(&format!("{qp}/dead-letters?limit=x")));
    let message = assert_error(code, &answer, 400, "invalid_argument");
    assert!(!message.contains("Query deserialize"), "{message}");
}
