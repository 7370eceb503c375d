//! The command-line client, in the same `tasq` binary as the server: `tasq task …`,
//! `tasq queue …`, `tasq dead-letters …` and the shell worker `tasq worker …`.
//!
//! Every subcommand talks to a server over HTTP ([`client::Client`]; `--server URL`, default
//! `http://127.0.0.1:7280`, or `TASQ_SERVER`) in one namespace (`--namespace`, default
//! `default`, or `TASQ_NAMESPACE`), with an API key when the server wants one (`--api-key`, or
//! `TASQ_API_KEY`). Output is a human table, or with `--json` the server's JSON
//! answer on one line, for scripts. Durations are given the human way (`5s`, `2m`, `1h30m`).
//!
//! Errors print one line, `tasq: CODE: message` (the API's codes: `not_found`,
//! `invalid_argument`, `unavailable` when the server cannot be reached…), and exit with
//! status 1 when the server refused or could not be reached, 2 when the command line itself
//! was wrong (bad name, bad JSON payload; clap's own usage errors exit 2 too).

pub mod client;
pub mod cluster;
pub mod dead_letters;
pub mod queue;
pub mod store;
pub mod table;
pub mod task;
pub mod task_inspect;
pub mod worker;

use std::fmt;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::error::Error;
use crate::model::{QueueKey, QueueType};
use client::{Client, DEFAULT_SERVER};

/// Options every client subcommand takes (anywhere after the command group's name).
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, global = true, env = "TASQ_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,
    /// Namespace of the task queues.
    #[arg(long, global = true, env = "TASQ_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// API key, sent as `Authorization: Bearer KEY` (when the server has auth on).
    #[arg(
        long,
        global = true,
        env = "TASQ_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Print the server's JSON answers (one line each) instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM file of the authority that signed an HTTPS server's certificate (a private CA).
    #[arg(long, global = true, env = "TASQ_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<String>,
}

impl ClientArgs {
    /// A client for `--server`, with `--api-key` and `--ca-cert`.
    pub fn client(&self) -> Result<Client, CliError> {
        Client::new(&self.server)
            .with_api_key(self.api_key.clone())
            .with_ca_cert(self.ca_cert.as_deref())
            .map_err(CliError::Local)
    }

    /// The queue `name` of type `kind` in `--namespace`, names checked.
    pub fn key(&self, name: &str, kind: QueueKind) -> Result<QueueKey, CliError> {
        QueueKey::new(&self.namespace, name, kind.into()).map_err(CliError::Local)
    }
}

/// `--type`: which of the two queues of a name.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueKind {
    /// The activity task queue (the default).
    #[default]
    Activity,
    /// The workflow task queue.
    Workflow,
}

impl From<QueueKind> for QueueType {
    fn from(k: QueueKind) -> Self {
        match k {
            QueueKind::Activity => QueueType::Activity,
            QueueKind::Workflow => QueueType::Workflow,
        }
    }
}

/// A task queue named on the command line: `QUEUE [--type activity|workflow]`.
#[derive(Args, Debug, Clone)]
pub struct QueueArg {
    /// Task queue name.
    pub queue: String,
    /// Queue type.
    #[arg(long = "type", value_enum, default_value_t = QueueKind::Activity)]
    pub kind: QueueKind,
}

/// `limit=N[&page_token=T]` of a listing; a token that is not one tasq prints is refused.
pub fn page_query(limit: usize, page_token: Option<&str>) -> Result<String, CliError> {
    let mut q = format!("limit={limit}");
    if let Some(t) = page_token {
        if !t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(CliError::usage("--page-token is not a token tasq printed"));
        }
        q.push_str(&format!("&page_token={t}"));
    }
    Ok(q)
}

/// Prints one page of a listing: the server's JSON with `--json`; else the items under
/// `field` as a table (`headers`, a `row` per item) or `empty` when there are none, then how
/// to ask for the next page.
pub fn print_page(
    args: &ClientArgs,
    page: &serde_json::Value,
    field: &str,
    empty: &str,
    headers: &[&str],
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) {
    if args.json {
        print_json(page);
        return;
    }
    let items = page[field].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("{empty}");
    } else {
        let mut t = table::Table::new(headers);
        for item in &items {
            t.row(row(item));
        }
        print!("{}", t.render());
    }
    if let Some(next) = page["next_page_token"].as_str().filter(|t| !t.is_empty()) {
        println!("more: --page-token {next}");
    }
}

/// A failed command: what to print and the exit status.
#[derive(Debug)]
pub enum CliError {
    /// The command line was wrong, as the client or the server found (exit 2).
    Local(Error),
    /// The server refused, or could not be reached (exit 1).
    Remote(Error),
    /// The command did its work, and its exit status tells how it came out (`tasq task get
    /// --wait`: the task's final state); nothing more is printed.
    Outcome(i32),
}

impl CliError {
    /// A wrong command line with this message.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Local(Error::invalid(message))
    }

    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Local(_) => 2,
            CliError::Remote(_) => 1,
            CliError::Outcome(code) => *code,
        }
    }

    /// The error's line for standard error (`None`: an outcome, already shown).
    pub fn line(&self) -> Option<String> {
        match self {
            CliError::Outcome(_) => None,
            e => Some(format!("tasq: {e}")),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Local(e) | CliError::Remote(e) => {
                write!(f, "{}: {}", e.code(), one_line(&e.to_string()))
            }
            CliError::Outcome(code) => write!(f, "exit status {code}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<Error> for CliError {
    /// A request the server found wrong is the command line's mistake as much as one the
    /// client caught (exit 2 either way); anything else the server answered, or could not,
    /// is exit 1.
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(_) | Error::PayloadTooLarge(_) => CliError::Local(e),
            e => CliError::Remote(e),
        }
    }
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, CliError>;

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses a human duration (`500ms`, `5s`, `2m`, `1h30m`) for clap.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 5s, 2m or 1h30m: {e}"))
}

/// Prints a JSON answer on one line (`--json`).
pub fn print_json(v: &Value) {
    println!("{v}");
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
