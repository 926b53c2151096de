//! The Laundry List fault-injection suite. So far: the history format, the
//! linearizability checker for the `register` workload and the inventory checker, each
//! tested on hand-written valid and invalid inputs. The runner (real node processes in
//! network namespaces), the workloads and the nemeses are still to come.
//!
//! - `history`: the JSON-lines event log and pairing of invocations with completions.
//! - `linearizability`: Wing–Gong search per key over a compare-and-set register.
//! - `inventory`: the brief's rules over replica end states and acknowledged operations.
//! - `hosts`: network-namespace test hosts on a bridge, made and torn down every run.
//! - `campaign`: nodes in the hosts, the register workload, the kill nemesis, the history.

pub mod campaign;
pub mod history;
pub mod hosts;
pub mod inventory;
pub mod linearizability;
