//! Linearizability of compare-and-set registers, checked per key (registers are
//! independent, so a history is linearizable iff each key's sub-history is).
//!
//! The search is Wing & Gong's, with memoization of (linearized set, register value): at
//! each step any pending operation invoked before the earliest completion among pending
//! operations may take effect next. An indeterminate operation (timed out) has no
//! completion, so it never forces an order and may be left out entirely. The search is
//! bounded by a state budget; running out gives "unknown", never "valid".
//!
//! For an invalid key the counterexample is the shortest prefix (by completion time) that
//! is already not linearizable, and the operation whose completion made it so.

use crate::history::{Operation, RegOp};
use std::collections::{BTreeMap, HashSet};

/// Most operations on one key the checker accepts; longer sub-histories are "unknown".
pub const MAX_OPS_PER_KEY: usize = 2_048;

#[derive(Debug, Clone, PartialEq)]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable {
        /// The shortest failing prefix of this key's operations.
        prefix: Vec<Operation>,
        /// The completed operation that cannot be placed.
        culprit: Operation,
    },
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `Some(true)` only if every key was proven linearizable.
    pub valid: Option<bool>,
    pub keys: BTreeMap<String, KeyVerdict>,
}

pub fn check(ops: &[Operation], state_budget: usize) -> Report {
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for o in ops {
        by_key.entry(&o.key).or_default().push(o.clone());
    }
    let mut keys = BTreeMap::new();
    for (key, ops) in by_key {
        keys.insert(key.to_string(), check_key(&ops, state_budget));
    }
    let valid = if keys
        .values()
        .any(|v| matches!(v, KeyVerdict::NotLinearizable { .. }))
    {
        Some(false)
    } else if keys.values().all(|v| *v == KeyVerdict::Linearizable) {
        Some(true)
    } else {
        None
    };
    Report { valid, keys }
}

enum Search {
    Found,
    Impossible,
    OutOfBudget,
}

fn check_key(ops: &[Operation], budget: usize) -> KeyVerdict {
    if ops.len() > MAX_OPS_PER_KEY {
        return check_prefix(ops, budget);
    }
    match search(ops, budget) {
        Search::Found => KeyVerdict::Linearizable,
        Search::OutOfBudget => KeyVerdict::Unknown(format!("search exceeded {budget} states")),
        Search::Impossible => minimal_counterexample(ops, budget),
    }
}

/// A key with more than `MAX_OPS_PER_KEY` operations: only the history as it stood just
/// before the first operation past the limit was invoked is checked. Linearizability is
/// prefix-closed, so a prefix that is not linearizable proves the whole is not (a faster
/// node gives a key more operations, and a planted fault still has to be caught); one that
/// is proves nothing about the rest, which stays unknown.
fn check_prefix(ops: &[Operation], budget: usize) -> KeyVerdict {
    let mut invoked: Vec<u64> = ops.iter().map(|o| o.invoke_ns).collect();
    invoked.sort_unstable();
    let cut = invoked[MAX_OPS_PER_KEY].saturating_sub(1);
    let prefix = truncate(ops, cut);
    debug_assert!(prefix.len() <= MAX_OPS_PER_KEY);
    let unknown = |why: &str| {
        KeyVerdict::Unknown(format!(
            "{} operations on one key exceeds {MAX_OPS_PER_KEY}; the first {} {why}",
            ops.len(),
            prefix.len()
        ))
    };
    match search(&prefix, budget) {
        Search::Impossible => minimal_counterexample(&prefix, budget),
        Search::Found => unknown("are linearizable"),
        Search::OutOfBudget => unknown(&format!("exceeded {budget} states")),
    }
}

/// The history as it stood at time `t`: later invocations vanish, later completions
/// become unknown (reads then constrain nothing and are dropped).
fn truncate(ops: &[Operation], t: u64) -> Vec<Operation> {
    ops.iter()
        .filter(|o| o.invoke_ns <= t)
        .filter_map(|o| match o.complete_ns {
            Some(c) if c <= t => Some(o.clone()),
            _ if matches!(o.op, RegOp::Read(_)) => None,
            _ => Some(Operation {
                complete_ns: None,
                ..o.clone()
            }),
        })
        .collect()
}

fn minimal_counterexample(ops: &[Operation], budget: usize) -> KeyVerdict {
    let mut times: Vec<u64> = ops.iter().filter_map(|o| o.complete_ns).collect();
    times.sort_unstable();
    times.dedup();
    // Linearizability is prefix-closed, so the first failing cut is found by bisection.
    let (mut lo, mut hi) = (0usize, times.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match search(&truncate(ops, times[mid]), budget) {
            Search::Impossible => hi = mid,
            _ => lo = mid + 1,
        }
    }
    let cut = times[lo];
    let prefix = truncate(ops, cut);
    let culprit = ops
        .iter()
        .find(|o| o.complete_ns == Some(cut))
        .cloned()
        .expect("a completion at the cut");
    KeyVerdict::NotLinearizable { prefix, culprit }
}

fn apply(op: &RegOp, value: Option<i64>) -> Option<Option<i64>> {
    match *op {
        RegOp::Read(seen) => (seen == value).then_some(value),
        RegOp::Write(v) => Some(Some(v)),
        RegOp::Cas { expect, new } => (value == Some(expect)).then_some(Some(new)),
    }
}

fn search(ops: &[Operation], budget: usize) -> Search {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let must: usize = ops.iter().filter(|o| o.complete_ns.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    // Explicit stack: (linearized set, register value, completed ops linearized).
    let mut stack: Vec<(Vec<u64>, Option<i64>, usize)> = vec![(vec![0; words], None, 0)];
    let mut visited = 0usize;
    while let Some((done, value, completed)) = stack.pop() {
        if completed == must {
            return Search::Found;
        }
        visited += 1;
        if visited > budget {
            return Search::OutOfBudget;
        }
        let is_done = |i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .filter_map(|i| ops[i].complete_ns)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|&i| !is_done(i) && ops[i].invoke_ns <= horizon) {
            let Some(next) = apply(&ops[i].op, value) else {
                continue;
            };
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if seen.insert((d.clone(), next)) {
                stack.push((
                    d,
                    next,
                    completed + usize::from(ops[i].complete_ns.is_some()),
                ));
            }
        }
    }
    Search::Impossible
}
