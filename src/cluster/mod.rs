//! Several tasq nodes sharing the queues on one PostgreSQL database (cluster mode).
//!
//! Each task queue has one owner node at a time. Which node owns a queue is decided by
//! [`placement`] (rendezvous hashing over the live nodes), and enforced by the store: a node
//! writes only the queues it took, each commit checking the queue's fence number (see
//! `storage::postgres` and `tests/fencing.rs`).
//!
//! Built so far: the placement and the store's fencing. Routing requests to the owner,
//! membership heartbeats, takeover and handover come next; until then `cluster.enabled` is
//! refused at start-up.

#[cfg(feature = "postgres")]
pub mod node;
pub mod placement;

#[cfg(feature = "postgres")]
pub use node::{Cluster, Owner};
