//! Runs the soak test (`tasq::soak`) until `tasq bench soak` is wired:
//! `cargo run --release --example soak -- --duration 10m`.

use clap::Parser;

/// The soak test: a real server under churn, then an exactly-once check.
#[derive(Parser)]
#[command(name = "soak")]
struct Cli {
    #[command(flatten)]
    args: tasq::soak::SoakArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = tasq::soak::run(cli.args) {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}
