//! The `tasq` binary: parse the command line, load the configuration, serve.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tasq::config::{Config, Overrides};

/// tasq: a task-queue server with long-polling workers and a durable store.
#[derive(Parser)]
#[command(name = "tasq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, tasq serves.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
}

#[derive(Args, Clone, Default)]
struct ServeArgs {
    /// Config file (TOML); every key is documented in config/tasq.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (overrides `bind` and TASQ_BIND).
    #[arg(long, value_name = "ADDR")]
    bind: Option<SocketAddr>,
    /// Store directory (overrides `data_dir` and TASQ_DATA_DIR).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    let overrides = Overrides {
        bind: args.bind,
        data_dir: args.data_dir,
    };
    let config = match Config::load(args.config.as_deref(), std::env::vars(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tasq: {e}");
            std::process::exit(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&config.log_level))
        .init();
    if let Err(e) = actix_rt::System::new().block_on(tasq::server::run(config)) {
        eprintln!("tasq: {e}");
        std::process::exit(1);
    }
}
