//! `tasq store`: offline commands on a store (no server may be running on it): check a sled
//! data directory, copy a store into another backend.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use super::{CliError, CliResult};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::storage::{SledStore, Store, StoreOptions};

/// `tasq store …`.
#[derive(Subcommand)]
pub enum StoreCommand {
    /// Reports what is damaged in a store, without changing it (it reads a copy): whether
    /// sled can open it, whether it lost writes it had synced, and whether every record,
    /// index entry, payload and counter agrees. Exits 0 when clean, 1 when damaged.
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Copies everything a store holds (tasks in every state, dead letters, queue settings)
    /// into another, empty one: `sled:DIR` or a `postgres://` URL on either side. Stop the
    /// servers on both first. Refuses a target that holds anything.
    Copy {
        /// The store to read: `sled:DIR` or `postgres://…`.
        #[arg(long)]
        from: String,
        /// The empty store to write: `sled:DIR` or `postgres://…`.
        #[arg(long)]
        to: String,
    },
}

/// Opens a store named `sled:DIR` or by a PostgreSQL URL; `must_exist`: a sled directory
/// must be there already (the source of a copy).
fn open(spec: &str, must_exist: bool) -> Result<Arc<dyn Store>, CliError> {
    let metrics = Metrics::new(1);
    if let Some(dir) = spec.strip_prefix("sled:") {
        let dir = PathBuf::from(dir);
        if must_exist && !dir.is_dir() {
            return Err(CliError::Local(Error::invalid(format!(
                "no data directory at {}",
                dir.display()
            ))));
        }
        let opts = StoreOptions {
            fsync: true,
            cache_capacity_bytes: 64 << 20,
            temporary: false,
            ..StoreOptions::scratch()
        };
        let store = SledStore::open(&dir, &opts, metrics).map_err(CliError::Local)?;
        return Ok(store);
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return open_postgres(spec, metrics);
    }
    Err(CliError::Local(Error::invalid(format!(
        "{spec:?} names no store: use sled:DIR or a postgres:// URL"
    ))))
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, metrics: Arc<Metrics>) -> Result<Arc<dyn Store>, CliError> {
    use crate::storage::postgres::{PgOptions, PgStore};
    let opts = PgOptions {
        url: url.to_string(),
        pool_size: 2,
        statement_timeout: std::time::Duration::from_secs(600),
        synchronous_commit: true,
        node: None,
        node_timeout: std::time::Duration::from_secs(10),
    };
    Ok(PgStore::open(&opts, metrics).map_err(CliError::Local)?)
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str, _metrics: Arc<Metrics>) -> Result<Arc<dyn Store>, CliError> {
    Err(CliError::Local(Error::invalid(
        "this tasq was built without the postgres feature",
    )))
}

/// Runs a store command.
pub fn run(command: StoreCommand) -> CliResult {
    match command {
        StoreCommand::Copy { from, to } => {
            let source = open(&from, true)?;
            let target = open(&to, false)?;
            let copied = crate::storage::copy::copy(&*source, &*target).map_err(CliError::Local)?;
            println!(
                "copied {} task records and {} queues ({} writes) from {from} to {to}",
                copied.tasks, copied.queues, copied.writes
            );
            Ok(())
        }
        StoreCommand::Verify { dir } => {
            let report =
                crate::storage::sled_store::verify::verify(&dir).map_err(CliError::Local)?;
            println!(
                "{}: {} task records in {} queues",
                dir.display(),
                report.tasks,
                report.queues
            );
            for p in &report.problems {
                println!("damaged: {p}");
            }
            if report.clean() {
                println!("ok: nothing damaged");
                Ok(())
            } else {
                Err(CliError::Remote(crate::error::Error::Internal(format!(
                    "the store in {} is damaged ({} problems above)",
                    dir.display(),
                    report.problems.len()
                ))))
            }
        }
    }
}
