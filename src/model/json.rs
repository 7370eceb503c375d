//! Decoding JSON a client sent, with errors in the contract's shape.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Decodes a JSON body; the error names the problem (an unknown field by name) and where it
/// is (`settles[3].op: unknown variant ...`).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::invalid(format!(
            "invalid JSON body: {}",
            plain_words(&e.to_string())
        ))
    };
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

/// A serde message in the words of the API rather than of Rust: `expected struct
/// TaskError` → `expected an object`, `expected u32` → `expected an integer`, `expected f64`
/// → `expected a number`, `a sequence` → `an array`, `a map` → `an object`.
pub fn plain_words(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("expected ") {
        let (before, after) = rest.split_at(at + "expected ".len());
        out.push_str(before);
        let word_end = |s: &str| {
            s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(s.len())
        };
        let first = &after[..word_end(after)];
        let (replacement, consumed) = match first {
            "struct" | "enum" => {
                let name_start = first.len() + 1;
                let name_len = after.get(name_start..).map_or(0, word_end);
                let what = if first == "struct" {
                    "an object"
                } else {
                    "one of its values"
                };
                (what, (name_start + name_len).min(after.len()))
            }
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64"
            | "u128" | "usize" => ("an integer", first.len()),
            "f32" | "f64" => ("a number", first.len()),
            "a" if after.starts_with("a sequence") => ("an array", "a sequence".len()),
            "a" if after.starts_with("a map") => ("an object", "a map".len()),
            _ => ("", 0),
        };
        out.push_str(replacement);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_speak_the_apis_words() {
        assert_eq!(
            plain_words("invalid type: string \"boom\", expected struct TaskError at line 1"),
            "invalid type: string \"boom\", expected an object at line 1"
        );
        assert_eq!(
            plain_words("invalid type: floating point `1.5`, expected u32"),
            "invalid type: floating point `1.5`, expected an integer"
        );
        assert_eq!(plain_words("expected f64"), "expected a number");
        assert_eq!(
            plain_words("invalid type: map, expected a sequence"),
            "invalid type: map, expected an array"
        );
        assert_eq!(plain_words("expected a string"), "expected a string");
        assert_eq!(plain_words("nothing to see"), "nothing to see");
    }
}
