//! The soak's final check: every acknowledged task's state on the server, the workers' logs,
//! and the report (lost, stuck, failed, settled twice).

use super::*;

/// State of every acknowledged id (4 threads).
pub(super) fn check_states(addr: &str, acked: &[(String, String)]) -> HashMap<String, u64> {
    let out: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let chunks: Vec<Vec<(String, String)>> = acked
        .chunks(acked.len().div_ceil(4).max(1))
        .map(|c| c.to_vec())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let (out, addr) = (out.clone(), addr.to_string());
            thread::spawn(move || {
                let agent = agent();
                let mut local: HashMap<String, u64> = HashMap::new();
                for (q, id) in chunk {
                    let url = format!("{}/tasks/{id}", queue_url(&addr, &q));
                    let mut state = "transport error".to_string();
                    for _ in 0..3 {
                        match send(agent.get(&url), None) {
                            Ok((200, v)) => {
                                state = v["state"].as_str().unwrap_or("?").to_string();
                                break;
                            }
                            Ok((404, _)) => {
                                state = "LOST (404)".into();
                                break;
                            }
                            Ok((s, v)) => state = format!("HTTP {s} {}", error_code(&v)),
                            Err(_) => thread::sleep(Duration::from_millis(200)),
                        }
                    }
                    *local.entry(state).or_default() += 1;
                }
                if let Ok(mut o) = out.lock() {
                    for (k, v) in local {
                        *o.entry(k).or_default() += v;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    let r = out.lock().map(|m| m.clone()).unwrap_or_default();
    r
}

#[derive(Default)]
pub(super) struct Logs {
    pub(super) deliveries: HashMap<String, u64>,
    /// Successful (200) HTTP completes per task: the leases.
    pub(super) http_completes: HashMap<String, HashSet<String>>,
    /// WebSocket handler successes per task: the leases.
    pub(super) ws_completes: HashMap<String, HashSet<String>>,
    pub(super) answers: HashMap<String, u64>,
}

pub(super) fn read_worker_logs(dir: &Path) -> Logs {
    let mut logs = Logs::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return logs;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("worker-") {
            continue;
        }
        let ws = name.starts_with("worker-ws");
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            match f.as_slice() {
                ["D", id, _lease] => *logs.deliveries.entry(id.to_string()).or_default() += 1,
                [tag @ ("C" | "F"), id, lease, status, code] => {
                    let kind = if ws { "ws" } else { "http" };
                    let op = if *tag == "C" { "complete" } else { "fail" };
                    *logs
                        .answers
                        .entry(format!("{kind} {op} {status} {code}"))
                        .or_default() += 1;
                    if *tag == "C" && ws {
                        logs.ws_completes
                            .entry(id.to_string())
                            .or_default()
                            .insert(lease.to_string());
                    } else if *tag == "C" && *status == "200" {
                        logs.http_completes
                            .entry(id.to_string())
                            .or_default()
                            .insert(lease.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    logs
}

pub(super) struct Report {
    pub(super) acked: usize,
    pub(super) add_stats: HashMap<String, u64>,
    pub(super) states: HashMap<String, u64>,
    pub(super) logs: Logs,
    pub(super) restarts: Vec<String>,
    pub(super) killed: u64,
    pub(super) samples: Vec<(f64, u64, u64)>,
    pub(super) drained: bool,
}

pub(super) fn sorted<V: Clone>(m: &HashMap<String, V>) -> Vec<(String, V)> {
    let mut v: Vec<(String, V)> = m.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

impl Report {
    /// Prints the report; true when nothing acknowledged was lost, failed or doubly completed.
    pub(super) fn print(&self) -> bool {
        println!("\n=== soak report ===");
        println!(
            "server restarts: {} ({})",
            self.restarts.len(),
            self.restarts.join("; ")
        );
        println!("worker processes killed: {}", self.killed);
        println!("adds:");
        for (k, v) in sorted(&self.add_stats) {
            println!("  {k}: {v}");
        }
        println!("acknowledged task ids: {}", self.acked);
        println!(
            "final state of acknowledged ids (drain {}):",
            if self.drained {
                "complete"
            } else {
                "bound passed"
            }
        );
        for (k, v) in sorted(&self.states) {
            println!("  {k}: {v}");
        }
        let l = &self.logs;
        let redelivered = l.deliveries.values().filter(|&&n| n > 1).count();
        let extra: u64 = l.deliveries.values().map(|n| n.saturating_sub(1)).sum();
        println!(
            "deliveries: {} tasks, {} delivered more than once ({} extra deliveries)",
            l.deliveries.len(),
            redelivered,
            extra
        );
        println!("worker settle answers:");
        for (k, v) in sorted(&l.answers) {
            println!("  {k}: {v}");
        }
        let double_http = l.http_completes.values().filter(|s| s.len() > 1).count();
        let ws_twice = l.ws_completes.values().filter(|s| s.len() > 1).count();
        let both = l
            .http_completes
            .keys()
            .filter(|k| l.ws_completes.contains_key(*k))
            .count();
        println!(
            "tasks with two 200 HTTP completes under different leases (bug if > 0): {double_http}"
        );
        println!(
            "tasks whose WS handler succeeded under two leases (redelivery after a drop; \
                  answers not visible to the handler): {ws_twice}"
        );
        println!("tasks with a 200 HTTP complete and also a WS handler success: {both}");
        println!("server VmRSS over time:");
        println!("  {:>8}  {:>7}  {:>9}", "t", "pid", "RSS MiB");
        let mut last_t = f64::MIN;
        let mut last_pid = 0;
        for (i, &(t, pid, kb)) in self.samples.iter().enumerate() {
            if t - last_t >= 30.0 || pid != last_pid || i + 1 == self.samples.len() {
                println!("  {t:>7.0}s  {pid:>7}  {:>9.1}", kb as f64 / 1024.0);
                last_t = t;
                last_pid = pid;
            }
        }
        let bad: u64 = self
            .states
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "completed" | "pending" | "running"))
            .map(|(_, v)| *v)
            .sum();
        let ok = bad == 0 && double_http == 0;
        println!("RESULT: {}", if ok { "PASS" } else { "FAIL" });
        ok
    }
}
