//! A workload's result: its parameters and its figures, as a table or as one JSON object.

use serde_json::{Map, Value};

use crate::cli::table::Table;

/// One figure of a result.
#[derive(Debug, Clone)]
pub struct Metric {
    /// Name, `snake_case` (the key in `--json`).
    pub name: String,
    /// Value.
    pub value: f64,
    /// Unit, for the table (`tasks/s`, `ms`, `MiB`…).
    pub unit: &'static str,
}

/// What a workload measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `backlog`, `live`, `latency`, `queues` or `pollers`.
    pub workload: String,
    /// The parameters it ran with (queue, counts, transport…).
    pub params: Map<String, Value>,
    /// The figures, in the order they are shown.
    pub results: Vec<Metric>,
}

impl Report {
    /// An empty report of `workload`.
    pub fn new(workload: &str) -> Self {
        Report {
            workload: workload.to_string(),
            ..Report::default()
        }
    }

    /// Adds a parameter.
    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.params.insert(name.to_string(), value.into());
        self
    }

    /// Adds a figure.
    pub fn metric(&mut self, name: &str, value: f64, unit: &'static str) -> &mut Self {
        self.results.push(Metric {
            name: name.to_string(),
            value,
            unit,
        });
        self
    }

    /// Adds p50/p90/p99/p99.9/max of a nanosecond histogram as milliseconds, named
    /// `{prefix}_p50_ms`….
    pub fn latency(&mut self, prefix: &str, h: &hdrhistogram::Histogram<u64>) -> &mut Self {
        if h.is_empty() {
            return self;
        }
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)] {
            let ms = h.value_at_quantile(q) as f64 / 1e6;
            self.metric(&format!("{prefix}_{label}_ms"), ms, "ms");
        }
        self.metric(&format!("{prefix}_max_ms"), h.max() as f64 / 1e6, "ms");
        self.metric(&format!("{prefix}_samples"), h.len() as f64, "");
        self
    }

    /// The value of a figure.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    /// `{"workload", "params": {…}, "results": {name: value}, "units": {name: unit}}`.
    pub fn to_json(&self) -> Value {
        let mut results = Map::new();
        let mut units = Map::new();
        for m in &self.results {
            let v = serde_json::Number::from_f64(round(m.value))
                .map(Value::Number)
                .unwrap_or(Value::Null);
            results.insert(m.name.clone(), v);
            units.insert(m.name.clone(), Value::from(m.unit));
        }
        serde_json::json!({
            "workload": self.workload,
            "params": self.params,
            "results": results,
            "units": units,
        })
    }

    /// The human table: a parameter line, then one row per figure.
    pub fn render(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let mut out = format!("{}: {}\n", self.workload, params.join(" "));
        let mut table = Table::new(&["FIGURE", "VALUE", "UNIT"]);
        for m in &self.results {
            table.row(vec![m.name.clone(), human(m.value), m.unit.to_string()]);
        }
        out.push_str(&table.render());
        out
    }
}

/// Three decimals at most (figures are rates, milliseconds and MiB).
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn human(v: f64) -> String {
    if (v.fract() == 0.0 && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_serializes() {
        let mut r = Report::new("live");
        r.param("workers", 8).param("transport", "http");
        r.metric("tasks_per_s", 1234.5678, "tasks/s");
        r.metric("lost", 0.0, "");
        let text = r.render();
        assert!(text.starts_with("live: "), "{text}");
        assert!(text.contains("tasks_per_s"), "{text}");
        assert!(text.contains("1235"), "{text}");
        let j = r.to_json();
        assert_eq!(j["results"]["tasks_per_s"], 1234.568);
        assert_eq!(j["units"]["tasks_per_s"], "tasks/s");
        assert_eq!(j["params"]["workers"], 8);
        assert_eq!(r.get("lost"), Some(0.0));
    }
}
