//! The idempotency records' own files: the snapshot file of a node refers to them instead
//! of carrying every record, so a build writes only the records made since the last one.
//!
//! Why: a record is kept 24 h, one per keyed write, so at the load generator's rates the
//! table (~2.5 million records, ~150 MB encoded) was nearly all of every snapshot, and
//! every build rewrote it whole on every node at once: the write p99 at half of peak was
//! bound by those builds (benches/RESULTS.md). Records never change once written and leave
//! the table only in time order, so they suit append-only files.
//!
//! Layout: `<data>/idempotency/`, the segment files of `storage::wal`, one record per chunk
//! of up to `CHUNK_RECORDS` idempotency records:
//! `[FORMAT][newest time_ms: u64 LE][count: u32 LE]` + postcard `Vec<Entry>`.
//!
//! A build appends the records whose time is in `[previous before_ms, before_ms)`, where
//! `before_ms` is the copied state's clock (found through the state's time index, so a
//! build costs O(new records), not O(table)), then syncs, then writes the snapshot file whose
//! [`FilesRef`] names `before_ms`, the files' end, the first live record and the live
//! count. Records at the clock itself stay in the snapshot file (a later entry may still
//! add one at that millisecond), so each record is in the files at most once.
//!
//! Invariants, relied on by `load` (and checked there, so a broken one is reported as
//! corruption, not loaded):
//! - a record's time is the state's clock when it was made, and the clock never goes back,
//!   so records made after a build have times at or past that build's `before_ms`;
//! - expiry removes records in `(time_ms, key)` order and only those older than the clock
//!   less the retention, so every removed record sorts before every record still held, and
//!   the live records in the files are exactly those from `live_from` on;
//! - the files past the current snapshot's `end` are a build that a crash cut short (or
//!   the records of a replaced state): `keep_only` cuts them before anything is appended.
//!
//! Whole segments whose chunks are all older than `live_from` are deleted after the
//! snapshot naming it is the checkpoint (`drop_dead`). A peer or a backup never sees these
//! files: a snapshot leaving the node carries every record (`state_machine`).

use crate::inventory::{IdempotencyRecord, Outcome};
use crate::storage::wal::Wal;
use crate::storage::write_pace::WritePace;
use crate::storage::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The directory under the data directory.
pub const DIR: &str = "idempotency";

/// Most records per chunk: ~60 bytes each, so a chunk is ~120 KB.
pub const CHUNK_RECORDS: usize = 2048;

/// Most chunks read from the files per call while loading: bounds the memory a start
/// holds in undecoded bytes.
const READ_CHUNKS: usize = 32;

/// Segment file size; open reads each segment whole.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// First byte of a chunk, so the chunk format can change.
const FORMAT: u8 = 1;

/// `[FORMAT][newest time_ms][count]` ahead of the postcard body.
const PREFIX_BYTES: usize = 1 + 8 + 4;

/// What a snapshot file says of the records it leaves in these files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesRef {
    /// The snapshot's records are in chunks from this index (those before it are a
    /// replaced state's, which a truncate may have left in a segment's hidden front)...
    pub start: u64,
    /// ...up to this one, exclusive: the chunks from it on are no snapshot's.
    pub end: u64,
    /// Every record older than this is in the files, and none at or past it.
    pub before_ms: u64,
    /// `(time_ms, key)` of the oldest record of the files still live; `None`: none is.
    pub live_from: Option<(u64, String)>,
    /// How many records of the files are live: `load` must find exactly these.
    pub live_count: u64,
}

/// What a build tells `append_before` of the records older than `before_ms` (the
/// copied state's clock): from its time index, without a scan of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Older<'a> {
    pub before_ms: u64,
    /// How many records are older than `before_ms`.
    pub count: u64,
    /// The oldest of them, `(time_ms, key)`.
    pub oldest: Option<(u64, &'a str)>,
}

/// The time from which a build appends: the records before it are in the files already
/// (all of them are to be appended when the current snapshot names no files).
pub fn appended_from_ms(current: Option<&FilesRef>) -> u64 {
    current.map_or(0, |r| r.before_ms)
}

/// One record in a chunk (postcard is positional, so every field is written).
#[derive(Serialize)]
struct EntryRef<'a> {
    key: &'a str,
    fingerprint: u64,
    time_ms: u64,
    outcome: &'a Outcome,
    ledger_movements: Option<u32>,
}

#[derive(Deserialize)]
struct Entry {
    key: String,
    fingerprint: u64,
    time_ms: u64,
    outcome: Outcome,
    ledger_movements: Option<u32>,
}

/// The files, and each chunk's newest record time (for `drop_dead`), oldest chunk first.
pub struct Store {
    dir: PathBuf,
    wal: Wal,
    newest_ms: Mutex<VecDeque<(u64, u64)>>,
}

/// A chunk of `chunk`'s records, whose newest record time is `newest`.
fn encode_chunk(chunk: &[(&str, &IdempotencyRecord)], newest: u64) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(PREFIX_BYTES + chunk.len() * 64);
    out.push(FORMAT);
    out.extend_from_slice(&newest.to_le_bytes());
    out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
    let entries: Vec<EntryRef<'_>> = chunk
        .iter()
        .map(|(key, r)| EntryRef {
            key,
            fingerprint: r.fingerprint,
            time_ms: r.time_ms,
            outcome: &r.outcome,
            ledger_movements: r.ledger_movements,
        })
        .collect();
    postcard::to_io(&entries, out)
        .map_err(|e| StoreError::Encode(format!("idempotency chunk: {e}")))
}

/// A chunk's newest record time and record count, from its prefix alone.
fn chunk_prefix(payload: &[u8]) -> Result<(u64, u32), String> {
    if payload.len() < PREFIX_BYTES {
        return Err(format!("{} bytes, shorter than its prefix", payload.len()));
    }
    if payload[0] != FORMAT {
        return Err(format!("unknown chunk format {}", payload[0]));
    }
    let mut newest = [0u8; 8];
    newest.copy_from_slice(&payload[1..9]);
    let mut count = [0u8; 4];
    count.copy_from_slice(&payload[9..13]);
    Ok((u64::from_le_bytes(newest), u32::from_le_bytes(count)))
}

fn decode_chunk(payload: &[u8]) -> Result<Vec<Entry>, String> {
    let (newest, count) = chunk_prefix(payload)?;
    let entries: Vec<Entry> =
        postcard::from_bytes(&payload[PREFIX_BYTES..]).map_err(|e| format!("postcard: {e}"))?;
    if entries.len() != count as usize {
        return Err(format!(
            "{} records where its prefix says {count}",
            entries.len()
        ));
    }
    if entries.iter().any(|e| e.time_ms > newest) {
        return Err(format!("a record newer than its prefix's {newest} ms"));
    }
    Ok(entries)
}

impl Store {
    /// Opens (creating if needed) the files in `dir`, checking every chunk's checksum and
    /// prefix. A torn end (an append a crash cut) is cut; the snapshot that would have
    /// named it was never written.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        // Each chunk's index and newest record time (or why its prefix is unreadable).
        type Visited = (u64, Result<u64, String>);
        let mut prefixes: Vec<Visited> = Vec::new();
        let (wal, recovery) = Wal::open_visiting(dir, SEGMENT_BYTES, None, &mut |i, payload| {
            prefixes.push((i, chunk_prefix(payload).map(|(newest, _)| newest)));
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            wal,
            newest_ms: Mutex::new(VecDeque::new()),
        };
        let mut newest = VecDeque::with_capacity(prefixes.len());
        for (i, prefix) in prefixes {
            let ms = prefix.map_err(|reason| store.corrupt(i, reason))?;
            newest.push_back((i, ms));
        }
        tracing::info!(
            chunks = newest.len(),
            bytes = store.wal.size_bytes(),
            torn_bytes = recovery.torn_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened the idempotency files"
        );
        *store.chunks() = newest;
        Ok(store)
    }

    fn corrupt(&self, index: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            key: format!("{} chunk {index}", self.dir.display()),
            reason,
        }
    }

    fn chunks(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, u64)>> {
        self.newest_ms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of the files on disk.
    pub fn size_bytes(&self) -> u64 {
        self.wal.size_bytes()
    }

    /// Cuts every chunk past what `current` (the current snapshot's reference, `None`
    /// when it carries all its records) names, durably.
    pub fn keep_only(&self, current: Option<&FilesRef>) -> Result<(), StoreError> {
        let cut = match current {
            Some(r) => r.end,
            None => match self.wal.first_index() {
                Some(first) => first,
                None => return Ok(()),
            },
        };
        if cut < self.wal.next_index() {
            tracing::info!(
                from_chunk = cut,
                "idempotency files: cutting chunks no snapshot names"
            );
            self.wal.truncate_from(cut)?;
            self.chunks().retain(|(i, _)| *i < cut);
        }
        Ok(())
    }

    /// Appends `new`, the records made from `appended_from_ms(current)` up to
    /// `older.before_ms` (all those older than it when `current` is `None`), synced, and
    /// returns the reference a snapshot file of this state makes to the files. Written at
    /// `pace`, as a snapshot file is: fdatasynced every `pace.sync_bytes` and no faster
    /// than its rate, so that a Raft log fdatasync, which on ext4 waits for the data
    /// appended before it, never waits behind more than a piece. Cuts what no snapshot
    /// names first. A record outside that time range is refused (nothing is named).
    pub fn append_before<'a>(
        &self,
        current: Option<&FilesRef>,
        new: impl Iterator<Item = (&'a str, &'a IdempotencyRecord)>,
        older: Older<'_>,
        pace: WritePace,
    ) -> Result<FilesRef, StoreError> {
        let from_ms = appended_from_ms(current);
        let before_ms = older.before_ms;
        if before_ms < from_ms {
            return Err(StoreError::Engine(format!(
                "idempotency files: the state's clock {before_ms} ms is before the last \
                 snapshot's {from_ms} ms"
            )));
        }
        self.keep_only(current)?;
        let start = current.map_or(self.wal.next_index(), |r| r.start);
        let mut chunk: Vec<(&str, &IdempotencyRecord)> = Vec::with_capacity(CHUNK_RECORDS);
        let mut written: u64 = 0;
        let mut synced: u64 = 0;
        let mut started: Option<std::time::Instant> = None;
        let mut paced = |written: u64| -> Result<(), StoreError> {
            // The pace counts from the first write, so no credit gathers before it.
            let started = *started.get_or_insert_with(std::time::Instant::now);
            if written - synced >= pace.sync_bytes as u64 {
                self.wal.sync()?;
                synced = written;
                let wait_us = pace.wait_us(written, started.elapsed().as_micros() as u64);
                if wait_us > 0 {
                    std::thread::sleep(std::time::Duration::from_micros(wait_us));
                }
            }
            Ok(())
        };
        for (key, record) in new {
            if !(from_ms..before_ms).contains(&record.time_ms) {
                return Err(StoreError::Engine(format!(
                    "idempotency files: record {key} at {} ms is outside the build's \
                     [{from_ms}, {before_ms}) ms",
                    record.time_ms
                )));
            }
            chunk.push((key, record));
            if chunk.len() == CHUNK_RECORDS {
                written += self.append_chunk(&chunk)?;
                chunk.clear();
                paced(written)?;
            }
        }
        if !chunk.is_empty() {
            self.append_chunk(&chunk)?;
        }
        self.wal.sync()?;
        Ok(FilesRef {
            start,
            end: self.wal.next_index(),
            before_ms,
            live_from: older.oldest.map(|(t, k)| (t, k.to_owned())),
            live_count: older.count,
        })
    }

    fn append_chunk(&self, chunk: &[(&str, &IdempotencyRecord)]) -> Result<u64, StoreError> {
        let newest = chunk.iter().map(|(_, r)| r.time_ms).max().unwrap_or(0);
        let payload = encode_chunk(chunk, newest)?;
        let bytes = payload.len() as u64;
        let index = self.wal.next_index();
        self.wal.append_unsynced(&[(index, payload)])?;
        self.chunks().push_back((index, newest));
        Ok(bytes)
    }

    /// Hands every live record `r` names to `on_record`, and checks that there are
    /// exactly `r.live_count` of them, all older than `r.before_ms`.
    pub fn load(
        &self,
        r: &FilesRef,
        on_record: &mut dyn FnMut(String, IdempotencyRecord),
    ) -> Result<(), StoreError> {
        let mut found: u64 = 0;
        if let Some(live_from) = &r.live_from {
            let live_from = (live_from.0, live_from.1.as_str());
            let mut next = self.wal.first_index().unwrap_or(r.end).max(r.start);
            while next < r.end {
                let rows = self.wal.read(next, r.end, READ_CHUNKS)?;
                let Some((last, _)) = rows.last() else {
                    break;
                };
                next = last + 1;
                for (i, payload) in rows {
                    let entries = decode_chunk(&payload).map_err(|e| self.corrupt(i, e))?;
                    for e in entries {
                        if e.time_ms >= r.before_ms {
                            return Err(self.corrupt(
                                i,
                                format!(
                                    "a record at {} ms, not before the snapshot's {} ms",
                                    e.time_ms, r.before_ms
                                ),
                            ));
                        }
                        if (e.time_ms, e.key.as_str()) < live_from {
                            continue; // expired since it was written
                        }
                        found += 1;
                        on_record(
                            e.key,
                            IdempotencyRecord {
                                fingerprint: e.fingerprint,
                                time_ms: e.time_ms,
                                outcome: e.outcome,
                                ledger_movements: e.ledger_movements,
                            },
                        );
                    }
                }
            }
        }
        if found != r.live_count {
            return Err(StoreError::Corrupt {
                key: self.dir.display().to_string(),
                reason: format!(
                    "holds {found} live idempotency records where the snapshot names {}",
                    r.live_count
                ),
            });
        }
        Ok(())
    }

    /// Deletes the oldest chunks while every record in them is older than `r.live_from`
    /// (all of them before `r.end` when nothing is live), or is before `r.start`: whole
    /// segments go, through the reaper. Call once the snapshot naming `r` is the
    /// checkpoint.
    pub fn drop_dead(&self, r: &FilesRef) -> Result<(), StoreError> {
        let dead_before = r.live_from.as_ref().map(|(t, _)| *t);
        let mut chunks = self.chunks();
        let mut last_dead = None;
        while let Some(&(i, newest)) = chunks.front() {
            let dead = i < r.end && (i < r.start || dead_before.is_none_or(|t| newest < t));
            if !dead {
                break;
            }
            last_dead = Some(i);
            chunks.pop_front();
        }
        drop(chunks);
        if let Some(i) = last_dead {
            self.wal.purge_to(i)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(time_ms: u64, revision: u64) -> IdempotencyRecord {
        IdempotencyRecord {
            fingerprint: revision * 7,
            time_ms,
            outcome: Outcome {
                revision,
                movements: Vec::new(),
                reservations: vec![format!("r{revision}")],
                replayed: false,
            },
            ledger_movements: Some(1),
        }
    }

    fn table(times: &[(u64, &str)]) -> Vec<(String, IdempotencyRecord)> {
        times
            .iter()
            .enumerate()
            .map(|(n, (t, k))| (k.to_string(), record(*t, n as u64 + 1)))
            .collect()
    }

    fn refs(t: &[(String, IdempotencyRecord)]) -> impl Iterator<Item = (&str, &IdempotencyRecord)> {
        t.iter().map(|(k, r)| (k.as_str(), r))
    }

    /// What a build does with the state's time index, here by scanning `table`: appends
    /// its records made since `current` and before `before_ms`.
    fn build(
        store: &Store,
        current: Option<&FilesRef>,
        table: &[(String, IdempotencyRecord)],
        before_ms: u64,
        pace: WritePace,
    ) -> Result<FilesRef, StoreError> {
        let from_ms = appended_from_ms(current);
        let older: Vec<_> = refs(table).filter(|(_, r)| r.time_ms < before_ms).collect();
        let summary = Older {
            before_ms,
            count: older.len() as u64,
            oldest: older.iter().map(|(k, r)| (r.time_ms, *k)).min(),
        };
        let new = older.into_iter().filter(|(_, r)| r.time_ms >= from_ms);
        store.append_before(current, new, summary, pace)
    }

    fn loaded(store: &Store, r: &FilesRef) -> Vec<(String, IdempotencyRecord)> {
        let mut out = Vec::new();
        store
            .load(r, &mut |k, rec| out.push((k, rec)))
            .expect("loads");
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn builds_append_only_what_is_new_and_a_reopen_loads_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = table(&[(10, "a"), (12, "b"), (15, "c")]);
        let r1 = build(&store, None, &first, 15, WritePace::UNPACED).unwrap();
        // "c" is at the clock: it stays in the snapshot file.
        assert_eq!(r1.live_count, 2);
        assert_eq!(r1.live_from, Some((10, "a".to_string())));
        assert_eq!(loaded(&store, &r1), first[..2].to_vec());

        // "a" expired; "d" and "e" came; the next build adds "c" and "d" only.
        let mut second = first[1..].to_vec();
        second.extend(table(&[(20, "d"), (30, "e")]));
        let size_before = store.size_bytes();
        let r2 = build(&store, Some(&r1), &second, 30, WritePace::UNPACED).unwrap();
        assert!(store.size_bytes() > size_before);
        assert_eq!(r2.live_count, 3, "b, c, d");
        assert_eq!(r2.live_from, Some((12, "b".to_string())));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let mut want = second[..3].to_vec();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(loaded(&store, &r2), want);
    }

    #[test]
    fn a_build_a_crash_cut_short_is_cut_before_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = table(&[(10, "a"), (20, "b")]);
        let r1 = build(&store, None, &t, 15, WritePace::UNPACED).unwrap();
        // A second build wrote "b" and crashed before its snapshot file: the snapshot is
        // still r1, so "b" must not be loaded, and the next build writes it again once.
        build(&store, Some(&r1), &t, 25, WritePace::UNPACED).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.keep_only(Some(&r1)).unwrap();
        assert_eq!(loaded(&store, &r1), t[..1].to_vec());
        let r2 = build(&store, Some(&r1), &t, 25, WritePace::UNPACED).unwrap();
        assert_eq!(loaded(&store, &r2), t);
    }

    /// An install replaces the state: the next build starts the files again (`start`).
    /// A chunk that an expiry had hidden in the front of a segment survives the truncate
    /// and is visible again after a reopen; it is not loaded.
    #[test]
    fn after_a_replaced_state_only_the_chunks_from_its_start_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = table(&[(10, "a"), (20, "b"), (30, "c")]);
        let r1 = build(&store, None, &old[..1], 15, WritePace::UNPACED).unwrap();
        let r2 = build(&store, Some(&r1), &old[..2], 25, WritePace::UNPACED).unwrap();
        let r3 = build(&store, Some(&r2), &old[1..], 35, WritePace::UNPACED).unwrap();
        store.drop_dead(&r3).unwrap(); // hides the chunk of "a" only: the segment stays
        assert_eq!(r3.start, 0);

        let new = table(&[(10, "a"), (50, "d")]);
        store.keep_only(None).unwrap();
        let r4 = build(&store, None, &new, 60, WritePace::UNPACED).unwrap();
        assert!(r4.start > 0, "{r4:?}");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        store.keep_only(Some(&r4)).unwrap();
        assert_eq!(loaded(&store, &r4), new);
    }

    /// A build's append keeps to its pace: two whole chunks of ~470 KB each at 10 MB/s
    /// take at least 90 ms (the last, partial chunk is not waited for).
    #[test]
    fn an_append_keeps_to_its_pace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let pad = "x".repeat(200);
        let t: Vec<(String, IdempotencyRecord)> = (0..5_000u64)
            .map(|n| {
                let mut r = record(10, n + 1);
                r.outcome.reservations = vec![pad.clone()];
                (format!("k{n:04}"), r)
            })
            .collect();
        let pace = WritePace {
            sync_bytes: 64 * 1024,
            bytes_per_s: Some(10_000_000),
        };
        let started = std::time::Instant::now();
        let r = build(&store, None, &t, 11, pace).unwrap();
        assert!(store.size_bytes() > 1_000_000, "{}", store.size_bytes());
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(90),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(loaded(&store, &r), t);
    }

    #[test]
    fn files_that_do_not_match_the_snapshot_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = table(&[(10, "a"), (11, "b")]);
        let r = build(&store, None, &t, 12, WritePace::UNPACED).unwrap();
        let claims_more = FilesRef {
            live_count: 3,
            ..r.clone()
        };
        let err = store.load(&claims_more, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("holds 2 live"), "{err}");
        let says_older = FilesRef {
            before_ms: 11,
            ..r.clone()
        };
        let err = store.load(&says_older, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("not before"), "{err}");
        // The files deleted under the node: the records are missing, not silently empty.
        drop(store);
        std::fs::remove_dir_all(dir.path()).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.load(&r, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("holds 0 live"), "{err}");
    }

    #[test]
    fn a_clock_before_the_last_snapshot_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = table(&[(10, "a")]);
        let r = build(&store, None, &t, 20, WritePace::UNPACED).unwrap();
        let size = store.size_bytes();
        let err = build(&store, Some(&r), &t, 19, WritePace::UNPACED).unwrap_err();
        assert!(
            err.to_string().contains("before the last snapshot"),
            "{err}"
        );
        assert_eq!(store.size_bytes(), size);
    }

    /// A record the time index should not have given (outside the build's range) is
    /// refused, and no snapshot can name what was appended.
    #[test]
    fn a_record_outside_the_builds_time_range_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t = table(&[(10, "a"), (30, "b")]);
        let r = build(&store, None, &t, 20, WritePace::UNPACED).unwrap();
        let older = Older {
            before_ms: 40,
            count: 2,
            oldest: Some((10, "a")),
        };
        // "a" was appended by the build before: it is not new.
        let err = store
            .append_before(Some(&r), refs(&t), older, WritePace::UNPACED)
            .unwrap_err();
        assert!(
            err.to_string().contains("outside the build's [20, 40)"),
            "{err}"
        );
        assert_eq!(loaded(&store, &r), t[..1].to_vec());
    }

    #[test]
    fn whole_segments_of_expired_records_are_deleted_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Enough builds of full chunks to fill several 16 MiB segments: each record's
        // reservation id pads it to ~1 KiB.
        let mut current: Option<FilesRef> = None;
        let mut all: Vec<(String, IdempotencyRecord)> = Vec::new();
        let pad = "x".repeat(1000);
        for round in 0..40u64 {
            for n in 0..CHUNK_RECORDS as u64 {
                let mut r = record(round * 10, round * 10_000 + n + 1);
                r.outcome.reservations = vec![pad.clone()];
                all.push((format!("k{round:03}-{n:05}"), r));
            }
            let next = build(
                &store,
                current.as_ref(),
                &all,
                round * 10 + 1,
                WritePace::UNPACED,
            );
            current = Some(next.unwrap());
        }
        let size = store.size_bytes();
        assert!(size > 3 * SEGMENT_BYTES, "{size}");
        // Everything before build 30 expires.
        let live: Vec<_> = all
            .iter()
            .filter(|(_, r)| r.time_ms >= 300)
            .cloned()
            .collect();
        let r = build(&store, current.as_ref(), &live, 400, WritePace::UNPACED).unwrap();
        store.drop_dead(&r).unwrap();
        assert!(
            store.size_bytes() < size / 2,
            "{} of {size}",
            store.size_bytes()
        );
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let mut want = live.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(loaded(&store, &r), want);
    }
}
