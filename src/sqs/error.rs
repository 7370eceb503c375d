//! SQS errors: the shape name (the JSON protocol's `__type`, which SDKs map to a typed
//! exception), the query protocol's code (the `x-amzn-query-error` header, and `<Code>` in
//! XML), the HTTP status and whose fault it was, as SQS documents them.

use crate::error::Error;

/// One SQS error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsError {
    /// Shape name: `QueueDoesNotExist`, `InvalidParameterValueException`, …
    pub shape: &'static str,
    /// Query error code: `AWS.SimpleQueueService.NonExistentQueue`, `InvalidParameterValue`, …
    pub code: &'static str,
    /// HTTP status.
    pub status: u16,
    /// The sender's fault (`Sender`), or the server's (`Receiver`).
    pub sender: bool,
    /// What went wrong, for a person.
    pub message: String,
}

impl SqsError {
    fn new(shape: &'static str, code: &'static str, status: u16, message: String) -> Self {
        SqsError {
            shape,
            code,
            status,
            sender: status < 500,
            message,
        }
    }

    /// A parameter out of range or malformed.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidParameterValueException",
            "InvalidParameterValue",
            400,
            message.into(),
        )
    }

    /// A required parameter is missing.
    pub fn missing(name: &str) -> Self {
        Self::new(
            "MissingRequiredParameterException",
            "MissingParameter",
            400,
            format!("The request must contain the parameter {name}."),
        )
    }

    /// The queue does not exist (or was not created over SQS).
    pub fn no_queue() -> Self {
        Self::new(
            "QueueDoesNotExist",
            "AWS.SimpleQueueService.NonExistentQueue",
            400,
            "The specified queue does not exist.".into(),
        )
    }

    /// A queue of this name exists with other attributes.
    pub fn queue_exists(name: &str) -> Self {
        Self::new(
            "QueueNameExists",
            "QueueAlreadyExists",
            400,
            format!("A queue already exists with the same name ({name}) and a different value for attribute(s)."),
        )
    }

    /// A queue of this name was deleted less than a minute ago.
    pub fn deleted_recently(name: &str) -> Self {
        Self::new(
            "QueueDeletedRecently",
            "AWS.SimpleQueueService.QueueDeletedRecently",
            400,
            format!("You must wait 60 seconds after deleting a queue before you can create another queue with the same name ({name})."),
        )
    }

    /// An attribute name SQS does not know.
    pub fn attribute_name(name: &str) -> Self {
        Self::new(
            "InvalidAttributeName",
            "InvalidAttributeName",
            400,
            format!("Unknown Attribute {name}."),
        )
    }

    /// An attribute value out of range or malformed.
    pub fn attribute_value(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidAttributeValue",
            "InvalidAttributeValue",
            400,
            message.into(),
        )
    }

    /// A receipt handle this server did not give.
    pub fn receipt_handle(handle: &str) -> Self {
        Self::new(
            "ReceiptHandleIsInvalid",
            "ReceiptHandleIsInvalid",
            400,
            format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
        )
    }

    /// The message is not in flight (its receipt handle ended).
    pub fn not_inflight() -> Self {
        Self::new(
            "MessageNotInflight",
            "AWS.SimpleQueueService.MessageNotInflight",
            400,
            "The message referred to isn't in flight.".into(),
        )
    }

    /// A batch without entries.
    pub fn empty_batch() -> Self {
        Self::new(
            "EmptyBatchRequest",
            "AWS.SimpleQueueService.EmptyBatchRequest",
            400,
            "There should be at least one entry in the request.".into(),
        )
    }

    /// A batch of more than ten entries.
    pub fn too_many_entries(n: usize) -> Self {
        Self::new(
            "TooManyEntriesInBatchRequest",
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
            400,
            format!("Maximum number of entries per request are 10. You have sent {n}."),
        )
    }

    /// Two entries of a batch share an id.
    pub fn ids_not_distinct(id: &str) -> Self {
        Self::new(
            "BatchEntryIdsNotDistinct",
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
            400,
            format!("Id {id} repeated."),
        )
    }

    /// A batch entry id that is not 1–80 of `A–Z a–z 0–9 - _`.
    pub fn batch_entry_id(id: &str) -> Self {
        Self::new(
            "InvalidBatchEntryId",
            "AWS.SimpleQueueService.InvalidBatchEntryId",
            400,
            format!("A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long; got {id:?}."),
        )
    }

    /// A batch whose messages add up to more than the largest message.
    pub fn batch_too_long(bytes: usize, max: usize) -> Self {
        Self::new(
            "BatchRequestTooLong",
            "AWS.SimpleQueueService.BatchRequestTooLong",
            400,
            format!(
                "Batch requests cannot be longer than {max} bytes. You have sent {bytes} bytes."
            ),
        )
    }

    /// A message body or attribute with characters SQS does not allow.
    pub fn message_contents(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidMessageContents",
            "InvalidMessageContents",
            400,
            message.into(),
        )
    }

    /// A purge within 60 s of the last one.
    pub fn purge_in_progress(name: &str) -> Self {
        Self::new(
            "PurgeQueueInProgress",
            "AWS.SimpleQueueService.PurgeQueueInProgress",
            403,
            format!("Only one PurgeQueue operation on {name} is allowed every 60 seconds."),
        )
    }

    /// An action this endpoint does not serve.
    pub fn unsupported(action: &str) -> Self {
        Self::new(
            "UnsupportedOperation",
            "AWS.SimpleQueueService.UnsupportedOperation",
            400,
            format!("The action {action} is not valid for this endpoint."),
        )
    }

    /// A request that is not an SQS request (no action, a body that does not parse).
    pub fn invalid_action(message: impl Into<String>) -> Self {
        Self::new("InvalidAction", "InvalidAction", 400, message.into())
    }

    /// No such move task or source queue.
    pub fn resource_not_found(message: impl Into<String>) -> Self {
        Self::new(
            "ResourceNotFoundException",
            "ResourceNotFoundException",
            404,
            message.into(),
        )
    }

    /// The request is not signed, or not by a known access key.
    pub fn invalid_client_token(message: impl Into<String>) -> Self {
        Self::new(
            "InvalidClientTokenId",
            "InvalidClientTokenId",
            403,
            message.into(),
        )
    }

    /// The signature does not match the request.
    pub fn signature(message: impl Into<String>) -> Self {
        Self::new(
            "SignatureDoesNotMatch",
            "SignatureDoesNotMatch",
            403,
            message.into(),
        )
    }

    /// The access key's tasq key may not do this.
    pub fn access_denied(message: impl Into<String>) -> Self {
        Self::new("AccessDeniedException", "AccessDenied", 403, message.into())
    }

    /// Too many requests in flight, or a bound of tasq's is full.
    pub fn over_limit(message: impl Into<String>) -> Self {
        Self::new("OverLimit", "OverLimit", 403, message.into())
    }
}

impl From<Error> for SqsError {
    /// tasq's errors as SQS answers them: a bad value is `InvalidParameterValue`, a full
    /// bound `OverLimit`, the store unreachable or shutting down `ServiceUnavailable`.
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => SqsError::invalid(m),
            Error::PayloadTooLarge(m) => SqsError::invalid(m),
            Error::NotFound(_) => SqsError::no_queue(),
            Error::LeaseLost(_) => SqsError::not_inflight(),
            Error::Unauthenticated(m) => SqsError::invalid_client_token(m),
            Error::PermissionDenied(m) => SqsError::access_denied(m),
            Error::ResourceExhausted { message, .. } => SqsError::over_limit(message),
            Error::Unavailable(m) => {
                SqsError::new("ServiceUnavailable", "ServiceUnavailable", 503, m)
            }
            Error::Internal(m) => SqsError::new("InternalError", "InternalError", 500, m),
        }
    }
}
