//! openraft glue: the type configuration, what a log entry carries, and the storage and
//! network adaptors. The inventory rules know nothing of this module.
//!
//! - `log_store`: the Raft log in its own segment files (`storage::wal`), vote and purge
//!   point in a `meta` file; an append is acknowledged only after fdatasync.
//! - `log_cache`: the newest log entries, decoded, for replication and apply to read.
//! - `state_machine`: applies committed entries to the in-memory inventory and stores their
//!   movements (`ledger`); the state is durable as the last snapshot file plus the log
//!   after it; builds and installs snapshots.
//! - `ledger`: the stored movements, in chunks, in segment files of their own.
//! - `snapshot`: the checksummed snapshot format.
//! - `network`: openraft's `RaftNetwork` over the peer stream (gRPC for earlier releases).
//! - `wire`: the peer stream's greeting and frames.
//! - `codec`: how log entries and openraft's peer messages are serialized (JSON or binary).

pub mod codec;
pub mod idempotency_files;
pub mod ledger;
pub mod log_cache;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod wire;

use crate::inventory::{Command, DomainError, IdempotencyKey, Outcome};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;
use std::sync::Arc;

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

/// Commands one entry may carry, and the spacing of revisions between entries.
pub const REVISIONS_PER_ENTRY: u64 = 1024;

/// The revision of the command at `position` in the entry at log `index`: unique per
/// command and increasing in apply order, so an item's or stock level's revision (its ETag)
/// names exactly one version even when writes share an entry. `log_index_of` inverts it.
pub fn revision(index: u64, position: usize) -> u64 {
    debug_assert!((position as u64) < REVISIONS_PER_ENTRY);
    index.saturating_mul(REVISIONS_PER_ENTRY) + position as u64
}

/// The log index of the entry that applied the write with `revision` (entries written
/// since group commit; older single-command entries used the index itself).
pub fn log_index_of(revision: u64) -> u64 {
    revision / REVISIONS_PER_ENTRY
}

/// The application payload of a log entry: one or more commands stamped by the leader.
/// Concurrent proposals are batched into one entry (group commit, `server::proposer`);
/// each command still applies on its own, in order, with its own revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub command: Command,
    /// The proposing leader's wall clock, ms since the Unix epoch. Apply uses this, never
    /// the applying node's clock, so replicas agree.
    pub time_ms: u64,
    pub idempotency: Option<IdempotencyKey>,
    /// Commands proposed together with the first, applied after it in this order. Absent
    /// in entries written before batching, which read as a batch of one. Always written:
    /// the binary codec cannot skip a field.
    ///
    /// Shared, because openraft clones an entry each time it reads one: once per follower
    /// to replicate it and once to apply it. A deep copy of a batch was 2.5–2.8 % of each
    /// node's CPU at the 64-client peak (perf, benches/RESULTS.md). On the wire and on disk
    /// it is the list itself (serde's `rc`), as before.
    #[serde(default)]
    pub batched: Arc<Vec<Proposal>>,
    /// True in every entry written since group commit: command `p` gets
    /// `revision(index, p)`. False (absent) in older entries, whose one command got the log
    /// index itself; replaying one must give the revision the cluster gave it then.
    #[serde(default)]
    pub numbered: bool,
}

/// One command of a batched entry and its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
    pub idempotency: Option<IdempotencyKey>,
}

impl Request {
    /// The commands of the entry, in apply order.
    pub fn commands(&self) -> impl Iterator<Item = (&Command, &Option<IdempotencyKey>)> {
        std::iter::once((&self.command, &self.idempotency))
            .chain(self.batched.iter().map(|p| (&p.command, &p.idempotency)))
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Request({} commands at {} ms)",
            1 + self.batched.len(),
            self.time_ms
        )
    }
}

/// The result of applying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry.
    None,
    /// One result per command of the entry, in its order.
    Applied(Vec<Result<Outcome, DomainError>>),
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
