//! The node's gRPC services. `inventory` serves the public API on the client port. On the
//! peer port, `peer_stream` accepts connections and serves the Raft peer stream, and hands
//! the rest to `peer`, the gRPC Raft transport (earlier releases, peer status, hand-off).
//! `convert` and `status` translate between
//! the wire and the domain, so handlers stay short. `proposer` gathers concurrent writes
//! into one Raft entry (group commit); `read_index` confirms leadership once for every
//! linearizable read waiting at that moment (ReadIndex batching).

pub mod convert;
pub mod inventory;
pub mod metered;
pub mod peer;
pub mod peer_stream;
pub mod proposer;
pub mod read_index;
pub mod status;
