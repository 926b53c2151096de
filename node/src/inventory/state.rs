//! The inventory state and the one function that changes it: `Inventory::apply`.
//!
//! Pure: no I/O, no clock, no async. Time and the revision come in with each command
//! (leader-stamped inside the log entry), so every replica that applies the same entries
//! reaches the same state. Every change goes through a journal of undo records, which
//! makes a batch all-or-nothing and tells the storage layer exactly which keys to write.

use super::command::{Command, Condition, Op};
use super::error::DomainError;
use super::limits::*;
use super::model::*;
use super::stock_table::StockTable;
use super::table_key::TableKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a command sits in the log and what time the leader stamped on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyCtx {
    /// The command's revision (from its log position); becomes the revision of
    /// everything it changes.
    pub revision: u64,
    /// Leader's wall clock when it proposed the entry, ms since the Unix epoch.
    pub time_ms: u64,
    pub idempotency: Option<IdempotencyKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// Hash of the command, so that a key reused for a different request is refused.
    pub fingerprint: u64,
}

/// The address of one persisted record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Item(String),
    Location(String),
    Stock(String, String),
    Reservation(String),
    Idempotency(String),
    Clock,
}

/// One persisted record; the state is exactly the set of its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    Item(Item),
    Location(Location),
    Stock {
        item: String,
        location: String,
        level: StockLevel,
    },
    Reservation(Reservation),
    Idempotency {
        key: String,
        record: IdempotencyRecord,
    },
    Clock(u64),
}

impl Record {
    pub fn key(&self) -> Key {
        match self {
            Record::Item(i) => Key::Item(i.id.clone()),
            Record::Location(l) => Key::Location(l.id.clone()),
            Record::Stock { item, location, .. } => Key::Stock(item.clone(), location.clone()),
            Record::Reservation(r) => Key::Reservation(r.id.clone()),
            Record::Idempotency { key, .. } => Key::Idempotency(key.clone()),
            Record::Clock(_) => Key::Clock,
        }
    }
}

/// The result of applying one command. (The keys whose records it changed come from
/// `Inventory::apply_touching`.)
#[derive(Debug)]
pub struct Applied {
    pub result: Result<Outcome, DomainError>,
    /// On a replay whose record keeps its movements in the ledger: `(revision, count)` of
    /// the movements the caller reads back into the outcome (this module does no I/O).
    pub replay_movements: Option<(u64, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Undo {
    Item(String, Option<Item>),
    Location(String, Option<Location>),
    Stock((String, String), Option<StockLevel>),
    Reservation(String, Option<Reservation>),
    Idempotency(TableKey, Option<IdempotencyRecord>),
    Clock(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    items: BTreeMap<String, Item>,
    locations: BTreeMap<String, Location>,
    stock: StockTable,
    reservations: BTreeMap<String, Reservation>,
    /// Persistent (structurally shared): cloning it is O(1), so a snapshot copies the
    /// table, one record per keyed write for 24 h, without holding up apply.
    idempotency: imbl::OrdMap<TableKey, IdempotencyRecord>,
    /// Highest leader time applied so far; entry times are clamped to never go back.
    clock_ms: u64,
    // Derived indexes, rebuilt on load.
    open_by_deadline: BTreeSet<(u64, String)>,
    /// Persistent too: a snapshot's copy shares it, and a build finds the records made
    /// since the last one by time range instead of scanning the whole table.
    idempotency_by_time: imbl::OrdSet<(u64, TableKey)>,
    /// Undo records of the command being applied; empty between commands.
    journal: Vec<Undo>,
}

impl Default for Inventory {
    fn default() -> Self {
        Self::genesis()
    }
}

/// Per-command scratch: the revision, clamped time and movements made so far.
struct Step<'a> {
    revision: u64,
    now_ms: u64,
    movements: &'a mut Vec<Movement>,
    reservations: &'a mut Vec<String>,
}

impl Inventory {
    /// The state every cluster starts from: the three built-in virtual locations.
    pub fn genesis() -> Self {
        let mut inv = Inventory {
            items: BTreeMap::new(),
            locations: BTreeMap::new(),
            stock: StockTable::default(),
            reservations: BTreeMap::new(),
            idempotency: imbl::OrdMap::new(),
            clock_ms: 0,
            open_by_deadline: BTreeSet::new(),
            idempotency_by_time: imbl::OrdSet::new(),
            journal: Vec::new(),
        };
        for (id, name) in [
            (SUPPLIER, "Suppliers"),
            (CUSTOMER, "Customers"),
            (ADJUSTMENT, "Adjustments"),
        ] {
            inv.locations.insert(
                id.to_string(),
                Location {
                    id: id.to_string(),
                    name: name.to_string(),
                    kind: LocationKind::Virtual,
                    revision: 0,
                },
            );
        }
        inv
    }

    /// Rebuilds a state from its records (storage or snapshot), checking the invariants
    /// rather than trusting the source.
    pub fn from_records(records: impl IntoIterator<Item = Record>) -> Result<Self, String> {
        // Start from genesis: the built-in virtual locations are part of every state and
        // are only written to storage if a snapshot carried them.
        let mut inv = Inventory::genesis();
        for record in records {
            inv.load_record(record);
        }
        inv.check_invariants()?;
        Ok(inv)
    }

    /// Puts one stored record into a state being rebuilt (from genesis, by
    /// [`Inventory::from_records`] or a caller that decodes records one at a time); the
    /// caller runs [`Inventory::check_invariants`] once all are in.
    pub fn load_record(&mut self, record: Record) {
        let inv = self;
        match record {
            Record::Item(i) => {
                inv.items.insert(i.id.clone(), i);
            }
            Record::Location(l) => {
                inv.locations.insert(l.id.clone(), l);
            }
            Record::Stock {
                item,
                location,
                level,
            } => {
                inv.stock.insert(&item, &location, level);
            }
            Record::Reservation(r) => {
                if r.state == ReservationState::Open {
                    inv.open_by_deadline.insert((r.deadline_ms, r.id.clone()));
                }
                inv.reservations.insert(r.id.clone(), r);
            }
            Record::Idempotency { key, record } => {
                let key = TableKey::new(&key);
                inv.idempotency_by_time
                    .insert((record.time_ms, key.clone()));
                inv.idempotency.insert(key, record);
            }
            Record::Clock(c) => inv.clock_ms = c,
        }
    }

    /// A copy of the state for a snapshot, taken while applies wait: items, locations and
    /// reservations are cloned, the stock levels copied as one flat list with their ids
    /// shared (`StockTable::copy`), and the idempotency table (the large one) shared in
    /// O(1). Its `records_ref` and `into_records` give exactly `records()` as of now, and
    /// can run after applies resume.
    pub fn copy_for_snapshot(&self) -> StateCopy {
        let items = self.items.values().cloned().map(Record::Item);
        let locations = self.locations.values().cloned().map(Record::Location);
        StateCopy {
            before_stock: items.chain(locations).collect(),
            stock: self.stock.copy(),
            after_stock: self
                .reservations
                .values()
                .cloned()
                .map(Record::Reservation)
                .collect(),
            idempotency: self.idempotency.clone(),
            idempotency_by_time: self.idempotency_by_time.clone(),
            clock_ms: self.clock_ms,
        }
    }

    /// Every record of the state, in key order within each kind.
    pub fn records(&self) -> impl Iterator<Item = Record> + '_ {
        let idem = self
            .idempotency
            .iter()
            .map(|(key, record)| Record::Idempotency {
                key: key.as_str().to_owned(),
                record: record.clone(),
            });
        self.head_records()
            .chain(idem)
            .chain(std::iter::once(Record::Clock(self.clock_ms)))
    }

    /// The records before the idempotency table's in `records()` order: items, locations,
    /// stock levels, reservations.
    fn head_records(&self) -> impl Iterator<Item = Record> + '_ {
        let items = self.items.values().cloned().map(Record::Item);
        let locations = self.locations.values().cloned().map(Record::Location);
        let stock = self
            .stock
            .iter()
            .map(|(item, location, level)| Record::Stock {
                item: item.to_string(),
                location: location.to_string(),
                level,
            });
        let reservations = self.reservations.values().cloned().map(Record::Reservation);
        items.chain(locations).chain(stock).chain(reservations)
    }

    /// The current record at `key`, or `None` if there is none (deleted or never written).
    pub fn record(&self, key: &Key) -> Option<Record> {
        match key {
            Key::Item(id) => self.items.get(id).cloned().map(Record::Item),
            Key::Location(id) => self.locations.get(id).cloned().map(Record::Location),
            Key::Stock(item, location) => {
                self.stock.get(item, location).map(|level| Record::Stock {
                    item: item.clone(),
                    location: location.clone(),
                    level,
                })
            }
            Key::Reservation(id) => self.reservations.get(id).cloned().map(Record::Reservation),
            Key::Idempotency(k) => {
                self.idempotency
                    .get(&TableKey::new(k))
                    .map(|record| Record::Idempotency {
                        key: k.clone(),
                        record: record.clone(),
                    })
            }
            Key::Clock => Some(Record::Clock(self.clock_ms)),
        }
    }

    // ---- reads -------------------------------------------------------------------------

    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.get(id)
    }
    /// Items with id > `after`, at most `limit`, in id order.
    pub fn items_after(&self, after: &str, limit: usize) -> Vec<&Item> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = if after.is_empty() {
            Unbounded
        } else {
            Excluded(after.to_string())
        };
        self.items
            .range((start, Unbounded))
            .take(limit)
            .map(|(_, v)| v)
            .collect()
    }
    pub fn location(&self, id: &str) -> Option<&Location> {
        self.locations.get(id)
    }
    pub fn locations_after(&self, after: &str, limit: usize) -> Vec<&Location> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = if after.is_empty() {
            Unbounded
        } else {
            Excluded(after.to_string())
        };
        self.locations
            .range((start, Unbounded))
            .take(limit)
            .map(|(_, v)| v)
            .collect()
    }
    /// The balance of `item` at `location`; zero if never touched.
    pub fn stock(&self, item: &str, location: &str) -> StockLevel {
        self.stock.get(item, location).unwrap_or_default()
    }
    /// Every touched balance of `item`, in location order.
    pub fn stock_of_item(&self, item: &str) -> Vec<(&str, StockLevel)> {
        self.stock.of_item(item).collect()
    }
    pub fn reservation(&self, id: &str) -> Option<&Reservation> {
        self.reservations.get(id)
    }
    pub fn open_reservations(&self) -> usize {
        self.open_by_deadline.len()
    }
    /// Whether an `ExpireDue` proposed at `now_ms` would change anything: an open
    /// reservation past its deadline, or an idempotency record past its retention.
    pub fn expiry_due(&self, now_ms: u64) -> bool {
        let deadline_passed = self
            .open_by_deadline
            .first()
            .map(|(d, _)| *d < now_ms)
            .unwrap_or(false);
        let horizon = now_ms.saturating_sub(IDEMPOTENCY_RETENTION_MS);
        let key_stale = self
            .idempotency_by_time
            .get_min()
            .map(|(t, _)| *t < horizon)
            .unwrap_or(false);
        deadline_passed || key_stale
    }
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }
    /// How many idempotency records the state holds.
    pub fn idempotency_len(&self) -> usize {
        self.idempotency.len()
    }

    // ---- the one mutation ------------------------------------------------------------

    /// Applies `cmd` at `ctx`. On error nothing changes (rule 6 and the bad-input policy);
    /// a key seen before returns its first outcome (rule 4).
    pub fn apply(&mut self, cmd: &Command, ctx: &ApplyCtx) -> Applied {
        self.apply_inner(cmd, ctx, None)
    }

    /// `apply`, also listing the keys whose records changed (sorted, each once; to be
    /// written, or deleted where `Inventory::record` now returns `None`). Only the tests
    /// need the list (they check a per-key mirror of the records against the state): the
    /// node keeps no records per key, its state is durable as snapshot plus log, and
    /// building the list on every write cost about 1 % of a node's CPU (perf).
    #[cfg(test)]
    pub fn apply_touching(&mut self, cmd: &Command, ctx: &ApplyCtx) -> (Applied, Vec<Key>) {
        let mut touched = Vec::new();
        let applied = self.apply_inner(cmd, ctx, Some(&mut touched));
        (applied, touched)
    }

    fn apply_inner(
        &mut self,
        cmd: &Command,
        ctx: &ApplyCtx,
        touched: Option<&mut Vec<Key>>,
    ) -> Applied {
        assert!(
            self.journal.is_empty(),
            "journal must be empty between commands"
        );
        assert!(ctx.revision > 0, "log indexes start at 1");

        // The table's key is built once: searched here, written by `apply_journaled`.
        let keyed = ctx
            .idempotency
            .as_ref()
            .map(|idem| (idem, TableKey::new(&idem.key)));
        if let Some((idem, table_key)) = &keyed {
            if let Some(existing) = self.idempotency.get(table_key) {
                let (result, replay_movements) = if existing.fingerprint == idem.fingerprint {
                    let mut outcome = existing.outcome.clone();
                    outcome.replayed = true;
                    let from_ledger = existing
                        .ledger_movements
                        .map(|n| (existing.outcome.revision, n));
                    (Ok(outcome), from_ledger)
                } else {
                    (
                        Err(DomainError::IdempotencyKeyReused(idem.key.clone())),
                        None,
                    )
                };
                return Applied {
                    result,
                    replay_movements,
                };
            }
        }

        let result = self.apply_journaled(cmd, ctx, keyed);
        match &result {
            Ok(_) => {
                match touched {
                    Some(keys) => {
                        keys.extend(self.journal.drain(..).map(|u| u.key()));
                        keys.sort();
                        keys.dedup();
                    }
                    None => self.journal.clear(),
                }
                Applied {
                    result,
                    replay_movements: None,
                }
            }
            Err(_) => {
                self.rollback();
                Applied {
                    result,
                    replay_movements: None,
                }
            }
        }
    }

    /// `keyed`: `ctx.idempotency` with its key as the table's key, if there is one.
    fn apply_journaled(
        &mut self,
        cmd: &Command,
        ctx: &ApplyCtx,
        keyed: Option<(&IdempotencyKey, TableKey)>,
    ) -> Result<Outcome, DomainError> {
        cmd.validate()?;
        if let Some(idem) = &ctx.idempotency {
            super::command::check_id("idempotency_key", &idem.key)?;
        }
        for c in &cmd.conditions {
            self.check_condition(c)?;
        }
        let now_ms = self.clock_ms.max(ctx.time_ms);
        if now_ms != self.clock_ms {
            self.journal.push(Undo::Clock(self.clock_ms));
            self.clock_ms = now_ms;
        }
        let mut movements = Vec::new();
        let mut reservations = Vec::new();
        let mut step = Step {
            revision: ctx.revision,
            now_ms,
            movements: &mut movements,
            reservations: &mut reservations,
        };
        let batched = cmd.ops.len() > 1;
        for (index, op) in cmd.ops.iter().enumerate() {
            self.apply_op(op, &mut step).map_err(|e| {
                if batched {
                    DomainError::InBatch {
                        index,
                        source: Box::new(e),
                    }
                } else {
                    e
                }
            })?;
        }
        let outcome = Outcome {
            revision: ctx.revision,
            movements,
            reservations,
            replayed: false,
        };
        if let Some((idem, table_key)) = keyed {
            let record = IdempotencyRecord {
                fingerprint: idem.fingerprint,
                time_ms: now_ms,
                outcome: Outcome {
                    movements: Vec::new(),
                    ..outcome.clone()
                },
                ledger_movements: Some(outcome.movements.len() as u32),
            };
            self.put_idempotency(table_key, Some(record));
        }
        Ok(outcome)
    }

    fn check_condition(&self, c: &Condition) -> Result<(), DomainError> {
        let fail = |subject: String, expected: String, actual: String| {
            Err(DomainError::ConditionFailed {
                subject,
                expected,
                actual,
            })
        };
        match c {
            Condition::StockRevision {
                item,
                location,
                revision,
            } => {
                let actual = self.stock(item, location).revision;
                if actual != *revision {
                    return fail(
                        format!("revision of {item}@{location}"),
                        revision.to_string(),
                        actual.to_string(),
                    );
                }
            }
            Condition::StockOnHand {
                item,
                location,
                on_hand,
            } => {
                let actual = self.stock(item, location).on_hand;
                if actual != *on_hand {
                    return fail(
                        format!("on_hand of {item}@{location}"),
                        on_hand.to_string(),
                        actual.to_string(),
                    );
                }
            }
            Condition::StockAvailable {
                item,
                location,
                available,
            } => {
                let actual = self.stock(item, location).available();
                if actual != *available {
                    return fail(
                        format!("available of {item}@{location}"),
                        available.to_string(),
                        actual.to_string(),
                    );
                }
            }
            Condition::ItemRevision { item, revision } => {
                let actual = self
                    .items
                    .get(item)
                    .ok_or_else(|| DomainError::ItemNotFound(item.clone()))?
                    .revision;
                if actual != *revision {
                    return fail(
                        format!("revision of item {item}"),
                        revision.to_string(),
                        actual.to_string(),
                    );
                }
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, op: &Op, step: &mut Step<'_>) -> Result<(), DomainError> {
        let rev = step.revision;
        match op {
            Op::CreateItem {
                id,
                name,
                unit,
                attributes,
                low_stock_threshold,
            } => {
                if self.items.contains_key(id) {
                    return Err(DomainError::ItemExists(id.clone()));
                }
                let item = Item {
                    id: id.clone(),
                    name: name.clone(),
                    unit: unit.clone(),
                    attributes: attributes.clone(),
                    low_stock_threshold: *low_stock_threshold,
                    revision: rev,
                };
                self.put_item(item);
            }
            Op::UpdateItem {
                id,
                name,
                unit,
                attributes,
                low_stock_threshold,
            } => {
                let mut item = self
                    .items
                    .get(id)
                    .cloned()
                    .ok_or_else(|| DomainError::ItemNotFound(id.clone()))?;
                if let Some(n) = name {
                    item.name = n.clone();
                }
                if let Some(u) = unit {
                    item.unit = u.clone();
                }
                if let Some(a) = attributes {
                    item.attributes = a.clone();
                }
                if let Some(t) = low_stock_threshold {
                    item.low_stock_threshold = *t;
                }
                item.revision = rev;
                self.put_item(item);
            }
            Op::CreateLocation { id, name, kind } => {
                if self.locations.contains_key(id) {
                    return Err(DomainError::LocationExists(id.clone()));
                }
                self.put_location(Location {
                    id: id.clone(),
                    name: name.clone(),
                    kind: *kind,
                    revision: rev,
                });
            }
            Op::Receive {
                item,
                location,
                quantity,
                from,
                reason,
                reference,
            } => {
                let from = or_default(from, SUPPLIER);
                self.require_item(item)?;
                self.require_kind(location, false)?;
                self.require_kind(from, true)?;
                self.transfer(
                    step,
                    MovementKind::Receive,
                    item,
                    from,
                    location,
                    *quantity,
                    reason,
                    reference,
                )?;
            }
            Op::Ship {
                item,
                location,
                quantity,
                to,
                reason,
                reference,
            } => {
                let to = or_default(to, CUSTOMER);
                self.require_item(item)?;
                self.require_kind(location, false)?;
                self.require_kind(to, true)?;
                self.require_available(item, location, *quantity)?;
                self.transfer(
                    step,
                    MovementKind::Ship,
                    item,
                    location,
                    to,
                    *quantity,
                    reason,
                    reference,
                )?;
            }
            Op::Adjust {
                item,
                location,
                delta,
                counterpart,
                reason,
                reference,
            } => {
                let counterpart = or_default(counterpart, ADJUSTMENT);
                self.require_item(item)?;
                self.require_kind(location, false)?;
                self.require_kind(counterpart, true)?;
                let q = delta.abs();
                if *delta > 0 {
                    self.transfer(
                        step,
                        MovementKind::Adjust,
                        item,
                        counterpart,
                        location,
                        q,
                        reason,
                        reference,
                    )?;
                } else {
                    self.require_available(item, location, q)?;
                    self.transfer(
                        step,
                        MovementKind::Adjust,
                        item,
                        location,
                        counterpart,
                        q,
                        reason,
                        reference,
                    )?;
                }
            }
            Op::Transfer {
                item,
                from,
                to,
                quantity,
                reason,
                reference,
            } => {
                self.require_item(item)?;
                self.require_kind(from, false)?;
                self.require_kind(to, false)?;
                self.require_available(item, from, *quantity)?;
                self.transfer(
                    step,
                    MovementKind::Transfer,
                    item,
                    from,
                    to,
                    *quantity,
                    reason,
                    reference,
                )?;
            }
            Op::Reserve {
                id,
                item,
                location,
                quantity,
                ttl_ms,
                reference,
            } => {
                let id = if id.is_empty() {
                    format!("res-{}-{}", rev, step.reservations.len())
                } else {
                    id.clone()
                };
                if self.reservations.contains_key(&id) {
                    return Err(DomainError::ReservationExists(id));
                }
                self.require_item(item)?;
                self.require_kind(location, false)?;
                self.require_available(item, location, *quantity)?;
                let mut level = self.stock(item, location);
                level.reserved += quantity;
                level.revision = rev;
                self.put_stock(item, location, level);
                let deadline_ms = step.now_ms.saturating_add(*ttl_ms);
                self.put_reservation(Reservation {
                    id: id.clone(),
                    item: item.clone(),
                    location: location.clone(),
                    quantity: *quantity,
                    deadline_ms,
                    state: ReservationState::Open,
                    reference: reference.clone(),
                    created_revision: rev,
                    ended_revision: 0,
                });
                self.record_movement(
                    step,
                    MovementKind::Reserve,
                    item,
                    location,
                    location,
                    *quantity,
                    "",
                    reference,
                    &id,
                );
                step.reservations.push(id);
            }
            Op::Commit { id, to, reason } => {
                let r = self.require_open(id)?;
                if step.now_ms > r.deadline_ms {
                    return Err(DomainError::ReservationExpired {
                        id: id.clone(),
                        deadline_ms: r.deadline_ms,
                        now_ms: step.now_ms,
                    });
                }
                let to = or_default(to, CUSTOMER);
                self.require_kind(to, true)?;
                let mut level = self.stock(&r.item, &r.location);
                level.reserved -= r.quantity;
                self.put_stock(&r.item, &r.location, level);
                self.transfer(
                    step,
                    MovementKind::Commit,
                    &r.item,
                    &r.location,
                    to,
                    r.quantity,
                    reason,
                    &r.reference,
                )?;
                // `transfer` recorded the movement; tie it to the reservation.
                if let Some(m) = step.movements.last_mut() {
                    m.reservation = id.clone();
                }
                self.end_reservation(r, ReservationState::Committed, rev);
            }
            Op::Release { id, reason } => {
                let r = self.require_open(id)?;
                self.unreserve(step, &r, MovementKind::Release, reason);
                self.end_reservation(r, ReservationState::Released, rev);
            }
            Op::ExpireDue => {
                let due: Vec<String> = self
                    .open_by_deadline
                    .iter()
                    .take_while(|(deadline, _)| *deadline < step.now_ms)
                    .take(MAX_EXPIRE_PER_COMMAND)
                    .map(|(_, id)| id.clone())
                    .collect();
                for id in due {
                    let r = self.reservations[&id].clone();
                    self.unreserve(step, &r, MovementKind::Expire, "deadline passed");
                    self.end_reservation(r, ReservationState::Expired, rev);
                }
                let horizon = step.now_ms.saturating_sub(IDEMPOTENCY_RETENTION_MS);
                let stale: Vec<TableKey> = self
                    .idempotency_by_time
                    .iter()
                    .take_while(|(t, _)| *t < horizon)
                    .take(MAX_PRUNE_PER_COMMAND)
                    .map(|(_, k)| k.clone())
                    .collect();
                for key in stale {
                    self.put_idempotency(key, None);
                }
            }
        }
        Ok(())
    }

    // ---- rules -------------------------------------------------------------------------

    fn require_item(&self, id: &str) -> Result<(), DomainError> {
        if self.items.contains_key(id) {
            Ok(())
        } else {
            Err(DomainError::ItemNotFound(id.to_string()))
        }
    }

    /// The location must exist and be virtual (`want_virtual`) or real.
    fn require_kind(&self, id: &str, want_virtual: bool) -> Result<(), DomainError> {
        let loc = self
            .locations
            .get(id)
            .ok_or_else(|| DomainError::LocationNotFound(id.to_string()))?;
        if loc.kind.is_virtual() != want_virtual {
            let needed = if want_virtual {
                "a virtual location is needed here"
            } else {
                "a real location is needed here"
            };
            return Err(DomainError::WrongLocationKind {
                location: id.to_string(),
                kind: loc.kind.as_str().to_string(),
                needed: needed.to_string(),
            });
        }
        Ok(())
    }

    fn require_available(
        &self,
        item: &str,
        location: &str,
        quantity: i64,
    ) -> Result<(), DomainError> {
        let available = self.stock(item, location).available();
        if available < quantity {
            return Err(DomainError::InsufficientStock {
                item: item.to_string(),
                location: location.to_string(),
                available,
                requested: quantity,
            });
        }
        Ok(())
    }

    fn require_open(&self, id: &str) -> Result<Reservation, DomainError> {
        let r = self
            .reservations
            .get(id)
            .ok_or_else(|| DomainError::ReservationNotFound(id.to_string()))?;
        if r.state != ReservationState::Open {
            return Err(DomainError::ReservationEnded {
                id: id.to_string(),
                state: r.state.as_str().to_string(),
            });
        }
        Ok(r.clone())
    }

    /// Moves `quantity` of on-hand stock from one balance to another and records it.
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        step: &mut Step<'_>,
        kind: MovementKind,
        item: &str,
        from: &str,
        to: &str,
        quantity: i64,
        reason: &str,
        reference: &str,
    ) -> Result<(), DomainError> {
        assert!(quantity > 0 && from != to);
        let overflow = |location: &str| DomainError::Overflow {
            item: item.to_string(),
            location: location.to_string(),
        };
        let mut src = self.stock(item, from);
        let mut dst = self.stock(item, to);
        src.on_hand = src
            .on_hand
            .checked_sub(quantity)
            .ok_or_else(|| overflow(from))?;
        dst.on_hand = dst
            .on_hand
            .checked_add(quantity)
            .ok_or_else(|| overflow(to))?;
        src.revision = step.revision;
        dst.revision = step.revision;
        self.put_stock(item, from, src);
        self.put_stock(item, to, dst);
        self.record_movement(step, kind, item, from, to, quantity, reason, reference, "");
        Ok(())
    }

    fn unreserve(
        &mut self,
        step: &mut Step<'_>,
        r: &Reservation,
        kind: MovementKind,
        reason: &str,
    ) {
        let mut level = self.stock(&r.item, &r.location);
        level.reserved -= r.quantity;
        level.revision = step.revision;
        self.put_stock(&r.item, &r.location, level);
        self.record_movement(
            step,
            kind,
            &r.item,
            &r.location,
            &r.location,
            r.quantity,
            reason,
            &r.reference,
            &r.id,
        );
    }

    fn end_reservation(&mut self, mut r: Reservation, state: ReservationState, revision: u64) {
        assert_eq!(
            r.state,
            ReservationState::Open,
            "a reservation ends exactly once"
        );
        r.state = state;
        r.ended_revision = revision;
        self.put_reservation(r);
    }

    #[allow(clippy::too_many_arguments)]
    fn record_movement(
        &mut self,
        step: &mut Step<'_>,
        kind: MovementKind,
        item: &str,
        from: &str,
        to: &str,
        quantity: i64,
        reason: &str,
        reference: &str,
        reservation: &str,
    ) {
        step.movements.push(Movement {
            revision: step.revision,
            seq: step.movements.len() as u32,
            kind,
            item: item.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            quantity,
            reason: reason.to_string(),
            reference: reference.to_string(),
            time_ms: step.now_ms,
            reservation: reservation.to_string(),
        });
    }

    // ---- journaled writes: the only places that mutate the maps ------------------------

    fn put_item(&mut self, item: Item) {
        let old = self.items.insert(item.id.clone(), item.clone());
        self.journal.push(Undo::Item(item.id, old));
    }

    fn put_location(&mut self, loc: Location) {
        let old = self.locations.insert(loc.id.clone(), loc.clone());
        self.journal.push(Undo::Location(loc.id, old));
    }

    fn put_stock(&mut self, item: &str, location: &str, level: StockLevel) {
        if !self.locations[location].kind.is_virtual() {
            assert!(
                level.on_hand >= 0,
                "rule 1: on_hand >= 0 at {item}@{location}"
            );
            assert!(
                level.reserved >= 0 && level.reserved <= level.on_hand,
                "rule 1: 0 <= reserved <= on_hand at {item}@{location}"
            );
        }
        let old = self.stock.insert(item, location, level);
        self.journal
            .push(Undo::Stock((item.to_string(), location.to_string()), old));
    }

    fn put_reservation(&mut self, r: Reservation) {
        let old = self.reservations.insert(r.id.clone(), r.clone());
        if let Some(o) = &old {
            if o.state == ReservationState::Open {
                self.open_by_deadline.remove(&(o.deadline_ms, o.id.clone()));
            }
        }
        if r.state == ReservationState::Open {
            self.open_by_deadline.insert((r.deadline_ms, r.id.clone()));
        }
        self.journal.push(Undo::Reservation(r.id, old));
    }

    fn put_idempotency(&mut self, key: TableKey, record: Option<IdempotencyRecord>) {
        let old = match &record {
            Some(rec) => {
                self.idempotency_by_time.insert((rec.time_ms, key.clone()));
                self.idempotency.insert(key.clone(), rec.clone())
            }
            None => self.idempotency.remove(&key),
        };
        if let Some(o) = &old {
            if record.as_ref().map(|r| r.time_ms) != Some(o.time_ms) {
                self.idempotency_by_time.remove(&(o.time_ms, key.clone()));
            }
        }
        self.journal.push(Undo::Idempotency(key, old));
    }

    /// Undoes the journal newest-first, restoring the maps and their indexes exactly.
    fn rollback(&mut self) {
        while let Some(undo) = self.journal.pop() {
            match undo {
                Undo::Item(id, old) => restore(&mut self.items, id, old),
                Undo::Location(id, old) => restore(&mut self.locations, id, old),
                Undo::Stock((item, location), old) => {
                    match old {
                        Some(level) => self.stock.insert(&item, &location, level),
                        None => self.stock.remove(&item, &location),
                    };
                }
                Undo::Reservation(id, old) => {
                    if let Some(cur) = self.reservations.get(&id) {
                        if cur.state == ReservationState::Open {
                            self.open_by_deadline.remove(&(cur.deadline_ms, id.clone()));
                        }
                    }
                    if let Some(o) = &old {
                        if o.state == ReservationState::Open {
                            self.open_by_deadline.insert((o.deadline_ms, id.clone()));
                        }
                    }
                    restore(&mut self.reservations, id, old);
                }
                Undo::Idempotency(key, old) => {
                    if let Some(cur) = self.idempotency.get(&key) {
                        self.idempotency_by_time.remove(&(cur.time_ms, key.clone()));
                    }
                    if let Some(o) = &old {
                        self.idempotency_by_time.insert((o.time_ms, key.clone()));
                    }
                    restore_shared(&mut self.idempotency, key, old);
                }
                Undo::Clock(old) => self.clock_ms = old,
            }
        }
    }

    /// Rules 1, 2 and 5 over the whole state, plus consistency of the derived indexes.
    /// Used on load and by tests; O(size of state).
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut sums: BTreeMap<&str, i128> = BTreeMap::new();
        for (item, location, level) in self.stock.iter() {
            let loc = self
                .locations
                .get(location)
                .ok_or_else(|| format!("stock at unknown location {location:?}"))?;
            if !self.items.contains_key(item) {
                return Err(format!("stock of unknown item {item:?}"));
            }
            if !loc.kind.is_virtual()
                && (level.on_hand < 0 || level.reserved < 0 || level.reserved > level.on_hand)
            {
                return Err(format!("rule 1 violated at {item}@{location}: {level:?}"));
            }
            if loc.kind.is_virtual() && level.reserved != 0 {
                return Err(format!("reservation at virtual location {location:?}"));
            }
            *sums.entry(item).or_default() += level.on_hand as i128;
        }
        if let Some((item, sum)) = sums.iter().find(|(_, s)| **s != 0) {
            return Err(format!(
                "rule 2 violated: balances of {item:?} sum to {sum}, not 0"
            ));
        }
        let mut held: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        let mut open = BTreeSet::new();
        for r in self.reservations.values() {
            if r.state == ReservationState::Open {
                *held.entry((&r.item, &r.location)).or_default() += r.quantity;
                open.insert((r.deadline_ms, r.id.clone()));
            } else if r.ended_revision == 0 {
                return Err(format!("reservation {:?} ended without a revision", r.id));
            }
        }
        for (item, location, level) in self.stock.iter() {
            let h = held.get(&(item, location)).copied().unwrap_or(0);
            if h != level.reserved {
                return Err(format!(
                    "reserved {} at {item}@{location} but open reservations hold {h}",
                    level.reserved
                ));
            }
        }
        if open != self.open_by_deadline {
            return Err("open-reservation index out of step".into());
        }
        // A std set to compare with: building another persistent one of millions of
        // records doubled the time a start spends on them (perf).
        let by_time: BTreeSet<(u64, TableKey)> = self
            .idempotency
            .iter()
            .map(|(k, r)| (r.time_ms, k.clone()))
            .collect();
        if by_time.len() != self.idempotency_by_time.len()
            || !by_time.iter().eq(self.idempotency_by_time.iter())
        {
            return Err("idempotency index out of step".into());
        }
        // A record's time is the clock when it was made, and the clock never goes back:
        // a snapshot file leaves the records older than its clock in the node's files.
        if let Some((newest, key)) = self.idempotency_by_time.get_max() {
            if *newest > self.clock_ms {
                return Err(format!(
                    "idempotency record {} at {newest} ms, after the clock's {} ms",
                    key.as_str(),
                    self.clock_ms
                ));
            }
        }
        Ok(())
    }
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// The state as of one moment (`Inventory::copy_for_snapshot`).
pub struct StateCopy {
    /// Items and locations, then (shared) the stock levels, then reservations: with the
    /// idempotency table and the clock, `records()` order.
    before_stock: Vec<Record>,
    stock: super::stock_table::StockCopy,
    after_stock: Vec<Record>,
    idempotency: imbl::OrdMap<TableKey, IdempotencyRecord>,
    idempotency_by_time: imbl::OrdSet<(u64, TableKey)>,
    clock_ms: u64,
}

/// One record of a [`StateCopy`], borrowed: what a snapshot encoder walks instead of
/// cloning every idempotency record out of the shared table first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordRef<'a> {
    /// An item, location, stock level or reservation (never an idempotency record).
    Whole(&'a Record),
    /// A stock level, from the shared copy of the table.
    Stock {
        item: &'a str,
        location: &'a str,
        level: StockLevel,
    },
    Idempotency {
        key: &'a str,
        record: &'a IdempotencyRecord,
    },
    Clock(u64),
}

impl<'a> From<&'a Record> for RecordRef<'a> {
    fn from(r: &'a Record) -> Self {
        match r {
            Record::Idempotency { key, record } => RecordRef::Idempotency { key, record },
            Record::Clock(c) => RecordRef::Clock(*c),
            other => RecordRef::Whole(other),
        }
    }
}

impl RecordRef<'_> {
    pub fn to_record(self) -> Record {
        match self {
            RecordRef::Whole(r) => r.clone(),
            RecordRef::Stock {
                item,
                location,
                level,
            } => Record::Stock {
                item: item.to_owned(),
                location: location.to_owned(),
                level,
            },
            RecordRef::Idempotency { key, record } => Record::Idempotency {
                key: key.to_owned(),
                record: record.clone(),
            },
            RecordRef::Clock(c) => Record::Clock(c),
        }
    }
}

impl StateCopy {
    /// The records by reference, in the order `Inventory::records` gives them.
    pub fn records_ref(&self) -> impl Iterator<Item = RecordRef<'_>> {
        self.records_ref_from(0)
    }

    /// `records_ref` without the idempotency records older than `idempotency_from_ms`
    /// (a snapshot file leaves those in the node's idempotency files). With a bound, the
    /// idempotency records it keeps come in time order, found through the time index
    /// (O(kept), not O(table)); without one (0), in key order, as `records_ref`.
    pub fn records_ref_from(
        &self,
        idempotency_from_ms: u64,
    ) -> impl Iterator<Item = RecordRef<'_>> {
        let by_key = (idempotency_from_ms == 0)
            .then(|| {
                self.idempotency
                    .iter()
                    .map(|(key, record)| (key.as_str(), record))
            })
            .into_iter()
            .flatten();
        let by_time = (idempotency_from_ms > 0)
            .then(|| {
                self.idempotency_by_time
                    .range((idempotency_from_ms, TableKey::new(""))..)
                    .map(|(_, key)| self.idempotency_entry(key))
            })
            .into_iter()
            .flatten();
        let idem = by_key
            .chain(by_time)
            .map(|(key, record)| RecordRef::Idempotency { key, record });
        let stock = self
            .stock
            .iter()
            .map(|(item, location, level)| RecordRef::Stock {
                item,
                location,
                level,
            });
        self.before_stock
            .iter()
            .map(RecordRef::Whole)
            .chain(stock)
            .chain(self.after_stock.iter().map(RecordRef::Whole))
            .chain(idem)
            .chain(std::iter::once(RecordRef::Clock(self.clock_ms)))
    }

    /// The idempotency records made at `from_ms` or later and before `before_ms`, in
    /// time order: a range of the time index, each looked up in the table.
    pub fn idempotency_made_between(
        &self,
        from_ms: u64,
        before_ms: u64,
    ) -> impl Iterator<Item = (&str, &IdempotencyRecord)> {
        let (from, before) = (TableKey::new(""), TableKey::new(""));
        self.idempotency_by_time
            .range((from_ms, from)..(before_ms, before))
            .map(|(_, key)| self.idempotency_entry(key))
    }

    /// The record the time index names by `key`.
    fn idempotency_entry<'a>(&'a self, key: &'a TableKey) -> (&'a str, &'a IdempotencyRecord) {
        let record = self
            .idempotency
            .get(key)
            .expect("the time index and the table are changed together");
        (key.as_str(), record)
    }

    /// How many idempotency records were made before `before_ms`, and the oldest of them
    /// (`(time_ms, key)` order), in O(records at or after `before_ms`).
    pub fn idempotency_older_than(&self, before_ms: u64) -> (u64, Option<(u64, &str)>) {
        let newer = self
            .idempotency_by_time
            .range((before_ms, TableKey::new(""))..)
            .count();
        let count = self.idempotency.len() - newer;
        let oldest = self
            .idempotency_by_time
            .get_min()
            .filter(|(t, _)| *t < before_ms)
            .map(|(t, key)| (*t, key.as_str()));
        debug_assert_eq!(count == 0, oldest.is_none());
        (count as u64, oldest)
    }

    /// The clock as of the copy: no idempotency record is newer.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// How many records `records_ref` yields.
    pub fn record_count(&self) -> u64 {
        (self.before_stock.len() + self.stock.len() + self.after_stock.len()) as u64
            + self.idempotency.len() as u64
            + 1 // the clock
    }

    /// The records, in the order `Inventory::records` gives them.
    pub fn into_records(self) -> impl Iterator<Item = Record> {
        // Consuming a shared map clones each entry out of it, one at a time.
        let idem = self
            .idempotency
            .into_iter()
            .map(|(key, record)| Record::Idempotency {
                key: key.as_str().to_owned(),
                record,
            });
        // The stock levels are materialised here: the caller collects every record anyway.
        let stock: Vec<Record> = self
            .stock
            .iter()
            .map(|(item, location, level)| Record::Stock {
                item: item.to_owned(),
                location: location.to_owned(),
                level,
            })
            .collect();
        self.before_stock
            .into_iter()
            .chain(stock)
            .chain(self.after_stock)
            .chain(idem)
            .chain(std::iter::once(Record::Clock(self.clock_ms)))
    }
}

fn restore_shared<K: Ord + Clone, V: Clone>(map: &mut imbl::OrdMap<K, V>, key: K, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

fn restore<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, old: Option<V>) {
    match old {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

impl Undo {
    fn key(&self) -> Key {
        match self {
            Undo::Item(id, _) => Key::Item(id.clone()),
            Undo::Location(id, _) => Key::Location(id.clone()),
            Undo::Stock((i, l), _) => Key::Stock(i.clone(), l.clone()),
            Undo::Reservation(id, _) => Key::Reservation(id.clone()),
            Undo::Idempotency(k, _) => Key::Idempotency(k.as_str().to_owned()),
            Undo::Clock(_) => Key::Clock,
        }
    }
}
