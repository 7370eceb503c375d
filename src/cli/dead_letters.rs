//! `tasq dead-letters list | redrive`: tasks that failed for good or timed out in the queue.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::client::queue_path;
use super::table::{clip, number, text};
use super::{page_query, print_json, print_page, CliError, CliResult, ClientArgs, QueueArg};
use crate::model::validate_name;

/// `tasq dead-letters …`.
#[derive(Subcommand, Debug, Clone)]
pub enum DeadLetterCommand {
    /// List dead letters, newest first.
    List(ListArgs),
    /// Put dead letters back as pending, with their attempts reset.
    Redrive(RedriveArgs),
}

/// `tasq dead-letters list QUEUE`.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Most dead letters to show (1–1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue from the token a previous list printed.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

/// `tasq dead-letters redrive QUEUE (--all | IDS…)`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("which").required(true).args(["all", "ids"])))]
pub struct RedriveArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Redrive every dead letter of the queue.
    #[arg(long)]
    all: bool,
    /// Task ids to redrive.
    ids: Vec<String>,
}

/// Runs a `tasq dead-letters` subcommand.
pub fn run(args: &ClientArgs, cmd: DeadLetterCommand) -> CliResult {
    match cmd {
        DeadLetterCommand::List(a) => list(args, a),
        DeadLetterCommand::Redrive(a) => redrive(args, a),
    }
}

fn list(args: &ClientArgs, a: ListArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let path = format!(
        "{}/dead-letters?{}",
        queue_path(&key),
        page_query(a.limit, a.page_token.as_deref())?
    );
    let page = args.client()?.get(&path, Duration::ZERO)?;
    let headers = [
        "TASK ID",
        "TASK TYPE",
        "STATE",
        "ATTEMPT",
        "UPDATED",
        "LAST ERROR",
    ];
    print_page(
        args,
        &page,
        "dead_letters",
        &format!("no dead letters in {key}"),
        &headers,
        |d| {
            vec![
                text(&d["task_id"]),
                text(&d["task_type"]),
                text(&d["state"]),
                number(&d["attempt"]),
                text(&d["updated_at"]),
                clip(&last_error(&d["last_error"]), 80),
            ]
        },
    );
    Ok(())
}

fn last_error(e: &Value) -> String {
    match (e["type"].as_str(), e["message"].as_str()) {
        (Some(kind), Some(m)) => format!("{kind}: {m}"),
        (None, Some(m)) => m.to_string(),
        _ => text(e),
    }
}

fn redrive(args: &ClientArgs, a: RedriveArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    if a.all && !a.ids.is_empty() {
        return Err(CliError::usage("give either --all or task ids, not both"));
    }
    for id in &a.ids {
        validate_name("task_id", id).map_err(CliError::Local)?;
    }
    let body = if a.all {
        json!({ "all": true })
    } else {
        json!({ "task_ids": a.ids })
    };
    let answer = args.client()?.post(
        &format!("{}/dead-letters/redrive", queue_path(&key)),
        &body,
        Duration::ZERO,
    )?;
    if args.json {
        print_json(&answer);
    } else {
        println!(
            "redrove {} dead letters of {key}; they are pending again",
            number(&answer["redriven"])
        );
    }
    Ok(())
}
