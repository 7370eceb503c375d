//! Several tasq nodes sharing the queues on one PostgreSQL database (cluster mode).
//!
//! Each task queue has one owner node at a time. Which node owns a queue is decided by
//! [`placement`] (rendezvous hashing over the live nodes), and enforced by the store: a node
//! writes only the queues it took, each commit checking the queue's fence number (see
//! `storage::postgres` and `tests/fencing.rs`).
//!
//! [`node`] is this node's membership (heartbeats, the live nodes, who owns a queue); the
//! service reconciles the queues this node holds with the placement every heartbeat, and the
//! HTTP edge forwards a request for a queue owned elsewhere to its owner, over TLS checked by
//! [`tls`] when the nodes serve HTTPS.

#[cfg(feature = "postgres")]
pub mod node;
pub mod placement;
#[cfg(feature = "postgres")]
pub mod tls;

#[cfg(feature = "postgres")]
pub use node::{Cluster, Owner};
