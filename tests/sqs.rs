//! The SQS-compatible endpoint over real HTTP against the real binary (`[sqs] enabled`): both
//! protocols (AWS JSON 1.0 and the query protocol's form requests and XML answers), messages
//! as tasq tasks and back, and the error codes SDKs map to exceptions, checked against what SQS
//! documents. (Queues, visibility, redrive, FIFO and auth: tests/sqs_queues.rs; boto3, the AWS
//! CLI and Celery drive the same endpoint in tests/sqs_clients/.)

mod common;

use common::sqs::*;
use common::*;
use serde_json::{json, Value};

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
