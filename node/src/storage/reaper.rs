//! Frees large deleted files a piece at a time, off the write path.
//!
//! Why: deleting a file frees all its blocks in one filesystem transaction. On ext4
//! mounted with `discard` (this benchmark host's root is), the freed blocks are trimmed as
//! that transaction commits, and every fdatasync of the Raft log waits for the commit. A
//! snapshot replaced at the end of a build freed ~100 MB per node and a log purge ~33 MB,
//! and the writes queued behind them for 40-70 ms (benches/RESULTS.md, twelfth session:
//! the stalls lined up with the discards in `/sys/block/vda/stat`, and a remount without
//! `discard` took the p99 at half of peak from 8.74 to 4.94 ms).
//!
//! How: the caller unlinks the file (or renames another over it) and hands over an open
//! handle; the name is gone at once, and the blocks stay allocated while the handle is
//! open. A background thread cuts the file `STEP_BYTES` at a time, `STEP_PAUSE_MS` apart,
//! then closes it, so each transaction frees a little. A file that still has a name
//! elsewhere (a hard link) is left whole. A crash meanwhile leaves an orphan inode that
//! the filesystem frees on the next mount: nothing to recover here.
//!
//! Limits: at most `QUEUE_FILES` files wait; past that a file is freed at once (closed),
//! as before this module, and that is logged.

use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Bytes freed per step: small enough that a step's trim is short.
pub const STEP_BYTES: u64 = 1024 * 1024;

/// Pause between steps: 1 MiB per 10 ms frees at most 100 MB/s.
pub const STEP_PAUSE_MS: u64 = 10;

/// Most files waiting to be freed (a purge hands over a few segments, a build one file).
const QUEUE_FILES: usize = 64;

/// Most steps for one file, so a file of any length ends (and the thread moves on):
/// 64 GiB at `STEP_BYTES`; a longer file's last step frees the rest.
const MAX_STEPS: u64 = 64 * 1024;

/// A deleted file still open, and its old path for the logs.
struct Job {
    file: Arc<File>,
    path: PathBuf,
}

static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

/// Frees `file`'s blocks gradually in the background. The caller has already removed its
/// name (`path`, for the logs); `file` must be open for writing. Never blocks: with the
/// queue full, or without a thread, the handle is dropped here and the file freed at once.
pub fn free_gradually(file: Arc<File>, path: PathBuf) {
    let Some(sender) = QUEUE.get_or_init(start) else {
        return; // no thread: freed as the handle drops
    };
    match sender.try_send(Job { file, path }) {
        Ok(()) => {}
        Err(TrySendError::Full(job)) => {
            tracing::warn!(file = %job.path.display(), "reaper queue full: freeing a file at once");
        }
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn start() -> Option<SyncSender<Job>> {
    let (tx, rx) = sync_channel::<Job>(QUEUE_FILES);
    let spawned = std::thread::Builder::new()
        .name("file-reaper".into())
        .spawn(move || {
            for job in rx {
                if let Err(e) = shrink_in_steps(&job.file, STEP_BYTES, STEP_PAUSE_MS) {
                    // The file is freed anyway as the handle drops.
                    tracing::warn!(file = %job.path.display(), error = %e, "could not free a deleted file in steps");
                }
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!(error = %e, "no reaper thread: deleted files are freed at once");
            None
        }
    }
}

/// Cuts `file` to zero `step_bytes` at a time from the end, pausing `pause_ms` between
/// steps. Returns the number of steps taken. A file that still has a name (a hard link
/// made outside the node, say an operator's `cp -al` of the data directory) is left
/// whole: cutting it would cut that copy too.
pub fn shrink_in_steps(file: &File, step_bytes: u64, pause_ms: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    assert!(step_bytes > 0, "a step frees at least a byte");
    let meta = file.metadata()?;
    if meta.nlink() > 0 {
        return Ok(0);
    }
    let mut len = meta.len();
    let mut steps = 0;
    while len > 0 {
        steps += 1;
        len = if steps >= MAX_STEPS {
            0
        } else {
            len.saturating_sub(step_bytes)
        };
        file.set_len(len)?;
        if len > 0 && pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
    }
    debug_assert_eq!(file.metadata()?.len(), 0, "cut to nothing");
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_cut_to_nothing_in_whole_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 10 * 1000 + 1]).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(shrink_in_steps(&file, 1000, 0).unwrap(), 11);
        assert_eq!(file.metadata().unwrap().len(), 0);
        assert_eq!(shrink_in_steps(&file, 1000, 0).unwrap(), 0, "nothing left");
    }

    #[test]
    fn a_file_with_a_name_left_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let copy = dir.path().join("copy");
        std::fs::write(&path, vec![1u8; 5000]).unwrap();
        std::fs::hard_link(&path, &copy).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(shrink_in_steps(&file, 1000, 0).unwrap(), 0);
        assert_eq!(std::fs::read(&copy).unwrap(), vec![1u8; 5000]);
    }

    #[test]
    fn a_handed_over_file_is_freed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 3 * STEP_BYTES as usize]).unwrap();
        let file = Arc::new(std::fs::OpenOptions::new().write(true).open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        free_gradually(file.clone(), path);
        // Three steps, two pauses: bounded wait for the thread to get there.
        for _ in 0..500 {
            if file.metadata().unwrap().len() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("still {} bytes after 5 s", file.metadata().unwrap().len());
    }
}
