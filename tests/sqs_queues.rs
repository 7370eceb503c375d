//! The SQS endpoint's queues over real HTTP against the real binary: visibility, redrive to
//! dead letters and back, queues kept across a restart and listed by prefix, FIFO
//! deduplication and one message of a group at a time, purge, and a signature required with
//! auth on. (Protocols and errors: tests/sqs.rs.)

mod common;

use common::auth::*;
use common::sqs::*;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

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
