//! Queues: describe, list, the dispatch limit, dead letters and their redrive.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::Tasq;
use crate::error::{Error, Result};
use crate::model::rate::RateLimit;
use crate::model::{
    validate_name, validate_task_ids, QueueKey, QueueType, TaskRecord, MAX_LIST_LIMIT,
};
use crate::queue::messages::{Describe, RateLimitView, Redrive, SetConfig, Stats};

/// One queue of a [`QueuePage`], as the contract lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedQueue {
    /// The queue's name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: QueueType,
    /// Tasks ready now.
    pub backlog_count: u64,
    /// Tasks leased.
    pub in_flight_count: u64,
    /// Pollers seen lately (0 for a queue no actor holds).
    pub pollers: usize,
    /// Age of the oldest ready task in ms (0 if none).
    pub backlog_age_ms: u64,
    /// Tasks not yet due (delayed, or in retry backoff).
    pub delayed_count: u64,
    /// Dead letters.
    pub dead_letter_count: u64,
}

/// A page of the namespaces that hold queues.
#[derive(Debug, Clone, Serialize)]
pub struct NamespacePage {
    /// The namespaces, in name order.
    pub namespaces: Vec<String>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

/// A page of a namespace's queues.
#[derive(Debug, Clone, Serialize)]
pub struct QueuePage {
    /// The queues, in name order.
    pub task_queues: Vec<ListedQueue>,
    /// The token of the next page, if there is one.
    pub next_page_token: Option<String>,
}

impl Tasq {
    /// The statistics of one queue (one type of a name): backlog, age, pollers, rates.
    pub async fn describe(&self, queue: &QueueKey) -> Result<Stats> {
        self.serving_queues()?.call(queue, Describe).await?
    }

    /// The queues of `namespace` in name order, `limit` (1–1000) per page after the page
    /// `page_token` (from the previous page). A queue no actor holds is read from the store,
    /// its delayed tasks already due counted as ready.
    pub async fn list_queues(
        &self,
        namespace: &str,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<QueuePage> {
        validate_name("namespace", namespace)?;
        let after = decode_token(page_token)?;
        check_limit(limit)?;
        let queues = self.serving_queues()?;
        let (page, next) = self
            .store()
            .list_queues(namespace, after.as_deref(), limit)?;
        let mut out = Vec::with_capacity(page.len());
        for (key, meta) in page {
            let listed = if queues.is_loaded(&key) {
                let s = queues.call(&key, Describe).await??;
                ListedQueue {
                    name: key.name().to_string(),
                    kind: key.queue_type(),
                    backlog_count: s.backlog_count,
                    in_flight_count: s.in_flight_count,
                    pollers: s.pollers.len(),
                    backlog_age_ms: s.backlog_age_ms,
                    delayed_count: s.delayed_count,
                    dead_letter_count: s.dead_letter_count,
                }
            } else {
                let now = self.inner.clock.now_ms();
                let resting = self.store().resting(&key, &meta, now, true)?;
                let due = resting.backlog.saturating_sub(meta.ready);
                ListedQueue {
                    name: key.name().to_string(),
                    kind: key.queue_type(),
                    backlog_count: resting.backlog,
                    in_flight_count: meta.in_flight,
                    pollers: 0,
                    backlog_age_ms: resting
                        .oldest_ready_at
                        .map_or(0, |at| now.saturating_sub(at)),
                    delayed_count: meta.delayed.saturating_sub(due),
                    dead_letter_count: meta.dead,
                }
            };
            out.push(listed);
        }
        Ok(QueuePage {
            task_queues: out,
            next_page_token: next.map(|k| URL_SAFE_NO_PAD.encode(k)),
        })
    }

    /// The namespaces that hold queues, in name order, `limit` (1–1000) per page after the
    /// page `page_token`.
    pub async fn namespaces(
        &self,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<NamespacePage> {
        check_limit(limit)?;
        let after = decode_token(page_token)?
            .map(String::from_utf8)
            .transpose()
            .map_err(|_| Error::invalid("page_token is not one this server gave"))?;
        self.serving_queues()?;
        let mut namespaces = self.store().namespaces(after.as_deref(), limit + 1)?;
        let next = (namespaces.len() > limit).then(|| {
            namespaces.truncate(limit);
            URL_SAFE_NO_PAD.encode(namespaces[limit - 1].as_bytes())
        });
        Ok(NamespacePage {
            namespaces,
            next_page_token: next,
        })
    }

    /// Sets the queue's dispatch limit, as `PUT {q}/config` does: `Some(0.0)` pauses
    /// dispatch, `None` removes the limit; `burst` defaults to one second's worth. Stored
    /// (answered once on disk), kept across restarts, and it overrides a limit sent by
    /// workers. Adds are never throttled.
    pub async fn set_config(
        &self,
        queue: &QueueKey,
        max_tasks_per_second: Option<f64>,
        burst: Option<u64>,
    ) -> Result<RateLimitView> {
        let rate_limit = RateLimit::requested(max_tasks_per_second, burst)?;
        self.serving_queues()?
            .call_durable(queue, SetConfig { rate_limit }, self.store())
            .await
    }

    /// The dead letters of `queue`, newest first: `limit` (1–1000) records after the page
    /// `page_token`, and the token of the next page.
    pub async fn dead_letters(
        &self,
        queue: &QueueKey,
        page_token: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TaskRecord>, Option<String>)> {
        check_limit(limit)?;
        let before = decode_token(page_token)?;
        self.serving_queues()?;
        let (ids, next) = self.store().dead_letters(queue, before.as_deref(), limit)?;
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(rec) = self.store().task(queue, &id)? {
                records.push(rec);
            }
        }
        Ok((records, next.map(|k| URL_SAFE_NO_PAD.encode(k))))
    }

    /// Puts dead letters (`None`: all of the queue's) back as pending with their attempts
    /// reset, as `POST {q}/dead-letters/redrive` does; answers how many, once on disk.
    pub async fn redrive(&self, queue: &QueueKey, task_ids: Option<Vec<String>>) -> Result<usize> {
        if let Some(ids) = &task_ids {
            validate_task_ids(ids)?;
        }
        self.serving_queues()?
            .call_durable(queue, Redrive { task_ids }, self.store())
            .await
    }
}

/// Checks a page size.
fn check_limit(limit: usize) -> Result<()> {
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!(
            "limit must be 1–{MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    Ok(())
}

/// A page token this server gave out (an empty one is none).
fn decode_token(token: Option<&str>) -> Result<Option<Vec<u8>>> {
    match token.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .map(Some)
            .map_err(|_| Error::invalid("page_token is not one this server gave")),
    }
}
