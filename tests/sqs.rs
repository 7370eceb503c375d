//! The SQS-compatible endpoint over real HTTP against the real binary (`[sqs] enabled`): both
//! protocols (AWS JSON 1.0 and the query protocol's form requests and XML answers), the error
//! codes SDKs map to exceptions, visibility, redrive to dead letters and back, queues kept
//! across a restart, FIFO deduplication, purge, and a signature required with auth on.
//! Answers are checked against what SQS documents. (boto3, the AWS CLI and Celery drive the
//! same endpoint in `tests/sqs/`.)

mod common;

use common::auth::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// A server with the SQS endpoint on a free port.
fn start() -> (TestServer, String) {
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
struct Answer {
    status: u16,
    query_error: Option<String>,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn ok(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body
    }

    /// A JSON protocol error: the exception's shape and the query code.
    #[track_caller]
    fn json_error(&self, shape: &str, code: &str) {
        self.json_error_status(400, shape, code);
    }

    #[track_caller]
    fn json_error_status(&self, status: u16, shape: &str, code: &str) {
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

    fn xml(&self) -> &str {
        self.body.as_str().unwrap_or_default()
    }
}

fn finish(res: Result<ureq::Response, ureq::Error>) -> Answer {
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
fn call(sqs: &str, action: &str, body: Value) -> Answer {
    finish(
        ureq::post(&format!("{sqs}/"))
            .set("X-Amz-Target", &format!("AmazonSQS.{action}"))
            .set("Content-Type", "application/x-amz-json-1.0")
            .timeout(Duration::from_secs(60))
            .send_string(&body.to_string()),
    )
}

/// A query-protocol call to `path` (`/` or a queue's URL path).
fn query(sqs: &str, path: &str, pairs: &[(&str, &str)]) -> Answer {
    let mut all = vec![("Version", "2012-11-05")];
    all.extend_from_slice(pairs);
    finish(
        ureq::post(&format!("{sqs}{path}"))
            .timeout(Duration::from_secs(60))
            .send_form(&all),
    )
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn xml_text<'a>(xml: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"));
    let end = xml[start..].find(&format!("</{tag}>")).expect("closed") + start;
    &xml[start..end]
}

fn create(sqs: &str, name: &str, attrs: Value) -> String {
    let a = call(
        sqs,
        "CreateQueue",
        json!({"QueueName": name, "Attributes": attrs}),
    );
    a.ok()["QueueUrl"].as_str().expect("QueueUrl").to_string()
}

fn receive(sqs: &str, url: &str, max: u32, wait: u32) -> Vec<Value> {
    let a = call(
        sqs,
        "ReceiveMessage",
        json!({"QueueUrl": url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait,
               "AttributeNames": ["All"], "MessageAttributeNames": ["All"]}),
    );
    a.ok()["Messages"].as_array().cloned().unwrap_or_default()
}

fn attributes(sqs: &str, url: &str) -> Value {
    let a = call(
        sqs,
        "GetQueueAttributes",
        json!({"QueueUrl": url, "AttributeNames": ["All"]}),
    );
    a.ok()["Attributes"].clone()
}

#[test]
fn json_protocol_messages_are_tasq_tasks_and_back() {
    let (s, sqs) = start();
    let url = create(&sqs, "orders", json!({"VisibilityTimeout": "30"}));
    assert_eq!(url, format!("{sqs}/000000000000/orders"));
    let sent = call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "hello",
               "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}),
    );
    let sent = sent.ok();
    // MD5 of "hello", and of the attribute in SQS's documented encoding (the value moto and
    // the AWS SDKs compute for k=String:v).
    assert_eq!(
        sent["MD5OfMessageBody"],
        json!("5d41402abc4b2a76b9719d911017c592")
    );
    assert_eq!(
        sent["MD5OfMessageAttributes"],
        json!("0a77b0642718c3d9dd47090567d11e0d")
    );
    let id = sent["MessageId"].as_str().expect("id").to_string();

    // Over tasq's own API: the message is a pending task whose payload is the body.
    let qp = q("default", "orders", "activity");
    let (st, page) = get(&s.url(&format!("{qp}/tasks")));
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["tasks"][0]["task_id"], json!(id), "{page}");
    assert_eq!(page["tasks"][0]["payload"], json!("hello"), "{page}");
    // And a task added over tasq's API is received with its payload's JSON as the body.
    add_task(
        &s,
        &qp,
        json!({"task_type": "t", "task_id": "native", "payload": {"x": 1}}),
    );

    let msgs = receive(&sqs, &url, 10, 1);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let by_id = |want: &str| {
        msgs.iter()
            .find(|m| m["MessageId"] == json!(want))
            .unwrap_or_else(|| panic!("no {want} in {msgs:?}"))
            .clone()
    };
    let m = by_id(&id);
    assert_eq!(m["Body"], json!("hello"));
    assert_eq!(m["MD5OfBody"], json!("5d41402abc4b2a76b9719d911017c592"));
    assert_eq!(m["Attributes"]["ApproximateReceiveCount"], json!("1"));
    assert_eq!(m["Attributes"]["SenderId"], json!("000000000000"));
    assert!(m["Attributes"]["SentTimestamp"]
        .as_str()
        .is_some_and(|t| t.len() == 13));
    assert_eq!(
        m["MessageAttributes"]["k"],
        json!({"DataType": "String", "StringValue": "v"})
    );
    assert_eq!(by_id("native")["Body"], json!("{\"x\":1}"));

    let counts = attributes(&sqs, &url);
    assert_eq!(counts["ApproximateNumberOfMessages"], json!("0"));
    assert_eq!(counts["ApproximateNumberOfMessagesNotVisible"], json!("2"));
    for m in &msgs {
        let d = call(
            &sqs,
            "DeleteMessage",
            json!({"QueueUrl": url, "ReceiptHandle": m["ReceiptHandle"]}),
        );
        d.ok();
    }
    let (_, done) = get(&s.url(&format!("{qp}/tasks/native")));
    assert_eq!(done["state"], json!("completed"), "{done}");
    assert_eq!(
        attributes(&sqs, &url)["ApproximateNumberOfMessagesNotVisible"],
        json!("0")
    );
    // A receive with nothing there answers no Messages member at all.
    assert_eq!(
        call(&sqs, "ReceiveMessage", json!({"QueueUrl": url})).ok(),
        &json!({})
    );
    // Operators see the endpoint's requests by action and answer.
    call(&sqs, "GetQueueUrl", json!({"QueueName": "nope"}));
    let metrics = get_text(&s.url("/metrics")).2;
    for line in [
        "tasq_sqs_requests_total{action=\"SendMessage\",code=\"ok\"} 1",
        "tasq_sqs_requests_total{action=\"GetQueueUrl\",code=\"AWS.SimpleQueueService.NonExistentQueue\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }
}

#[test]
fn errors_carry_the_codes_sdks_map_to_exceptions() {
    let (_s, sqs) = start();
    let url = create(&sqs, "errs", json!({}));
    let missing = format!("{sqs}/000000000000/nope");
    call(&sqs, "GetQueueUrl", json!({"QueueName": "nope"})).json_error(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    );
    call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": missing, "MessageBody": "x"}),
    )
    .json_error(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    );
    for (field, value) in [
        ("MaxNumberOfMessages", json!(11)),
        ("MaxNumberOfMessages", json!(0)),
        ("WaitTimeSeconds", json!(21)),
        ("VisibilityTimeout", json!(43_201)),
    ] {
        let mut body = json!({"QueueUrl": url});
        body[field] = value;
        call(&sqs, "ReceiveMessage", body)
            .json_error("InvalidParameterValueException", "InvalidParameterValue");
    }
    call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "x", "DelaySeconds": 901}),
    )
    .json_error("InvalidParameterValueException", "InvalidParameterValue");
    call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "a\u{1}b"}),
    )
    .json_error("InvalidMessageContents", "InvalidMessageContents");
    call(&sqs, "SendMessage", json!({"QueueUrl": url}))
        .json_error("MissingRequiredParameterException", "MissingParameter");
    call(
        &sqs,
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": "garbage"}),
    )
    .json_error("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid");
    call(
        &sqs,
        "DeleteMessageBatch",
        json!({"QueueUrl": url, "Entries": []}),
    )
    .json_error(
        "EmptyBatchRequest",
        "AWS.SimpleQueueService.EmptyBatchRequest",
    );
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"Id": format!("m{i}"), "MessageBody": "x"}))
        .collect();
    call(
        &sqs,
        "SendMessageBatch",
        json!({"QueueUrl": url, "Entries": eleven}),
    )
    .json_error(
        "TooManyEntriesInBatchRequest",
        "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
    );
    call(
        &sqs,
        "SendMessageBatch",
        json!({"QueueUrl": url, "Entries": [{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}]}),
    )
    .json_error("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct");
    call(
        &sqs,
        "SetQueueAttributes",
        json!({"QueueUrl": url, "Attributes": {"Colour": "blue"}}),
    )
    .json_error("InvalidAttributeName", "InvalidAttributeName");
    call(
        &sqs,
        "SetQueueAttributes",
        json!({"QueueUrl": url, "Attributes": {"DelaySeconds": "901"}}),
    )
    .json_error("InvalidAttributeValue", "InvalidAttributeValue");
    call(&sqs, "CreateQueue", json!({"QueueName": "bad name"}))
        .json_error("InvalidParameterValueException", "InvalidParameterValue");
    call(&sqs, "FlyToTheMoon", json!({})).json_error(
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
    );
    // A batch with one bad entry: the others are sent, the bad one listed as failed.
    let b = call(
        &sqs,
        "SendMessageBatch",
        json!({"QueueUrl": url, "Entries": [{"Id": "ok", "MessageBody": "x"}, {"Id": "bad", "MessageBody": "x", "DelaySeconds": 901}]}),
    );
    let b = b.ok();
    assert_eq!(b["Successful"][0]["Id"], json!("ok"), "{b}");
    assert_eq!(b["Failed"][0]["Id"], json!("bad"), "{b}");
    assert_eq!(
        b["Failed"][0]["Code"],
        json!("InvalidParameterValue"),
        "{b}"
    );
    assert_eq!(b["Failed"][0]["SenderFault"], json!(true), "{b}");
    // The query protocol answers errors in XML with the query code.
    let x = query(
        &sqs,
        "/",
        &[("Action", "GetQueueUrl"), ("QueueName", "nope")],
    );
    assert_eq!(x.status, 400, "{x:?}");
    assert_eq!(
        xml_text(x.xml(), "Code"),
        "AWS.SimpleQueueService.NonExistentQueue"
    );
    assert_eq!(xml_text(x.xml(), "Type"), "Sender");
    let none = query(&sqs, "/", &[]);
    assert_eq!(none.status, 400, "{none:?}");
    assert_eq!(xml_text(none.xml(), "Code"), "InvalidAction");
}

#[test]
fn query_protocol_speaks_form_and_xml() {
    let (_s, sqs) = start();
    let c = query(
        &sqs,
        "/",
        &[
            ("Action", "CreateQueue"),
            ("QueueName", "forms"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "40"),
        ],
    );
    assert_eq!(c.status, 200, "{c:?}");
    assert!(c
        .xml()
        .contains("<CreateQueueResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">"));
    let url = xml_text(c.xml(), "QueueUrl").to_string();
    let path = url.strip_prefix(&sqs).expect("same host").to_string();
    // Sent to the queue's own URL, without a QueueUrl parameter, as older SDKs do.
    let sent = query(
        &sqs,
        &path,
        &[
            ("Action", "SendMessage"),
            ("MessageBody", "a < b & c"),
            ("MessageAttribute.1.Name", "n"),
            ("MessageAttribute.1.Value.DataType", "Number"),
            ("MessageAttribute.1.Value.StringValue", "42"),
        ],
    );
    assert_eq!(sent.status, 200, "{sent:?}");
    assert_eq!(xml_text(sent.xml(), "MD5OfMessageBody").len(), 32);
    let got = query(
        &sqs,
        "/",
        &[
            ("Action", "ReceiveMessage"),
            ("QueueUrl", &url),
            ("AttributeName.1", "All"),
            ("MessageAttributeName.1", "All"),
            ("WaitTimeSeconds", "1"),
        ],
    );
    assert_eq!(got.status, 200, "{got:?}");
    let x = got.xml();
    assert_eq!(xml_text(x, "Body"), "a &lt; b &amp; c");
    assert!(
        x.contains("<Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute>"),
        "{x}"
    );
    assert!(x.contains("<MessageAttribute><Name>n</Name><Value><DataType>Number</DataType><StringValue>42</StringValue></Value></MessageAttribute>"), "{x}");
    let handle = xml_text(x, "ReceiptHandle").to_string();
    let attrs = query(
        &sqs,
        "/",
        &[
            ("Action", "GetQueueAttributes"),
            ("QueueUrl", &url),
            ("AttributeName.1", "VisibilityTimeout"),
        ],
    );
    assert!(
        attrs
            .xml()
            .contains("<Attribute><Name>VisibilityTimeout</Name><Value>40</Value></Attribute>"),
        "{attrs:?}"
    );
    let d = query(
        &sqs,
        "/",
        &[
            ("Action", "DeleteMessageBatch"),
            ("QueueUrl", &url),
            ("DeleteMessageBatchRequestEntry.1.Id", "e1"),
            ("DeleteMessageBatchRequestEntry.1.ReceiptHandle", &handle),
        ],
    );
    assert_eq!(d.status, 200, "{d:?}");
    assert!(
        d.xml()
            .contains("<DeleteMessageBatchResultEntry><Id>e1</Id></DeleteMessageBatchResultEntry>"),
        "{d:?}"
    );
    let l = query(&sqs, "/", &[("Action", "ListQueues")]);
    assert_eq!(xml_text(l.xml(), "QueueUrl"), url);
}

#[test]
fn visibility_redrive_to_dead_letters_and_back() {
    let (s, sqs) = start();
    let dlq = create(&sqs, "work-dlq", json!({}));
    let dlq_arn = attributes(&sqs, &dlq)["QueueArn"]
        .as_str()
        .expect("arn")
        .to_string();
    assert_eq!(dlq_arn, "arn:aws:sqs:us-east-1:000000000000:work-dlq");
    let policy = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}).to_string();
    let url = create(
        &sqs,
        "work",
        json!({"RedrivePolicy": policy, "VisibilityTimeout": "600"}),
    );
    let shown = attributes(&sqs, &url)["RedrivePolicy"]
        .as_str()
        .map(str::to_string);
    assert_eq!(
        serde_json::from_str::<Value>(&shown.unwrap_or_default()).ok(),
        Some(json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}))
    );
    call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "poison"}),
    )
    .ok();

    // Received, made visible at once (visibility 0), received again: count 2.
    let first = receive(&sqs, &url, 1, 5);
    assert_eq!(
        first[0]["Attributes"]["ApproximateReceiveCount"],
        json!("1")
    );
    let h1 = first[0]["ReceiptHandle"].clone();
    call(
        &sqs,
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": h1, "VisibilityTimeout": 0}),
    )
    .ok();
    let second = receive(&sqs, &url, 1, 10);
    assert_eq!(second.len(), 1, "visible again at once");
    assert_eq!(
        second[0]["Attributes"]["ApproximateReceiveCount"],
        json!("2")
    );
    // The first receipt handle no longer holds the message.
    call(
        &sqs,
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": h1, "VisibilityTimeout": 5}),
    )
    .json_error(
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    );
    // A longer visibility holds it: nothing to receive now.
    let h2 = second[0]["ReceiptHandle"].clone();
    call(
        &sqs,
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": h2, "VisibilityTimeout": 600}),
    )
    .ok();
    assert!(receive(&sqs, &url, 1, 0).is_empty());
    // Made visible after its second receive: a dead letter (maxReceiveCount 2).
    call(
        &sqs,
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": h2, "VisibilityTimeout": 0}),
    )
    .ok();
    let qp = q("default", "work", "activity");
    let deadline = std::time::Instant::now() + EVENTUALLY;
    while attributes(&sqs, &dlq)["ApproximateNumberOfMessages"] != json!("1") {
        assert!(
            std::time::Instant::now() < deadline,
            "never a dead letter: {}",
            attributes(&sqs, &dlq)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, dead) = get(&s.url(&format!("{qp}/dead-letters")));
    assert_eq!(
        dead["dead_letters"].as_array().map(Vec::len),
        Some(1),
        "{dead}"
    );
    assert!(receive(&sqs, &url, 1, 0).is_empty());

    let sources = call(&sqs, "ListDeadLetterSourceQueues", json!({"QueueUrl": dlq}));
    assert_eq!(sources.ok()["queueUrls"], json!([url]));
    // Moved back: received again, its count started over.
    let moved = call(&sqs, "StartMessageMoveTask", json!({"SourceArn": dlq_arn}));
    assert!(moved.ok()["TaskHandle"].is_string(), "{moved:?}");
    let tasks = call(&sqs, "ListMessageMoveTasks", json!({"SourceArn": dlq_arn}));
    assert_eq!(tasks.ok()["Results"][0]["Status"], json!("COMPLETED"));
    assert_eq!(
        tasks.ok()["Results"][0]["ApproximateNumberOfMessagesMoved"],
        json!(1)
    );
    let again = receive(&sqs, &url, 1, 5);
    assert_eq!(again[0]["Body"], json!("poison"));
    assert_eq!(
        again[0]["Attributes"]["ApproximateReceiveCount"],
        json!("1")
    );
    assert_eq!(
        attributes(&sqs, &dlq)["ApproximateNumberOfMessages"],
        json!("0")
    );
    // A dead-letter queue that does not exist is refused.
    let bad = json!({"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:ghost", "maxReceiveCount": 1}).to_string();
    call(
        &sqs,
        "CreateQueue",
        json!({"QueueName": "orphan", "Attributes": {"RedrivePolicy": bad}}),
    )
    .json_error("InvalidAttributeValue", "InvalidAttributeValue");
}

#[test]
fn queues_are_kept_listed_by_prefix_and_deleted() {
    let (mut s, sqs) = start();
    for name in ["alpha-1", "alpha-2", "beta-1"] {
        create(&sqs, name, json!({"DelaySeconds": "7"}));
    }
    let urls = |body: Value| call(&sqs, "ListQueues", body).ok().clone();
    let a = urls(json!({"QueueNamePrefix": "alpha"}));
    assert_eq!(a["QueueUrls"].as_array().map(Vec::len), Some(2), "{a}");
    let p1 = urls(json!({"MaxResults": 2}));
    assert_eq!(p1["QueueUrls"].as_array().map(Vec::len), Some(2), "{p1}");
    let p2 = urls(json!({"MaxResults": 2, "NextToken": p1["NextToken"]}));
    assert_eq!(
        p2["QueueUrls"],
        json!([format!("{sqs}/000000000000/beta-1")]),
        "{p2}"
    );
    assert!(p2.get("NextToken").is_none(), "{p2}");
    // The same attributes: the same queue; others: an error.
    create(&sqs, "alpha-1", json!({"DelaySeconds": "7"}));
    call(
        &sqs,
        "CreateQueue",
        json!({"QueueName": "alpha-1", "Attributes": {"DelaySeconds": "8"}}),
    )
    .json_error("QueueNameExists", "QueueAlreadyExists");

    s.restart();
    let sqs = s.sqs_base();
    let url = call(&sqs, "GetQueueUrl", json!({"QueueName": "alpha-2"})).ok()["QueueUrl"].clone();
    assert_eq!(
        attributes(&sqs, url.as_str().unwrap_or_default())["DelaySeconds"],
        json!("7")
    );
    call(&sqs, "DeleteQueue", json!({"QueueUrl": url})).ok();
    call(&sqs, "GetQueueUrl", json!({"QueueName": "alpha-2"})).json_error(
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    );
    call(&sqs, "CreateQueue", json!({"QueueName": "alpha-2"})).json_error(
        "QueueDeletedRecently",
        "AWS.SimpleQueueService.QueueDeletedRecently",
    );
}

#[test]
fn fifo_deduplicates_and_purge_empties() {
    let (_s, sqs) = start();
    call(&sqs, "CreateQueue", json!({"QueueName": "jobs.fifo"}))
        .json_error("InvalidParameterValueException", "InvalidParameterValue");
    let url = create(
        &sqs,
        "jobs.fifo",
        json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
    );
    call(
        &sqs,
        "SendMessage",
        json!({"QueueUrl": url, "MessageBody": "x"}),
    )
    .json_error("MissingRequiredParameterException", "MissingParameter");
    let send = |body: &str| {
        call(
            &sqs,
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body, "MessageGroupId": "g1"}),
        )
        .ok()
        .clone()
    };
    let (a, b, c) = (send("same"), send("same"), send("other"));
    assert_eq!(
        a["MessageId"], b["MessageId"],
        "one message per deduplication id"
    );
    assert_ne!(a["MessageId"], c["MessageId"]);
    assert_eq!(a["SequenceNumber"].as_str().map(str::len), Some(20), "{a}");
    assert_eq!(
        attributes(&sqs, &url)["ApproximateNumberOfMessages"],
        json!("2")
    );
    assert_eq!(attributes(&sqs, &url)["FifoQueue"], json!("true"));

    call(&sqs, "PurgeQueue", json!({"QueueUrl": url})).ok();
    assert_eq!(
        attributes(&sqs, &url)["ApproximateNumberOfMessages"],
        json!("0")
    );
    assert!(receive(&sqs, &url, 10, 0).is_empty());
    call(&sqs, "PurgeQueue", json!({"QueueUrl": url})).json_error_status(
        403,
        "PurgeQueueInProgress",
        "AWS.SimpleQueueService.PurgeQueueInProgress",
    );
}

#[test]
fn with_auth_on_an_unsigned_request_is_refused() {
    let (_key, entry) = hand_key("sqs-user", &["*"], &["producer", "worker", "admin"]);
    let cfg = format!(
        "{}\n[sqs]\nenabled = true\nbind = \"127.0.0.1:0\"\n\n[[sqs.credentials]]\naccess_key_id = \"AKIATESTTESTTEST0001\"\nsecret_access_key = \"secret-secret-secret-1\"\nkey = \"sqs-user\"\n",
        auth_config("", &[&entry], "")
    );
    let (s, _dir, _path) = start_with_config(&cfg);
    let sqs = s.sqs_base();
    let a = call(&sqs, "ListQueues", json!({}));
    assert_eq!(a.status, 403, "{a:?}");
    assert_eq!(
        a.query_error.as_deref(),
        Some("InvalidClientTokenId;Sender"),
        "{a:?}"
    );
    let forged = finish(
        ureq::post(&format!("{sqs}/"))
            .set("X-Amz-Target", "AmazonSQS.ListQueues")
            .set("X-Amz-Date", "20261207T000000Z")
            .set(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIATESTTESTTEST0001/20261207/us-east-1/sqs/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
            )
            .send_string("{}"),
    );
    assert_eq!(forged.status, 403, "{forged:?}");
    let code = forged.query_error.unwrap_or_default();
    assert!(code.starts_with("SignatureDoesNotMatch"), "{code}");
}

#[test]
fn a_fifo_group_gives_one_message_at_a_time_in_order() {
    let (s, sqs) = start();
    let url = create(
        &sqs,
        "serial.fifo",
        json!({"FifoQueue": "true", "ContentBasedDeduplication": "true"}),
    );
    for (group, body) in [("g1", "a1"), ("g1", "a2"), ("g1", "a3"), ("g2", "b1")] {
        call(
            &sqs,
            "SendMessage",
            json!({"QueueUrl": url, "MessageBody": body, "MessageGroupId": group}),
        )
        .ok();
    }
    let bodies = |msgs: &[Value]| {
        let mut b: Vec<String> = msgs
            .iter()
            .map(|m| m["Body"].as_str().unwrap_or_default().to_string())
            .collect();
        b.sort();
        b
    };
    // One of each group, the first of each: g1's a2 waits while a1 is in flight.
    let first = receive(&sqs, &url, 10, 1);
    assert_eq!(bodies(&first), ["a1", "b1"]);
    assert!(
        receive(&sqs, &url, 10, 0).is_empty(),
        "g1 is held while a1 runs"
    );
    // Over tasq's API, a2 says why it waits.
    let qp = q("default", "serial.fifo", "activity");
    let (_, pending) = get(&s.url(&format!("{qp}/tasks")));
    let a2 = pending["tasks"][0]["task_id"]
        .as_str()
        .expect("a2")
        .to_string();
    let (_, why) = get(&s.url(&format!("{qp}/tasks/{a2}/explain")));
    assert_eq!(why["reasons"][0]["code"], json!("key_in_flight"), "{why}");
    assert_eq!(why["reasons"][0]["key"], json!("g1"), "{why}");
    let a1 = first
        .iter()
        .find(|m| m["Body"] == json!("a1"))
        .expect("a1")
        .clone();
    // a1 made visible again: it comes back before a2, its count 2.
    call(
        &sqs,
        "ChangeMessageVisibility",
        json!({"QueueUrl": url, "ReceiptHandle": a1["ReceiptHandle"], "VisibilityTimeout": 0}),
    )
    .ok();
    let again = receive(&sqs, &url, 10, 10);
    assert_eq!(bodies(&again), ["a1"]);
    assert_eq!(
        again[0]["Attributes"]["ApproximateReceiveCount"],
        json!("2")
    );
    call(
        &sqs,
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": again[0]["ReceiptHandle"]}),
    )
    .ok();
    let next = receive(&sqs, &url, 10, 5);
    assert_eq!(bodies(&next), ["a2"], "after a1 is deleted, a2 and only a2");
    call(
        &sqs,
        "DeleteMessage",
        json!({"QueueUrl": url, "ReceiptHandle": next[0]["ReceiptHandle"]}),
    )
    .ok();
    assert_eq!(bodies(&receive(&sqs, &url, 10, 5)), ["a3"]);
}
