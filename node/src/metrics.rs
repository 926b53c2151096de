//! The node's Prometheus metrics. Event metrics (latencies, counts) are recorded where the
//! events happen; Raft gauges (term, indexes, lag) are read from openraft's metrics at
//! scrape time, so they are never stale. Label values come from fixed sets only, so a
//! client cannot grow the metric families.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

/// What became of one write, whether it came alone or in a `WriteMany`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum WriteOutcome {
    /// Applied now.
    Applied,
    /// Its idempotency key had applied before: the stored result was answered.
    Replayed,
    /// Refused by validation or by the rules; nothing changed.
    Refused,
    /// Not decided here: not the leader, the node stopping, or an internal error.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// `Op::name`, or `batch`; `unknown` for a write too malformed to name.
    pub op: &'static str,
    pub outcome: WriteOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: u64,
}

/// Which transport a Raft RPC to a peer went over.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PeerTransport {
    /// The peer stream (`raft::wire`).
    Stream,
    /// gRPC: the peer did not answer the stream's greeting (an earlier release).
    Grpc,
}

/// What became of one Raft RPC to a peer, as transport: whether an answer came back.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PeerCallOutcome {
    /// The peer's Raft answered (its answer may be a refusal, such as a higher term).
    Answered,
    /// No connection: openraft backs off before calling this peer again.
    Unreachable,
    /// Connected, but no usable answer: past its deadline, or not decodable.
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerCallLabels {
    pub peer: u64,
    pub transport: PeerTransport,
    pub outcome: PeerCallOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum SnapshotEvent {
    Built,
    Installed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    pub event: SnapshotEvent,
}

/// Buckets from 100 µs to ~4.6 s, each √2 times the one before: covers an fsync on NVMe
/// to a stalled disk, finely enough to tell a 3.2 ms p99 from a 4.5 ms one (doubling
/// buckets could not say whether the leader's own p99 at half of peak was under 5 ms;
/// benches/RESULTS.md, fourteenth session).
fn latency_buckets() -> impl Iterator<Item = f64> {
    // Rounded to 0.1 µs, so the `le` labels read 0.0002, not 0.00020000000000000006.
    (0..32).map(|i| (1e-4 * std::f64::consts::SQRT_2.powi(i) * 1e7).round() / 1e7)
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub proposal_seconds: Histogram,
    pub fsync_seconds: Histogram,
    pub proposal_batch_commands: Histogram,
    pub read_batch_reads: Histogram,
    pub requests: Family<RequestLabels, Counter>,
    /// Client API calls from receipt to the handler's answer, by method (`server::metered`).
    pub request_seconds: Family<MethodLabels, Histogram>,
    pub writes: Family<WriteLabels, Counter>,
    pub leader_changes: Counter,
    /// Writes whose entry got no answer within the proposer's bound (`server::proposer`).
    pub proposals_unanswered: Counter,
    pub snapshots: Family<SnapshotLabels, Counter>,
    pub snapshot_seconds: Family<SnapshotLabels, Histogram>,
    pub term: Gauge,
    pub last_log_index: Gauge,
    pub applied_index: Gauge,
    pub snapshot_index: Gauge,
    pub is_leader: Gauge,
    pub storage_bytes: Gauge,
    pub raft_log_bytes: Gauge,
    pub replication_lag: Family<PeerLabels, Gauge>,
    pub peer_calls: Family<PeerCallLabels, Counter>,
    pub peer_stream_connects: Family<PeerLabels, Counter>,
    pub open_reservations: Gauge,
    pub clock_ms: Gauge<u64, AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("laundry")),
            proposal_seconds: Histogram::new(latency_buckets()),
            fsync_seconds: Histogram::new(latency_buckets()),
            proposal_batch_commands: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
            ),
            read_batch_reads: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10),
            ),
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            writes: Family::default(),
            leader_changes: Counter::default(),
            proposals_unanswered: Counter::default(),
            snapshots: Family::default(),
            snapshot_seconds: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
            term: Gauge::default(),
            last_log_index: Gauge::default(),
            applied_index: Gauge::default(),
            snapshot_index: Gauge::default(),
            is_leader: Gauge::default(),
            storage_bytes: Gauge::default(),
            raft_log_bytes: Gauge::default(),
            replication_lag: Family::default(),
            peer_calls: Family::default(),
            peer_stream_connects: Family::default(),
            open_reservations: Gauge::default(),
            clock_ms: Gauge::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "proposal_seconds",
                "Time from proposing a write to its apply result",
                m.proposal_seconds.clone(),
            );
            r.register(
                "log_fsync_seconds",
                "Time to fsync one batch of appended log entries",
                m.fsync_seconds.clone(),
            );
            r.register(
                "proposal_batch_commands",
                "Commands gathered into one Raft entry (group commit)",
                m.proposal_batch_commands.clone(),
            );
            r.register(
                "read_batch_reads",
                "Linearizable reads answered by one leadership check (ReadIndex batching)",
                m.read_batch_reads.clone(),
            );
            r.register(
                "grpc_requests",
                "Client API requests by method and gRPC status",
                m.requests.clone(),
            );
            r.register(
                "grpc_request_seconds",
                "Client API calls by method, from the request's arrival to the handler's answer (decoding included; encoding and sending the answer not); a WriteMany call counts once, however many writes it carries",
                m.request_seconds.clone(),
            );
            r.register(
                "writes",
                "Writes by operation and outcome, each write of a WriteMany call counted on its own",
                m.writes.clone(),
            );
            r.register(
                "leader_changes",
                "Times this node saw the leader change",
                m.leader_changes.clone(),
            );
            r.register(
                "proposals_unanswered",
                "Writes whose Raft entry got no answer within the proposer's bound (1 s after this node stopped leading the term, 10 s in all); answered as outcome unknown, which clients retry under the write's idempotency key",
                m.proposals_unanswered.clone(),
            );
            r.register(
                "snapshots",
                "Snapshots built or installed",
                m.snapshots.clone(),
            );
            r.register(
                "snapshot_seconds",
                "Time to build or install a snapshot",
                m.snapshot_seconds.clone(),
            );
            r.register("raft_term", "Current Raft term", m.term.clone());
            r.register(
                "raft_last_log_index",
                "Index of the last log entry",
                m.last_log_index.clone(),
            );
            r.register(
                "raft_applied_index",
                "Index of the last applied entry",
                m.applied_index.clone(),
            );
            r.register(
                "raft_snapshot_index",
                "Last index in the current snapshot",
                m.snapshot_index.clone(),
            );
            r.register(
                "raft_is_leader",
                "1 when this node leads",
                m.is_leader.clone(),
            );
            r.register(
                "storage_bytes",
                "Bytes the state machine's storage engine occupies on disk",
                m.storage_bytes.clone(),
            );
            r.register(
                "raft_log_bytes",
                "Bytes of Raft log segment files on disk",
                m.raft_log_bytes.clone(),
            );
            r.register(
                "replication_lag_entries",
                "Entries a follower is behind (on the leader)",
                m.replication_lag.clone(),
            );
            r.register(
                "peer_calls",
                "Raft RPCs this node sent, by peer, transport and outcome",
                m.peer_calls.clone(),
            );
            r.register(
                "peer_stream_connects",
                "Peer-stream connections opened (greeting answered), by peer; each call \
                 openraft cancels at its deadline costs one",
                m.peer_stream_connects.clone(),
            );
            r.register(
                "open_reservations",
                "Reservations not yet ended",
                m.open_reservations.clone(),
            );
            r.register(
                "state_clock_ms",
                "Leader-stamped time of the applied state",
                m.clock_ms.clone(),
            );
        }
        m
    }

    /// The exposition text (OpenMetrics, which Prometheus scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// gRPC methods of the client API, the only `method` label values counted.
pub const METHODS: [&str; 20] = [
    "CreateItem",
    "UpdateItem",
    "GetItem",
    "ListItems",
    "CreateLocation",
    "ListLocations",
    "Receive",
    "Ship",
    "Adjust",
    "Transfer",
    "Reserve",
    "CommitReservation",
    "ReleaseReservation",
    "GetReservation",
    "Batch",
    "WriteMany",
    "GetStock",
    "ListMovements",
    "WatchMovements",
    "NodeStatus",
];

/// Label value of a gRPC status code (as sent in `grpc-status`).
pub fn code_name(code: &str) -> &'static str {
    match code {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    /// The latency buckets grow by √2 from 100 µs past 4 s, and every second one is a
    /// power-of-two multiple of 100 µs written exactly (the labels a dashboard reads).
    #[test]
    fn latency_buckets_are_root_two_apart_and_read_cleanly() {
        let b: Vec<f64> = super::latency_buckets().collect();
        assert_eq!(b.len(), 32);
        assert!(b.windows(2).all(|w| {
            let ratio = w[1] / w[0];
            (ratio - std::f64::consts::SQRT_2).abs() < 1e-3
        }));
        assert_eq!(b[0], 0.0001);
        assert_eq!(b[2], 0.0002);
        assert_eq!(b[10], 0.0032);
        assert_eq!(b[11].to_string(), "0.0045255");
        assert!(*b.last().unwrap() > 4.0);
    }
}
