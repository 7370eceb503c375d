//! `tasq queue describe | list | config`.

use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};

use super::client::queue_path;
use super::table::{human_ms, instant_ago, number, rate, text, Table};
use super::{print_json, CliError, CliResult, ClientArgs, QueueArg};
use crate::model::{validate_name, QueueType};

/// Most pages `queue list` follows.
const MAX_PAGES: usize = 1000;

/// `tasq queue …`.
#[derive(Subcommand, Debug, Clone)]
pub enum QueueCommand {
    /// Show a task queue (both types): backlog, age, rates, rate limit and pollers.
    Describe(DescribeArgs),
    /// List the task queues of the namespace that hold tasks or config, or have pollers.
    List(ListArgs),
    /// Set a queue's dispatch rate limit (`PUT {q}/config`).
    Config(ConfigArgs),
}

/// `tasq queue describe QUEUE`.
#[derive(Args, Debug, Clone)]
pub struct DescribeArgs {
    /// Task queue name.
    queue: String,
}

/// `tasq queue list`.
#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Queues per request (1–1000); every page is fetched.
    #[arg(long, default_value_t = 100)]
    page_size: usize,
}

/// `tasq queue config QUEUE --rps N [--burst N]`.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("limit").required(true).args(["rps", "unlimited"])))]
pub struct ConfigArgs {
    #[command(flatten)]
    queue: QueueArg,
    /// Most tasks dispatched per second; 0 pauses dispatch.
    #[arg(long, value_name = "N")]
    rps: Option<f64>,
    /// Remove the limit set through the API.
    #[arg(long)]
    unlimited: bool,
    /// Bucket size: how many tasks may go at once after a quiet spell.
    #[arg(long, value_name = "N")]
    burst: Option<u32>,
}

/// Runs a `tasq queue` subcommand.
pub fn run(args: &ClientArgs, cmd: QueueCommand) -> CliResult {
    match cmd {
        QueueCommand::Describe(a) => describe(args, a),
        QueueCommand::List(a) => list(args, a),
        QueueCommand::Config(a) => config(args, a),
    }
}

fn describe(args: &ClientArgs, a: DescribeArgs) -> CliResult {
    validate_name("namespace", &args.namespace).map_err(CliError::Local)?;
    validate_name("task queue name", &a.queue).map_err(CliError::Local)?;
    let answer = args.client()?.get(
        &format!(
            "/api/v1/namespaces/{}/task-queues/{}",
            args.namespace, a.queue
        ),
        Duration::ZERO,
    )?;
    if args.json {
        print_json(&answer);
    } else {
        print!("{}", render_describe(&args.namespace, &a.queue, &answer));
    }
    Ok(())
}

/// The rate limit cell: `unlimited`, `paused (api)`, `50/s burst 10 (worker)`.
fn rate_limit(v: &Value) -> String {
    let source = v["source"].as_str().unwrap_or("none");
    match v["max_tasks_per_second"].as_f64() {
        None => "unlimited".into(),
        Some(0.0) => format!("paused ({source})"),
        Some(r) => {
            let burst = match &v["burst"] {
                Value::Null => String::new(),
                b => format!(" burst {}", number(b)),
            };
            format!("{r}/s{burst} ({source})")
        }
    }
}

/// Renders a describe answer like `temporal task-queue describe`: statistics per type, then
/// the pollers.
pub fn render_describe(ns: &str, queue: &str, answer: &Value) -> String {
    let mut out = format!("Task queue {queue:?} in namespace {ns:?}\n\n");
    let mut stats = Table::new(&[
        "TYPE",
        "BACKLOG",
        "BACKLOG AGE",
        "DELAYED",
        "IN FLIGHT",
        "DEAD LETTERS",
        "ADD RATE",
        "DISPATCH RATE",
        "RATE LIMIT",
    ]);
    let mut pollers = Table::new(&[
        "TYPE",
        "IDENTITY",
        "LAST ACCESS",
        "TASK TYPES",
        "BUILD ID",
        "RATE/S",
    ]);
    let mut warnings = Vec::new();
    for kind in QueueType::ALL {
        let s = &answer["types"][kind.as_str()];
        if !s.is_object() {
            continue;
        }
        stats.row(vec![
            kind.as_str().into(),
            number(&s["backlog_count"]),
            human_ms(s["backlog_age_ms"].as_u64().unwrap_or(0)),
            number(&s["delayed_count"]),
            number(&s["in_flight_count"]),
            number(&s["dead_letter_count"]),
            rate(&s["add_rate"]),
            rate(&s["dispatch_rate"]),
            rate_limit(&s["rate_limit"]),
        ]);
        for p in s["pollers"].as_array().into_iter().flatten() {
            let types = match p["task_types"].as_array() {
                Some(t) => t.iter().map(text).collect::<Vec<_>>().join(","),
                None => "any".into(),
            };
            pollers.row(vec![
                kind.as_str().into(),
                text(&p["identity"]),
                p["last_access_time"]
                    .as_str()
                    .map_or("-".into(), instant_ago),
                types,
                text(&p["build_id"]),
                number(&p["max_tasks_per_second"]),
            ]);
        }
        if s["registration_mismatch"] == json!(true) {
            warnings.push(format!(
                "warning: {} pollers declare different task types, or a ready task's type has no poller",
                kind.as_str()
            ));
        }
    }
    out.push_str(&stats.render());
    out.push('\n');
    if pollers.is_empty() {
        out.push_str("Pollers: none in the last 5 minutes\n");
    } else {
        out.push_str("Pollers:\n");
        out.push_str(&pollers.render());
    }
    for w in warnings {
        out.push('\n');
        out.push_str(&w);
        out.push('\n');
    }
    out
}

fn list(args: &ClientArgs, a: ListArgs) -> CliResult {
    validate_name("namespace", &args.namespace).map_err(CliError::Local)?;
    let client = args.client()?;
    let mut queues = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut path = format!(
            "/api/v1/namespaces/{}/task-queues?limit={}",
            args.namespace, a.page_size
        );
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page = client.get(&path, Duration::ZERO)?;
        queues.extend(page["task_queues"].as_array().cloned().unwrap_or_default());
        token = page["next_page_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    if args.json {
        print_json(&json!({ "task_queues": queues }));
        return Ok(());
    }
    if queues.is_empty() {
        println!("no task queues in namespace {:?}", args.namespace);
        return Ok(());
    }
    let mut t = Table::new(&["NAME", "TYPE", "BACKLOG", "IN FLIGHT", "POLLERS"]);
    for q in &queues {
        t.row(vec![
            text(&q["name"]),
            text(&q["type"]),
            number(&q["backlog_count"]),
            number(&q["in_flight_count"]),
            number(&q["pollers"]),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

fn config(args: &ClientArgs, a: ConfigArgs) -> CliResult {
    let key = args.key(&a.queue.queue, a.queue.kind)?;
    if a.rps.is_some_and(|r| !r.is_finite() || r < 0.0) {
        return Err(CliError::usage("--rps must be a number ≥ 0"));
    }
    let mut body = json!({ "max_tasks_per_second": a.rps });
    if let Some(b) = a.burst {
        body["burst"] = json!(b);
    }
    let answer = args
        .client()?
        .put(&format!("{}/config", queue_path(&key)), &body)?;
    if args.json {
        print_json(&answer);
        return Ok(());
    }
    let limit = match answer["max_tasks_per_second"].as_f64() {
        None => "unlimited".to_string(),
        Some(0.0) => "paused (0 tasks/s)".to_string(),
        Some(r) => format!("{r} tasks/s"),
    };
    let burst = match &answer["burst"] {
        Value::Null => String::new(),
        b => format!(", burst {}", number(b)),
    };
    println!("rate limit of {key}: {limit}{burst}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_renders_stats_and_pollers() {
        let answer = json!({"namespace": "default", "name": "orders", "types": {
            "activity": {"backlog_count": 3, "backlog_age_ms": 2500, "delayed_count": 1,
                "in_flight_count": 2, "dead_letter_count": 0, "add_rate": 0.5,
                "dispatch_rate": 0.25, "registration_mismatch": true,
                "rate_limit": {"max_tasks_per_second": 50.0, "burst": 10, "source": "api"},
                "pollers": [{"identity": "host-3@4711", "last_access_time": "2026-11-22T08:00:00.123Z",
                    "task_types": ["send-email"], "build_id": "v42", "max_tasks_per_second": null}]},
            "workflow": {"backlog_count": 0, "backlog_age_ms": 0, "delayed_count": 0,
                "in_flight_count": 0, "dead_letter_count": 0, "add_rate": 0.0,
                "dispatch_rate": 0.0, "registration_mismatch": false,
                "rate_limit": {"max_tasks_per_second": null, "burst": null, "source": "none"},
                "pollers": []}}});
        let out = render_describe("default", "orders", &answer);
        assert!(out.contains("BACKLOG AGE"), "{out}");
        assert!(out.contains("2.5s"), "{out}");
        assert!(out.contains("50/s burst 10 (api)"), "{out}");
        assert!(out.contains("unlimited"), "{out}");
        assert!(out.contains("host-3@4711"), "{out}");
        assert!(out.contains("send-email"), "{out}");
        assert!(out.contains("ago)"), "{out}");
        assert!(out.contains("warning: activity"), "{out}");
    }
}
