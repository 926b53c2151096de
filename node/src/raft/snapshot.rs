//! The snapshot format: a consistent dump of the state machine at one applied log id.
//!
//! `MAGIC (8 bytes) | body length (u64 LE) | crc32 of body (u32 LE) | body`
//!
//! Two bodies, told apart by the magic; both are always read:
//! - `LLSNAP01`: JSON of [`SnapshotBody`]. Every release reads it, so it is what leaves
//!   the node (to a follower, into a backup) while a cluster may still run releases that
//!   read nothing else.
//! - `LLSNAP03`: binary, for the file a node builds for itself (its checkpoint). A head
//!   (`BinaryHead`, postcard), then `u64 LE` record count and the records, then `u64 LE`
//!   movement count and the movements, each record and movement postcard-encoded. Records
//!   are written from borrowed state ([`RecordRef`]), so a build clones none of them.
//!   About a quarter of the JSON's size and several times faster to write (measured:
//!   `benches/RESULTS.md`), and a build runs on every node at once (`--snapshot-logs`).
//!   Its head may refer to the node's idempotency files (`idempotency_files`) for the
//!   records it does not carry.
//! - `LLSNAP02`: the same with the head of the release before (no `idempotency_files`);
//!   read only.
//!
//! The checksum covers the whole body; a snapshot that fails it, is truncated, or carries
//! trailing bytes is refused with a precise error and never installed.

use super::idempotency_files::FilesRef;
use super::{LogId, Membership};
use crate::inventory::{IdempotencyRecord, Movement, Record, RecordRef};
use serde::{Deserialize, Serialize};

/// The JSON body's magic.
pub const MAGIC: &[u8; 8] = b"LLSNAP01";
/// The binary body's magic.
pub const MAGIC_BINARY: &[u8; 8] = b"LLSNAP03";
/// The binary body of the release before, whose head has no `idempotency_files`.
pub const MAGIC_BINARY_V2: &[u8; 8] = b"LLSNAP02";
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
    /// Set only in the snapshot file a node builds for itself, like `ledger_through`: the
    /// idempotency records that `records` does not carry are in the node's own files
    /// (`idempotency_files`). Filled in before a snapshot leaves the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_files: Option<FilesRef>,
}

impl SnapshotBody {
    /// Whether this body refers to files of the node that wrote it (its ledger, its
    /// idempotency records) instead of carrying them: never so on the wire or in a backup.
    pub fn refers_to_local_files(&self) -> bool {
        self.ledger_through.is_some() || self.idempotency_files.is_some()
    }
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

/// The JSON snapshot (`LLSNAP01`) of `body`: what every release reads.
pub fn encode(body: &SnapshotBody) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// The fields of a binary body before its records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryHead {
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    pub ledger_through: Option<(u64, u32)>,
    pub idempotency_files: Option<FilesRef>,
}

/// `LLSNAP02`'s head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BinaryHeadV2 {
    last_applied: Option<LogId>,
    membership: Membership,
    ledger_through: Option<(u64, u32)>,
}

/// The binary snapshot (`LLSNAP03`) of a head, the `record_count` records in `records()`
/// order and the movements, in memory.
pub fn encode_binary<'a>(
    head: &BinaryHead,
    record_count: u64,
    records: impl Iterator<Item = RecordRef<'a>>,
    movements: &[Movement],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let header = encode_binary_to(&mut out, head, record_count, records, movements)?;
    out[..HEADER_LEN].copy_from_slice(&header);
    Ok(out)
}

/// The snapshot's header: magic, body length, body checksum.
pub type Header = [u8; HEADER_LEN];

/// [`encode_binary`] written to `out` as it is encoded, so a build holds no copy of the
/// file in memory (at a million levels, 24 MB and, as the buffer grew, up to twice that
/// at the peak of a build). The header goes first as zeros, since its length and checksum
/// are known only at the end: the caller writes the returned header over them.
/// `records` must yield exactly `record_count` records (the count is written before them);
/// anything else is an error.
pub fn encode_binary_to<'a, W: std::io::Write>(
    out: W,
    head: &BinaryHead,
    record_count: u64,
    records: impl Iterator<Item = RecordRef<'a>>,
    movements: &[Movement],
) -> Result<Header, String> {
    let enc = |e: postcard::Error| format!("snapshot encode: {e}");
    let mut out = out;
    out.write_all(&[0; HEADER_LEN])
        .map_err(|e| format!("snapshot write: {e}"))?;
    let summed = Summed {
        inner: out,
        crc: crc32fast::Hasher::new(),
        len: 0,
    };
    // postcard writes field by field, a few bytes at a time: buffered, so the checksum
    // and the file see large slices.
    let mut body = std::io::BufWriter::with_capacity(64 * 1024, summed);
    postcard::to_io(head, &mut body).map_err(enc)?;
    write_bytes(&mut body, &record_count.to_le_bytes())?;
    let mut written: u64 = 0;
    for record in records {
        postcard::to_io(&BinaryRecord(record), &mut body).map_err(enc)?;
        written += 1;
    }
    if written != record_count {
        return Err(format!(
            "snapshot encode: {written} records written where {record_count} were counted"
        ));
    }
    write_bytes(&mut body, &(movements.len() as u64).to_le_bytes())?;
    for m in movements {
        postcard::to_io(m, &mut body).map_err(enc)?;
    }
    let body = body
        .into_inner()
        .map_err(|e| format!("snapshot write: {}", e.error()))?;
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC_BINARY);
    header[8..16].copy_from_slice(&body.len.to_le_bytes());
    header[16..20].copy_from_slice(&body.crc.finalize().to_le_bytes());
    Ok(header)
}

fn write_bytes<W: std::io::Write>(w: &mut W, bytes: &[u8]) -> Result<(), String> {
    w.write_all(bytes)
        .map_err(|e| format!("snapshot write: {e}"))
}

/// A writer that passes bytes on and keeps their count and CRC-32: the body's length and
/// checksum for the header.
struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: std::io::Write> std::io::Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The binary snapshot of a whole body (its records owned).
pub fn encode_binary_body(body: &SnapshotBody) -> Result<Vec<u8>, String> {
    let head = BinaryHead {
        last_applied: body.last_applied,
        membership: body.membership.clone(),
        ledger_through: body.ledger_through,
        idempotency_files: body.idempotency_files.clone(),
    };
    encode_binary(
        &head,
        body.records.len() as u64,
        body.records.iter().map(RecordRef::from),
        &body.movements,
    )
}

/// A record written exactly as postcard writes [`Record`], except that an idempotency
/// record's `ledger_movements` is always written: `Record`'s derive skips it when `None`
/// (to keep the JSON of earlier releases), and postcard, which is positional, cannot
/// skip a field. The variant indices are `Record`'s declaration order; a test decodes
/// every variant back as a `Record`.
struct BinaryRecord<'a>(RecordRef<'a>);

const STOCK_VARIANT: u32 = 2;
const IDEMPOTENCY_VARIANT: u32 = 4;
const CLOCK_VARIANT: u32 = 5;

impl Serialize for BinaryRecord<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        let (key, record) = match self.0 {
            RecordRef::Whole(Record::Idempotency { key, record }) => (key.as_str(), record),
            RecordRef::Idempotency { key, record } => (key, record),
            RecordRef::Whole(other) => return other.serialize(s),
            RecordRef::Stock {
                item,
                location,
                level,
            } => {
                let mut v = s.serialize_struct_variant("Record", STOCK_VARIANT, "Stock", 3)?;
                v.serialize_field("item", item)?;
                v.serialize_field("location", location)?;
                v.serialize_field("level", &level)?;
                return v.end();
            }
            RecordRef::Clock(c) => {
                return s.serialize_newtype_variant("Record", CLOCK_VARIANT, "Clock", &c)
            }
        };
        let mut v = s.serialize_struct_variant("Record", IDEMPOTENCY_VARIANT, "Idempotency", 2)?;
        v.serialize_field("key", key)?;
        v.serialize_field("record", &AllFields(record))?;
        v.end()
    }
}

struct AllFields<'a>(&'a IdempotencyRecord);

impl Serialize for AllFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let mut v = s.serialize_struct("IdempotencyRecord", 4)?;
        v.serialize_field("fingerprint", &r.fingerprint)?;
        v.serialize_field("time_ms", &r.time_ms)?;
        v.serialize_field("outcome", &r.outcome)?;
        v.serialize_field("ledger_movements", &r.ledger_movements)?;
        v.end()
    }
}

/// A snapshot's body format, from its magic.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    Json,
    Binary,
    BinaryV2,
}

/// The checked body of a snapshot and its format: header, length and checksum verified.
fn checked_body(bytes: &[u8]) -> Result<(&[u8], Format), SnapshotError> {
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Short(bytes.len()));
    }
    let format = match &bytes[..8] {
        m if m == MAGIC => Format::Json,
        m if m == MAGIC_BINARY => Format::Binary,
        m if m == MAGIC_BINARY_V2 => Format::BinaryV2,
        _ => return Err(SnapshotError::BadMagic),
    };
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
    Ok((body, format))
}

pub fn decode(bytes: &[u8]) -> Result<SnapshotBody, SnapshotError> {
    let (body, format) = checked_body(bytes)?;
    if format != Format::Json {
        let mut records = Vec::new();
        let mut out = decode_binary(body, format, &mut |r| records.push(r))?;
        out.records = records;
        return Ok(out);
    }
    serde_json::from_slice(body).map_err(|e| SnapshotError::Decode(e.to_string()))
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
    let (body, format) = checked_body(bytes)?;
    if format != Format::Json {
        return decode_binary(body, format, on_record);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = BodySeed { on_record }
        .deserialize(&mut de)
        .and_then(|b| de.end().map(|()| b))
        .map_err(|e| SnapshotError::Decode(e.to_string()))?;
    Ok(out)
}

/// Reads a checked binary body; the returned body's `records` is empty.
fn decode_binary(
    body: &[u8],
    format: Format,
    on_record: &mut dyn FnMut(Record),
) -> Result<SnapshotBody, SnapshotError> {
    let bad = |what: &str, e: String| SnapshotError::Decode(format!("binary body, {what}: {e}"));
    let (head, mut rest) = if format == Format::BinaryV2 {
        let (v2, rest) = postcard::take_from_bytes::<BinaryHeadV2>(body)
            .map_err(|e| bad("head", e.to_string()))?;
        let head = BinaryHead {
            last_applied: v2.last_applied,
            membership: v2.membership,
            ledger_through: v2.ledger_through,
            idempotency_files: None,
        };
        (head, rest)
    } else {
        postcard::take_from_bytes::<BinaryHead>(body).map_err(|e| bad("head", e.to_string()))?
    };
    let records = take_count(&mut rest).map_err(|e| bad("record count", e))?;
    for n in 0..records {
        let (record, after) = postcard::take_from_bytes::<Record>(rest)
            .map_err(|e| bad(&format!("record {n} of {records}"), e.to_string()))?;
        on_record(record);
        rest = after;
    }
    let count = take_count(&mut rest).map_err(|e| bad("movement count", e))?;
    // Every movement takes more than one byte: a count past that is corrupt, and is not
    // trusted with an allocation.
    if count > rest.len() as u64 {
        return Err(bad(
            "movement count",
            format!("{count} in {} bytes", rest.len()),
        ));
    }
    let mut movements = Vec::with_capacity(count as usize);
    for n in 0..count {
        let (m, after) = postcard::take_from_bytes::<Movement>(rest)
            .map_err(|e| bad(&format!("movement {n} of {count}"), e.to_string()))?;
        movements.push(m);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(bad(
            "end",
            format!("{} bytes after the last movement", rest.len()),
        ));
    }
    Ok(SnapshotBody {
        last_applied: head.last_applied,
        membership: head.membership,
        records: Vec::new(),
        movements,
        ledger_through: head.ledger_through,
        idempotency_files: head.idempotency_files,
    })
}

/// Takes a `u64 LE` count off the front of `rest`.
fn take_count(rest: &mut &[u8]) -> Result<u64, String> {
    let Some((count, after)) = rest.split_first_chunk::<8>() else {
        return Err(format!("{} bytes left, 8 needed", rest.len()));
    };
    *rest = after;
    Ok(u64::from_le_bytes(*count))
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
        let mut idempotency_files = None;
        let mut saw_records = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "last_applied" => last_applied = Some(map.next_value()?),
                "membership" => membership = Some(map.next_value()?),
                "movements" => movements = Some(map.next_value()?),
                "ledger_through" => ledger_through = map.next_value()?,
                "idempotency_files" => idempotency_files = map.next_value()?,
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
            idempotency_files,
        })
    }
}

const FIELDS: &[&str] = &[
    "last_applied",
    "membership",
    "records",
    "movements",
    "ledger_through",
    "idempotency_files",
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
    use crate::inventory::{ApplyCtx, Command, IdempotencyKey, Inventory, LocationKind, Op};

    /// A body with a record of every kind: an item with attributes, a location, stock
    /// levels, an open reservation, idempotency records with and without
    /// `ledger_movements`, the clock; movements; a membership and an applied id.
    fn rich_body(ledger_through: Option<(u64, u32)>) -> SnapshotBody {
        let mut inv = Inventory::genesis();
        let ops = [
            Op::CreateItem {
                id: "sku-1".into(),
                name: "Widget é ✓".into(),
                unit: "each".into(),
                attributes: [("colour".to_string(), "red".to_string())].into(),
                low_stock_threshold: 3,
            },
            Op::CreateLocation {
                id: "w1".into(),
                name: "Main".into(),
                kind: LocationKind::Warehouse,
            },
            Op::Receive {
                item: "sku-1".into(),
                location: "w1".into(),
                quantity: 40,
                from: String::new(),
                reason: "po-1".into(),
                reference: "ref".into(),
            },
            Op::Reserve {
                id: "r1".into(),
                item: "sku-1".into(),
                location: "w1".into(),
                quantity: 5,
                ttl_ms: 60_000,
                reference: "order-9".into(),
            },
        ];
        let mut movements = Vec::new();
        for (n, op) in ops.into_iter().enumerate() {
            let ctx = ApplyCtx {
                revision: 1_024 * (n as u64 + 1),
                time_ms: 5_000 + n as u64,
                idempotency: Some(IdempotencyKey {
                    key: format!("key-{n}-{}", "x".repeat(30 * n)),
                    fingerprint: u64::MAX - n as u64,
                }),
            };
            let out = inv.apply(&Command::single(op), &ctx).result.unwrap();
            movements.extend(out.movements);
        }
        let mut records: Vec<Record> = inv.records().collect();
        // An earlier release's idempotency record: its movements inline, no count.
        for r in &mut records {
            if let Record::Idempotency { key, record } = r {
                if key.starts_with("key-2") {
                    record.ledger_movements = None;
                    record.outcome.movements = movements.clone();
                }
            }
        }
        assert!(records.iter().any(
            |r| matches!(r, Record::Idempotency { record, .. } if record.ledger_movements.is_some())
        ));
        let sample = membership_sample();
        SnapshotBody {
            last_applied: sample.last_applied,
            membership: sample.membership,
            records,
            movements: if ledger_through.is_some() {
                Vec::new()
            } else {
                movements
            },
            ledger_through,
            idempotency_files: None,
        }
    }

    /// A body with a three-node membership and an applied id (via JSON, the only way
    /// openraft's membership types are built here without a running cluster).
    fn membership_sample() -> SnapshotBody {
        let json = br#"{"last_applied":{"leader_id":{"term":3,"node_id":2},"index":77},
            "membership":{"log_id":{"leader_id":{"term":1,"node_id":1},"index":2},
            "membership":{"configs":[[1,2,3]],"nodes":{
            "1":{"peer_addr":"a:1","client_addr":"a:2","admin_addr":"a:3"},
            "2":{"peer_addr":"b:1","client_addr":"b:2","admin_addr":""},
            "3":{"peer_addr":"c:1","client_addr":"c:2","admin_addr":"c:3"}}}},
            "records":[],"movements":[]}"#;
        serde_json::from_slice(json).unwrap()
    }

    fn sample() -> Vec<u8> {
        let body = SnapshotBody {
            ledger_through: None,
            idempotency_files: None,
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

    /// A header with the right length and checksum around any body.
    fn sealed(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
        let mut out = magic.to_vec();
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        out.extend_from_slice(body);
        out
    }

    fn files_ref() -> FilesRef {
        FilesRef {
            start: 3,
            end: 12,
            before_ms: 5_002,
            live_from: Some((4_000, "key-0".into())),
            live_count: 3,
        }
    }

    /// A body that refers to idempotency files reads back with that reference, in both
    /// formats, and says it refers to local files.
    #[test]
    fn a_reference_to_the_idempotency_files_round_trips() {
        let mut body = rich_body(None);
        assert!(!body.refers_to_local_files());
        body.idempotency_files = Some(files_ref());
        assert!(body.refers_to_local_files());
        assert_eq!(decode(&encode_binary_body(&body).unwrap()).unwrap(), body);
        assert_eq!(decode(&encode(&body).unwrap()).unwrap(), body);
    }

    /// A file of the release before (`LLSNAP02`, whose head ends at `ledger_through`)
    /// still reads, with no idempotency files named.
    #[test]
    fn the_previous_binary_format_still_reads() {
        let body = rich_body(Some((4_096, 1)));
        let current = encode_binary_body(&body).unwrap();
        let head = BinaryHead {
            last_applied: body.last_applied,
            membership: body.membership.clone(),
            ledger_through: body.ledger_through,
            idempotency_files: None,
        };
        let head_len = postcard::to_stdvec(&head).unwrap().len();
        let v2 = BinaryHeadV2 {
            last_applied: body.last_applied,
            membership: body.membership.clone(),
            ledger_through: body.ledger_through,
        };
        let mut old = postcard::to_stdvec(&v2).unwrap();
        old.extend_from_slice(&current[HEADER_LEN + head_len..]);
        let old = sealed(MAGIC_BINARY_V2, &old);
        assert_eq!(decode(&old).unwrap(), body);
        let mut seen = Vec::new();
        decode_each(&old, &mut |r| seen.push(r)).unwrap();
        assert_eq!(seen, body.records);
    }

    #[test]
    fn the_binary_body_round_trips_every_record_kind() {
        for through in [None, Some((4_096, 1))] {
            let body = rich_body(through);
            let bytes = encode_binary_body(&body).unwrap();
            assert_eq!(&bytes[..8], MAGIC_BINARY);
            assert_eq!(decode(&bytes).unwrap(), body);
            let mut seen = Vec::new();
            let mut rest = decode_each(&bytes, &mut |r| seen.push(r)).unwrap();
            assert_eq!(seen, body.records);
            rest.records = seen;
            assert_eq!(rest, body);
            let json = encode(&body).unwrap();
            assert!(
                bytes.len() * 2 < json.len(),
                "{} vs {}",
                bytes.len(),
                json.len()
            );
        }
    }

    /// The borrowed walk of a state copy encodes byte for byte what its owned records do.
    #[test]
    fn encoding_a_state_copy_by_reference_equals_encoding_its_records() {
        let body = rich_body(Some((9, 0)));
        let mut inv = Inventory::genesis();
        for r in body.records.iter().cloned() {
            inv.load_record(r);
        }
        let copy = inv.copy_for_snapshot();
        let head = BinaryHead {
            last_applied: body.last_applied,
            membership: body.membership.clone(),
            ledger_through: body.ledger_through,
            idempotency_files: None,
        };
        let by_ref = encode_binary(&head, copy.record_count(), copy.records_ref(), &[]).unwrap();
        assert_eq!(by_ref, encode_binary_body(&body).unwrap());
    }

    /// Where `Record`'s derive writes every field, the binary record is the same bytes, so
    /// its hand-written variant indices are `Record`'s; where the derive would skip
    /// `ledger_movements`, only the binary record writes it, and it reads back.
    #[test]
    fn a_binary_record_is_postcard_of_the_record() {
        let body = rich_body(None);
        let mut skipped = 0;
        let mut stock = 0;
        for r in &body.records {
            let ours = postcard::to_stdvec(&BinaryRecord(RecordRef::from(r))).unwrap();
            assert_eq!(postcard::from_bytes::<Record>(&ours).unwrap(), *r);
            let theirs = postcard::to_stdvec(r).unwrap();
            match r {
                Record::Idempotency { record, .. } if record.ledger_movements.is_none() => {
                    skipped += 1;
                    assert_eq!(ours.len(), theirs.len() + 1, "one byte for `None`");
                }
                _ => assert_eq!(ours, theirs, "{r:?}"),
            }
            assert_eq!(
                postcard::to_stdvec(&BinaryRecord(RecordRef::Whole(r))).unwrap(),
                ours
            );
            if let Record::Stock {
                item,
                location,
                level,
            } = r
            {
                stock += 1;
                let shared = RecordRef::Stock {
                    item,
                    location,
                    level: *level,
                };
                assert_eq!(postcard::to_stdvec(&BinaryRecord(shared)).unwrap(), ours);
                assert_eq!(shared.to_record(), *r);
            }
        }
        assert!(stock > 0, "the body has stock levels");
        assert_eq!(skipped, 1);
    }

    /// Every cut of a binary body, every flipped byte, a count past the bytes and a byte
    /// past the end, each resealed with a correct checksum so the body decoder itself is
    /// tried: a precise error or (for a flip that still decodes) a body, never a panic.
    #[test]
    fn a_damaged_binary_body_is_refused_without_panicking() {
        let bytes = encode_binary_body(&rich_body(None)).unwrap();
        let body = &bytes[HEADER_LEN..];
        for cut in 0..body.len() {
            let r = decode(&sealed(MAGIC_BINARY, &body[..cut]));
            assert!(
                matches!(r, Err(SnapshotError::Decode(_))),
                "cut at {cut}: {r:?}"
            );
        }
        for at in 0..body.len() {
            let mut flipped = body.to_vec();
            flipped[at] ^= 0xff;
            let _ = decode(&sealed(MAGIC_BINARY, &flipped));
            let _ = decode_each(&sealed(MAGIC_BINARY, &flipped), &mut |_| {});
        }
        let mut longer = body.to_vec();
        longer.push(0);
        let err = decode(&sealed(MAGIC_BINARY, &longer)).unwrap_err();
        assert!(err.to_string().contains("after the last movement"), "{err}");
        // The movement count is the 8 bytes before the movements; a huge one is refused
        // before anything is allocated for it.
        let empty = encode_binary_body(&SnapshotBody {
            movements: Vec::new(),
            ..rich_body(None)
        })
        .unwrap();
        let mut huge = empty[HEADER_LEN..].to_vec();
        let at = huge.len() - 8;
        huge[at..].copy_from_slice(&u64::MAX.to_le_bytes());
        let err = decode(&sealed(MAGIC_BINARY, &huge)).unwrap_err();
        assert!(err.to_string().contains("movement count"), "{err}");
        // A JSON body under the binary magic, and the other way round.
        let json = encode(&rich_body(None)).unwrap();
        assert!(matches!(
            decode(&sealed(MAGIC_BINARY, &json[HEADER_LEN..])),
            Err(SnapshotError::Decode(_))
        ));
        assert!(matches!(
            decode(&sealed(MAGIC, body)),
            Err(SnapshotError::Decode(_))
        ));
    }
}
