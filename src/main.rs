//! The `tasq` binary: parse the command line, then serve (`tasq`, `tasq serve`) or run a
//! client subcommand (`tasq task|queue|dead-letters|worker`, see [`tasq::cli`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tasq::cli::dead_letters::DeadLetterCommand;
use tasq::cli::queue::QueueCommand;
use tasq::cli::task::TaskCommand;
use tasq::cli::worker::WorkerArgs;
use tasq::cli::{CliResult, ClientArgs};
use tasq::config::{Config, Overrides};

/// jemalloc rather than the system allocator: the server allocates and frees small objects
/// on several threads at a high rate (sled clones and serializes tree nodes on every write),
/// where jemalloc's thread caches cost less CPU per task than glibc's arenas.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: a background thread hands memory freed for a
/// second back to the OS, so RSS falls after a burst of connections or queue actors ends
/// (jemalloc otherwise only purges while the program allocates).
#[export_name = "_rjem_malloc_conf"]
#[used]
static JEMALLOC_CONF: Option<&'static std::ffi::c_char> = Some(
    // SAFETY: a pointer to the first byte of a 'static C string literal.
    unsafe {
        &*c"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:1000"
            .as_ptr()
    },
);

/// tasq: a task-queue server with long-polling workers and a durable store, and its client.
#[derive(Parser)]
#[command(name = "tasq", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand, tasq serves.
    #[command(flatten)]
    serve: ServeArgs,
}

/// A client command group: its subcommands and where they send their requests
/// (`--server`, `--namespace`, `--api-key`, `--json` may come anywhere after the group name).
#[derive(Args)]
struct Group<C: Subcommand> {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: C,
}

/// `tasq worker`: where to poll, and the worker's own arguments.
#[derive(Args)]
struct WorkerCommand {
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Add tasks, show their status, cancel them.
    Task(Group<TaskCommand>),
    /// Describe, list and configure task queues.
    Queue(Group<QueueCommand>),
    /// List and redrive dead letters (tasks that failed for good or timed out).
    #[command(name = "dead-letters")]
    DeadLetters(Group<DeadLetterCommand>),
    /// Run a shell command per task of a queue (payload on stdin, task fields in TASQ_* env).
    Worker(WorkerCommand),
    /// The nodes of the cluster the server belongs to: `tasq cluster status`.
    Cluster(Group<tasq::cli::cluster::ClusterCommand>),
    /// API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Offline commands on a data directory: `tasq store verify DIR`.
    #[command(subcommand)]
    Store(tasq::cli::store::StoreCommand),
    /// Load generator: run a workload against a running server (or `soak`).
    Bench(tasq::bench::BenchArgs),
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Print a fresh token for GET /metrics and the metrics_token_sha256 line for [auth].
    MetricsToken,
    /// Print a fresh API key and the config entry (with only its hash) to paste under [auth].
    New {
        /// Namespace the key may act on (repeat for several; `*` for all).
        #[arg(long = "namespace", required = true)]
        namespaces: Vec<String>,
        /// Role: producer, worker, admin or viewer (read-only; repeat for several).
        #[arg(long = "role", required = true, value_parser = ["producer", "worker", "admin", "viewer"])]
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
    let result: CliResult = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::Key(KeyCommand::New {
            namespaces,
            roles,
            name,
        })) => match namespaces.iter().find(|ns| !tasq::auth::namespace_ok(ns)) {
            Some(bad) => Err(tasq::cli::CliError::usage(format!(
                "--namespace {bad:?}: a namespace is 1–200 of A–Z a–z 0–9 . _ - : @, or * for all"
            ))),
            None => {
                new_key(&namespaces, &roles, name);
                Ok(())
            }
        },
        Some(Command::Key(KeyCommand::MetricsToken)) => {
            let token = tasq::auth::new_key();
            println!("{token}");
            println!();
            println!("# Give the token above to Prometheus (authorization.credentials);");
            println!("# put this line under [auth] (only its hash is stored):");
            println!(
                "metrics_token_sha256 = \"{}\"",
                tasq::auth::digest_hex(&token)
            );
            Ok(())
        }
        Some(Command::Store(c)) => tasq::cli::store::run(c),
        Some(Command::Task(g)) => tasq::cli::task::run(&g.client, g.command),
        Some(Command::Queue(g)) => tasq::cli::queue::run(&g.client, g.command),
        Some(Command::Cluster(g)) => tasq::cli::cluster::run(&g.client, g.command),
        Some(Command::DeadLetters(g)) => tasq::cli::dead_letters::run(&g.client, g.command),
        Some(Command::Worker(w)) => tasq::cli::worker::run(&w.client, w.worker),
        Some(Command::Bench(args)) => {
            if let Err(e) = tasq::bench::run(args) {
                eprintln!("tasq bench: {e}");
                std::process::exit(1);
            }
            Ok(())
        }
    };
    if let Err(e) = result {
        if let Some(line) = e.line() {
            eprintln!("{line}");
        }
        std::process::exit(e.exit_code());
    }
}

fn serve(args: ServeArgs) -> CliResult {
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
    for name in tasq::config::unknown_env(std::env::vars()) {
        log::warn!("environment variable {name} names no tasq setting; it is ignored");
    }
    if let Err(e) = actix_rt::System::new().block_on(tasq::server::run(config, source)) {
        eprintln!("tasq: {e}");
        let bad_setting = e.kind() == std::io::ErrorKind::InvalidInput;
        std::process::exit(if bad_setting { 2 } else { 1 });
    }
    Ok(())
}
