//! tasq: a task-queue server. Producers add tasks to named task queues; workers long-poll for
//! them over HTTP, hold a lease while they work, and settle each task (complete, fail,
//! heartbeat). Ideas from Temporal's task queues: queues exist on demand, every name exists once
//! as an `activity` and once as a `workflow` queue, and tasks persist while workers are down.
//!
//! # Layout
//!
//! Layers, each using only those above it in this list (`.ci/layers` checks it):
//!
//! - [`model`], [`error`], [`clock`]: queue keys, task specs and their validation, stored
//!   records, lease tokens, rate limits, JSON decoding; the one error type and its stable
//!   codes; epoch milliseconds, RFC 3339, and the injectable [`clock::Clock`].
//! - [`metrics`]: every Prometheus metric on one explicit registry. [`auth`]: API keys per
//!   namespace and role, checked in constant time, reloadable.
//! - [`config`]: every setting, its default, and loading (file < `TASQ_*` env < command line).
//! - [`storage`]: the [`storage::Store`] trait (the seam: records, ready entries, leases,
//!   queue meta, group-committed transactions), its sled implementation
//!   ([`storage::sled_store`]: disk space, health, the durability watermark, `tasq store
//!   verify`) and its PostgreSQL one (`storage::postgres`, feature `postgres`), the group
//!   commit, `tasq store copy`.
//! - [`cluster`]: several nodes on one PostgreSQL database: which node owns a queue
//!   (rendezvous hashing); the store fences ownership. Not servable yet.
//! - [`queue`]: the queue actor (one per task queue), one file per concern: add, dispatch,
//!   settle, sockets, admin, timers; backlog window, parked polls, leases, fairness, throttle.
//! - [`registry`]: the registry actor that spawns, supervises and forgets queue actors, and
//!   reports the queues no actor holds.
//! - [`service`]: the one front door ([`Tasq`]): starts the actor system (own data dir or a
//!   temporary store) and is the only code that sends queue actors messages. Embedders call
//!   it in-process; `tasq serve` starts through it.
//! - [`http`]: the actix-web API, one module per resource: parse, call the service, encode;
//!   mounts on an embedder's `App` with `Tasq::configure`. `client` (feature `client`):
//!   `Worker`, a streaming worker over WebSocket.
//! - `server` (feature `server`): `tasq serve`: the service's start-up plus the HTTP server,
//!   TLS and signals. `cli` (feature `cli`): the command-line client (`tasq
//!   task|queue|dead-letters|store`) and the shell worker. `soak` (feature `bench`): a server
//!   child restarted twice under churn, then an exactly-once check.
//! - `sqs` (feature `sqs`): the SQS-compatible endpoint (`[sqs] enabled`), an edge beside
//!   [`http`] on its own listener: both SQS protocols, Signature V4, SQS's queues and messages
//!   as tasq's.
//! - `bench` (feature `bench`): `tasq bench`, the load generator; see `docs/benchmarks.md`.
//!
//! `default-features = false, features = ["embed"]` builds everything down to [`http`] and
//! nothing of the binary's tools (clap, hyper, indicatif, hdrhistogram, ureq, jemalloc).
//!
//! Tests in `tests/` drive the real binary over real HTTP; `config/tasq.toml` documents every
//! setting; `docs/` holds the API and metrics contracts.

pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
pub mod service;
#[cfg(feature = "bench")]
pub mod soak;
#[cfg(feature = "sqs")]
pub mod sqs;
pub mod storage;

pub use config::Config;
pub use error::Error;
pub use model::{QueueKey, QueueType, Task};
pub use service::{Failure, PollSpec, TaskInfo, TaskSpec, Tasq};
