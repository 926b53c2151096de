//! The history a test run records: one JSON object per line, Jepsen-style.
//!
//! ```text
//! {"process":3,"type":"invoke","f":"cas","key":"k1","value":[1,2],"time_ns":1200}
//! {"process":3,"type":"ok","f":"cas","key":"k1","value":[1,2],"time_ns":1900}
//! ```
//!
//! `type` is `invoke`, then one of `ok` (it happened), `fail` (it certainly did not) or
//! `info` (unknown: a timeout; it may have happened, at any time after the invocation).
//! A process has at most one operation in flight.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum F {
    Read,
    Write,
    Cas,
    // The inventory workload's operations (never in a register history).
    Receive,
    Ship,
    Transfer,
    Reserve,
    Commit,
    Release,
}

impl F {
    fn is_register(self) -> bool {
        matches!(self, F::Read | F::Write | F::Cas)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub f: F,
    pub key: String,
    /// read: the value read (on completion; null if the register was never written);
    /// write: the value; cas: `[expected, new]`.
    #[serde(default)]
    pub value: serde_json::Value,
    pub time_ns: u64,
}

/// What a register operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOp {
    /// Read and saw this value (`None`: never written).
    Read(Option<i64>),
    Write(i64),
    Cas {
        expect: i64,
        new: i64,
    },
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Position of the invocation in the history, for reporting.
    pub index: usize,
    pub process: u64,
    pub key: String,
    pub op: RegOp,
    pub invoke_ns: u64,
    /// `None` for an indeterminate (info) operation: it may take effect at any later time.
    pub complete_ns: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HistoryError {
    #[error("line {line}: {reason}")]
    Parse { line: usize, reason: String },
    #[error("event {index}: process {process} completes an operation it never invoked")]
    Orphan { index: usize, process: u64 },
    #[error("event {index}: process {process} invokes while its previous operation is in flight")]
    Overlap { index: usize, process: u64 },
    #[error("event {index}: bad value for {f:?}: {value}")]
    Value { index: usize, f: F, value: String },
}

pub fn parse_jsonl(text: &str) -> Result<Vec<Event>, HistoryError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| HistoryError::Parse {
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn int(v: &serde_json::Value) -> Option<i64> {
    v.as_i64()
}

/// The write or CAS an invocation asks for; `None` when its value is malformed.
fn mutation(inv: &Event) -> Option<RegOp> {
    match inv.f {
        F::Write => Some(RegOp::Write(int(&inv.value)?)),
        F::Cas => {
            let pair = inv.value.as_array().filter(|a| a.len() == 2)?;
            Some(RegOp::Cas {
                expect: int(&pair[0])?,
                new: int(&pair[1])?,
            })
        }
        _ => None,
    }
}

/// Pairs invocations with completions. Failed operations are dropped (they did not
/// happen); operations still in flight at the end count as indeterminate.
pub fn operations(events: &[Event]) -> Result<Vec<Operation>, HistoryError> {
    let mut open: BTreeMap<u64, (usize, &Event)> = BTreeMap::new();
    let mut out = Vec::new();
    let bad = |index: usize, e: &Event| HistoryError::Value {
        index,
        f: e.f,
        value: e.value.to_string(),
    };
    for (index, e) in events.iter().enumerate() {
        if !e.f.is_register() {
            return Err(bad(index, e));
        }
        match e.kind {
            EventType::Invoke => {
                if open.insert(e.process, (index, e)).is_some() {
                    return Err(HistoryError::Overlap {
                        index,
                        process: e.process,
                    });
                }
            }
            kind => {
                let (inv_index, inv) = open.remove(&e.process).ok_or(HistoryError::Orphan {
                    index,
                    process: e.process,
                })?;
                if kind == EventType::Fail {
                    continue;
                }
                let op = match e.f {
                    F::Read if kind == EventType::Info => continue, // an unknown read constrains nothing
                    F::Read => RegOp::Read(if e.value.is_null() {
                        None
                    } else {
                        Some(int(&e.value).ok_or_else(|| bad(index, e))?)
                    }),
                    _ => mutation(inv).ok_or_else(|| bad(inv_index, inv))?,
                };
                let complete_ns = (kind == EventType::Ok).then_some(e.time_ns);
                out.push(Operation {
                    index: inv_index,
                    process: e.process,
                    key: inv.key.clone(),
                    op,
                    invoke_ns: inv.time_ns,
                    complete_ns,
                });
            }
        }
    }
    for (_, (index, inv)) in open {
        let op = match inv.f {
            F::Read => continue,
            _ => mutation(inv).ok_or_else(|| bad(index, inv))?,
        };
        out.push(Operation {
            index,
            process: inv.process,
            key: inv.key.clone(),
            op,
            invoke_ns: inv.time_ns,
            complete_ns: None,
        });
    }
    out.sort_by_key(|o| o.index);
    Ok(out)
}
