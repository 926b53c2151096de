//! Bounds on every input the inventory accepts. They live in one place so the edge (gRPC
//! validation), the state machine (defensive re-check on apply) and the docs agree.

/// Longest item, location, reservation or idempotency id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest item or location name, unit, reason or reference, in bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most attributes on one item.
pub const MAX_ATTRIBUTES: usize = 32;
/// Longest attribute key, in bytes.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 64;
/// Longest attribute value, in bytes.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;
/// Most operations in one atomic batch.
pub const MAX_BATCH_OPS: usize = 128;
/// Most preconditions on one command.
pub const MAX_CONDITIONS: usize = 128;
/// Largest quantity one movement may carry. Far below `i64::MAX` so that sums of many
/// balances cannot overflow before the explicit checked arithmetic reports it.
pub const MAX_QUANTITY: i64 = 1_000_000_000_000_000;
/// Longest reservation time-to-live: 30 days, in milliseconds.
pub const MAX_RESERVATION_TTL_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// How long a successful idempotency key is remembered (24 h of leader-stamped time).
/// A retry later than this is treated as a new request.
pub const IDEMPOTENCY_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// Most reservations one `ExpireDue` command ends, so one log entry's apply stays bounded.
pub const MAX_EXPIRE_PER_COMMAND: usize = 1024;
/// Most idempotency records one command prunes, for the same reason.
pub const MAX_PRUNE_PER_COMMAND: usize = 4096;
