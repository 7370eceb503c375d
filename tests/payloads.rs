//! Black-box tests of payloads that are valid JSON text but awkward to parse (a lone
//! surrogate, nesting past serde_json's recursion limit, a number no float can hold): what
//! add accepts, every read path delivers as the exact text it was added with, and one such
//! task never holds up the others polled with it.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// Payloads that are JSON text a parser into a tree may refuse, with a name for messages.
fn poison() -> Vec<(&'static str, String)> {
    vec![
        ("lone surrogate", r#""\ud800""#.to_string()),
        (
            "lone trailing surrogate",
            r#"{"s": "a\udc00b"}"#.to_string(),
        ),
        (
            "nested 200 deep",
            format!("{}1{}", "[".repeat(200), "]".repeat(200)),
        ),
        ("400-digit number", "7".repeat(400)),
        ("huge exponent", "1e999999".to_string()),
    ]
}

/// Adds a task whose body is built as text around `payload`; answers the raw answer text.
fn add_raw(s: &TestServer, qpath: &str, task_id: &str, payload: &str) -> (u16, Value) {
    let body = format!(r#"{{"task_type": "t", "task_id": "{task_id}", "payload": {payload}}}"#);
    post_raw(
        &s.url(&format!("{qpath}/tasks")),
        "application/json",
        body.as_bytes(),
    )
}

/// POSTs `body` and answers the status and the raw body text (not parsed: the test looks for
/// the exact payload text in it).
fn post_text(url: &str, body: &str) -> (u16, String) {
    let res = ureq::post(url)
        .set("Content-Type", "application/json")
        .send_string(body);
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url} failed: {e}"),
    };
    let status = resp.status();
    (status, resp.into_string().expect("body"))
}

/// The lease tokens in a raw poll answer (found by their key, without parsing the payloads).
fn leases_in(text: &str) -> Vec<String> {
    text.match_indices(r#""lease":""#)
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            rest[..rest.find('"').expect("end of the lease")].to_string()
        })
        .collect()
}

#[test]
fn every_accepted_payload_is_delivered_by_http_poll_and_dead_letters() {
    let s = TestServer::start();
    let qpath = q(NS, "poison-http", "activity");
    let poison = poison();
    for (i, (name, payload)) in poison.iter().enumerate() {
        let (code, body) = add_raw(&s, &qpath, &format!("p{i}"), payload);
        assert_eq!(code, 201, "add of a {name}: {body}");
    }
    // Healthy tasks added after the poison ones: a poll that takes them all must not fail.
    for i in 0..3 {
        add_task(
            &s,
            &qpath,
            json!({"task_type": "t", "task_id": format!("ok{i}")}),
        );
    }
    let want = poison.len() + 3;
    let (code, text) = post_text(
        &s.url(&format!("{qpath}/poll")),
        &json!({"identity": "w", "max_tasks": 100, "wait_ms": 0}).to_string(),
    );
    assert_eq!(code, 200, "poll: {text}");
    for (name, payload) in &poison {
        assert!(
            text.contains(&format!(r#""payload":{payload}"#)),
            "the {name} comes back as the text it was added with: {text:.300}"
        );
    }
    let leases = leases_in(&text);
    assert_eq!(leases.len(), want, "every task in one poll: {text:.300}");

    // The status of each reads (it holds no payload, but it reads the record).
    for (i, (name, _)) in poison.iter().enumerate() {
        let (code, _, text) = get_text(&s.url(&format!("{qpath}/tasks/p{i}")));
        assert_eq!(code, 200, "status of the {name}: {text:.300}");
    }

    // Fail every poison task for good: each becomes a dead letter that lists as text.
    for lease in &leases {
        let (code, body) = fail(
            &s,
            lease,
            json!({"error": {"message": "no"}, "non_retryable": true}),
        );
        assert_eq!(code, 200, "fail: {body}");
    }
    let (code, _, text) = get_text(&s.url(&format!("{qpath}/dead-letters?limit=100")));
    assert_eq!(code, 200, "dead letters: {text:.300}");
    for (name, payload) in &poison {
        assert!(
            text.contains(&format!(r#""payload":{payload}"#)),
            "the {name} lists as a dead letter: {text:.300}"
        );
    }
    // Redriven, they are delivered again, still byte for byte.
    let (code, body) = post(
        &s.url(&format!("{qpath}/dead-letters/redrive")),
        &json!({"all": true}),
    );
    assert_eq!((code, body["redriven"].as_u64()), (200, Some(want as u64)));
    let (code, text) = post_text(
        &s.url(&format!("{qpath}/poll")),
        &json!({"identity": "w", "max_tasks": 100, "wait_ms": 0}).to_string(),
    );
    assert_eq!(code, 200);
    assert_eq!(leases_in(&text).len(), want);
    for (name, payload) in &poison {
        assert!(text.contains(payload.as_str()), "the {name} after redrive");
    }
}

#[test]
fn every_accepted_payload_is_delivered_over_a_websocket() {
    let s = TestServer::start();
    let qpath = q(NS, "poison-ws", "activity");
    let poison = poison();
    for (i, (name, payload)) in poison.iter().enumerate() {
        let (code, body) = add_raw(&s, &qpath, &format!("p{i}"), payload);
        assert_eq!(code, 201, "add of a {name}: {body}");
    }
    add_task(&s, &qpath, json!({"task_type": "t", "task_id": "ok"}));
    let want = poison.len() + 1;

    let base = s.base().replacen("http://", "ws://", 1);
    let url = format!("{base}{qpath}/connect?identity=ws-poison");
    let (mut sock, _) = tungstenite::connect(url.as_str()).expect("connect");
    set_timeout(&sock, Duration::from_millis(500));
    sock.send(Message::text(r#"{"op": "credit", "n": 100}"#))
        .expect("credit");
    let mut frames = Vec::new();
    let deadline = Instant::now() + EVENTUALLY;
    while frames.len() < want && Instant::now() < deadline {
        match sock.read() {
            Ok(Message::Text(t)) => frames.push(t.to_string()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("socket failed after {} frames: {e}", frames.len()),
        }
    }
    assert_eq!(frames.len(), want, "one task frame each: {frames:?}");
    for (name, payload) in &poison {
        assert!(
            frames
                .iter()
                .any(|f| f.contains(&format!(r#""payload":{payload}"#))),
            "the {name} comes over the socket as added"
        );
    }
    // Each is settled over the same socket, with a result only kept as text can hold.
    for f in &frames {
        for lease in leases_in(f) {
            let frame = format!(r#"{{"op": "complete", "lease": "{lease}", "result": "\ud800"}}"#);
            sock.send(Message::text(frame)).expect("complete");
        }
    }
    assert!(
        wait_until(EVENTUALLY, || {
            let st = stats(&s, NS, "poison-ws", "activity");
            stat_u64(&st, "in_flight_count") == 0 && stat_u64(&st, "backlog_count") == 0
        }),
        "every task settled"
    );
}

#[test]
fn a_result_or_details_a_tree_parser_refuses_is_kept_as_text() {
    let s = TestServer::start();
    let qpath = q(NS, "poison-result", "activity");
    add_task(&s, &qpath, json!({"task_type": "t", "task_id": "r"}));
    let task = poll_one(&s, &qpath, "w", 5_000).expect("the task");
    let lease = lease_of(&task);
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let (code, text) = post_text(
        &s.url(&format!("/api/v1/leases/{lease}/heartbeat")),
        &format!(r#"{{"details": {deep}}}"#),
    );
    assert_eq!(code, 200, "heartbeat: {text}");
    let (code, text) = post_text(
        &s.url(&format!("/api/v1/leases/{lease}/complete")),
        r#"{"result": "\ud800"}"#,
    );
    assert_eq!(code, 200, "complete: {text}");
    let (code, _, text) = get_text(&s.url(&format!("{qpath}/tasks/r")));
    assert_eq!(code, 200, "status: {text}");
    assert!(text.contains(r#""\ud800""#), "the result as sent: {text}");
}

fn set_timeout(sock: &WebSocket<MaybeTlsStream<TcpStream>>, t: Duration) {
    if let MaybeTlsStream::Plain(tcp) = sock.get_ref() {
        tcp.set_read_timeout(Some(t)).expect("read timeout");
    }
}
