//! The node's gRPC services. `inventory` serves the public API on the client port; `peer`
//! serves the Raft transport on the peer port. `convert` and `status` translate between
//! the wire and the domain, so handlers stay short. `proposer` gathers concurrent writes
//! into one Raft entry (group commit); `read_index` confirms leadership once for every
//! linearizable read waiting at that moment (ReadIndex batching).

pub mod convert;
pub mod inventory;
pub mod metered;
pub mod peer;
pub mod proposer;
pub mod read_index;
pub mod status;
