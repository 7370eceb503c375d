//! Which node owns a queue: rendezvous (highest random weight) hashing of the queue's key
//! over the live nodes. Every node computes the same answer from the same list of nodes, with
//! no coordination, and when a node joins or leaves only the queues it gains or loses move
//! (about one in n), the rest stay where they are.
//!
//! The hash is spelled out here (FNV-1a, then a 64-bit finaliser) rather than taken from the
//! standard library, whose hasher may change between Rust releases: nodes built apart, as in a
//! rolling upgrade, must agree.

use crate::model::QueueKey;

/// The node that owns `queue` among `nodes` (their ids), `None` when there is none. The
/// order of `nodes` does not matter.
pub fn owner<'a>(queue: &QueueKey, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let key = queue_bytes(queue);
    nodes
        .into_iter()
        .max_by_key(|node| (score(&key, node), *node))
}

/// The queue's key as bytes: namespace, name and type, each ended by a 0 (names hold none).
fn queue_bytes(queue: &QueueKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(queue.namespace().len() + queue.name().len() + 12);
    key.extend_from_slice(queue.namespace().as_bytes());
    key.push(0);
    key.extend_from_slice(queue.name().as_bytes());
    key.push(0);
    key.extend_from_slice(queue.queue_type().as_str().as_bytes());
    key.push(0);
    key
}

/// The weight of `node` for a queue: a hash of both, well mixed.
fn score(queue: &[u8], node: &str) -> u64 {
    let mut h = fnv1a(FNV_OFFSET, queue);
    h = fnv1a(h, node.as_bytes());
    mix(h)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64's finaliser: FNV alone leaves nearby inputs with nearby high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QueueType;
    use std::collections::HashMap;

    fn queues(n: usize) -> Vec<QueueKey> {
        (0..n)
            .map(|i| QueueKey::new_unchecked("ns".into(), format!("q{i}"), QueueType::Activity))
            .collect()
    }

    fn nodes(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn owners(qs: &[QueueKey], ns: &[String]) -> Vec<String> {
        qs.iter()
            .map(|q| {
                owner(q, ns.iter().map(String::as_str))
                    .expect("an owner")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn no_nodes_no_owner_and_the_order_of_nodes_does_not_matter() {
        let q = &queues(1)[0];
        assert_eq!(owner(q, []), None);
        let qs = queues(500);
        let a = owners(&qs, &nodes(&["n1", "n2", "n3"]));
        let b = owners(&qs, &nodes(&["n3", "n1", "n2"]));
        assert_eq!(a, b);
    }

    #[test]
    fn the_answer_is_fixed_across_builds() {
        // Nodes of different builds must agree: these were computed once and must not change.
        let ns = ["node-a", "node-b", "node-c"];
        let q = |name: &str, t| QueueKey::new_unchecked("default".into(), name.into(), t);
        assert_eq!(owner(&q("emails", QueueType::Activity), ns), Some("node-a"));
        assert_eq!(owner(&q("emails", QueueType::Workflow), ns), Some("node-c"));
        assert_eq!(
            owner(&q("billing", QueueType::Activity), ns),
            Some("node-b")
        );
    }

    #[test]
    fn queues_spread_evenly() {
        let qs = queues(30_000);
        let ns = nodes(&["n1", "n2", "n3"]);
        let mut count: HashMap<String, usize> = HashMap::new();
        for o in owners(&qs, &ns) {
            *count.entry(o).or_default() += 1;
        }
        for n in &ns {
            let c = count.get(n).copied().unwrap_or(0);
            assert!((9_000..=11_000).contains(&c), "{n}: {c} of 30,000");
        }
    }

    #[test]
    fn a_node_leaving_or_joining_moves_only_its_share() {
        let qs = queues(30_000);
        let three = owners(&qs, &nodes(&["n1", "n2", "n3"]));
        let two = owners(&qs, &nodes(&["n1", "n2"]));
        for (before, after) in three.iter().zip(&two) {
            if before != "n3" {
                assert_eq!(before, after, "a queue of a node that stayed moved");
            }
        }
        let four = owners(&qs, &nodes(&["n1", "n2", "n3", "n4"]));
        let moved = three.iter().zip(&four).filter(|(b, a)| b != a).count();
        assert!(four.iter().zip(&three).all(|(a, b)| a == b || a == "n4"));
        assert!(
            (6_000..=9_000).contains(&moved),
            "{moved} of 30,000 moved to the new node"
        );
    }
}
