//! The inventory's records: items, locations, stock levels, movements (the ledger) and
//! reservations. Plain data; the rules that change them live in `state.rs`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Ids of the virtual locations every cluster starts with, so that every change of stock is
/// a movement between two balances (double entry): goods arrive from `supplier`, leave to
/// `customer`, and appear or vanish through `adjustment` (counts, shrinkage).
pub const SUPPLIER: &str = "supplier";
pub const CUSTOMER: &str = "customer";
pub const ADJUSTMENT: &str = "adjustment";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub attributes: BTreeMap<String, String>,
    /// `available` at or below this is low stock; 0 disables the warning.
    pub low_stock_threshold: i64,
    /// Log index of the last change to this item.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LocationKind {
    Warehouse,
    Store,
    InTransit,
    /// Supplier, customer, adjustment and the like: balances may go negative, no
    /// reservations, and they are the counterpart of stock entering or leaving.
    Virtual,
}

impl LocationKind {
    pub fn is_virtual(self) -> bool {
        self == LocationKind::Virtual
    }
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Warehouse => "warehouse",
            LocationKind::Store => "store",
            LocationKind::InTransit => "in-transit",
            LocationKind::Virtual => "virtual",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub id: String,
    pub name: String,
    pub kind: LocationKind,
    pub revision: u64,
}

/// The balance of one item at one location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    /// Log index of the last change; 0 for a balance never touched.
    pub revision: u64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MovementKind {
    Receive,
    Ship,
    Adjust,
    Transfer,
    Reserve,
    Commit,
    Release,
    Expire,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Receive => "receive",
            MovementKind::Ship => "ship",
            MovementKind::Adjust => "adjust",
            MovementKind::Transfer => "transfer",
            MovementKind::Reserve => "reserve",
            MovementKind::Commit => "commit",
            MovementKind::Release => "release",
            MovementKind::Expire => "expire",
        }
    }
}

/// One ledger entry. Replaying all movements from an empty state gives exactly the
/// balances (rule 3):
/// - receive, ship, adjust, transfer: `on_hand[from] -= quantity; on_hand[to] += quantity`
/// - reserve: `reserved[from] += quantity` (`from == to`)
/// - commit: as a transfer, and `reserved[from] -= quantity`
/// - release, expire: `reserved[from] -= quantity` (`from == to`)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// Log index of the entry that made this movement.
    pub revision: u64,
    /// Position among the movements of that entry, from 0.
    pub seq: u32,
    pub kind: MovementKind,
    pub item: String,
    pub from: String,
    pub to: String,
    /// Always > 0.
    pub quantity: i64,
    pub reason: String,
    pub reference: String,
    /// Leader-stamped time of the entry, ms since the Unix epoch.
    pub time_ms: u64,
    /// The reservation this movement belongs to, for reserve/commit/release/expire.
    pub reservation: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    Open,
    Committed,
    Released,
    Expired,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReservationState::Open => "open",
            ReservationState::Committed => "committed",
            ReservationState::Released => "released",
            ReservationState::Expired => "expired",
        }
    }
}

/// A two-phase hold on stock: open, then ended exactly once (rule 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub item: String,
    pub location: String,
    pub quantity: i64,
    pub deadline_ms: u64,
    pub state: ReservationState,
    pub reference: String,
    pub created_revision: u64,
    /// Log index of the entry that ended it; 0 while open.
    pub ended_revision: u64,
}

/// What a successful command produced. Stored with its idempotency key so that a retry
/// returns exactly the first result (rule 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The command's revision: unique per write, increasing in apply order (the state
    /// machine derives it from the command's log position, `raft::revision`).
    pub revision: u64,
    pub movements: Vec<Movement>,
    /// Ids of reservations opened by this command, in operation order.
    pub reservations: Vec<String>,
    /// True when this is the stored result of an earlier application of the same key.
    pub replayed: bool,
}

/// Remembered result of an idempotent command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub fingerprint: u64,
    pub time_ms: u64,
    pub outcome: Outcome,
    /// `Some(n)`: the outcome's movements are not copied here; they are the `n` movements
    /// the ledger holds at `outcome.revision` (every movement at a revision is that one
    /// command's), read back on a replay. `None` in records written before, which carry
    /// their movements. Copying them made every keyed write store its movements twice:
    /// in memory, on disk and in every snapshot, for the 24 h the key is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_movements: Option<u32>,
}
