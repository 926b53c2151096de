//! Typed client errors: one variant per outcome a caller handles differently.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Retries ran out without reaching a node that could serve the request. For a
    /// mutation the outcome is unknown; retrying with the same idempotency key is safe.
    #[error("unavailable after {attempts} attempts: {last}")]
    Unavailable { attempts: u32, last: String },
    #[error("no endpoint given, or endpoint {0:?} is not a valid address")]
    Endpoint(String),
    #[error("server error {code:?}: {message}")]
    Server { code: Code, message: String },
}

impl ClientError {
    /// The gRPC code this error corresponds to.
    pub fn code(&self) -> Code {
        match self {
            ClientError::InvalidArgument(_) => Code::InvalidArgument,
            ClientError::NotFound(_) => Code::NotFound,
            ClientError::AlreadyExists(_) => Code::AlreadyExists,
            ClientError::FailedPrecondition(_) => Code::FailedPrecondition,
            ClientError::ResourceExhausted(_) => Code::ResourceExhausted,
            ClientError::Unavailable { .. } => Code::Unavailable,
            ClientError::Endpoint(_) => Code::InvalidArgument,
            ClientError::Server { code, .. } => *code,
        }
    }

    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        let m = s.message().to_string();
        match s.code() {
            Code::InvalidArgument => ClientError::InvalidArgument(m),
            Code::NotFound => ClientError::NotFound(m),
            Code::AlreadyExists => ClientError::AlreadyExists(m),
            Code::FailedPrecondition => ClientError::FailedPrecondition(m),
            Code::ResourceExhausted => ClientError::ResourceExhausted(m),
            code => ClientError::Server { code, message: m },
        }
    }
}

/// Whether a failed attempt may be retried. Mutations carry an idempotency key, so even an
/// attempt that timed out after applying is safe to send again.
pub(crate) fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
    )
}
