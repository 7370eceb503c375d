//! Looking into a queue: its tasks listed by state (`GET {q}/tasks`), and why one task is or
//! is not running (`GET {q}/tasks/{id}/explain`, answered by the queue's actor).
//!
//! Pending tasks are read from the ready index, in dispatch order, at most [`SCAN_LIMIT`]
//! index entries per page (a selective filter may give a short page, with a token to go on).
//! The other states are read from the queue's task records: every page reads all the records
//! the queue keeps (finished ones until `completed_retention`) and keeps the newest `limit`,
//! so its cost grows with the queue; running tasks come from the in-flight index.

use std::collections::BinaryHeap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::Tasq;
use crate::error::{Error, Result};
use crate::model::listing::{ListState, ListedTask, TaskFilter, TaskPage};
use crate::model::{validate_name, QueueKey, TaskRecord, MAX_LIST_LIMIT};
use crate::queue::messages::{Explain, Explanation};
use crate::storage::{ReadyPos, Store};

/// Most ready-index entries one page of pending tasks reads.
pub const SCAN_LIMIT: usize = 20_000;

/// Records read from the store at once.
const CHUNK: usize = 500;

impl Tasq {
    /// One page of `queue`'s tasks in `filter`'s state: pending ones in dispatch order, the
    /// others newest first (by last change). `page_token` continues a listing.
    pub async fn list_tasks(
        &self,
        queue: &QueueKey,
        filter: TaskFilter,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<TaskPage> {
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(Error::invalid(format!(
                "limit must be 1–{MAX_LIST_LIMIT}, got {limit}"
            )));
        }
        filter.validate()?;
        let token = page_token.filter(|t| !t.is_empty()).map(str::to_string);
        self.serving_queues()?;
        let store = self.inner.store.clone();
        let queue = queue.clone();
        let page = tokio::task::spawn_blocking(move || match filter.state {
            ListState::Pending => {
                let after = token_pos(token.as_deref())?;
                pending_page(&*store, &queue, &filter, after, limit)
            }
            _ => {
                let before = token_key(token.as_deref())?;
                newest_page(&*store, &queue, &filter, before, limit)
            }
        });
        page.await
            .map_err(|e| Error::Internal(format!("listing tasks: {e}")))?
    }

    /// Why the task is or is not running now; an unknown id is [`Error::NotFound`].
    pub async fn explain(&self, queue: &QueueKey, task_id: &str) -> Result<Explanation> {
        validate_name("task_id", task_id)?;
        let msg = Explain {
            task_id: task_id.to_string(),
        };
        self.serving_queues()?.call(queue, msg).await?
    }
}

/// Pending tasks after `after` in dispatch order.
fn pending_page(
    store: &dyn Store,
    queue: &QueueKey,
    filter: &TaskFilter,
    mut after: Option<ReadyPos>,
    limit: usize,
) -> Result<TaskPage> {
    let mut tasks = Vec::new();
    let mut scanned = 0;
    while scanned < SCAN_LIMIT {
        let chunk = store.scan_ready(queue, after, CHUNK)?;
        let Some(last) = chunk.last().map(|(pos, _)| *pos) else {
            return Ok(TaskPage {
                tasks,
                next_page_token: None,
            });
        };
        scanned += chunk.len();
        // The index says type and priority; the record the fairness key.
        let wanted: Vec<(ReadyPos, &str)> = chunk
            .iter()
            .filter(|(pos, e)| {
                filter
                    .task_type
                    .as_deref()
                    .is_none_or(|t| t == &*e.task_type)
                    && filter.priority.is_none_or(|p| p == pos.priority)
            })
            .map(|(pos, e)| (*pos, &*e.task_id))
            .collect();
        let ids: Vec<&str> = wanted.iter().map(|(_, id)| *id).collect();
        for ((pos, _), rec) in wanted.iter().zip(store.tasks(queue, &ids)?) {
            let Some(rec) = rec.filter(|r| filter.matches(r)) else {
                continue;
            };
            tasks.push(ListedTask::from(rec));
            if tasks.len() == limit {
                return Ok(TaskPage {
                    tasks,
                    next_page_token: Some(encode_pos(pos)),
                });
            }
        }
        after = Some(last);
    }
    Ok(TaskPage {
        tasks,
        next_page_token: after.as_ref().map(encode_pos),
    })
}

/// The newest `limit` tasks in the filter's state changed before `before` (by last change,
/// then id, both descending).
fn newest_page(
    store: &dyn Store,
    queue: &QueueKey,
    filter: &TaskFilter,
    before: Option<(u64, String)>,
    limit: usize,
) -> Result<TaskPage> {
    // The `limit + 1` newest so far, the oldest of them on top (a max-heap of [`Newest`],
    // which orders the newest first): one more than a page tells whether another follows.
    let mut best: BinaryHeap<Newest> = BinaryHeap::new();
    let mut offer = |rec: TaskRecord| {
        if !filter.matches(&rec) {
            return;
        }
        let key = (rec.updated_at, rec.task_id.clone());
        if before.as_ref().is_some_and(|b| key >= *b) {
            return;
        }
        best.push(Newest(key, Box::new(rec)));
        if best.len() > limit + 1 {
            best.pop();
        }
    };
    if filter.state == ListState::Running {
        store
            .in_flight_records(queue)?
            .into_iter()
            .for_each(&mut offer);
    } else {
        let mut after: Option<String> = None;
        loop {
            let ids = store.task_ids(queue, after.as_deref(), CHUNK)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            store
                .tasks(queue, &refs)?
                .into_iter()
                .flatten()
                .for_each(&mut offer);
            after = Some(last);
        }
    }
    let mut newest: Vec<Newest> = best.into_sorted_vec();
    let more = newest.len() > limit;
    newest.truncate(limit);
    let next_page_token = more
        .then(|| newest.last().map(|n| encode_key(&n.0)))
        .flatten();
    Ok(TaskPage {
        tasks: newest.into_iter().map(|n| ListedTask::from(*n.1)).collect(),
        next_page_token,
    })
}

/// A record by (last change, id), compared by those only.
struct Newest((u64, String), Box<TaskRecord>);

impl PartialEq for Newest {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Newest {}
impl PartialOrd for Newest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Newest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Descending: the newest is the "least", first in a sorted vector.
        other.0.cmp(&self.0)
    }
}

/// Pending pages go on from an index position: `p` + priority, order, sequence.
fn encode_pos(pos: &ReadyPos) -> String {
    let mut raw = vec![b'p', pos.priority];
    raw.extend_from_slice(&pos.order.to_be_bytes());
    raw.extend_from_slice(&pos.seq.to_be_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

fn token_pos(token: Option<&str>) -> Result<Option<ReadyPos>> {
    let Some(raw) = token.map(decode_token).transpose()? else {
        return Ok(None);
    };
    match raw.as_slice() {
        [b'p', priority, rest @ ..] if rest.len() == 16 => Ok(Some(ReadyPos {
            priority: *priority,
            order: u64::from_be_bytes(rest[..8].try_into().map_err(|_| bad_token())?),
            seq: u64::from_be_bytes(rest[8..].try_into().map_err(|_| bad_token())?),
        })),
        _ => Err(bad_token()),
    }
}

/// The other pages go on from a (last change, id): `s` + the time + the id.
fn encode_key((at, id): &(u64, String)) -> String {
    let mut raw = vec![b's'];
    raw.extend_from_slice(&at.to_be_bytes());
    raw.extend_from_slice(id.as_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

fn token_key(token: Option<&str>) -> Result<Option<(u64, String)>> {
    let Some(raw) = token.map(decode_token).transpose()? else {
        return Ok(None);
    };
    match raw.as_slice() {
        [b's', rest @ ..] if rest.len() > 8 => {
            let at = u64::from_be_bytes(rest[..8].try_into().map_err(|_| bad_token())?);
            let id = String::from_utf8(rest[8..].to_vec()).map_err(|_| bad_token())?;
            Ok(Some((at, id)))
        }
        _ => Err(bad_token()),
    }
}

fn decode_token(token: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(token).map_err(|_| bad_token())
}

fn bad_token() -> Error {
    Error::invalid("page_token is not one this server gave (for this state)")
}
