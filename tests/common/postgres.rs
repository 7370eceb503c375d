//! A real PostgreSQL for the tests: `TASQ_TEST_POSTGRES_URL` when set, else a cluster this
//! test process starts once from the machine's PostgreSQL binaries (Debian's `postgresql`
//! package: `initdb` in a temporary directory, as `nobody` when the tests run as root, on a
//! free loopback port). Each test server gets a database of its own.
//!
//! With `TASQ_TEST_BACKEND=postgres`, every [`super::TestServer`] runs on PostgreSQL: the
//! black-box tests are one harness and the backend is its parameter.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// True when the tests run their servers on PostgreSQL.
pub fn backend_is_postgres() -> bool {
    std::env::var("TASQ_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The URL of a new, empty database.
pub fn new_database() -> String {
    let base = base_url();
    let name = format!("tasq_{}", uuid::Uuid::new_v4().simple());
    let mut client = connect(&base, Duration::from_secs(30));
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    with_database(&base, &name)
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let rest = head
        .strip_prefix("postgres://")
        .or_else(|| head.strip_prefix("postgresql://"))
        .expect("a postgres:// URL");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("postgres://{host}/{name}{query}")
}

/// Connects, retrying until `within` passes (a cluster that is starting).
pub fn connect(url: &str, within: Duration) -> postgres::Client {
    let deadline = Instant::now() + within;
    loop {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("cannot connect to the test PostgreSQL at {url}: {e}"),
        }
    }
}

/// The server every database is made on.
fn base_url() -> String {
    if let Ok(url) = std::env::var("TASQ_TEST_POSTGRES_URL") {
        return url;
    }
    static CLUSTER: OnceLock<String> = OnceLock::new();
    CLUSTER.get_or_init(start_cluster).clone()
}

/// The directory of PostgreSQL's programs: on the `PATH`, else Debian's newest.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file());
    if let Some(d) = on_path {
        return d;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|d| d.join("initdb").is_file())
        .expect(
            "PostgreSQL's programs (install Debian's postgresql, or set TASQ_TEST_POSTGRES_URL)",
        )
}

/// A command that runs as `nobody` when this process is root (PostgreSQL refuses root);
/// with `tied`, killed when the thread that starts it ends.
fn as_postgres_user(program: &Path, tied: bool) -> Command {
    if is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
        if tied {
            cmd.arg("--pdeathsig=KILL");
        }
        cmd.arg(program);
        cmd
    } else if tied {
        let mut cmd = Command::new("setpriv");
        cmd.arg("--pdeathsig=KILL").arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Whether this process runs as root, from `/proc` (no libc call needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Removes the directories of test clusters whose postmaster is gone: a test process's
/// shared cluster dies with it (parent-death signal) but cannot remove its own directory.
/// One younger than ten minutes may still be starting (initdb) and is left alone.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tasq-test-pg-"));
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(600));
        if !named || !old {
            continue;
        }
        let running = std::fs::read_to_string(path.join("data/postmaster.pid"))
            .ok()
            .and_then(|pid| pid.lines().next().map(str::trim).map(String::from))
            .is_some_and(|pid| Path::new("/proc").join(pid).exists());
        if !running {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A new cluster directory, initialised, and a free port for it.
fn init_cluster() -> (PathBuf, PathBuf, u16) {
    remove_stale_clusters();
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("tasq-test-pg-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create the cluster directory");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&dir)
            .status()
            .expect("chown the cluster directory");
        assert!(status.success(), "chown of {dir:?} failed");
    }
    let out = as_postgres_user(&bin.join("initdb"), false)
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null())
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    (bin, dir, port)
}

/// The settings every test cluster runs with.
fn server_options(port: u16, dir: &Path) -> Vec<String> {
    vec![
        "-p".into(),
        port.to_string(),
        "-k".into(),
        dir.display().to_string(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        "max_connections=500".into(),
    ]
}

/// Starts the cluster shared by this test process and answers its URL. The postmaster is
/// started from a thread that never ends, with a parent-death signal, so it goes when the
/// tests do.
fn start_cluster() -> String {
    let (bin, dir, port) = init_cluster();
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let (postgres, log) = (bin.join("postgres"), dir.join("postgres.log"));
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let child: std::io::Result<Child> = std::fs::File::create(&log).and_then(|log| {
                as_postgres_user(&postgres, true)
                    .arg("-D")
                    .arg(dir.join("data"))
                    .args(server_options(port, &dir))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
            });
            let _ = tx.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            // Parked for good: the parent-death signal fires when this thread ends.
            loop {
                std::thread::park();
            }
        })
        .expect("start the postgres thread");
    rx.recv()
        .expect("the postgres thread answers")
        .expect("start postgres");
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    drop(connect(&url, Duration::from_secs(60)));
    url
}

/// A cluster of one test's own, to stop and start again (`pg_ctl`); stopped and removed
/// when dropped.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    /// Initialises and starts a cluster.
    pub fn start() -> Cluster {
        let (bin, dir, port) = init_cluster();
        let c = Cluster { bin, dir, port };
        c.start_again();
        c
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A new, empty database on it.
    pub fn new_database(&self) -> String {
        let name = format!("tasq_{}", uuid::Uuid::new_v4().simple());
        let mut client = connect(&self.url(), Duration::from_secs(30));
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create a test database");
        with_database(&self.url(), &name)
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        as_postgres_user(&self.bin.join("pg_ctl"), false)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Starts it (again) and waits until it takes connections.
    pub fn start_again(&self) {
        let opts = server_options(self.port, &self.dir).join(" ");
        let log = self.dir.join("postgres.log").display().to_string();
        let out = self.pg_ctl(&["-l", &log, "-o", &opts, "-w", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(connect(&self.url(), Duration::from_secs(60)));
    }

    /// Stops it at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop_immediate(&self) {
        let out = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
