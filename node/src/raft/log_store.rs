//! The Raft log: entries in the node's own segment files (`storage::wal`, each entry in
//! `codec`'s binary format; entries an earlier release wrote as JSON read as before), the
//! vote and the purge point in a small durably-replaced `meta` file, the committed log id in
//! a file overwritten in place. `append` and `save_vote` return only after an fsync, so an
//! acknowledged entry and a granted vote survive `kill -9` and power loss.
//!
//! Everything lives in `<data dir>/raft-log/`. Data directories from before this layout kept
//! the log in sled; `open` moves it over once (built aside, then renamed into place) and then
//! deletes the old keys.

// openraft's StorageError is large, and it is the error type these trait methods must return.
#![allow(clippy::result_large_err)]

use super::codec;
use super::log_cache::LogCache;
use super::{sto_err, LogId, NodeId, StorageError, TypeConfig};
use crate::metrics::Metrics;
use crate::raft::state_machine::write_file_durably;
use crate::storage::wal::{self, Wal};
use crate::storage::{frame, keys, Engine, StoreError};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogState, RaftLogReader, Vote};
use serde::{Deserialize, Serialize};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Most entries returned by one read, so a far-behind follower is caught up in pieces.
const MAX_ENTRIES_PER_READ: usize = 4096;
/// A segment file is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Entries moved per step when a data directory's log is moved out of sled.
const MIGRATE_CHUNK: usize = 4096;
pub const DIR: &str = "raft-log";
const META: &str = "meta";
const COMMITTED: &str = "committed";

/// What must survive a crash besides the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMeta {
    pub vote: Option<Vote<NodeId>>,
    pub purged: Option<LogId>,
}

struct Shared {
    wal: Wal,
    dir: PathBuf,
    meta: Mutex<LogMeta>,
    committed: std::fs::File,
    /// The `committed` file's length: a shorter value is cut to size, a longer or equal one
    /// only overwritten (an `ftruncate` per save was ~1.4 % of a follower's CPU).
    committed_len: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    /// The newest entries decoded (`log_cache`); kept equal to the files under this lock.
    cache: Mutex<LogCache>,
}

#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn read_meta(dir: &Path) -> Result<Option<LogMeta>, StoreError> {
    let path = dir.join(META);
    match std::fs::read(&path) {
        Ok(b) => frame::decode(path.display().to_string().as_bytes(), &b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn write_meta(dir: &Path, meta: &LogMeta) -> Result<(), StoreError> {
    write_file_durably(&dir.join(META), &frame::encode(meta)?)
}

/// Creates a log directory holding no entries, with the given metadata, durably. Used for a
/// fresh node, by restore (purge point and vote from a backup) and by the move out of sled.
pub fn seed(data_dir: &Path, meta: &LogMeta, committed: Option<LogId>) -> Result<(), StoreError> {
    seed_dir(&data_dir.join(DIR), meta, committed)
}

impl LogStore {
    /// Opens the log in `data_dir`, first moving it out of `engine` when the data directory
    /// predates the log files.
    pub fn open<E: Engine>(
        data_dir: &Path,
        engine: &E,
        metrics: Arc<Metrics>,
    ) -> Result<LogStore, StoreError> {
        let dir = data_dir.join(DIR);
        let meta = match read_meta(&dir)? {
            Some(meta) => meta,
            None => {
                migrate_from_engine(data_dir, engine)?;
                read_meta(&dir)?.ok_or_else(|| {
                    StoreError::Engine(format!("{} missing after creating it", dir.display()))
                })?
            }
        };
        // Left over when a crash came between the move and the deletion: delete again.
        if !engine.range(keys::LOG_START, b"n", 1)?.is_empty() {
            engine.delete_range(keys::LOG_START, b"n")?;
        }
        let (wal, recovery) = Wal::open(&dir, SEGMENT_BYTES, meta.purged.map(|l| l.index))?;
        let wal = wal.with_spare_segments()?;
        tracing::info!(
            segments = recovery.segments,
            records = recovery.records,
            torn_bytes = recovery.torn_bytes,
            ?meta.purged,
            "opened the Raft log"
        );
        let committed_path = dir.join(COMMITTED);
        let committed = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&committed_path)
            .map_err(io_err(&committed_path))?;
        let committed_len = committed.metadata().map_err(io_err(&committed_path))?.len();
        Ok(LogStore {
            shared: Arc::new(Shared {
                wal,
                dir,
                meta: Mutex::new(meta),
                committed,
                committed_len: std::sync::atomic::AtomicU64::new(committed_len),
                metrics,
                cache: Mutex::new(LogCache::default()),
            }),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        self.shared.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `entries` durably and caches them: `append` without openraft's callback.
    fn append_entries(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<(), String> {
        // One write and one fdatasync for everything openraft hands us at once: group
        // commit. Done inline on the Raft core's task: the core awaits this flush before
        // its next step anyway, and handing it to another thread costs two context switches
        // per batch, which is what the sled log spent the leader's CPU on.
        let mut records = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let payload = codec::to_bytes(&entry, codec::Format::Binary)
                .map_err(|e| format!("log entry {} unencodable: {e}", entry.log_id))?;
            records.push((entry.log_id.index, payload));
            decoded.push(entry);
        }
        let started = std::time::Instant::now();
        let written = self.shared.wal.append(&records);
        self.shared
            .metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        match written {
            Ok(()) => {
                // Before openraft learns the entries are stored, so its reads of them find
                // them here.
                let sizes = records.iter().map(|(_, p)| p.len());
                self.cache().extend(decoded.into_iter().zip(sizes));
                self.record_size();
                Ok(())
            }
            Err(e) => {
                // The files may hold part of the batch: nothing cached is trusted.
                self.cache().clear();
                Err(e.to_string())
            }
        }
    }

    /// Entries of `[start, end)` from the files, at most `limit`, decoded.
    fn read_files(
        &self,
        start: u64,
        end: u64,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let rows = self
            .shared
            .wal
            .read(start, end, limit)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        rows.iter()
            .map(|(index, payload)| Self::decode(*index, payload))
            .collect()
    }

    fn meta(&self) -> LogMeta {
        self.shared
            .meta
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update_meta(&self, change: impl FnOnce(&mut LogMeta)) -> Result<(), StoreError> {
        let mut guard = self.shared.meta.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        change(&mut next);
        write_meta(&self.shared.dir, &next)?;
        *guard = next;
        Ok(())
    }

    fn record_size(&self) {
        let bytes = self.shared.wal.size_bytes();
        self.shared.metrics.raft_log_bytes.set(bytes as i64);
    }

    fn decode(index: u64, payload: &[u8]) -> Result<Entry<TypeConfig>, StorageError> {
        let entry: Entry<TypeConfig> = codec::from_bytes(payload).map_err(|e| {
            sto_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("log entry {index} undecodable: {e}"),
            )
        })?;
        if entry.log_id.index != index {
            return Err(sto_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("entry {} stored as index {index}", entry.log_id),
            ));
        }
        Ok(entry)
    }
}

/// Moves the log of a data directory that kept it in sled into the log files: built in a
/// side directory, renamed into place, then the old keys deleted. A fresh data directory
/// gets an empty log the same way.
fn migrate_from_engine<E: Engine>(data_dir: &Path, engine: &E) -> Result<(), StoreError> {
    let side = data_dir.join(format!("{DIR}.new"));
    if side.exists() {
        std::fs::remove_dir_all(&side).map_err(io_err(&side))?;
    }
    let get = |key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> { engine.get(key) };
    let vote: Option<Vote<NodeId>> = get(keys::VOTE)?
        .map(|v| frame::decode(keys::VOTE, &v))
        .transpose()?;
    let purged: Option<LogId> = get(keys::PURGED)?
        .map(|v| frame::decode(keys::PURGED, &v))
        .transpose()?;
    let committed: Option<LogId> = get(keys::COMMITTED)?
        .map(|v| frame::decode::<Option<LogId>>(keys::COMMITTED, &v))
        .transpose()?
        .flatten();
    let meta = LogMeta { vote, purged };
    seed_dir(&side, &meta, committed)?;
    let (wal, _) = Wal::open(&side, SEGMENT_BYTES, purged.map(|l| l.index))?;
    let mut moved = 0u64;
    let mut from = keys::LOG_START.to_vec();
    loop {
        let rows = engine.range(&from, keys::LOG_END, MIGRATE_CHUNK)?;
        let Some((last_key, _)) = rows.last() else {
            break;
        };
        from = last_key.clone();
        from.push(0); // the next key after the last one read
        let mut records = Vec::with_capacity(rows.len());
        for (k, v) in &rows {
            let entry: Entry<TypeConfig> = frame::decode(k, v)?;
            if purged.is_some_and(|p| entry.log_id.index <= p.index) {
                continue; // below the purge point: never read again
            }
            let payload =
                codec::to_bytes(&entry, codec::Format::Binary).map_err(StoreError::Encode)?;
            records.push((entry.log_id.index, payload));
        }
        moved += records.len() as u64;
        wal.append(&records)?;
    }
    drop(wal);
    let dir = data_dir.join(DIR);
    std::fs::rename(&side, &dir).map_err(io_err(&dir))?;
    wal::sync_dir(data_dir)?;
    if moved > 0 || vote.is_some() {
        tracing::info!(
            entries = moved,
            "moved the Raft log out of sled into its own files"
        );
    }
    engine.delete_range(keys::LOG_START, b"n")?;
    Ok(())
}

fn seed_dir(dir: &Path, meta: &LogMeta, committed: Option<LogId>) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::write(dir.join(COMMITTED), frame::encode(&committed)?)
        .map_err(io_err(&dir.join(COMMITTED)))?;
    write_meta(dir, meta)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let cached = self.cache().read(start, end, MAX_ENTRIES_PER_READ);
        let Some(mut entries) = cached else {
            return self.read_files(start, end, MAX_ENTRIES_PER_READ);
        };
        // The cache ends where the last append it has seen ended; an append written but not
        // yet added to it, is read from the files.
        let next = start + entries.len() as u64;
        if next < end && entries.len() < MAX_ENTRIES_PER_READ {
            entries.extend(self.read_files(next, end, MAX_ENTRIES_PER_READ - entries.len())?);
        }
        debug_assert!(entries
            .iter()
            .enumerate()
            .all(|(n, e)| e.log_id.index == start + n as u64));
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.meta().purged;
        let last_log_id = match self.shared.wal.last_index() {
            Some(i) => {
                let rows = self
                    .shared
                    .wal
                    .read(i, i + 1, 1)
                    .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                match rows.first() {
                    Some((index, payload)) => Some(Self::decode(*index, payload)?.log_id),
                    None => last_purged_log_id,
                }
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.update_meta(|m| m.vote = Some(*vote))
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.meta().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced, and overwritten in place: after a crash the committed index is
        // re-learned from the leader, and a torn value fails its checksum and reads as none.
        let bytes = frame::encode(&committed)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let f = &self.shared.committed;
        let len = bytes.len() as u64;
        // openraft calls this with `&mut self`, one at a time.
        let before = self
            .shared
            .committed_len
            .swap(len, std::sync::atomic::Ordering::Relaxed);
        f.write_all_at(&bytes, 0)
            .and_then(|()| if len < before { f.set_len(len) } else { Ok(()) })
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let path = self.shared.dir.join(COMMITTED);
        let bytes =
            std::fs::read(&path).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        match frame::decode::<Option<LogId>>(path.display().to_string().as_bytes(), &bytes) {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, "committed log id unreadable; re-learning it from the leader");
                Ok(None)
            }
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        match self.append_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(msg) => {
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(sto_err(ErrorSubject::Logs, ErrorVerb::Write, msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Under the cache's lock, so no read pairs a cached entry with the files' new tail.
        let mut cache = self.cache();
        cache.truncate_from(log_id.index);
        let truncated = self.shared.wal.truncate_from(log_id.index);
        if truncated.is_err() {
            cache.clear();
        }
        drop(cache);
        truncated.map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.record_size();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries below
        // it, which are hidden and deleted on the next purge, never a gap above it.
        self.update_meta(|m| m.purged = Some(log_id))
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.cache().purge_to(log_id.index);
        self.shared
            .wal
            .purge_to(log_id.index)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.record_size();
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::raft::state_machine::StateMachine;
    use crate::raft::Request;
    use crate::storage::{Batch, SledEngine};
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine<SledEngine>, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(tempfile::TempDir, LogStore, StateMachine<SledEngine>), StorageError> {
            let dir = tempfile::tempdir().expect("temp dir");
            let fail = |e: StoreError| sto_err(ErrorSubject::Store, ErrorVerb::Read, e);
            let engine = Arc::new(SledEngine::open(&dir.path().join("db")).map_err(fail)?);
            let metrics = Arc::new(Metrics::new());
            let sm = StateMachine::open(engine.clone(), dir.path(), metrics.clone())
                .await
                .map_err(fail)?;
            let log = LogStore::open(dir.path(), engine.as_ref(), metrics).map_err(fail)?;
            Ok((dir, log, sm))
        }
    }

    type OpenraftSuite =
        Suite<TypeConfig, LogStore, StateMachine<SledEngine>, Builder, tempfile::TempDir>;

    fn run_suite_test<F, Fu>(test: F)
    where
        F: FnOnce(LogStore, StateMachine<SledEngine>) -> Fu,
        Fu: std::future::Future<Output = Result<(), StorageError>>,
    {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (_dir, log, sm) = Builder.build().await.unwrap();
            test(log, sm).await.unwrap();
        });
    }

    /// openraft's own conformance suite for log and state machine storage, one test each.
    /// Left out: `get_initial_state_membership_from_log_and_sm`, which appends index 1 to a
    /// log that openraft itself has just purged to index 2. This log refuses an append
    /// below its purge point (openraft never makes one) rather than store a hidden entry.
    macro_rules! openraft_suite {
        ($($name:ident),* $(,)?) => {
            mod openraft_suite {
                use super::*;
                $(
                    #[test]
                    fn $name() {
                        run_suite_test(OpenraftSuite::$name);
                    }
                )*
                #[test]
                fn transfer_snapshot() {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    rt.block_on(OpenraftSuite::transfer_snapshot(&Builder)).unwrap();
                }
            }
        };
    }

    openraft_suite!(
        last_membership_in_log_initial,
        last_membership_in_log,
        last_membership_in_log_multi_step,
        get_membership_initial,
        get_membership_from_log_and_empty_sm,
        get_membership_from_empty_log_and_sm,
        get_membership_from_log_le_sm_last_applied,
        get_membership_from_log_gt_sm_last_applied_1,
        get_membership_from_log_gt_sm_last_applied_2,
        get_initial_state_without_init,
        get_initial_state_with_state,
        get_initial_state_last_log_gt_sm,
        get_initial_state_last_log_lt_sm,
        get_initial_state_log_ids,
        get_initial_state_re_apply_committed,
        save_vote,
        get_log_entries,
        limited_get_log_entries,
        try_get_log_entry,
        initial_logs,
        get_log_state,
        get_log_id,
        last_id_in_log,
        last_applied_state,
        purge_logs_upto_0,
        purge_logs_upto_5,
        purge_logs_upto_20,
        delete_logs_since_11,
        delete_logs_since_0,
        append_to_log,
        snapshot_meta,
        apply_single,
        apply_multiple,
    );

    /// A log entry at `index` of `term` carrying an empty command (stamped `index` ms).
    pub(crate) fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request {
                command: crate::inventory::Command {
                    ops: vec![],
                    conditions: vec![],
                },
                time_ms: index,
                idempotency: None,
                batched: Default::default(),
                numbered: false,
            }),
        }
    }

    /// A log store in a new temporary data directory, with its engine and metrics.
    fn opened() -> (tempfile::TempDir, SledEngine, Arc<Metrics>, LogStore) {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(&dir.path().join("db")).unwrap();
        let metrics = Arc::new(Metrics::new());
        let log = LogStore::open(dir.path(), &engine, metrics.clone()).unwrap();
        (dir, engine, metrics, log)
    }

    #[tokio::test]
    async fn a_log_kept_in_sled_is_moved_to_the_log_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(&dir.path().join("db")).unwrap();
        let mut old = Batch::default();
        for i in 3..=40 {
            old.put(keys::log(i), frame::encode(&entry(2, i)).unwrap());
        }
        let vote = Vote::new(2, 1);
        let purged = LogId::new(CommittedLeaderId::new(1, 1), 5);
        let committed = LogId::new(CommittedLeaderId::new(2, 1), 38);
        old.put(keys::VOTE.to_vec(), frame::encode(&vote).unwrap());
        old.put(keys::PURGED.to_vec(), frame::encode(&purged).unwrap());
        old.put(
            keys::COMMITTED.to_vec(),
            frame::encode(&Some(committed)).unwrap(),
        );
        // A state record, which must stay where it is.
        old.put(b"s-other".to_vec(), b"kept".to_vec());
        engine.write(old).unwrap();

        let metrics = Arc::new(Metrics::new());
        let mut log = LogStore::open(dir.path(), &engine, metrics.clone()).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(committed));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(purged));
        assert_eq!(state.last_log_id.map(|l| l.index), Some(40));
        let got = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(got, (6..=40).map(|i| entry(2, i)).collect::<Vec<_>>());
        assert!(
            engine.range(keys::LOG_START, b"n", 1).unwrap().is_empty(),
            "old keys deleted"
        );
        assert_eq!(engine.get(b"s-other").unwrap(), Some(b"kept".to_vec()));
        drop(log);

        // Opened again: read from the files, nothing moved twice.
        let mut log = LogStore::open(dir.path(), &engine, metrics).unwrap();
        assert_eq!(
            log.try_get_log_entries(6..=7).await.unwrap(),
            vec![entry(2, 6), entry(2, 7)]
        );
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    }

    #[tokio::test]
    async fn reads_see_truncation_and_purge_across_the_cache_and_the_files() {
        let (dir, engine, metrics, mut log) = opened();
        log.append_entries((1..=20).map(|i| entry(1, i))).unwrap();
        assert_eq!(log.cache().len(), 20);
        // A new leader's entries replace 15.. (a follower's log after an election).
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 15))
            .await
            .unwrap();
        assert_eq!(
            log.try_get_log_entries(10..).await.unwrap(),
            (10..15).map(|i| entry(1, i)).collect::<Vec<_>>(),
            "the truncated entries are gone from the cache too"
        );
        log.append_entries((15..=22).map(|i| entry(2, i))).unwrap();
        let want: Vec<_> = (1..15)
            .map(|i| entry(1, i))
            .chain((15..=22).map(|i| entry(2, i)))
            .collect();
        assert_eq!(log.try_get_log_entries(1..=22).await.unwrap(), want);
        assert_eq!(log.try_get_log_entries(14..17).await.unwrap(), want[13..16]);
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 10))
            .await
            .unwrap();
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), want[10..]);
        drop(log);

        // Reopened, the cache is empty: reads come from the files, and once the next append
        // is cached a read spanning both is stitched together in order.
        let mut log = LogStore::open(dir.path(), &engine, metrics).unwrap();
        assert!(log.cache().is_empty());
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap(), want[10..]);
        log.append_entries(vec![entry(3, 23)]).unwrap();
        let got = log.try_get_log_entries(20..=23).await.unwrap();
        assert_eq!(got, [&want[19..], &[entry(3, 23)][..]].concat());
        // A read starting inside the cache reads past its end from the files: here the
        // cache is made to lag the files, as between an append's write and its caching.
        log.cache().truncate_from(23);
        log.cache().extend([(entry(2, 22), 1)]);
        assert_eq!(
            log.try_get_log_entries(22..).await.unwrap(),
            vec![entry(2, 22), entry(3, 23)]
        );
    }

    #[tokio::test]
    async fn entries_an_earlier_release_wrote_as_json_read_beside_binary_ones() {
        let (dir, engine, metrics, log) = opened();
        drop(log);
        let (wal, _) = Wal::open(&dir.path().join(DIR), SEGMENT_BYTES, None).unwrap();
        let json: Vec<_> = (1..=3)
            .map(|i| (i, serde_json::to_vec(&entry(1, i)).unwrap()))
            .collect();
        wal.append(&json).unwrap();
        drop(wal);

        let mut log = LogStore::open(dir.path(), &engine, metrics).unwrap();
        log.append_entries((4..=5).map(|i| entry(1, i))).unwrap();
        log.cache().clear(); // read everything from the files
        assert_eq!(
            log.try_get_log_entries(1..=5).await.unwrap(),
            (1..=5).map(|i| entry(1, i)).collect::<Vec<_>>()
        );
        let rows = log.shared.wal.read(4, 5, 1).unwrap();
        assert_eq!(
            rows[0].1[0],
            codec::BINARY,
            "new entries are written binary"
        );
    }

    /// The committed id is overwritten in place and cut only when the new value is
    /// shorter: every value reads back, longer or shorter, before and after a reopen.
    #[tokio::test]
    async fn the_committed_id_reads_back_whether_it_grows_or_shrinks() {
        let (dir, engine, metrics, mut log) = opened();
        let long = Some(LogId::new(CommittedLeaderId::new(123_456, 2), 987_654_321));
        let short = Some(LogId::new(CommittedLeaderId::new(1, 1), 5));
        for value in [short, long, short, None, long] {
            log.save_committed(value).await.unwrap();
            assert_eq!(log.read_committed().await.unwrap(), value);
        }
        drop(log);
        let mut log = LogStore::open(dir.path(), &engine, metrics).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), long);
        log.save_committed(short).await.unwrap();
        assert_eq!(
            log.read_committed().await.unwrap(),
            short,
            "shorter after a reopen"
        );
    }

    #[tokio::test]
    async fn a_damaged_committed_file_reads_as_none_and_a_damaged_meta_refuses_to_open() {
        let (dir, engine, metrics, mut log) = opened();
        log.save_vote(&Vote::new(4, 2)).await.unwrap();
        log.save_committed(Some(LogId::new(CommittedLeaderId::new(4, 2), 9)))
            .await
            .unwrap();
        drop(log);
        let committed = dir.path().join(DIR).join(COMMITTED);
        let mut bytes = std::fs::read(&committed).unwrap();
        bytes[6] ^= 0x10;
        std::fs::write(&committed, &bytes).unwrap();
        let mut log = LogStore::open(dir.path(), &engine, metrics.clone()).unwrap();
        assert_eq!(log.read_committed().await.unwrap(), None);
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 2)));
        drop(log);
        let meta = dir.path().join(DIR).join(META);
        let mut bytes = std::fs::read(&meta).unwrap();
        bytes[5] ^= 0x01;
        std::fs::write(&meta, &bytes).unwrap();
        match LogStore::open(dir.path(), &engine, metrics) {
            Err(StoreError::Corrupt { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a corrupt vote file was used"),
        }
    }
}
