//! The Raft log's next segment file, zero-filled ahead of need on a thread of its own.
//!
//! Why: an append that grows a file changes its size, so the `fdatasync` that makes the
//! append durable must also write the inode: on ext4 without a journal a second
//! synchronous write after the data's, with a journal a journal commit. Overwriting bytes
//! already allocated and written changes no metadata, so the sync is the data alone
//! (PostgreSQL zero-fills its WAL segments for the same reason; etcd prepares its next
//! segment in the background, but with `fallocate`, whose unwritten extents still need a
//! metadata write on first use). On this host one 400-byte append and its fdatasync take
//! ~92 µs into a zero-filled segment against ~130 µs into a growing file (criterion,
//! `benches/benches/storage.rs`; benches/RESULTS.md, fourteenth session).
//!
//! The file is written at a bounded pace, synced in pieces, under a name no segment has
//! (`SPARE_NAME`), and renamed into place when the log rotates. A spare left by a crash
//! is deleted on open; a rotation that finds none ready, or cannot move it into place,
//! starts an empty file as before.

use super::write_pace::WritePace;
use super::StoreError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The spare's file name inside the log directory: not `*.wal`, so never read as a segment.
pub const SPARE_NAME: &str = "spare-segment.zero";
/// Bytes beyond the segment size, so the append that passes it usually still overwrites.
const SLACK_BYTES: u64 = 1024 * 1024;
/// The fill's pace in MB/s, written and synced in the snapshot file's pieces (256 KiB,
/// small enough that the log's own fdatasyncs do not queue behind a large flush): a
/// 17 MiB spare in ~0.9 s, while the log fills a segment in 10 s and more at 14 000
/// writes/s.
const FILL_MB_PER_S: u64 = 20;

enum State {
    /// Nothing prepared, nothing being prepared.
    Idle,
    Filling,
    Ready(File),
}

/// One spare segment file for one log directory.
pub struct SpareSegment {
    path: PathBuf,
    bytes: u64,
    state: Mutex<State>,
}

impl SpareSegment {
    /// For a log in `dir` whose segments rotate past `segment_bytes`. Deletes a spare an
    /// earlier run left (it may be partly filled).
    pub fn new(dir: &Path, segment_bytes: u64) -> Result<Arc<Self>, StoreError> {
        let path = dir.join(SPARE_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(file = %path.display(), "log: removed an unused spare segment")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
        Ok(Arc::new(SpareSegment {
            path,
            bytes: segment_bytes.saturating_add(SLACK_BYTES),
            state: Mutex::new(State::Idle),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts filling a spare on a thread of its own, unless one is ready or being filled.
    /// A failure is logged; the next rotation then starts an empty file as before.
    pub fn request(self: &Arc<Self>) {
        {
            let mut state = self.lock();
            if !matches!(*state, State::Idle) {
                return;
            }
            *state = State::Filling;
        }
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-spare".into())
            .spawn(move || {
                let filled = this.fill();
                let mut state = this.lock();
                *state = match filled {
                    Ok(file) => State::Ready(file),
                    Err(e) => {
                        tracing::warn!(error = %e, "log: could not prepare a spare segment");
                        let _ = std::fs::remove_file(&this.path);
                        State::Idle
                    }
                };
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "log: could not start the spare segment's thread");
            *self.lock() = State::Idle;
        }
    }

    fn fill(&self) -> Result<File, StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)
            .map_err(io)?;
        let pace = WritePace::paced(FILL_MB_PER_S);
        let zeros = vec![0u8; pace.sync_bytes];
        let started = std::time::Instant::now();
        let mut at = 0u64;
        // Bounded: `bytes / sync_bytes` steps, plus one for the remainder.
        while at < self.bytes {
            let wait_us = pace.wait_us(at, started.elapsed().as_micros() as u64);
            if wait_us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(wait_us));
            }
            let n = (self.bytes - at).min(zeros.len() as u64);
            file.write_all_at(&zeros[..n as usize], at).map_err(io)?;
            file.sync_data().map_err(io)?;
            at += n;
        }
        file.sync_all().map_err(io)?;
        debug_assert_eq!(file.metadata().map(|m| m.len()).ok(), Some(self.bytes));
        Ok(file)
    }

    /// The filled spare renamed to `path` (the caller syncs the directory), or `None` if
    /// none is ready.
    pub fn take_as(&self, path: &Path) -> Result<Option<File>, StoreError> {
        let file = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Idle) {
                State::Ready(file) => file,
                other => {
                    *state = other;
                    return Ok(None);
                }
            }
        };
        std::fs::rename(&self.path, path).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some(file))
    }

    /// Whether a spare is ready (tests wait for it).
    #[cfg(test)]
    pub fn is_ready(&self) -> bool {
        matches!(*self.lock(), State::Ready(_))
    }
}
