//! `tasq store`: offline commands on a data directory (the server must not be running on it).

use std::path::PathBuf;

use clap::Subcommand;

use super::{CliError, CliResult};

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
}

/// Runs a store command.
pub fn run(command: StoreCommand) -> CliResult {
    match command {
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
