//! Human output: aligned tables, durations, rates and instants.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// A table of left-aligned columns separated by two spaces, like `temporal` or `kubectl`.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// True when only the headers are there.
    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    /// The table as text, one line per row, each ending in `\n`.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A duration in milliseconds for people: `120ms`, `2.5s`, `3m 20s`, `2h 5m`.
pub fn human_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
        humantime::format_duration(Duration::from_secs(rounded)).to_string()
    }
}

/// An RFC 3339 instant with how long ago it was: `2026-11-22T08:00:00.123Z (3.2s ago)`.
pub fn instant_ago(rfc3339: &str) -> String {
    match humantime::parse_rfc3339(rfc3339) {
        Ok(t) => match SystemTime::now().duration_since(t) {
            Ok(ago) => format!("{rfc3339} ({} ago)", human_ms(ago.as_millis() as u64)),
            Err(_) => rfc3339.to_string(),
        },
        Err(_) => rfc3339.to_string(),
    }
}

/// A JSON string field, or `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number field (integer or float), or `-`.
pub fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        _ => "-".into(),
    }
}

/// A rate in tasks per second with two decimals: `0.50/s`.
pub fn rate(v: &Value) -> String {
    match v.as_f64() {
        Some(r) => format!("{r:.2}/s"),
        None => "-".into(),
    }
}

/// At most `max` characters of `s` on one line, with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= max {
        one
    } else {
        let mut cut: String = one.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["xyz".into(), "1".into()]);
        assert_eq!(t.render(), "A    LONGER\nxyz  1\n");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ms(0), "0ms");
        assert_eq!(human_ms(2500), "2.5s");
        assert_eq!(human_ms(200_000), "3m 20s");
        assert_eq!(human_ms(7_530_000), "2h 5m");
        assert_eq!(clip("a\nb  c", 10), "a b c");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
