//! Server configuration: every setting with a documented default (`config/tasq.toml`).
//!
//! Precedence: defaults < config file < environment (`TASQ_` + the key uppercased, a table key
//! joined with `_`, e.g. `TASQ_BIND`, `TASQ_METRICS_MAX_QUEUE_SERIES`) < command line. Any bad
//! key or value is a [`ConfigError`] whose one-line message names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::auth::AuthConfig;

mod cluster;
pub mod pem;
mod sqs;
pub use cluster::ClusterConfig;
pub use sqs::{SqsConfig, SqsCredential};

/// `fsync` or `relaxed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Answer add / complete / fail only once the write is flushed (group commit).
    Fsync,
    /// Answer once written to sled's log buffer; flushed every 500 ms.
    Relaxed,
}

/// Per-queue metrics settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Queues with their own series; further queues report under `task_queue="_other"`.
    pub max_queue_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_queue_series: 1000,
        }
    }
}

/// Bounds on what clients may hold; past each, requests answer 429 `resource_exhausted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Polls parked at once in one queue.
    pub max_parked_polls_per_queue: usize,
    /// Polls parked at once in the whole server.
    pub max_parked_polls: usize,
    /// Open WebSocket connections.
    pub max_websockets: usize,
    /// Tasks leased at once in one queue; polls past it answer 429.
    pub max_in_flight_per_queue: usize,
    /// Open connections from one client address.
    pub max_connections_per_client: usize,
    /// Longest a request body may take to arrive in full; slower answers 400 and closes.
    #[serde(with = "human")]
    pub body_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_parked_polls_per_queue: 10_000,
            max_parked_polls: 100_000,
            max_websockets: 10_000,
            max_in_flight_per_queue: 100_000,
            max_connections_per_client: 4096,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Where tasks are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// An embedded sled database in `data_dir` (the default: nothing else to run).
    #[default]
    Sled,
    /// A PostgreSQL database at `storage.postgres_url`, which outlives the machine.
    Postgres,
}

/// The store: which backend, its bounds and failure handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `sled` (embedded, in `data_dir`) or `postgres` (at `postgres_url`).
    pub backend: Backend,
    /// A libpq connection URL, e.g. `postgres://tasq:secret@db.example:5432/tasq`.
    pub postgres_url: String,
    /// Connections for reads (the group commit has one more of its own).
    pub postgres_pool_size: usize,
    /// Longest a statement may run before PostgreSQL cancels it (`statement_timeout`).
    #[serde(with = "human")]
    pub postgres_statement_timeout: Duration,
    /// Above this many bytes on disk, adds answer 429 while dispatch and settles go on, so a
    /// full disk drains; 0 = no bound.
    pub max_bytes: u64,
    /// Adds answer 429 while the file system holding the store has less free space than
    /// this: the rest is kept for settles and polls, so workers drain while producers wait;
    /// 0 = none.
    pub reserve_bytes: u64,
    /// After a failed write or sync, exit with status 74 for a supervisor to restart tasq
    /// (which recovers the store from what is on disk); `false`: stay up, refusing writes
    /// with 503 and reporting not ready, until restarted by hand.
    pub exit_on_failure: bool,
    /// sled: once this many bytes of its log are synced since its last snapshot of the page
    /// table, write a new one, so a start (after a crash too) replays at most about this much
    /// log; 0 = only when opening, as sled does on its own.
    pub snapshot_after_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: Backend::Sled,
            postgres_url: String::new(),
            postgres_pool_size: 4,
            postgres_statement_timeout: Duration::from_secs(30),
            max_bytes: 0,
            reserve_bytes: 64 << 20,
            exit_on_failure: true,
            snapshot_after_bytes: 64 << 20,
        }
    }
}

/// HTTPS and WSS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; empty = plain HTTP.
    pub cert: String,
    /// PEM private key.
    pub key: String,
}

impl TlsConfig {
    /// True when both files are set.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty() && !self.key.is_empty()
    }
}

/// Checks a log filter as env_logger reads it, stricter: each comma-separated directive is
/// `LEVEL` or `MODULE=LEVEL` (env_logger takes a bare unknown word for a module name, so a
/// misspelt level would start a server that logs nothing).
fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let directives = filter.split('/').next().unwrap_or_default();
    for d in directives.split(',').map(str::trim) {
        let level = match d.split_once('=') {
            Some((module, level)) if !module.trim().is_empty() => level.trim(),
            Some(_) => return Err(format!("{d:?} names no module before `=`")),
            None => d,
        };
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{level:?} is not a level: use off, error, warn, info, debug or trace, \
                 optionally per module (`info,tasq=debug`)"
            ));
        }
    }
    Ok(())
}

/// Every setting of the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Directory of the sled store.
    pub data_dir: PathBuf,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Largest request body; more answers 413.
    pub max_payload_bytes: usize,
    /// An idle queue actor stops after this long.
    #[serde(with = "human")]
    pub queue_idle_timeout: Duration,
    /// Completed and cancelled records are purged after this long.
    #[serde(with = "human")]
    pub completed_retention: Duration,
    /// Ready tasks a queue actor keeps in memory.
    pub backlog_window: usize,
    /// Longest wait for in-flight requests on shutdown.
    #[serde(with = "human")]
    pub shutdown_timeout: Duration,
    /// HTTP worker threads; 0 = one per core.
    pub http_workers: usize,
    /// Threads of their own for queue actors; 0 = none when serving HTTP (the actors run on
    /// the HTTP workers' threads), one per core otherwise.
    pub queue_threads: usize,
    /// sled page cache size.
    pub cache_capacity_bytes: u64,
    /// Log filter (`RUST_LOG` overrides).
    pub log_level: String,
    /// Metrics settings.
    pub metrics: MetricsConfig,
    /// API keys.
    pub auth: AuthConfig,
    /// HTTPS.
    pub tls: TlsConfig,
    /// Client bounds.
    pub limits: LimitsConfig,
    /// Store bounds.
    pub storage: StorageConfig,
    /// Cluster mode.
    pub cluster: ClusterConfig,
    /// `[sqs]`: the SQS-compatible endpoint.
    pub sqs: SqsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 7280)),
            data_dir: PathBuf::from("./data"),
            durability: Durability::Fsync,
            max_payload_bytes: 1 << 20,
            queue_idle_timeout: Duration::from_secs(300),
            completed_retention: Duration::from_secs(24 * 3600),
            backlog_window: 1000,
            shutdown_timeout: Duration::from_secs(30),
            http_workers: 0,
            queue_threads: 0,
            cache_capacity_bytes: 64 << 20,
            log_level: "info".into(),
            metrics: MetricsConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            limits: LimitsConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            sqs: SqsConfig::default(),
        }
    }
}

/// The `TASQ_*` variables in `env` that name no setting (a typo is otherwise ignored in
/// silence), leaving out the client's own (`TASQ_SERVER`, `TASQ_NAMESPACE`, `TASQ_API_KEY`,
/// `TASQ_CA_CERT`), those the shell worker gives its commands (`TASQ_TASK_*`, `TASQ_QUEUE*`,
/// `TASQ_ATTEMPT`, `TASQ_PRIORITY`, `TASQ_LEASE*`) and the test harness's (`TASQ_TEST_*`).
pub fn unknown_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    const CLIENT: [&str; 6] = [
        "SERVER",
        "NAMESPACE",
        "API_KEY",
        "CA_CERT",
        "ATTEMPT",
        "PRIORITY",
    ];
    const PREFIXES: [&str; 4] = ["TEST_", "TASK_", "QUEUE", "LEASE"];
    let Ok(defaults) = toml::Value::try_from(Config::default()) else {
        return Vec::new();
    };
    let mut unknown: Vec<String> = env
        .into_iter()
        .filter_map(|(name, _)| {
            let rest = name.strip_prefix("TASQ_")?;
            let known = CLIENT.contains(&rest)
                || PREFIXES.iter().any(|p| rest.starts_with(p))
                || find_key(&defaults, &rest.to_ascii_lowercase()).is_some();
            (!known).then_some(name)
        })
        .collect();
    unknown.sort();
    unknown
}

/// A bad config file, variable or value; the message is one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Settings given on the command line, which beat everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--bind`.
    pub bind: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--insecure`: serve a non-loopback address with auth off.
    pub insecure: bool,
}

impl Config {
    /// Loads the configuration: defaults, then `file`, then `TASQ_*` variables from `env`,
    /// then `overrides`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut merged = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError(format!("internal: defaults do not encode: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!("cannot read config file {}: {e}", path.display()))
            })?;
            let table: toml::Table = toml::from_str(&text).map_err(|e| {
                ConfigError(format!(
                    "config file {}: {}",
                    path.display(),
                    one_line(&e.to_string())
                ))
            })?;
            merge(&mut merged, toml::Value::Table(table));
        }
        let defaults = merged.clone();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("TASQ_") else {
                continue;
            };
            if let Some(path) = find_key(&defaults, &rest.to_ascii_lowercase()) {
                set_from_env(&mut merged, &path, &name, &value)?;
            }
        }
        let mut config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let key = e.path().to_string();
            ConfigError(format!(
                "config key `{key}`: {}",
                crate::model::json::plain_words(&one_line(&e.into_inner().to_string()))
            ))
        })?;
        if let Some(bind) = overrides.bind {
            config.bind = bind;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        config.validate()?;
        if !config.auth.enabled && !config.bind.ip().is_loopback() && !overrides.insecure {
            return Err(ConfigError(format!(
                "config key `auth.enabled`: refusing to serve {} with auth off; turn auth on, \
                 bind a loopback address, or pass --insecure",
                config.bind
            )));
        }
        let sqs = &config.sqs;
        if sqs.enabled
            && !config.auth.enabled
            && !sqs.bind.ip().is_loopback()
            && !overrides.insecure
        {
            return Err(ConfigError(format!(
                "config key `sqs.bind`: refusing to serve SQS on {} with auth off (signatures \
                 are not checked); turn auth on, bind a loopback address, or pass --insecure",
                sqs.bind
            )));
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError(format!("config key `{key}`: {why}")));
        if self.max_payload_bytes < 64 {
            return bad("max_payload_bytes", "must be at least 64");
        }
        if self.backlog_window < 1 {
            return bad("backlog_window", "must be at least 1");
        }
        if self.metrics.max_queue_series < 1 {
            return bad("metrics.max_queue_series", "must be at least 1");
        }
        if self.queue_idle_timeout.is_zero() {
            return bad("queue_idle_timeout", "must be more than 0");
        }
        if let Err(why) = check_log_filter(&self.log_level) {
            return bad("log_level", &why);
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        if let Err((key, why)) = self.auth.validate() {
            return bad(&key, why);
        }
        let st = &self.storage;
        if st.backend == Backend::Postgres && st.postgres_url.is_empty() {
            return bad(
                "storage.postgres_url",
                "must be set when storage.backend = \"postgres\"",
            );
        }
        if st.postgres_pool_size == 0 {
            return bad("storage.postgres_pool_size", "must be at least 1");
        }
        if st.postgres_statement_timeout.is_zero() {
            return bad("storage.postgres_statement_timeout", "must be more than 0");
        }
        if let Err((key, why)) = self.cluster.validate(st.backend == Backend::Postgres) {
            return bad(key, &why);
        }
        if let Err((key, why)) = self.sqs.validate(&self.auth, self.cluster.enabled) {
            return bad(&key, &why);
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return bad("tls.cert", "tls.cert and tls.key must be set together");
        }
        let l = &self.limits;
        for (key, v) in [
            (
                "limits.max_parked_polls_per_queue",
                l.max_parked_polls_per_queue,
            ),
            ("limits.max_parked_polls", l.max_parked_polls),
            ("limits.max_websockets", l.max_websockets),
            ("limits.max_in_flight_per_queue", l.max_in_flight_per_queue),
            (
                "limits.max_connections_per_client",
                l.max_connections_per_client,
            ),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        Ok(())
    }

    /// HTTP worker threads to start.
    pub fn http_threads(&self) -> usize {
        or_cores(self.http_workers)
    }

    /// Queue actor threads of their own to start when actors need them (see `queue_threads`).
    pub fn actor_threads(&self) -> usize {
        or_cores(self.queue_threads)
    }
}

fn or_cores(n: usize) -> usize {
    if n > 0 {
        n
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn merge(into: &mut toml::Value, from: toml::Value) {
    match (into, from) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Finds the key path whose env spelling (joined with `_`) is `wanted`.
fn find_key(value: &toml::Value, wanted: &str) -> Option<Vec<String>> {
    let table = value.as_table()?;
    for (k, v) in table {
        if k == wanted && !v.is_table() {
            return Some(vec![k.clone()]);
        }
        if v.is_table() {
            if let Some(rest) = wanted.strip_prefix(&format!("{k}_")) {
                if let Some(mut path) = find_key(v, rest) {
                    path.insert(0, k.clone());
                    return Some(path);
                }
            }
        }
    }
    None
}

fn set_from_env(
    root: &mut toml::Value,
    path: &[String],
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let mut slot = root;
    for k in path {
        slot = slot
            .get_mut(k)
            .ok_or_else(|| ConfigError(format!("internal: no key {k}")))?;
    }
    let key = path.join(".");
    let parsed = match slot {
        toml::Value::Integer(_) => raw.trim().parse().map(toml::Value::Integer).map_err(|_| {
            ConfigError(format!(
                "config key `{key}` (from {var}): expected an integer, got {raw:?}"
            ))
        })?,
        toml::Value::Float(_) => raw.trim().parse().map(toml::Value::Float).map_err(|_| {
            ConfigError(format!(
                "config key `{key}` (from {var}): expected a number, got {raw:?}"
            ))
        })?,
        toml::Value::Boolean(_) => raw.trim().parse().map(toml::Value::Boolean).map_err(|_| {
            ConfigError(format!(
                "config key `{key}` (from {var}): expected true or false, got {raw:?}"
            ))
        })?,
        _ => toml::Value::String(raw.to_string()),
    };
    *slot = parsed;
    Ok(())
}

/// Durations as humantime strings (`"500ms"`, `"5m"`, `"24h"`).
mod human {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration like \"500ms\", \"5m\" or \"24h\": {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn defaults() {
        let c = Config::load(None, env(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1:7280");
        assert_eq!(c.queue_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.completed_retention, Duration::from_secs(86400));
        assert_eq!(c.durability, Durability::Fsync);
    }

    #[test]
    fn precedence_file_env_cli() {
        let f = file(
            "max_payload_bytes = 5000\nbind = \"127.0.0.1:1\"\n[metrics]\nmax_queue_series = 3\n",
        );
        let c = Config::load(
            Some(f.path()),
            env(&[
                ("TASQ_MAX_PAYLOAD_BYTES", "7000"),
                ("TASQ_BIND", "127.0.0.1:2"),
                ("TASQ_METRICS_MAX_QUEUE_SERIES", "9"),
                ("TASQ_QUEUE_IDLE_TIMEOUT", "2s"),
                ("OTHER", "x"),
            ]),
            &Overrides {
                bind: Some("127.0.0.1:3".parse().unwrap()),
                data_dir: None,
                insecure: false,
            },
        )
        .unwrap();
        assert_eq!(c.max_payload_bytes, 7000);
        assert_eq!(c.bind.port(), 3);
        assert_eq!(c.metrics.max_queue_series, 9);
        assert_eq!(c.queue_idle_timeout, Duration::from_secs(2));
    }

    /// Every key of a table, as dotted paths.
    fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let Some(t) = v.as_table() {
            for (k, v) in t {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&path, v, out);
                out.push(path);
            }
        }
    }

    #[test]
    fn shipped_config_documents_every_key_with_its_default() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/tasq.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let shipped: toml::Value = toml::from_str(&text).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        let (mut a, mut b) = (vec![], vec![]);
        keys("", &shipped, &mut a);
        keys("", &defaults, &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b, "config/tasq.toml must list exactly the settings");
        let loaded = Config::load(Some(path.as_ref()), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(
            toml::Value::try_from(loaded).unwrap(),
            defaults,
            "config/tasq.toml must hold the defaults"
        );
    }

    #[test]
    fn non_loopback_without_auth_needs_insecure() {
        let open = Overrides {
            bind: Some("0.0.0.0:7280".parse().unwrap()),
            ..Overrides::default()
        };
        let e = Config::load(None, env(&[]), &open).unwrap_err().to_string();
        assert!(e.contains("--insecure"), "{e}");
        let insecure = Overrides {
            insecure: true,
            ..open.clone()
        };
        assert!(Config::load(None, env(&[]), &insecure).is_ok());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("bnd = \"x\"", "bnd"),
            ("max_payload_bytes = \"lots\"", "max_payload_bytes"),
            ("durability = \"sometimes\"", "durability"),
            ("queue_idle_timeout = \"soon\"", "queue_idle_timeout"),
            (
                "[metrics]\nmax_queue_series = -1",
                "metrics.max_queue_series",
            ),
        ];
        for (text, key) in cases {
            let f = file(text);
            let e = Config::load(Some(f.path()), env(&[]), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let e = Config::load(
            None,
            env(&[("TASQ_BACKLOG_WINDOW", "many")]),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("backlog_window") && e.contains("TASQ_BACKLOG_WINDOW"),
            "{e}"
        );
    }

    #[test]
    fn unknown_tasq_variables_are_found_and_the_clients_are_not() {
        let found = unknown_env(env(&[
            ("TASQ_CLUSTER_CA_CERTX", "x"),
            ("TASQ_CLUSTER_CA_CERT", "x"),
            ("TASQ_BIND", "x"),
            ("TASQ_SERVER", "x"),
            ("TASQ_TEST_POSTGRES_URL", "x"),
            ("TASQ_TASK_ID", "x"),
            ("PATH", "x"),
        ]));
        assert_eq!(found, ["TASQ_CLUSTER_CA_CERTX"]);
    }
}
