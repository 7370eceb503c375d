//! An SQS queue's attributes: what `CreateQueue` and `SetQueueAttributes` may set (checked
//! against the ranges SQS documents), how they are kept (JSON, stored with the tasq queue),
//! and how `GetQueueAttributes` shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::SqsError;

/// The largest message, in bytes (SQS's limit).
pub const MAX_MESSAGE_BYTES: u32 = 262_144;

/// A queue's attributes as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueAttrs {
    /// Seconds a received message stays hidden (its lease), 0–43200.
    pub visibility_timeout: u32,
    /// Seconds a new message waits before it can be received, 0–900.
    pub delay_seconds: u32,
    /// Seconds a message is kept, 60–1209600 (reported; tasq keeps messages until deleted).
    pub retention_period: u32,
    /// Largest message body and attributes, 1024–262144 bytes.
    pub max_message_size: u32,
    /// Default long-poll wait of a receive, 0–20 s.
    pub receive_wait: u32,
    /// The redrive policy as given (JSON text), if any.
    pub redrive_policy: Option<RedrivePolicy>,
    /// A FIFO queue (name ends `.fifo`).
    pub fifo: bool,
    /// FIFO: the body's SHA-256 is the deduplication id when none is sent.
    pub content_dedup: bool,
    /// When the queue was made and last changed (epoch seconds).
    pub created: u64,
    /// See `created`.
    pub modified: u64,
    /// Attributes kept and shown as given (Policy, RedriveAllowPolicy, KMS and SSE settings,
    /// FIFO throughput settings): tasq has no use for them.
    pub other: BTreeMap<String, String>,
    /// Cost-allocation tags.
    pub tags: BTreeMap<String, String>,
}

/// Where a message goes after `max_receive_count` receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    /// The dead-letter queue's ARN.
    pub dead_letter_target_arn: String,
    /// Receives before a message is a dead letter, 1–1000.
    pub max_receive_count: u32,
}

impl Default for QueueAttrs {
    fn default() -> Self {
        QueueAttrs {
            visibility_timeout: 30,
            delay_seconds: 0,
            retention_period: 345_600,
            max_message_size: MAX_MESSAGE_BYTES,
            receive_wait: 0,
            redrive_policy: None,
            fifo: false,
            content_dedup: false,
            created: 0,
            modified: 0,
            other: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }
}

/// Attributes kept as given.
const OTHER: [&str; 7] = [
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// Attributes that only a FIFO queue has.
const FIFO_ONLY: [&str; 3] = [
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// Every attribute `GetQueueAttributes` may name.
pub const READABLE: [&str; 21] = [
    "All",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "QueueArn",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "Policy",
    "RedriveAllowPolicy",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "DeduplicationScope",
];

fn seconds(name: &str, value: &str, min: u32, max: u32) -> Result<u32, SqsError> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .ok_or_else(|| {
            SqsError::attribute_value(format!(
                "Invalid value for the parameter {name}. Reason: must be an integer from {min} to {max}."
            ))
        })
}

fn boolean(name: &str, value: &str) -> Result<bool, SqsError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqsError::attribute_value(format!(
            "Invalid value for the parameter {name}. Reason: must be true or false."
        ))),
    }
}

impl QueueAttrs {
    /// Applies `set` (attribute name → value). `creating`: `FifoQueue` may be given (and
    /// must agree with `fifo_name`, the queue name's `.fifo` suffix). A redrive policy's
    /// dead-letter queue is checked by the caller ([`QueueAttrs::redrive_policy`]).
    pub fn apply(
        &mut self,
        set: &BTreeMap<String, String>,
        creating: bool,
        fifo_name: bool,
    ) -> Result<(), SqsError> {
        if creating {
            let fifo = match set.get("FifoQueue") {
                Some(v) => boolean("FifoQueue", v)?,
                None => false,
            };
            if fifo != fifo_name {
                return Err(SqsError::invalid(
                    "The name of a FIFO queue must end with the .fifo suffix, and only a FIFO \
                     queue (FifoQueue = true) may have a name that ends with it.",
                ));
            }
            self.fifo = fifo;
        }
        for (name, value) in set {
            match name.as_str() {
                "VisibilityTimeout" => self.visibility_timeout = seconds(name, value, 0, 43_200)?,
                "DelaySeconds" => self.delay_seconds = seconds(name, value, 0, 900)?,
                "MessageRetentionPeriod" => {
                    self.retention_period = seconds(name, value, 60, 1_209_600)?
                }
                "MaximumMessageSize" => {
                    self.max_message_size = seconds(name, value, 1024, MAX_MESSAGE_BYTES)?
                }
                "ReceiveMessageWaitTimeSeconds" => self.receive_wait = seconds(name, value, 0, 20)?,
                "RedrivePolicy" => self.redrive_policy = parse_redrive(value)?,
                "FifoQueue" if creating => {}
                "FifoQueue" => {
                    return Err(SqsError::attribute_value(
                        "Invalid value for the parameter FifoQueue. Reason: a queue's type cannot change.",
                    ))
                }
                n if FIFO_ONLY.contains(&n) && !self.fifo => {
                    return Err(SqsError::attribute_name(n))
                }
                "ContentBasedDeduplication" => self.content_dedup = boolean(name, value)?,
                n if OTHER.contains(&n) => {
                    self.other.insert(n.to_string(), value.clone());
                }
                n => return Err(SqsError::attribute_name(n)),
            }
        }
        Ok(())
    }

    /// The attributes `names` asks for (`All`: every one), shown as SQS shows them; `counts`
    /// gives the three message counts and `arn` the queue's ARN.
    pub fn show(
        &self,
        names: &[String],
        counts: [u64; 3],
        arn: &str,
    ) -> Result<BTreeMap<String, String>, SqsError> {
        if let Some(bad) = names.iter().find(|n| !READABLE.contains(&n.as_str())) {
            return Err(SqsError::attribute_name(bad));
        }
        let all = names.iter().any(|n| n == "All");
        let mut out = BTreeMap::new();
        let mut put = |name: &str, value: String| {
            if all || names.iter().any(|n| n == name) {
                out.insert(name.to_string(), value);
            }
        };
        put("ApproximateNumberOfMessages", counts[0].to_string());
        put(
            "ApproximateNumberOfMessagesNotVisible",
            counts[1].to_string(),
        );
        put("ApproximateNumberOfMessagesDelayed", counts[2].to_string());
        put("CreatedTimestamp", self.created.to_string());
        put("LastModifiedTimestamp", self.modified.to_string());
        put("QueueArn", arn.to_string());
        put("VisibilityTimeout", self.visibility_timeout.to_string());
        put("MaximumMessageSize", self.max_message_size.to_string());
        put("MessageRetentionPeriod", self.retention_period.to_string());
        put("DelaySeconds", self.delay_seconds.to_string());
        put(
            "ReceiveMessageWaitTimeSeconds",
            self.receive_wait.to_string(),
        );
        if let Some(p) = &self.redrive_policy {
            put(
                "RedrivePolicy",
                serde_json::json!({
                    "deadLetterTargetArn": p.dead_letter_target_arn,
                    "maxReceiveCount": p.max_receive_count,
                })
                .to_string(),
            );
        }
        if self.fifo {
            put("FifoQueue", "true".into());
            put("ContentBasedDeduplication", self.content_dedup.to_string());
        }
        put(
            "SqsManagedSseEnabled",
            self.other
                .get("SqsManagedSseEnabled")
                .cloned()
                .unwrap_or_else(|| "false".into()),
        );
        for (k, v) in &self.other {
            put(k, v.clone());
        }
        Ok(out)
    }

    /// True when `set` (a `CreateQueue`'s attributes) names nothing that differs from these.
    pub fn agrees_with(&self, set: &BTreeMap<String, String>, fifo_name: bool) -> bool {
        let mut probe = self.clone();
        probe.apply(set, true, fifo_name).is_ok() && {
            probe.created = self.created;
            probe.modified = self.modified;
            probe.tags = self.tags.clone();
            probe == *self
        }
    }
}

/// A `RedrivePolicy` value: JSON with `deadLetterTargetArn` and `maxReceiveCount` (1–1000,
/// a number or a string of one); empty removes the policy.
fn parse_redrive(text: &str) -> Result<Option<RedrivePolicy>, SqsError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        SqsError::attribute_value(format!(
            "Value {text} for parameter RedrivePolicy is invalid. Reason: {why}"
        ))
    };
    let v: Value = serde_json::from_str(text).map_err(|_| bad("it is not JSON."))?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .filter(|a| a.starts_with("arn:"))
        .ok_or_else(|| bad("deadLetterTargetArn must be a queue ARN."))?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| bad("maxReceiveCount must be an integer from 1 to 1000."))?;
    Ok(Some(RedrivePolicy {
        dead_letter_target_arn: arn.to_string(),
        max_receive_count: count as u32,
    }))
}

/// Checks an SQS queue name: 1–80 of `A–Z a–z 0–9 - _`, a FIFO queue's ending `.fifo`.
/// Answers whether it is a FIFO queue's name.
pub fn check_name(name: &str) -> Result<bool, SqsError> {
    let (base, fifo) = match name.strip_suffix(".fifo") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let ok = !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(fifo)
    } else {
        Err(SqsError::invalid(
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length \
             (a FIFO queue's name ends with .fifo).",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_names_and_fifo_are_checked() {
        let mut a = QueueAttrs::default();
        a.apply(
            &set(&[("VisibilityTimeout", "45"), ("DelaySeconds", "3")]),
            true,
            false,
        )
        .expect("valid");
        assert_eq!((a.visibility_timeout, a.delay_seconds), (45, 3));
        let code = |s: &[(&str, &str)], fifo: bool| {
            QueueAttrs::default()
                .apply(&set(s), true, fifo)
                .unwrap_err()
                .code
        };
        assert_eq!(
            code(&[("VisibilityTimeout", "43201")], false),
            "InvalidAttributeValue"
        );
        assert_eq!(
            code(&[("DelaySeconds", "x")], false),
            "InvalidAttributeValue"
        );
        assert_eq!(code(&[("Colour", "blue")], false), "InvalidAttributeName");
        assert_eq!(
            code(&[("ContentBasedDeduplication", "true")], false),
            "InvalidAttributeName"
        );
        assert_eq!(code(&[], true), "InvalidParameterValue");
        assert_eq!(
            code(&[("FifoQueue", "true")], false),
            "InvalidParameterValue"
        );
        let mut f = QueueAttrs::default();
        f.apply(
            &set(&[("FifoQueue", "true"), ("ContentBasedDeduplication", "true")]),
            true,
            true,
        )
        .expect("fifo");
        assert!(f.fifo && f.content_dedup);
    }

    #[test]
    fn redrive_policy_and_show() {
        let mut a = QueueAttrs::default();
        a.apply(
            &set(&[(
                "RedrivePolicy",
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"3"}"#,
            )]),
            false,
            false,
        )
        .expect("policy");
        assert_eq!(
            a.redrive_policy.as_ref().map(|p| p.max_receive_count),
            Some(3)
        );
        let shown = a.show(&["All".into()], [1, 2, 3], "arn:x").expect("show");
        assert_eq!(shown["ApproximateNumberOfMessagesNotVisible"], "2");
        assert!(shown["RedrivePolicy"].contains("\"maxReceiveCount\":3"));
        assert!(!shown.contains_key("FifoQueue"));
        let one = a
            .show(&["DelaySeconds".into()], [0; 3], "arn:x")
            .expect("one");
        assert_eq!(one.len(), 1);
        assert_eq!(
            a.show(&["Nope".into()], [0; 3], "a").unwrap_err().code,
            "InvalidAttributeName"
        );
        let bad = a.apply(
            &set(&[("RedrivePolicy", r#"{"maxReceiveCount":0}"#)]),
            false,
            false,
        );
        assert_eq!(bad.unwrap_err().code, "InvalidAttributeValue");
    }

    #[test]
    fn names() {
        assert_eq!(check_name("orders"), Ok(false));
        assert_eq!(check_name("orders.fifo"), Ok(true));
        assert!(check_name("").is_err() && check_name(".fifo").is_err());
        assert!(check_name("a b").is_err() && check_name(&"x".repeat(81)).is_err());
    }
}
