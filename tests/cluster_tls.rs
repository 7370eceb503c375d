//! A cluster whose nodes serve HTTPS: a node calls the others over TLS, checking their
//! certificates against `cluster.ca_cert` (a test authority made with rcgen that signed the
//! nodes' certificate), with forwarded requests and relayed WebSockets alike; and a node
//! that does not trust that authority refuses to forward (503), never sends in the clear.
//!
//! Ignored by plain `cargo test` (they need PostgreSQL's programs); `.ci/postgres` runs them.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const NS: &str = "secure";
const A: &str = "activity";

/// Writes a test authority (`ca.pem`) and a certificate it signed for 127.0.0.1 and
/// localhost (`node.pem`, `node.key`) into `dir`; answers the authority's certificate.
fn authority_and_node_cert(dir: &Path) -> rustls::pki_types::CertificateDer<'static> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("key"))
        .expect("CA certificate");
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("leaf params")
        .signed_by(&key, &ca)
        .expect("leaf certificate");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    std::fs::write(dir.join("node.pem"), leaf.pem()).expect("write node.pem");
    std::fs::write(dir.join("node.key"), key.serialize_pem()).expect("write node.key");
    ca.der().clone()
}

/// An HTTPS client that trusts `ca`.
struct Https {
    agent: ureq::Agent,
    tls: Arc<rustls::ClientConfig>,
}

impl Https {
    fn trusting(ca: rustls::pki_types::CertificateDer<'static>) -> Https {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("add the authority");
        let tls = tls_client_config(roots);
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .tls_config(tls.clone())
            .build();
        Https { agent, tls }
    }

    /// `method url` with an optional JSON body: the status and the JSON answer.
    fn call(&self, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
        let req = self.agent.request(method, url);
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = resp.status();
        (status, parse_body(&resp.into_string().expect("a body")))
    }

    /// `GET url`: the status and the text.
    fn text(&self, url: &str) -> (u16, String) {
        match self.agent.get(url).call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                (r.status(), r.into_string().expect("a body"))
            }
            Err(e) => panic!("GET {url}: {e}"),
        }
    }

    /// Waits until `node` counts `n` live nodes.
    fn wait_live(&self, node: &TestServer, n: usize) {
        let url = node.url("/api/v1/cluster");
        let ok = wait_until(Duration::from_secs(30), || {
            let Ok(r) = self.agent.get(&url).call() else {
                return false;
            };
            r.into_json::<Value>()
                .is_ok_and(|b| b["live"].as_array().is_some_and(|a| a.len() == n))
        });
        assert!(
            ok,
            "{} never counted {n} live nodes:\n{}",
            node.base(),
            node.stderr()
        );
    }
}

/// The node the database says owns `queue`.
fn owner_of(url: &str, queue: &str) -> String {
    let mut db = common::postgres::connect(url, Duration::from_secs(10));
    db.query_one(
        "SELECT owner FROM tasq_owners WHERE namespace = $1 AND queue = $2",
        &[&NS, &queue],
    )
    .expect("read the owner")
    .get(0)
}

#[test]
#[ignore = "needs PostgreSQL's programs: run by .ci/postgres"]
fn nodes_serving_https_forward_and_relay_over_tls_checked_against_the_cluster_ca() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = authority_and_node_cert(dir.path());
    let path = |f: &str| dir.path().join(f).to_str().expect("utf-8").to_string();
    let (cert, key, ca_pem) = (path("node.pem"), path("node.key"), path("ca.pem"));
    let tls = [
        ("TASQ_TLS_CERT", cert.as_str()),
        ("TASQ_TLS_KEY", key.as_str()),
    ];
    let trusting = [tls[0], tls[1], ("TASQ_CLUSTER_CA_CERT", ca_pem.as_str())];
    let url = common::postgres::new_database();
    let nodes: Vec<TestServer> = (1..=3)
        .map(|i| common::cluster::start_node(&url, &format!("n{i}"), &trusting))
        .collect();
    let https = Https::trusting(ca);
    for n in &nodes {
        assert!(n.base().starts_with("https://"), "{}", n.base());
        https.wait_live(n, 3);
    }

    // Add through one node, poll through the next, complete through the third: most of
    // these cross a node boundary, over TLS.
    for i in 0..9 {
        let qp = q(NS, &format!("q{i}"), A);
        let at = |k: usize| nodes[(i + k) % 3].url("");
        let (code, body) = https.call(
            "POST",
            &format!("{}{qp}/tasks", at(0)),
            Some(json!({"task_type": "t", "payload": i})),
        );
        assert_eq!(code, 201, "add: {body}");
        let (code, body) = https.call(
            "POST",
            &format!("{}{qp}/poll", at(1)),
            Some(json!({"identity": "w", "max_tasks": 1, "wait_ms": 5000})),
        );
        assert_eq!(code, 200, "poll: {body}");
        let lease = lease_of(&body["tasks"][0]);
        let (code, body) = https.call(
            "POST",
            &format!("{}/api/v1/leases/{lease}/complete", at(2)),
            Some(json!({"result": i})),
        );
        assert_eq!(code, 200, "complete: {body}");
    }
    let forwarded: f64 = nodes
        .iter()
        .map(|n| {
            let (_, text) = https.text(&n.url("/metrics"));
            metric_sum(&text, "tasq_cluster_forwarded_requests_total", &[])
        })
        .sum();
    assert!(forwarded >= 9.0, "forwarded {forwarded}");

    // A worker's socket over WSS on a node that does not own the queue: its tasks come from
    // the owner over a relayed WSS socket.
    let name = "streamed";
    let qp = q(NS, name, A);
    let (code, body) = https.call(
        "POST",
        &nodes[0].url(&format!("{qp}/tasks")),
        Some(json!({"task_type": "t", "task_id": "over-wss"})),
    );
    assert_eq!(code, 201, "{body}");
    let owner = owner_of(&url, name);
    let via = (1..=3)
        .find(|i| format!("n{i}") != owner)
        .expect("a node that does not own it");
    let port = nodes[via - 1]
        .base()
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();
    let mut ws = wss_connect(
        &port,
        &format!("{qp}/connect?identity=relayed"),
        https.tls.clone(),
    );
    ws_take_and_complete(&mut ws, "over-wss");

    // A fourth node that trusts only the public authorities: it serves its own queues, and
    // answers 503 for the others' (their certificates fail its check), sending nothing on.
    let stranger = common::cluster::start_node(&url, "n4", &tls);
    https.wait_live(&stranger, 4);
    for n in &nodes {
        https.wait_live(n, 4);
    }
    let mut refused = 0;
    for i in 0..12 {
        let name = format!("elsewhere{i}");
        let qp = q(NS, &name, A);
        let (code, body) = https.call(
            "POST",
            &nodes[0].url(&format!("{qp}/tasks")),
            Some(json!({"task_type": "t"})),
        );
        assert_eq!(code, 201, "{body}");
        if owner_of(&url, &name) == "n4" {
            continue;
        }
        let id = body["task_id"].as_str().expect("an id");
        let (code, body) = https.call("GET", &stranger.url(&format!("{qp}/tasks/{id}")), None);
        assert_error(code, &body, 503, "unavailable");
        refused += 1;
    }
    assert!(refused > 0, "every queue landed on n4");
}
