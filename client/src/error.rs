//! Typed client errors: one variant per outcome a caller handles differently.

use laundry_proto::REASON_KEY;
use tonic::Code;

/// Why the cluster refused a request: the node's message, and the stable reason name it
/// sent with it (`insufficient_stock`, `item_not_found`...; see `DomainError::reason`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub message: String,
    /// Empty when the node sent none (a refusal made before the domain rules ran).
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Rejection {
    fn from(message: String) -> Self {
        Rejection {
            message,
            reason: String::new(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("invalid argument: {0}")]
    InvalidArgument(Rejection),
    #[error("not found: {0}")]
    NotFound(Rejection),
    #[error("already exists: {0}")]
    AlreadyExists(Rejection),
    #[error("failed precondition: {0}")]
    FailedPrecondition(Rejection),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(Rejection),
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

    /// The refusal, for the five classes the cluster refuses with.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            ClientError::InvalidArgument(r)
            | ClientError::NotFound(r)
            | ClientError::AlreadyExists(r)
            | ClientError::FailedPrecondition(r)
            | ClientError::ResourceExhausted(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn from_status(s: &tonic::Status) -> Self {
        Self::from_parts(
            s.code(),
            s.message().to_string(),
            s.metadata()
                .get(REASON_KEY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        )
    }

    /// The error for a refusal with this code, message and reason name.
    pub(crate) fn from_parts(code: Code, message: String, reason: String) -> Self {
        let r = Rejection { message, reason };
        match code {
            Code::InvalidArgument => ClientError::InvalidArgument(r),
            Code::NotFound => ClientError::NotFound(r),
            Code::AlreadyExists => ClientError::AlreadyExists(r),
            Code::FailedPrecondition => ClientError::FailedPrecondition(r),
            Code::ResourceExhausted => ClientError::ResourceExhausted(r),
            code => ClientError::Server {
                code,
                message: r.message,
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_trailer_is_carried_and_absent_reasons_are_empty() {
        let mut s = tonic::Status::failed_precondition("insufficient stock of \"a\"");
        s.metadata_mut().insert(
            REASON_KEY,
            tonic::metadata::MetadataValue::from_static("insufficient_stock"),
        );
        let e = ClientError::from_status(&s);
        assert!(matches!(e, ClientError::FailedPrecondition(_)));
        let r = e.rejection().unwrap();
        assert_eq!(r.reason, "insufficient_stock");
        assert_eq!(r.message, "insufficient stock of \"a\"");
        let e = ClientError::from_status(&tonic::Status::not_found("x"));
        assert_eq!(e.rejection().unwrap().reason, "");
        let e = ClientError::from_status(&tonic::Status::internal("boom"));
        assert!(e.rejection().is_none());
        assert_eq!(e.code(), Code::Internal);
    }
}
