//! tasq: a task-queue server. Producers add tasks to named task queues; workers long-poll for
//! them over HTTP, hold a lease while they work, and settle each task (complete, fail,
//! heartbeat). Ideas from Temporal's task queues: queues exist on demand, every name exists once
//! as an `activity` and once as a `workflow` queue, and tasks persist while workers are down.
//!
//! # Layout
//!
//! - [`auth`]: API keys per namespace and role, checked in constant time, reloadable.
//! - [`config`]: every setting, its default, and loading (file < `TASQ_*` env < command line).
//! - [`error`]: the one error type and its stable codes (`invalid_argument`, `lease_lost`…).
//! - [`model`]: queue keys, task specs and validation, stored records, lease tokens.
//! - [`storage`]: the sled store behind a narrow interface; key encoding; group commit.
//! - [`queue`]: the queue actor (one per task queue): backlog window, parked polls, leases.
//! - [`registry`]: the registry actor that spawns, supervises and forgets queue actors.
//! - [`http`]: the actix-web API, one module per resource; JSON bodies and errors.
//! - [`metrics`]: every Prometheus metric on one explicit registry.
//! - [`embed`]: the embedding API ([`Tasq`]): start the actor system in-process (own data dir
//!   or a temporary store), then add, poll, settle, describe; mount the HTTP API on your own
//!   actix-web `App`. `tasq serve` starts through it too.
//! - [`server`]: `tasq serve`: the embedding start-up plus the HTTP server and signals.
//! - [`cli`]: the command-line client in the same binary (`tasq task|queue|dead-letters`) and
//!   the shell worker (`tasq worker QUEUE --exec CMD`), over HTTP.
//! - [`clock`]: epoch milliseconds and RFC 3339.
//! - [`bench`](mod@bench): `tasq bench`, the load generator (backlog, live, latency, queues,
//!   pollers); see `docs/benchmarks.md`.
//! - `soak` (feature `client`): the soak test (`tasq bench soak`): a server child restarted
//!   twice, producers, HTTP and WebSocket worker processes killed at random, then an
//!   exactly-once check.
//! - `client` (feature `client`, on by default): `Worker`, a streaming worker over WebSocket.
//!
//! Tests in `tests/` drive the real binary over real HTTP; `config/tasq.toml` documents every
//! setting; `docs/` holds the API and metrics contracts.

pub mod auth;
pub mod bench;
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
pub mod server;
#[cfg(feature = "client")]
pub mod soak;
pub mod storage;

pub use config::Config;
pub use embed::{Failure, PollSpec, TaskInfo, TaskSpec, Tasq};
pub use error::Error;
pub use model::{QueueKey, QueueType, Task};
