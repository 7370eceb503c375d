//! Operator files (`dashboards/`): every PromQL expression of the Grafana dashboards and the
//! Prometheus alerting rules parses (the `promql-parser` crate), and every metric and label it
//! names is exported by a live tasq after real traffic (add, poll, complete, fail, a parked
//! poll). Also checks the dashboards' import contract: a `DS_PROMETHEUS` input used by every
//! panel and target, the queue template variables, a description on every panel.
//!
//! The queries are run against a real Prometheus by `.ci/prometheus-check`.

mod common;

use common::*;
use promql_parser::parser::{self, Expr, LabelModifier};
use promql_parser::util::{walk_expr, ExprVisitor};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::thread;

const DASHBOARDS: &[&str] = &[
    "dashboards/tasq-overview.json",
    "dashboards/tasq-queue.json",
];
const RULES: &str = "dashboards/alerts.yml";

/// Metrics a query may use that tasq does not export itself (Prometheus' own per target).
const EXTERNAL_METRICS: &[&str] = &["up"];

/// Labels Prometheus adds to every scraped series (target labels), so never in `/metrics`.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The per-queue template variables both dashboards must have.
const QUEUE_VARIABLES: &[&str] = &["namespace", "task_queue", "task_queue_type"];

/// One PromQL expression and where it comes from (for messages).
struct Query {
    origin: String,
    expr: String,
}

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_file(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn dashboard(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

/// Replaces Grafana's template variables with what Grafana would send to Prometheus.
fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (var, value) in [
        ("$__rate_interval", "1m"),
        ("${__rate_interval}", "1m"),
        ("$__interval", "15s"),
        ("${__interval}", "15s"),
        ("$__range", "1h"),
        ("${__range}", "1h"),
    ] {
        out = out.replace(var, value);
    }
    for var in QUEUE_VARIABLES {
        out = out.replace(&format!("${{{var}}}"), ".*");
        out = out.replace(&format!("${var}"), ".*");
    }
    out
}

/// Every panel of a dashboard, rows' nested panels included (rows themselves left out).
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        if p["type"] != "row" {
            out.push(p);
        }
    }
    out
}

/// The template variables of a dashboard.
fn variables(dash: &Value) -> Vec<&Value> {
    dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

/// The query text of a Grafana query variable (string, or `{query: ...}` in Grafana 10).
fn variable_query(var: &Value) -> String {
    match &var["query"] {
        Value::String(s) => s.clone(),
        other => other["query"].as_str().unwrap_or_default().to_string(),
    }
}

/// `label_values(selector, label)` → (selector, label); `label_values(label)` → (None, label).
fn label_values_parts(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?
        .trim();
    match inner.rfind(',') {
        Some(i) => Some((
            Some(inner[..i].trim().to_string()),
            inner[i + 1..].trim().to_string(),
        )),
        None => Some((None, inner.to_string())),
    }
}

fn dashboard_queries() -> Vec<Query> {
    let mut out = Vec::new();
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        for panel in panels(&dash) {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(Query {
                        origin: format!("{rel}: panel {title:?} target {}", target["refId"]),
                        expr: substitute(expr),
                    });
                }
            }
        }
        for var in variables(&dash) {
            if var["type"] != "query" {
                continue;
            }
            let query = variable_query(var);
            if let Some((Some(selector), _)) = label_values_parts(&query) {
                out.push(Query {
                    origin: format!("{rel}: variable {}", var["name"]),
                    expr: substitute(&selector),
                });
            }
        }
    }
    out
}

fn rule_queries() -> Vec<Query> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&read(RULES)).unwrap_or_else(|e| panic!("{RULES} is not YAML: {e}"));
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .unwrap_or("?");
            let expr = rule["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{RULES}: rule {name} has no expr"));
            out.push(Query {
                origin: format!("{RULES}: rule {name}"),
                expr: expr.to_string(),
            });
        }
    }
    out
}

fn all_queries() -> Vec<Query> {
    let mut queries = dashboard_queries();
    queries.extend(rule_queries());
    queries
}

/// What one expression names: metrics with the labels it matches on, and label lists (of
/// `by`/`without`/`on`/`ignoring`) with the metrics below them.
#[derive(Default)]
struct Names {
    /// metric name → label names used in its matchers.
    selectors: Vec<(String, BTreeSet<String>)>,
    /// grouping or matching labels → metrics they apply to.
    groupings: Vec<(BTreeSet<String>, BTreeSet<String>)>,
}

struct Collect<'a>(&'a mut Names);

impl ExprVisitor for Collect<'_> {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let vs = match expr {
            Expr::VectorSelector(vs) => Some(vs),
            Expr::MatrixSelector(ms) => Some(&ms.vs),
            _ => None,
        };
        if let Some(vs) = vs {
            let mut name = vs.name.clone();
            let mut labels = BTreeSet::new();
            let or = vs.matchers.or_matchers.iter().flatten();
            for m in vs.matchers.matchers.iter().chain(or) {
                if m.name == "__name__" {
                    name = Some(m.value.clone());
                } else {
                    labels.insert(m.name.clone());
                }
            }
            let name = name.ok_or_else(|| "a selector without a metric name".to_string())?;
            self.0.selectors.push((name, labels));
        }
        let (modifier, children): (Option<&LabelModifier>, Vec<&Expr>) = match expr {
            Expr::Aggregate(a) => (a.modifier.as_ref(), vec![&a.expr]),
            Expr::Binary(b) => (
                b.modifier.as_ref().and_then(|m| m.matching.as_ref()),
                vec![&b.lhs, &b.rhs],
            ),
            _ => (None, vec![]),
        };
        if let Some(modifier) = modifier {
            let labels = match modifier {
                LabelModifier::Include(l) | LabelModifier::Exclude(l) => &l.labels,
            };
            let mut below = Names::default();
            for child in children {
                walk_expr(&mut Collect(&mut below), child)?;
            }
            let metrics = below.selectors.into_iter().map(|(n, _)| n).collect();
            self.0
                .groupings
                .push((labels.iter().cloned().collect(), metrics));
        }
        Ok(true)
    }
}

fn names_of(expr: &Expr) -> Result<Names, String> {
    let mut names = Names::default();
    walk_expr(&mut Collect(&mut names), expr)?;
    Ok(names)
}

#[test]
fn every_expression_parses() {
    let queries = all_queries();
    assert!(
        queries.len() > 30,
        "expected the dashboards and rules to hold many queries, found {}",
        queries.len()
    );
    let mut errors = Vec::new();
    for q in &queries {
        match parser::parse(&q.expr) {
            Ok(expr) => {
                if let Err(e) = names_of(&expr) {
                    errors.push(format!("{}: {e}\n    {}", q.origin, q.expr));
                }
            }
            Err(e) => errors.push(format!("{}: {e}\n    {}", q.origin, q.expr)),
        }
        assert!(
            !q.expr.contains('$'),
            "{}: a template variable was left unsubstituted: {}",
            q.origin,
            q.expr
        );
    }
    assert!(
        errors.is_empty(),
        "PromQL that does not parse:\n{}",
        errors.join("\n")
    );
}

#[test]
fn dashboards_follow_the_import_contract() {
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        let inputs = dash["__inputs"].as_array().expect("__inputs");
        assert!(
            inputs
                .iter()
                .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
            "{rel}: no DS_PROMETHEUS data-source input"
        );
        let uid = dash["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty(),
            "{rel}: no uid (the drill-down links use it)"
        );
        assert!(
            dash["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{rel}: schemaVersion below Grafana 9/10"
        );

        let vars = variables(&dash);
        let ds_var = vars.iter().find(|v| v["name"] == "DS_PROMETHEUS");
        assert!(
            ds_var.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{rel}: no `DS_PROMETHEUS` variable of type datasource (provisioned dashboards need it)"
        );
        for name in QUEUE_VARIABLES {
            let var = vars
                .iter()
                .find(|v| v["name"] == *name)
                .unwrap_or_else(|| panic!("{rel}: no template variable {name}"));
            assert_eq!(var["type"], "query", "{rel}: variable {name}");
            assert_eq!(
                var["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{rel}: variable {name}"
            );
            let (_, label) = label_values_parts(&variable_query(var))
                .unwrap_or_else(|| panic!("{rel}: variable {name} is not fed by label_values"));
            assert_eq!(label, *name, "{rel}: variable {name} lists another label");
        }

        let all = panels(&dash);
        assert!(all.len() >= 10, "{rel}: only {} panels", all.len());
        let mut ids = BTreeSet::new();
        for panel in all {
            let title = panel["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{rel}: a panel without a title");
            assert!(
                ids.insert(panel["id"].as_u64().expect("panel id")),
                "{rel}: duplicate panel id in {title:?}"
            );
            let desc = panel["description"].as_str().unwrap_or_default();
            assert!(
                desc.len() >= 80 && desc.contains("What to do"),
                "{rel}: panel {title:?} needs a description of what it means and what to do"
            );
            assert_eq!(
                panel["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{rel}: panel {title:?} data source"
            );
            let targets = panel["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{rel}: panel {title:?} has no query");
            for t in targets {
                assert_eq!(
                    t["datasource"]["uid"], "${DS_PROMETHEUS}",
                    "{rel}: panel {title:?} target data source"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{rel}: panel {title:?} has a target without expr"
                );
            }
        }
    }
    // The overview drills down into the queue dashboard, and back, with links relative to
    // the dashboard's own address (`/d/<uid>/<slug>`), so they hold under a Grafana served
    // from a sub-path (`root_url = https://host/grafana/`).
    let overview = read(DASHBOARDS[0]);
    assert!(
        overview.contains("\"../tasq-queue/tasq-queue"),
        "the overview does not link to tasq-queue"
    );
    for rel in DASHBOARDS {
        let text = read(rel);
        assert!(
            !text.contains("\"/d/"),
            "{rel}: a link starts at the server's root (\"/d/…\"), which breaks under a sub-path"
        );
    }
}

/// Drives the traffic the dashboards show, holds one poll parked, and returns `/metrics`.
fn metrics_after_traffic(s: &TestServer) -> String {
    let orders = q(NS, "dash-orders", "activity");
    for i in 0..4 {
        add_task(
            s,
            &orders,
            json!({"task_type": "send-email", "payload": {"n": i}, "retry": {"max_attempts": 3}}),
        );
    }
    let worker = |s: &TestServer| {
        poll_one(s, &orders, "dash-worker", 5_000)
            .expect("a task is ready, so a poll answers with it")
    };
    let (status, body) = complete(s, &lease_of(&worker(s)), json!({"ok": true}));
    assert_eq!(status, 200, "complete: {body}");
    let (status, body) = fail(
        s,
        &lease_of(&worker(s)),
        json!({"error": {"message": "downstream timed out", "type": "Timeout"}}),
    );
    assert_eq!(status, 200, "fail (retry): {body}");
    let (status, body) = fail(
        s,
        &lease_of(&worker(s)),
        json!({"error": {"message": "bad address", "type": "Invalid"}, "non_retryable": true}),
    );
    assert_eq!(status, 200, "fail (dead letter): {body}");
    // A 404 for the HTTP error series.
    let (status, _) = get(&s.url(&format!("{orders}/tasks/no-such-task")));
    assert_eq!(status, 404);

    // A parked poll on a queue with nothing to do; /metrics is read while it waits.
    let idle = q(NS, "dash-idle", "workflow");
    let url = s.url(&format!("{idle}/poll"));
    let parked = thread::spawn(move || {
        try_post(
            &url,
            &json!({"identity": "dash-parked", "wait_ms": 4_000, "task_types": ["report"]}),
        )
    });
    let labels = queue_labels(NS, "dash-idle", "workflow");
    let seen = wait_until(EVENTUALLY, || {
        metric_sum(&metrics_text(s), "tasq_pollers", &labels) >= 1.0
    });
    let text = metrics_text(s);
    let answer = parked.join().expect("parked poll thread");
    assert!(seen, "tasq_pollers never showed the parked poll:\n{text}");
    match answer {
        Ok((200, _)) => {}
        other => panic!("parked poll answered {other:?}"),
    }
    text
}

#[test]
fn every_metric_and_label_is_exported_after_traffic() {
    let s = TestServer::start();
    let text = metrics_after_traffic(&s);

    // metric name → every label name seen on it.
    let mut exported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sample in parse_metrics(&text) {
        exported
            .entry(sample.name)
            .or_default()
            .extend(sample.labels.into_keys());
    }
    let known_label = |label: &str, metrics: &BTreeSet<String>| {
        TARGET_LABELS.contains(&label)
            || metrics
                .iter()
                .any(|m| exported.get(m).is_some_and(|l| l.contains(label)))
    };

    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for q in all_queries() {
        let expr = match parser::parse(&q.expr) {
            Ok(expr) => expr,
            Err(e) => {
                problems.push(format!("{}: does not parse: {e}", q.origin));
                continue;
            }
        };
        let names = names_of(&expr).expect("names");
        for (metric, labels) in &names.selectors {
            if EXTERNAL_METRICS.contains(&metric.as_str()) {
                continue;
            }
            used.insert(metric.clone());
            if !exported.contains_key(metric) {
                problems.push(format!("{}: metric {metric} is not exported", q.origin));
                continue;
            }
            let one = BTreeSet::from([metric.clone()]);
            for label in labels {
                if !known_label(label, &one) {
                    problems.push(format!(
                        "{}: {metric} has no label {label:?} (it has {:?})",
                        q.origin, exported[metric]
                    ));
                }
            }
        }
        for (labels, metrics) in &names.groupings {
            let ours: BTreeSet<String> = metrics
                .iter()
                .filter(|m| !EXTERNAL_METRICS.contains(&m.as_str()))
                .cloned()
                .collect();
            if ours.is_empty() || !ours.iter().all(|m| exported.contains_key(m)) {
                continue; // reported above, or not ours
            }
            for label in labels {
                if !known_label(label, &ours) {
                    problems.push(format!(
                        "{}: grouping label {label:?} is on none of {ours:?}",
                        q.origin
                    ));
                }
            }
        }
    }
    // The label a variable lists must exist on the metric it reads.
    for rel in DASHBOARDS {
        for var in variables(&dashboard(rel)) {
            let Some((Some(selector), label)) = label_values_parts(&variable_query(var)) else {
                continue;
            };
            let expr = parser::parse(&substitute(&selector)).expect("variable selector parses");
            let metrics: BTreeSet<String> = names_of(&expr)
                .expect("names")
                .selectors
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            if !known_label(&label, &metrics) {
                problems.push(format!(
                    "{rel}: variable {} lists label {label:?}, which {metrics:?} lack",
                    var["name"]
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dashboards/alerts use what tasq does not export:\n{}\n\n/metrics was:\n{text}",
        problems.join("\n")
    );
    // The operator files cover the metrics operators ask for first.
    for needed in [
        "tasq_backlog_tasks",
        "tasq_backlog_age_seconds",
        "tasq_pollers",
        "tasq_tasks_dispatched_total",
        "tasq_registration_mismatch",
        "tasq_storage_flush_seconds_bucket",
    ] {
        assert!(used.contains(needed), "no dashboard or rule uses {needed}");
    }
}

#[test]
fn rule_files_wire_up() {
    let config: serde_yaml::Value =
        serde_yaml::from_str(&read("dashboards/prometheus.yml")).expect("prometheus.yml");
    let rule_files: Vec<&str> = config["rule_files"]
        .as_sequence()
        .expect("prometheus.yml has rule_files")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        rule_files.contains(&"alerts.yml"),
        "prometheus.yml does not load alerts.yml: {rule_files:?}"
    );
    // TasqInstanceDown matches the job name of the scrape config.
    let jobs: Vec<&str> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .filter_map(|c| c["job_name"].as_str())
        .collect();
    assert!(
        read(RULES).contains("up{job=\"tasq\"}") && jobs.contains(&"tasq"),
        "the scrape job and TasqInstanceDown disagree: jobs {jobs:?}"
    );
    // Grafana provisioning: the data source and the dashboards folder.
    let ds: serde_yaml::Value =
        serde_yaml::from_str(&read("dashboards/provisioning/datasources/tasq.yml"))
            .expect("datasources/tasq.yml");
    let source = &ds["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    let uid = source["uid"].as_str().expect("data source uid");
    for rel in DASHBOARDS {
        let dash = dashboard(rel);
        let current = variables(&dash)
            .into_iter()
            .find(|v| v["name"] == "DS_PROMETHEUS")
            .map(|v| v["current"]["value"].clone());
        assert_eq!(
            current,
            Some(Value::String(uid.to_string())),
            "{rel}: DS_PROMETHEUS should default to the provisioned data source"
        );
    }
    let providers: serde_yaml::Value =
        serde_yaml::from_str(&read("dashboards/provisioning/dashboards/tasq.yml"))
            .expect("dashboards/tasq.yml");
    assert_eq!(
        providers["providers"][0]["options"]["path"].as_str(),
        Some("dashboards")
    );
}
