//! The inventory checker accepts a consistent end state and catches each kind of violation
//! when one is planted.

use laundry_jepsen::inventory::{check, Ack, Movement, Replica, Violation};
use std::collections::{BTreeMap, BTreeSet};

fn mv(
    revision: u64,
    kind: &str,
    from: &str,
    to: &str,
    q: i64,
    reference: &str,
    reservation: &str,
) -> Movement {
    Movement {
        revision,
        seq: 0,
        kind: kind.into(),
        item: "sku".into(),
        from: from.into(),
        to: to.into(),
        quantity: q,
        reference: reference.into(),
        reservation: reservation.into(),
    }
}

/// receive 10 at w1 (k1), transfer 3 to w2 (k2), reserve 2 at w1 (k3), commit it (k4). As
/// the node records it, the commit movement carries the reservation's reference (k3).
fn good(node: u64) -> Replica {
    let movements = vec![
        mv(5, "receive", "supplier", "w1", 10, "k1", ""),
        mv(6, "transfer", "w1", "w2", 3, "k2", ""),
        mv(7, "reserve", "w1", "w1", 2, "k3", "r1"),
        mv(8, "commit", "w1", "customer", 2, "k3", "r1"),
    ];
    let mut balances = BTreeMap::new();
    balances.insert(("sku".to_string(), "supplier".to_string()), (-10, 0));
    balances.insert(("sku".to_string(), "w1".to_string()), (5, 0));
    balances.insert(("sku".to_string(), "w2".to_string()), (3, 0));
    balances.insert(("sku".to_string(), "customer".to_string()), (2, 0));
    let real_locations: BTreeSet<String> = ["w1", "w2"].iter().map(|s| s.to_string()).collect();
    Replica {
        node,
        balances,
        real_locations,
        movements,
    }
}

fn acks() -> Vec<Ack> {
    [("k1", 5, ""), ("k2", 6, ""), ("k3", 7, ""), ("k4", 8, "r1")]
        .iter()
        .map(|(k, r, ends)| Ack {
            key: k.to_string(),
            revision: *r,
            ends_reservation: ends.to_string(),
        })
        .collect()
}

#[test]
fn a_consistent_run_is_valid() {
    let r = check(&acks(), &[good(1), good(2), good(3)]);
    assert!(r.valid, "{r:?}");
}

/// Mutates a good replica and its acknowledgements to plant one violation.
type Plant = Box<dyn Fn(&mut Replica, &mut Vec<Ack>)>;

#[test]
fn every_planted_violation_is_caught() {
    let key = |l: &str| ("sku".to_string(), l.to_string());
    let kind_of = |v: &Violation| {
        format!("{v:?}")
            .split([' ', '{'])
            .next()
            .unwrap()
            .to_string()
    };
    let cases: Vec<(&str, Plant)> = vec![
        (
            "NegativeOrOverReserved",
            Box::new(move |r, _| {
                r.balances.insert(key("w2"), (3, 4));
                r.movements
                    .push(mv(9, "reserve", "w2", "w2", 4, "k9", "r9"));
            }),
        ),
        (
            "NotConserved",
            Box::new(move |r, _| {
                r.balances.insert(key("w2"), (4, 0));
            }),
        ),
        (
            "LedgerDisagrees",
            Box::new(move |r, _| {
                r.movements.pop();
            }),
        ),
        (
            "AppliedTwice",
            Box::new(move |r, _| {
                r.movements.push(mv(9, "transfer", "w2", "w1", 3, "k2", ""));
                r.movements
                    .push(mv(10, "transfer", "w1", "w2", 3, "k2", ""));
            }),
        ),
        (
            "EndedTwice",
            Box::new(move |r, _| {
                r.movements
                    .push(mv(9, "release", "w1", "w1", 2, "k9", "r1"));
                r.movements
                    .push(mv(10, "reserve", "w1", "w1", 2, "k10", "r2"));
            }),
        ),
        (
            "LostAck",
            Box::new(move |_, acks| {
                acks.push(Ack {
                    key: "k-never-applied".into(),
                    revision: 11,
                    ends_reservation: String::new(),
                });
            }),
        ),
        (
            "LostAck",
            Box::new(move |_, acks| {
                // A release acknowledged for a reservation the ledger never ended.
                acks.push(Ack {
                    key: "k-release".into(),
                    revision: 12,
                    ends_reservation: "r-never-ended".into(),
                });
            }),
        ),
    ];
    for (expected, plant) in cases {
        let mut bad = good(1);
        let mut a = acks();
        plant(&mut bad, &mut a);
        let r = check(&a, &[bad]);
        assert!(!r.valid, "{expected} not caught");
        assert!(
            r.violations.iter().any(|v| kind_of(v) == expected),
            "{expected} expected, got {:?}",
            r.violations
        );
    }
    // Replicas that diverge.
    let mut other = good(2);
    other.movements[1].quantity = 4;
    other.balances.insert(key("w1"), (4, 0));
    other.balances.insert(key("w2"), (4, 0));
    let r = check(&acks(), &[good(1), other]);
    assert!(
        r.violations
            .iter()
            .any(|v| matches!(v, Violation::ReplicasDiffer { a: 1, b: 2, .. })),
        "{:?}",
        r.violations
    );
}
