//! `tasq task list QUEUE` (tasks by state, filtered, a page at a time) and `tasq task explain
//! QUEUE ID` (why a task is or is not running).

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::client::{queue_path, task_path};
use super::table::{clip, number, text};
use super::{page_query, print_json, print_page, CliError, CliResult, ClientArgs, QueueArg};
use crate::model::listing::ListState;

/// `tasq task list QUEUE [--state S] [filters]`.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Which tasks: pending (in dispatch order), delayed, running, dead, completed or
    /// cancelled (newest first).
    #[arg(long, default_value = "pending")]
    state: String,
    /// Only tasks of this type.
    #[arg(long)]
    task_type: Option<String>,
    /// Only tasks with this fairness key.
    #[arg(long)]
    fairness_key: Option<String>,
    /// Only tasks of this priority (1–5).
    #[arg(long)]
    priority: Option<u8>,
    /// Most tasks to show (1–1000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Continue from the token a previous list printed.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
}

/// `tasq task explain QUEUE ID`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Task id.
    id: String,
}

/// Lists a page of tasks.
pub fn list(args: &ClientArgs, a: ListArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    ListState::parse(&a.state).map_err(CliError::Local)?;
    let state = a.state;
    let mut path = format!(
        "{}/tasks?state={state}&{}",
        queue_path(&key),
        page_query(a.limit, a.page_token.as_deref())?
    );
    for (name, value) in [
        ("task_type", &a.task_type),
        ("fairness_key", &a.fairness_key),
    ] {
        if let Some(v) = value {
            crate::model::validate_name(name, v).map_err(CliError::Local)?;
            path.push_str(&format!("&{name}={v}"));
        }
    }
    if let Some(p) = a.priority {
        path.push_str(&format!("&priority={p}"));
    }
    let page = args.client()?.get(&path, Duration::ZERO)?;
    let headers = [
        "TASK ID",
        "TASK TYPE",
        "STATE",
        "ATTEMPT",
        "PRIORITY",
        "KEY",
        "UPDATED",
        "DETAIL",
    ];
    print_page(
        args,
        &page,
        "tasks",
        &format!("no {state} tasks in {key}"),
        &headers,
        |task| {
            vec![
                text(&task["task_id"]),
                text(&task["task_type"]),
                text(&task["state"]),
                number(&task["attempt"]),
                number(&task["priority"]),
                text(&task["fairness_key"]),
                text(&task["updated_at"]),
                clip(&detail(task), 60),
            ]
        },
    );
    Ok(())
}

/// When a listed task is due, or with whom it runs and until when.
fn detail(task: &Value) -> String {
    if let Some(due) = task["due_at"].as_str() {
        return format!("due {due}");
    }
    match (task["identity"].as_str(), task["lease_expires_at"].as_str()) {
        (Some(who), Some(until)) => format!("on {who} until {until}"),
        _ => "-".into(),
    }
}

/// Prints why a task is or is not running.
pub fn explain(args: &ClientArgs, a: ExplainArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let path = format!(
        "{}/explain",
        task_path(&key, &a.id).map_err(CliError::Local)?
    );
    let answer = args.client()?.get(&path, Duration::ZERO)?;
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    println!("task {} is {}:", a.id, text(&answer["state"]));
    for r in answer["reasons"].as_array().cloned().unwrap_or_default() {
        println!("- {} ({})", text(&r["message"]), text(&r["code"]));
    }
    Ok(())
}
