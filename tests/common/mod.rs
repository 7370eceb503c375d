//! Shared black-box harness for the integration tests: starts the real `tasq` binary on
//! `127.0.0.1:0` with a temporary data directory, talks to it over real HTTP (ureq), and
//! offers small helpers for the contract in `/work/shared/API.md` and `METRICS.md`.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub mod auth;
pub mod cluster;
pub mod faults;
pub mod postgres;
pub mod sqs;

/// The namespace most tests use.
pub const NS: &str = "default";

/// How long a server gets to print its "listening on" line or to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Generous bound for "eventually" conditions (poll loops).
pub const EVENTUALLY: Duration = Duration::from_secs(20);

/// A running `tasq serve` child process with its own temporary data directory.
pub struct TestServer {
    /// Holds the data directory (`<dir>/data`) and the stderr logs; removed on drop.
    dir: TempDir,
    /// The current server process.
    child: Child,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    base: String,
    /// Extra command-line arguments, reused on restart.
    args: Vec<String>,
    /// Extra environment, reused on restart.
    env: Vec<(String, String)>,
    /// How many processes were started so far (names the stderr log files).
    starts: usize,
    /// The current process's first lines of stdout (the listening lines among them).
    stdout: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts a server with default settings and waits until `/readyz` answers 200.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Starts a server with extra command-line arguments (appended after
    /// `serve --bind 127.0.0.1:0 --data-dir DIR`; a `--bind` among them replaces the default)
    /// and extra environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let server = Self::start_unready(args, env);
        server.wait_ready();
        server
    }

    /// Like [`TestServer::start_with`], but returns as soon as the server printed its
    /// "listening on" line, without probing `/readyz` over plain HTTP: for an HTTPS server
    /// ([`TestServer::base`] then starts with `https://`), whose readiness the caller checks
    /// with its own TLS client. (`restart` still probes over plain HTTP.)
    ///
    /// As with `start_with`, `args` may hold its own `--bind ADDR`, which then replaces the
    /// default `127.0.0.1:0`; a wildcard address (`0.0.0.0`) is reached via `127.0.0.1`.
    pub fn start_unready(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_prepared(args, env, |_| {})
    }

    /// Like [`TestServer::start_unready`], but first runs `prepare` on the data directory
    /// (created, empty): to mount a file system there, say, before the server opens it.
    pub fn start_prepared(
        args: &[&str],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&Path),
    ) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tasq-test-")
            .tempdir()
            .expect("create temp dir");
        std::fs::create_dir_all(dir.path().join("data")).expect("create data dir");
        prepare(&dir.path().join("data"));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        // The backend is the harness's parameter; a test that names one keeps it.
        if postgres::backend_is_postgres() && !env.iter().any(|(k, _)| k == "TASQ_STORAGE_BACKEND")
        {
            env.push(("TASQ_STORAGE_BACKEND".into(), "postgres".into()));
            env.push(("TASQ_STORAGE_POSTGRES_URL".into(), postgres::new_database()));
        }
        let (child, base, stdout) = spawn_server(dir.path(), &args, &env, 0);
        TestServer {
            dir,
            child,
            base,
            args,
            env,
            starts: 1,
            stdout,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The base URL of the SQS endpoint (`[sqs] enabled`), from the line the server prints.
    pub fn sqs_base(&self) -> String {
        const LINE: &str = "SQS endpoint listening on ";
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find_map(|l| l.split_once(LINE).map(|(_, url)| url.trim().to_string()));
            if let Some(url) = found {
                return url;
            }
            assert!(
                Instant::now() < deadline,
                "the server printed no '{LINE}' line; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The data directory passed with `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The temporary directory that holds the data directory and logs.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id of the current server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `GET /readyz` until it answers 200 (panics with the server's stderr after 30 s).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = self.url("/readyz");
        loop {
            if let Ok((200, _)) = try_get(&url) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "server at {} not ready within {:?}; stderr:\n{}",
                    self.base,
                    START_TIMEOUT,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL (no chance to flush anything) and reaps it.
    pub fn kill9(&mut self) {
        // On unix, Child::kill sends SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (graceful shutdown); does not wait.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => panic!("try_wait failed: {e}"),
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the server again on the same data directory (new port) and waits until ready.
    /// A process that is still running is killed first.
    pub fn restart(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let (child, base, stdout) =
            spawn_server(self.dir.path(), &self.args, &self.env, self.starts);
        self.stdout = stdout;
        self.starts += 1;
        self.child = child;
        self.base = base;
        self.wait_ready();
    }

    /// Replaces the extra environment of the next [`TestServer::restart`] (to start again
    /// without a fault injected into the previous process, say).
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Everything the server processes wrote to stderr so far (all starts).
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        for n in 0..self.starts.max(1) {
            let path = self.dir.path().join(format!("stderr-{n}.log"));
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push_str(&format!("--- stderr of start #{n} ---\n{text}"));
            }
        }
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let text = self.stderr();
            let tail: String = if text.len() > 16_000 {
                let mut start = text.len() - 16_000;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                text[start..].to_string()
            } else {
                text
            };
            eprintln!("server stderr (tail):\n{tail}");
        }
    }
}

/// Leaves out of `cmd`'s environment every `TASQ_*` variable the test run inherited, so
/// only what the test sets reaches the server or the command line.
pub fn without_tasq_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TASQ_") {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The `tasq` binary as a command, with no inherited `TASQ_*` variables.
pub fn tasq_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasq"));
    without_tasq_env(&mut cmd);
    cmd
}

/// Runs `cmd` to its end: its exit code (-1 when killed by a signal) and its stdout and
/// stderr, one after the other.
pub fn exit_code_and_output(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run tasq");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `cmd` to its end with `input` on stdin; its status and output.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tasq");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("wait for tasq")
}

/// Applies the environment every server process gets: no inherited `TASQ_*` settings,
/// `RUST_LOG=warn`, then the test's own variables.
fn apply_env(cmd: &mut Command, env: &[(String, String)]) {
    without_tasq_env(cmd);
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Adds `--bind 127.0.0.1:0` unless the test's own arguments choose the address.
fn default_bind<S: AsRef<str>>(cmd: &mut Command, args: &[S]) {
    if !args
        .iter()
        .any(|a| a.as_ref() == "--bind" || a.as_ref().starts_with("--bind="))
    {
        cmd.arg("--bind").arg("127.0.0.1:0");
    }
}

/// Spawns `tasq serve`, waits for the "listening on" line and returns the child, the base
/// URL and the first lines of its stdout (filled as they come).
fn spawn_server(
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    n: usize,
) -> (Child, String, Arc<Mutex<Vec<String>>>) {
    let data = dir.join("data");
    let log_path = dir.join(format!("stderr-{n}.log"));
    let log = File::create(&log_path).expect("create stderr log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasq"));
    cmd.arg("serve");
    default_bind(&mut cmd, args);
    cmd.arg("--data-dir").arg(&data).args(args);
    apply_env(&mut cmd, env);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawn tasq binary");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = mpsc::channel::<String>();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    // Reads stdout until the ready line, then keeps draining so the pipe never blocks.
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        let mut sent = false;
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len() < 100 {
                kept.push(line.to_string());
            }
            if !sent {
                if let Some(i) = line.find("tasq listening on ") {
                    let i = i + "tasq ".len();
                    let url = line[i + "listening on ".len()..].trim().to_string();
                    let _ = tx.send(url);
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(url) => {
            // A wildcard listener is talked to over loopback only.
            let base = url
                .trim_end_matches('/')
                .replace("://0.0.0.0:", "://127.0.0.1:");
            assert!(
                base.starts_with("http://") || base.starts_with("https://"),
                "unexpected listening URL {base:?}"
            );
            (child, base, lines)
        }
        Err(_) => {
            let exited = child.try_wait().ok().flatten();
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!(
                "tasq did not print 'listening on' within {START_TIMEOUT:?} (exit: {exited:?}); stderr:\n{stderr}"
            );
        }
    }
}

/// Runs `tasq serve --bind 127.0.0.1:0 --data-dir <tmp> ARGS` expecting it to exit on its own
/// (bad configuration); a `--bind` in `ARGS` replaces the default address. Returns the exit
/// status (None if it was still running after `timeout`, in which case it is killed) and its
/// stderr.
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> (Option<ExitStatus>, String) {
    let dir = tempfile::Builder::new()
        .prefix("tasq-test-")
        .tempdir()
        .expect("create temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("create data dir");
    let log_path = dir.path().join("stderr.log");
    let log = File::create(&log_path).expect("create stderr log");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasq"));
    cmd.arg("serve");
    default_bind(&mut cmd, args);
    cmd.arg("--data-dir").arg(&data).args(args);
    apply_env(&mut cmd, &env);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    let mut child = cmd.spawn().expect("spawn tasq binary");
    let mut stdout = child.stdout.take().expect("child stdout");
    thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stdout.read_to_end(&mut sink);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&log_path).unwrap_or_default();
    (status, stderr)
}

// ---------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------

/// One shared ureq agent: generous timeout so long polls work, no connection pooling so a
/// server-side keep-alive close can never surface as a spurious transport error.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(90))
            .max_idle_connections(0)
            .redirects(0)
            .build()
    })
}

/// Parses a body as JSON: empty → Null, not JSON → the raw text as a JSON string.
pub fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
    }
}

fn finish(res: Result<ureq::Response, ureq::Error>) -> Result<(u16, Value), String> {
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let text = resp.into_string().map_err(|e| e.to_string())?;
    Ok((status, parse_body(&text)))
}

pub fn try_post(url: &str, body: &Value) -> Result<(u16, Value), String> {
    finish(agent().post(url).send_json(body))
}

pub fn try_get(url: &str) -> Result<(u16, Value), String> {
    finish(agent().get(url).call())
}

/// POST a JSON body; returns status and parsed body (panics only on transport errors).
#[track_caller]
pub fn post(url: &str, body: &Value) -> (u16, Value) {
    match try_post(url, body) {
        Ok(r) => r,
        Err(e) => panic!("POST {url} failed: {e}"),
    }
}

/// POST raw bytes with the given content type.
#[track_caller]
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let res = agent()
        .post(url)
        .set("Content-Type", content_type)
        .send_bytes(body);
    match finish(res) {
        Ok(r) => r,
        Err(e) => panic!("POST {url} failed: {e}"),
    }
}

#[track_caller]
pub fn get(url: &str) -> (u16, Value) {
    match try_get(url) {
        Ok(r) => r,
        Err(e) => panic!("GET {url} failed: {e}"),
    }
}

#[track_caller]
pub fn put(url: &str, body: &Value) -> (u16, Value) {
    match finish(agent().put(url).send_json(body)) {
        Ok(r) => r,
        Err(e) => panic!("PUT {url} failed: {e}"),
    }
}

#[track_caller]
pub fn delete(url: &str) -> (u16, Value) {
    match finish(agent().delete(url).call()) {
        Ok(r) => r,
        Err(e) => panic!("DELETE {url} failed: {e}"),
    }
}

/// GET returning status, content type and the raw text body.
#[track_caller]
pub fn get_text(url: &str) -> (u16, String, String) {
    let resp = match agent().get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {url} failed: {e}"),
    };
    let status = resp.status();
    let ctype = resp.header("Content-Type").unwrap_or("").to_string();
    let text = resp
        .into_string()
        .unwrap_or_else(|e| panic!("read body of {url}: {e}"));
    (status, ctype, text)
}

/// Sends one HTTP/1.1 request over a raw TCP connection (`Connection: close`), writing the
/// body from a second thread while reading the answer, so an early answer (413 before the
/// body is read) is seen even if the server stops reading. Returns status and parsed body.
#[track_caller]
pub fn raw_request(base: &str, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
    let hostport = base.trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(&hostport).expect("connect to server");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("set read timeout");
    let mut writer = stream.try_clone().expect("clone stream");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let w = thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let _ = writer.write_all(&body);
        let _ = writer.flush();
    });
    let mut reader = stream;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
            }
            Err(e) => {
                if buf.is_empty() {
                    panic!("{method} {path}: no answer from server: {e}");
                }
                break;
            }
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = w.join();
    parse_raw_response(&buf).unwrap_or_else(|| {
        panic!(
            "unparsable HTTP answer: {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

fn split_head(buf: &[u8]) -> Option<(String, &[u8])> {
    let pos = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((
        String::from_utf8_lossy(&buf[..pos]).to_string(),
        &buf[pos + 4..],
    ))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim().eq_ignore_ascii_case(name) {
            Some(v.trim().to_string())
        } else {
            None
        }
    })
}

fn response_complete(buf: &[u8]) -> bool {
    let Some((head, rest)) = split_head(buf) else {
        return false;
    };
    if let Some(len) = header_value(&head, "content-length") {
        if let Ok(len) = len.parse::<usize>() {
            return rest.len() >= len;
        }
    }
    if header_value(&head, "transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false)
    {
        return rest.windows(5).any(|w| w == b"0\r\n\r\n");
    }
    false
}

fn parse_raw_response(buf: &[u8]) -> Option<(u16, Value)> {
    let (head, rest) = split_head(buf)?;
    let status: u16 = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let body: Vec<u8> = if header_value(&head, "transfer-encoding")
        .map(|v| v.to_ascii_lowercase().contains("chunked"))
        .unwrap_or(false)
    {
        let mut out = Vec::new();
        let mut rest = rest;
        loop {
            let pos = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_line = String::from_utf8_lossy(&rest[..pos]).to_string();
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[pos + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        out
    } else if let Some(len) = header_value(&head, "content-length").and_then(|l| l.parse().ok()) {
        rest.get(..len).unwrap_or(rest).to_vec()
    } else {
        rest.to_vec()
    };
    Some((status, parse_body(&String::from_utf8_lossy(&body))))
}

/// Checks the contract's error shape `{"error": {"code", "message"}}` with a non-empty
/// message; returns the message.
#[track_caller]
pub fn assert_error(
    status: u16,
    body: &Value,
    expected_status: u16,
    expected_code: &str,
) -> String {
    assert_eq!(
        status, expected_status,
        "expected status {expected_status} ({expected_code}), got {status} with body {body}"
    );
    let Some(err) = body.get("error") else {
        panic!("error body lacks \"error\": {body}");
    };
    assert_eq!(
        err.get("code").and_then(Value::as_str),
        Some(expected_code),
        "wrong error code in {body}"
    );
    let Some(message) = err.get("message").and_then(Value::as_str) else {
        panic!("error lacks a string message: {body}");
    };
    assert!(!message.trim().is_empty(), "empty error message: {body}");
    message.to_string()
}

// ---------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------

/// `/api/v1/namespaces/{ns}/task-queues/{queue}/{type}`.
pub fn q(ns: &str, queue: &str, ty: &str) -> String {
    format!("/api/v1/namespaces/{ns}/task-queues/{queue}/{ty}")
}

/// `/api/v1/namespaces/{ns}/task-queues/{queue}` (describe).
pub fn describe_path(ns: &str, queue: &str) -> String {
    format!("/api/v1/namespaces/{ns}/task-queues/{queue}")
}

/// Reads an HTTP/1.1 message head (request or status line, then headers) from `reader`:
/// the first line, and the Content-Length (0 when absent).
#[track_caller]
pub fn read_http_head(reader: &mut impl BufRead) -> (String, usize) {
    let mut first_line = String::new();
    reader.read_line(&mut first_line).expect("first line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("content-length");
            }
        }
    }
    (first_line, length)
}

/// Adds one task and asserts 201 (not a duplicate); returns its task id.
#[track_caller]
pub fn add_task(s: &TestServer, qpath: &str, body: Value) -> String {
    let (status, resp) = post(&s.url(&format!("{qpath}/tasks")), &body);
    assert_eq!(status, 201, "add {body} answered {status} {resp}");
    assert_eq!(resp["duplicate"], json!(false), "add answered {resp}");
    let Some(id) = resp["task_id"].as_str().map(str::to_string) else {
        panic!("add answered no task_id: {resp}");
    };
    assert!(!id.is_empty(), "empty task_id in {resp}");
    id
}

/// Polls and asserts 200; returns the tasks.
#[track_caller]
pub fn poll_tasks(s: &TestServer, qpath: &str, body: Value) -> Vec<Value> {
    let (status, resp) = post(&s.url(&format!("{qpath}/poll")), &body);
    assert_eq!(status, 200, "poll {body} answered {status} {resp}");
    let Some(tasks) = resp["tasks"].as_array() else {
        panic!("poll answer lacks tasks array: {resp}");
    };
    tasks.clone()
}

/// Starts a poll in a thread; the thread answers status, body and how long the poll took.
pub fn spawn_poll(
    s: &TestServer,
    qpath: &str,
    body: Value,
) -> thread::JoinHandle<(u16, Value, Duration)> {
    let url = s.url(&format!("{qpath}/poll"));
    thread::spawn(move || {
        let started = Instant::now();
        let (status, resp) = post(&url, &body);
        (status, resp, started.elapsed())
    })
}

/// Polls for at most one task.
#[track_caller]
pub fn poll_one(s: &TestServer, qpath: &str, identity: &str, wait_ms: u64) -> Option<Value> {
    let tasks = poll_tasks(
        s,
        qpath,
        json!({"identity": identity, "max_tasks": 1, "wait_ms": wait_ms}),
    );
    assert!(tasks.len() <= 1, "max_tasks 1 gave {} tasks", tasks.len());
    tasks.into_iter().next()
}

/// The lease string of a polled task.
#[track_caller]
pub fn lease_of(task: &Value) -> String {
    let Some(lease) = task["lease"].as_str().map(str::to_string) else {
        panic!("task without lease: {task}");
    };
    assert!(!lease.is_empty(), "empty lease in {task}");
    lease
}

#[track_caller]
pub fn complete(s: &TestServer, lease: &str, result: Value) -> (u16, Value) {
    post(
        &s.url(&format!("/api/v1/leases/{lease}/complete")),
        &json!({ "result": result }),
    )
}

#[track_caller]
pub fn fail(s: &TestServer, lease: &str, body: Value) -> (u16, Value) {
    post(&s.url(&format!("/api/v1/leases/{lease}/fail")), &body)
}

#[track_caller]
pub fn heartbeat(s: &TestServer, lease: &str, details: Value) -> (u16, Value) {
    post(
        &s.url(&format!("/api/v1/leases/{lease}/heartbeat")),
        &json!({ "details": details }),
    )
}

/// GET status; asserts 200.
#[track_caller]
pub fn status_of(s: &TestServer, qpath: &str, task_id: &str) -> Value {
    let (status, body) = get(&s.url(&format!("{qpath}/tasks/{task_id}")));
    assert_eq!(status, 200, "status of {task_id}: {status} {body}");
    body
}

/// Describe of a queue; asserts 200.
#[track_caller]
pub fn describe(s: &TestServer, ns: &str, queue: &str) -> Value {
    let (status, body) = get(&s.url(&describe_path(ns, queue)));
    assert_eq!(status, 200, "describe {ns}/{queue}: {status} {body}");
    body
}

/// The Stats of one type of a queue.
#[track_caller]
pub fn stats(s: &TestServer, ns: &str, queue: &str, ty: &str) -> Value {
    let d = describe(s, ns, queue);
    let st = d["types"][ty].clone();
    assert!(st.is_object(), "describe lacks types.{ty}: {d}");
    st
}

/// A numeric Stats field as u64 (panics when absent or not a number).
#[track_caller]
pub fn stat_u64(st: &Value, field: &str) -> u64 {
    match st[field]
        .as_u64()
        .or_else(|| st[field].as_f64().map(|f| f as u64))
    {
        Some(v) => v,
        None => panic!("stats field {field} missing or not a number: {st}"),
    }
}

#[track_caller]
pub fn backlog(s: &TestServer, ns: &str, queue: &str, ty: &str) -> u64 {
    stat_u64(&stats(s, ns, queue, ty), "backlog_count")
}

/// Identities of the pollers describe lists for one type of a queue.
#[track_caller]
pub fn poller_identities(s: &TestServer, ns: &str, queue: &str, ty: &str) -> Vec<String> {
    let st = stats(s, ns, queue, ty);
    let Some(pollers) = st["pollers"].as_array() else {
        panic!("stats lacks pollers array: {st}");
    };
    pollers
        .iter()
        .filter_map(|p| p["identity"].as_str().map(str::to_string))
        .collect()
}

/// Waits until describe lists a poller with `identity` (panics after 20 s).
#[track_caller]
pub fn wait_for_poller(s: &TestServer, ns: &str, queue: &str, ty: &str, identity: &str) {
    let ok = wait_until(EVENTUALLY, || {
        poller_identities(s, ns, queue, ty)
            .iter()
            .any(|i| i == identity)
    });
    assert!(
        ok,
        "describe of {ns}/{queue}/{ty} never listed poller {identity}: {}",
        describe(s, ns, queue)
    );
}

/// Calls `f` every 50 ms until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// True when `s` looks like an RFC 3339 UTC instant (`2026-11-22T08:00:00.123Z`).
pub fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && b[..4].iter().all(u8::is_ascii_digit)
        && (s.ends_with('Z') || s.ends_with('z') || s.ends_with("+00:00"))
}

/// Asserts that `v[field]` is an RFC 3339 UTC string.
#[track_caller]
pub fn assert_instant(v: &Value, field: &str) {
    let Some(s) = v[field].as_str() else {
        panic!("{field} is not a string in {v}");
    };
    assert!(is_rfc3339_utc(s), "{field} = {s:?} is not RFC 3339 UTC");
}

/// Asserts that `v` is an object holding every key in `keys`.
#[track_caller]
pub fn assert_has_keys(v: &Value, keys: &[&str]) {
    let Some(obj) = v.as_object() else {
        panic!("expected an object, got {v}");
    };
    for k in keys {
        assert!(obj.contains_key(*k), "missing field {k:?} in {v}");
    }
}

/// A JSON add body of exactly `n` bytes: `{"task_type":"big","payload":"xxx…"}`.
#[track_caller]
pub fn task_body_of_size(n: usize) -> String {
    let empty = r#"{"task_type":"big","payload":""}"#;
    assert!(n >= empty.len(), "body size {n} too small");
    let body = format!(
        r#"{{"task_type":"big","payload":"{}"}}"#,
        "x".repeat(n - empty.len())
    );
    assert_eq!(body.len(), n);
    body
}

// ---------------------------------------------------------------------------------------
// Metrics helpers (Prometheus text format)
// ---------------------------------------------------------------------------------------

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// GET /metrics, asserting 200; returns the text.
#[track_caller]
pub fn metrics_text(s: &TestServer) -> String {
    let (status, _, text) = get_text(&s.url("/metrics"));
    assert_eq!(status, 200, "/metrics answered {status}: {text}");
    text
}

/// Parses every sample line (comments and blank lines skipped).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_sample_line).collect()
}

fn parse_sample_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if rest.starts_with('{') {
        let chars: Vec<char> = rest[1..].chars().collect();
        let mut i = 0;
        loop {
            while i < chars.len() && (chars[i] == ',' || chars[i].is_whitespace()) {
                i += 1;
            }
            if i >= chars.len() {
                return None;
            }
            if chars[i] == '}' {
                i += 1;
                break;
            }
            let mut key = String::new();
            while i < chars.len() && chars[i] != '=' {
                key.push(chars[i]);
                i += 1;
            }
            i += 1; // '='
            if i >= chars.len() || chars[i] != '"' {
                return None;
            }
            i += 1;
            let mut val = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                    val.push(match chars[i] {
                        'n' => '\n',
                        c => c,
                    });
                } else {
                    val.push(chars[i]);
                }
                i += 1;
            }
            i += 1; // closing quote
            labels.insert(key.trim().to_string(), val);
        }
        let consumed: usize = chars[..i].iter().map(|c| c.len_utf8()).sum();
        rest = &rest[1 + consumed..];
    }
    let value_text = rest.split_whitespace().next()?;
    let value = value_text.parse::<f64>().unwrap_or(f64::NAN);
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Sum of all samples named `name` whose labels include every pair of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .into_iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Names of all samples present.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    parse_metrics(text).into_iter().map(|s| s.name).collect()
}

/// Per-queue label pairs.
pub fn queue_labels<'a>(ns: &'a str, queue: &'a str, ty: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("namespace", ns),
        ("task_queue", queue),
        ("task_queue_type", ty),
    ]
}

/// Convenience: per-queue labels plus extra ones.
pub fn labels_with<'a>(
    ns: &'a str,
    queue: &'a str,
    ty: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut l = queue_labels(ns, queue, ty);
    l.extend_from_slice(extra);
    l
}

/// Asserts that every field of the `expected` object is in `actual` with the same value;
/// extra fields in `actual` are fine (the contract lets the server add response fields).
#[track_caller]
pub fn assert_subset(actual: &Value, expected: &Value) {
    let Some(exp) = expected.as_object() else {
        panic!("expected must be an object: {expected}");
    };
    let Some(act) = actual.as_object() else {
        panic!("expected an object like {expected}, got {actual}");
    };
    for (k, v) in exp {
        assert_eq!(
            act.get(k),
            Some(v),
            "field {k:?}: expected {expected} in {actual}"
        );
    }
}

/// Sends one JSON text frame.
pub fn ws_send<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>, frame: Value) {
    ws.send(tungstenite::Message::text(frame.to_string()))
        .expect("send WebSocket frame");
}

/// The next JSON text frame (pings and pongs skipped).
pub fn ws_next<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> Value {
    loop {
        match ws.read().expect("read WebSocket frame") {
            tungstenite::Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("JSON frame")
            }
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected WebSocket message {other:?}"),
        }
    }
}

/// A WebSocket to `path` of the HTTPS server on 127.0.0.1:`port`, over TLS with `tls`.
pub fn wss_connect(
    port: &str,
    path: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> tungstenite::WebSocket<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let conn = rustls::ClientConnection::new(tls, name).expect("TLS client");
    let stream = rustls::StreamOwned::new(conn, tcp);
    let url = format!("wss://127.0.0.1:{port}{path}");
    let (ws, _) = tungstenite::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WSS handshake with {url} failed: {e}"));
    ws
}

/// Over a worker socket: one credit, the task that comes must be `task_id`, complete it;
/// answers the `settled` frame.
pub fn ws_take_and_complete<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
    task_id: &str,
) -> Value {
    ws_send(ws, json!({"op": "credit", "n": 1}));
    let f = ws_next(ws);
    assert_eq!(f["task"]["task_id"], json!(task_id), "{f}");
    ws_send(
        ws,
        json!({"op": "complete", "lease": lease_of(&f["task"]), "result": null}),
    );
    let f = ws_next(ws);
    assert_eq!(f["op"], json!("settled"), "{f}");
    f
}

/// TLS settings for a client that trusts `roots` only.
pub fn tls_client_config(roots: rustls::RootCertStore) -> std::sync::Arc<rustls::ClientConfig> {
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}
