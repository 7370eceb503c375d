//! Decoding JSON a client sent, with errors in the contract's shape.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Decodes a JSON body; the error names the problem (an unknown field by name).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}
