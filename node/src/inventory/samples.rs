//! Test samples: one of every operation and every condition, for the tests that must
//! cover each (the codec's round trips, the metric names). Test builds only.

use super::{Condition, LocationKind, Op};
use std::collections::BTreeMap;

/// One of every operation. The `match` has no wildcard, so a new variant fails to
/// compile here until it is added (to the codec's round trip, among others).
pub fn every_op() -> Vec<Op> {
    let s = |v: &str| v.to_string();
    let ops = vec![
        Op::CreateItem {
            id: s("tee"),
            name: s("Tee"),
            unit: s("each"),
            attributes: BTreeMap::from([(s("colour"), s("black")), (s("size"), s("M"))]),
            low_stock_threshold: 5,
        },
        Op::UpdateItem {
            id: s("tee"),
            name: None,
            unit: Some(s("pair")),
            attributes: Some(BTreeMap::new()),
            low_stock_threshold: Some(-1),
        },
        Op::CreateLocation {
            id: s("wh"),
            name: s("Warehouse"),
            kind: LocationKind::InTransit,
        },
        Op::Receive {
            item: s("tee"),
            location: s("wh"),
            quantity: i64::MAX,
            from: s(""),
            reason: s("po"),
            reference: s("PO-1"),
        },
        Op::Ship {
            item: s("tee"),
            location: s("wh"),
            quantity: 1,
            to: s("customer"),
            reason: s(""),
            reference: s("SO-\u{e9}"),
        },
        Op::Adjust {
            item: s("tee"),
            location: s("wh"),
            delta: i64::MIN,
            counterpart: s(""),
            reason: s("count"),
            reference: s(""),
        },
        Op::Transfer {
            item: s("tee"),
            from: s("wh"),
            to: s("shop"),
            quantity: 3,
            reason: s("restock"),
            reference: s("T-1"),
        },
        Op::Reserve {
            id: s(""),
            item: s("tee"),
            location: s("wh"),
            quantity: 2,
            ttl_ms: u64::MAX,
            reference: s("cart-9"),
        },
        Op::Commit {
            id: s("r-1"),
            to: s(""),
            reason: s("sold"),
        },
        Op::Release {
            id: s("r-1"),
            reason: s(""),
        },
        Op::ExpireDue,
    ];
    for op in &ops {
        match op {
            Op::CreateItem { .. }
            | Op::UpdateItem { .. }
            | Op::CreateLocation { .. }
            | Op::Receive { .. }
            | Op::Ship { .. }
            | Op::Adjust { .. }
            | Op::Transfer { .. }
            | Op::Reserve { .. }
            | Op::Commit { .. }
            | Op::Release { .. }
            | Op::ExpireDue => {}
        }
    }
    ops
}

/// One of every condition, by the same rule.
pub fn every_condition() -> Vec<Condition> {
    let s = |v: &str| v.to_string();
    let conditions = vec![
        Condition::StockRevision {
            item: s("tee"),
            location: s("wh"),
            revision: u64::MAX,
        },
        Condition::StockOnHand {
            item: s("tee"),
            location: s("wh"),
            on_hand: -3,
        },
        Condition::StockAvailable {
            item: s("tee"),
            location: s("wh"),
            available: 0,
        },
        Condition::ItemRevision {
            item: s("tee"),
            revision: 0,
        },
    ];
    for c in &conditions {
        match c {
            Condition::StockRevision { .. }
            | Condition::StockOnHand { .. }
            | Condition::StockAvailable { .. }
            | Condition::ItemRevision { .. } => {}
        }
    }
    conditions
}
