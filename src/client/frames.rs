//! The frames a streaming worker settles its tasks with: `complete` with the handler's result,
//! or `fail` with its error (cut to a size the server takes).

use serde_json::{json, Value};

use super::WorkerError;

/// Longest error message sent in a `fail` frame (longer ones are cut).
pub const MAX_ERROR_MESSAGE: usize = 8 * 1024;

/// The `complete` or `fail` frame for a finished handler. A `complete` too large for the
/// server becomes a non-retryable `fail` that says so.
pub fn settle_frame(lease: &str, outcome: Result<Value, WorkerError>, max: usize) -> String {
    match outcome {
        Ok(result) => {
            let frame = json!({"op": "complete", "lease": lease, "result": result}).to_string();
            if frame.len() <= max {
                return frame;
            }
            let e = WorkerError::non_retryable(format!(
                "the result is {} bytes as a frame, over the server's max_payload_bytes ({max})",
                frame.len()
            ))
            .with_type("ResultTooLarge");
            fail_frame(lease, &e, max)
        }
        Err(e) => fail_frame(lease, &e, max),
    }
}

fn fail_frame(lease: &str, e: &WorkerError, max: usize) -> String {
    // Leave room for the rest of the frame.
    let limit = MAX_ERROR_MESSAGE.min(max.saturating_sub(lease.len() + 256));
    let mut message = e.message().to_string();
    if message.len() > limit {
        let mut cut = limit;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    let mut kind = e.kind().map(str::to_string);
    if let Some(k) = &mut kind {
        k.truncate(k.char_indices().nth(100).map_or(k.len(), |(i, _)| i));
    }
    json!({
        "op": "fail",
        "lease": lease,
        "error": {"message": message, "type": kind},
        "non_retryable": e.is_non_retryable(),
        "retry_after_ms": e.retry_after_duration().map(|d| d.as_millis() as u64),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn settle_frames() {
        let f: Value =
            serde_json::from_str(&settle_frame("L", Ok(json!({"a": 1})), 1 << 20)).expect("json");
        assert_eq!(
            f,
            json!({"op": "complete", "lease": "L", "result": {"a": 1}})
        );

        let e = WorkerError::non_retryable("no").with_type("Bad");
        let f: Value = serde_json::from_str(&settle_frame("L", Err(e), 1 << 20)).expect("json");
        assert_eq!(
            f,
            json!({"op": "fail", "lease": "L", "error": {"message": "no", "type": "Bad"},
                   "non_retryable": true, "retry_after_ms": null})
        );

        let big = json!("x".repeat(2000));
        let frame = settle_frame("L", Ok(big), 1000);
        assert!(frame.len() <= 1000, "{}", frame.len());
        let f: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(f["op"], "fail");
        assert_eq!(f["non_retryable"], true);
        assert_eq!(f["error"]["type"], "ResultTooLarge");

        let e = WorkerError::retryable("é".repeat(10_000)).retry_after(Duration::ZERO);
        let frame = settle_frame("L", Err(e), 1 << 20);
        let f: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(f["retry_after_ms"], 0);
        assert!(frame.len() < MAX_ERROR_MESSAGE + 200);
    }
}
