//! The inventory checker: after a run has healed, the final state of every replica and the
//! acknowledged operations are checked against the brief's rules.
//!
//! The workload puts each operation's idempotency key in the movement's `reference`, so
//! the ledger itself tells which operations applied and how often. A reservation's ending
//! movements (commit, release, expire) carry the reservation's reference, not the ending
//! request's key, so they are matched by reservation id instead.
//!
//! Rules checked: (1) on_hand >= 0 and 0 <= reserved <= on_hand at real locations;
//! (2) per item, all balances (virtual included) sum to zero; (3) replaying the ledger
//! gives exactly the balances; (4) each idempotency key applied at most once (its
//! movements all carry one revision); (5) each reservation ended at most once;
//! (7) every acknowledged operation is in the ledger at its acknowledged revision, and all
//! replicas are identical.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub revision: u64,
    pub seq: u32,
    /// receive, ship, adjust, transfer, reserve, commit, release, expire
    pub kind: String,
    pub item: String,
    pub from: String,
    pub to: String,
    pub quantity: i64,
    pub reference: String,
    pub reservation: String,
}

/// One replica's state after the run, read with stale reads from that node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    pub node: u64,
    /// (item, location) -> (on_hand, reserved)
    pub balances: BTreeMap<(String, String), (i64, i64)>,
    pub real_locations: BTreeSet<String>,
    pub movements: Vec<Movement>,
}

/// An operation the client saw succeed: its idempotency key and the revision returned;
/// for a commit or release, the reservation it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub key: String,
    pub revision: u64,
    #[serde(default)]
    pub ends_reservation: String,
}

fn is_ending(kind: &str) -> bool {
    matches!(kind, "commit" | "release" | "expire")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Violation {
    NegativeOrOverReserved {
        node: u64,
        item: String,
        location: String,
        on_hand: i64,
        reserved: i64,
    },
    NotConserved {
        node: u64,
        item: String,
        sum: i64,
    },
    LedgerDisagrees {
        node: u64,
        item: String,
        location: String,
        ledger: (i64, i64),
        balance: (i64, i64),
    },
    AppliedTwice {
        node: u64,
        key: String,
        revisions: Vec<u64>,
    },
    EndedTwice {
        node: u64,
        reservation: String,
        endings: usize,
    },
    LostAck {
        node: u64,
        key: String,
        acknowledged_revision: u64,
        found: Option<u64>,
    },
    ReplicasDiffer {
        a: u64,
        b: u64,
        first_difference: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub valid: bool,
    pub violations: Vec<Violation>,
}

fn replay(movements: &[Movement]) -> BTreeMap<(String, String), (i64, i64)> {
    let mut b: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for m in movements {
        let (from, to) = (
            (m.item.clone(), m.from.clone()),
            (m.item.clone(), m.to.clone()),
        );
        match m.kind.as_str() {
            "reserve" => b.entry(from).or_default().1 += m.quantity,
            "release" | "expire" => b.entry(from).or_default().1 -= m.quantity,
            "commit" => {
                let e = b.entry(from).or_default();
                e.0 -= m.quantity;
                e.1 -= m.quantity;
                b.entry(to).or_default().0 += m.quantity;
            }
            _ => {
                b.entry(from).or_default().0 -= m.quantity;
                b.entry(to).or_default().0 += m.quantity;
            }
        }
    }
    b.retain(|_, v| *v != (0, 0));
    b
}

fn check_replica(r: &Replica, acks: &[Ack], out: &mut Vec<Violation>) {
    let node = r.node;
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for ((item, location), &(on_hand, reserved)) in &r.balances {
        if r.real_locations.contains(location)
            && (on_hand < 0 || reserved < 0 || reserved > on_hand)
        {
            out.push(Violation::NegativeOrOverReserved {
                node,
                item: item.clone(),
                location: location.clone(),
                on_hand,
                reserved,
            });
        }
        *sums.entry(item).or_default() += on_hand;
    }
    for (item, sum) in sums.into_iter().filter(|(_, s)| *s != 0) {
        out.push(Violation::NotConserved {
            node,
            item: item.to_string(),
            sum,
        });
    }
    let ledger = replay(&r.movements);
    let balances: BTreeMap<_, _> = r
        .balances
        .iter()
        .filter(|(_, v)| **v != (0, 0))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for key in ledger
        .keys()
        .chain(balances.keys())
        .collect::<BTreeSet<_>>()
    {
        let (l, b) = (
            ledger.get(key).copied().unwrap_or((0, 0)),
            balances.get(key).copied().unwrap_or((0, 0)),
        );
        if l != b {
            out.push(Violation::LedgerDisagrees {
                node,
                item: key.0.clone(),
                location: key.1.clone(),
                ledger: l,
                balance: b,
            });
        }
    }
    let mut by_key: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    let mut endings: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ended_at: BTreeMap<&str, u64> = BTreeMap::new();
    for m in &r.movements {
        if is_ending(&m.kind) {
            *endings.entry(&m.reservation).or_default() += 1;
            ended_at.insert(&m.reservation, m.revision);
        } else if !m.reference.is_empty() {
            by_key.entry(&m.reference).or_default().insert(m.revision);
        }
    }
    for (key, revs) in by_key.iter().filter(|(_, r)| r.len() > 1) {
        out.push(Violation::AppliedTwice {
            node,
            key: key.to_string(),
            revisions: revs.iter().copied().collect(),
        });
    }
    for (res, n) in endings.into_iter().filter(|(_, n)| *n > 1) {
        out.push(Violation::EndedTwice {
            node,
            reservation: res.to_string(),
            endings: n,
        });
    }
    for ack in acks {
        let found = if ack.ends_reservation.is_empty() {
            by_key
                .get(ack.key.as_str())
                .and_then(|r| r.iter().next().copied())
        } else {
            ended_at.get(ack.ends_reservation.as_str()).copied()
        };
        if found != Some(ack.revision) {
            out.push(Violation::LostAck {
                node,
                key: ack.key.clone(),
                acknowledged_revision: ack.revision,
                found,
            });
        }
    }
}

pub fn check(acks: &[Ack], replicas: &[Replica]) -> Report {
    let mut violations = Vec::new();
    for r in replicas {
        check_replica(r, acks, &mut violations);
    }
    for pair in replicas.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let diff = if a.balances != b.balances {
            let k = a
                .balances
                .keys()
                .chain(b.balances.keys())
                .find(|k| a.balances.get(*k) != b.balances.get(*k));
            Some(format!("balance of {k:?}"))
        } else if a.movements != b.movements {
            let i = a
                .movements
                .iter()
                .zip(&b.movements)
                .position(|(x, y)| x != y)
                .unwrap_or(a.movements.len().min(b.movements.len()));
            Some(format!("ledger entry {i}"))
        } else {
            None
        };
        if let Some(first_difference) = diff {
            violations.push(Violation::ReplicasDiffer {
                a: a.node,
                b: b.node,
                first_difference,
            });
        }
    }
    Report {
        valid: violations.is_empty(),
        violations,
    }
}
