//! One error type for the whole server, with the stable codes of the API contract.
//!
//! Every non-2xx answer has the body `{"error": {"code", "message"}}`; the code → status table
//! lives in [`Error::code`] and the `ResponseError::status_code` impl below, nowhere else.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error answered to a client, carrying one of the contract's codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Malformed JSON, a bad name, a value out of range, an unknown field (400).
    #[error("{0}")]
    InvalidArgument(String),
    /// Auth is on and no valid key was given (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// The key may not act on that namespace or in that role (403).
    #[error("{0}")]
    PermissionDenied(String),
    /// A task id, dead letter or route that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The lease is unknown, expired, or the task was dispatched again (409).
    #[error("{0}")]
    LeaseLost(String),
    /// A body over `max_payload_bytes` (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A configured bound is full (429); `retry_after_secs` becomes `Retry-After`.
    #[error("{message}")]
    ResourceExhausted {
        /// What is full.
        message: String,
        /// Seconds the client should wait before trying again.
        retry_after_secs: u64,
    },
    /// Starting up or shutting down (503).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an I/O failure; nothing was half-applied (500).
    #[error("{0}")]
    Internal(String),
}

/// Shorthand for results whose error is answered to a client.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `{"code", "message"}`: the error as one item of a larger answer carries it (an item of
    /// a settle-many, a WebSocket error frame).
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code(), "message": self.to_string()})
    }

    /// The same error (same code, same `Retry-After`) with another message.
    pub fn with_message(&self, message: String) -> Error {
        match self {
            Error::InvalidArgument(_) => Error::InvalidArgument(message),
            Error::Unauthenticated(_) => Error::Unauthenticated(message),
            Error::PermissionDenied(_) => Error::PermissionDenied(message),
            Error::NotFound(_) => Error::NotFound(message),
            Error::LeaseLost(_) => Error::LeaseLost(message),
            Error::PayloadTooLarge(_) => Error::PayloadTooLarge(message),
            Error::ResourceExhausted {
                retry_after_secs, ..
            } => Error::ResourceExhausted {
                message,
                retry_after_secs: *retry_after_secs,
            },
            Error::Unavailable(_) => Error::Unavailable(message),
            Error::Internal(_) => Error::Internal(message),
        }
    }

    /// The stable code of the contract, e.g. `invalid_argument`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::NotFound(_) => "not_found",
            Error::LeaseLost(_) => "lease_lost",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::ResourceExhausted { .. } => "resource_exhausted",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// A [`Error::ResourceExhausted`] asking the client to come back in a second.
    pub fn exhausted(message: impl Into<String>) -> Self {
        Error::ResourceExhausted {
            message: message.into(),
            retry_after_secs: 1,
        }
    }

    /// Shorthand for [`Error::LeaseLost`].
    pub fn lease_lost() -> Self {
        Error::LeaseLost("the lease is unknown, expired, or the task was dispatched again".into())
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        log::error!("storage error: {e}");
        match e {
            sled::Error::Io(_) => Error::Unavailable(format!("storage unavailable: {e}")),
            _ => Error::Internal(format!("storage error: {e}")),
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'a str,
    message: String,
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::LeaseLost(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ResourceExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut builder = HttpResponse::build(self.status_code());
        if let Error::ResourceExhausted {
            retry_after_secs, ..
        } = self
        {
            builder.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
        }
        builder.json(Body {
            error: Inner {
                code: self.code(),
                message: self.to_string(),
            },
        })
    }
}
