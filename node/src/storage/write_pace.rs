//! How fast a large file is written to disk: pieces flushed one at a time, at most so
//! many bytes per second, so that the Raft log's fdatasyncs (the write path) never queue
//! behind much. Used by the snapshot file (`raft::state_machine::PacedFile`), the
//! idempotency files' appends and the log's spare segment (`spare_segment`).

/// Bytes of a large file written between its intermediate flushes
/// (`raft::state_machine::write_file_durably`).
/// 4 MiB let three replicas' builds (they build together) queue 12 MiB ahead of a log
/// fdatasync; with builds every half second, the write p99 at 9 000/s was 22.5-35.6 ms at
/// 4 MiB and 12.6-14.9 ms at 1 MiB (benches/RESULTS.md).
pub(crate) const DURABLE_WRITE_SYNC_BYTES: usize = 1024 * 1024;

/// Bytes between the flushes of a paced write (a snapshot build): each flush is what a
/// log fdatasync may queue behind, so smaller than an unpaced write's.
pub(crate) const PACED_WRITE_SYNC_BYTES: usize = 256 * 1024;

/// How fast a file is written to disk. A snapshot build writes the whole state at once
/// on every replica; unpaced, it took the disk for 0.4-0.5 s per 16-32 MB and the log's
/// fdatasyncs (the write path) queued behind it: with 2-3 builds per node inside a 40 s
/// window at 9 000 writes/s, the p99 was 12.3 ms unpaced and 9.5 ms paced at 20 MB/s
/// (medians of 4 runs each; benches/RESULTS.md, tenth session). TiKV limits its
/// snapshot I/O the same way (`snap-io-max-bytes-per-sec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePace {
    /// Bytes written between two flushes.
    pub sync_bytes: usize,
    /// At most this many bytes per second on average; `None` is as fast as the disk goes.
    pub bytes_per_s: Option<u64>,
}

impl WritePace {
    /// As fast as the disk goes, flushed every MiB: backups, installs, conversions.
    pub const UNPACED: WritePace = WritePace {
        sync_bytes: DURABLE_WRITE_SYNC_BYTES,
        bytes_per_s: None,
    };

    /// A paced write at `mb_per_s` (10^6 bytes per second; 0 = no limit), flushed in
    /// small pieces: a snapshot build, the log's spare segment.
    pub fn paced(mb_per_s: u64) -> WritePace {
        WritePace {
            sync_bytes: PACED_WRITE_SYNC_BYTES,
            bytes_per_s: (mb_per_s > 0).then(|| mb_per_s.saturating_mul(1_000_000)),
        }
    }

    /// How long to wait, `elapsed_us` after starting, before writing past `written` bytes
    /// so as not to exceed the rate. Pure, so the arithmetic is unit-tested.
    pub fn wait_us(&self, written: u64, elapsed_us: u64) -> u64 {
        let Some(rate) = self.bytes_per_s else {
            return 0;
        };
        debug_assert!(rate > 0, "a rate of 0 is written as None");
        // u128: `written * 10^6` overflows u64 past 18 TB.
        let due_us =
            (written as u128 * 1_000_000 / rate.max(1) as u128).min(u64::MAX as u128) as u64;
        due_us.saturating_sub(elapsed_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_waits_until_the_bytes_written_are_due() {
        let unpaced = WritePace::UNPACED;
        assert_eq!(unpaced.wait_us(u64::MAX, 0), 0);
        assert_eq!(WritePace::paced(0).bytes_per_s, None, "0 is no limit");
        let one_mb = WritePace::paced(1);
        assert_eq!(one_mb.bytes_per_s, Some(1_000_000));
        assert_eq!(one_mb.sync_bytes, PACED_WRITE_SYNC_BYTES);
        // 500 000 bytes at 1 MB/s are due at 0.5 s.
        assert_eq!(one_mb.wait_us(500_000, 0), 500_000);
        assert_eq!(one_mb.wait_us(500_000, 200_000), 300_000);
        assert_eq!(one_mb.wait_us(500_000, 500_000), 0);
        assert_eq!(
            one_mb.wait_us(500_000, 900_000),
            0,
            "behind schedule: no wait"
        );
        // No overflow at the extremes.
        assert_eq!(one_mb.wait_us(u64::MAX, 0), u64::MAX);
        assert_eq!(WritePace::paced(u64::MAX).wait_us(u64::MAX, 0), 1_000_000);
    }
}
