//! `[sqs]`: the SQS-compatible endpoint, its own listener.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::auth::AuthConfig;

/// The SQS endpoint: where it listens, which namespace its queues live in, and (with auth
/// on) the access keys that may sign requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqsConfig {
    /// Serve the SQS API.
    pub enabled: bool,
    /// Its listen address (ElasticMQ's port by default).
    pub bind: SocketAddr,
    /// The tasq namespace SQS queues are in (as queues of type `activity`).
    pub namespace: String,
    /// The account id in queue URLs and ARNs (12 digits).
    pub account_id: String,
    /// The region in ARNs.
    pub region: String,
    /// The base of queue URLs (`http://sqs.example.com:9324`); empty: the scheme and host the
    /// client called.
    pub advertise: String,
    /// With `[auth] enabled`: the access keys that may sign requests, each acting with the
    /// roles and namespaces of a tasq API key.
    pub credentials: Vec<SqsCredential>,
}

/// One access key of the SQS endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqsCredential {
    /// The access key id clients sign with (`AWS_ACCESS_KEY_ID`).
    pub access_key_id: String,
    /// Its secret (`AWS_SECRET_ACCESS_KEY`). Signature V4 is an HMAC: the server needs the
    /// secret itself, so keep the config file private.
    pub secret_access_key: String,
    /// The `name` of the `[[auth.keys]]` entry whose roles and namespaces it acts with.
    pub key: String,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            enabled: false,
            bind: SocketAddr::from(([127, 0, 0, 1], 9324)),
            namespace: "default".into(),
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            advertise: String::new(),
            credentials: Vec::new(),
        }
    }
}

impl SqsConfig {
    /// The key and the reason of the first bad setting.
    pub fn validate(&self, auth: &AuthConfig, cluster: bool) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        let bad = |key: &str, why: &str| Err((key.to_string(), why.to_string()));
        if cluster {
            return bad(
                "sqs.enabled",
                "the SQS endpoint does not serve in cluster mode yet (cluster.enabled)",
            );
        }
        if crate::model::validate_name("namespace", &self.namespace).is_err() {
            return bad(
                "sqs.namespace",
                "must be a namespace name (1–200 of A–Z a–z 0–9 . _ - : @)",
            );
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return bad("sqs.account_id", "must be 12 digits");
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("sqs.region", "must be a region name such as us-east-1");
        }
        let scheme_ok =
            self.advertise.starts_with("http://") || self.advertise.starts_with("https://");
        if !self.advertise.is_empty() && !scheme_ok {
            return bad("sqs.advertise", "must be empty or an http(s):// base URL");
        }
        for (i, c) in self.credentials.iter().enumerate() {
            let id_ok = (16..=128).contains(&c.access_key_id.len())
                && c.access_key_id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !id_ok {
                return bad(
                    &format!("sqs.credentials[{i}].access_key_id"),
                    "must be 16–128 letters and digits",
                );
            }
            if c.secret_access_key.len() < 16 {
                return bad(
                    &format!("sqs.credentials[{i}].secret_access_key"),
                    "must be at least 16 characters",
                );
            }
            if !auth.keys.iter().any(|k| k.name == c.key) {
                return bad(
                    &format!("sqs.credentials[{i}].key"),
                    "must be the name of an [[auth.keys]] entry",
                );
            }
        }
        Ok(())
    }
}
