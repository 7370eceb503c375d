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
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh API key and the config entry (with only its hash) to paste under [auth].
    New {
        /// Namespace the key may act on (repeat for several; `*` for all).
        #[arg(long = "namespace", required = true)]
        namespaces: Vec<String>,
        /// Role: producer, worker or admin (repeat for several).
        #[arg(long = "role", required = true, value_parser = ["producer", "worker", "admin"])]
        roles: Vec<String>,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Prints a new key and its config entry.
fn new_key(namespaces: &[String], roles: &[String], name: Option<String>) {
    let key = tasq::auth::new_key();
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let name = name.unwrap_or_else(|| format!("{}-{}", roles.join("-"), namespaces.join("-")));
    println!("{key}");
    println!();
    println!("# Keep the key above secret; paste this under [auth] (only its hash is stored):");
    println!("[[auth.keys]]");
    println!("name = {name:?}");
    println!("sha256 = \"{}\"", tasq::auth::digest_hex(&key));
    println!("namespaces = [{}]", list(namespaces));
    println!("roles = [{}]", list(roles));
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
    /// Serve a non-loopback address with auth off (refused otherwise).
    #[arg(long)]
    insecure: bool,
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Key(KeyCommand::New {
            namespaces,
            roles,
            name,
        })) => {
            new_key(&namespaces, &roles, name);
            return;
        }
        None => cli.serve,
    };
    let overrides = Overrides {
        bind: args.bind,
        data_dir: args.data_dir,
        insecure: args.insecure,
    };
    let source = tasq::server::ConfigSource {
        file: args.config.clone(),
        overrides: overrides.clone(),
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
    if let Err(e) = actix_rt::System::new().block_on(tasq::server::run(config, source)) {
        eprintln!("tasq: {e}");
        std::process::exit(1);
    }
}
