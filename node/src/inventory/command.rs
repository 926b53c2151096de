//! The commands the inventory accepts, and their static validation (bounds and shapes that
//! need no state). A command is a list of operations applied atomically, guarded by
//! optional preconditions: a single operation is a batch of one.

use super::error::DomainError;
use super::limits::*;
use super::model::LocationKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    CreateItem {
        id: String,
        name: String,
        unit: String,
        attributes: BTreeMap<String, String>,
        low_stock_threshold: i64,
    },
    /// Fields left `None` keep their value.
    UpdateItem {
        id: String,
        name: Option<String>,
        unit: Option<String>,
        attributes: Option<BTreeMap<String, String>>,
        low_stock_threshold: Option<i64>,
    },
    CreateLocation {
        id: String,
        name: String,
        kind: LocationKind,
    },
    /// Stock arrives at `location` from a virtual location (`supplier` when `from` is empty).
    Receive {
        item: String,
        location: String,
        quantity: i64,
        from: String,
        reason: String,
        reference: String,
    },
    /// Stock leaves `location` for a virtual location (`customer` when `to` is empty).
    Ship {
        item: String,
        location: String,
        quantity: i64,
        to: String,
        reason: String,
        reference: String,
    },
    /// A count correction: `delta > 0` adds stock, `< 0` removes it, against a virtual
    /// counterpart (`adjustment` when empty). `reason` is required.
    Adjust {
        item: String,
        location: String,
        delta: i64,
        counterpart: String,
        reason: String,
        reference: String,
    },
    Transfer {
        item: String,
        from: String,
        to: String,
        quantity: i64,
        reason: String,
        reference: String,
    },
    /// Hold `quantity` of available stock until committed, released or `ttl_ms` passes.
    /// An empty `id` gets one derived from the log position.
    Reserve {
        id: String,
        item: String,
        location: String,
        quantity: i64,
        ttl_ms: u64,
        reference: String,
    },
    /// Ship the held stock to a virtual location (`customer` when `to` is empty).
    Commit {
        id: String,
        to: String,
        reason: String,
    },
    Release {
        id: String,
        reason: String,
    },
    /// Expire every open reservation whose deadline has passed and forget idempotency keys
    /// past their retention. Proposed by the leader on a timer, so expiry is replicated.
    ExpireDue,
}

/// A precondition: the command applies only if every one holds (rule 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    StockRevision {
        item: String,
        location: String,
        revision: u64,
    },
    StockOnHand {
        item: String,
        location: String,
        on_hand: i64,
    },
    StockAvailable {
        item: String,
        location: String,
        available: i64,
    },
    ItemRevision {
        item: String,
        revision: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub ops: Vec<Op>,
    pub conditions: Vec<Condition>,
}

impl Op {
    /// The operation's name as the API spells it in snake case: a fixed set, for metric
    /// labels.
    pub fn name(&self) -> &'static str {
        match self {
            Op::CreateItem { .. } => "create_item",
            Op::UpdateItem { .. } => "update_item",
            Op::CreateLocation { .. } => "create_location",
            Op::Receive { .. } => "receive",
            Op::Ship { .. } => "ship",
            Op::Adjust { .. } => "adjust",
            Op::Transfer { .. } => "transfer",
            Op::Reserve { .. } => "reserve",
            Op::Commit { .. } => "commit",
            Op::Release { .. } => "release",
            Op::ExpireDue => "expire_due",
        }
    }
}

impl Command {
    /// The name of its one operation, or `batch` for several (or none).
    pub fn name(&self) -> &'static str {
        match self.ops.as_slice() {
            [op] => op.name(),
            _ => "batch",
        }
    }

    pub fn single(op: Op) -> Self {
        Command {
            ops: vec![op],
            conditions: Vec::new(),
        }
    }

    /// Checks everything that can be checked without state. Run at the edge before a
    /// command is proposed, and again on apply.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.ops.is_empty() {
            return Err(DomainError::invalid(
                "ops",
                "a command needs at least one operation",
            ));
        }
        if self.ops.len() > MAX_BATCH_OPS {
            return Err(DomainError::TooLarge {
                what: "batch".into(),
                len: self.ops.len() as u64,
                limit: MAX_BATCH_OPS as u64,
            });
        }
        if self.conditions.len() > MAX_CONDITIONS {
            return Err(DomainError::TooLarge {
                what: "conditions".into(),
                len: self.conditions.len() as u64,
                limit: MAX_CONDITIONS as u64,
            });
        }
        if self.ops.len() > 1 && self.ops.iter().any(|op| matches!(op, Op::ExpireDue)) {
            return Err(DomainError::invalid("ops", "ExpireDue cannot be batched"));
        }
        for c in &self.conditions {
            match c {
                Condition::StockRevision { item, location, .. }
                | Condition::StockOnHand { item, location, .. }
                | Condition::StockAvailable { item, location, .. } => {
                    check_id("condition.item", item)?;
                    check_id("condition.location", location)?;
                }
                Condition::ItemRevision { item, .. } => check_id("condition.item", item)?,
            }
        }
        if self.ops.len() == 1 {
            return self.ops[0].validate();
        }
        for (index, op) in self.ops.iter().enumerate() {
            op.validate().map_err(|e| DomainError::InBatch {
                index,
                source: Box::new(e),
            })?;
        }
        Ok(())
    }
}

impl Op {
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            Op::CreateItem {
                id,
                name,
                unit,
                attributes,
                low_stock_threshold,
            } => {
                check_id("id", id)?;
                check_text("name", name)?;
                check_text("unit", unit)?;
                check_attributes(attributes)?;
                check_threshold(*low_stock_threshold)
            }
            Op::UpdateItem {
                id,
                name,
                unit,
                attributes,
                low_stock_threshold,
            } => {
                check_id("id", id)?;
                if let Some(n) = name {
                    check_text("name", n)?;
                }
                if let Some(u) = unit {
                    check_text("unit", u)?;
                }
                if let Some(a) = attributes {
                    check_attributes(a)?;
                }
                if let Some(t) = low_stock_threshold {
                    check_threshold(*t)?;
                }
                Ok(())
            }
            Op::CreateLocation { id, name, .. } => {
                check_id("id", id)?;
                check_text("name", name)
            }
            Op::Receive {
                item,
                location,
                quantity,
                from: other,
                reason,
                reference,
            }
            | Op::Ship {
                item,
                location,
                quantity,
                to: other,
                reason,
                reference,
            } => {
                check_id("item", item)?;
                check_id("location", location)?;
                check_quantity("quantity", *quantity)?;
                check_optional_id("counterpart", other)?;
                check_text("reason", reason)?;
                check_text("reference", reference)
            }
            Op::Adjust {
                item,
                location,
                delta,
                counterpart,
                reason,
                reference,
            } => {
                check_id("item", item)?;
                check_id("location", location)?;
                if *delta == 0 {
                    return Err(DomainError::invalid("delta", "must be non-zero"));
                }
                check_quantity("delta", delta.checked_abs().unwrap_or(i64::MAX))?;
                check_optional_id("counterpart", counterpart)?;
                if reason.is_empty() {
                    return Err(DomainError::invalid(
                        "reason",
                        "an adjustment needs a reason",
                    ));
                }
                check_text("reason", reason)?;
                check_text("reference", reference)
            }
            Op::Transfer {
                item,
                from,
                to,
                quantity,
                reason,
                reference,
            } => {
                check_id("item", item)?;
                check_id("from", from)?;
                check_id("to", to)?;
                if from == to {
                    return Err(DomainError::invalid("to", "must differ from `from`"));
                }
                check_quantity("quantity", *quantity)?;
                check_text("reason", reason)?;
                check_text("reference", reference)
            }
            Op::Reserve {
                id,
                item,
                location,
                quantity,
                ttl_ms,
                reference,
            } => {
                check_optional_id("id", id)?;
                check_id("item", item)?;
                check_id("location", location)?;
                check_quantity("quantity", *quantity)?;
                if *ttl_ms == 0 || *ttl_ms > MAX_RESERVATION_TTL_MS {
                    return Err(DomainError::invalid(
                        "ttl_ms",
                        format!("must be in 1..={MAX_RESERVATION_TTL_MS}"),
                    ));
                }
                check_text("reference", reference)
            }
            Op::Commit { id, to, reason } => {
                check_id("id", id)?;
                check_optional_id("to", to)?;
                check_text("reason", reason)
            }
            Op::Release { id, reason } => {
                check_id("id", id)?;
                check_text("reason", reason)
            }
            Op::ExpireDue => Ok(()),
        }
    }

    /// True for operations a client may send; `ExpireDue` is the leader's own.
    pub fn is_client_op(&self) -> bool {
        !matches!(self, Op::ExpireDue)
    }
}

/// Checks several `(field, id)` pairs, reporting the first bad one.
pub fn check_ids(ids: &[(&str, &str)]) -> Result<(), DomainError> {
    ids.iter().try_for_each(|(field, id)| check_id(field, id))
}

/// Ids: 1..=MAX_ID_BYTES of ASCII letters, digits and `-_.:/@`, so they are safe in keys,
/// URLs and logs.
pub fn check_id(field: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    check_optional_id(field, id)
}

fn check_optional_id(field: &str, id: &str) -> Result<(), DomainError> {
    if id.len() > MAX_ID_BYTES {
        return Err(DomainError::invalid(
            field,
            format!("{} bytes exceeds {MAX_ID_BYTES}", id.len()),
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)))
    {
        return Err(DomainError::invalid(
            field,
            format!("character {c:?} not allowed in an id"),
        ));
    }
    Ok(())
}

fn check_text(field: &str, text: &str) -> Result<(), DomainError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(DomainError::invalid(
            field,
            format!("{} bytes exceeds {MAX_TEXT_BYTES}", text.len()),
        ));
    }
    if text.chars().any(|c| c.is_control()) {
        return Err(DomainError::invalid(
            field,
            "control characters not allowed",
        ));
    }
    Ok(())
}

fn check_quantity(field: &str, quantity: i64) -> Result<(), DomainError> {
    if quantity <= 0 {
        return Err(DomainError::invalid(
            field,
            format!("must be > 0, got {quantity}"),
        ));
    }
    if quantity > MAX_QUANTITY {
        return Err(DomainError::invalid(
            field,
            format!("{quantity} exceeds {MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

fn check_threshold(t: i64) -> Result<(), DomainError> {
    if !(0..=MAX_QUANTITY).contains(&t) {
        return Err(DomainError::invalid(
            "low_stock_threshold",
            format!("must be in 0..={MAX_QUANTITY}"),
        ));
    }
    Ok(())
}

fn check_attributes(attributes: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(DomainError::invalid(
            "attributes",
            format!("{} entries exceeds {MAX_ATTRIBUTES}", attributes.len()),
        ));
    }
    for (k, v) in attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_KEY_BYTES {
            return Err(DomainError::invalid(
                "attributes",
                format!("key length must be 1..={MAX_ATTRIBUTE_KEY_BYTES}"),
            ));
        }
        if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
            return Err(DomainError::invalid(
                "attributes",
                format!("value of {k:?} exceeds {MAX_ATTRIBUTE_VALUE_BYTES} bytes"),
            ));
        }
        if k.chars().chain(v.chars()).any(|c| c.is_control()) {
            return Err(DomainError::invalid(
                "attributes",
                "control characters not allowed",
            ));
        }
    }
    Ok(())
}
