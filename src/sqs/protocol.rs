//! The two wire protocols of SQS, read into one shape and answered in the caller's own:
//!
//! - **AWS JSON 1.0** (what boto3 and the AWS CLI send today): `POST /` with
//!   `X-Amz-Target: AmazonSQS.<Action>` and a JSON body; answers are JSON, errors carry
//!   `__type` (the shape SDKs map to an exception) and the `x-amzn-query-error` header (the
//!   query code that `response['Error']['Code']` shows).
//! - **Query** (older SDKs and CLIs, kombu): form-encoded `Action=…&Version=…` in the body or
//!   the URL, posted to `/` or to the queue's URL; answers and errors are XML.
//!
//! A query request's flattened names (`Attribute.1.Name`, `MessageAttribute.1.Value.DataType`,
//! `SendMessageBatchRequestEntry.2.Id`, `AttributeName.1`) are folded into the JSON
//! protocol's members (`Attributes`, `MessageAttributes`, `Entries`, `AttributeNames`), so
//! every action reads one [`Params`] whichever protocol it came by.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};

use super::error::SqsError;
use super::xml;

/// Which protocol a request came by (and its answer goes back by).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// AWS JSON 1.0.
    Json,
    /// The query protocol (form-encoded request, XML answer).
    Query,
}

/// One request: its action and its parameters.
#[derive(Debug)]
pub struct Call {
    /// The protocol to answer in.
    pub protocol: Protocol,
    /// `SendMessage`, `ReceiveMessage`, …
    pub action: String,
    /// The parameters, by the JSON protocol's member names.
    pub params: Params,
}

/// Most parameters a query request may carry (a batch of ten messages with ten attributes
/// each stays well under it).
const MAX_QUERY_PARAMS: usize = 2000;

/// Reads a request: JSON when it names its target, the query protocol otherwise. A query
/// request sent to a queue's URL (`/<account>/<name>`) gets that URL as its `QueueUrl`.
pub fn parse(req: &HttpRequest, body: &[u8], base: &str) -> Result<Call, (Protocol, SqsError)> {
    if let Some(target) = req.headers().get("x-amz-target") {
        let fail = |e| (Protocol::Json, e);
        let target = target.to_str().unwrap_or_default();
        let action = target
            .strip_prefix("AmazonSQS.")
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                fail(SqsError::invalid_action(format!(
                    "X-Amz-Target must be AmazonSQS.<Action>, got {target:?}"
                )))
            })?;
        let params = if body.iter().all(u8::is_ascii_whitespace) {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(fail(SqsError::invalid_action(
                        "the body must be a JSON object (AWS JSON 1.0)",
                    )))
                }
            }
        };
        return Ok(Call {
            protocol: Protocol::Json,
            action: action.to_string(),
            params: Params(params),
        });
    }
    let fail = |e| (Protocol::Query, e);
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    pairs.extend(form_urlencoded::parse(body).into_owned());
    if pairs.len() > MAX_QUERY_PARAMS {
        return Err(fail(SqsError::invalid(format!(
            "a request may carry at most {MAX_QUERY_PARAMS} parameters"
        ))));
    }
    let mut params = fold(&pairs);
    let action = match params.remove("Action") {
        Some(Value::String(a)) if !a.is_empty() => a,
        _ => {
            return Err(fail(SqsError::invalid_action(
                "no Action: send AWS JSON 1.0 (X-Amz-Target: AmazonSQS.<Action>) or the query \
                 protocol (Action=<Action>)",
            )))
        }
    };
    params.remove("Version");
    let path = req.path().trim_matches('/');
    if !path.is_empty() && !params.contains_key("QueueUrl") {
        params.insert("QueueUrl".into(), Value::String(format!("{base}/{path}")));
    }
    Ok(Call {
        protocol: Protocol::Query,
        action,
        params: Params(params),
    })
}

/// One flattened name, split at its dots, as a tree.
#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

/// How a flattened query name becomes a JSON member.
enum Fold {
    /// `X.N.<key>` / `X.N.<value>` pairs → a map.
    Map(&'static str, &'static str, &'static str),
    /// `X.N` → a list of strings.
    List(&'static str),
    /// `X.N.…` → a list of objects.
    Objects(&'static str),
}

fn fold_rule(name: &str) -> Option<Fold> {
    Some(match name {
        "Attribute" => Fold::Map("Attributes", "Name", "Value"),
        "MessageAttribute" => Fold::Map("MessageAttributes", "Name", "Value"),
        "MessageSystemAttribute" => Fold::Map("MessageSystemAttributes", "Name", "Value"),
        "Tag" => Fold::Map("tags", "Key", "Value"),
        "AttributeName" => Fold::List("AttributeNames"),
        "MessageAttributeName" => Fold::List("MessageAttributeNames"),
        "MessageSystemAttributeName" => Fold::List("MessageSystemAttributeNames"),
        "TagKey" => Fold::List("TagKeys"),
        "SendMessageBatchRequestEntry"
        | "DeleteMessageBatchRequestEntry"
        | "ChangeMessageVisibilityBatchRequestEntry" => Fold::Objects("Entries"),
        _ => return None,
    })
}

/// The query pairs as the JSON protocol's members.
fn fold(pairs: &[(String, String)]) -> Map<String, Value> {
    let mut root = Node::default();
    for (k, v) in pairs {
        let mut node = &mut root;
        for part in k.split('.') {
            node = node.children.entry(part.to_string()).or_default();
        }
        node.value = Some(v.clone());
    }
    object_of(&root)
}

/// The numbered children of a node (`1`, `2`, …) in numeric order.
fn numbered(node: &Node) -> Vec<&Node> {
    let mut items: Vec<(u64, &Node)> = node
        .children
        .iter()
        .filter_map(|(k, n)| Some((k.parse().ok()?, n)))
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, n)| n).collect()
}

fn value_of(node: &Node) -> Value {
    if node.children.is_empty() {
        Value::String(node.value.clone().unwrap_or_default())
    } else {
        Value::Object(object_of(node))
    }
}

fn object_of(node: &Node) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, child) in &node.children {
        match fold_rule(name) {
            Some(Fold::Map(member, key, value)) => {
                let mut map = Map::new();
                for item in numbered(child) {
                    if let Some(k) = item.children.get(key).and_then(|n| n.value.clone()) {
                        let v = item.children.get(value).map_or(Value::Null, value_of);
                        map.insert(k, v);
                    }
                }
                out.insert(member.into(), Value::Object(map));
            }
            Some(Fold::List(member)) => {
                let list = numbered(child)
                    .into_iter()
                    .filter_map(|n| n.value.clone().map(Value::String))
                    .collect();
                out.insert(member.into(), Value::Array(list));
            }
            Some(Fold::Objects(member)) => {
                let list = numbered(child)
                    .into_iter()
                    .map(|n| Value::Object(object_of(n)))
                    .collect();
                out.insert(member.into(), Value::Array(list));
            }
            None => {
                out.insert(name.clone(), value_of(child));
            }
        }
    }
    out
}

/// A request's parameters, by the JSON protocol's member names.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Map<String, Value>);

impl Params {
    /// A string parameter, if given.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// A string parameter that must be given.
    pub fn required(&self, name: &str) -> Result<&str, SqsError> {
        self.str(name)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SqsError::missing(name))
    }

    /// An integer parameter in `min..=max`, if given (a number, or a string of one as the
    /// query protocol sends).
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, SqsError> {
        let Some(v) = self.0.get(name).filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(SqsError::invalid(format!(
                "Value {} for parameter {name} is invalid. Reason: must be between {min} and {max}.",
                text_of(v)
            ))),
        }
    }

    /// A list of strings (`AttributeNames`, …); absent is empty.
    pub fn list(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// A map of strings (`Attributes`, `tags`); absent is empty. A value that is not a
    /// string is an error naming it.
    pub fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, SqsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(SqsError::invalid(format!(
                        "{name}.{k} must be a string, got {other}"
                    ))),
                })
                .collect(),
            Some(other) => Err(SqsError::invalid(format!(
                "{name} must be a map of strings, got {other}"
            ))),
        }
    }

    /// A map of objects (`MessageAttributes`); absent is empty.
    pub fn object_map(&self, name: &str) -> Result<Map<String, Value>, SqsError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(m)) => Ok(m.clone()),
            Some(other) => Err(SqsError::invalid(format!(
                "{name} must be a map, got {other}"
            ))),
        }
    }

    /// The entries of a batch: 1–10 of them, each with a distinct, well-formed `Id`.
    pub fn entries(&self) -> Result<Vec<(String, Params)>, SqsError> {
        let items = match self.0.get("Entries") {
            None | Some(Value::Null) => return Err(SqsError::missing("Entries")),
            Some(Value::Array(items)) => items,
            // The query protocol sends an empty list as `Entries=`.
            Some(Value::String(s)) if s.is_empty() => return Err(SqsError::empty_batch()),
            Some(_) => return Err(SqsError::invalid("Entries must be a list")),
        };
        if items.is_empty() {
            return Err(SqsError::empty_batch());
        }
        if items.len() > 10 {
            return Err(SqsError::too_many_entries(items.len()));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Value::Object(m) = item else {
                return Err(SqsError::invalid("each entry must be an object"));
            };
            let entry = Params(m.clone());
            let id = entry.required("Id")?.to_string();
            let well_formed = id.len() <= 80
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !well_formed {
                return Err(SqsError::batch_entry_id(&id));
            }
            if !seen.insert(id.clone()) {
                return Err(SqsError::ids_not_distinct(&id));
            }
            out.push((id, entry));
        }
        Ok(out)
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer to `call`: `result` as JSON, or as the query protocol's XML.
pub fn respond(call: &Call, request_id: &str, result: Value) -> HttpResponse {
    match call.protocol {
        Protocol::Json => HttpResponse::Ok()
            .content_type("application/x-amz-json-1.0")
            .insert_header(("x-amzn-RequestId", request_id))
            .body(result.to_string()),
        Protocol::Query => HttpResponse::Ok()
            .content_type("text/xml")
            .insert_header(("x-amzn-RequestId", request_id))
            .body(xml::response(&call.action, &result, request_id)),
    }
}

/// An error answer in `protocol`.
pub fn error(protocol: Protocol, request_id: &str, e: &SqsError) -> HttpResponse {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let fault = if e.sender { "Sender" } else { "Receiver" };
    let mut res = HttpResponse::build(status);
    res.insert_header(("x-amzn-RequestId", request_id));
    match protocol {
        Protocol::Json => res
            .content_type("application/x-amz-json-1.0")
            .insert_header(("x-amzn-query-error", format!("{};{fault}", e.code)))
            .body(
                json!({
                    "__type": format!("com.amazonaws.sqs#{}", e.shape),
                    "message": e.message,
                })
                .to_string(),
            ),
        Protocol::Query => res
            .content_type("text/xml")
            .body(xml::error(e.code, fault, &e.message, request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_names_fold_into_json_members() {
        let m = fold(&pairs(&[
            ("QueueName", "q"),
            ("Attribute.2.Name", "DelaySeconds"),
            ("Attribute.2.Value", "5"),
            ("Attribute.1.Name", "VisibilityTimeout"),
            ("Attribute.1.Value", "30"),
            ("AttributeName.2", "B"),
            ("AttributeName.1", "A"),
            ("AttributeName.10", "C"),
            ("SendMessageBatchRequestEntry.1.Id", "a"),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Name",
                "k",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.DataType",
                "String",
            ),
            (
                "SendMessageBatchRequestEntry.1.MessageAttribute.1.Value.StringValue",
                "v",
            ),
        ]));
        assert_eq!(m["QueueName"], json!("q"));
        assert_eq!(
            m["Attributes"],
            json!({"VisibilityTimeout": "30", "DelaySeconds": "5"})
        );
        assert_eq!(m["AttributeNames"], json!(["A", "B", "C"]));
        assert_eq!(
            m["Entries"],
            json!([{"Id": "a", "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}}])
        );
    }

    #[test]
    fn integers_come_as_numbers_or_strings_and_are_bounded() {
        let p = Params(
            json!({"A": 5, "B": "7", "C": "x", "D": 11})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(p.int("A", 1, 10), Ok(Some(5)));
        assert_eq!(p.int("B", 1, 10), Ok(Some(7)));
        assert_eq!(p.int("Z", 1, 10), Ok(None));
        assert_eq!(p.int("C", 1, 10).unwrap_err().code, "InvalidParameterValue");
        assert_eq!(p.int("D", 1, 10).unwrap_err().code, "InvalidParameterValue");
    }

    #[test]
    fn batch_entries_are_checked() {
        let p = |v: Value| Params(v.as_object().cloned().unwrap_or_default());
        let code = |v: Value| p(v).entries().unwrap_err().code;
        assert_eq!(
            code(json!({"Entries": []})),
            "AWS.SimpleQueueService.EmptyBatchRequest"
        );
        let eleven: Vec<Value> = (0..11).map(|i| json!({"Id": format!("e{i}")})).collect();
        assert_eq!(
            code(json!({ "Entries": eleven })),
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
        );
        assert_eq!(
            code(json!({"Entries": [{"Id": "a"}, {"Id": "a"}]})),
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
        );
        assert_eq!(
            code(json!({"Entries": [{"Id": "a b"}]})),
            "AWS.SimpleQueueService.InvalidBatchEntryId"
        );
        assert_eq!(code(json!({})), "MissingParameter");
    }
}
