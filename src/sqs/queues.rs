//! Queues: create, find, list, delete, attributes, purge, tags, and the dead-letter side
//! (source queues of a dead-letter queue, and moving dead letters back). An SQS queue is the
//! tasq queue of the same name, type `activity`, in the endpoint's namespace, with its
//! attributes stored beside it; a tasq queue without them is not an SQS queue (SQS needs a
//! `CreateQueue` first). The dead-letter queue of a redrive policy is tasq's dead letters of
//! the source queue: counted in the dead-letter queue's `ApproximateNumberOfMessages` and put
//! back by `StartMessageMoveTask`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::attributes::{check_name, QueueAttrs};
use super::error::SqsError;
use super::protocol::Params;
use super::{unix_now, SqsQueue, State};
use crate::model::listing::{ListState, TaskFilter};

/// `CreateQueue`: makes the queue, or answers the URL of one that exists with the same
/// attributes.
pub async fn create(state: &State, p: &Params, base: &str) -> Result<Value, SqsError> {
    let name = p.required("QueueName")?;
    let fifo = check_name(name)?;
    let set = p.string_map("Attributes")?;
    if state.deleted_recently(name) {
        return Err(SqsError::deleted_recently(name));
    }
    if let Some(existing) = state.load(name)? {
        return if existing.agrees_with(&set, fifo) {
            Ok(json!({ "QueueUrl": state.url(base, name) }))
        } else {
            Err(SqsError::queue_exists(name))
        };
    }
    let mut attrs = QueueAttrs::default();
    attrs.apply(&set, true, fifo)?;
    check_dead_letter_target(state, &attrs)?;
    attrs.tags = p.string_map("tags")?;
    let now = unix_now();
    (attrs.created, attrs.modified) = (now, now);
    state.save(name, Some(&attrs)).await?;
    Ok(json!({ "QueueUrl": state.url(base, name) }))
}

/// A redrive policy's dead-letter queue must exist and be of the same kind (FIFO or not).
fn check_dead_letter_target(state: &State, attrs: &QueueAttrs) -> Result<(), SqsError> {
    let Some(policy) = &attrs.redrive_policy else {
        return Ok(());
    };
    let target = state
        .name_of_arn(&policy.dead_letter_target_arn)
        .and_then(|n| Some((n.to_string(), state.load(n).ok()??)));
    match target {
        Some((_, t)) if t.fifo == attrs.fifo => Ok(()),
        Some(_) => Err(SqsError::attribute_value(
            "Value for parameter RedrivePolicy is invalid. Reason: the dead-letter queue of a \
             FIFO queue must be a FIFO queue, and of a standard queue a standard queue.",
        )),
        None => Err(SqsError::attribute_value(format!(
            "Value for parameter RedrivePolicy is invalid. Reason: Dead letter target does not \
             exist: {}.",
            policy.dead_letter_target_arn
        ))),
    }
}

/// `GetQueueUrl`.
pub async fn get_url(state: &State, p: &Params, base: &str) -> Result<Value, SqsError> {
    let name = p.required("QueueName")?;
    if p.str("QueueOwnerAWSAccountId")
        .is_some_and(|a| a != state.settings.account_id)
    {
        return Err(SqsError::no_queue());
    }
    match state.load(name)? {
        Some(_) => Ok(json!({ "QueueUrl": state.url(base, name) })),
        None => Err(SqsError::no_queue()),
    }
}

/// Queues read from the store at a time.
const PAGE: usize = 1000;

/// Every SQS queue with its attributes, in name order, from after `after`, while `more`
/// says to go on.
fn scan(
    state: &State,
    mut after: Option<String>,
    mut each: impl FnMut(&str, QueueAttrs) -> bool,
) -> Result<(), SqsError> {
    loop {
        let page =
            state
                .tasq
                .attributed_queues(&state.settings.namespace, after.as_deref(), PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        after = Some(last.name().to_string());
        let full = page.len() == PAGE;
        for (key, text) in page {
            if key.queue_type() != crate::model::QueueType::Activity {
                continue;
            }
            let Ok(attrs) = serde_json::from_str::<QueueAttrs>(&text) else {
                continue;
            };
            if !each(key.name(), attrs) {
                return Ok(());
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// `ListQueues`: by name prefix, `MaxResults` (1–1000) per page with a `NextToken`; without
/// `MaxResults`, the first 1000.
pub async fn list(state: &State, p: &Params, base: &str) -> Result<Value, SqsError> {
    let prefix = p.str("QueueNamePrefix").unwrap_or_default().to_string();
    let max = p.int("MaxResults", 1, 1000)?;
    let after = match p.str("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| SqsError::invalid("Invalid NextToken value."))?,
        ),
        None => None,
    };
    let limit = max.unwrap_or(1000) as usize;
    let mut names = Vec::new();
    let mut more = false;
    scan(state, after, |name, _| {
        if !name.starts_with(&prefix) {
            // Names sort; past the prefix's range nothing more matches.
            return name < prefix.as_str();
        }
        if names.len() == limit {
            more = true;
            return false;
        }
        names.push(name.to_string());
        true
    })?;
    let mut out = json!({
        "QueueUrls": names.iter().map(|n| state.url(base, n)).collect::<Vec<_>>(),
    });
    if more && max.is_some() {
        if let Some(last) = names.last() {
            out["NextToken"] = Value::String(URL_SAFE_NO_PAD.encode(last.as_bytes()));
        }
    }
    Ok(out)
}

/// `DeleteQueue`: its messages are purged and its attributes removed; a queue of the same
/// name can be made again after 60 seconds.
pub async fn delete(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    purge_messages(state, &queue).await?;
    state.save(&queue.name, None).await?;
    state.mark_deleted(&queue.name);
    Ok(json!({}))
}

/// `PurgeQueue`: every message is deleted (those in flight are asked to stop and not given
/// again); once a minute at most.
pub async fn purge(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    if !state.may_purge(&queue.name) {
        return Err(SqsError::purge_in_progress(&queue.name));
    }
    purge_messages(state, &queue).await?;
    Ok(json!({}))
}

/// Most pages of tasks one purge reads per state.
const PURGE_PAGES: usize = 10_000;

/// Cancels every pending, delayed and running task of the queue.
async fn purge_messages(state: &State, queue: &SqsQueue) -> Result<(), SqsError> {
    for list_state in [ListState::Pending, ListState::Delayed, ListState::Running] {
        let mut token: Option<String> = None;
        // Bounded: producers still sending while the purge runs do not keep it going.
        for _ in 0..PURGE_PAGES {
            let filter = TaskFilter {
                state: list_state,
                ..TaskFilter::default()
            };
            let page = state
                .tasq
                .list_tasks(&queue.key, filter, token.as_deref(), 1000)
                .await?;
            let cancels = page
                .tasks
                .iter()
                .map(|t| state.tasq.cancel(&queue.key, &t.fields.task_id));
            for r in futures_util::future::join_all(cancels).await {
                match r {
                    Ok(_) | Err(crate::Error::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            token = page.next_page_token;
            // Pending tasks cancelled leave the listing; read again from the start.
            if list_state == ListState::Pending {
                if page.tasks.is_empty() {
                    break;
                }
                token = None;
            } else if token.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// `GetQueueAttributes`. A dead-letter queue's `ApproximateNumberOfMessages` counts the dead
/// letters of the queues whose redrive policy names it.
pub async fn get_attributes(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let names = p.list("AttributeNames");
    let stats = state.tasq.describe(&queue.key).await?;
    let mut visible = stats.backlog_count;
    let arn = state.arn(&queue.name);
    if names
        .iter()
        .any(|n| n == "All" || n == "ApproximateNumberOfMessages")
    {
        for source in sources_of(state, &arn)? {
            let key = state.key(&source)?;
            visible += state.tasq.describe(&key).await?.dead_letter_count;
        }
    }
    let shown = queue.attrs.show(
        &names,
        [visible, stats.in_flight_count, stats.delayed_count],
        &arn,
    )?;
    Ok(if shown.is_empty() {
        json!({})
    } else {
        json!({ "Attributes": shown })
    })
}

/// `SetQueueAttributes`. Messages already sent keep the visibility timeout and receive
/// count limit they were sent with until they are received (a receive applies the queue's
/// current visibility timeout).
pub async fn set_attributes(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let set = p.string_map("Attributes")?;
    let mut attrs = queue.attrs.clone();
    attrs.apply(&set, false, attrs.fifo)?;
    check_dead_letter_target(state, &attrs)?;
    attrs.modified = unix_now();
    state.save(&queue.name, Some(&attrs)).await?;
    Ok(json!({}))
}

/// The queues whose redrive policy names `arn` as their dead-letter queue.
fn sources_of(state: &State, arn: &str) -> Result<Vec<String>, SqsError> {
    let mut out = Vec::new();
    scan(state, None, |name, attrs| {
        if attrs
            .redrive_policy
            .is_some_and(|p| p.dead_letter_target_arn == arn)
        {
            out.push(name.to_string());
        }
        true
    })?;
    Ok(out)
}

/// `ListDeadLetterSourceQueues`.
pub async fn dead_letter_sources(state: &State, p: &Params, base: &str) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let urls: Vec<String> = sources_of(state, &state.arn(&queue.name))?
        .iter()
        .map(|n| state.url(base, n))
        .collect();
    Ok(json!({ "queueUrls": urls }))
}

/// `StartMessageMoveTask`: the dead letters of every queue whose dead-letter queue is
/// `SourceArn` go back to their own queue (`DestinationArn`, when given, must be one of
/// them), pending with their attempts reset. Done at once; the answer's handle names it.
pub async fn start_move(state: &State, p: &Params) -> Result<Value, SqsError> {
    let source_arn = p.required("SourceArn")?;
    let dlq = state
        .name_of_arn(source_arn)
        .filter(|n| state.load(n).ok().flatten().is_some())
        .ok_or_else(|| {
            SqsError::resource_not_found(format!("The resource {source_arn} does not exist."))
        })?
        .to_string();
    let mut sources = sources_of(state, &state.arn(&dlq))?;
    if sources.is_empty() {
        return Err(SqsError::invalid(format!(
            "Source queue must be configured as a Dead Letter Queue: {source_arn}"
        )));
    }
    if let Some(dest) = p.str("DestinationArn").filter(|d| !d.is_empty()) {
        let name = state.name_of_arn(dest).unwrap_or_default().to_string();
        if !sources.contains(&name) {
            return Err(SqsError::invalid(
                "tasq moves dead letters back to the queue they died in: DestinationArn must \
                 be a queue whose redrive policy names SourceArn, or left out",
            ));
        }
        sources = vec![name];
    }
    let mut moved = 0;
    for name in &sources {
        moved += state.tasq.redrive(&state.key(name)?, None).await?;
    }
    let started = unix_now();
    let handle = URL_SAFE_NO_PAD.encode(format!("{dlq}:{started}"));
    state.record_move(
        &dlq,
        json!({
            "TaskHandle": handle,
            "Status": "COMPLETED",
            "SourceArn": source_arn,
            "ApproximateNumberOfMessagesMoved": moved,
            "ApproximateNumberOfMessagesToMove": moved,
            "StartedTimestamp": started * 1000,
        }),
    );
    Ok(json!({ "TaskHandle": handle }))
}

/// `ListMessageMoveTasks`: the last move from `SourceArn` done by this node.
pub async fn list_moves(state: &State, p: &Params) -> Result<Value, SqsError> {
    let source_arn = p.required("SourceArn")?;
    let name = state.name_of_arn(source_arn).ok_or_else(|| {
        SqsError::resource_not_found(format!("The resource {source_arn} does not exist."))
    })?;
    Ok(json!({ "Results": state.moves_of(name) }))
}

/// `TagQueue`.
pub async fn tag(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let mut tags = p.string_map("Tags")?;
    tags.extend(p.string_map("tags")?);
    let mut attrs = queue.attrs.clone();
    attrs.tags.extend(tags);
    state.save(&queue.name, Some(&attrs)).await?;
    Ok(json!({}))
}

/// `UntagQueue`.
pub async fn untag(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let mut attrs = queue.attrs.clone();
    for k in p.list("TagKeys") {
        attrs.tags.remove(&k);
    }
    state.save(&queue.name, Some(&attrs)).await?;
    Ok(json!({}))
}

/// `ListQueueTags`.
pub async fn list_tags(state: &State, p: &Params) -> Result<Value, SqsError> {
    let queue = state.queue(p).await?;
    let tags: BTreeMap<String, String> = queue.attrs.tags;
    Ok(if tags.is_empty() {
        json!({})
    } else {
        json!({ "Tags": tags })
    })
}

/// How long after a purge another one is refused, and after a delete a queue of the same
/// name may not be made (SQS's 60 seconds).
pub const QUIET: Duration = Duration::from_secs(60);

/// True while `at` is within [`QUIET`] of now.
pub fn recent(at: Option<&Instant>) -> bool {
    at.is_some_and(|t| t.elapsed() < QUIET)
}
