//! The Raft log's own file format: a directory of append-only segment files written by one
//! writer, with one `fdatasync` per appended batch (group commit) and nothing else on the
//! write path. It replaced log entries in sled, whose background I/O pool was woken on
//! every flush and cost the leader most of its CPU in context switches (benches/RESULTS.md).
//!
//! Layout: `<first index, 20 digits>.wal` segment files; a segment holds consecutive
//! indexes and a new one is started once the active one passes `segment_bytes`. The Raft
//! log's next segment is zero-filled ahead (`spare_segment`), so the last segment may end
//! in zeros past its records; a segment that stops being the last is cut to its records
//! first. A record is
//! `[payload length: u32][index: u64][crc32 of payload: u32][crc32 of the first 16 header
//! bytes: u32][payload]`, little-endian. The header has its own checksum so that a flipped
//! bit in a length is caught as such, never taken for a record running past the end.
//!
//! Crash rules, checked on open by reading every segment:
//! - a record is valid when complete, its checksum matches and its index is the next one;
//! - in the *last* segment, an end that is all zeros from where a record should start was
//!   never written (a zero-filled tail, or a batch none of whose sectors reached the
//!   disk): kept, to be overwritten, with no warning;
//! - an invalid record in the *last* segment is a torn write (a batch whose fsync never
//!   completed, so never acknowledged) when it is cut short by the end of the file, or when
//!   the part that fails its checksum holds a sector that was never written (all zeros):
//!   the file is cut there and a warning logged;
//! - any other invalid record is corruption: `open` fails naming the file, offset and
//!   index, and nothing is cut.
//!
//! What is purged is decided by the caller (who stores the purged log id durably): whole
//! segments at or below it are deleted, the rest of the first segment is hidden.

use super::spare_segment::SpareSegment;
use super::StoreError;
use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const HEADER_BYTES: usize = 20;
/// A payload larger than this is refused on append and read as corruption on open.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;
/// Sector size for recognising a torn write: a crash leaves unwritten sectors as zeros.
const SECTOR_BYTES: usize = 512;
const SUFFIX: &str = ".wal";

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Byte offset of each record; record `i` holds index `first + i`.
    offsets: Vec<u64>,
    len_bytes: u64,
    /// Bytes before this offset have been handed to writeback (`kick_writeback`).
    kicked: u64,
    /// Whether a spare segment was asked for while this one filled (`spare_segment`).
    spare_asked: bool,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }
    fn end_of(&self, i: usize) -> u64 {
        self.offsets.get(i + 1).copied().unwrap_or(self.len_bytes)
    }
}

struct Inner {
    segments: VecDeque<Segment>,
    /// The lowest index that may be returned; those below are purged. (openraft's log
    /// starts at index 0, so "nothing purged" is 0, not a purged index.)
    first_live: u64,
    /// The index the next append must start at.
    next: u64,
}

/// What `open` found, for the caller's log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    /// Bytes cut from the end of the last segment as a torn write.
    pub torn_bytes: u64,
}

pub struct Wal {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
    /// The next segment, zero-filled ahead (`with_spare_segments`); `None` for logs whose
    /// appends are not synced one by one (the ledger, the idempotency files).
    spare: Option<Arc<SpareSegment>>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SUFFIX}")
}

/// Appends one encoded record to `out`.
fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD_BYTES);
    let at = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let header_crc = crc32fast::hash(&out[at..at + 16]);
    out.extend_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why a record is not the valid record expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bad {
    /// The file ends inside it.
    Short,
    Header,
    Payload,
    /// Intact, but holds another index.
    Index(u64),
}

impl Bad {
    fn describe(self, index: u64) -> String {
        match self {
            Bad::Short => "cut short by the end of the file".into(),
            Bad::Header => "header checksum mismatch".into(),
            Bad::Payload => "payload checksum mismatch".into(),
            Bad::Index(found) => format!("holds index {found} where {index} belongs"),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes the record at the start of `bytes`, expected to hold `index`: the payload's
/// range within `bytes`, or why it is not valid.
fn decode_record(bytes: &[u8], index: u64) -> Result<std::ops::Range<usize>, Bad> {
    if bytes.len() < HEADER_BYTES {
        return Err(Bad::Short);
    }
    if crc32fast::hash(&bytes[..16]) != le32(bytes, 16) {
        return Err(Bad::Header);
    }
    let len = le32(bytes, 0) as usize;
    if len > MAX_PAYLOAD_BYTES {
        return Err(Bad::Header); // only a checksum collision gets here
    }
    let end = HEADER_BYTES + len;
    if bytes.len() < end {
        return Err(Bad::Short);
    }
    if crc32fast::hash(&bytes[HEADER_BYTES..end]) != le32(bytes, 12) {
        return Err(Bad::Payload);
    }
    let mut ix = [0u8; 8];
    ix.copy_from_slice(&bytes[4..12]);
    let stored = u64::from_le_bytes(ix);
    if stored != index {
        return Err(Bad::Index(stored));
    }
    Ok(HEADER_BYTES..end)
}

/// Less evidence than this many zero bytes at the ragged edge of a payload is not taken
/// for an unwritten sector (a payload may end in a few zero bytes of its own).
const MIN_ZERO_EDGE_BYTES: usize = 16;

fn all_zero(b: &[u8]) -> bool {
    b.iter().all(|x| *x == 0)
}

/// Whether the payload in `[start, end)` of the file holds a never-written stretch: an
/// aligned sector inside it, or a ragged part of a sector at either edge of at least
/// `MIN_ZERO_EDGE_BYTES`, that is all zeros.
fn payload_has_unwritten_sector(bytes: &[u8], start: usize, end: usize) -> bool {
    let end = end.min(bytes.len());
    let mut s = start;
    while s < end {
        let e = (s + 1).next_multiple_of(SECTOR_BYTES).min(end);
        let part = &bytes[s..e];
        let whole_sector = part.len() == SECTOR_BYTES;
        if (whole_sector || part.len() >= MIN_ZERO_EDGE_BYTES) && all_zero(part) {
            return true;
        }
        s = e;
    }
    false
}

/// Whether the header at `at` was never (wholly) written: all zeros, or zeros from a sector
/// boundary inside it to its end (that part holds the header checksum, which is all zeros
/// by chance once in 2^32).
fn header_unwritten(bytes: &[u8], at: usize) -> bool {
    let end = at + HEADER_BYTES;
    let boundary = (at + 1).next_multiple_of(SECTOR_BYTES);
    all_zero(&bytes[at..end]) || (boundary < end && all_zero(&bytes[boundary..end]))
}

/// A crash mid-write (before the fsync that would have acknowledged it) leaves a record
/// cut short or with sectors never written; a bit flipped in written data leaves neither.
fn looks_torn(bytes: &[u8], at: usize, bad: Bad) -> bool {
    match bad {
        Bad::Short => true,
        Bad::Header => header_unwritten(bytes, at),
        Bad::Payload => {
            let len = le32(bytes, at) as usize;
            payload_has_unwritten_sector(bytes, at + HEADER_BYTES, at + HEADER_BYTES + len)
        }
        Bad::Index(_) => false,
    }
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`, hiding indexes at or below `purged`.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        purged: Option<u64>,
    ) -> Result<(Wal, Recovery), StoreError> {
        Self::open_visiting(dir, segment_bytes, purged, &mut |_, _| {})
    }

    /// `open`, handing `visit` the index and payload of every record kept, in order, as
    /// the files are checked (so a caller can index the payloads without reading them
    /// again). A record visited can still be hidden by `purged`.
    pub fn open_visiting(
        dir: &Path,
        segment_bytes: u64,
        purged: Option<u64>,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<(Wal, Recovery), StoreError> {
        assert!(segment_bytes > 0, "segment size must be positive");
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name
                .strip_suffix(SUFFIX)
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let count = firsts.len();
        for (n, first) in firsts.into_iter().enumerate() {
            let path = dir.join(segment_name(first));
            let is_last = n + 1 == count;
            let seg = Self::scan(&path, first, is_last, &mut recovery, visit)?;
            if let Some(prev) = segments.back().and_then(|s: &Segment| s.last()) {
                if seg.first != prev + 1 {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        reason: format!(
                            "starts at index {} but the previous segment ends at {prev}",
                            seg.first
                        ),
                    });
                }
            }
            recovery.records += seg.offsets.len() as u64;
            segments.push_back(seg);
        }
        recovery.segments = segments.len();
        let wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                first_live: 0,
                next: 0,
            }),
            spare: None,
        };
        {
            let mut inner = wal.lock();
            let last = inner.segments.iter().rev().find_map(Segment::last);
            let first = inner.segments.front().map(|s| s.first);
            inner.next = match (first, last) {
                (_, Some(l)) => l + 1,
                (Some(f), None) => f,
                (None, None) => 0,
            };
        }
        if let Some(purged) = purged {
            wal.purge_to(purged)?;
        }
        Ok((wal, recovery))
    }

    /// Has each next segment zero-filled ahead of need (`storage::spare_segment`), so the
    /// fdatasync of an append overwrites allocated bytes and writes no metadata. For a log
    /// whose appends are synced one by one (the Raft log).
    pub fn with_spare_segments(mut self) -> Result<Self, StoreError> {
        self.spare = Some(SpareSegment::new(&self.dir, self.segment_bytes)?);
        Ok(self)
    }

    fn scan(
        path: &Path,
        first: u64,
        is_last: bool,
        recovery: &mut Recovery,
        visit: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<Segment, StoreError> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let mut offsets = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let index = first + offsets.len() as u64;
            match decode_record(&bytes[at..], index) {
                Ok(range) => {
                    visit(index, &bytes[at + range.start..at + range.end]);
                    offsets.push(at as u64);
                    at += range.end;
                }
                Err(_) if is_last && all_zero(&bytes[at..]) => {
                    // Never written: the rest of a zero-filled segment (`spare_segment`),
                    // or a batch none of whose sectors reached the disk. Kept as it is,
                    // to be overwritten.
                    break;
                }
                Err(bad) => {
                    let reason = bad.describe(index);
                    if is_last && looks_torn(&bytes, at, bad) {
                        tracing::warn!(
                            file = %path.display(), offset = at, index, %reason,
                            cut_bytes = bytes.len() - at,
                            "log: cutting a torn write at the end of the last segment"
                        );
                        recovery.torn_bytes = (bytes.len() - at) as u64;
                        let f = std::fs::OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io(path))?;
                        f.set_len(at as u64).map_err(io(path))?;
                        f.sync_all().map_err(io(path))?;
                        break;
                    }
                    return Err(StoreError::Corrupt {
                        key: format!("{}@{at}", path.display()),
                        reason: format!("log record for index {index}: {reason}"),
                    });
                }
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let len_bytes = offsets
            .last()
            .map(|_| at as u64)
            .unwrap_or(0)
            .min(bytes.len() as u64);
        Ok(Segment {
            first,
            path: path.to_path_buf(),
            file: Arc::new(file),
            offsets,
            len_bytes,
            kicked: len_bytes,
            spare_asked: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a bug in this file; the data on disk is
        // still consistent, so carry on with what is there.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first index still readable, when any is.
    pub fn first_index(&self) -> Option<u64> {
        let inner = self.lock();
        let last = inner.segments.iter().rev().find_map(Segment::last)?;
        let first = inner.segments.front()?.first.max(inner.first_live);
        (first <= last).then_some(first)
    }

    pub fn last_index(&self) -> Option<u64> {
        let inner = self.lock();
        inner
            .segments
            .iter()
            .rev()
            .find_map(Segment::last)
            .filter(|l| *l >= inner.first_live)
    }

    /// The index the next append must begin with.
    pub fn next_index(&self) -> u64 {
        self.lock().next
    }

    /// Writes `records` (consecutive indexes from `next_index`) and fdatasyncs them: on
    /// return they survive a crash. One write and one fsync for the whole batch.
    pub fn append(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(records, true)
    }

    /// `append` without the fsync: the records are durable only after a later `sync`. A
    /// crash can lose any suffix of what was appended since (the torn tail is cut on
    /// open), never a record before a kept one: a segment is synced before the next one
    /// is started, so only the last segment can hold unsynced records.
    pub fn append_unsynced(&self, records: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(records, false)
    }

    /// Makes every record appended so far durable (see `append_unsynced`).
    pub fn sync(&self) -> Result<(), StoreError> {
        let active = {
            let inner = self.lock();
            inner
                .segments
                .back()
                .map(|s| (s.file.clone(), s.path.clone()))
        };
        match active {
            // Outside the lock, as in `append`.
            Some((file, path)) => file.sync_data().map_err(io(&path)),
            None => Ok(()),
        }
    }

    fn write(&self, records: &[(u64, Vec<u8>)], durable: bool) -> Result<(), StoreError> {
        let Some((first_index, _)) = records.first() else {
            return Ok(());
        };
        let file = {
            let mut inner = self.lock();
            let last_live = inner
                .segments
                .iter()
                .rev()
                .find_map(Segment::last)
                .filter(|l| *l >= inner.first_live);
            // A log with entries only takes the next index; an empty one (new, or purged
            // to its end) has nothing to be contiguous with and takes any unpurged index.
            let allowed = match last_live {
                Some(_) => *first_index == inner.next,
                None => *first_index >= inner.first_live,
            };
            if !allowed {
                return Err(StoreError::Engine(format!(
                    "log append at index {first_index}, expected {}",
                    inner.next
                )));
            }
            let mut buf =
                Vec::with_capacity(records.iter().map(|(_, p)| p.len() + HEADER_BYTES).sum());
            let mut rel = Vec::with_capacity(records.len());
            for (n, (index, payload)) in records.iter().enumerate() {
                if *index != first_index + n as u64 {
                    return Err(StoreError::Engine(format!(
                        "log append of non-consecutive index {index} after {}",
                        first_index + n as u64 - 1
                    )));
                }
                if payload.len() > MAX_PAYLOAD_BYTES {
                    return Err(StoreError::Encode(format!(
                        "log entry {index} is {} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit",
                        payload.len()
                    )));
                }
                rel.push(buf.len() as u64);
                encode_record(&mut buf, *index, payload);
            }
            let rotate = inner.segments.back().is_none_or(|s| {
                s.len_bytes >= self.segment_bytes
                    || (s.offsets.is_empty() && s.first != *first_index)
                    || last_live.is_none() && !s.offsets.is_empty()
            });
            if rotate {
                if !durable {
                    // Only the last segment may hold unsynced records (crash rules above).
                    if let Some(seg) = inner.segments.back() {
                        seg.file.sync_data().map_err(io(&seg.path))?;
                    }
                }
                self.start_segment(&mut inner, *first_index)?;
            }
            let seg = inner
                .segments
                .back_mut()
                .expect("a segment was just ensured");
            seg.file
                .write_all_at(&buf, seg.len_bytes)
                .map_err(io(&seg.path))?;
            let base = seg.len_bytes;
            seg.offsets.extend(rel.iter().map(|r| base + r));
            seg.len_bytes += buf.len() as u64;
            // Unsynced appends (the ledger's) are handed to writeback as each MiB gathers,
            // so that they reach the disk steadily rather than all at once at the next
            // `sync` or when the kernel's dirty pages expire (see `WRITEBACK_KICK_BYTES`).
            let kick = (!durable && seg.len_bytes - seg.kicked >= WRITEBACK_KICK_BYTES)
                .then(|| (seg.kicked, seg.len_bytes - seg.kicked));
            if kick.is_some() {
                seg.kicked = seg.len_bytes;
            }
            // Half way through a segment, the next one starts being zero-filled.
            if let Some(spare) = &self.spare {
                if !seg.spare_asked && seg.len_bytes >= self.segment_bytes / 2 {
                    seg.spare_asked = true;
                    spare.request();
                }
            }
            inner.next = first_index + records.len() as u64;
            let seg = inner.segments.back().expect("present");
            (seg.file.clone(), seg.path.clone(), kick)
        };
        if !durable {
            if let Some((offset, len)) = file.2 {
                kick_writeback(&file.0, offset, len);
            }
            return Ok(());
        }
        // Outside the lock, so readers (replication) are not held up by the disk.
        file.0.sync_data().map_err(io(&file.1))
    }

    fn start_segment(&self, inner: &mut Inner, first: u64) -> Result<(), StoreError> {
        // A segment that stops being the last loses its unwritten zero-filled tail first,
        // durably: only the last segment may end in one (crash rules above), and so an
        // earlier release reads these files too.
        if let Some(seg) = inner.segments.back().filter(|s| !s.offsets.is_empty()) {
            let file_bytes = seg.file.metadata().map_err(io(&seg.path))?.len();
            if file_bytes > seg.len_bytes {
                seg.file.set_len(seg.len_bytes).map_err(io(&seg.path))?;
                seg.file.sync_all().map_err(io(&seg.path))?;
            }
        }
        let path = self.dir.join(segment_name(first));
        // The spare is an optimisation: if it cannot be moved into place, the segment
        // starts as an empty file, as without one, rather than failing the append.
        let spare = match self.spare.as_ref().map(|s| s.take_as(&path)) {
            Some(Ok(file)) => file,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "log: the spare segment could not be used");
                None
            }
            None => None,
        };
        let file = match spare {
            Some(file) => file,
            None => std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(io(&path))?,
        };
        sync_dir(&self.dir)?;
        // An empty segment left by a truncate or purge is replaced, never kept beside.
        if inner.segments.back().is_some_and(|s| s.offsets.is_empty()) {
            let empty = inner.segments.pop_back().expect("checked");
            if empty.path != path {
                remove_segment(empty)?;
            }
        }
        inner.segments.push_back(Segment {
            first,
            path,
            file: Arc::new(file),
            offsets: Vec::new(),
            len_bytes: 0,
            kicked: 0,
            spare_asked: false,
        });
        Ok(())
    }

    /// Payloads of indexes in `[start, end)`, in order, at most `limit`, each checked
    /// against its checksum and index.
    pub fn read(
        &self,
        start: u64,
        end: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let inner = self.lock();
        let start = start.max(inner.first_live);
        let mut out = Vec::new();
        if start >= end || limit == 0 {
            return Ok(out);
        }
        for seg in &inner.segments {
            let Some(last) = seg.last() else { continue };
            if last < start || seg.first >= end || out.len() >= limit {
                continue;
            }
            let from = (start.max(seg.first) - seg.first) as usize;
            let to_index = end.min(last + 1);
            let mut to = (to_index - seg.first) as usize; // exclusive
            to = to.min(from.saturating_add(limit - out.len()));
            let (lo, hi) = (seg.offsets[from], seg.end_of(to - 1));
            let mut bytes = vec![0u8; (hi - lo) as usize];
            seg.file
                .read_exact_at(&mut bytes, lo)
                .map_err(io(&seg.path))?;
            for i in from..to {
                let index = seg.first + i as u64;
                let at = (seg.offsets[i] - lo) as usize;
                let range =
                    decode_record(&bytes[at..], index).map_err(|bad| StoreError::Corrupt {
                        key: format!("{}@{}", seg.path.display(), seg.offsets[i]),
                        reason: format!("log record for index {index}: {}", bad.describe(index)),
                    })?;
                out.push((index, bytes[at + range.start..at + range.end].to_vec()));
            }
        }
        Ok(out)
    }

    /// Removes every index at or above `index`, durably.
    pub fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if index < inner.first_live {
            return Err(StoreError::Engine(format!(
                "log truncate at {index}, below the first unpurged index {}",
                inner.first_live
            )));
        }
        if index >= inner.next {
            return Ok(());
        }
        let mut removed_files = false;
        while let Some(seg) = inner.segments.back() {
            if seg.first >= index && inner.segments.len() > 1 {
                let seg = inner.segments.pop_back().expect("checked");
                remove_segment(seg)?;
                removed_files = true;
                continue;
            }
            break;
        }
        if let Some(seg) = inner.segments.back_mut() {
            let keep = index.saturating_sub(seg.first) as usize;
            if keep < seg.offsets.len() {
                let cut = seg.offsets[keep];
                seg.offsets.truncate(keep);
                seg.len_bytes = cut;
                seg.kicked = seg.kicked.min(cut);
                seg.file.set_len(cut).map_err(io(&seg.path))?;
                seg.file.sync_all().map_err(io(&seg.path))?;
            }
        }
        if removed_files {
            sync_dir(&self.dir)?;
        }
        inner.next = index;
        debug_assert_eq!(
            inner
                .segments
                .iter()
                .rev()
                .find_map(Segment::last)
                .map_or(index, |l| l + 1)
                .max(index),
            index
        );
        Ok(())
    }

    /// Hides every index at or below `index` and deletes the segments wholly below it. The
    /// caller records the purge point durably *before* calling this.
    pub fn purge_to(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if index < inner.first_live {
            return Ok(()); // already purged
        }
        inner.first_live = index + 1;
        let mut removed = false;
        while let Some(seg) = inner.segments.front() {
            let wholly_purged = match seg.last() {
                Some(l) => l <= index,
                None => seg.first <= index,
            };
            if !wholly_purged {
                break;
            }
            let seg = inner.segments.pop_front().expect("checked");
            remove_segment(seg)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        inner.next = inner.next.max(index + 1);
        Ok(())
    }

    /// Bytes of segment files on disk.
    pub fn size_bytes(&self) -> u64 {
        self.lock().segments.iter().map(|s| s.len_bytes).sum()
    }
}

/// Deletes a segment's file. Its blocks are freed a piece at a time by the reaper, not
/// all at once: a purge deletes a few 16 MB segments together, and freeing them in one
/// transaction held up the next fdatasyncs (see `storage::reaper`).
fn remove_segment(seg: Segment) -> Result<(), StoreError> {
    std::fs::remove_file(&seg.path).map_err(io(&seg.path))?;
    super::reaper::free_gradually(seg.file, seg.path);
    Ok(())
}

/// Unsynced bytes gathered before they are handed to writeback. The ledger appends ~0.6
/// MB/s per node at 12 500 writes/s and was synced only when a snapshot was built (or
/// when the kernel's dirty pages expired after 30 s): the disk then took 50 MB from the
/// three nodes within 100 ms, and the log's fdatasyncs queued behind it (RocksDB's
/// `bytes_per_sync` does the same for the same reason).
const WRITEBACK_KICK_BYTES: u64 = 1024 * 1024;

/// Starts writeback of `[offset, offset + len)` of `file` without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Not a durability step: `sync` still
/// fdatasyncs. A failure is only logged, as the data is still written by `sync`.
fn kick_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a valid open descriptor and plain integers; the call reads no memory of ours.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range failed");
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!("entry-{i}-{}", "x".repeat((i % 7) as usize * 30)).into_bytes()
    }

    fn batch(from: u64, n: u64) -> Vec<(u64, Vec<u8>)> {
        (from..from + n).map(|i| (i, payload(i))).collect()
    }

    fn indexes(wal: &Wal) -> Vec<u64> {
        wal.read(0, u64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(i, p)| {
                assert_eq!(p, payload(i));
                i
            })
            .collect()
    }

    #[test]
    fn a_new_log_starts_at_index_zero_as_openraft_does() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1024, None).unwrap();
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.next_index()),
            (None, None, 0)
        );
        wal.append(&batch(0, 3)).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (Some(0), Some(2)));
        wal.purge_to(0).unwrap();
        assert_eq!(wal.first_index(), Some(1));
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 1024, Some(0)).unwrap();
        assert_eq!(indexes(&wal), vec![1, 2]);
    }

    #[test]
    fn appends_survive_reopen_across_segment_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, rec) = Wal::open(dir.path(), 1024, Some(0)).unwrap();
        assert_eq!(rec, Recovery::default());
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.next_index()),
            (None, None, 1)
        );
        for b in 0..20 {
            wal.append(&batch(1 + b * 5, 5)).unwrap();
        }
        assert_eq!(indexes(&wal), (1..=100).collect::<Vec<_>>());
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), 1024, Some(0)).unwrap();
        assert!(rec.segments > 3, "rotated into several segments: {rec:?}");
        assert_eq!(rec.records, 100);
        assert_eq!(indexes(&wal), (1..=100).collect::<Vec<_>>());
        assert_eq!(wal.read(40, 45, 100).unwrap().len(), 5);
        assert!(
            wal.read(50, 40, 10).unwrap().is_empty(),
            "an inverted range is empty"
        );
        assert!(wal.read(40, 45, 0).unwrap().is_empty());
        assert_eq!(
            wal.read(40, 100, 3)
                .unwrap()
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            vec![40, 41, 42]
        );
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.next_index()),
            (Some(1), Some(100), 101)
        );
    }

    #[test]
    fn an_append_that_skips_or_repeats_an_index_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
        wal.append(&batch(1, 3)).unwrap();
        assert!(wal.append(&batch(5, 1)).is_err());
        assert!(wal.append(&batch(3, 1)).is_err());
        assert!(wal.append(&[(4, vec![1]), (6, vec![2])]).is_err());
        assert_eq!(indexes(&wal), vec![1, 2, 3]);
        wal.append(&batch(4, 1)).unwrap();
        assert_eq!(indexes(&wal), vec![1, 2, 3, 4]);
    }

    #[test]
    fn truncate_and_purge_hold_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 512, Some(0)).unwrap();
        for b in 0..10 {
            wal.append(&batch(1 + b * 4, 4)).unwrap();
        }
        wal.truncate_from(30).unwrap();
        assert_eq!(wal.last_index(), Some(29));
        wal.append(&batch(30, 2)).unwrap();
        assert!(wal.truncate_from(0).is_err() || wal.last_index() == Some(31));
        wal.purge_to(12).unwrap();
        assert_eq!(wal.first_index(), Some(13));
        assert_eq!(indexes(&wal), (13..=31).collect::<Vec<_>>());
        assert!(wal.truncate_from(12).is_err(), "below the purge point");
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 512, Some(12)).unwrap();
        assert_eq!(indexes(&wal), (13..=31).collect::<Vec<_>>());
        // Purging past the end (a snapshot installed ahead of the log) empties it, and the
        // next append starts after the purge point.
        wal.purge_to(50).unwrap();
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.next_index()),
            (None, None, 51)
        );
        wal.append(&batch(51, 2)).unwrap();
        drop(wal);
        let (wal, _) = Wal::open(dir.path(), 512, Some(50)).unwrap();
        assert_eq!(indexes(&wal), vec![51, 52]);
        assert_eq!(wal.next_index(), 53);
    }

    fn only_segment(dir: &Path) -> PathBuf {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        files.pop().unwrap()
    }

    #[test]
    fn a_write_cut_short_at_the_end_is_dropped_and_the_prefix_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
        wal.append(&batch(1, 10)).unwrap();
        drop(wal);
        let seg = only_segment(dir.path());
        let full = std::fs::metadata(&seg).unwrap().len();
        for cut in [full - 1, full - 5, full - 20] {
            let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
            f.set_len(cut).unwrap();
            let (wal, rec) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
            assert_eq!(indexes(&wal), (1..=9).collect::<Vec<_>>());
            assert!(rec.torn_bytes > 0);
            wal.append(&batch(10, 1)).unwrap(); // the log goes on from the cut
            assert_eq!(indexes(&wal), (1..=10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn unwritten_sectors_in_the_last_batch_are_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
        wal.append(&batch(1, 2)).unwrap();
        let big: Vec<(u64, Vec<u8>)> = vec![(3, vec![7u8; 2000]), (4, payload(4))];
        wal.append(&big).unwrap();
        drop(wal);
        let seg = only_segment(dir.path());
        let mut bytes = std::fs::read(&seg).unwrap();
        let start3 = bytes.len() - (HEADER_BYTES * 2 + 2000 + payload(4).len());
        // Zero one aligned sector inside record 3's payload, as a crash before it was written.
        let sector = (start3 / SECTOR_BYTES + 2) * SECTOR_BYTES;
        bytes[sector..sector + SECTOR_BYTES].fill(0);
        std::fs::write(&seg, &bytes).unwrap();
        let (wal, rec) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
        assert_eq!(indexes(&wal), vec![1, 2]);
        assert_eq!(rec.torn_bytes as usize, bytes.len() - start3);
    }

    #[test]
    fn every_flipped_bit_is_reported_as_corruption_and_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 1 << 20, Some(0)).unwrap();
        wal.append(&batch(1, 5)).unwrap();
        wal.append(&batch(6, 3)).unwrap();
        drop(wal);
        let seg = only_segment(dir.path());
        let good = std::fs::read(&seg).unwrap();
        assert!(good.len() > SECTOR_BYTES, "crosses a sector boundary");
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&seg, &bad).unwrap();
            match Wal::open(dir.path(), 1 << 20, Some(0)) {
                Err(StoreError::Corrupt { key, reason }) => {
                    assert!(key.contains(".wal@"), "{key}");
                    assert!(reason.contains("log record for index"), "{reason}");
                }
                Err(e) => panic!("bit {bit}: unexpected error {e}"),
                Ok((wal, rec)) => panic!(
                    "bit {bit} went unreported: {rec:?}, {} records",
                    indexes(&wal).len()
                ),
            }
            assert_eq!(
                std::fs::read(&seg).unwrap(),
                bad,
                "bit {bit}: the file was changed"
            );
        }
    }

    #[test]
    fn a_bad_record_in_an_earlier_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 256, Some(0)).unwrap();
        for i in 1..=20 {
            wal.append(&batch(i, 1)).unwrap();
        }
        drop(wal);
        let mut files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() > 2);
        let first = &files[0];
        let len = std::fs::metadata(first).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(first)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 256, Some(0)),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// Waits (bounded) until the log's spare segment is filled.
    fn wait_for_spare(wal: &Wal) {
        let spare = wal.spare.as_ref().expect("a log with spare segments");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !spare.is_ready() {
            assert!(std::time::Instant::now() < deadline, "no spare within 20 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Each segment's file length against the bytes its records take.
    fn file_and_record_bytes(wal: &Wal) -> Vec<(u64, u64)> {
        wal.lock()
            .segments
            .iter()
            .map(|s| (s.file.metadata().unwrap().len(), s.len_bytes))
            .collect()
    }

    #[test]
    fn spare_segments_are_zero_filled_ahead_and_only_the_last_keeps_its_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        let wal = wal.with_spare_segments().unwrap();
        let spare_path = dir.path().join(super::super::spare_segment::SPARE_NAME);
        let mut next = 1;
        // Bounded: each segment takes ~25 of these records.
        for _ in 0..3 {
            let rotations_before = wal.lock().segments.len();
            while wal.lock().segments.len() == rotations_before {
                wal.append(&batch(next, 1)).unwrap();
                next += 1;
                if wal.lock().segments.back().unwrap().len_bytes >= 2048 {
                    wait_for_spare(&wal); // asked for half way; filled well before the end
                    assert!(spare_path.exists());
                }
                assert!(next < 1000, "no rotation");
            }
        }
        let sizes = file_and_record_bytes(&wal);
        let (last, earlier) = sizes.split_last().unwrap();
        assert!(
            last.0 > 4096 && last.0 > last.1,
            "the last segment is a zero-filled spare: {sizes:?}"
        );
        assert!(
            earlier.iter().all(|(file, records)| file == records),
            "{sizes:?}"
        );
        assert!(!spare_path.exists(), "renamed into place");
        drop(wal);

        // The zeros after the last record are not a torn write: nothing is cut or reported,
        // and an earlier release's reading (no spare) sees the same log.
        let (wal, rec) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(indexes(&wal), (1..next).collect::<Vec<_>>());
        assert_eq!(file_and_record_bytes(&wal), sizes, "nothing cut");
        let wal = wal.with_spare_segments().unwrap();
        wal.append(&batch(next, 3)).unwrap(); // overwrites the zeros
        drop(wal);
        let (wal, rec) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        assert_eq!(rec.torn_bytes, 0);
        assert_eq!(indexes(&wal), (1..next + 3).collect::<Vec<_>>());
    }

    #[test]
    fn a_torn_write_inside_a_zero_filled_segment_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        let wal = wal.with_spare_segments().unwrap();
        let mut next = 1;
        while wal
            .lock()
            .segments
            .back()
            .is_none_or(|s| s.len_bytes < 2048)
        {
            wal.append(&batch(next, 1)).unwrap();
            next += 1;
        }
        wait_for_spare(&wal);
        while wal.lock().segments.len() < 2 {
            wal.append(&batch(next, 1)).unwrap();
            next += 1;
        }
        // A batch whose second sector never reached the disk, inside the zero-filled file.
        let torn_at = wal.lock().segments.back().unwrap().len_bytes;
        wal.append(&[(next, vec![9u8; 2000]), (next + 1, payload(next + 1))])
            .unwrap();
        let path = wal.lock().segments.back().unwrap().path.clone();
        drop(wal);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let sector = (torn_at + HEADER_BYTES as u64 + 1).next_multiple_of(SECTOR_BYTES as u64);
        f.write_all_at(&[0u8; SECTOR_BYTES], sector).unwrap();
        let (wal, rec) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        assert!(rec.torn_bytes > 0, "{rec:?}");
        assert_eq!(indexes(&wal), (1..next).collect::<Vec<_>>());
    }

    #[test]
    fn a_spare_left_by_a_crash_is_deleted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let spare = dir.path().join(super::super::spare_segment::SPARE_NAME);
        std::fs::write(&spare, b"half filled").unwrap();
        let (wal, rec) = Wal::open(dir.path(), 4096, Some(0)).unwrap();
        assert_eq!(rec.segments, 0, "a spare is never read as a segment");
        let _wal = wal.with_spare_segments().unwrap();
        assert!(!spare.exists());
    }
}
