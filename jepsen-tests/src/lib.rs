//! The Laundry List fault-injection suite. So far: the history format, the
//! linearizability checker for the `register` workload and the inventory checker, each
//! tested on hand-written valid and invalid inputs; real node processes in network
//! namespaces under the register workload and a schedule of nemeses.
//!
//! - `history`: the JSON-lines event log and pairing of invocations with completions.
//! - `linearizability`: Wing–Gong search per key over a compare-and-set register.
//! - `inventory`: the brief's rules over replica end states and acknowledged operations.
//! - `hosts`: network-namespace test hosts on a bridge, made and torn down every run.
//! - `campaign`: nodes in the hosts, the register workload, nemeses on a schedule, the
//!   history, the recovery check.
//! - `inventory_workload`: receive/ship/transfer/reserve/commit/release under the nemeses,
//!   then every replica read and checked by `inventory`.
//! - `nemesis`: kill, pause and four partition shapes (nftables in the hosts' namespaces).
//! - `watch`: a watcher's stream against the final ledger (once, in order, no gaps).
//! - `plot`: latency and throughput over time with the faults shaded (SVG).

pub mod campaign;
pub mod history;
pub mod hosts;
pub mod inventory;
pub mod inventory_workload;
pub mod linearizability;
pub mod nemesis;
pub mod plot;
pub mod watch;
