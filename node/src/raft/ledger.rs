//! The stored ledger: every movement, in `(revision, seq)` order, in append-only segment
//! files of its own (`<data>/ledger/`, the format of `storage::wal`), one record per chunk
//! of consecutive movements. It was in sled until the eleventh session: sled's write
//! volume for it (about 50 MB/s at 9 000 writes/s, in bursts of up to 136 MB per 100 ms)
//! is what the Raft log's fdatasyncs queued behind, the bound on the write p99
//! (benches/RESULTS.md). Here a chunk is one `pwrite` of its postcard bytes, and nothing
//! is rewritten.
//!
//! Apply gathers the newest movements in memory (`Tail`) and appends them as one chunk
//! once `CHUNK_MOVEMENTS` have gathered, or before a snapshot refers to the ledger. An
//! append is not synced: `sync` makes the ledger durable before a snapshot file refers to
//! it. A crash loses at most a suffix of what was appended since the last sync (the torn
//! end is cut on open), which the log re-applies.
//!
//! Invariants: chunks hold at least one movement each, in strictly increasing order, and
//! the chunks follow each other in that order; the stored movements are a dense prefix of
//! the replicated ledger and the tail continues it without a gap. The chunk index (each
//! chunk's first movement, 12 bytes per 512 movements) is in memory, built on open from
//! each record's header. Reads take an inclusive upper bound, `through`, so a reader never
//! sees movements past the state it reads with.
//!
//! An earlier release kept the chunks in the engine (sled) under `v` keys, as JSON frames,
//! or one movement per value before that; `Store::open` moves them into the files once.

use crate::inventory::Movement;
use crate::storage::wal::Wal;
use crate::storage::{frame, keys, Batch, Engine, StoreError};
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Most movements in one chunk: bounds a record's size (a movement encodes to ~100 bytes
/// in postcard) and the work of reading one movement.
pub const CHUNK_MOVEMENTS: usize = 512;

/// The ledger's directory under the data directory.
pub const DIR: &str = "ledger";

/// Most chunks read from the files per call while scanning.
const READ_CHUNKS: usize = 64;

/// Segment file size: the files are read whole when the ledger is opened, so this bounds
/// the memory that takes.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

/// First byte of a chunk record, so the record format can change.
const FORMAT: u8 = 1;

/// `[FORMAT][first revision: u64 LE][first seq: u32 LE]` ahead of the postcard chunk:
/// what open reads to index a chunk without decoding it.
const PREFIX_BYTES: usize = 13;

/// Set in the engine once an earlier release's `v` chunks are wholly in the files (and
/// synced): from then on the files are the ledger and leftover `v` keys are deleted.
const MOVED_FROM_ENGINE: &[u8] = b"a/ledger-in-files";

fn at(m: &Movement) -> (u64, u32) {
    (m.revision, m.seq)
}

/// The applied movements not yet in the store: those right after the stored ones, in
/// order. Lost in a crash like any unsynced append; the log re-applies them.
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

    /// Every held movement, oldest first.
    pub fn all(&self) -> &[Movement] {
        &self.movements
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

/// A reader's view of the ledger as applied, taken under the state lock: the store's
/// movements through `stored` (bounded, so a tail stored after the view was taken is not
/// read twice), then `tail`, a copy of the tail movements the reader may need.
#[derive(Debug, Default)]
pub struct View {
    pub stored: Option<(u64, u32)>,
    pub tail: Vec<Movement>,
}

impl View {
    /// Up to `limit` movements at or after `from`, oldest first.
    pub fn read(
        &self,
        store: &Store,
        from: (u64, u32),
        limit: usize,
    ) -> Result<Vec<Movement>, StoreError> {
        let mut out = store.read(from, self.stored, limit)?;
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
    pub fn read_newest(&self, store: &Store, limit: usize) -> Result<Vec<Movement>, StoreError> {
        let mut out: Vec<Movement> = self.tail.iter().rev().take(limit).cloned().collect();
        let rest = limit - out.len();
        out.extend(store.read_newest(self.stored, rest)?);
        Ok(out)
    }
}

/// Where each chunk starts: chunk `k` is the files' record `base + k`.
#[derive(Debug, Default)]
struct Index {
    base: u64,
    firsts: Vec<(u64, u32)>,
    /// The newest stored movement.
    last: Option<(u64, u32)>,
    /// Counts replaces, so a reader between two lookups can tell the files changed under it.
    generation: u64,
}

/// The ledger's files and their chunk index. Appends and replaces hold the index's write
/// lock across the file write; a read looks positions up under the read lock and reads
/// the files after it (see `read_at`).
pub struct Store {
    dir: PathBuf,
    wal: Wal,
    index: RwLock<Index>,
}

fn encode_chunk(chunk: &[Movement]) -> Result<Vec<u8>, StoreError> {
    let first = chunk
        .first()
        .ok_or_else(|| StoreError::Encode("an empty ledger chunk".into()))?;
    let mut out = Vec::with_capacity(PREFIX_BYTES + chunk.len() * 128);
    out.push(FORMAT);
    out.extend_from_slice(&first.revision.to_le_bytes());
    out.extend_from_slice(&first.seq.to_le_bytes());
    postcard::to_io(chunk, out).map_err(|e| StoreError::Encode(format!("ledger chunk: {e}")))
}

/// The first movement a chunk record names, from its prefix alone.
fn chunk_first(payload: &[u8]) -> Result<(u64, u32), String> {
    if payload.len() < PREFIX_BYTES {
        return Err(format!("{} bytes, shorter than its prefix", payload.len()));
    }
    if payload[0] != FORMAT {
        return Err(format!("unknown chunk format {}", payload[0]));
    }
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&payload[1..9]);
    let mut seq = [0u8; 4];
    seq.copy_from_slice(&payload[9..13]);
    Ok((u64::from_le_bytes(rev), u32::from_le_bytes(seq)))
}

fn decode_chunk(payload: &[u8]) -> Result<Vec<Movement>, String> {
    let first = chunk_first(payload)?;
    let chunk: Vec<Movement> =
        postcard::from_bytes(&payload[PREFIX_BYTES..]).map_err(|e| format!("postcard: {e}"))?;
    match chunk.first() {
        None => return Err("an empty chunk".into()),
        Some(m) if at(m) != first => {
            return Err(format!("starts at {:?}, its prefix says {first:?}", at(m)))
        }
        Some(_) => {}
    }
    if chunk.windows(2).any(|w| at(&w[0]) >= at(&w[1])) {
        return Err("movements out of order".into());
    }
    Ok(chunk)
}

/// An earlier release's engine value: a JSON chunk, or a single movement before that.
fn decode_engine_chunk(key: &[u8], value: &[u8]) -> Result<Vec<Movement>, StoreError> {
    match frame::decode::<Vec<Movement>>(key, value) {
        Ok(chunk) if !chunk.is_empty() => Ok(chunk),
        Ok(_) => Err(StoreError::Corrupt {
            key: keys::display(key),
            reason: "an empty ledger chunk".into(),
        }),
        // A single movement; if that fails too, report the first error.
        Err(e) => frame::decode::<Movement>(key, value)
            .map(|m| vec![m])
            .map_err(|_| e),
    }
}

impl Store {
    /// Opens (creating if needed) the ledger in `dir`, moving an earlier release's ledger
    /// out of `engine` first if it is still there. Fails, never panics, on corrupt files.
    pub async fn open<E: Engine + ?Sized>(dir: &Path, engine: &E) -> Result<Store, StoreError> {
        let started = std::time::Instant::now();
        // Each record's index and the first movement its prefix names (or why not).
        type Visited = (u64, Result<(u64, u32), String>);
        let mut firsts: Vec<Visited> = Vec::new();
        let (wal, recovery) = Wal::open_visiting(dir, SEGMENT_BYTES, None, &mut |i, payload| {
            firsts.push((i, chunk_first(payload)));
        })?;
        if recovery.torn_bytes > 0 {
            tracing::warn!(
                torn_bytes = recovery.torn_bytes,
                "ledger: cut unsynced chunks at the end; the log re-applies them"
            );
        }
        let store = Store {
            dir: dir.to_path_buf(),
            wal,
            index: RwLock::new(Index::default()),
        };
        {
            let mut ix = store.index_mut();
            ix.base = firsts.first().map_or(store.wal.next_index(), |(i, _)| *i);
            for (i, first) in firsts {
                let first = first.map_err(|reason| store.corrupt(i, reason))?;
                if ix.firsts.last().is_some_and(|prev| *prev >= first) {
                    return Err(store.corrupt(
                        i,
                        format!("starts at {first:?}, not after the chunk before"),
                    ));
                }
                ix.firsts.push(first);
            }
            ix.last = store.newest_stored(&ix)?;
            // Open reads every segment whole (checksums, and each chunk's first movement
            // for the index): O(ledger), so it is logged with its time.
            tracing::info!(
                chunks = ix.firsts.len(),
                bytes = store.wal.size_bytes(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "opened the ledger"
            );
        }
        store.move_from_engine(engine).await?;
        Ok(store)
    }

    fn corrupt(&self, index: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            key: format!("{} chunk {index}", self.dir.display()),
            reason,
        }
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        // A panic under the lock would be a bug here; the index still matches the files
        // up to the failed step, as every step checks before it changes either.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The last movement of the newest chunk in the files.
    fn newest_stored(&self, ix: &Index) -> Result<Option<(u64, u32)>, StoreError> {
        if ix.firsts.is_empty() {
            return Ok(None);
        }
        let k = ix.base + ix.firsts.len() as u64 - 1;
        let chunk = self.read_chunks(k, 1)?;
        Ok(chunk.last().and_then(|(_, c)| c.last()).map(at))
    }

    /// Records `[start, start + n)`, decoded; fewer only if the files end first.
    fn read_chunks(&self, start: u64, n: usize) -> Result<Vec<(u64, Vec<Movement>)>, StoreError> {
        let rows = self.wal.read(start, start + n as u64, n)?;
        if rows.len() != n {
            return Err(self.corrupt(
                start + rows.len() as u64,
                "the index names it but the files end before it".into(),
            ));
        }
        rows.into_iter()
            .map(|(i, payload)| {
                decode_chunk(&payload)
                    .map(|c| (i, c))
                    .map_err(|reason| self.corrupt(i, reason))
            })
            .collect()
    }

    /// The newest stored movement's `(revision, seq)`.
    pub fn last(&self) -> Option<(u64, u32)> {
        self.index().last
    }

    /// Bytes of the ledger's files on disk.
    pub fn size_bytes(&self) -> u64 {
        self.wal.size_bytes()
    }

    /// Appends `movements` (in order, after every stored one) as chunks, unsynced: see
    /// `sync`. Out-of-order input is refused and nothing is written.
    pub fn append(&self, movements: &[Movement]) -> Result<(), StoreError> {
        let mut ix = self.index_mut();
        self.append_locked(&mut ix, movements)
    }

    fn append_locked(&self, ix: &mut Index, movements: &[Movement]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (movements.first(), movements.last()) else {
            return Ok(());
        };
        if ix.last.is_some_and(|l| l >= at(first))
            || movements.windows(2).any(|w| at(&w[0]) >= at(&w[1]))
        {
            return Err(StoreError::Engine(format!(
                "ledger append from {:?} is not in order after {:?}",
                at(first),
                ix.last
            )));
        }
        let next = ix.base + ix.firsts.len() as u64;
        let records = movements
            .chunks(CHUNK_MOVEMENTS)
            .enumerate()
            .map(|(n, c)| Ok((next + n as u64, encode_chunk(c)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.wal.append_unsynced(&records)?;
        ix.firsts
            .extend(movements.chunks(CHUNK_MOVEMENTS).map(|c| at(&c[0])));
        ix.last = Some(at(last));
        Ok(())
    }

    /// Makes every appended chunk durable (fdatasync).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.wal.sync()
    }

    /// Replaces the whole ledger with `movements` (in order), durably. Interrupted by a
    /// crash, it leaves a prefix of either ledger: the caller marks the replace (the
    /// engine's `a/installing`) so that the next start does it again.
    pub fn replace(&self, movements: &[Movement]) -> Result<(), StoreError> {
        let mut ix = self.index_mut();
        self.clear_locked(&mut ix)?;
        // Bounded writes: a whole ledger is hundreds of megabytes encoded.
        for part in movements.chunks(CHUNK_MOVEMENTS * READ_CHUNKS) {
            self.append_locked(&mut ix, part)?;
        }
        self.wal.sync()
    }

    fn clear_locked(&self, ix: &mut Index) -> Result<(), StoreError> {
        if let Some(first) = self.wal.first_index() {
            self.wal.truncate_from(first)?;
        }
        *ix = Index {
            base: self.wal.next_index(),
            firsts: Vec::new(),
            last: None,
            generation: ix.generation + 1,
        };
        Ok(())
    }

    /// An earlier release's ledger in the engine's `v` keys: copied into the files (which
    /// are emptied first, as a copy cut short by a crash left a part), synced, marked as
    /// moved, then deleted from the engine. A crash at any step leaves a directory that
    /// starts correctly.
    async fn move_from_engine<E: Engine + ?Sized>(&self, engine: &E) -> Result<(), StoreError> {
        if engine
            .range(keys::MOVEMENT_START, keys::MOVEMENT_END, 1)?
            .is_empty()
        {
            return Ok(());
        }
        if engine.get(MOVED_FROM_ENGINE)?.is_none() {
            let moved = self.copy_from_engine(engine)?;
            let mut marker = Batch::default();
            marker.put(MOVED_FROM_ENGINE.to_vec(), frame::encode(&moved)?);
            engine.write(marker)?;
            engine.flush().await?;
            tracing::info!(
                movements = moved,
                dir = %self.dir.display(),
                "moved the ledger out of the engine into its own files"
            );
        }
        engine.delete_range(keys::MOVEMENT_START, keys::MOVEMENT_END)?;
        engine.flush().await
    }

    /// `move_from_engine`'s copy: the files emptied, then every `v` chunk appended in key
    /// order (as whole chunks), then synced. Returns how many movements it copied.
    fn copy_from_engine<E: Engine + ?Sized>(&self, engine: &E) -> Result<u64, StoreError> {
        let mut ix = self.index_mut();
        self.clear_locked(&mut ix)?;
        let mut start = keys::MOVEMENT_START.to_vec();
        let mut pending: Vec<Movement> = Vec::new();
        let mut moved = 0u64;
        loop {
            let rows = engine.range(&start, keys::MOVEMENT_END, READ_CHUNKS)?;
            let Some((last_key, _)) = rows.last() else {
                break;
            };
            start = last_key.clone();
            start.push(0);
            for (k, v) in &rows {
                pending.extend(decode_engine_chunk(k, v)?);
            }
            // Whole chunks only, so the files hold chunks as apply would write them.
            let whole = pending.len() / CHUNK_MOVEMENTS * CHUNK_MOVEMENTS;
            self.append_locked(&mut ix, &pending[..whole])?;
            moved += whole as u64;
            pending.drain(..whole);
        }
        self.append_locked(&mut ix, &pending)?;
        moved += pending.len() as u64;
        self.wal.sync()?;
        Ok(moved)
    }

    /// How many chunks to read next for `wanted` more movements: one more than they fill
    /// (the first may start before the range), at most `READ_CHUNKS`.
    fn chunks_for(wanted: usize) -> usize {
        wanted
            .div_ceil(CHUNK_MOVEMENTS)
            .saturating_add(1)
            .min(READ_CHUNKS)
    }

    /// Chunks `[k, k + n)` of the index as it is now, decoded. The index lock is held only
    /// while the positions are looked up, not across the file read, so a long scan (a
    /// backup reads the whole ledger) never holds up apply's appends; a replace meanwhile
    /// (an install) is caught by its generation and reported, never read as a mix.
    fn read_at(
        &self,
        generation: u64,
        k: usize,
        n: usize,
    ) -> Result<Vec<(u64, Vec<Movement>)>, StoreError> {
        let replaced = || {
            StoreError::Engine(
                "the ledger was replaced (a snapshot install) during the read; read again".into(),
            )
        };
        let base = {
            let ix = self.index();
            if ix.generation != generation {
                return Err(replaced());
            }
            ix.base
        };
        let chunks = self.read_chunks(base + k as u64, n);
        // Checked whatever the read gave: a replace in between can also cut the files short
        // of the positions looked up, which is the replace, not corruption.
        if self.index().generation != generation {
            return Err(replaced());
        }
        chunks
    }

    /// Up to `limit` movements with `from <= (revision, seq) <= through`, oldest first.
    pub fn read(
        &self,
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
        // The chunks that can hold the range: from the last one starting at or before
        // `from`, through the last one starting at or before `through`. Chunks appended
        // later start after `through`, so the range is fixed here.
        let (generation, mut k, end) = {
            let ix = self.index();
            let end = ix.firsts.partition_point(|f| *f <= through);
            let k = ix.firsts.partition_point(|f| *f <= from).saturating_sub(1);
            (ix.generation, k, end)
        };
        while k < end {
            let n = Self::chunks_for(limit - out.len()).min(end - k);
            for (_, chunk) in self.read_at(generation, k, n)? {
                for m in chunk {
                    let here = at(&m);
                    if here < from {
                        continue;
                    }
                    if here > through {
                        return Ok(out);
                    }
                    out.push(m);
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
            k += n;
        }
        Ok(out)
    }

    /// Up to `limit` movements with `(revision, seq) <= through`, newest first.
    pub fn read_newest(
        &self,
        through: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<Vec<Movement>, StoreError> {
        let mut out = Vec::new();
        let Some(through) = through else {
            return Ok(out);
        };
        // Chunks `[0, end)` start at or before `through`.
        let (generation, mut end) = {
            let ix = self.index();
            (ix.generation, ix.firsts.partition_point(|f| *f <= through))
        };
        while end > 0 && out.len() < limit {
            let n = Self::chunks_for(limit - out.len()).min(end);
            let chunks = self.read_at(generation, end - n, n)?;
            for (_, chunk) in chunks.into_iter().rev() {
                for m in chunk.into_iter().rev() {
                    if at(&m) <= through && out.len() < limit {
                        out.push(m);
                    }
                }
            }
            end -= n;
        }
        Ok(out)
    }
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

    /// `n` movements, three per revision, from revision 10.
    fn movements(n: usize) -> Vec<Movement> {
        (0..n as u64)
            .map(|i| movement(10 + i / 3, (i % 3) as u32))
            .collect()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        engine: SledEngine,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let engine = SledEngine::open(&dir.path().join("db")).unwrap();
            Fixture { dir, engine }
        }
        async fn open(&self) -> Result<Store, StoreError> {
            Store::open(&self.dir.path().join(DIR), &self.engine).await
        }
        fn segment(&self) -> PathBuf {
            let mut files: Vec<_> = std::fs::read_dir(self.dir.path().join(DIR))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files.pop().expect("a segment file")
        }
    }

    /// Every bounded forward and newest-first read of `store` equals the same read of the
    /// plain list `all`.
    fn assert_reads_equal(store: &Store, all: &[Movement]) {
        assert_eq!(store.last(), all.last().map(at));
        let n = all.len();
        let probes: Vec<usize> = [0usize, 1, 3, 4, 5, 9, 10, 511, 512, 513, 700, n - 2, n - 1]
            .into_iter()
            .filter(|p| *p < n)
            .collect();
        for &f in &probes {
            for &t in &probes {
                for limit in [1, 7, 600, usize::MAX] {
                    let want: Vec<_> = all[f..=t.max(f)]
                        .iter()
                        .filter(|m| at(m) <= at(&all[t]))
                        .take(limit)
                        .cloned()
                        .collect();
                    let got = store.read(at(&all[f]), Some(at(&all[t])), limit).unwrap();
                    assert_eq!(got, want, "read from {f} through {t}, limit {limit}");
                }
            }
            for limit in [1, 7, 600, usize::MAX] {
                let want: Vec<_> = all[..=f].iter().rev().take(limit).cloned().collect();
                let got = store.read_newest(Some(at(&all[f])), limit).unwrap();
                assert_eq!(got, want, "newest through {f}, limit {limit}");
            }
        }
        // Between movements and past the ends.
        let (r, s) = at(&all[4]);
        assert_eq!(store.read((r, s + 10), None, 10).unwrap(), vec![]);
        assert_eq!(
            store.read((0, 0), Some((r, s + 10)), usize::MAX).unwrap(),
            all.iter()
                .filter(|m| at(m) <= (r, s + 10))
                .cloned()
                .collect::<Vec<_>>()
        );
        assert!(store.read_newest(None, 10).unwrap().is_empty());
        assert!(store.read_newest(Some((0, 0)), 10).unwrap().is_empty());
    }

    /// Appends of several sizes (some over a chunk): reads equal a plain list, and equal it
    /// again after a reopen rebuilds the index from the files.
    #[tokio::test]
    async fn reads_across_chunks_equal_a_plain_list_before_and_after_reopen() {
        let fx = Fixture::new();
        let all = movements(1 + 5 + CHUNK_MOVEMENTS + 3 + 2 + 2 * CHUNK_MOVEMENTS);
        {
            let store = fx.open().await.unwrap();
            assert_eq!(store.last(), None);
            let mut at_n = 0;
            for n in [1, 5, CHUNK_MOVEMENTS + 3, 2, 2 * CHUNK_MOVEMENTS] {
                store.append(&all[at_n..at_n + n]).unwrap();
                at_n += n;
            }
            assert_eq!(at_n, all.len());
            assert_reads_equal(&store, &all);
            store.sync().unwrap();
        }
        let store = fx.open().await.unwrap();
        assert_reads_equal(&store, &all);
    }

    #[tokio::test]
    async fn an_append_out_of_order_is_refused_and_writes_nothing() {
        let fx = Fixture::new();
        let store = fx.open().await.unwrap();
        let all = movements(10);
        store.append(&all[..5]).unwrap();
        let size = store.size_bytes();
        for bad in [
            &all[3..7],
            &all[4..5],
            &[all[8].clone(), all[7].clone()][..],
        ] {
            let err = store.append(bad).unwrap_err();
            assert!(err.to_string().contains("not in order"), "{err}");
            assert_eq!(store.size_bytes(), size);
            assert_eq!(store.last(), Some(at(&all[4])));
        }
        store.append(&all[5..]).unwrap();
        assert_eq!(store.read((0, 0), store.last(), 100).unwrap(), all);
    }

    /// A crash before the sync keeps a prefix of whole chunks: a chunk cut short is
    /// dropped, with every chunk after it, and appends continue from what is kept.
    #[tokio::test]
    async fn an_unsynced_chunk_cut_short_is_dropped_and_appends_continue() {
        let fx = Fixture::new();
        let all = movements(3 * CHUNK_MOVEMENTS);
        {
            let store = fx.open().await.unwrap();
            store.append(&all[..2 * CHUNK_MOVEMENTS]).unwrap();
            store.sync().unwrap();
            store.append(&all[2 * CHUNK_MOVEMENTS..]).unwrap();
        }
        let seg = fx.segment();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
        let store = fx.open().await.unwrap();
        let kept = &all[..2 * CHUNK_MOVEMENTS];
        assert_eq!(store.last(), kept.last().map(at));
        assert_eq!(store.read((0, 0), store.last(), usize::MAX).unwrap(), kept);
        store.append(&all[2 * CHUNK_MOVEMENTS..]).unwrap();
        assert_reads_equal(&store, &all);
    }

    /// A flipped bit inside a synced chunk is corruption: open fails naming the file,
    /// and nothing is cut.
    #[tokio::test]
    async fn a_flipped_bit_in_a_chunk_is_reported_and_nothing_is_cut() {
        let fx = Fixture::new();
        let all = movements(2 * CHUNK_MOVEMENTS);
        {
            let store = fx.open().await.unwrap();
            store.append(&all).unwrap();
            store.sync().unwrap();
        }
        let seg = fx.segment();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[100] ^= 0x10;
        std::fs::write(&seg, &bytes).unwrap();
        let err = fx.open().await.err().expect("corruption is refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(DIR), "{err}");
        assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing cut");
    }

    #[tokio::test]
    async fn a_replace_swaps_the_whole_ledger_durably() {
        let fx = Fixture::new();
        let old = movements(CHUNK_MOVEMENTS + 40);
        let new: Vec<_> = (0..2 * CHUNK_MOVEMENTS as u64 + 7)
            .map(|i| movement(5 + i, 0))
            .collect();
        {
            let store = fx.open().await.unwrap();
            store.append(&old).unwrap();
            store.replace(&new).unwrap();
            assert_reads_equal(&store, &new);
        }
        let store = fx.open().await.unwrap();
        assert_reads_equal(&store, &new);
        store.replace(&[]).unwrap();
        assert_eq!(store.last(), None);
        assert!(store
            .read((0, 0), Some((u64::MAX, 0)), 10)
            .unwrap()
            .is_empty());
        store.append(&old).unwrap();
        assert_reads_equal(&store, &old);
    }

    /// A scan looks chunk positions up, then reads the files outside the index lock: one
    /// whose ledger was replaced in between (an install) is refused, not answered with a
    /// mix of the two ledgers.
    #[tokio::test]
    async fn a_read_across_a_replace_is_refused_not_mixed() {
        let fx = Fixture::new();
        let store = fx.open().await.unwrap();
        let all = movements(3 * CHUNK_MOVEMENTS);
        store.append(&all).unwrap();
        let before = store.index().generation;
        assert_eq!(store.read_at(before, 1, 2).unwrap().len(), 2);
        store.replace(&all[..CHUNK_MOVEMENTS + 1]).unwrap();
        let err = store.read_at(before, 0, 1).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        let now = store.index().generation;
        assert_eq!(store.read_at(now, 0, 2).unwrap().len(), 2);
        assert!(store.read_at(now, 1, 2).is_err(), "past the end");
    }

    /// An earlier release's ledger in the engine (single-movement values, then JSON chunks)
    /// moves into the files on open, once; the engine's `v` keys are gone afterwards.
    #[tokio::test]
    async fn an_engine_held_ledger_moves_into_the_files_once() {
        let fx = Fixture::new();
        let all = movements(4 + 5 + 600 + 2);
        let mut b = Batch::default();
        for m in &all[..4] {
            b.put(keys::movement(m.revision, m.seq), frame::encode(m).unwrap());
        }
        for part in [&all[4..9], &all[9..609], &all[609..]] {
            let first = &part[0];
            b.put(
                keys::movement(first.revision, first.seq),
                frame::encode(&part).unwrap(),
            );
        }
        fx.engine.write(b).unwrap();
        {
            let store = fx.open().await.unwrap();
            assert_reads_equal(&store, &all);
            let left = fx
                .engine
                .range(keys::MOVEMENT_START, keys::MOVEMENT_END, 10)
                .unwrap();
            assert!(left.is_empty(), "the engine's ledger is deleted");
        }
        let store = fx.open().await.unwrap();
        assert_reads_equal(&store, &all);
    }

    /// A move cut short by a crash (part of the ledger in the files, the engine's still
    /// there, no marker) is done again from the start; one cut short after the marker only
    /// deletes what is left in the engine.
    #[tokio::test]
    async fn a_move_cut_short_is_redone_or_finished() {
        let fx = Fixture::new();
        let all = movements(700);
        let mut b = Batch::default();
        for part in all.chunks(300) {
            b.put(
                keys::movement(part[0].revision, part[0].seq),
                frame::encode(&part).unwrap(),
            );
        }
        fx.engine.write(b).unwrap();
        // The part a crashed move left.
        let (wal, _) = Wal::open(&fx.dir.path().join(DIR), SEGMENT_BYTES, None).unwrap();
        wal.append(&[(0, encode_chunk(&all[..100]).unwrap())])
            .unwrap();
        drop(wal);
        let store = fx.open().await.unwrap();
        assert_reads_equal(&store, &all);
        drop(store);

        // Marker set, engine keys left (a crash during their delete): the files stand.
        let extra = movement(999, 0);
        let mut b = Batch::default();
        b.put(
            keys::movement(extra.revision, extra.seq),
            frame::encode(&vec![extra]).unwrap(),
        );
        fx.engine.write(b).unwrap();
        let store = fx.open().await.unwrap();
        assert_reads_equal(&store, &all);
        assert!(fx
            .engine
            .range(keys::MOVEMENT_START, keys::MOVEMENT_END, 10)
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn an_empty_or_corrupt_engine_chunk_is_reported_with_its_key() {
        let fx = Fixture::new();
        let mut b = Batch::default();
        b.put(
            keys::movement(5, 0),
            frame::encode(&Vec::<Movement>::new()).unwrap(),
        );
        fx.engine.write(b).unwrap();
        let err = fx.open().await.err().expect("refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

        let mut bytes = frame::encode(&vec![movement(6, 0)]).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 1;
        let mut b = Batch::default();
        b.delete(keys::movement(5, 0));
        b.put(keys::movement(6, 0), bytes);
        fx.engine.write(b).unwrap();
        let err = fx.open().await.err().expect("refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("v"), "{err}");
    }
}
