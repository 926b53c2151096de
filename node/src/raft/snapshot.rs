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

/// The checked body of a snapshot: header, length and checksum verified.
fn checked_body(bytes: &[u8]) -> Result<&[u8], SnapshotError> {
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
    Ok(body)
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotBody, SnapshotError> {
    serde_json::from_slice(checked_body(bytes)?).map_err(|e| SnapshotError::Decode(e.to_string()))
}

/// Like [`decode`], but hands each record to `on_record` as it is decoded instead of
/// collecting them: the returned body's `records` is empty. A start loads a million-level
/// state this way without a `Vec` of every record next to the maps built from them
/// (measured: 466 MiB resident after such a start with the `Vec`, `benches/RESULTS.md`).
pub fn decode_each(
    bytes: &[u8],
    on_record: &mut dyn FnMut(Record),
) -> Result<SnapshotBody, SnapshotError> {
    use serde::de::DeserializeSeed;
    let body = checked_body(bytes)?;
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = BodySeed { on_record }
        .deserialize(&mut de)
        .and_then(|b| de.end().map(|()| b))
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok(out)
}

/// Decodes a [`SnapshotBody`] whose `records` go to a callback, one at a time.
struct BodySeed<'a> {
    on_record: &'a mut dyn FnMut(Record),
}

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = SnapshotBody;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<SnapshotBody, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed<'_> {
    type Value = SnapshotBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a snapshot body")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SnapshotBody, A::Error> {
        use serde::de::Error;
        let mut last_applied = None;
        let mut membership = None;
        let mut movements = None;
        let mut ledger_through = None;
        let mut saw_records = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "last_applied" => last_applied = Some(map.next_value()?),
                "membership" => membership = Some(map.next_value()?),
                "movements" => movements = Some(map.next_value()?),
                "ledger_through" => ledger_through = map.next_value()?,
                "records" => {
                    map.next_value_seed(RecordsSeed {
                        on_record: &mut *self.on_record,
                    })?;
                    saw_records = true;
                }
                other => return Err(A::Error::unknown_field(other, FIELDS)),
            }
        }
        if !saw_records {
            return Err(A::Error::missing_field("records"));
        }
        Ok(SnapshotBody {
            last_applied: last_applied.ok_or_else(|| A::Error::missing_field("last_applied"))?,
            membership: membership.ok_or_else(|| A::Error::missing_field("membership"))?,
            records: Vec::new(),
            movements: movements.ok_or_else(|| A::Error::missing_field("movements"))?,
            ledger_through,
        })
    }
}

const FIELDS: &[&str] = &[
    "last_applied",
    "membership",
    "records",
    "movements",
    "ledger_through",
];

struct RecordsSeed<'a> {
    on_record: &'a mut dyn FnMut(Record),
}

impl<'de> serde::de::DeserializeSeed<'de> for RecordsSeed<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<Record>()? {
            (self.on_record)(record);
        }
        Ok(())
    }
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

    /// The record-at-a-time decode gives what the whole decode gives, field for field,
    /// with and without the optional `ledger_through`, and refuses what it refuses.
    #[test]
    fn decoding_record_by_record_equals_the_whole_decode() {
        let mut body = decode(&sample()).unwrap();
        for through in [None, Some((7, 1))] {
            body.ledger_through = through;
            let bytes = encode(&body).unwrap();
            let mut seen = Vec::new();
            let mut rest = decode_each(&bytes, &mut |r| seen.push(r)).unwrap();
            assert_eq!(seen, body.records);
            rest.records = seen;
            assert_eq!(rest, body);
            let mut flipped = bytes.clone();
            let last = flipped.len() - 2;
            flipped[last] ^= 0x20;
            assert!(matches!(
                decode_each(&flipped, &mut |_| {}),
                Err(SnapshotError::Checksum { .. })
            ));
        }
        // A checksummed body that is not a snapshot body: a precise error, no panic.
        let json = br#"{"last_applied":null,"membership":{}}"#;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(json).to_le_bytes());
        bytes.extend_from_slice(json);
        assert!(matches!(
            decode_each(&bytes, &mut |_| {}),
            Err(SnapshotError::Decode(_))
        ));
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
