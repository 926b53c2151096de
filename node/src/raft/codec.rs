//! How log entries and openraft's peer messages are serialized. Two formats, told apart by
//! their first byte, so bytes written by an earlier release stay readable:
//!
//! - JSON (serde_json), which every earlier release wrote: a JSON value here is an object,
//!   so it begins with `{`.
//! - Binary: the byte `BINARY` and then postcard (serde's compact varint format). Encoding
//!   an entry is ~3.5× and decoding ~5× faster than JSON, and it is a third of the size
//!   (`cargo bench --bench codec`); on the peer wire it also carries a snapshot's bytes as
//!   bytes rather than a JSON array of numbers.
//!
//! postcard is not self-describing: a type written in it must serialize every field (no
//! `skip_serializing_if`) and no enum may be untagged or internally tagged. The types that
//! travel here (`Request` and openraft's messages) keep to that; the round-trip tests below
//! cover each kind. Decoding never panics: unknown or damaged bytes are an error.

use serde::{de::DeserializeOwned, Serialize};

/// Reply metadata by which a peer says it reads binary requests. A node sends a peer JSON
/// until a reply from it carries this, so a cluster mid-way through a rolling upgrade keeps
/// replicating; a peer that refuses a binary request (rolled back) is sent JSON again.
pub const READS_BINARY_HEADER: &str = "x-laundry-reads-binary";
pub const READS_BINARY_VALUE: &str = "1";

/// First byte of a binary value. JSON text never begins with it.
pub const BINARY: u8 = 0x01;

/// Which format an encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Read by every release: for peers that have not shown they read binary.
    Json,
    Binary,
}

pub fn to_bytes<T: Serialize>(value: &T, format: Format) -> Result<Vec<u8>, String> {
    match format {
        Format::Json => serde_json::to_vec(value).map_err(|e| format!("encode: {e}")),
        Format::Binary => {
            let mut out = vec![BINARY];
            postcard::to_io(value, &mut out).map_err(|e| format!("encode: {e}"))?;
            Ok(out)
        }
    }
}

pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.first() {
        Some(&BINARY) => {
            let (value, rest) = postcard::take_from_bytes(&bytes[1..])
                .map_err(|e| format!("decode (binary): {e}"))?;
            if !rest.is_empty() {
                return Err(format!(
                    "decode (binary): {} bytes after the value",
                    rest.len()
                ));
            }
            Ok(value)
        }
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| format!("decode: {e}")),
        Some(other) => Err(format!("decode: unknown format (first byte {other:#04x})")),
        None => Err("decode: no bytes".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{Command, Condition, IdempotencyKey, LocationKind, Op};
    use crate::raft::{LogId, NodeInfo, Proposal, Request, TypeConfig};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote,
    };
    use std::collections::{BTreeMap, BTreeSet};

    /// One of every operation. The `match` has no wildcard, so a new variant fails to
    /// compile here until it is added to the round trip.
    fn every_op() -> Vec<Op> {
        let s = |v: &str| v.to_string();
        let ops = vec![
            Op::CreateItem {
                id: s("tee"),
                name: s("Tee"),
                unit: s("each"),
                attributes: BTreeMap::from([(s("colour"), s("black")), (s("size"), s("M"))]),
                low_stock_threshold: 5,
            },
            Op::UpdateItem {
                id: s("tee"),
                name: None,
                unit: Some(s("pair")),
                attributes: Some(BTreeMap::new()),
                low_stock_threshold: Some(-1),
            },
            Op::CreateLocation {
                id: s("wh"),
                name: s("Warehouse"),
                kind: LocationKind::InTransit,
            },
            Op::Receive {
                item: s("tee"),
                location: s("wh"),
                quantity: i64::MAX,
                from: s(""),
                reason: s("po"),
                reference: s("PO-1"),
            },
            Op::Ship {
                item: s("tee"),
                location: s("wh"),
                quantity: 1,
                to: s("customer"),
                reason: s(""),
                reference: s("SO-\u{e9}"),
            },
            Op::Adjust {
                item: s("tee"),
                location: s("wh"),
                delta: i64::MIN,
                counterpart: s(""),
                reason: s("count"),
                reference: s(""),
            },
            Op::Transfer {
                item: s("tee"),
                from: s("wh"),
                to: s("shop"),
                quantity: 3,
                reason: s("restock"),
                reference: s("T-1"),
            },
            Op::Reserve {
                id: s(""),
                item: s("tee"),
                location: s("wh"),
                quantity: 2,
                ttl_ms: u64::MAX,
                reference: s("cart-9"),
            },
            Op::Commit {
                id: s("r-1"),
                to: s(""),
                reason: s("sold"),
            },
            Op::Release {
                id: s("r-1"),
                reason: s(""),
            },
            Op::ExpireDue,
        ];
        for op in &ops {
            match op {
                Op::CreateItem { .. }
                | Op::UpdateItem { .. }
                | Op::CreateLocation { .. }
                | Op::Receive { .. }
                | Op::Ship { .. }
                | Op::Adjust { .. }
                | Op::Transfer { .. }
                | Op::Reserve { .. }
                | Op::Commit { .. }
                | Op::Release { .. }
                | Op::ExpireDue => {}
            }
        }
        ops
    }

    fn every_condition() -> Vec<Condition> {
        let s = |v: &str| v.to_string();
        let conditions = vec![
            Condition::StockRevision {
                item: s("tee"),
                location: s("wh"),
                revision: u64::MAX,
            },
            Condition::StockOnHand {
                item: s("tee"),
                location: s("wh"),
                on_hand: -3,
            },
            Condition::StockAvailable {
                item: s("tee"),
                location: s("wh"),
                available: 0,
            },
            Condition::ItemRevision {
                item: s("tee"),
                revision: 0,
            },
        ];
        for c in &conditions {
            match c {
                Condition::StockRevision { .. }
                | Condition::StockOnHand { .. }
                | Condition::StockAvailable { .. }
                | Condition::ItemRevision { .. } => {}
            }
        }
        conditions
    }

    fn request() -> Request {
        Request {
            command: Command {
                ops: every_op(),
                conditions: every_condition(),
            },
            time_ms: 1_795_000_000_000,
            idempotency: Some(IdempotencyKey {
                key: "k-1".into(),
                fingerprint: u64::MAX,
            }),
            batched: every_op()
                .into_iter()
                .map(|op| Proposal {
                    command: Command::single(op),
                    idempotency: None,
                })
                .collect::<Vec<_>>()
                .into(),
            numbered: true,
        }
    }

    fn membership() -> Membership<u64, NodeInfo> {
        let nodes: BTreeMap<u64, NodeInfo> = (1..=3)
            .map(|id| {
                (
                    id,
                    NodeInfo {
                        peer_addr: format!("n{id}:7000"),
                        client_addr: format!("n{id}:7001"),
                        admin_addr: String::new(),
                    },
                )
            })
            .collect();
        Membership::new(vec![BTreeSet::from([1, 2])], nodes)
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 2), index)
    }

    /// Encodes `value` in each format and decodes it back to the same value. Compared as
    /// `Debug` shows them: openraft's messages do not all implement `PartialEq`.
    fn round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + std::fmt::Debug,
    {
        for format in [Format::Json, Format::Binary] {
            let bytes = to_bytes(value, format).unwrap();
            let back: T = from_bytes(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{value:?}"), "{format:?}");
        }
    }

    #[test]
    fn entries_and_peer_messages_round_trip_in_both_formats() {
        let entries: Vec<Entry<TypeConfig>> = vec![
            Entry {
                log_id: log_id(3, 7),
                payload: EntryPayload::Normal(request()),
            },
            Entry {
                log_id: log_id(3, 8),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(3, 9),
                payload: EntryPayload::Membership(membership()),
            },
        ];
        for e in &entries {
            round_trip(e);
        }
        round_trip(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 2),
            prev_log_id: Some(log_id(2, 6)),
            entries,
            leader_commit: None,
        });
        round_trip(&VoteRequest::new(Vote::new(4, 1), Some(log_id(3, 9))));
        round_trip(&InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 2),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(3, 9)),
                last_membership: StoredMembership::new(Some(log_id(3, 9)), membership()),
                snapshot_id: "3-9-1".into(),
            },
            offset: 1 << 20,
            data: (0..=255).collect(),
            done: false,
        });
    }

    /// Here because `every_op` is: each operation has its own name for the `laundry_writes`
    /// metric, in the API's snake case, and several make a `batch`.
    #[test]
    fn every_operation_has_its_own_metric_name() {
        let ops = every_op();
        let names: BTreeSet<&str> = ops.iter().map(Op::name).collect();
        assert_eq!(names.len(), ops.len(), "{names:?}");
        assert!(names.contains("create_item") && names.contains("expire_due"));
        assert!(names
            .iter()
            .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        assert_eq!(Command::single(ops[5].clone()).name(), ops[5].name());
        let two = Command {
            ops: ops[..2].to_vec(),
            conditions: vec![],
        };
        assert_eq!(two.name(), "batch");
    }

    #[test]
    fn a_request_without_batched_commands_round_trips_and_old_json_still_reads() {
        let mut r = request();
        r.batched = Default::default();
        r.idempotency = None;
        round_trip(&r);
        // As an earlier release wrote it: no `batched`, no `numbered`.
        let old = serde_json::json!({
            "command": r.command, "time_ms": r.time_ms, "idempotency": null
        });
        let back: Request = from_bytes(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(back.batched.is_empty());
        assert!(!back.numbered);
    }

    #[test]
    fn damaged_or_unknown_bytes_are_errors() {
        let good = to_bytes(&request(), Format::Binary).unwrap();
        assert!(from_bytes::<Request>(&[]).is_err());
        assert!(from_bytes::<Request>(&[0x02, 1, 2])
            .unwrap_err()
            .contains("0x02"));
        assert!(
            from_bytes::<Request>(&good[..good.len() - 3]).is_err(),
            "cut short"
        );
        let mut longer = good.clone();
        longer.push(0);
        assert!(from_bytes::<Request>(&longer)
            .unwrap_err()
            .contains("after the value"));
        // Every truncation and every single flipped byte decodes to an error or a value,
        // never a panic.
        for n in 0..good.len() {
            let _ = from_bytes::<Request>(&good[..n]);
            let mut flipped = good.clone();
            flipped[n] ^= 0xff;
            let _ = from_bytes::<Request>(&flipped);
        }
    }
}
