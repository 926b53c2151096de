//! The Laundry List store node as a library, so integration tests and tools can reach its
//! parts. The binary in `main.rs` only parses the command line and calls [`node::run`].

pub mod admin;
pub mod backup;
pub mod config;
pub mod inventory;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod server;
pub mod storage;
pub mod tls;
