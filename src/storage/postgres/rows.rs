//! How values are stored in the tables: a queue's key, numbers, a queue's counters, and the
//! page tokens of the lists.

use postgres::Row;

use crate::error::{Error, Result};
use crate::model::rate::RateLimit;
use crate::model::{QueueKey, QueueType};
use crate::storage::QueueMeta;

/// How a queue's key is stored: namespace, name, type tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Q(pub String, pub String, pub i16);

impl Q {
    pub fn of(k: &QueueKey) -> Q {
        Q(
            k.namespace().to_string(),
            k.name().to_string(),
            i16::from(k.queue_type().tag()),
        )
    }

    pub fn key(&self) -> Option<QueueKey> {
        let kind = QueueType::from_tag(u8::try_from(self.2).ok()?)?;
        Some(QueueKey::new_unchecked(
            self.0.clone(),
            self.1.clone(),
            kind,
        ))
    }
}

/// A `u64` as a `bigint` (instants in ms, sequences, passes: all far below `i64::MAX`).
pub fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `bigint` read back.
pub fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// (queue, task id) of each row whose columns 0 to 3 are `namespace, queue, queue_type,
/// task_id`.
pub fn task_keys(rows: Vec<Row>) -> Vec<(QueueKey, String)> {
    rows.into_iter()
        .filter_map(|r| Some((Q(r.get(0), r.get(1), r.get(2)).key()?, r.get(3))))
        .collect()
}

/// A queue's counters and settings, from a row whose columns 3 to 8 are `ready, delayed,
/// in_flight, dead, max_tasks_per_second, burst`.
pub fn meta_of(r: &Row) -> QueueMeta {
    let rate: Option<f64> = r.get(7);
    let burst: Option<i64> = r.get(8);
    QueueMeta {
        ready: u64_of(r.get(3)),
        delayed: u64_of(r.get(4)),
        in_flight: u64_of(r.get(5)),
        dead: u64_of(r.get(6)),
        rate_limit: rate.map(|max_tasks_per_second| RateLimit {
            max_tasks_per_second,
            burst: burst.and_then(|b| u32::try_from(b).ok()).unwrap_or(1),
        }),
    }
}

/// Rows of queues and their counters, from a `SELECT namespace, queue, queue_type,
/// ready, delayed, in_flight, dead, max_tasks_per_second, burst`.
pub fn queue_rows(rows: Vec<Row>) -> Vec<(QueueKey, QueueMeta)> {
    rows.into_iter()
        .filter_map(|r| {
            let key = Q(r.get(0), r.get(1), r.get(2)).key()?;
            Some((key, meta_of(&r)))
        })
        .collect()
}

/// The page token after `key`: `name \0 type tag`, as the list's order.
pub fn queue_token(key: &QueueKey) -> Vec<u8> {
    let mut t = key.name().as_bytes().to_vec();
    t.push(0);
    t.push(key.queue_type().tag());
    t
}

pub fn decode_queue_token(namespace: &str, token: &[u8]) -> Result<(String, i16)> {
    let bad = || {
        Error::invalid(format!(
            "page_token is not one this server gave for namespace {namespace:?}"
        ))
    };
    let (tag, name) = token.split_last().ok_or_else(bad)?;
    let name = name.strip_suffix(&[0]).ok_or_else(bad)?;
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    QueueType::from_tag(*tag).ok_or_else(bad)?;
    Ok((name.to_string(), i16::from(*tag)))
}

pub fn decode_dead_token(token: &[u8]) -> Result<(i64, i64)> {
    let bad = || Error::invalid("page_token is not one this server gave");
    let at = token.get(..8).ok_or_else(bad)?;
    let seq = token.get(8..16).ok_or_else(bad)?;
    if token.len() != 16 {
        return Err(bad());
    }
    Ok((
        i64::from_be_bytes(at.try_into().map_err(|_| bad())?),
        i64::from_be_bytes(seq.try_into().map_err(|_| bad())?),
    ))
}
