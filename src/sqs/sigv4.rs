//! AWS Signature Version 4 on the SQS endpoint. With `[auth] enabled`, every request must be
//! signed (an `Authorization: AWS4-HMAC-SHA256 …` header, as every SDK and the AWS CLI send)
//! by an access key of `[[sqs.credentials]]`; the tasq API key that credential names gives
//! the roles and namespaces the request acts with. With auth off, signatures are not checked
//! (as ElasticMQ does), and the endpoint listens on loopback unless `--insecure`.

use std::collections::BTreeMap;

use actix_web::HttpRequest;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::error::SqsError;
use crate::auth::{hex, same_secret, Grant};
use crate::config::SqsConfig;
use crate::model::percent::encode;
use crate::service::Tasq;

/// How far a request's `X-Amz-Date` may be from now (SigV4's 15 minutes).
const SKEW_SECS: i64 = 15 * 60;

/// Checks the request's signature when auth is on: the grant of the key it was signed with;
/// `None` with auth off.
pub fn check(
    tasq: &Tasq,
    settings: &SqsConfig,
    req: &HttpRequest,
    body: &[u8],
) -> Result<Option<Grant>, SqsError> {
    if !tasq.auth().enabled() {
        return Ok(None);
    }
    let header = header_value(req, "authorization").ok_or_else(|| {
            SqsError::invalid_client_token(
                "The request must be signed (Signature Version 4) with an access key of [[sqs.credentials]].",
            )
        })?;
    let auth = parse_authorization(&header)?;
    let cred = settings
        .credentials
        .iter()
        .find(|c| same_secret(c.access_key_id.as_bytes(), auth.access_key.as_bytes()))
        .ok_or_else(|| {
            SqsError::invalid_client_token("The security token included in the request is invalid.")
        })?;
    let amz_date = header_value(req, "x-amz-date")
        .ok_or_else(|| SqsError::signature("The request must carry an X-Amz-Date header."))?;
    check_time(&amz_date, crate::clock::now_ms() / 1000)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SqsError::signature(
            "The credential's date does not match X-Amz-Date.",
        ));
    }
    let payload_hash = match header_value(req, "x-amz-content-sha256") {
        Some(h) if h != "UNSIGNED-PAYLOAD" => h,
        _ => hex(&Sha256::digest(body)),
    };
    let canonical = canonical_request(req, &auth.signed_headers, &payload_hash)?;
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let key = signing_key(
        &cred.secret_access_key,
        &auth.date,
        &auth.region,
        &auth.service,
    );
    let want = hex(&hmac(&key, to_sign.as_bytes()));
    if !same_secret(want.as_bytes(), auth.signature.as_bytes()) {
        return Err(SqsError::signature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method.",
        ));
    }
    tasq.auth().named(&cred.key).map(Some).ok_or_else(|| {
        SqsError::invalid_client_token(format!(
            "The access key's tasq key {:?} is no longer configured.",
            cred.key
        ))
    })
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, PartialEq)]
struct Authorization {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(header: &str) -> Result<Authorization, SqsError> {
    let bad = || {
        SqsError::invalid_client_token(
            "Authorization must be AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…",
        )
    };
    let rest = header.strip_prefix("AWS4-HMAC-SHA256").ok_or_else(bad)?;
    let mut fields = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or_else(bad)?;
        fields.insert(k.trim(), v.trim());
    }
    let cred: Vec<&str> = fields
        .get("Credential")
        .ok_or_else(bad)?
        .split('/')
        .collect();
    let [access_key, date, region, service, "aws4_request"] = cred.as_slice() else {
        return Err(bad());
    };
    if *service != "sqs" {
        return Err(SqsError::signature(format!(
            "Credential should be scoped to correct service: 'sqs', not {service:?}."
        )));
    }
    let signed_headers = fields
        .get("SignedHeaders")
        .ok_or_else(bad)?
        .split(';')
        .map(str::to_string)
        .collect();
    Ok(Authorization {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers,
        signature: fields.get("Signature").ok_or_else(bad)?.to_string(),
    })
}

fn header_value(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `X-Amz-Date` (`20261207T101500Z`) within 15 minutes of `now` (epoch seconds).
fn check_time(amz_date: &str, now: u64) -> Result<(), SqsError> {
    let stamp = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        amz_date.get(0..4).unwrap_or_default(),
        amz_date.get(4..6).unwrap_or_default(),
        amz_date.get(6..8).unwrap_or_default(),
        amz_date.get(9..11).unwrap_or_default(),
        amz_date.get(11..13).unwrap_or_default(),
        amz_date.get(13..15).unwrap_or_default(),
    ))
    .ok()
    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
    .ok_or_else(|| SqsError::signature(format!("X-Amz-Date {amz_date:?} is not a date.")))?;
    if (stamp.as_secs() as i64 - now as i64).abs() > SKEW_SECS {
        return Err(SqsError::signature(format!(
            "Signature expired: {amz_date} is more than 15 minutes from the server's time."
        )));
    }
    Ok(())
}

/// SigV4's canonical request of `req`.
fn canonical_request(
    req: &HttpRequest,
    signed: &[String],
    payload_hash: &str,
) -> Result<String, SqsError> {
    let mut query: Vec<(String, String)> = form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in signed {
        let values: Vec<String> = req
            .headers()
            .get_all(name.as_str())
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        if values.is_empty() && name != "host" {
            return Err(SqsError::signature(format!(
                "The signed header {name} is not in the request."
            )));
        }
        let value = if values.is_empty() {
            req.connection_info().host().to_string()
        } else {
            values.join(",")
        };
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let path = req.uri().path();
    Ok(format!(
        "{}\n{}\n{query}\n{headers}\n{}\n{payload_hash}",
        req.method(),
        if path.is_empty() { "/" } else { path },
        signed.join(";")
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // docs.aws.amazon.com, "Examples of how to derive a signing key for Signature
        // Version 4".
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn authorization_header_and_time() {
        let a = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKID/20261207/us-east-1/sqs/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, Signature=abc",
        )
        .expect("parses");
        assert_eq!(a.access_key, "AKID");
        assert_eq!(a.signed_headers, ["content-type", "host", "x-amz-date"]);
        assert!(parse_authorization("Bearer x").is_err());
        assert!(parse_authorization(
            "AWS4-HMAC-SHA256 Credential=A/2026/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x"
        )
        .is_err());
        let now = 1_796_639_700; // 2026-12-07T10:35:00Z
        assert!(check_time("20261207T103000Z", now).is_ok());
        assert!(check_time("20261207T100000Z", now).is_err());
        assert!(check_time("garbage", now).is_err());
        assert_eq!(encode("a b/~"), "a%20b%2F~");
    }
}
