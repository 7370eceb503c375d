//! `tasq task add | get | cancel`.

use std::io::Read;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::client::{queue_path, task_path};
use super::table::{clip, text, Table};
use super::{millis, parse_duration, print_json, CliError, CliResult, ClientArgs, QueueArg};
use crate::model::{MAX_BATCH, MAX_STATUS_WAIT_MS};

/// `tasq task …`.
#[derive(Subcommand, Debug, Clone)]
pub enum TaskCommand {
    /// Add a task.
    Add(Box<AddArgs>),
    /// Add many tasks from a JSON Lines file (`-`: standard input), one task per line as the
    /// API's add body, sent 1,000 at a time.
    AddMany(AddManyArgs),
    /// Show a task's status (optionally waiting until it ends).
    Get(GetArgs),
    /// Cancel a task: a pending one is never dispatched; a running one is asked to stop.
    Cancel(CancelArgs),
    /// List tasks by state (pending in dispatch order, the others newest first).
    List(super::task_inspect::ListArgs),
    /// Say why a task is or is not running.
    Explain(super::task_inspect::ExplainArgs),
}

/// `tasq task add QUEUE TASK_TYPE [PAYLOAD|-]`.
#[derive(Args, Debug, Clone)]
pub struct AddArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// What kind of work (workers filter on it).
    task_type: String,
    /// JSON payload; `-` reads it from standard input. Default `null`.
    payload: Option<String>,
    /// Idempotency key; adding an existing id changes nothing.
    #[arg(long = "id", value_name = "ID")]
    task_id: Option<String>,
    /// 1 (first) … 5 (last).
    #[arg(long)]
    priority: Option<i64>,
    /// Do not dispatch before this long from now (`5s`, `2m`).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    delay: Option<Duration>,
    /// Lease length per attempt (default 60s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    start_to_close: Option<Duration>,
    /// The lease also ends this long after the last heartbeat.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    heartbeat_timeout: Option<Duration>,
    /// Longest wait in the queue, then the task times out (a dead letter).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    schedule_to_start: Option<Duration>,
    /// Attempts in all (0 = unlimited, the default).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// First retry's backoff (default 1s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    retry_initial: Option<Duration>,
    /// Each retry's backoff is the last one times this (default 2.0).
    #[arg(long, value_name = "FACTOR")]
    retry_backoff: Option<f64>,
    /// Longest backoff between attempts (default 100s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    retry_max_interval: Option<Duration>,
    /// Fairness key (tenant).
    #[arg(long)]
    fairness_key: Option<String>,
    /// The key's weight among the queue's fairness keys (0.001–1000, default 1).
    #[arg(long, value_name = "WEIGHT")]
    fairness_weight: Option<f64>,
    /// Give the task only to the worker with this identity…
    #[arg(long, value_name = "IDENTITY")]
    route_to: Option<String>,
    /// …until this long after it is ready, then to any worker (`never`: no fallback;
    /// default 5s).
    #[arg(long, value_name = "DURATION|never", requires = "route_to")]
    route_fallback: Option<String>,
    /// Header `NAME=VALUE`, delivered to the worker; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
}

/// `tasq task add-many QUEUE FILE.jsonl`.
#[derive(Args, Debug, Clone)]
pub struct AddManyArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// A JSON Lines file, each line a task (`{"task_type": …, "payload": …}`); `-` reads
    /// standard input. Blank lines are skipped.
    file: String,
}

/// `tasq task get QUEUE ID [--wait]`.
#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Task id.
    id: String,
    /// Wait until the task is completed, failed, timed out or cancelled; the exit status
    /// then says which: 0 completed, 3 failed or timed out, 4 cancelled, 5 still waiting or
    /// running when --timeout passed.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this long and show the status then (default: no limit).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION", requires = "wait")]
    timeout: Option<Duration>,
}

/// `tasq task cancel QUEUE ID`.
#[derive(Args, Debug, Clone)]
pub struct CancelArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Task id.
    id: String,
}

/// Runs a `tasq task` subcommand.
pub fn run(args: &ClientArgs, cmd: TaskCommand) -> CliResult {
    match cmd {
        TaskCommand::Add(a) => add(args, *a),
        TaskCommand::AddMany(a) => add_many(args, a),
        TaskCommand::Get(a) => get(args, a),
        TaskCommand::Cancel(a) => cancel(args, a),
        TaskCommand::List(a) => super::task_inspect::list(args, a),
        TaskCommand::Explain(a) => super::task_inspect::explain(args, a),
    }
}

/// Reads the payload argument: JSON text, `-` for standard input, absent for `null`.
fn payload(arg: Option<&str>) -> CliResult<Value> {
    let text = match arg {
        None => return Ok(Value::Null),
        Some("-") => {
            let mut buf = String::new();
            std::io::stdin()
                .read_to_string(&mut buf)
                .map_err(|e| CliError::usage(format!("cannot read the payload from stdin: {e}")))?;
            buf
        }
        Some(text) => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "the payload is not JSON ({e}); a plain string must be quoted, e.g. '\"hello\"'"
        ))
    })
}

fn add(args: &ClientArgs, a: AddArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let mut body = Map::new();
    body.insert("task_type".into(), json!(a.task_type));
    body.insert("payload".into(), payload(a.payload.as_deref())?);
    let mut opt = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(name.into(), v);
        }
    };
    opt("task_id", a.task_id.map(Value::from));
    opt("priority", a.priority.map(Value::from));
    opt("delay_ms", a.delay.map(|d| json!(millis(d))));
    opt(
        "start_to_close_timeout_ms",
        a.start_to_close.map(|d| json!(millis(d))),
    );
    opt(
        "heartbeat_timeout_ms",
        a.heartbeat_timeout.map(|d| json!(millis(d))),
    );
    opt(
        "schedule_to_start_timeout_ms",
        a.schedule_to_start.map(|d| json!(millis(d))),
    );
    let mut retry = Map::new();
    let mut retry_opt = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            retry.insert(name.into(), v);
        }
    };
    retry_opt("max_attempts", a.max_attempts.map(Value::from));
    retry_opt(
        "initial_interval_ms",
        a.retry_initial.map(|d| json!(millis(d))),
    );
    retry_opt("backoff_coefficient", a.retry_backoff.map(Value::from));
    retry_opt(
        "maximum_interval_ms",
        a.retry_max_interval.map(|d| json!(millis(d))),
    );
    opt("retry", (!retry.is_empty()).then_some(Value::Object(retry)));
    opt("fairness_key", a.fairness_key.map(Value::from));
    opt("fairness_weight", a.fairness_weight.map(Value::from));
    if let Some(identity) = a.route_to {
        let fallback = match a.route_fallback.as_deref() {
            None => None,
            Some("never") => Some(Value::Null),
            Some(d) => Some(json!(millis(parse_duration(d).map_err(CliError::usage)?))),
        };
        let mut route = json!({ "identity": identity });
        if let Some(f) = fallback {
            route["fallback_after_ms"] = f;
        }
        opt("route_to", Some(route));
    }
    if !a.headers.is_empty() {
        let mut headers = Map::new();
        for h in &a.headers {
            let (name, value) = h
                .split_once('=')
                .ok_or_else(|| CliError::usage(format!("--header {h:?} is not NAME=VALUE")))?;
            headers.insert(name.to_string(), json!(value));
        }
        body.insert("headers".into(), Value::Object(headers));
    }
    let answer = args.client()?.post(
        &format!("{}/tasks", queue_path(&key)),
        &Value::Object(body),
        Duration::ZERO,
    )?;
    if args.json {
        print_json(&answer);
    } else if answer["duplicate"] == json!(true) {
        println!(
            "task {} exists already in {key}; nothing changed",
            text(&answer["task_id"])
        );
    } else {
        println!("added task {} to {key}", text(&answer["task_id"]));
    }
    Ok(())
}

fn is_terminal(state: &Value) -> bool {
    !matches!(state.as_str(), Some("pending") | Some("running") | None)
}

fn get(args: &ClientArgs, a: GetArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let path = task_path(&key, &a.id).map_err(CliError::Local)?;
    let client = args.client()?;
    let deadline = a.timeout.map(|t| Instant::now() + t);
    let status = loop {
        let wait = if a.wait {
            let left = deadline.map_or(Duration::from_millis(MAX_STATUS_WAIT_MS), |d| {
                d.saturating_duration_since(Instant::now())
            });
            left.min(Duration::from_millis(MAX_STATUS_WAIT_MS))
        } else {
            Duration::ZERO
        };
        let url = if wait.is_zero() {
            path.clone()
        } else {
            format!("{path}?wait_ms={}", millis(wait))
        };
        let status = client.get(&url, wait)?;
        let done = !a.wait
            || is_terminal(&status["state"])
            || deadline.is_some_and(|d| Instant::now() >= d);
        if done {
            break status;
        }
    };
    print_status(args, &status);
    if a.wait {
        return match wait_outcome(&status["state"]) {
            0 => Ok(()),
            code => Err(CliError::Outcome(code)),
        };
    }
    Ok(())
}

/// The exit status of `tasq task get --wait` for the state it ended with: 0 completed, 3
/// failed or timed out (a dead letter), 4 cancelled, 5 still pending or running (`--timeout`
/// passed first).
pub fn wait_outcome(state: &Value) -> i32 {
    match state.as_str() {
        Some("completed") => 0,
        Some("failed" | "timed_out") => 3,
        Some("cancelled") => 4,
        _ => 5,
    }
}

/// Adds the tasks of a JSON Lines file in batches of [`MAX_BATCH`]; each batch is all or
/// nothing, so a bad task names its line and the batches before it stay added.
fn add_many(args: &ClientArgs, a: AddManyArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let text = if a.file == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| CliError::usage(format!("cannot read standard input: {e}")))?;
        buf
    } else {
        std::fs::read_to_string(&a.file)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", a.file)))?
    };
    // Every line is read before anything is sent: a file that is not JSON Lines adds nothing.
    let mut tasks: Vec<(usize, Value)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let task: Value = serde_json::from_str(line)
            .map_err(|e| CliError::usage(format!("{} line {}: not JSON: {e}", a.file, i + 1)))?;
        tasks.push((i + 1, task));
    }
    if tasks.is_empty() {
        return Err(CliError::usage(format!("{}: no task in it", a.file)));
    }
    let path = format!("{}/tasks/batch", queue_path(&key));
    let client = args.client()?;
    let (mut added, mut duplicates) = (0, 0);
    for chunk in tasks.chunks(MAX_BATCH) {
        let body = json!({ "tasks": chunk.iter().map(|(_, t)| t).collect::<Vec<_>>() });
        let answer = client.post(&path, &body, Duration::ZERO).map_err(|e| {
            let at = e.to_string();
            // `tasks[i]: …` from the server: name the file's line instead.
            let line = at
                .strip_prefix("tasks[")
                .and_then(|r| r.split_once(']'))
                .and_then(|(i, rest)| Some((chunk.get(i.parse::<usize>().ok()?)?.0, rest)));
            let e = match line {
                Some((n, rest)) => e.with_message(format!("{} line {n}{rest}", a.file)),
                None => e,
            };
            CliError::from(e.with_message(format!("{e} ({added} tasks added before this batch)")))
        })?;
        for r in answer["results"].as_array().into_iter().flatten() {
            if r["duplicate"] == json!(true) {
                duplicates += 1;
            } else {
                added += 1;
            }
        }
    }
    if args.json {
        print_json(&json!({"added": added, "duplicates": duplicates}));
    } else {
        println!("added {added} tasks to {key} ({duplicates} existed already)");
    }
    Ok(())
}

fn cancel(args: &ClientArgs, a: CancelArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    let path = task_path(&key, &a.id).map_err(CliError::Local)?;
    let status = args.client()?.delete(&path)?;
    if args.json {
        print_json(&status);
        return Ok(());
    }
    match status["state"].as_str() {
        Some("cancelled") => println!("task {} is cancelled", a.id),
        Some("running") => println!(
            "task {} is running; its worker is asked to stop (at its next heartbeat)",
            a.id
        ),
        Some(other) => println!("task {} had ended already ({other}); nothing changed", a.id),
        None => print_status(args, &status),
    }
    Ok(())
}

/// Prints a task status as `field  value` lines, or as JSON.
fn print_status(args: &ClientArgs, status: &Value) {
    if args.json {
        print_json(status);
        return;
    }
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for field in [
        "task_id",
        "task_type",
        "state",
        "attempt",
        "added_at",
        "updated_at",
    ] {
        t.row(vec![field.into(), text(&status[field])]);
    }
    t.row(vec!["result".into(), clip(&text(&status["result"]), 500)]);
    let error = match &status["last_error"] {
        Value::Null => "-".to_string(),
        e => match (e["type"].as_str(), e["message"].as_str()) {
            (Some(kind), Some(m)) => format!("{kind}: {m}"),
            (None, Some(m)) => m.to_string(),
            _ => e.to_string(),
        },
    };
    t.row(vec!["last_error".into(), clip(&error, 500)]);
    // The header row is noise for a two-column record.
    let rendered = t.render();
    print!("{}", rendered.split_once('\n').map_or("", |(_, rest)| rest));
}
