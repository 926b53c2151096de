//! Unit and property tests of the inventory rules. The property tests drive random
//! command sequences (including bad ones, retries and batches) and check every rule of the
//! brief after every step, plus that the journal's touched keys are exactly what storage
//! must write to mirror the state.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

fn ctx(revision: u64, time_ms: u64) -> ApplyCtx {
    ApplyCtx {
        revision,
        time_ms,
        idempotency: None,
    }
}

fn create_item(id: &str) -> Op {
    Op::CreateItem {
        id: id.into(),
        name: format!("Item {id}"),
        unit: "each".into(),
        attributes: BTreeMap::new(),
        low_stock_threshold: 0,
    }
}

fn create_loc(id: &str) -> Op {
    Op::CreateLocation {
        id: id.into(),
        name: id.into(),
        kind: LocationKind::Warehouse,
    }
}

fn receive(item: &str, loc: &str, q: i64) -> Op {
    Op::Receive {
        item: item.into(),
        location: loc.into(),
        quantity: q,
        from: String::new(),
        reason: String::new(),
        reference: String::new(),
    }
}

/// A state with item `sku`, warehouses `w1`, `w2`, and 10 of `sku` at `w1` (revision 4).
fn seeded() -> Inventory {
    let mut inv = Inventory::genesis();
    for (i, op) in [
        create_item("sku"),
        create_loc("w1"),
        create_loc("w2"),
        receive("sku", "w1", 10),
    ]
    .into_iter()
    .enumerate()
    {
        inv.apply(&Command::single(op), &ctx(i as u64 + 1, 1_000))
            .result
            .unwrap();
    }
    inv
}

fn run(inv: &mut Inventory, rev: u64, op: Op) -> Result<Outcome, DomainError> {
    inv.apply(&Command::single(op), &ctx(rev, 2_000)).result
}

/// Each operation has its own name (the `laundry_writes_total` metric's `op` label), in the
/// API's snake case, and several operations make a `batch`.
#[test]
fn every_operation_has_its_own_name() {
    let ops = samples::every_op();
    let names: std::collections::BTreeSet<&str> = ops.iter().map(Op::name).collect();
    assert_eq!(names.len(), ops.len(), "{names:?}");
    assert!(names.contains("create_item") && names.contains("expire_due"));
    assert!(names
        .iter()
        .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    for op in &ops {
        assert_eq!(Command::single(op.clone()).name(), op.name());
    }
    let two = Command {
        ops: ops[..2].to_vec(),
        conditions: vec![],
    };
    assert_eq!(two.name(), "batch");
}

#[test]
fn receive_moves_stock_from_supplier() {
    let inv = seeded();
    assert_eq!(
        inv.stock("sku", "w1"),
        StockLevel {
            on_hand: 10,
            reserved: 0,
            revision: 4
        }
    );
    assert_eq!(inv.stock("sku", SUPPLIER).on_hand, -10);
    inv.check_invariants().unwrap();
}

#[test]
fn ship_more_than_available_fails_and_changes_nothing() {
    let mut inv = seeded();
    let before = inv.clone();
    let err = run(
        &mut inv,
        5,
        Op::Ship {
            item: "sku".into(),
            location: "w1".into(),
            quantity: 11,
            to: String::new(),
            reason: String::new(),
            reference: String::new(),
        },
    )
    .unwrap_err();
    assert_eq!(
        err,
        DomainError::InsufficientStock {
            item: "sku".into(),
            location: "w1".into(),
            available: 10,
            requested: 11
        }
    );
    assert_eq!(inv, before);
}

#[test]
fn transfer_conserves_and_stamps_revision() {
    let mut inv = seeded();
    let out = run(
        &mut inv,
        5,
        Op::Transfer {
            item: "sku".into(),
            from: "w1".into(),
            to: "w2".into(),
            quantity: 4,
            reason: "rebalance".into(),
            reference: "T-1".into(),
        },
    )
    .unwrap();
    assert_eq!(out.revision, 5);
    assert_eq!(out.movements.len(), 1);
    assert_eq!(
        inv.stock("sku", "w1"),
        StockLevel {
            on_hand: 6,
            reserved: 0,
            revision: 5
        }
    );
    assert_eq!(
        inv.stock("sku", "w2"),
        StockLevel {
            on_hand: 4,
            reserved: 0,
            revision: 5
        }
    );
    inv.check_invariants().unwrap();
}

#[test]
fn transfer_into_virtual_location_is_refused() {
    let mut inv = seeded();
    let err = run(
        &mut inv,
        5,
        Op::Transfer {
            item: "sku".into(),
            from: "w1".into(),
            to: CUSTOMER.into(),
            quantity: 1,
            reason: String::new(),
            reference: String::new(),
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, DomainError::WrongLocationKind { .. }),
        "{err:?}"
    );
}

#[test]
fn adjust_requires_reason_and_respects_reservations() {
    let mut inv = seeded();
    let no_reason = Op::Adjust {
        item: "sku".into(),
        location: "w1".into(),
        delta: -1,
        counterpart: String::new(),
        reason: String::new(),
        reference: String::new(),
    };
    assert!(matches!(
        run(&mut inv, 5, no_reason),
        Err(DomainError::Invalid { .. })
    ));
    run(
        &mut inv,
        5,
        Op::Reserve {
            id: "r1".into(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 8,
            ttl_ms: 60_000,
            reference: String::new(),
        },
    )
    .unwrap();
    let too_much = Op::Adjust {
        item: "sku".into(),
        location: "w1".into(),
        delta: -3,
        counterpart: String::new(),
        reason: "count".into(),
        reference: String::new(),
    };
    assert!(matches!(
        run(&mut inv, 6, too_much),
        Err(DomainError::InsufficientStock { available: 2, .. })
    ));
    let ok = Op::Adjust {
        item: "sku".into(),
        location: "w1".into(),
        delta: -2,
        counterpart: String::new(),
        reason: "count".into(),
        reference: String::new(),
    };
    run(&mut inv, 7, ok).unwrap();
    assert_eq!(
        inv.stock("sku", "w1"),
        StockLevel {
            on_hand: 8,
            reserved: 8,
            revision: 7
        }
    );
    assert_eq!(inv.stock("sku", ADJUSTMENT).on_hand, 2);
    inv.check_invariants().unwrap();
}

#[test]
fn reservation_lifecycle_ends_exactly_once() {
    let mut inv = seeded();
    let out = run(
        &mut inv,
        5,
        Op::Reserve {
            id: String::new(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 3,
            ttl_ms: 1_000,
            reference: "order-9".into(),
        },
    )
    .unwrap();
    let id = out.reservations[0].clone();
    assert_eq!(id, "res-5-0");
    assert_eq!(inv.stock("sku", "w1").available(), 7);
    run(
        &mut inv,
        6,
        Op::Commit {
            id: id.clone(),
            to: String::new(),
            reason: String::new(),
        },
    )
    .unwrap();
    assert_eq!(
        inv.stock("sku", "w1"),
        StockLevel {
            on_hand: 7,
            reserved: 0,
            revision: 6
        }
    );
    assert_eq!(inv.stock("sku", CUSTOMER).on_hand, 3);
    assert_eq!(
        inv.reservation(&id).unwrap().state,
        ReservationState::Committed
    );
    let again = run(
        &mut inv,
        7,
        Op::Release {
            id: id.clone(),
            reason: String::new(),
        },
    )
    .unwrap_err();
    assert_eq!(
        again,
        DomainError::ReservationEnded {
            id,
            state: "committed".into()
        }
    );
    inv.check_invariants().unwrap();
}

#[test]
fn expiry_uses_entry_time_not_a_clock() {
    let mut inv = seeded();
    run(
        &mut inv,
        5,
        Op::Reserve {
            id: "r".into(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 5,
            ttl_ms: 1_000,
            reference: String::new(),
        },
    )
    .unwrap();
    // At the deadline exactly, nothing expires and a commit would still succeed.
    let out = inv
        .apply(&Command::single(Op::ExpireDue), &ctx(6, 3_000))
        .result
        .unwrap();
    assert!(out.movements.is_empty());
    let out = inv
        .apply(&Command::single(Op::ExpireDue), &ctx(7, 3_001))
        .result
        .unwrap();
    assert_eq!(out.movements.len(), 1);
    assert_eq!(out.movements[0].kind, MovementKind::Expire);
    assert_eq!(
        inv.reservation("r").unwrap().state,
        ReservationState::Expired
    );
    assert_eq!(inv.stock("sku", "w1").reserved, 0);
}

#[test]
fn commit_after_deadline_is_refused() {
    let mut inv = seeded();
    run(
        &mut inv,
        5,
        Op::Reserve {
            id: "r".into(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 5,
            ttl_ms: 10,
            reference: String::new(),
        },
    )
    .unwrap();
    let err = inv
        .apply(
            &Command::single(Op::Commit {
                id: "r".into(),
                to: String::new(),
                reason: String::new(),
            }),
            &ctx(6, 2_011),
        )
        .result
        .unwrap_err();
    assert!(
        matches!(
            err,
            DomainError::ReservationExpired {
                deadline_ms: 2_010,
                now_ms: 2_011,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn leader_time_never_goes_back() {
    let mut inv = seeded();
    run(
        &mut inv,
        5,
        Op::Reserve {
            id: "r".into(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 1,
            ttl_ms: 100,
            reference: String::new(),
        },
    )
    .unwrap();
    // A new leader with a slow clock stamps an earlier time: the state keeps its clock.
    let out = inv
        .apply(&Command::single(receive("sku", "w1", 1)), &ctx(6, 10))
        .result
        .unwrap();
    assert_eq!(out.movements[0].time_ms, 2_000);
    assert_eq!(inv.clock_ms(), 2_000);
}

#[test]
fn batch_is_all_or_nothing() {
    let mut inv = seeded();
    let before = inv.clone();
    let cmd = Command {
        ops: vec![
            Op::Transfer {
                item: "sku".into(),
                from: "w1".into(),
                to: "w2".into(),
                quantity: 6,
                reason: String::new(),
                reference: String::new(),
            },
            create_item("other"),
            Op::Ship {
                item: "sku".into(),
                location: "w1".into(),
                quantity: 5,
                to: String::new(),
                reason: String::new(),
                reference: String::new(),
            },
        ],
        conditions: vec![],
    };
    let (applied, touched) = inv.apply_touching(&cmd, &ctx(5, 2_000));
    let err = applied.result.unwrap_err();
    assert!(
        matches!(&err, DomainError::InBatch { index: 2, source } if matches!(**source, DomainError::InsufficientStock { available: 4, .. })),
        "{err:?}"
    );
    assert!(touched.is_empty());
    assert_eq!(inv, before);
    // The same batch within stock applies every operation at one revision.
    let mut ok = cmd.clone();
    ok.ops[2] = Op::Ship {
        item: "sku".into(),
        location: "w1".into(),
        quantity: 4,
        to: String::new(),
        reason: String::new(),
        reference: String::new(),
    };
    let out = inv.apply(&ok, &ctx(5, 2_000)).result.unwrap();
    assert_eq!(
        out.movements
            .iter()
            .map(|m| (m.revision, m.seq))
            .collect::<Vec<_>>(),
        vec![(5, 0), (5, 1)]
    );
    assert!(inv.item("other").is_some());
}

#[test]
fn conditions_guard_the_write() {
    let mut inv = seeded();
    let before = inv.clone();
    let mut cmd = Command::single(receive("sku", "w1", 1));
    cmd.conditions = vec![Condition::StockOnHand {
        item: "sku".into(),
        location: "w1".into(),
        on_hand: 9,
    }];
    let err = inv.apply(&cmd, &ctx(5, 2_000)).result.unwrap_err();
    assert_eq!(
        err,
        DomainError::ConditionFailed {
            subject: "on_hand of sku@w1".into(),
            expected: "9".into(),
            actual: "10".into()
        }
    );
    assert_eq!(inv, before);
    cmd.conditions = vec![
        Condition::StockOnHand {
            item: "sku".into(),
            location: "w1".into(),
            on_hand: 10,
        },
        Condition::StockRevision {
            item: "sku".into(),
            location: "w1".into(),
            revision: 4,
        },
        Condition::StockAvailable {
            item: "sku".into(),
            location: "w1".into(),
            available: 10,
        },
        Condition::ItemRevision {
            item: "sku".into(),
            revision: 1,
        },
    ];
    inv.apply(&cmd, &ctx(5, 2_000)).result.unwrap();
    // The revision moved on, so the same conditions now fail.
    assert!(matches!(
        inv.apply(&cmd, &ctx(6, 2_000)).result,
        Err(DomainError::ConditionFailed { .. })
    ));
}

#[test]
fn idempotent_retry_returns_first_result_and_reuse_is_refused() {
    let mut inv = seeded();
    let cmd = Command::single(receive("sku", "w2", 5));
    let key = IdempotencyKey {
        key: "k1".into(),
        fingerprint: 42,
    };
    let c = ApplyCtx {
        revision: 5,
        time_ms: 2_000,
        idempotency: Some(key.clone()),
    };
    let first = inv.apply(&cmd, &c).result.unwrap();
    let after_first = inv.clone();
    let (retry, retry_touched) = inv.apply_touching(
        &cmd,
        &ApplyCtx {
            revision: 9,
            ..c.clone()
        },
    );
    assert!(retry_touched.is_empty());
    // The movements are not kept twice: the caller reads them back from the ledger.
    assert_eq!(retry.replay_movements, Some((5, 1)));
    let retry = retry.result.unwrap();
    assert!(retry.replayed);
    assert!(retry.movements.is_empty());
    assert_eq!(
        Outcome {
            replayed: false,
            movements: first.movements.clone(),
            ..retry
        },
        first
    );
    assert_eq!(inv, after_first);
    let other = ApplyCtx {
        revision: 10,
        time_ms: 2_000,
        idempotency: Some(IdempotencyKey {
            key: "k1".into(),
            fingerprint: 7,
        }),
    };
    assert_eq!(
        inv.apply(&cmd, &other).result.unwrap_err(),
        DomainError::IdempotencyKeyReused("k1".into())
    );
}

#[test]
fn failed_command_does_not_consume_its_key() {
    let mut inv = seeded();
    let cmd = Command::single(Op::Ship {
        item: "sku".into(),
        location: "w1".into(),
        quantity: 11,
        to: String::new(),
        reason: String::new(),
        reference: String::new(),
    });
    let c = ApplyCtx {
        revision: 5,
        time_ms: 2_000,
        idempotency: Some(IdempotencyKey {
            key: "k".into(),
            fingerprint: 1,
        }),
    };
    assert!(inv.apply(&cmd, &c).result.is_err());
    inv.apply(&Command::single(receive("sku", "w1", 1)), &ctx(6, 2_000))
        .result
        .unwrap();
    let out = inv
        .apply(&cmd, &ApplyCtx { revision: 7, ..c })
        .result
        .unwrap();
    assert!(!out.replayed);
}

#[test]
fn idempotency_keys_are_forgotten_after_retention() {
    let mut inv = seeded();
    let c = ApplyCtx {
        revision: 5,
        time_ms: 2_000,
        idempotency: Some(IdempotencyKey {
            key: "k".into(),
            fingerprint: 1,
        }),
    };
    inv.apply(&Command::single(receive("sku", "w1", 1)), &c)
        .result
        .unwrap();
    let later = 2_000 + limits::IDEMPOTENCY_RETENTION_MS + 1;
    let (_, touched) = inv.apply_touching(&Command::single(Op::ExpireDue), &ctx(6, later));
    assert!(touched.contains(&Key::Idempotency("k".into())));
    assert!(inv.record(&Key::Idempotency("k".into())).is_none());
    inv.check_invariants().unwrap();
}

#[test]
fn static_validation_names_the_field() {
    let long = "x".repeat(limits::MAX_ID_BYTES + 1);
    let cases: Vec<(Op, &str)> = vec![
        (create_item(""), "id"),
        (create_item(&long), "id"),
        (create_item("bad id"), "id"),
        (receive("sku", "w1", 0), "quantity"),
        (receive("sku", "w1", -5), "quantity"),
        (receive("sku", "w1", limits::MAX_QUANTITY + 1), "quantity"),
        (
            Op::Transfer {
                item: "sku".into(),
                from: "w1".into(),
                to: "w1".into(),
                quantity: 1,
                reason: String::new(),
                reference: String::new(),
            },
            "to",
        ),
        (
            Op::Reserve {
                id: String::new(),
                item: "sku".into(),
                location: "w1".into(),
                quantity: 1,
                ttl_ms: 0,
                reference: String::new(),
            },
            "ttl_ms",
        ),
        (
            Op::Adjust {
                item: "sku".into(),
                location: "w1".into(),
                delta: 0,
                counterpart: String::new(),
                reason: "x".into(),
                reference: String::new(),
            },
            "delta",
        ),
        (
            Op::Adjust {
                item: "sku".into(),
                location: "w1".into(),
                delta: i64::MIN,
                counterpart: String::new(),
                reason: "x".into(),
                reference: String::new(),
            },
            "delta",
        ),
        (
            Op::CreateLocation {
                id: "l".into(),
                name: "a\u{0}b".into(),
                kind: LocationKind::Store,
            },
            "name",
        ),
    ];
    for (op, field) in cases {
        match Command::single(op.clone()).validate() {
            Err(DomainError::Invalid { field: f, .. }) => assert_eq!(f, field, "{op:?}"),
            other => panic!("{op:?} gave {other:?}"),
        }
    }
    let mut attrs = BTreeMap::new();
    for i in 0..=limits::MAX_ATTRIBUTES {
        attrs.insert(format!("k{i}"), "v".into());
    }
    let op = Op::CreateItem {
        id: "a".into(),
        name: "a".into(),
        unit: "u".into(),
        attributes: attrs,
        low_stock_threshold: 0,
    };
    assert!(
        matches!(Command::single(op).validate(), Err(DomainError::Invalid { field, .. }) if field == "attributes")
    );
    let big = Command {
        ops: vec![create_item("a"); limits::MAX_BATCH_OPS + 1],
        conditions: vec![],
    };
    assert_eq!(
        big.validate().unwrap_err().class(),
        ErrorClass::ResourceExhausted
    );
    assert!(Command {
        ops: vec![],
        conditions: vec![]
    }
    .validate()
    .is_err());
}

#[test]
fn unknown_references_are_not_found() {
    let mut inv = seeded();
    assert_eq!(
        run(&mut inv, 5, receive("nope", "w1", 1)).unwrap_err(),
        DomainError::ItemNotFound("nope".into())
    );
    assert_eq!(
        run(&mut inv, 5, receive("sku", "nowhere", 1)).unwrap_err(),
        DomainError::LocationNotFound("nowhere".into())
    );
    assert_eq!(
        run(
            &mut inv,
            5,
            Op::Release {
                id: "r".into(),
                reason: String::new()
            }
        )
        .unwrap_err(),
        DomainError::ReservationNotFound("r".into())
    );
    assert_eq!(
        run(&mut inv, 5, create_item("sku")).unwrap_err().class(),
        ErrorClass::AlreadyExists
    );
}

#[test]
fn records_round_trip() {
    let mut inv = seeded();
    run(
        &mut inv,
        5,
        Op::Reserve {
            id: "r".into(),
            item: "sku".into(),
            location: "w1".into(),
            quantity: 2,
            ttl_ms: 50,
            reference: String::new(),
        },
    )
    .unwrap();
    let back = Inventory::from_records(inv.records()).unwrap();
    assert_eq!(back, inv);
}

#[test]
fn loading_a_state_that_breaks_a_rule_is_refused() {
    let inv = seeded();
    let records: Vec<Record> = inv
        .records()
        .map(|r| match r {
            Record::Stock {
                item,
                location,
                mut level,
            } if location == "w1" => {
                level.on_hand += 1;
                Record::Stock {
                    item,
                    location,
                    level,
                }
            }
            r => r,
        })
        .collect();
    let err = Inventory::from_records(records).unwrap_err();
    assert!(err.contains("rule 2"), "{err}");
}

#[test]
fn a_copy_for_snapshot_keeps_its_moment_while_the_state_moves_on() {
    let mut inv = seeded();
    let keyed = |revision: u64, time_ms: u64, key: &str| ApplyCtx {
        revision,
        time_ms,
        idempotency: Some(IdempotencyKey {
            key: key.into(),
            fingerprint: revision,
        }),
    };
    for (n, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
        let rev = 5 + n as u64;
        inv.apply(
            &Command::single(receive("sku", "w2", 1)),
            &keyed(rev, 2_000, key),
        )
        .result
        .unwrap();
    }
    let then: Vec<Record> = inv.records().collect();
    let copy = inv.copy_for_snapshot();

    // The state moves on: a new key, a new level, and every old key expired.
    inv.apply(
        &Command::single(receive("sku", "w1", 2)),
        &keyed(9, 3_000, "k4"),
    )
    .result
    .unwrap();
    let later = 3_000 + super::limits::IDEMPOTENCY_RETENTION_MS;
    inv.apply(&Command::single(Op::ExpireDue), &ctx(10, later))
        .result
        .unwrap();
    let now: Vec<Record> = inv.records().collect();
    assert_ne!(now, then);
    assert!(
        !now.iter()
            .any(|r| matches!(r, Record::Idempotency { key, .. } if key == "k1")),
        "k1 expired from the state"
    );

    let by_ref: Vec<Record> = copy.records_ref().map(|r| r.to_record()).collect();
    assert_eq!(by_ref, then, "the borrowed walk gives the same records");
    assert!(copy
        .records_ref()
        .all(|r| !matches!(r, RecordRef::Whole(Record::Idempotency { .. }))));
    assert_eq!(copy.into_records().collect::<Vec<_>>(), then);
    assert_eq!(
        inv.copy_for_snapshot().into_records().collect::<Vec<_>>(),
        now
    );
    inv.check_invariants().unwrap();
}

// ---- property tests ---------------------------------------------------------------------

const ITEMS: [&str; 2] = ["a", "b"];
const REALS: [&str; 2] = ["w1", "w2"];
const ALL_LOCS: [&str; 4] = ["w1", "w2", SUPPLIER, CUSTOMER];
const RES_IDS: [&str; 3] = ["r0", "r1", "r2"];

fn arb_op() -> impl Strategy<Value = Op> {
    let item = prop::sample::select(&ITEMS[..]).prop_map(String::from);
    let loc = prop::sample::select(&ALL_LOCS[..]).prop_map(String::from);
    let real = prop::sample::select(&REALS[..]).prop_map(String::from);
    let rid = prop::sample::select(&RES_IDS[..]).prop_map(String::from);
    let qty = prop_oneof![1i64..6, Just(0i64), Just(-1i64)];
    prop_oneof![
        1 => item.clone().prop_map(|i| create_item(&i)),
        1 => real.clone().prop_map(|l| create_loc(&l)),
        4 => (item.clone(), loc.clone(), qty.clone()).prop_map(|(i, l, q)| receive(&i, &l, q)),
        3 => (item.clone(), loc.clone(), qty.clone()).prop_map(|(i, l, q)| Op::Ship { item: i, location: l, quantity: q, to: String::new(), reason: String::new(), reference: String::new() }),
        2 => (item.clone(), real.clone(), -6i64..6).prop_map(|(i, l, d)| Op::Adjust { item: i, location: l, delta: d, counterpart: String::new(), reason: "count".into(), reference: String::new() }),
        3 => (item.clone(), loc.clone(), loc.clone(), qty.clone()).prop_map(|(i, f, t, q)| Op::Transfer { item: i, from: f, to: t, quantity: q, reason: String::new(), reference: String::new() }),
        3 => (rid.clone(), item, real, qty, 1u64..50).prop_map(|(id, i, l, q, ttl)| Op::Reserve { id, item: i, location: l, quantity: q, ttl_ms: ttl, reference: String::new() }),
        2 => rid.clone().prop_map(|id| Op::Commit { id, to: String::new(), reason: String::new() }),
        2 => rid.prop_map(|id| Op::Release { id, reason: String::new() }),
        1 => Just(Op::ExpireDue),
    ]
}

#[derive(Debug, Clone)]
struct Step {
    cmd: Command,
    time_advance_ms: u64,
    key: Option<u8>,
}

fn arb_step() -> impl Strategy<Value = Step> {
    let cmd = prop_oneof![
        4 => arb_op().prop_map(Command::single),
        1 => prop::collection::vec(arb_op().prop_filter("no expire in batch", |o| o.is_client_op()), 2..4)
            .prop_map(|ops| Command { ops, conditions: vec![] }),
        1 => (arb_op(), prop::sample::select(&ITEMS[..]), prop::sample::select(&REALS[..]), 0i64..6)
            .prop_map(|(op, i, l, q)| Command { ops: vec![op], conditions: vec![Condition::StockOnHand { item: i.into(), location: l.into(), on_hand: q }] }),
    ];
    (cmd, 0u64..30, prop::option::weighted(0.3, 0u8..4)).prop_map(|(cmd, time_advance_ms, key)| {
        Step {
            cmd,
            time_advance_ms,
            key,
        }
    })
}

/// Replays the ledger from genesis into balances (rule 3).
fn replay(movements: &[Movement]) -> BTreeMap<(String, String), (i64, i64)> {
    let mut b: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for m in movements {
        let from = (m.item.clone(), m.from.clone());
        let to = (m.item.clone(), m.to.clone());
        match m.kind {
            MovementKind::Receive
            | MovementKind::Ship
            | MovementKind::Adjust
            | MovementKind::Transfer => {
                b.entry(from).or_default().0 -= m.quantity;
                b.entry(to).or_default().0 += m.quantity;
            }
            MovementKind::Commit => {
                let e = b.entry(from).or_default();
                e.0 -= m.quantity;
                e.1 -= m.quantity;
                b.entry(to).or_default().0 += m.quantity;
            }
            MovementKind::Reserve => b.entry(from).or_default().1 += m.quantity,
            MovementKind::Release | MovementKind::Expire => {
                b.entry(from).or_default().1 -= m.quantity
            }
        }
    }
    b.retain(|_, v| *v != (0, 0));
    b
}

fn balances(inv: &Inventory) -> BTreeMap<(String, String), (i64, i64)> {
    inv.records()
        .filter_map(|r| match r {
            Record::Stock {
                item,
                location,
                level,
            } if (level.on_hand, level.reserved) != (0, 0) => {
                Some(((item, location), (level.on_hand, level.reserved)))
            }
            _ => None,
        })
        .collect()
}

fn fingerprint(cmd: &Command) -> u64 {
    // Any deterministic hash of the command will do for the test.
    let s = format!("{cmd:?}");
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_rule_holds_after_every_step(steps in prop::collection::vec(arb_step(), 1..80)) {
        let mut inv = Inventory::genesis();
        for setup in [create_item("a"), create_loc("w1")] {
            inv.apply(&Command::single(setup), &ctx(1, 0)).result.ok();
        }
        let mut mirror: BTreeMap<Key, Record> = inv.records().map(|r| (r.key(), r)).collect();
        let mut ledger: Vec<Movement> = Vec::new();
        let mut first_result: BTreeMap<String, (Command, Outcome)> = BTreeMap::new();
        let mut ended: BTreeMap<String, u32> = BTreeMap::new();
        let mut time_ms = 1_000u64;
        for (i, step) in steps.iter().enumerate() {
            let revision = i as u64 + 10;
            time_ms += step.time_advance_ms;
            let idem = step.key.map(|k| IdempotencyKey { key: format!("key{k}"), fingerprint: fingerprint(&step.cmd) });
            let before = inv.clone();
            let copy = inv.copy_for_snapshot();
            let (applied, touched) = inv.apply_touching(&step.cmd, &ApplyCtx { revision, time_ms, idempotency: idem.clone() });
            // A snapshot's copy is the state as it was, whatever the apply (or its rollback) did.
            prop_assert_eq!(copy.into_records().collect::<Vec<_>>(), before.records().collect::<Vec<_>>());

            match &applied.result {
                Ok(out) if out.replayed => {
                    // Rule 4: a retry returns the first result and changes nothing.
                    let key = idem.as_ref().unwrap().key.clone();
                    let (cmd0, out0) = &first_result[&key];
                    prop_assert_eq!(cmd0, &step.cmd);
                    // The record keeps no copy of the movements: they are the ledger's at
                    // the outcome's revision, read back by the caller.
                    let (rev, n) = applied.replay_movements.expect("a new record refers to the ledger");
                    prop_assert!(out.movements.is_empty());
                    prop_assert_eq!(rev, out.revision);
                    let from_ledger: Vec<Movement> = ledger.iter().filter(|m| m.revision == rev).cloned().collect();
                    prop_assert_eq!(from_ledger.len(), n as usize);
                    prop_assert_eq!(&Outcome { replayed: false, movements: from_ledger, ..out.clone() }, out0);
                    prop_assert_eq!(&inv, &before);
                }
                Ok(out) => {
                    prop_assert_eq!(out.revision, revision);
                    for m in &out.movements {
                        prop_assert!(m.quantity > 0);
                        prop_assert_eq!(m.revision, revision);
                        if matches!(m.kind, MovementKind::Commit | MovementKind::Release | MovementKind::Expire) {
                            *ended.entry(m.reservation.clone()).or_default() += 1;
                        }
                    }
                    ledger.extend(out.movements.iter().cloned());
                    if let Some(k) = &idem {
                        first_result.insert(k.key.clone(), (step.cmd.clone(), out.clone()));
                    }
                }
                Err(DomainError::IdempotencyKeyReused(k)) => {
                    prop_assert!(first_result.get(k).map(|(c, _)| c != &step.cmd).unwrap_or(false));
                    prop_assert_eq!(&inv, &before);
                }
                Err(_) => {
                    // Rule 6 and the bad-input policy: a refused command changes nothing.
                    prop_assert_eq!(&inv, &before);
                    prop_assert!(touched.is_empty());
                }
            }

            // Storage contract: writing the touched keys keeps a mirror equal to the state.
            for key in &touched {
                match inv.record(key) {
                    Some(r) => { mirror.insert(key.clone(), r); }
                    None => { mirror.remove(key); }
                }
            }
            let full: BTreeMap<Key, Record> = inv.records().map(|r| (r.key(), r)).collect();
            prop_assert_eq!(&mirror, &full);

            // Rules 1, 2, 5 and index consistency.
            if let Err(e) = inv.check_invariants() { prop_assert!(false, "{}", e); }
            // Rule 3: the ledger explains the balances.
            prop_assert_eq!(replay(&ledger), balances(&inv));
            // Rule 5: no reservation ended twice, and every ended one was ended by a movement.
            for (id, n) in &ended {
                prop_assert_eq!(*n, 1, "reservation {} ended {} times", id, n);
                prop_assert!(inv.reservation(id).map(|r| r.state != ReservationState::Open).unwrap_or(false));
            }
        }
    }

    /// A node's snapshot file leaves the idempotency records older than its clock in files
    /// of their own and names the oldest one still live (`raft::idempotency_files`). That
    /// holds only if expiry removes records in `(time_ms, key)` order, each removed one
    /// before every one still held or made later, and no record is newer than the clock.
    #[test]
    fn expired_idempotency_records_sort_before_every_live_one(
        steps in prop::collection::vec((0usize..4, prop::bool::weighted(0.3), 0u8..40), 1..80)
    ) {
        let retention_ms = super::limits::IDEMPOTENCY_RETENTION_MS;
        let advances = [0, 1, retention_ms / 2, retention_ms];
        let held = |inv: &Inventory| -> BTreeMap<String, u64> {
            inv.records()
                .filter_map(|r| match r {
                    Record::Idempotency { key, record } => Some((key, record.time_ms)),
                    _ => None,
                })
                .collect()
        };
        let mut inv = Inventory::genesis();
        let mut time_ms = 1_000;
        let mut newest_removed: Option<(u64, String)> = None;
        for (i, (advance, expire, key)) in steps.iter().enumerate() {
            time_ms += advances[*advance];
            let before = held(&inv);
            let (op, idempotency) = if *expire {
                (Op::ExpireDue, None)
            } else {
                let key = IdempotencyKey { key: format!("k{key:02}"), fingerprint: i as u64 };
                (create_item(&format!("i{i}")), Some(key))
            };
            let ctx = ApplyCtx { revision: i as u64 + 1, time_ms, idempotency };
            let _ = inv.apply(&Command::single(op), &ctx);
            let after = held(&inv);
            for (key, t) in &before {
                if !after.contains_key(key) {
                    newest_removed = newest_removed.max(Some((*t, key.clone())));
                }
            }
            if let (Some(removed), Some(oldest)) =
                (&newest_removed, after.iter().map(|(k, t)| (*t, k.clone())).min())
            {
                prop_assert!(*removed < oldest, "{:?} removed, {:?} still held", removed, oldest);
            }
            if let Err(e) = inv.check_invariants() { prop_assert!(false, "{}", e); }

            // What a build reads through the copy's time index is what a scan finds.
            let copy = inv.copy_for_snapshot();
            let clock = inv.clock_ms();
            for before in [clock.saturating_sub(1), clock, clock + 1] {
                let older: Vec<(u64, &str)> = after
                    .iter()
                    .filter(|(_, t)| **t < before)
                    .map(|(k, t)| (*t, k.as_str()))
                    .collect();
                prop_assert_eq!(
                    copy.idempotency_older_than(before),
                    (older.len() as u64, older.iter().copied().min())
                );
                let from = before / 2;
                let mut between: Vec<&str> =
                    copy.idempotency_made_between(from, before).map(|(k, _)| k).collect();
                between.sort_unstable();
                let mut want: Vec<&str> =
                    older.iter().filter(|(t, _)| *t >= from).map(|(_, k)| *k).collect();
                want.sort_unstable();
                prop_assert_eq!(between, want);
                let kept = copy
                    .records_ref_from(before)
                    .filter(|r| matches!(r, RecordRef::Idempotency { .. }))
                    .count();
                prop_assert_eq!(kept, after.len() - older.len());
            }
        }
    }

    #[test]
    fn apply_is_deterministic(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut a = Inventory::genesis();
        let mut b = Inventory::genesis();
        let mut time_ms = 0;
        for (i, step) in steps.iter().enumerate() {
            time_ms += step.time_advance_ms;
            let c = ApplyCtx { revision: i as u64 + 1, time_ms, idempotency: None };
            let (ra, ta) = a.apply_touching(&step.cmd, &c);
            let (rb, tb) = b.apply_touching(&step.cmd, &c);
            prop_assert_eq!(ra.result, rb.result);
            prop_assert_eq!(ta, tb);
        }
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(Inventory::from_records(a.records()).unwrap(), a);
    }

    #[test]
    fn failed_commands_touch_no_key(steps in prop::collection::vec(arb_step(), 1..40)) {
        let mut inv = Inventory::genesis();
        for (i, step) in steps.iter().enumerate() {
            let (applied, touched) = inv.apply_touching(&step.cmd, &ctx(i as u64 + 1, 0));
            // The mirror check in `every_rule_holds_after_every_step` covers successes.
            if applied.result.is_err() {
                prop_assert!(touched.is_empty());
            }
        }
    }
}
