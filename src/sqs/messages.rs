//! Messages: send (one or a batch), receive, delete (one or a batch), change visibility (one
//! or a batch). A message is a tasq task of type `sqs` in the queue of the same name: the body
//! is its payload (a JSON string), the receipt handle its lease, the visibility timeout its
//! lease length, the receive count its attempt, the message group its fairness key, and the
//! message attributes travel in its headers. A task added over tasq's own API is received
//! with its payload's JSON text as the body.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::attributes::QueueAttrs;
use super::error::SqsError;
use super::md5::{self, AttrValue};
use super::protocol::Params;
use super::{SqsQueue, State};
use crate::auth::hex;
use crate::clock::parse_rfc3339;
use crate::error::Error;
use crate::model::{LeaseToken, RetryPolicy};
use crate::service::{PollSpec, TaskSpec};

/// The task type of messages sent over SQS.
pub const TASK_TYPE: &str = "sqs";
/// Header: the message attributes, as JSON (`{"name": {"DataType", "StringValue" |
/// "BinaryValue"}}`).
const H_ATTRIBUTES: &str = "sqs-message-attributes";
/// Header: the message system attributes (`AWSTraceHeader`), as JSON.
const H_SYSTEM: &str = "sqs-system-attributes";
/// Header: the message group id, as sent.
const H_GROUP: &str = "sqs-message-group-id";
/// Header: the deduplication id, as sent or derived from the body.
const H_DEDUP: &str = "sqs-message-deduplication-id";

/// `SendMessage`.
pub async fn send(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    send_entry(state, &queue, p).await
}

/// `SendMessageBatch`: each entry sent on its own; one that fails is listed in `Failed`.
pub async fn send_batch(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let entries = p.entries()?;
    let total: usize = entries
        .iter()
        .map(|(_, e)| e.str("MessageBody").map_or(0, str::len))
        .sum();
    if total > queue.attrs.max_message_size as usize {
        return Err(SqsError::batch_too_long(
            total,
            queue.attrs.max_message_size as usize,
        ));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (id, entry) in entries {
        match send_entry(state, &queue, &entry).await {
            Ok(Value::Object(mut m)) => {
                m.insert("Id".into(), Value::String(id));
                ok.push(Value::Object(m));
            }
            Ok(_) => {}
            Err(e) => failed.push(batch_error(&id, &e)),
        }
    }
    Ok(json!({ "Successful": ok, "Failed": failed }))
}

/// One entry of a batch that failed.
pub fn batch_error(id: &str, e: &SqsError) -> Value {
    json!({"Id": id, "SenderFault": e.sender, "Code": e.code, "Message": e.message})
}

async fn send_entry(state: &State, queue: &SqsQueue, p: &Params) -> Result<Value, SqsError> {
    let body = p.required("MessageBody")?;
    check_body(body)?;
    let attrs = message_attributes(&p.object_map("MessageAttributes")?)?;
    let system = message_attributes(&p.object_map("MessageSystemAttributes")?)?;
    let size = body.len() + attrs.iter().map(attr_size).sum::<usize>();
    if size > queue.attrs.max_message_size as usize {
        return Err(SqsError::invalid(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
            queue.attrs.max_message_size
        )));
    }
    let a = &queue.attrs;
    let delay = p.int("DelaySeconds", 0, 900)?;
    let group = p.str("MessageGroupId").filter(|g| !g.is_empty());
    let mut dedup = p.str("MessageDeduplicationId").map(str::to_string);
    if a.fifo {
        if delay.is_some() {
            return Err(SqsError::invalid(
                "Value for parameter DelaySeconds is invalid. Reason: The request include \
                 parameter that is not valid for this queue type.",
            ));
        }
        if group.is_none() {
            return Err(SqsError::missing("MessageGroupId"));
        }
        if dedup.is_none() {
            if !a.content_dedup {
                return Err(SqsError::invalid(
                    "The queue should either have ContentBasedDeduplication enabled or \
                     MessageDeduplicationId provided explicitly",
                ));
            }
            dedup = Some(hex(&Sha256::digest(body.as_bytes())));
        }
    } else if dedup.is_some() {
        return Err(SqsError::invalid(
            "Value for parameter MessageDeduplicationId is invalid. Reason: The request \
             includes a parameter that is not valid for this queue type.",
        ));
    }
    for (label, v) in [
        ("MessageGroupId", group),
        ("MessageDeduplicationId", dedup.as_deref()),
    ] {
        if let Some(v) = v {
            check_id(label, v)?;
        }
    }

    let lease = Duration::from_secs(u64::from(a.visibility_timeout)).max(MIN_LEASE);
    let mut spec = TaskSpec::new(TASK_TYPE)
        .payload(Value::String(body.to_string()))
        .start_to_close_timeout(lease)
        .retry(retry_policy(a))
        .delay(Duration::from_secs(
            delay.map_or(u64::from(a.delay_seconds), |d| d as u64),
        ));
    if let Some(g) = group {
        spec = spec.fairness(fairness_key(g), 1.0).header(H_GROUP, g);
    }
    if a.fifo {
        // One message of a group at a time, in order, a message made visible again first.
        spec = spec.serial();
    }
    if let Some(d) = &dedup {
        // One message per deduplication id: the id names the task, so a second send is
        // answered as the first (tasq keeps the id while the task is kept, longer than the
        // five minutes SQS promises).
        spec = spec.task_id(uuid_of(d)).header(H_DEDUP, d.as_str());
    }
    if !attrs.is_empty() {
        spec = spec.header(H_ATTRIBUTES, attributes_json(&attrs).to_string());
    }
    if !system.is_empty() {
        spec = spec.header(H_SYSTEM, attributes_json(&system).to_string());
    }
    let added = state.tasq.add(&queue.key, spec).await?;
    let mut out = Map::new();
    out.insert("MessageId".into(), Value::String(added.task_id.clone()));
    out.insert(
        "MD5OfMessageBody".into(),
        Value::String(md5::digest_hex(body.as_bytes())),
    );
    if !attrs.is_empty() {
        out.insert(
            "MD5OfMessageAttributes".into(),
            Value::String(attrs_md5(&attrs)),
        );
    }
    if !system.is_empty() {
        out.insert(
            "MD5OfMessageSystemAttributes".into(),
            Value::String(attrs_md5(&system)),
        );
    }
    if a.fifo {
        out.insert(
            "SequenceNumber".into(),
            Value::String(sequence_number(&added.task_id)),
        );
    }
    Ok(Value::Object(out))
}

/// The shortest lease tasq gives (a visibility timeout of 0 s means "visible again at once").
const MIN_LEASE: Duration = Duration::from_millis(100);

/// A message becomes visible again the moment its visibility timeout ends (SQS has no
/// backoff); with a redrive policy, it is a dead letter after `maxReceiveCount` receives.
fn retry_policy(a: &QueueAttrs) -> RetryPolicy {
    RetryPolicy {
        max_attempts: a.redrive_policy.as_ref().map_or(0, |p| p.max_receive_count),
        initial_interval_ms: 1,
        backoff_coefficient: 1.0,
        maximum_interval_ms: 1,
    }
}

/// A message group id as a tasq fairness key: itself when it is a valid name, otherwise a
/// digest of it (group ids may hold punctuation tasq names do not).
fn fairness_key(group: &str) -> String {
    if crate::model::validate_name("fairness_key", group).is_ok() {
        group.to_string()
    } else {
        format!("g-{}", &hex(&Sha256::digest(group.as_bytes()))[..32])
    }
}

/// A deduplication id as a task id that looks like a message id (a UUID's layout).
fn uuid_of(dedup: &str) -> String {
    let h = hex(&Sha256::digest(dedup.as_bytes()));
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A FIFO message's sequence number: 20 digits from its id (stable for a duplicate).
fn sequence_number(task_id: &str) -> String {
    let d = Sha256::digest(task_id.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
    format!("{:020}", n % 10u64.pow(19))
}

/// SQS's character set: tab, line feed, carriage return, and U+0020 up, but the surrogates
/// and U+FFFE, U+FFFF.
fn check_body(body: &str) -> Result<(), SqsError> {
    match body.chars().find(|&c| {
        !matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }) {
        None => Ok(()),
        Some(c) => Err(SqsError::message_contents(format!(
            "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to \
             #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF; found U+{:04X}.",
            c as u32
        ))),
    }
}

/// A group or deduplication id: 1–128 printable ASCII characters.
fn check_id(label: &str, v: &str) -> Result<(), SqsError> {
    if v.is_empty() || v.len() > 128 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(SqsError::invalid(format!(
            "Value {v} for parameter {label} is invalid. Reason: it must be 1 to 128 \
             alphanumeric or punctuation characters."
        )));
    }
    Ok(())
}

/// One message attribute: name, data type, value.
type Attr = (String, String, AttrValue);

fn attr_size((name, ty, v): &Attr) -> usize {
    name.len()
        + ty.len()
        + match v {
            AttrValue::Text(s) => s.len(),
            AttrValue::Binary(b) => b.len(),
        }
}

fn attrs_md5(attrs: &[Attr]) -> String {
    md5::of_attributes(attrs.iter().map(|(n, t, v)| (n.as_str(), t.as_str(), v)))
}

/// Checks message attributes as SQS does: at most 10; names of `A–Z a–z 0–9 _ - .`, not
/// starting `AWS.` or `Amazon.`; types `String`, `Number`, `Binary` (each with an optional
/// `.custom` suffix) and a value of that type.
fn message_attributes(m: &Map<String, Value>) -> Result<Vec<Attr>, SqsError> {
    if m.len() > 10 {
        return Err(SqsError::invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [10].",
            m.len()
        )));
    }
    let mut out = Vec::with_capacity(m.len());
    for (name, v) in m {
        let lower = name.to_ascii_lowercase();
        let name_ok = !name.is_empty()
            && name.len() <= 256
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && !lower.starts_with("aws.")
            && !lower.starts_with("amazon.");
        if !name_ok {
            return Err(SqsError::invalid(format!(
                "Message attribute name '{name}' is invalid: 1-256 of A-Z a-z 0-9 _ - . , not \
                 starting with AWS. or Amazon."
            )));
        }
        let field = |f: &str| v.get(f).and_then(Value::as_str);
        let ty = field("DataType").filter(|t| !t.is_empty()).ok_or_else(|| {
            SqsError::invalid(format!(
                "The message attribute '{name}' must contain a non-empty attribute type."
            ))
        })?;
        let base = ty.split('.').next().unwrap_or_default();
        let value = match base {
            "String" | "Number" => {
                let s = field("StringValue")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        SqsError::invalid(format!(
                            "The message attribute '{name}' must contain a non-empty message \
                         attribute value for message attribute type '{ty}'."
                        ))
                    })?;
                if base == "Number" && s.trim().parse::<f64>().is_err() {
                    return Err(SqsError::invalid(format!(
                        "Can't cast the value of message (user) attribute '{name}' to a number."
                    )));
                }
                check_body(s)?;
                AttrValue::Text(s.to_string())
            }
            "Binary" => {
                let b = field("BinaryValue").unwrap_or_default();
                let bytes = STANDARD.decode(b).map_err(|_| {
                    SqsError::invalid(format!(
                        "The message attribute '{name}' has a BinaryValue that is not base64."
                    ))
                })?;
                if bytes.is_empty() {
                    return Err(SqsError::invalid(format!(
                        "The message attribute '{name}' must contain a non-empty message \
                         attribute value for message attribute type '{ty}'."
                    )));
                }
                AttrValue::Binary(bytes)
            }
            _ => {
                return Err(SqsError::invalid(format!(
                    "The type of message (user) attribute '{name}' is invalid. You must use \
                     only the following supported type prefixes: Binary, Number, String."
                )))
            }
        };
        out.push((name.clone(), ty.to_string(), value));
    }
    Ok(out)
}

/// Attributes as the JSON protocol writes them.
fn attributes_json(attrs: &[Attr]) -> Value {
    let mut m = Map::new();
    for (name, ty, v) in attrs {
        let value = match v {
            AttrValue::Text(s) => json!({"DataType": ty, "StringValue": s}),
            AttrValue::Binary(b) => json!({"DataType": ty, "BinaryValue": STANDARD.encode(b)}),
        };
        m.insert(name.clone(), value);
    }
    Value::Object(m)
}

/// Attributes read back from a task's header.
fn attributes_from(text: Option<&String>) -> Vec<Attr> {
    let Some(Value::Object(m)) = text.and_then(|t| serde_json::from_str(t).ok()) else {
        return Vec::new();
    };
    message_attributes(&m).unwrap_or_default()
}

/// `ReceiveMessage`: a long poll of the queue for 1–10 messages, at most `WaitTimeSeconds`
/// (0–20; default the queue's `ReceiveMessageWaitTimeSeconds`), answered as soon as one is
/// there.
pub async fn receive(state: &State, p: &Params, identity: &str) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let a = &queue.attrs;
    let max = p.int("MaxNumberOfMessages", 1, 10)?.unwrap_or(1) as u32;
    let wait = p
        .int("WaitTimeSeconds", 0, 20)?
        .map_or(u64::from(a.receive_wait), |w| w as u64);
    let visibility = p.int("VisibilityTimeout", 0, 43_200)?;
    let mut wanted = p.list("AttributeNames");
    wanted.extend(p.list("MessageSystemAttributeNames"));
    let attr_names = p.list("MessageAttributeNames");
    let all_system = wanted.iter().any(|n| n == "All");
    let spec = PollSpec::new(identity)
        .max_tasks(max)
        .wait(Duration::from_secs(wait));
    let tasks = state.tasq.poll(&queue.key, spec).await?;
    let lease_ms = visibility.map_or(u64::from(a.visibility_timeout), |v| v as u64) * 1000;
    let mut messages = Vec::with_capacity(tasks.len());
    for t in tasks {
        // A visibility asked for now, or a queue whose visibility changed since the send.
        if visibility.is_some() || t.start_to_close_timeout_ms != lease_ms.max(100) {
            match state
                .tasq
                .set_lease_end(&t.lease, Duration::from_millis(lease_ms))
                .await
            {
                Ok(_) | Err(Error::LeaseLost(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let body = match serde_json::from_str::<Value>(t.payload.get()) {
            Ok(Value::String(s)) => s,
            _ => t.payload.get().to_string(),
        };
        let mut system = BTreeMap::new();
        system.insert("SenderId", state.settings.account_id.clone());
        if let Some(ms) = parse_rfc3339(&t.added_at) {
            system.insert("SentTimestamp", ms.to_string());
        }
        system.insert("ApproximateReceiveCount", t.attempt.to_string());
        if t.attempt == 1 {
            if let Some(ms) = parse_rfc3339(&t.dispatched_at) {
                system.insert("ApproximateFirstReceiveTimestamp", ms.to_string());
            }
        }
        if let Some(g) = t.headers.get(H_GROUP) {
            system.insert("MessageGroupId", g.clone());
        }
        if let Some(d) = t.headers.get(H_DEDUP) {
            system.insert("MessageDeduplicationId", d.clone());
            system.insert("SequenceNumber", sequence_number(&t.task_id));
        }
        for (name, _, v) in attributes_from(t.headers.get(H_SYSTEM)) {
            if let AttrValue::Text(s) = v {
                if name == "AWSTraceHeader" {
                    system.insert("AWSTraceHeader", s);
                }
            }
        }
        let shown: Map<String, Value> = system
            .into_iter()
            .filter(|(k, _)| all_system || wanted.iter().any(|n| n == k))
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        let attrs: Vec<Attr> = attributes_from(t.headers.get(H_ATTRIBUTES))
            .into_iter()
            .filter(|(name, _, _)| attribute_wanted(&attr_names, name))
            .collect();
        let mut m = Map::new();
        m.insert("MessageId".into(), Value::String(t.task_id.clone()));
        m.insert("ReceiptHandle".into(), Value::String(t.lease.clone()));
        m.insert(
            "MD5OfBody".into(),
            Value::String(md5::digest_hex(body.as_bytes())),
        );
        m.insert("Body".into(), Value::String(body));
        if !shown.is_empty() {
            m.insert("Attributes".into(), Value::Object(shown));
        }
        if !attrs.is_empty() {
            m.insert(
                "MD5OfMessageAttributes".into(),
                Value::String(attrs_md5(&attrs)),
            );
            m.insert("MessageAttributes".into(), attributes_json(&attrs));
        }
        messages.push(Value::Object(m));
    }
    Ok(if messages.is_empty() {
        json!({})
    } else {
        json!({ "Messages": messages })
    })
}

/// `All`, `.*`, a `prefix.*`, or the name itself.
fn attribute_wanted(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == "All"
            || n == ".*"
            || n == name
            || n.strip_suffix(".*")
                .is_some_and(|p| name.starts_with(&format!("{p}.")))
    })
}

/// `DeleteMessage`: completes the lease. A receipt handle this server never gave is
/// `ReceiptHandleIsInvalid`; one whose message was received again since (or is gone) is
/// accepted and changes nothing, as SQS does.
pub async fn delete(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    delete_one(state, &queue, p.required("ReceiptHandle")?).await?;
    Ok(json!({}))
}

/// Checks that `handle` is a receipt handle of `queue`'s.
fn check_handle(queue: &SqsQueue, handle: &str) -> Result<(), SqsError> {
    match LeaseToken::decode(handle) {
        Ok(t) if t.queue == queue.key => Ok(()),
        _ => Err(SqsError::receipt_handle(handle)),
    }
}

async fn delete_one(state: &State, queue: &SqsQueue, handle: &str) -> Result<(), SqsError> {
    check_handle(queue, handle)?;
    match state.tasq.complete(handle, Value::Null).await {
        Ok(_) | Err(Error::LeaseLost(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `DeleteMessageBatch`.
pub async fn delete_batch(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (id, entry) in p.entries()? {
        let r = match entry.required("ReceiptHandle") {
            Ok(h) => delete_one(state, &queue, h).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => ok.push(json!({ "Id": id })),
            Err(e) => failed.push(batch_error(&id, &e)),
        }
    }
    Ok(json!({ "Successful": ok, "Failed": failed }))
}

/// `ChangeMessageVisibility`: the message stays hidden `VisibilityTimeout` (0–43200) seconds
/// from now; 0 makes it visible at once.
pub async fn change_visibility(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    change_one(state, &queue, p).await?;
    Ok(json!({}))
}

async fn change_one(state: &State, queue: &SqsQueue, p: &Params) -> Result<(), SqsError> {
    let handle = p.required("ReceiptHandle")?;
    check_handle(queue, handle)?;
    let secs = p
        .int("VisibilityTimeout", 0, 43_200)?
        .ok_or_else(|| SqsError::missing("VisibilityTimeout"))?;
    match state
        .tasq
        .set_lease_end(handle, Duration::from_secs(secs as u64))
        .await
    {
        Ok(_) => Ok(()),
        Err(Error::LeaseLost(_)) => Err(SqsError::not_inflight()),
        Err(e) => Err(e.into()),
    }
}

/// `ChangeMessageVisibilityBatch`.
pub async fn change_visibility_batch(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for (id, entry) in p.entries()? {
        match change_one(state, &queue, &entry).await {
            Ok(()) => ok.push(json!({ "Id": id })),
            Err(e) => failed.push(batch_error(&id, &e)),
        }
    }
    Ok(json!({ "Successful": ok, "Failed": failed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_attributes_are_checked() {
        assert!(check_body("hello\tworld\n").is_ok());
        assert_eq!(
            check_body("a\u{1}b").unwrap_err().code,
            "InvalidMessageContents"
        );
        let m = |v: Value| v.as_object().cloned().unwrap_or_default();
        let ok = message_attributes(&m(json!({
            "n": {"DataType": "Number", "StringValue": "1.5"},
            "b": {"DataType": "Binary.raw", "BinaryValue": "AAE="},
        })))
        .expect("valid");
        assert_eq!(ok.len(), 2);
        for bad in [
            json!({"AWS.x": {"DataType": "String", "StringValue": "v"}}),
            json!({"n": {"DataType": "Number", "StringValue": "one"}}),
            json!({"s": {"DataType": "String"}}),
            json!({"s": {"DataType": "Text", "StringValue": "v"}}),
            json!({"b": {"DataType": "Binary", "BinaryValue": "%%"}}),
        ] {
            assert_eq!(
                message_attributes(&m(bad.clone())).unwrap_err().code,
                "InvalidParameterValue",
                "{bad}"
            );
        }
    }

    #[test]
    fn names_and_ids() {
        assert!(attribute_wanted(&["All".into()], "x"));
        assert!(attribute_wanted(&["a.*".into()], "a.b"));
        assert!(!attribute_wanted(&["a.*".into()], "ab"));
        assert!(!attribute_wanted(&[], "x"));
        assert_eq!(fairness_key("tenant-1"), "tenant-1");
        assert!(fairness_key("a/b").starts_with("g-"));
        assert_eq!(uuid_of("x").len(), 36);
        assert_eq!(sequence_number("t"), sequence_number("t"));
        assert_eq!(sequence_number("t").len(), 20);
    }
}
