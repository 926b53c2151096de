//! openraft glue: the type configuration, what a log entry carries, and the storage and
//! network adaptors. The inventory rules know nothing of this module.
//!
//! - `log_store`: the Raft log, vote and committed index on the storage engine; an append
//!   is acknowledged only after fsync.
//! - `state_machine`: applies committed entries to the inventory and persists the changed
//!   records and movements in one atomic batch; builds and installs snapshots.
//! - `snapshot`: the checksummed snapshot format.
//! - `network`: openraft's `RaftNetwork` over the gRPC peer transport.
//! - `codec`: how openraft messages are serialized on the peer transport.

pub mod codec;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;

use crate::inventory::{Command, DomainError, IdempotencyKey, Outcome};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

pub type NodeId = u64;

/// What a member of the cluster is reachable at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// host:port of the Raft transport (peer port).
    pub peer_addr: String,
    /// host:port of the public gRPC API (client port), for leader hints.
    pub client_addr: String,
    /// host:port of the admin HTTP API; empty when unknown (older members).
    #[serde(default)]
    pub admin_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer={} client={} admin={}",
            self.peer_addr, self.client_addr, self.admin_addr
        )
    }
}

/// The application payload of a log entry: a command stamped by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// The proposing leader's wall clock, ms since the Unix epoch. Apply uses this, never
    /// the applying node's clock, so replicas agree.
    pub time_ms: u64,
    pub idempotency: Option<IdempotencyKey>,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Request({} ops at {} ms)",
            self.command.ops.len(),
            self.time_ms
        )
    }
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry.
    None,
    Applied(Result<Outcome, DomainError>),
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = NodeInfo,
        SnapshotData = Cursor<Vec<u8>>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Membership = openraft::StoredMembership<NodeId, NodeInfo>;

/// Wraps any error as an openraft storage error at `verb` on `subject`.
pub(crate) fn sto_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::error(e.to_string())).into()
}
