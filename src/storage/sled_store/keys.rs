//! Key encoding for the sled trees.
//!
//! Every per-queue key starts with the queue prefix `namespace \0 name \0 type-tag`. Names never
//! contain `\0` and the tag is one byte, so no queue's prefix is a prefix of another's and a
//! prefix scan reads exactly one queue. Numbers are big-endian so keys sort as the numbers do:
//! the ready index sorts in dispatch order (priority, order, sequence) and is read by range scan.

use crate::model::{QueueKey, QueueType};
use crate::storage::ReadyPos;

/// The prefix shared by every key of one queue.
pub fn queue_prefix(key: &QueueKey) -> Vec<u8> {
    let mut p = Vec::with_capacity(key.namespace().len() + key.name().len() + 3);
    push_queue(&mut p, key);
    p
}

/// The prefix shared by every queue of a namespace.
pub fn namespace_prefix(namespace: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(namespace.len() + 1);
    p.extend_from_slice(namespace.as_bytes());
    p.push(0);
    p
}

fn push_queue(out: &mut Vec<u8>, key: &QueueKey) {
    out.extend_from_slice(key.namespace().as_bytes());
    out.push(0);
    out.extend_from_slice(key.name().as_bytes());
    out.push(0);
    out.push(key.queue_type().tag());
}

/// Splits a key that starts with a queue prefix into the queue and the rest.
pub fn split_queue(raw: &[u8]) -> Option<(QueueKey, &[u8])> {
    let ns_end = raw.iter().position(|&b| b == 0)?;
    let name_end = ns_end + 1 + raw[ns_end + 1..].iter().position(|&b| b == 0)?;
    let kind = QueueType::from_tag(*raw.get(name_end + 1)?)?;
    let ns = std::str::from_utf8(&raw[..ns_end]).ok()?;
    let name = std::str::from_utf8(&raw[ns_end + 1..name_end]).ok()?;
    Some((
        QueueKey::new_unchecked(ns.into(), name.into(), kind),
        &raw[name_end + 2..],
    ))
}

/// A key in the `tasks` (and `inflight`) tree: prefix + task id.
pub fn task_key(key: &QueueKey, task_id: &str) -> Vec<u8> {
    let mut k = queue_prefix(key);
    k.extend_from_slice(task_id.as_bytes());
    k
}

impl ReadyPos {
    /// The full key in the `ready` tree.
    pub fn key(&self, queue: &QueueKey) -> Vec<u8> {
        let mut k = queue_prefix(queue);
        self.push(&mut k);
        k
    }

    fn push(&self, k: &mut Vec<u8>) {
        k.push(self.priority);
        k.extend_from_slice(&self.order.to_be_bytes());
        k.extend_from_slice(&self.seq.to_be_bytes());
    }

    /// Decodes the part of a ready key after the queue prefix.
    pub fn decode(rest: &[u8]) -> Option<Self> {
        if rest.len() != 17 {
            return None;
        }
        Some(ReadyPos {
            priority: rest[0],
            order: u64::from_be_bytes(rest[1..9].try_into().ok()?),
            seq: u64::from_be_bytes(rest[9..17].try_into().ok()?),
        })
    }
}

/// A key in the `delayed` tree: prefix + due time + seq, so the first key is the next due.
pub fn delayed_key(queue: &QueueKey, due: u64, seq: u64) -> Vec<u8> {
    let mut k = queue_prefix(queue);
    k.extend_from_slice(&due.to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Decodes (due, seq) from the part of a delayed key after the queue prefix.
pub fn decode_delayed(rest: &[u8]) -> Option<(u64, u64)> {
    if rest.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(rest[..8].try_into().ok()?),
        u64::from_be_bytes(rest[8..].try_into().ok()?),
    ))
}

/// A key in the `dead` tree: prefix + time it died + seq; read backwards for newest first.
pub fn dead_key(queue: &QueueKey, at: u64, seq: u64) -> Vec<u8> {
    delayed_key(queue, at, seq)
}

/// A key in the global `expiry` tree: expiry time + queue prefix + task id, so the purge
/// reads what is due across all queues with one range scan.
pub fn expiry_key(at: u64, queue: &QueueKey, task_id: &str) -> Vec<u8> {
    let mut k = at.to_be_bytes().to_vec();
    push_queue(&mut k, queue);
    k.extend_from_slice(task_id.as_bytes());
    k
}

/// The value of an expiry key: the task ids of its group besides the one that ends the key,
/// `\0` between them (task ids never hold it); empty when the key names one record.
pub fn expiry_value(more: &[String]) -> Vec<u8> {
    more.join("\0").into_bytes()
}

/// The task ids held in an expiry key's value, besides the one in the key.
pub fn expiry_ids(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == 0)
        .filter(|id| !id.is_empty())
        .filter_map(|id| std::str::from_utf8(id).ok())
}

/// Decodes an expiry key into (time, queue, task id).
pub fn decode_expiry(raw: &[u8]) -> Option<(u64, QueueKey, String)> {
    let at = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    let (queue, rest) = split_queue(&raw[8..])?;
    Some((at, queue, String::from_utf8(rest.to_vec()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(ns: &str, name: &str) -> QueueKey {
        QueueKey::new(ns, name, QueueType::Activity).unwrap()
    }

    #[test]
    fn ready_keys_sort_in_dispatch_order() {
        let queue = q("ns", "q");
        let positions = [
            ReadyPos {
                priority: 1,
                order: 50,
                seq: 9,
            },
            ReadyPos {
                priority: 1,
                order: 100,
                seq: 1,
            },
            ReadyPos {
                priority: 1,
                order: 100,
                seq: 2,
            },
            ReadyPos {
                priority: 2,
                order: 0,
                seq: 0,
            },
            ReadyPos {
                priority: 5,
                order: 1,
                seq: 0,
            },
        ];
        let keys: Vec<_> = positions.iter().map(|p| p.key(&queue)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let prefix = queue_prefix(&queue);
        for (p, k) in positions.iter().zip(&keys) {
            assert_eq!(ReadyPos::decode(&k[prefix.len()..]), Some(*p));
        }
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let a = queue_prefix(&q("ns", "q"));
        let b = queue_prefix(&q("ns", "q2"));
        let c = queue_prefix(&QueueKey::new("ns", "q", QueueType::Workflow).unwrap());
        let d = queue_prefix(&q("ns2", "q"));
        for (x, y) in [(&a, &b), (&a, &c), (&a, &d), (&b, &a)] {
            assert!(!y.starts_with(x));
        }
        assert!(a.starts_with(&namespace_prefix("ns")));
        assert!(!d.starts_with(&namespace_prefix("ns")));
    }

    #[test]
    fn expiry_and_delayed_keys_round_trip() {
        let queue = q("n.s", "q:1");
        let k = expiry_key(42, &queue, "id-1");
        assert_eq!(decode_expiry(&k), Some((42, queue.clone(), "id-1".into())));
        let (due, seq) =
            decode_delayed(&delayed_key(&queue, 5, 6)[queue_prefix(&queue).len()..]).unwrap();
        assert_eq!((due, seq), (5, 6));
    }
}
