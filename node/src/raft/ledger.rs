//! The stored ledger: every movement, in `(revision, seq)` order, kept in the engine in
//! chunks. A chunk is one engine value holding consecutive movements, keyed by its first
//! movement's `(revision, seq)`; the next chunk starts after its last. Apply gathers the
//! newest movements in memory (`Tail`) and writes them as one chunk once
//! `CHUNK_MOVEMENTS` have gathered, or before a snapshot refers to the ledger: a sled insert
//! (and the background writing it causes) cost about as much per apply call as the
//! rules of a dozen writes, and one insert per entry was a quarter of a follower's CPU
//! (benches/RESULTS.md).
//!
//! Invariants: chunks never overlap and never hold an empty list; the stored movements are
//! a dense prefix of the replicated ledger (a crash keeps whole engine batches, in order),
//! and the tail continues it without a gap. An earlier release stored one movement per
//! value under the same keys; such values read as chunks of one. Reads take an inclusive
//! upper bound, `through`, so a reader never sees movements past the state it reads with.

use crate::inventory::Movement;
use crate::storage::{frame, keys, Batch, Engine, StoreError};

/// Most movements in one chunk: bounds a value's size (a movement encodes to ~300 bytes).
pub const CHUNK_MOVEMENTS: usize = 512;

/// Chunks read per engine call while scanning.
const READ_CHUNKS: usize = 64;

fn at(m: &Movement) -> (u64, u32) {
    (m.revision, m.seq)
}

/// The applied movements not yet in the engine: those right after the stored ones, in
/// order. Lost in a crash like any unflushed engine write; the log re-applies them.
#[derive(Debug, Default)]
pub struct Tail {
    movements: Vec<Movement>,
}

impl Tail {
    /// Adds movements applied after every one already held (and after the stored ones).
    pub fn extend(&mut self, movements: &[Movement]) {
        if let (Some(last), Some(first)) = (self.movements.last(), movements.first()) {
            assert!(at(last) < at(first), "the tail grows in ledger order");
        }
        self.movements.extend_from_slice(movements);
    }

    /// Whether a whole chunk has gathered, so apply should store it.
    pub fn is_full(&self) -> bool {
        self.movements.len() >= CHUNK_MOVEMENTS
    }

    /// Puts every held movement into `batch` as chunks; returns the newest, which the
    /// stored ledger ends at once `batch` is written (`None`: nothing is held). The tail
    /// keeps them until the caller has written `batch` and calls `clear`.
    pub fn encode_into(&self, batch: &mut Batch) -> Result<Option<(u64, u32)>, StoreError> {
        append(batch, &self.movements)?;
        Ok(self.last())
    }

    /// Drops every held movement (stored, or an install replaced the ledger).
    pub fn clear(&mut self) {
        self.movements.clear();
    }

    pub fn first(&self) -> Option<(u64, u32)> {
        self.movements.first().map(at)
    }

    pub fn last(&self) -> Option<(u64, u32)> {
        self.movements.last().map(at)
    }

    /// The held movements at or after `from`.
    pub fn since(&self, from: (u64, u32)) -> &[Movement] {
        &self.movements[self.movements.partition_point(|m| at(m) < from)..]
    }

    /// The newest `limit` held movements, oldest first.
    pub fn newest(&self, limit: usize) -> &[Movement] {
        &self.movements[self.movements.len().saturating_sub(limit)..]
    }
}

/// A reader's view of the ledger as applied, taken under the state lock: the engine's
/// movements through `stored` (bounded, so a tail stored after the view was taken is not
/// read twice), then `tail`, a copy of the tail movements the reader may need.
#[derive(Debug, Default)]
pub struct View {
    pub stored: Option<(u64, u32)>,
    pub tail: Vec<Movement>,
}

impl View {
    /// Up to `limit` movements at or after `from`, oldest first.
    pub fn read<E: Engine + ?Sized>(
        &self,
        engine: &E,
        from: (u64, u32),
        limit: usize,
    ) -> Result<Vec<Movement>, StoreError> {
        let mut out = read(engine, from, self.stored, limit)?;
        let rest = limit - out.len();
        out.extend(
            self.tail
                .iter()
                .filter(|m| at(m) >= from)
                .take(rest)
                .cloned(),
        );
        Ok(out)
    }

    /// The newest `limit` movements, newest first.
    pub fn read_newest<E: Engine + ?Sized>(
        &self,
        engine: &E,
        limit: usize,
    ) -> Result<Vec<Movement>, StoreError> {
        let mut out: Vec<Movement> = self.tail.iter().rev().take(limit).cloned().collect();
        let rest = limit - out.len();
        out.extend(read_newest(engine, self.stored, rest)?);
        Ok(out)
    }
}

/// Puts `movements` (consecutive, in order, none stored yet) into `batch` as chunks.
pub fn append(batch: &mut Batch, movements: &[Movement]) -> Result<(), StoreError> {
    for chunk in movements.chunks(CHUNK_MOVEMENTS) {
        let first = &chunk[0];
        batch.put(
            keys::movement(first.revision, first.seq),
            frame::encode(&chunk)?,
        );
    }
    Ok(())
}

fn decode_chunk(key: &[u8], value: &[u8]) -> Result<Vec<Movement>, StoreError> {
    match frame::decode::<Vec<Movement>>(key, value) {
        Ok(chunk) if !chunk.is_empty() => Ok(chunk),
        Ok(_) => Err(StoreError::Corrupt {
            key: keys::display(key),
            reason: "an empty ledger chunk".into(),
        }),
        // An earlier release's single movement; if that fails too, report the first error.
        Err(e) => frame::decode::<Movement>(key, value)
            .map(|m| vec![m])
            .map_err(|_| e),
    }
}

fn after(at: (u64, u32)) -> Vec<u8> {
    let mut k = keys::movement(at.0, at.1);
    k.push(0); // after (revision, seq), before (revision, seq + 1)
    k
}

/// The newest stored movement's `(revision, seq)`.
pub fn last<E: Engine + ?Sized>(engine: &E) -> Result<Option<(u64, u32)>, StoreError> {
    match engine.last_in(keys::MOVEMENT_START, keys::MOVEMENT_END)? {
        Some((k, v)) => Ok(decode_chunk(&k, &v)?.last().map(|m| (m.revision, m.seq))),
        None => Ok(None),
    }
}

/// Up to `limit` movements with `from <= (revision, seq) <= through`, oldest first.
pub fn read<E: Engine + ?Sized>(
    engine: &E,
    from: (u64, u32),
    through: Option<(u64, u32)>,
    limit: usize,
) -> Result<Vec<Movement>, StoreError> {
    let mut out = Vec::new();
    let Some(through) = through else {
        return Ok(out);
    };
    if from > through || limit == 0 {
        return Ok(out);
    }
    let end = after(through);
    let from_key = keys::movement(from.0, from.1);
    // The chunk holding `from` starts at or before it.
    let mut start = match engine
        .range_rev(keys::MOVEMENT_START, &after(from), 1)?
        .pop()
    {
        Some((k, _)) => k,
        None => from_key,
    };
    loop {
        let rows = engine.range(&start, &end, READ_CHUNKS)?;
        let Some((last_key, _)) = rows.last() else {
            return Ok(out);
        };
        start = last_key.clone();
        start.push(0);
        for (k, v) in &rows {
            for m in decode_chunk(k, v)? {
                let at = (m.revision, m.seq);
                if at < from {
                    continue;
                }
                if at > through {
                    return Ok(out);
                }
                out.push(m);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }
}

/// Up to `limit` movements with `(revision, seq) <= through`, newest first.
pub fn read_newest<E: Engine + ?Sized>(
    engine: &E,
    through: Option<(u64, u32)>,
    limit: usize,
) -> Result<Vec<Movement>, StoreError> {
    let mut out = Vec::new();
    let Some(through) = through else {
        return Ok(out);
    };
    let mut end = after(through);
    while out.len() < limit {
        let rows = engine.range_rev(keys::MOVEMENT_START, &end, READ_CHUNKS)?;
        let Some((first_key, _)) = rows.last() else {
            return Ok(out);
        };
        end = first_key.clone();
        for (k, v) in &rows {
            for m in decode_chunk(k, v)?.into_iter().rev() {
                if (m.revision, m.seq) <= through && out.len() < limit {
                    out.push(m);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::MovementKind;
    use crate::storage::SledEngine;

    fn movement(revision: u64, seq: u32) -> Movement {
        Movement {
            revision,
            seq,
            kind: MovementKind::Adjust,
            item: format!("i{revision}"),
            from: "adjustment".into(),
            to: "w".into(),
            quantity: 1,
            reason: String::new(),
            reference: String::new(),
            time_ms: 1,
            reservation: String::new(),
        }
    }

    /// Chunks of several sizes, an earlier release's single-movement values among them:
    /// every bounded forward and backward read equals the same read of a plain list.
    #[test]
    fn reads_across_chunks_and_old_single_values_equal_a_plain_list() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(&dir.path().join("db")).unwrap();
        let mut all = Vec::new();
        let next = |n: usize, all: &mut Vec<Movement>| -> Vec<Movement> {
            let start = all.len();
            for _ in 0..n {
                let i = all.len() as u64;
                all.push(movement(10 + i / 3, (i % 3) as u32));
            }
            all[start..].to_vec()
        };
        let old = next(4, &mut all);
        let mut b = Batch::default();
        for m in &old {
            b.put(keys::movement(m.revision, m.seq), frame::encode(m).unwrap());
        }
        engine.write(b).unwrap();
        for n in [1, 5, CHUNK_MOVEMENTS + 3, 2] {
            let chunk = next(n, &mut all);
            let mut b = Batch::default();
            append(&mut b, &chunk).unwrap();
            engine.write(b).unwrap();
        }
        let at = |m: &Movement| (m.revision, m.seq);
        assert_eq!(last(&engine).unwrap(), all.last().map(at));
        let probes = [0usize, 1, 3, 4, 5, 9, 10, 300, all.len() - 2, all.len() - 1];
        for &f in &probes {
            for &t in &probes {
                for limit in [1, 7, usize::MAX] {
                    let want: Vec<_> = all[f..=t.max(f)]
                        .iter()
                        .filter(|m| at(m) <= at(&all[t]))
                        .take(limit)
                        .cloned()
                        .collect();
                    let got = read(&engine, at(&all[f]), Some(at(&all[t])), limit).unwrap();
                    assert_eq!(got, want, "read from {f} through {t}, limit {limit}");
                }
            }
            for limit in [1, 7, 600, usize::MAX] {
                let want: Vec<_> = all[..=f].iter().rev().take(limit).cloned().collect();
                let got = read_newest(&engine, Some(at(&all[f])), limit).unwrap();
                assert_eq!(got, want, "newest through {f}, limit {limit}");
            }
        }
        assert!(read(&engine, (0, 0), None, 10).unwrap().is_empty());
        assert!(read_newest(&engine, None, 10).unwrap().is_empty());
    }

    #[test]
    fn an_empty_or_corrupt_chunk_is_reported_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(&dir.path().join("db")).unwrap();
        let mut b = Batch::default();
        b.put(
            keys::movement(5, 0),
            frame::encode(&Vec::<Movement>::new()).unwrap(),
        );
        engine.write(b).unwrap();
        let err = read(&engine, (0, 0), Some((9, 0)), 10).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

        let mut bytes = frame::encode(&vec![movement(6, 0)]).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        let mut b = Batch::default();
        b.delete(keys::movement(5, 0));
        b.put(keys::movement(6, 0), bytes);
        engine.write(b).unwrap();
        let err = last(&engine).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
