//! Why the inventory refused a command. Every variant names what was wrong precisely enough
//! for an operator to act on it; the gRPC layer maps each to one status code.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The gRPC-style class of a [`DomainError`], so the mapping to status codes is one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
}

#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum DomainError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} too large: {len} > limit {limit}")]
    TooLarge { what: String, len: u64, limit: u64 },
    #[error("item {0:?} not found")]
    ItemNotFound(String),
    #[error("location {0:?} not found")]
    LocationNotFound(String),
    #[error("reservation {0:?} not found")]
    ReservationNotFound(String),
    #[error("item {0:?} already exists")]
    ItemExists(String),
    #[error("location {0:?} already exists")]
    LocationExists(String),
    #[error("reservation {0:?} already exists")]
    ReservationExists(String),
    #[error("insufficient stock of {item:?} at {location:?}: available {available}, requested {requested}")]
    InsufficientStock {
        item: String,
        location: String,
        available: i64,
        requested: i64,
    },
    #[error("location {location:?} is {kind}; {needed}")]
    WrongLocationKind {
        location: String,
        kind: String,
        needed: String,
    },
    #[error("condition failed on {subject}: expected {expected}, actual {actual}")]
    ConditionFailed {
        subject: String,
        expected: String,
        actual: String,
    },
    #[error("reservation {id:?} already ended ({state})")]
    ReservationEnded { id: String, state: String },
    #[error("reservation {id:?} passed its deadline at {deadline_ms} ms (now {now_ms} ms)")]
    ReservationExpired {
        id: String,
        deadline_ms: u64,
        now_ms: u64,
    },
    #[error("balance of {item:?} at {location:?} would overflow")]
    Overflow { item: String, location: String },
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    #[error("batch operation {index}: {source}")]
    InBatch {
        index: usize,
        source: Box<DomainError>,
    },
}

impl DomainError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        DomainError::Invalid {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// A stable machine-readable name of the refusal (snake_case), sent to clients next to
    /// the status code so an HTTP front can give each its own problem type. Never renamed:
    /// clients match on it.
    pub fn reason(&self) -> &'static str {
        use DomainError::*;
        match self {
            Invalid { .. } => "invalid",
            TooLarge { .. } => "too_large",
            ItemNotFound(_) => "item_not_found",
            LocationNotFound(_) => "location_not_found",
            ReservationNotFound(_) => "reservation_not_found",
            ItemExists(_) => "item_exists",
            LocationExists(_) => "location_exists",
            ReservationExists(_) => "reservation_exists",
            InsufficientStock { .. } => "insufficient_stock",
            WrongLocationKind { .. } => "wrong_location_kind",
            ConditionFailed { .. } => "condition_failed",
            ReservationEnded { .. } => "reservation_ended",
            ReservationExpired { .. } => "reservation_expired",
            Overflow { .. } => "overflow",
            IdempotencyKeyReused(_) => "idempotency_key_reused",
            InBatch { source, .. } => source.reason(),
        }
    }

    pub fn class(&self) -> ErrorClass {
        use DomainError::*;
        match self {
            Invalid { .. } => ErrorClass::InvalidArgument,
            TooLarge { .. } => ErrorClass::ResourceExhausted,
            ItemNotFound(_) | LocationNotFound(_) | ReservationNotFound(_) => ErrorClass::NotFound,
            ItemExists(_) | LocationExists(_) | ReservationExists(_) | IdempotencyKeyReused(_) => {
                ErrorClass::AlreadyExists
            }
            InsufficientStock { .. }
            | WrongLocationKind { .. }
            | ConditionFailed { .. }
            | ReservationEnded { .. }
            | ReservationExpired { .. }
            | Overflow { .. } => ErrorClass::FailedPrecondition,
            InBatch { source, .. } => source.class(),
        }
    }
}
