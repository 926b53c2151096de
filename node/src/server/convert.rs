//! Conversions between protobuf messages and domain commands and records. Everything that
//! arrives from the network is checked here or by `Command::validate`; nothing panics.

use super::status::invalid;
use crate::inventory::{self as inv, Command, Condition, LocationKind, Op};
use laundry_proto::v1 as pb;
use tonic::Status;

pub fn conditions(list: &[pb::Condition]) -> Result<Vec<Condition>, Status> {
    list.iter()
        .map(|c| {
            use pb::condition::Expect;
            let (item, location) = (c.item.clone(), c.location.clone());
            Ok(match c.expect {
                Some(Expect::StockRevision(revision)) => Condition::StockRevision {
                    item,
                    location,
                    revision,
                },
                Some(Expect::OnHand(on_hand)) => Condition::StockOnHand {
                    item,
                    location,
                    on_hand,
                },
                Some(Expect::Available(available)) => Condition::StockAvailable {
                    item,
                    location,
                    available,
                },
                Some(Expect::ItemRevision(revision)) => Condition::ItemRevision { item, revision },
                None => return Err(invalid("conditions", "a condition needs an expectation")),
            })
        })
        .collect()
}

pub fn location_kind(k: i32) -> Result<LocationKind, Status> {
    match pb::LocationKind::try_from(k) {
        Ok(pb::LocationKind::Warehouse) => Ok(LocationKind::Warehouse),
        Ok(pb::LocationKind::Store) => Ok(LocationKind::Store),
        Ok(pb::LocationKind::InTransit) => Ok(LocationKind::InTransit),
        Ok(pb::LocationKind::Virtual) => Ok(LocationKind::Virtual),
        Ok(pb::LocationKind::Unspecified) => Err(invalid("kind", "location kind must be set")),
        Err(_) => Err(invalid("kind", format!("unknown location kind {k}"))),
    }
}

pub fn create_item(r: pb::CreateItemRequest) -> Op {
    Op::CreateItem {
        id: r.id,
        name: r.name,
        unit: r.unit,
        attributes: r.attributes,
        low_stock_threshold: r.low_stock_threshold,
    }
}

pub fn update_item(r: pb::UpdateItemRequest) -> Op {
    Op::UpdateItem {
        id: r.id,
        name: r.name,
        unit: r.unit,
        attributes: r.attributes.map(|a| a.entries),
        low_stock_threshold: r.low_stock_threshold,
    }
}

pub fn create_location(r: pb::CreateLocationRequest) -> Result<Op, Status> {
    Ok(Op::CreateLocation {
        id: r.id,
        name: r.name,
        kind: location_kind(r.kind)?,
    })
}

pub fn receive(r: pb::ReceiveRequest) -> Op {
    Op::Receive {
        item: r.item,
        location: r.location,
        quantity: r.quantity,
        from: r.from,
        reason: r.reason,
        reference: r.reference,
    }
}
pub fn ship(r: pb::ShipRequest) -> Op {
    Op::Ship {
        item: r.item,
        location: r.location,
        quantity: r.quantity,
        to: r.to,
        reason: r.reason,
        reference: r.reference,
    }
}
pub fn adjust(r: pb::AdjustRequest) -> Op {
    Op::Adjust {
        item: r.item,
        location: r.location,
        delta: r.delta,
        counterpart: r.counterpart,
        reason: r.reason,
        reference: r.reference,
    }
}
pub fn transfer(r: pb::TransferRequest) -> Op {
    Op::Transfer {
        item: r.item,
        from: r.from,
        to: r.to,
        quantity: r.quantity,
        reason: r.reason,
        reference: r.reference,
    }
}
pub fn reserve(r: pb::ReserveRequest) -> Op {
    Op::Reserve {
        id: r.reservation_id,
        item: r.item,
        location: r.location,
        quantity: r.quantity,
        ttl_ms: r.ttl_ms,
        reference: r.reference,
    }
}
pub fn commit(r: pb::CommitReservationRequest) -> Op {
    Op::Commit {
        id: r.reservation_id,
        to: r.to,
        reason: r.reason,
    }
}
pub fn release(r: pb::ReleaseReservationRequest) -> Op {
    Op::Release {
        id: r.reservation_id,
        reason: r.reason,
    }
}

/// `UpdateItem` with its options; a non-zero `expected_revision` becomes an item-revision
/// condition.
pub fn update_item_with_options(mut r: pb::UpdateItemRequest) -> (Op, Option<pb::WriteOptions>) {
    let mut options = r.options.take().unwrap_or_default();
    if r.expected_revision != 0 {
        options.conditions.push(pb::Condition {
            item: r.id.clone(),
            location: String::new(),
            expect: Some(pb::condition::Expect::ItemRevision(r.expected_revision)),
        });
    }
    (update_item(r), Some(options))
}

/// One write of a `WriteMany` (the `index`-th) with its own options, as its lone RPC would
/// take it.
pub fn operation(o: pb::Operation, index: usize) -> Result<(Op, Option<pb::WriteOptions>), Status> {
    use pb::operation::Op as P;
    /// The request's options, then its operation.
    macro_rules! split {
        ($x:ident, $convert:expr) => {{
            let options = $x.options.take();
            ($convert($x), options)
        }};
    }
    Ok(match o.op {
        Some(P::CreateItem(mut x)) => split!(x, create_item),
        Some(P::UpdateItem(x)) => update_item_with_options(x),
        Some(P::CreateLocation(mut x)) => {
            let options = x.options.take();
            (create_location(x)?, options)
        }
        Some(P::Receive(mut x)) => split!(x, receive),
        Some(P::Ship(mut x)) => split!(x, ship),
        Some(P::Adjust(mut x)) => split!(x, adjust),
        Some(P::Transfer(mut x)) => split!(x, transfer),
        Some(P::Reserve(mut x)) => split!(x, reserve),
        Some(P::Commit(mut x)) => split!(x, commit),
        Some(P::Release(mut x)) => split!(x, release),
        None => return Err(invalid(&format!("writes[{index}]"), "empty operation")),
    })
}

/// The operations of a batch; per-operation `options` are refused rather than ignored, so
/// a caller never believes a condition was checked when it was not.
pub fn batch(r: pb::BatchRequest) -> Result<Command, Status> {
    use pb::operation::Op as P;
    let mut ops = Vec::with_capacity(r.operations.len().min(inv::limits::MAX_BATCH_OPS + 1));
    for (i, o) in r.operations.into_iter().enumerate() {
        let has_options = |opts: &Option<pb::WriteOptions>| {
            opts.as_ref()
                .is_some_and(|o| o != &pb::WriteOptions::default())
        };
        let op = match o.op {
            Some(P::CreateItem(x)) if !has_options(&x.options) => create_item(x),
            Some(P::UpdateItem(x)) if !has_options(&x.options) && x.expected_revision == 0 => {
                update_item(x)
            }
            Some(P::CreateLocation(x)) if !has_options(&x.options) => create_location(x)?,
            Some(P::Receive(x)) if !has_options(&x.options) => receive(x),
            Some(P::Ship(x)) if !has_options(&x.options) => ship(x),
            Some(P::Adjust(x)) if !has_options(&x.options) => adjust(x),
            Some(P::Transfer(x)) if !has_options(&x.options) => transfer(x),
            Some(P::Reserve(x)) if !has_options(&x.options) => reserve(x),
            Some(P::Commit(x)) if !has_options(&x.options) => commit(x),
            Some(P::Release(x)) if !has_options(&x.options) => release(x),
            Some(_) => {
                return Err(invalid(
                    &format!("operations[{i}]"),
                    "options and expected_revision belong on the batch, not on its operations",
                ))
            }
            None => return Err(invalid(&format!("operations[{i}]"), "empty operation")),
        };
        ops.push(op);
        if ops.len() > inv::limits::MAX_BATCH_OPS {
            break; // validate() reports the size precisely
        }
    }
    Ok(Command {
        ops,
        conditions: Vec::new(),
    })
}

pub fn item(i: &inv::Item) -> pb::Item {
    pb::Item {
        id: i.id.clone(),
        name: i.name.clone(),
        unit: i.unit.clone(),
        attributes: i.attributes.clone(),
        low_stock_threshold: i.low_stock_threshold,
        revision: i.revision,
    }
}

pub fn location(l: &inv::Location) -> pb::Location {
    let kind = match l.kind {
        LocationKind::Warehouse => pb::LocationKind::Warehouse,
        LocationKind::Store => pb::LocationKind::Store,
        LocationKind::InTransit => pb::LocationKind::InTransit,
        LocationKind::Virtual => pb::LocationKind::Virtual,
    };
    pb::Location {
        id: l.id.clone(),
        name: l.name.clone(),
        kind: kind as i32,
        revision: l.revision,
    }
}

pub fn stock(item: &str, location: &str, s: inv::StockLevel, threshold: i64) -> pb::StockLevel {
    pb::StockLevel {
        item: item.to_string(),
        location: location.to_string(),
        on_hand: s.on_hand,
        reserved: s.reserved,
        available: s.available(),
        revision: s.revision,
        low_stock: threshold > 0 && s.available() <= threshold,
    }
}

pub fn movement(m: &inv::Movement) -> pb::Movement {
    use inv::MovementKind as K;
    let kind = match m.kind {
        K::Receive => pb::MovementKind::Receive,
        K::Ship => pb::MovementKind::Ship,
        K::Adjust => pb::MovementKind::Adjust,
        K::Transfer => pb::MovementKind::Transfer,
        K::Reserve => pb::MovementKind::Reserve,
        K::Commit => pb::MovementKind::Commit,
        K::Release => pb::MovementKind::Release,
        K::Expire => pb::MovementKind::Expire,
    };
    pb::Movement {
        revision: m.revision,
        seq: m.seq,
        kind: kind as i32,
        item: m.item.clone(),
        from: m.from.clone(),
        to: m.to.clone(),
        quantity: m.quantity,
        reason: m.reason.clone(),
        reference: m.reference.clone(),
        time_ms: m.time_ms,
        reservation_id: m.reservation.clone(),
    }
}

pub fn reservation(r: &inv::Reservation) -> pb::Reservation {
    use inv::ReservationState as S;
    let state = match r.state {
        S::Open => pb::ReservationState::Open,
        S::Committed => pb::ReservationState::Committed,
        S::Released => pb::ReservationState::Released,
        S::Expired => pb::ReservationState::Expired,
    };
    pb::Reservation {
        id: r.id.clone(),
        item: r.item.clone(),
        location: r.location.clone(),
        quantity: r.quantity,
        deadline_ms: r.deadline_ms,
        state: state as i32,
        reference: r.reference.clone(),
        created_revision: r.created_revision,
        ended_revision: r.ended_revision,
    }
}

pub fn write_response(o: inv::Outcome) -> pb::WriteResponse {
    pb::WriteResponse {
        revision: o.revision,
        movements: o.movements.iter().map(movement).collect(),
        reservation_ids: o.reservations,
        replayed: o.replayed,
    }
}

/// Page sizes: 0 means the default; anything above the maximum is clamped.
pub fn page_size(requested: u32) -> usize {
    const DEFAULT: usize = 100;
    const MAX: usize = 1000;
    match requested as usize {
        0 => DEFAULT,
        n => n.min(MAX),
    }
}

/// Movement cursors travel as `revision.seq`.
pub fn parse_cursor(token: &str) -> Result<Option<(u64, u32)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        invalid(
            "page_token",
            format!("{token:?} is not a token this server issued"),
        )
    };
    let (r, s) = token.split_once('.').ok_or_else(bad)?;
    Ok(Some((
        r.parse().map_err(|_| bad())?,
        s.parse().map_err(|_| bad())?,
    )))
}

pub fn format_cursor(c: (u64, u32)) -> String {
    format!("{}.{}", c.0, c.1)
}
