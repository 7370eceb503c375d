//! The README's "TLS with a private authority" run as written: its `openssl` commands make an
//! authority and a server certificate it signs, tasq serves HTTPS with them, and its client
//! commands (`tasq task add … --ca-cert`, `TASQ_CA_CERT=… tasq worker`, over `wss://`) work
//! against it, while a client that does not trust the authority is refused.

mod common;

use common::auth::config_file;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The ```sh blocks of the README's section `heading`.
fn section_blocks(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme.find(heading).expect("the README has the section");
    let section = &readme[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or_default().to_string())
        .collect()
}

/// `sh -c script` in `dir`, with the tasq binary first on PATH.
fn shell(dir: &Path, script: &str) -> Command {
    let bin = Path::new(env!("CARGO_BIN_EXE_tasq"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(dir).env("PATH", path);
    without_tasq_env(&mut cmd);
    cmd
}

fn run_ok(dir: &Path, script: &str) -> String {
    let out = shell(dir, script).output().expect("run sh");
    assert!(
        out.status.success(),
        "{script}\nexit {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_readme_tls_walkthrough_runs_as_written() {
    if Command::new("openssl").arg("version").output().is_err() {
        panic!("openssl is needed for the README's TLS walkthrough (Debian package openssl)");
    }
    let blocks = section_blocks("### TLS with a private authority");
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    run_ok(dir.path(), &format!("set -e\n{}", blocks[0]));
    for f in ["ca.pem", "server.pem", "server.key"] {
        assert!(dir.path().join(f).exists(), "{f} was not made");
    }

    let cfg = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let (_cfg_dir, cfg_path) = config_file(&cfg);
    let s = TestServer::start_unready(&["--config", cfg_path.to_str().expect("utf-8")], &[]);
    let base = s.base().to_string();
    assert!(base.starts_with("https://"), "{base}");
    let commands: Vec<String> = blocks[1]
        .lines()
        .map(|l| l.replace("https://127.0.0.1:7280", &base))
        .collect();
    let (add, worker) = (&commands[0], &commands[1]);

    // Not trusting the authority: refused before anything is sent.
    let untrusted = shell(
        dir.path(),
        &format!("tasq task list emails --server {base}"),
    )
    .output()
    .expect("run");
    assert_eq!(untrusted.status.code(), Some(1), "{untrusted:?}");

    let deadline = Instant::now() + EVENTUALLY;
    // The server is HTTPS-only: the first add also waits for it to be ready.
    loop {
        let out = shell(dir.path(), add).output().expect("run add");
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{add}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // `exec env`: the worker itself gets the SIGTERM, not a shell around it.
    let mut w = shell(dir.path(), &format!("exec env {worker}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn worker");
    let listed =
        format!("tasq task list emails --state completed --json --server {base} --ca-cert ca.pem");
    loop {
        let out = run_ok(dir.path(), &listed);
        if out.contains("\"state\":\"completed\"") {
            break;
        }
        if Instant::now() > deadline {
            let _ = w.kill();
            let out = w.wait_with_output().expect("worker output");
            panic!(
                "the worker over wss:// never completed the task; its stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status();
    let status = w.wait().expect("worker exit");
    assert!(
        status.success(),
        "the worker exits 0 on SIGTERM: {status:?}"
    );
}
