//! The query protocol's XML answers, written from the JSON protocol's result: members keep
//! their names, lists and maps are flattened the way SQS's XML has them (`QueueUrls` →
//! repeated `<QueueUrl>`, `Attributes` → repeated `<Attribute><Name/><Value/></Attribute>`,
//! `Successful` → repeated `<{Action}ResultEntry>`, …).

use std::fmt::Write;

use serde_json::Value;

/// The namespace of every SQS answer.
const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";

/// The actions whose answer carries nothing but its request id.
const NO_RESULT: [&str; 9] = [
    "DeleteMessage",
    "ChangeMessageVisibility",
    "SetQueueAttributes",
    "DeleteQueue",
    "PurgeQueue",
    "TagQueue",
    "UntagQueue",
    "AddPermission",
    "RemovePermission",
];

/// `<{Action}Response><{Action}Result>…</…><ResponseMetadata>…</…></{Action}Response>`.
pub fn response(action: &str, result: &Value, request_id: &str) -> String {
    let mut out = format!(r#"<?xml version="1.0"?><{action}Response xmlns="{XMLNS}">"#);
    // Actions with an answer always have its element, empty or not (a receive that found
    // nothing is `<ReceiveMessageResult/>`); the others have none.
    if !NO_RESULT.contains(&action) {
        out.push_str(&format!("<{action}Result>"));
        if let Value::Object(m) = result {
            for (k, v) in m {
                member(&mut out, action, k, v);
            }
        }
        out.push_str(&format!("</{action}Result>"));
    }
    out.push_str(&format!(
        "<ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></{action}Response>",
        escape(request_id)
    ));
    out
}

/// `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
pub fn error(code: &str, fault: &str, message: &str, request_id: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><ErrorResponse xmlns="{XMLNS}"><Error><Type>{}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error><RequestId>{}</RequestId></ErrorResponse>"#,
        escape(fault),
        escape(code),
        escape(message),
        escape(request_id)
    )
}

/// One member of a result (or of an object inside it).
fn member(out: &mut String, action: &str, name: &str, value: &Value) {
    match (name, value) {
        ("Attributes", Value::Object(m)) => {
            for (k, v) in m {
                let _ = write!(
                    out,
                    "<Attribute><Name>{}</Name><Value>{}</Value></Attribute>",
                    escape(k),
                    escape(&scalar(v))
                );
            }
        }
        ("MessageAttributes", Value::Object(m)) => {
            for (k, v) in m {
                let _ = write!(out, "<MessageAttribute><Name>{}</Name><Value>", escape(k));
                if let Value::Object(fields) = v {
                    for (f, fv) in fields {
                        element(out, f, &scalar(fv));
                    }
                }
                out.push_str("</Value></MessageAttribute>");
            }
        }
        (_, Value::Array(items)) => {
            let item = match name {
                "QueueUrls" | "queueUrls" => "QueueUrl".to_string(),
                "Messages" => "Message".to_string(),
                "Successful" => format!("{action}ResultEntry"),
                "Failed" => "BatchResultErrorEntry".to_string(),
                "Results" => "ListMessageMoveTasksResultEntry".to_string(),
                other => other.to_string(),
            };
            for v in items {
                match v {
                    Value::Object(m) => {
                        let _ = write!(out, "<{item}>");
                        for (k, fv) in m {
                            member(out, action, k, fv);
                        }
                        let _ = write!(out, "</{item}>");
                    }
                    other => element(out, &item, &scalar(other)),
                }
            }
        }
        ("tags" | "Tags", Value::Object(m)) => {
            for (k, v) in m {
                let _ = write!(
                    out,
                    "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                    escape(k),
                    escape(&scalar(v))
                );
            }
        }
        (_, Value::Object(m)) => {
            let _ = write!(out, "<{name}>");
            for (k, v) in m {
                member(out, action, k, v);
            }
            let _ = write!(out, "</{name}>");
        }
        (_, Value::Null) => {}
        (_, v) => element(out, name, &scalar(v)),
    }
}

fn element(out: &mut String, name: &str, text: &str) {
    let _ = write!(out, "<{name}>{}</{name}>", escape(text));
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Text as XML character data: markup escaped, a carriage return as a reference (a parser
/// would turn a bare one into a line feed), and the control characters XML 1.0 cannot carry
/// dropped (SQS refuses them in message bodies, so only a name could hold one).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_and_maps_are_flattened_as_sqs_writes_them() {
        let r = json!({
            "Messages": [{"MessageId": "m", "Body": "<a & b>", "Attributes": {"SentTimestamp": "1"},
                          "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}]
        });
        let x = response("ReceiveMessage", &r, "rid");
        assert!(x.contains("<ReceiveMessageResult><Message>"), "{x}");
        assert!(
            x.contains("<MessageId>m</MessageId></Message></ReceiveMessageResult>"),
            "{x}"
        );
        assert!(x.contains("<Body>&lt;a &amp; b&gt;</Body>"), "{x}");
        assert!(x.contains("<Attribute><Name>SentTimestamp</Name><Value>1</Value></Attribute>"));
        assert!(x.contains("<MessageAttribute><Name>k</Name><Value><DataType>String</DataType><StringValue>v</StringValue></Value></MessageAttribute>"), "{x}");
        let b = response(
            "DeleteMessageBatch",
            &json!({"Successful": [{"Id": "a"}], "Failed": []}),
            "r",
        );
        assert!(
            b.contains("<DeleteMessageBatchResultEntry><Id>a</Id></DeleteMessageBatchResultEntry>"),
            "{b}"
        );
        let empty = response("DeleteMessage", &json!({}), "r");
        assert!(!empty.contains("DeleteMessageResult"), "{empty}");
        let none = response("ReceiveMessage", &json!({}), "r");
        assert!(
            none.contains("<ReceiveMessageResult></ReceiveMessageResult>"),
            "{none}"
        );
        assert!(error("C", "Sender", "m<", "r").contains("<Message>m&lt;</Message>"));
    }
}
