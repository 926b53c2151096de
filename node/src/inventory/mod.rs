//! The inventory rules: pure code (no I/O, no clock, no async). Storage, Raft and RPC wrap
//! around this module; everything that decides whether stock may move is here.
//!
//! - `model`: the records (items, locations, stock levels, movements, reservations).
//! - `command`: what a client may ask for, and static validation of it.
//! - `state`: the state and `Inventory::apply`, which enforces the brief's rules 1–6.
//! - `stock_table`: the stock levels, `item → location → level` with interned ids.
//! - `table_key`: the idempotency table's key (inline head, shared whole key).
//! - `limits`: every bound in one place.

pub mod command;
pub mod error;
pub mod limits;
pub mod model;
pub mod state;
pub mod stock_table;
pub mod table_key;

#[cfg(test)]
pub(crate) mod samples;
#[cfg(test)]
mod tests;

pub use command::{check_ids, Command, Condition, Op};
pub use error::{DomainError, ErrorClass};
pub use model::*;
pub use state::{Applied, ApplyCtx, IdempotencyKey, Inventory, Key, Record, RecordRef, StateCopy};
