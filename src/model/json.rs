//! Decoding JSON a client sent, with errors in the contract's shape.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Decodes a JSON body; the error names the problem (an unknown field by name) and where it
/// is (`settles[3].op: unknown variant ...`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let bad = |e: &dyn std::fmt::Display| Error::invalid(format!("invalid JSON body: {e}"));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        match at.as_str() {
            "" | "." => bad(e.inner()),
            _ => bad(&format_args!("{at}: {}", e.inner())),
        }
    })?;
    de.end().map_err(|e| bad(&e))?;
    Ok(value)
}
