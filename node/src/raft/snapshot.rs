//! The snapshot format: a consistent dump of the state machine at one applied log id.
//!
//! `MAGIC (8 bytes) | body length (u64 LE) | crc32 of body (u32 LE) | body (JSON)`
//!
//! The checksum covers the whole body; a snapshot that fails it, is truncated, or carries
//! trailing bytes is refused with a precise error and never installed.

use super::{LogId, Membership};
use crate::inventory::{Movement, Record};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"LLSNAP01";
const HEADER_LEN: usize = 8 + 8 + 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBody {
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    pub records: Vec<Record>,
    pub movements: Vec<Movement>,
    /// Set only in the snapshot file a node builds for itself (log compaction): then
    /// `movements` is empty and the ledger up to this `(revision, seq)` is the node's own
    /// stored ledger, which never changes below it. Filled in before a snapshot leaves the
    /// node, so a snapshot on the wire or in a backup always carries its whole ledger.
    /// (Encoding the whole ledger on every compaction cost each node O(history) every
    /// 10 000 entries and stalled writes: measured, benches/RESULTS.md.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_through: Option<(u64, u32)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("not a Laundry List snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot body is {actual} bytes but the header says {expected}")]
    Length { expected: u64, actual: u64 },
    #[error("snapshot checksum mismatch: header {expected:08x}, body {actual:08x}")]
    Checksum { expected: u32, actual: u32 },
    #[error("snapshot body undecodable: {0}")]
    Decode(String),
}

pub fn encode(body: &SnapshotBody) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotBody, SnapshotError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Short(bytes.len()));
    }
    if &bytes[..8] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let sum = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != len {
        return Err(SnapshotError::Length {
            expected: len,
            actual: body.len() as u64,
        });
    }
    let actual = crc32fast::hash(body);
    if actual != sum {
        return Err(SnapshotError::Checksum {
            expected: sum,
            actual,
        });
    }
    serde_json::from_slice(body).map_err(|e| SnapshotError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Inventory;

    fn sample() -> Vec<u8> {
        let body = SnapshotBody {
            ledger_through: None,
            last_applied: None,
            membership: Membership::default(),
            records: Inventory::genesis().records().collect(),
            movements: vec![],
        };
        encode(&body).unwrap()
    }

    #[test]
    fn round_trip() {
        let bytes = sample();
        assert_eq!(
            decode(&bytes).unwrap().records,
            Inventory::genesis().records().collect::<Vec<_>>()
        );
    }

    #[test]
    fn truncation_corruption_and_garbage_are_refused() {
        let bytes = sample();
        assert_eq!(decode(&bytes[..10]), Err(SnapshotError::Short(10)));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1]),
            Err(SnapshotError::Length { .. })
        ));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x20;
        assert!(matches!(
            decode(&flipped),
            Err(SnapshotError::Checksum { .. })
        ));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(SnapshotError::BadMagic));
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(decode(&longer), Err(SnapshotError::Length { .. })));
    }
}
