//! Percent-encoding as RFC 3986 has it: every byte but the unreserved characters
//! (`A–Z a–z 0–9 - . _ ~`) as `%XX`. Query values and path segments the client sends, and the
//! canonical request Signature V4 signs, are written this way.

/// `s` percent-encoded.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn unreserved_stay_everything_else_is_escaped() {
        assert_eq!(super::encode("a b/~é"), "a%20b%2F~%C3%A9");
    }
}
