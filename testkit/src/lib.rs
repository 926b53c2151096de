//! Test support shared by the process-level tests of `laundry-node` and `laundry-api` and
//! by the fault-injection suite, so they start nodes the same way:
//!
//! - `ports`: free ports below the kernel's ephemeral range.
//! - `node`: a node's addresses, the member list, and the `laundry-node` command line.
//! - `certs`: a test CA and certificates signed by it.

pub mod certs;
pub mod node;
pub mod ports;
