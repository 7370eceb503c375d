//! tasq: a task-queue server. Producers add tasks to named task queues; workers long-poll for
//! them over HTTP, hold a lease while they work, and settle each task (complete, fail,
//! heartbeat). Ideas from Temporal's task queues: queues exist on demand, every name exists once
//! as an `activity` and once as a `workflow` queue, and tasks persist while workers are down.
//!
//! # Layout
//!
//! Layers, each using only those above it in this list (`.ci/layers` checks it):
//!
//! - [`model`], [`error`], [`clock`]: queue keys, task specs and validation, stored records,
//!   lease tokens, rate limits, JSON decoding; the one error type and its stable codes; epoch
//!   milliseconds and RFC 3339.
//! - [`metrics`]: every Prometheus metric on one explicit registry. [`auth`]: API keys per
//!   namespace and role, checked in constant time, reloadable.
//! - [`config`]: every setting, its default, and loading (file < `TASQ_*` env < command line).
//! - [`storage`]: the sled store behind a narrow interface; key encoding; group commit; disk
//!   space, health and the durability watermark; `tasq store verify`.
//! - [`queue`]: the queue actor (one per task queue): backlog window, parked polls, leases.
//! - [`registry`]: the registry actor that spawns, supervises and forgets queue actors, and
//!   reports the queues no actor holds.
//! - [`embed`]: the embedding API ([`Tasq`]): start the actor system in-process (own data dir
//!   or a temporary store), then add, poll, settle, describe. `tasq serve` starts through it.
//! - [`http`]: the actix-web API, one module per resource; JSON bodies and errors; mounts on an
//!   embedder's `App` with `Tasq::configure`. `client` (feature `client`): `Worker`, a
//!   streaming worker over WebSocket.
//! - `server` (feature `server`): `tasq serve`: the embedding start-up plus the HTTP server,
//!   TLS and signals. `cli` (feature `cli`): the command-line client (`tasq
//!   task|queue|dead-letters|store`) and the shell worker. `soak` (feature `bench`): a server
//!   child restarted twice under churn, then an exactly-once check.
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
pub mod config;
pub mod embed;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod registry;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "bench")]
pub mod soak;
pub mod storage;

pub use config::Config;
pub use embed::{Failure, PollSpec, TaskInfo, TaskSpec, Tasq};
pub use error::Error;
pub use model::{QueueKey, QueueType, Task};
