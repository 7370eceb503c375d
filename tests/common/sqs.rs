//! Calls to the SQS endpoint in both of its protocols, for tests/sqs*.rs.

use serde_json::{json, Value};
use std::time::Duration;

use super::{parse_body, TestServer};

/// A server with the SQS endpoint on a free port.
pub fn start() -> (TestServer, String) {
    let s = TestServer::start_with(
        &[],
        &[
            ("TASQ_SQS_ENABLED", "true"),
            ("TASQ_SQS_BIND", "127.0.0.1:0"),
        ],
    );
    let sqs = s.sqs_base();
    (s, sqs)
}

/// An answer: status, the `x-amzn-query-error` header, and the body (JSON, or the XML text
/// as a JSON string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub query_error: Option<String>,
    pub body: Value,
}

impl Answer {
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body
    }

    /// A JSON protocol error: the exception's shape and the query code.
    #[track_caller]
    pub fn json_error(&self, shape: &str, code: &str) {
        self.json_error_status(400, shape, code);
    }

    #[track_caller]
    pub fn json_error_status(&self, status: u16, shape: &str, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.body["__type"],
            json!(format!("com.amazonaws.sqs#{shape}")),
            "{self:?}"
        );
        assert_eq!(
            self.query_error.as_deref(),
            Some(format!("{code};Sender").as_str()),
            "{self:?}"
        );
    }

    pub fn xml(&self) -> &str {
        self.body.as_str().unwrap_or_default()
    }
}

pub fn finish(res: Result<ureq::Response, ureq::Error>) -> Answer {
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let status = r.status();
    let query_error = r.header("x-amzn-query-error").map(str::to_string);
    let text = r.into_string().expect("body");
    Answer {
        status,
        query_error,
        body: parse_body(&text),
    }
}

/// An AWS JSON 1.0 call.
pub fn call(sqs: &str, action: &str, body: Value) -> Answer {
    finish(
        ureq::post(&format!("{sqs}/"))
            .set("X-Amz-Target", &format!("AmazonSQS.{action}"))
            .set("Content-Type", "application/x-amz-json-1.0")
            .timeout(Duration::from_secs(60))
            .send_string(&body.to_string()),
    )
}

/// A query-protocol call to `path` (`/` or a queue's URL path).
pub fn query(sqs: &str, path: &str, pairs: &[(&str, &str)]) -> Answer {
    let mut all = vec![("Version", "2012-11-05")];
    all.extend_from_slice(pairs);
    finish(
        ureq::post(&format!("{sqs}{path}"))
            .timeout(Duration::from_secs(60))
            .send_form(&all),
    )
}

/// The text of the first `<tag>…</tag>` in `xml`.
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"));
    let end = xml[start..].find(&format!("</{tag}>")).expect("closed") + start;
    &xml[start..end]
}

pub fn create(sqs: &str, name: &str, attrs: Value) -> String {
    let a = call(
        sqs,
        "CreateQueue",
        json!({"QueueName": name, "Attributes": attrs}),
    );
    a.ok()["QueueUrl"].as_str().expect("QueueUrl").to_string()
}

pub fn receive(sqs: &str, url: &str, max: u32, wait: u32) -> Vec<Value> {
    let a = call(
        sqs,
        "ReceiveMessage",
        json!({"QueueUrl": url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait,
               "AttributeNames": ["All"], "MessageAttributeNames": ["All"]}),
    );
    a.ok()["Messages"].as_array().cloned().unwrap_or_default()
}

pub fn attributes(sqs: &str, url: &str) -> Value {
    let a = call(
        sqs,
        "GetQueueAttributes",
        json!({"QueueUrl": url, "AttributeNames": ["All"]}),
    );
    a.ok()["Attributes"].clone()
}
