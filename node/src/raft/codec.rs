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
    use crate::inventory::samples::{every_condition, every_op};
    use crate::inventory::{Command, IdempotencyKey};
    use crate::raft::{LogId, NodeInfo, Proposal, Request, TypeConfig};
    use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
    use openraft::{
        CommittedLeaderId, Entry, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote,
    };
    use std::collections::{BTreeMap, BTreeSet};

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
