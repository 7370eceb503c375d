//! API keys per namespace and role (`[auth]` in the config).
//!
//! The config holds only the SHA-256 of each key, with the namespaces it may use (a list, or
//! `*`) and its roles (`producer`, `worker`, `admin`, `viewer`). A request's bearer key is hashed and
//! compared with every stored digest in constant time. Keys can be replaced while serving
//! (SIGHUP re-reads the config) without dropping connections.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// One key as written in the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A label for logs and operators.
    #[serde(default)]
    pub name: String,
    /// Hex SHA-256 of the key.
    pub sha256: String,
    /// Namespaces the key may act on; `"*"` = all.
    pub namespaces: Vec<String>,
    /// Roles: `producer`, `worker`, `admin`, `viewer`.
    pub roles: Vec<Role>,
}

/// The `[auth]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require API keys on `/api/*`.
    pub enabled: bool,
    /// Hex SHA-256 of the bearer token `/metrics` requires; empty = `/metrics` is open.
    pub metrics_token_sha256: String,
    /// The keys.
    pub keys: Vec<KeyConfig>,
}

/// True for a namespace a key may name: `*` (all), or a name as the API takes it (a key for
/// any other string would match no request).
pub fn namespace_ok(namespace: &str) -> bool {
    namespace == "*" || crate::model::validate_name("namespace", namespace).is_ok()
}

impl AuthConfig {
    /// Checks every digest and role; the error is (config key, what is wrong).
    pub fn validate(&self) -> Result<(), (String, &'static str)> {
        for (i, k) in self.keys.iter().enumerate() {
            parse_digest(&k.sha256).ok_or_else(|| {
                (
                    format!("auth.keys[{i}].sha256"),
                    "must be 64 hex characters (the SHA-256 of the key)",
                )
            })?;
            if k.namespaces.is_empty() || k.namespaces.iter().any(|ns| !namespace_ok(ns)) {
                return Err((
                    format!("auth.keys[{i}].namespaces"),
                    "must list namespaces (1–200 of A–Z a–z 0–9 . _ - : @), or \"*\" for all",
                ));
            }
            if k.roles.is_empty()
                || k.roles.iter().any(|r| {
                    !matches!(
                        r,
                        Role::Producer | Role::Worker | Role::Admin | Role::Viewer
                    )
                })
            {
                return Err((
                    format!("auth.keys[{i}].roles"),
                    "must be some of producer, worker, admin, viewer",
                ));
            }
        }
        if !self.metrics_token_sha256.is_empty()
            && parse_digest(&self.metrics_token_sha256).is_none()
        {
            return Err((
                "auth.metrics_token_sha256".into(),
                "must be 64 hex characters or empty",
            ));
        }
        Ok(())
    }
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hex SHA-256 of a key, as the config stores it.
pub fn digest_hex(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// Lower-case hex of `bytes` (digests, signatures).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random key (`tq_` + 32 random bytes, URL-safe base64).
pub fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("tq_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether two secrets are equal, in time that depends on neither (both are hashed first,
/// so neither their lengths nor where they differ shows).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b): ([u8; 32], [u8; 32]) = (Sha256::digest(a).into(), Sha256::digest(b).into());
    same(&a, &b)
}

/// Equal in time that does not depend on where the digests differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an authenticated key may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The key's label.
    pub name: String,
    namespaces: Option<HashSet<String>>,
    roles: HashSet<Role>,
}

impl Grant {
    /// The key's roles, in a fixed order (for `GET /api/v1/whoami`).
    pub fn roles(&self) -> Vec<Role> {
        let mut roles: Vec<Role> = self.roles.iter().copied().collect();
        roles.sort_by_key(|r| *r as u8);
        roles
    }

    /// The namespaces the key may act on; `None` = all.
    pub fn namespaces(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = self.namespaces.as_ref()?.iter().cloned().collect();
        out.sort();
        Some(out)
    }

    /// True when the key may see `namespace` at all.
    pub fn covers(&self, namespace: &str) -> bool {
        self.namespaces
            .as_ref()
            .is_none_or(|ns| ns.contains(namespace))
    }

    /// True when the key holds `role`, or the route only reads (`read`) and the key is an
    /// `admin` or a `viewer`: both see everything, only `admin` changes queues.
    pub fn may(&self, role: Role, read: bool) -> bool {
        self.roles.contains(&role)
            || (read && (self.roles.contains(&Role::Admin) || self.roles.contains(&Role::Viewer)))
    }

    /// Checks that the key may act in `role` on `namespace`.
    pub fn allows(&self, role: Role, namespace: &str) -> Result<(), Error> {
        self.allows_route(role, false, namespace)
    }

    /// Checks that the key may call a route of `role` on `namespace`; `read` for a route that
    /// changes nothing (a GET other than a worker's), which `admin` and `viewer` keys may call.
    pub fn allows_route(&self, role: Role, read: bool, namespace: &str) -> Result<(), Error> {
        if !self.may(role, read) {
            return Err(Error::PermissionDenied(format!(
                "this key does not have the {role} role"
            )));
        }
        if !self.covers(namespace) {
            return Err(Error::PermissionDenied(format!(
                "this key may not act on namespace {namespace:?}"
            )));
        }
        Ok(())
    }
}

struct Keys {
    entries: Vec<([u8; 32], Grant)>,
    metrics: Option<[u8; 32]>,
}

impl Keys {
    fn from_config(c: &AuthConfig) -> Keys {
        let entries = c
            .keys
            .iter()
            .filter_map(|k| {
                let digest = parse_digest(&k.sha256)?;
                let namespaces = (!k.namespaces.iter().any(|n| n == "*"))
                    .then(|| k.namespaces.iter().cloned().collect());
                Some((
                    digest,
                    Grant {
                        name: k.name.clone(),
                        namespaces,
                        roles: k.roles.iter().copied().collect(),
                    },
                ))
            })
            .collect();
        Keys {
            entries,
            metrics: parse_digest(&c.metrics_token_sha256),
        }
    }
}

/// The live key set, swapped whole on reload.
pub struct Auth {
    enabled: bool,
    keys: RwLock<Arc<Keys>>,
}

impl Auth {
    /// Builds the key set from the config.
    pub fn new(c: &AuthConfig) -> Self {
        Auth {
            enabled: c.enabled,
            keys: RwLock::new(Arc::new(Keys::from_config(c))),
        }
    }

    /// True when `/api/*` needs a key.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Replaces the keys (SIGHUP). Requests already authenticated are not affected.
    pub fn reload(&self, c: &AuthConfig) {
        let keys = Arc::new(Keys::from_config(c));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn keys(&self) -> Arc<Keys> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The grant of the bearer key in an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Grant, Error> {
        let token = bearer(header)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let keys = self.keys();
        // Compare with every key, so timing says nothing about which one matched.
        let mut found = None;
        for (d, grant) in &keys.entries {
            if same(d, &digest) && found.is_none() {
                found = Some(grant.clone());
            }
        }
        found.ok_or_else(|| Error::Unauthenticated("the API key is not valid".into()))
    }

    /// The grant of the key named `name` in the config (the SQS endpoint's access keys act
    /// with one).
    pub fn named(&self, name: &str) -> Option<Grant> {
        self.keys()
            .entries
            .iter()
            .find(|(_, g)| g.name == name)
            .map(|(_, g)| g.clone())
    }

    /// Checks the `/metrics` token, when one is configured.
    pub fn check_metrics(&self, header: Option<&str>) -> Result<(), Error> {
        let Some(want) = self.keys().metrics else {
            return Ok(());
        };
        let token = bearer(header)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if same(&want, &digest) {
            Ok(())
        } else {
            Err(Error::Unauthenticated(
                "the metrics token is not valid".into(),
            ))
        }
    }
}

fn bearer(header: Option<&str>) -> Result<&str, Error> {
    let header = header.ok_or_else(|| {
        Error::Unauthenticated("missing Authorization: Bearer <key> header".into())
    })?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::Unauthenticated("the Authorization header must be Bearer <key>".into())
        })
}

/// Who may call a route when auth is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Anyone (health probes).
    Public,
    /// `/metrics`, guarded by its own token when one is set.
    Metrics,
    /// Add, batch, status, cancel.
    Producer,
    /// Poll, connect, settle.
    Worker,
    /// Config, dead letters, describe, list; and every read.
    Admin,
    /// Every read (describe, list, status, dead letters, the console), no change.
    Viewer,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Public => "public",
            Role::Metrics => "metrics",
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key: &str, namespaces: &[&str], roles: &[Role]) -> AuthConfig {
        AuthConfig {
            enabled: true,
            metrics_token_sha256: String::new(),
            keys: vec![KeyConfig {
                name: "k".into(),
                sha256: digest_hex(key),
                namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
                roles: roles.to_vec(),
            }],
        }
    }

    #[test]
    fn keys_grant_roles_in_namespaces() {
        let key = new_key();
        let auth = Auth::new(&config(&key, &["a"], &[Role::Worker]));
        let grant = auth.authenticate(Some(&format!("Bearer {key}"))).unwrap();
        assert!(grant.allows(Role::Worker, "a").is_ok());
        assert!(matches!(
            grant.allows(Role::Worker, "b"),
            Err(Error::PermissionDenied(_))
        ));
        assert!(matches!(
            grant.allows(Role::Admin, "a"),
            Err(Error::PermissionDenied(_))
        ));
        for bad in [
            None,
            Some("Bearer"),
            Some("Basic xyz"),
            Some("Bearer wrong"),
        ] {
            assert!(matches!(
                auth.authenticate(bad),
                Err(Error::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn star_and_reload() {
        let (k1, k2) = (new_key(), new_key());
        let auth = Auth::new(&config(&k1, &["*"], &[Role::Admin]));
        let g = auth.authenticate(Some(&format!("Bearer {k1}"))).unwrap();
        assert!(g.allows(Role::Admin, "anything").is_ok());
        auth.reload(&config(&k2, &["*"], &[Role::Admin]));
        assert!(auth.authenticate(Some(&format!("Bearer {k1}"))).is_err());
        assert!(auth.authenticate(Some(&format!("Bearer {k2}"))).is_ok());
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = config("x", &["*"], &[Role::Worker]);
        c.keys[0].sha256 = "abc".into();
        assert_eq!(c.validate().unwrap_err().0, "auth.keys[0].sha256");
        let mut c = config("x", &["*"], &[Role::Metrics]);
        assert_eq!(c.validate().unwrap_err().0, "auth.keys[0].roles");
        c.keys[0].roles = vec![Role::Worker];
        assert!(c.validate().is_ok());
        assert_eq!(digest_hex("abc").len(), 64);
    }
}
