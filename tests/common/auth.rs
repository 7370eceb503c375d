//! API keys and config files for tests that run with `[auth] enabled = true`, and calls that
//! carry a key.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use tempfile::TempDir;

use super::TestServer;

/// Hex SHA-256, as the config stores keys.
pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key made here: a random secret and its `[[auth.keys]]` entry written by hand.
pub fn hand_key(name: &str, namespaces: &[&str], roles: &[&str]) -> (String, String) {
    let key = format!("hand-{name}-{}", uuid::Uuid::new_v4().simple());
    let list = |v: &[&str]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let entry = format!(
        "[[auth.keys]]\nname = {name:?}\nsha256 = \"{}\"\nnamespaces = [{}]\nroles = [{}]\n",
        sha256_hex(&key),
        list(namespaces),
        list(roles)
    );
    (key, entry)
}

/// A config with auth on: `[auth]` settings (`auth_extra`), the key entries, then `tail`
/// (further tables such as `[limits]`).
pub fn auth_config(auth_extra: &str, entries: &[&str], tail: &str) -> String {
    let mut text = format!("[auth]\nenabled = true\n{auth_extra}\n");
    for e in entries {
        text.push('\n');
        text.push_str(e);
        text.push('\n');
    }
    text.push('\n');
    text.push_str(tail);
    text
}

/// A config file in its own temp dir (kept alive by the returned `TempDir`).
pub fn config_file(text: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("tasq-config-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().join("tasq.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

/// Starts a server with `text` as its config file.
pub fn start_with_config(text: &str) -> (TestServer, TempDir, PathBuf) {
    let (dir, path) = config_file(text);
    let s = TestServer::start_with(&["--config", path.to_str().expect("utf-8 path")], &[]);
    (s, dir, path)
}

/// `method url` with `Authorization: Bearer key` (when given) and a JSON body (when given):
/// the status and the parsed body, whatever the status.
pub fn call_keyed(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = super::agent().request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    super::finish(res).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}
