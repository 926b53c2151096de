//! The Laundry List fault-injection suite. So far: the history format and the
//! linearizability checker for the `register` workload, each tested on hand-written valid
//! and invalid histories. The runner (real node processes in network namespaces), the
//! nemeses and the inventory checker are still to come.
//!
//! - `history`: the JSON-lines event log and pairing of invocations with completions.
//! - `linearizability`: Wing–Gong search per key over a compare-and-set register.

pub mod history;
pub mod linearizability;
