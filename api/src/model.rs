//! The JSON resources of the REST API and their mapping to and from the store's protobuf
//! messages. These types are the API's contract: the OpenAPI document is generated from
//! them, request bodies refuse unknown fields, and enums travel as snake_case strings.

use crate::problem::Problem;
use laundry_client::pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Item {
    pub id: String,
    pub name: String,
    pub unit: String,
    pub attributes: BTreeMap<String, String>,
    /// 0: no threshold.
    pub low_stock_threshold: i64,
    /// Also the item's ETag (`"<revision>"`).
    pub revision: u64,
}

impl From<pb::Item> for Item {
    fn from(i: pb::Item) -> Self {
        Item {
            id: i.id,
            name: i.name,
            unit: i.unit,
            attributes: i.attributes.into_iter().collect(),
            low_stock_threshold: i.low_stock_threshold,
            revision: i.revision,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    /// 1..=128 bytes of ASCII letters, digits and `-_.:/@`.
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub id: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub name: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub unit: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub low_stock_threshold: i64,
}

impl CreateItem {
    pub fn into_pb(self) -> pb::CreateItemRequest {
        pb::CreateItemRequest {
            options: None,
            id: self.id,
            name: self.name,
            unit: self.unit,
            attributes: self.attributes.into_iter().collect(),
            low_stock_threshold: self.low_stock_threshold,
        }
    }
}

/// Fields to change; absent fields keep their value. `attributes` replaces the whole map.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemPatch {
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub name: Option<String>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub unit: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub low_stock_threshold: Option<i64>,
}

impl ItemPatch {
    pub fn into_pb(self, id: String, expected_revision: u64) -> pb::UpdateItemRequest {
        pb::UpdateItemRequest {
            options: None,
            id,
            name: self.name,
            unit: self.unit,
            attributes: self.attributes.map(|a| pb::Attributes {
                entries: a.into_iter().collect(),
            }),
            low_stock_threshold: self.low_stock_threshold,
            expected_revision,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Warehouse,
    Store,
    InTransit,
    Virtual,
}

impl LocationKind {
    fn from_pb(k: i32) -> Option<Self> {
        match pb::LocationKind::try_from(k).ok()? {
            pb::LocationKind::Warehouse => Some(LocationKind::Warehouse),
            pb::LocationKind::Store => Some(LocationKind::Store),
            pb::LocationKind::InTransit => Some(LocationKind::InTransit),
            pb::LocationKind::Virtual => Some(LocationKind::Virtual),
            pb::LocationKind::Unspecified => None,
        }
    }

    fn to_pb(self) -> pb::LocationKind {
        match self {
            LocationKind::Warehouse => pb::LocationKind::Warehouse,
            LocationKind::Store => pb::LocationKind::Store,
            LocationKind::InTransit => pb::LocationKind::InTransit,
            LocationKind::Virtual => pb::LocationKind::Virtual,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Location {
    pub id: String,
    pub name: String,
    /// Absent when the store sent a kind this API version does not know.
    pub kind: Option<LocationKind>,
    pub revision: u64,
}

impl From<pb::Location> for Location {
    fn from(l: pb::Location) -> Self {
        Location {
            kind: LocationKind::from_pb(l.kind),
            id: l.id,
            name: l.name,
            revision: l.revision,
        }
    }
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLocation {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub id: String,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub name: String,
    pub kind: LocationKind,
}

impl CreateLocation {
    pub fn into_pb(self) -> pb::CreateLocationRequest {
        pb::CreateLocationRequest {
            options: None,
            id: self.id,
            name: self.name,
            kind: self.kind.to_pb() as i32,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockLevel {
    pub item: String,
    pub location: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// Also the level's ETag.
    pub revision: u64,
    pub low_stock: bool,
}

impl From<pb::StockLevel> for StockLevel {
    fn from(s: pb::StockLevel) -> Self {
        StockLevel {
            item: s.item,
            location: s.location,
            on_hand: s.on_hand,
            reserved: s.reserved,
            available: s.available,
            revision: s.revision,
            low_stock: s.low_stock,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
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
    fn from_pb(k: i32) -> Option<Self> {
        use pb::MovementKind as K;
        Some(match K::try_from(k).ok()? {
            K::Receive => MovementKind::Receive,
            K::Ship => MovementKind::Ship,
            K::Adjust => MovementKind::Adjust,
            K::Transfer => MovementKind::Transfer,
            K::Reserve => MovementKind::Reserve,
            K::Commit => MovementKind::Commit,
            K::Release => MovementKind::Release,
            K::Expire => MovementKind::Expire,
            K::Unspecified => return None,
        })
    }
}

/// One ledger entry. (`revision`, `seq`) orders the ledger and is the event id of the
/// movement stream (`<revision>-<seq>`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Movement {
    pub revision: u64,
    pub seq: u32,
    pub kind: Option<MovementKind>,
    pub item: String,
    pub from: String,
    pub to: String,
    pub quantity: i64,
    pub reason: String,
    pub reference: String,
    /// Leader time of the write, ms since the Unix epoch.
    pub time_ms: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reservation_id: String,
}

impl From<pb::Movement> for Movement {
    fn from(m: pb::Movement) -> Self {
        Movement {
            kind: MovementKind::from_pb(m.kind),
            revision: m.revision,
            seq: m.seq,
            item: m.item,
            from: m.from,
            to: m.to,
            quantity: m.quantity,
            reason: m.reason,
            reference: m.reference,
            time_ms: m.time_ms,
            reservation_id: m.reservation_id,
        }
    }
}

/// What a mutation did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WriteResult {
    /// The write's revision: unique, increasing in apply order (log index × 1024 + its
    /// position in the entry).
    pub revision: u64,
    pub movements: Vec<Movement>,
    pub reservation_ids: Vec<String>,
    /// True when this is the stored result of an earlier request with the same
    /// Idempotency-Key (also the `Idempotent-Replayed: true` header).
    pub replayed: bool,
}

impl From<pb::WriteResponse> for WriteResult {
    fn from(w: pb::WriteResponse) -> Self {
        WriteResult {
            revision: w.revision,
            movements: w.movements.into_iter().map(Movement::from).collect(),
            reservation_ids: w.reservation_ids,
            replayed: w.replayed,
        }
    }
}

/// A condition the write needs to hold, or it fails with `precondition-failed` changing
/// nothing. Exactly one expectation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    /// Empty for `item_revision`.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub location: String,
    pub stock_revision: Option<u64>,
    pub on_hand: Option<i64>,
    pub available: Option<i64>,
    pub item_revision: Option<u64>,
}

impl Condition {
    pub fn to_pb(&self) -> Result<pb::Condition, Problem> {
        use pb::condition::Expect;
        let expects: Vec<Expect> = [
            self.stock_revision.map(Expect::StockRevision),
            self.on_hand.map(Expect::OnHand),
            self.available.map(Expect::Available),
            self.item_revision.map(Expect::ItemRevision),
        ]
        .into_iter()
        .flatten()
        .collect();
        let too_big = [self.stock_revision, self.item_revision]
            .into_iter()
            .flatten()
            .any(|r| r > i64::MAX as u64);
        if too_big {
            return Err(Problem::invalid_body(format!(
                "a revision in the condition on item {:?} exceeds {}",
                self.item,
                i64::MAX
            )));
        }
        match expects.as_slice() {
            [one] => Ok(pb::Condition {
                item: self.item.clone(),
                location: self.location.clone(),
                expect: Some(*one),
            }),
            _ => Err(Problem::invalid_body(format!(
                "a condition on item {:?} needs exactly one of stock_revision, on_hand, \
                 available, item_revision; it has {}",
                self.item,
                expects.len()
            ))),
        }
    }
}

pub fn conditions(list: &[Condition]) -> Result<Vec<pb::Condition>, Problem> {
    list.iter().map(Condition::to_pb).collect()
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub location: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub quantity: i64,
    /// Virtual source; `supplier` when empty.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub from: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reference: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shipment {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub location: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub quantity: i64,
    /// Virtual destination; `customer` when empty.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub to: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reference: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjustment {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub location: String,
    /// Non-zero: > 0 adds stock, < 0 removes it.
    #[schema(minimum = -1_000_000_000_000_000_i64, maximum = 1_000_000_000_000_000_i64)]
    pub delta: i64,
    /// Virtual counterpart; `adjustment` when empty.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub counterpart: String,
    /// Required by the store.
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reference: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub from: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub to: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub quantity: i64,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reference: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReservation {
    /// Empty or absent: the store makes one (returned in `reservation_ids`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub id: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub item: String,
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub location: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64)]
    pub quantity: i64,
    #[schema(minimum = 1, maximum = 2_592_000_000_u64)]
    pub ttl_ms: u64,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reference: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitReservation {
    /// Virtual destination; `customer` when empty.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub to: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReservation {
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Open,
    Committed,
    Released,
    Expired,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reservation {
    pub id: String,
    pub item: String,
    pub location: String,
    pub quantity: i64,
    /// Leader time, ms since the Unix epoch.
    pub deadline_ms: u64,
    pub state: Option<ReservationState>,
    pub reference: String,
    pub created_revision: u64,
    /// 0 while open.
    pub ended_revision: u64,
}

impl From<pb::Reservation> for Reservation {
    fn from(r: pb::Reservation) -> Self {
        use pb::ReservationState as S;
        let state = match S::try_from(r.state) {
            Ok(S::Open) => Some(ReservationState::Open),
            Ok(S::Committed) => Some(ReservationState::Committed),
            Ok(S::Released) => Some(ReservationState::Released),
            Ok(S::Expired) => Some(ReservationState::Expired),
            _ => None,
        };
        Reservation {
            state,
            id: r.id,
            item: r.item,
            location: r.location,
            quantity: r.quantity,
            deadline_ms: r.deadline_ms,
            reference: r.reference,
            created_revision: r.created_revision,
            ended_revision: r.ended_revision,
        }
    }
}

/// `update_item` inside a batch: the id and an optional expected revision travel in the body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchUpdateItem {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub id: String,
    /// 0 or absent: unconditional.
    #[serde(default)]
    pub expected_revision: u64,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub name: Option<String>,
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub unit: Option<String>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub low_stock_threshold: Option<i64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchReservationEnd {
    #[schema(
        pattern = r"^[A-Za-z0-9._:/@-]{1,128}$",
        min_length = 1,
        max_length = 128
    )]
    pub reservation_id: String,
    /// Commit only: the virtual destination.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:/@-]{0,128}$", max_length = 128)]
    pub to: String,
    #[serde(default)]
    #[schema(pattern = r"^[^\u0000-\u001f\u007f]*$", max_length = 256)]
    pub reason: String,
}

/// One operation of a batch: an object with one key naming the operation, e.g.
/// `{"receive": {"item": "sku", "location": "wh", "quantity": 5}}`. Per-operation
/// `conditions` are not allowed: give them once for the whole batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchOperation {
    CreateItem(CreateItem),
    UpdateItem(BatchUpdateItem),
    CreateLocation(CreateLocation),
    Receive(Receipt),
    Ship(Shipment),
    Adjust(Adjustment),
    Transfer(Transfer),
    Reserve(CreateReservation),
    Commit(BatchReservationEnd),
    Release(BatchReservationEnd),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Applied in order, all or none (at most 128).
    #[schema(min_items = 1, max_items = 128)]
    pub operations: Vec<BatchOperation>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

fn no_op_conditions(index: usize, c: &[Condition]) -> Result<(), Problem> {
    if c.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid_body(format!(
            "operations[{index}]: conditions belong to the batch, not to one operation"
        )))
    }
}

impl BatchOperation {
    pub fn into_pb(self, index: usize) -> Result<pb::Operation, Problem> {
        use pb::operation::Op;
        let op = match self {
            BatchOperation::CreateItem(c) => Op::CreateItem(c.into_pb()),
            BatchOperation::UpdateItem(u) => Op::UpdateItem(
                ItemPatch {
                    name: u.name,
                    unit: u.unit,
                    attributes: u.attributes,
                    low_stock_threshold: u.low_stock_threshold,
                }
                .into_pb(u.id, u.expected_revision),
            ),
            BatchOperation::CreateLocation(c) => Op::CreateLocation(c.into_pb()),
            BatchOperation::Receive(r) => {
                no_op_conditions(index, &r.conditions)?;
                Op::Receive(receipt_pb(r, Vec::new()))
            }
            BatchOperation::Ship(s) => {
                no_op_conditions(index, &s.conditions)?;
                Op::Ship(shipment_pb(s, Vec::new()))
            }
            BatchOperation::Adjust(a) => {
                no_op_conditions(index, &a.conditions)?;
                Op::Adjust(adjustment_pb(a, Vec::new()))
            }
            BatchOperation::Transfer(t) => {
                no_op_conditions(index, &t.conditions)?;
                Op::Transfer(transfer_pb(t, Vec::new()))
            }
            BatchOperation::Reserve(r) => {
                no_op_conditions(index, &r.conditions)?;
                Op::Reserve(reservation_pb(r, Vec::new()))
            }
            BatchOperation::Commit(c) => Op::Commit(pb::CommitReservationRequest {
                options: None,
                reservation_id: c.reservation_id,
                to: c.to,
                reason: c.reason,
            }),
            BatchOperation::Release(r) => Op::Release(pb::ReleaseReservationRequest {
                options: None,
                reservation_id: r.reservation_id,
                reason: r.reason,
            }),
        };
        Ok(pb::Operation { op: Some(op) })
    }
}

fn options(conditions: Vec<pb::Condition>) -> Option<pb::WriteOptions> {
    Some(pb::WriteOptions {
        idempotency_key: String::new(),
        conditions,
    })
}

pub fn receipt_pb(r: Receipt, conditions: Vec<pb::Condition>) -> pb::ReceiveRequest {
    pb::ReceiveRequest {
        options: options(conditions),
        item: r.item,
        location: r.location,
        quantity: r.quantity,
        from: r.from,
        reason: r.reason,
        reference: r.reference,
    }
}

pub fn shipment_pb(s: Shipment, conditions: Vec<pb::Condition>) -> pb::ShipRequest {
    pb::ShipRequest {
        options: options(conditions),
        item: s.item,
        location: s.location,
        quantity: s.quantity,
        to: s.to,
        reason: s.reason,
        reference: s.reference,
    }
}

pub fn adjustment_pb(a: Adjustment, conditions: Vec<pb::Condition>) -> pb::AdjustRequest {
    pb::AdjustRequest {
        options: options(conditions),
        item: a.item,
        location: a.location,
        delta: a.delta,
        counterpart: a.counterpart,
        reason: a.reason,
        reference: a.reference,
    }
}

pub fn transfer_pb(t: Transfer, conditions: Vec<pb::Condition>) -> pb::TransferRequest {
    pb::TransferRequest {
        options: options(conditions),
        item: t.item,
        from: t.from,
        to: t.to,
        quantity: t.quantity,
        reason: t.reason,
        reference: t.reference,
    }
}

pub fn reservation_pb(r: CreateReservation, conditions: Vec<pb::Condition>) -> pb::ReserveRequest {
    pb::ReserveRequest {
        options: options(conditions),
        reservation_id: r.id,
        item: r.item,
        location: r.location,
        quantity: r.quantity,
        ttl_ms: r.ttl_ms,
        reference: r.reference,
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Confirmed with a quorum: sees every write acknowledged before the read began.
    #[default]
    Linearizable,
    /// Served from the answering node's applied state (see `x-laundry-applied-index`).
    Stale,
}

impl Consistency {
    pub fn to_pb(self) -> Option<pb::ReadOptions> {
        Some(pb::ReadOptions {
            consistency: match self {
                Consistency::Linearizable => pb::Consistency::Linearizable,
                Consistency::Stale => pb::Consistency::Stale,
            } as i32,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReadParams {
    pub consistency: Option<Consistency>,
}

/// Cursor pagination: pass `next_cursor` back as `cursor` for the next page.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// 1..=1000; default 100.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub consistency: Option<Consistency>,
}

/// Most entries per page.
pub const MAX_PAGE: u32 = 1000;

/// A page size from the `limit` parameter: 1..=MAX_PAGE, 100 when absent.
pub fn page_limit(limit: Option<u32>) -> Result<u32, Problem> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(Problem::invalid_parameter(format!(
            "limit {n} outside 1..={MAX_PAGE}"
        ))),
    }
}

impl PageParams {
    pub fn limit(&self) -> Result<u32, Problem> {
        page_limit(self.limit)
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MovementParams {
    /// Inclusive; 0 or absent: from the start.
    pub from_revision: Option<u64>,
    /// Only movements of this item.
    pub item: Option<String>,
    /// Only movements from or to this location.
    pub location: Option<String>,
    /// 1..=1000; default 100.
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub consistency: Option<Consistency>,
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Start here (inclusive) when no `Last-Event-ID` is sent; 0: from the start.
    pub from_revision: Option<u64>,
    pub item: Option<String>,
    pub location: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<Item>,
    /// Absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LocationPage {
    pub locations: Vec<Location>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MovementPage {
    pub movements: Vec<Movement>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StockLevels {
    pub levels: Vec<StockLevel>,
}

/// Revisions travel as JSON integers; past `i64::MAX` many clients lose precision, and no
/// log reaches it, so a larger one is refused rather than silently accepted.
pub fn revision_param(name: &str, v: Option<u64>) -> Result<u64, Problem> {
    match v {
        Some(r) if r > i64::MAX as u64 => Err(Problem::invalid_parameter(format!(
            "{name} {r} exceeds {}",
            i64::MAX
        ))),
        v => Ok(v.unwrap_or(0)),
    }
}

pub fn cursor(token: String) -> Option<String> {
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_needs_exactly_one_expectation() {
        let mut c = Condition {
            item: "a".into(),
            location: "w".into(),
            stock_revision: None,
            on_hand: None,
            available: None,
            item_revision: None,
        };
        assert!(c.to_pb().is_err());
        c.on_hand = Some(3);
        assert_eq!(
            c.to_pb().unwrap().expect,
            Some(pb::condition::Expect::OnHand(3))
        );
        c.available = Some(1);
        assert!(c.to_pb().is_err());
    }

    #[test]
    fn batch_operations_are_keyed_by_name_and_refuse_unknown_fields() {
        let ok: Batch = serde_json::from_str(
            r#"{"operations":[{"receive":{"item":"a","location":"w","quantity":2}},
                {"commit":{"reservation_id":"r1"}}]}"#,
        )
        .unwrap();
        assert_eq!(ok.operations.len(), 2);
        let ops: Vec<_> = ok
            .operations
            .into_iter()
            .enumerate()
            .map(|(i, o)| o.into_pb(i).unwrap())
            .collect();
        assert!(matches!(ops[0].op, Some(pb::operation::Op::Receive(_))));
        assert!(serde_json::from_str::<Batch>(r#"{"operations":[{"teleport":{}}]}"#).is_err());
        assert!(serde_json::from_str::<Receipt>(
            r#"{"item":"a","location":"w","quantity":1,"colour":"red"}"#
        )
        .is_err());
        let with_conditions: Batch = serde_json::from_str(
            r#"{"operations":[{"ship":{"item":"a","location":"w","quantity":1,
                "conditions":[{"item":"a","location":"w","on_hand":1}]}}]}"#,
        )
        .unwrap();
        let op = with_conditions.operations.into_iter().next().unwrap();
        assert!(op.into_pb(0).is_err());
    }

    #[test]
    fn page_limits_are_bounded() {
        let p = |limit| PageParams {
            limit,
            ..Default::default()
        };
        assert_eq!(p(None).limit().unwrap(), 100);
        assert_eq!(p(Some(MAX_PAGE)).limit().unwrap(), MAX_PAGE);
        assert!(p(Some(0)).limit().is_err());
        assert!(p(Some(MAX_PAGE + 1)).limit().is_err());
    }
}
