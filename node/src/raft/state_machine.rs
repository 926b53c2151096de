//! The replicated state machine: applies committed entries to the in-memory [`Inventory`]
//! and appends their movements to the ledger's files. Readers (the gRPC service) share the
//! state behind a lock; watchers get new movements through a bounded broadcast.
//!
//! Where the state is durable: in the snapshot file `<data>/snapshot/current.snap` (its
//! log id is the engine's `a/checkpoint`) plus the Raft log after it, which openraft
//! re-applies on start up to the saved commit index. Apply writes no state record: the
//! per-key writes into sled were most of a node's CPU under load (a criterion bench of
//! this apply path, `benches/benches/state_machine.rs`, measured before and after). The
//! ledger (history, queried by revision) goes to its own files (`ledger::Store`) a chunk
//! at a time, its newest movements held in memory until then (`ledger::Tail`), synced
//! before a snapshot refers to it; it may be ahead of the checkpoint after a restart:
//! re-applied movements that are already stored are not written again, and readers never
//! see past the applied `ledger_end`.
//!
//! Snapshots are built from a consistent view of the state, written fsynced and atomically
//! renamed, and installed by replacing the state and ledger wholesale. An install
//! interrupted by a crash is finished on the next start from the snapshot file (the
//! `a/installing` marker says so). A data directory of an earlier release, whose state is
//! in the engine's `s` records at `a/applied`, is converted to a snapshot file on its first
//! start.

use super::idempotency_files::{self, FilesRef};
use super::ledger;
use super::snapshot::{self, SnapshotBody};
use super::{sto_err, LogId, Membership, NodeId, Response, StorageError, TypeConfig};
use crate::inventory::{ApplyCtx, DomainError, Inventory, Movement, Record};
use crate::metrics::{Metrics, SnapshotEvent, SnapshotLabels};
use crate::storage::write_pace::WritePace;
#[cfg(test)]
use crate::storage::write_pace::{DURABLE_WRITE_SYNC_BYTES, PACED_WRITE_SYNC_BYTES};
use crate::storage::{frame, keys, reaper, Batch, Engine, StoreError};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::broadcast;

const INSTALLING: &[u8] = b"a/installing";
/// Rows per engine batch when rewriting the whole state (snapshot install, recovery).
const REWRITE_CHUNK: usize = 4096;

/// The stored state records in key order, read from the engine `REWRITE_CHUNK` rows at a
/// time. Iteration stops at the first read or decode error, kept in `error` for the caller
/// (an iterator of plain records lets `Inventory::from_records` stay storage-free).
struct StateRecords<'a, E: Engine + ?Sized> {
    engine: &'a E,
    next_start: Vec<u8>,
    rows: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    exhausted: bool,
    error: Option<StoreError>,
    count: usize,
}

impl<'a, E: Engine + ?Sized> StateRecords<'a, E> {
    fn new(engine: &'a E) -> Self {
        StateRecords {
            engine,
            next_start: keys::STATE_START.to_vec(),
            rows: Vec::new().into_iter(),
            exhausted: false,
            error: None,
            count: 0,
        }
    }
}

impl<E: Engine + ?Sized> Iterator for StateRecords<'_, E> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some((k, v)) = self.rows.next() {
                match frame::decode::<Record>(&k, &v) {
                    Ok(r) => {
                        self.count += 1;
                        return Some(r);
                    }
                    Err(e) => {
                        self.error = Some(e);
                        self.exhausted = true;
                        self.rows = Vec::new().into_iter();
                        return None;
                    }
                }
            }
            if self.exhausted {
                return None;
            }
            match self
                .engine
                .range(&self.next_start, keys::STATE_END, REWRITE_CHUNK)
            {
                Ok(rows) => {
                    let Some((last, _)) = rows.last() else {
                        self.exhausted = true;
                        return None;
                    };
                    self.next_start = last.clone();
                    self.next_start.push(0);
                    self.rows = rows.into_iter();
                }
                Err(e) => {
                    self.error = Some(e);
                    self.exhausted = true;
                    return None;
                }
            }
        }
    }
}
/// Queue depth of the watch broadcast; a watcher that falls further behind re-reads the
/// ledger from storage instead of holding memory.
pub const WATCH_QUEUE_DEPTH: usize = 1024;

/// A page of movements and the `(revision, seq)` to continue from, if any.
pub type MovementPage = (Vec<Movement>, Option<(u64, u32)>);

/// What the state machine tells watchers.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Movements of newly applied entries, in ledger order.
    Movements(Arc<Vec<Movement>>),
    /// A snapshot replaced the ledger: re-read from storage.
    Reset,
}

/// The applied state, shared with readers.
pub struct AppliedState {
    pub inventory: Inventory,
    pub last_applied: Option<LogId>,
    pub membership: Membership,
    /// `(revision, seq)` of the newest movement in the ledger as applied: where a snapshot
    /// of this state stops reading the ledger, and where readers of the ledger stop.
    pub ledger_end: Option<(u64, u32)>,
    /// The newest movement the engine holds, which after a restart may be ahead of
    /// `ledger_end` (the ledger was written past the checkpoint the state restarted from).
    /// Re-applied movements up to it are already stored and are not written again.
    ledger_stored: Option<(u64, u32)>,
    /// The applied movements after `ledger_stored`, not yet written: when not empty, it
    /// starts right after `ledger_stored` and ends at `ledger_end`.
    ledger_tail: ledger::Tail,
}

impl AppliedState {
    /// A reader's view of the ledger through `ledger_end`, with a copy of the tail
    /// movements that `wanted` picks (the tail holds fewer than a chunk between applies).
    fn ledger_view<'a>(
        &'a self,
        wanted: impl FnOnce(&'a ledger::Tail) -> &'a [Movement],
    ) -> (Option<(u64, u32)>, ledger::View) {
        let view = ledger::View {
            stored: self.ledger_stored.min(self.ledger_end),
            tail: wanted(&self.ledger_tail).to_vec(),
        };
        (self.ledger_end, view)
    }

    /// Appends the tail to the ledger's files (unsynced); afterwards the stored ledger reaches
    /// `ledger_end`. Under the state write lock, so no reader's view is left behind. A
    /// failed write leaves the tail as it was (readers still see every movement).
    fn store_tail(&mut self, store: &ledger::Store) -> Result<(), StoreError> {
        if let Some(last) = self.ledger_tail.last() {
            assert_eq!(
                Some(last),
                self.ledger_end,
                "the tail ends at the ledger's end"
            );
            store.append(self.ledger_tail.all())?;
            self.ledger_tail.clear();
            self.ledger_stored = Some(last);
        }
        Ok(())
    }
}

struct Shared<E: Engine> {
    engine: Arc<E>,
    /// The stored ledger (its own files; see `ledger`).
    ledger: ledger::Store,
    /// The idempotency records the snapshot file leaves out (see `idempotency_files`).
    idempotency: idempotency_files::Store,
    /// What the current snapshot file names of those files (`None`: it carries every
    /// record). Changed only under `snapshot_io`, by a build or an install.
    idempotency_ref: std::sync::Mutex<Option<FilesRef>>,
    /// Last computed state digest and the applied log id it was computed at.
    digest_cache: std::sync::Mutex<Option<(Option<LogId>, u64)>>,
    metrics: Arc<Metrics>,
    state: RwLock<AppliedState>,
    events: broadcast::Sender<WatchEvent>,
    snapshot_dir: PathBuf,
    /// Held by whoever builds, installs or backs up a snapshot, so a build never reads a
    /// ledger an install is rewriting. Apply does not take it.
    snapshot_io: tokio::sync::Mutex<()>,
    /// The meta of the snapshot file the state was loaded from, for the first
    /// `get_current_snapshot` call only: see there.
    startup_snapshot: std::sync::Mutex<Option<SnapshotMeta<NodeId, super::NodeInfo>>>,
    /// Operations applied since the state the last snapshot copied: what a start would
    /// re-apply from the log. Read by the node's snapshot trigger.
    ops_since_snapshot: std::sync::atomic::AtomicU64,
    /// The pace of a snapshot build's file write, in MB/s (0 = no limit).
    snapshot_write_mb_per_s: std::sync::atomic::AtomicU64,
}

pub struct StateMachine<E: Engine> {
    shared: Arc<Shared<E>>,
}

impl<E: Engine> Clone for StateMachine<E> {
    fn clone(&self) -> Self {
        StateMachine {
            shared: self.shared.clone(),
        }
    }
}

fn read_err(e: impl std::fmt::Display) -> StorageError {
    sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e)
}
fn write_err(e: impl std::fmt::Display) -> StorageError {
    sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

impl<E: Engine> StateMachine<E> {
    /// Opens the state machine stored in `engine`, finishing an interrupted snapshot
    /// install first. Fails, never panics, on corrupt records.
    pub async fn open(
        engine: Arc<E>,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let snapshot_dir = data_dir.join("snapshot");
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| StoreError::Io {
            path: snapshot_dir.display().to_string(),
            source,
        })?;
        let snapshot_path = snapshot_dir.join("current.snap");
        let ledger = ledger::Store::open(&data_dir.join(ledger::DIR), engine.as_ref()).await?;
        let idempotency = idempotency_files::Store::open(&data_dir.join(idempotency_files::DIR))?;
        if engine.get(INSTALLING)?.is_some() {
            tracing::warn!("finishing a snapshot install interrupted by a crash");
            let body = read_snapshot(&snapshot_path)?.ok_or_else(|| {
                StoreError::Engine("install marker set but no snapshot file".into())
            })?;
            if body.refers_to_local_files() {
                // An install writes the received (whole) snapshot before it starts.
                return Err(StoreError::Corrupt {
                    key: "snapshot/current.snap".into(),
                    reason: "an interrupted install, but the snapshot file is a local one \
                             without its ledger"
                        .into(),
                });
            }
            rewrite_state(engine.as_ref(), &ledger, &body).await?;
        }
        let checkpoint = match engine.get(keys::CHECKPOINT)? {
            Some(v) => Some(frame::decode::<Option<LogId>>(keys::CHECKPOINT, &v)?),
            None => None,
        };
        let mut startup_snapshot = None;
        let mut idempotency_ref = None;
        let loaded = if checkpoint.is_none() && engine.get(keys::APPLIED)?.is_some() {
            // An earlier release's directory (its snapshot file, if any, is older).
            let loaded = Loaded::from_engine_records(engine.as_ref(), ledger.last())?;
            let meta = convert_to_checkpoint(engine.as_ref(), &snapshot_path, &loaded).await?;
            startup_snapshot = Some(meta);
            loaded
        } else {
            match (checkpoint, read_file(&snapshot_path)?) {
                (None, None) => Loaded {
                    inventory: Inventory::genesis(),
                    last_applied: None,
                    membership: Membership::default(),
                    ledger_end: None,
                },
                (Some(at), None) => {
                    return Err(StoreError::Corrupt {
                        key: "snapshot/current.snap".into(),
                        reason: format!(
                            "missing, but the state as of {at:?} is there and nowhere else"
                        ),
                    })
                }
                (at, Some(bytes)) => {
                    let file = Loaded::from_snapshot_file(&bytes, &idempotency)?;
                    drop(bytes);
                    let last_applied = file.body.last_applied;
                    if at.is_some_and(|at| last_applied < at) {
                        return Err(StoreError::Corrupt {
                            key: "snapshot/current.snap".into(),
                            reason: format!(
                                "holds the state at {last_applied:?}, older than the \
                                 checkpoint's {at:?}"
                            ),
                        });
                    }
                    if at != Some(last_applied) {
                        // A crash after the file was written and before the checkpoint
                        // named it. The file is durable and the log behind it not yet
                        // purged (that waits for the checkpoint), so it is the state.
                        adopt_snapshot_file(engine.as_ref(), &ledger, &file.body).await?;
                    }
                    startup_snapshot = Some(snapshot_meta(&file.body));
                    idempotency_ref = file.body.idempotency_files.clone();
                    file.loaded
                }
            }
        };
        // Chunks past what the snapshot names: a build a crash cut short, or a replaced
        // state's. Cut before the next build appends.
        idempotency.keep_only(idempotency_ref.as_ref())?;
        let ledger_stored = ledger.last();
        if ledger_stored < loaded.ledger_end {
            return Err(StoreError::Corrupt {
                key: ledger::DIR.into(),
                reason: format!(
                    "ends at {ledger_stored:?}, before the checkpoint's {:?}",
                    loaded.ledger_end
                ),
            });
        }
        let (events, _) = broadcast::channel(WATCH_QUEUE_DEPTH);
        let state = RwLock::new(AppliedState {
            inventory: loaded.inventory,
            last_applied: loaded.last_applied,
            membership: loaded.membership,
            ledger_end: loaded.ledger_end,
            ledger_stored,
            ledger_tail: ledger::Tail::default(),
        });
        Ok(StateMachine {
            shared: Arc::new(Shared {
                engine,
                ledger,
                idempotency,
                idempotency_ref: std::sync::Mutex::new(idempotency_ref),
                digest_cache: std::sync::Mutex::new(None),
                metrics,
                state,
                events,
                snapshot_dir,
                snapshot_io: tokio::sync::Mutex::new(()),
                startup_snapshot: std::sync::Mutex::new(startup_snapshot),
                ops_since_snapshot: std::sync::atomic::AtomicU64::new(0),
                snapshot_write_mb_per_s: std::sync::atomic::AtomicU64::new(
                    crate::config::DEFAULT_SNAPSHOT_WRITE_MB_PER_S,
                ),
            }),
        })
    }

    /// Sets how fast a snapshot build writes its file, in MB/s (0 = as fast as the disk
    /// goes). Takes effect from the next build.
    pub fn set_snapshot_write_mb_per_s(&self, mb_per_s: u64) {
        self.shared
            .snapshot_write_mb_per_s
            .store(mb_per_s, std::sync::atomic::Ordering::Relaxed);
    }

    /// Operations applied since the state the last snapshot copied (since the start, if
    /// none was built since): what a start would re-apply from the log.
    pub fn ops_since_snapshot(&self) -> u64 {
        self.shared
            .ops_since_snapshot
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Read access to the applied state. Hold it briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        self.shared
            .state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<WatchEvent> {
        self.shared.events.subscribe()
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.shared.engine
    }

    /// Bytes on disk of the engine, the ledger's files and the idempotency files.
    pub fn size_on_disk(&self) -> u64 {
        self.shared.engine.size_on_disk()
            + self.shared.ledger.size_bytes()
            + self.shared.idempotency.size_bytes()
    }

    /// Movements with `(revision, seq) >= from`, matching the filters, oldest first.
    /// Examines at most `scan_budget` movements so one call stays bounded; returns the
    /// cursor to continue from, or `None` at the end of the ledger.
    pub fn movements(
        &self,
        from: (u64, u32),
        item: &str,
        location: &str,
        limit: usize,
        scan_budget: usize,
    ) -> Result<MovementPage, StoreError> {
        let (through, view) = self.read().ledger_view(|tail| {
            let since = tail.since(from);
            &since[..since.len().min(scan_budget)]
        });
        let mut out = Vec::new();
        let mut cursor = from;
        let mut scanned = 0;
        while scanned < scan_budget && out.len() < limit {
            let chunk = (scan_budget - scanned).min(1024);
            let rows = view.read(&self.shared.ledger, cursor, chunk)?;
            if rows.is_empty() {
                return Ok((out, None));
            }
            for m in rows {
                scanned += 1;
                cursor = (m.revision, m.seq.saturating_add(1));
                let matches = (item.is_empty() || m.item == item)
                    && (location.is_empty() || m.from == location || m.to == location);
                if matches {
                    out.push(m);
                    if out.len() == limit {
                        break;
                    }
                }
            }
        }
        // The ledger is dense up to `through`: more exists exactly when the cursor is not
        // past it.
        let more = through.is_some_and(|t| cursor <= t);
        Ok((out, more.then_some(cursor)))
    }

    /// The newest `limit` movements of this replica's ledger, newest first.
    pub fn recent_movements(&self, limit: usize) -> Result<Vec<Movement>, StoreError> {
        let (_, view) = self.read().ledger_view(|tail| tail.newest(limit));
        view.read_newest(&self.shared.ledger, limit)
    }

    /// A digest of every state record: equal at equal applied indexes on every replica.
    ///
    /// O(state) under the read lock (applies wait), so it is cached per applied log id:
    /// repeated polls of an idle node cost nothing. For comparing replicas, not monitoring.
    pub fn digest(&self) -> (Option<LogId>, u64) {
        let st = self.read();
        let mut cache = self
            .shared
            .digest_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((at, d)) = *cache {
            if at == st.last_applied {
                return (at, d);
            }
        }
        let d = digest_records(st.inventory.records());
        *cache = Some((st.last_applied, d));
        (st.last_applied, d)
    }

    /// Time of the earliest open reservation deadline or idempotency expiry that has
    /// passed by `now_ms`, i.e. whether the leader should propose `ExpireDue`.
    pub fn expiry_due(&self, now_ms: u64) -> bool {
        self.read().inventory.expiry_due(now_ms)
    }

    /// A consistent dump of the applied state and the whole ledger. Under the read lock no
    /// entry applies, so the two agree.
    /// The whole state and ledger as applied now (for backups).
    pub async fn snapshot_body(&self) -> Result<SnapshotBody, StoreError> {
        let _io = self.shared.snapshot_io.lock().await;
        self.body_unlocked(true)
    }

    /// The state as applied now. Only the records are copied under the state lock, and
    /// the large idempotency table only by sharing it (`Inventory::copy_for_snapshot`):
    /// the records are materialised after the lock is released (copying them under it
    /// held every apply for 81–220 ms at ~170 000 idempotency records, the p99 of the
    /// latency bench). The ledger up to the applied entry never changes again, so it too
    /// is read after the lock, bounded by revision, while apply goes on (reading it under
    /// the lock was a p99 of 457 ms at a quarter of peak load). Without `with_ledger`, the
    /// ledger is referred to by `ledger_through` instead. The caller holds `snapshot_io`.
    fn body_unlocked(&self, with_ledger: bool) -> Result<SnapshotBody, StoreError> {
        let mut body = self.capture(!with_ledger)?.into_body();
        if with_ledger {
            self.fill_ledger(&mut body)?;
        }
        Ok(body)
    }

    /// The state lock's part of `body_unlocked`: what the body will hold, as of now, with
    /// the ledger's tail stored, since the body refers to (or reads) the stored ledger.
    /// `checkpoint`: this copy is for a checkpoint build, so the count of operations since
    /// the last snapshot starts again (a backup moves no checkpoint and keeps it).
    fn capture(&self, checkpoint: bool) -> Result<Captured, StoreError> {
        let mut st = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
        st.store_tail(&self.shared.ledger)?;
        if checkpoint {
            // Apply counts under the write lock, so nothing is lost.
            self.shared
                .ops_since_snapshot
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Captured {
            last_applied: st.last_applied,
            membership: st.membership.clone(),
            state: st.inventory.copy_for_snapshot(),
            ledger_end: st.ledger_end,
        })
    }

    /// Replaces a body's `ledger_through` with the movements it refers to.
    fn fill_ledger(&self, body: &mut SnapshotBody) -> Result<(), StoreError> {
        if let Some(through) = body.ledger_through.take() {
            body.movements = self.shared.ledger.read((0, 0), Some(through), usize::MAX)?;
        }
        Ok(())
    }

    /// Replaces a body's `idempotency_files` with the records it refers to, merged with
    /// the ones the file carries in `Inventory::records` order (idempotency records by key,
    /// then the clock), so a body sent from the file is the one a body from memory would
    /// be. The caller holds `snapshot_io`.
    fn fill_idempotency(&self, body: &mut SnapshotBody) -> Result<(), StoreError> {
        let Some(files) = body.idempotency_files.take() else {
            return Ok(());
        };
        let start = body
            .records
            .iter()
            .position(|r| matches!(r, Record::Idempotency { .. } | Record::Clock(_)))
            .unwrap_or(body.records.len());
        let (mut idempotency, after): (Vec<Record>, Vec<Record>) = body
            .records
            .split_off(start)
            .into_iter()
            .partition(|r| matches!(r, Record::Idempotency { .. }));
        // No `reserve(live_count)`: the count is read from disk, and `load` checks it.
        self.shared.idempotency.load(&files, &mut |key, record| {
            idempotency.push(Record::Idempotency { key, record })
        })?;
        idempotency.sort_unstable_by(|a, b| match (a, b) {
            (Record::Idempotency { key: a, .. }, Record::Idempotency { key: b, .. }) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        });
        body.records.extend(idempotency);
        body.records.extend(after);
        Ok(())
    }

    /// What the current snapshot file names of the idempotency files. The caller holds
    /// `snapshot_io`, under which alone it changes.
    fn idempotency_ref(&self) -> std::sync::MutexGuard<'_, Option<FilesRef>> {
        self.shared
            .idempotency_ref
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn record_snapshot(&self, event: SnapshotEvent, started: std::time::Instant) {
        let labels = SnapshotLabels { event };
        self.shared.metrics.snapshots.get_or_create(&labels).inc();
        self.shared
            .metrics
            .snapshot_seconds
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }

    fn snapshot_path(&self) -> PathBuf {
        self.shared.snapshot_dir.join("current.snap")
    }

    /// The `count` movements of the write at `revision`, for a replayed outcome: from this
    /// apply call's own new movements (`fresh`), the ledger's tail, or else its files.
    fn replayed_movements(
        &self,
        fresh: &[Movement],
        tail: &ledger::Tail,
        revision: u64,
        count: u32,
    ) -> Result<Vec<Movement>, StoreError> {
        let mut found: Vec<Movement> = fresh
            .iter()
            .chain(tail.since((revision, 0)))
            .filter(|m| m.revision == revision)
            .cloned()
            .collect();
        if found.is_empty() && count > 0 {
            found = self.shared.ledger.read(
                (revision, 0),
                Some((revision, count - 1)),
                count as usize,
            )?;
        }
        if found.len() != count as usize {
            return Err(StoreError::Corrupt {
                key: format!("{} at revision {revision}", ledger::DIR),
                reason: format!(
                    "an idempotency record names {count} movements at revision {revision}, \
                     the ledger holds {}",
                    found.len()
                ),
            });
        }
        Ok(found)
    }
}

/// A state read at start: from the checkpoint's snapshot file, or from an earlier
/// release's engine records.
struct Loaded {
    inventory: Inventory,
    last_applied: Option<LogId>,
    membership: Membership,
    ledger_end: Option<(u64, u32)>,
}

/// A state loaded from the snapshot file, and the file's body (its records already moved
/// into the state, the list left empty) for adopting it as the checkpoint.
struct LoadedFile {
    loaded: Loaded,
    body: SnapshotBody,
}

impl Loaded {
    /// Decodes the snapshot file record by record into the maps (no list of every record
    /// in memory next to them), then checks the state's invariants.
    /// The idempotency records it leaves to the node's files are read from `idempotency`.
    fn from_snapshot_file(
        bytes: &[u8],
        idempotency: &idempotency_files::Store,
    ) -> Result<LoadedFile, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: "snapshot/current.snap".into(),
            reason,
        };
        let mut inventory = Inventory::genesis();
        let mut records: u64 = 0;
        let body = snapshot::decode_each(bytes, &mut |r| {
            records += u64::from(matches!(r, Record::Idempotency { .. }));
            inventory.load_record(r)
        })
        .map_err(|e| corrupt(e.to_string()))?;
        if let Some(files) = &body.idempotency_files {
            idempotency.load(files, &mut |key, record| {
                inventory.load_record(Record::Idempotency { key, record })
            })?;
            records += files.live_count;
        }
        // A key both in the file and in the files, or twice in the files, would load as
        // one record: counted, so that is reported rather than a record silently lost.
        if inventory.idempotency_len() as u64 != records {
            return Err(corrupt(format!(
                "{records} idempotency records read, {} distinct keys",
                inventory.idempotency_len()
            )));
        }
        inventory.check_invariants().map_err(corrupt)?;
        let ledger_end = match body.ledger_through {
            Some(end) => Some(end),
            None => body.movements.last().map(|m| (m.revision, m.seq)),
        };
        Ok(LoadedFile {
            loaded: Loaded {
                inventory,
                last_applied: body.last_applied,
                membership: body.membership.clone(),
                ledger_end,
            },
            body,
        })
    }

    /// An earlier release's layout: every record under `s`, the applied id at `a/applied`,
    /// written in one batch with the movements, so the stored ledger ends where the state
    /// does. Streamed a chunk at a time: holding every record at once before building the
    /// maps doubled the peak memory of a start (measured with massif at 200 000 levels).
    /// `ledger_end`: where the stored ledger ends (moved out of the engine by now).
    fn from_engine_records<E: Engine + ?Sized>(
        engine: &E,
        ledger_end: Option<(u64, u32)>,
    ) -> Result<Self, StoreError> {
        let mut records = StateRecords::new(engine);
        let built = Inventory::from_records(&mut records);
        if let Some(e) = records.error.take() {
            return Err(e); // a read or checksum failure, not a rule the state breaks
        }
        let inventory = if records.count == 0 {
            Inventory::genesis()
        } else {
            built.map_err(|reason| StoreError::Corrupt {
                key: "state".into(),
                reason,
            })?
        };
        let (last_applied, membership) = match engine.get(keys::APPLIED)? {
            Some(v) => frame::decode::<(Option<LogId>, Membership)>(keys::APPLIED, &v)?,
            None => (None, Membership::default()),
        };
        Ok(Loaded {
            inventory,
            last_applied,
            membership,
            ledger_end,
        })
    }
}

/// Makes a snapshot file that a crash left newer than `a/checkpoint` the checkpoint: one a
/// peer sent (it carries its ledger) had its install cut short, so the install is
/// finished; one this node built refers to a ledger that was flushed before the file was
/// written, so only the checkpoint is missing.
async fn adopt_snapshot_file<E: Engine>(
    engine: &E,
    ledger: &ledger::Store,
    body: &SnapshotBody,
) -> Result<(), StoreError> {
    tracing::warn!(last_applied = ?body.last_applied, "the snapshot file is newer than the checkpoint: a crash cut a build or install short; adopting it");
    if !body.refers_to_local_files() {
        return rewrite_state(engine, ledger, body).await;
    }
    set_checkpoint(engine, body.last_applied).await
}

/// Names the snapshot file at `at` as the state's checkpoint, durably (openraft may purge
/// the log behind it once this returns).
async fn set_checkpoint<E: Engine + ?Sized>(
    engine: &E,
    at: Option<LogId>,
) -> Result<(), StoreError> {
    let mut marker = Batch::default();
    marker.put(keys::CHECKPOINT.to_vec(), frame::encode(&at)?);
    engine.write(marker)?;
    engine.flush().await
}

/// Moves an earlier release's engine-held state into the snapshot file: the file first
/// (durably), then the checkpoint marker with `a/applied` gone, then the old records.
/// A crash at any step leaves a directory that starts correctly.
async fn convert_to_checkpoint<E: Engine + ?Sized>(
    engine: &E,
    snapshot_path: &Path,
    loaded: &Loaded,
) -> Result<SnapshotMeta<NodeId, super::NodeInfo>, StoreError> {
    let body = SnapshotBody {
        last_applied: loaded.last_applied,
        membership: loaded.membership.clone(),
        records: loaded.inventory.records().collect(),
        movements: Vec::new(),
        ledger_through: loaded.ledger_end,
        idempotency_files: None,
    };
    let bytes = snapshot::encode_binary_body(&body).map_err(StoreError::Encode)?;
    write_file_durably(snapshot_path, &bytes)?;
    set_checkpoint(engine, body.last_applied).await?;
    // With the checkpoint set, a start no longer reads these; a crash before they are gone
    // leaves them unread until an install or restore deletes them.
    let mut old = Batch::default();
    old.delete(keys::APPLIED.to_vec());
    engine.write(old)?;
    engine.delete_range(keys::STATE_START, keys::STATE_END)?;
    tracing::info!(last_applied = ?body.last_applied, "moved the state records into the snapshot file");
    Ok(snapshot_meta(&body))
}

/// The snapshot file at `path`, checked, or `None` if there is none.
fn read_snapshot(path: &Path) -> Result<Option<SnapshotBody>, StoreError> {
    let Some(bytes) = read_file(path)? else {
        return Ok(None);
    };
    snapshot::decode(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            key: "snapshot/current.snap".into(),
            reason: e.to_string(),
        })
}

/// CRC-32 over the canonical JSON of each record, in order: the replica comparison digest.
pub fn digest_records<R: std::borrow::Borrow<Record>>(records: impl IntoIterator<Item = R>) -> u64 {
    let mut h = crc32fast::Hasher::new();
    for r in records {
        h.update(&serde_json::to_vec(r.borrow()).unwrap_or_default());
    }
    h.finalize() as u64
}

fn read_file(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The nice value of the snapshot-build thread (0 is normal, 19 the lowest priority).
const SNAPSHOT_BUILD_NICE: libc::c_int = 10;

/// Lowers the calling thread's CPU priority to `SNAPSHOT_BUILD_NICE` (on Linux the nice
/// value is per thread). Best effort: a failure leaves it at normal priority.
fn lower_thread_priority() {
    // SAFETY: setpriority takes no pointers; who = 0 is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, SNAPSHOT_BUILD_NICE) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "snapshot build runs at normal priority");
    }
}

/// CPU time the calling thread has used, in ms (0 if the OS does not say). The build's
/// log line reports it: its wall time mostly measures how long its low priority made it
/// wait, not what it cost.
fn thread_cpu_ms() -> u64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) } != 0 {
        return 0;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1_000 + t.tv_usec as u64 / 1_000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_file_durably(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file_durably_paced(path, bytes, WritePace::UNPACED)
}

/// [`write_file_durably`] for the snapshot file, whose readers hold `snapshot_io`: the
/// file it replaces is freed a piece at a time (`PacedFile::free_replaced_gradually`).
pub(crate) fn write_snapshot_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_file(
        PacedFile::create(path, WritePace::UNPACED)?.free_replaced_gradually(),
        path,
        bytes,
    )
}

/// [`write_file_durably`] at `pace`: flushed every `pace.sync_bytes` and, with a rate,
/// sleeping between flushes so the average stays under it. Blocking: call it from a
/// thread of its own (the build's) or the blocking pool.
pub(crate) fn write_file_durably_paced(
    path: &Path,
    bytes: &[u8],
    pace: WritePace,
) -> Result<(), StoreError> {
    write_file(PacedFile::create(path, pace)?, path, bytes)
}

fn write_file(mut file: PacedFile, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    file.write_all(bytes).map_err(|source| StoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let written = file.finish(None)?;
    debug_assert_eq!(written, bytes.len() as u64, "every byte written once");
    Ok(())
}

/// A file written durably at a pace as bytes arrive (`io::Write`): into `<path>.tmp`, in
/// pieces of `pace.sync_bytes`, each flushed and, with a rate, written no sooner than the
/// rate allows (a snapshot of tens of MB written whole and then fsynced queues the Raft
/// log's fdatasync, the write path, behind all of it); `finish` then fsyncs it and renames
/// it over `path`. Holds one piece in memory, so a build streams its encoding to disk.
pub(crate) struct PacedFile {
    path: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
    pace: WritePace,
    started: std::time::Instant,
    written: u64,
    piece: Vec<u8>,
    /// Whether `finish` hands the file it replaces to the reaper.
    reap_replaced: bool,
}

impl PacedFile {
    /// Has `finish` free the file it replaces a piece at a time (`storage::reaper`), not
    /// at once: freeing a snapshot's hundred MB in one go stalled every log fdatasync
    /// behind the filesystem's trim. The reaper cuts that file's blocks from under every
    /// open handle, so only for files whose readers hold `snapshot_io`, as the rename does.
    pub(crate) fn free_replaced_gradually(mut self) -> PacedFile {
        self.reap_replaced = true;
        self
    }

    pub(crate) fn create(path: &Path, pace: WritePace) -> Result<PacedFile, StoreError> {
        assert!(
            pace.sync_bytes > 0,
            "a write is flushed in pieces of at least a byte"
        );
        let tmp = path.with_extension("tmp");
        let file = std::fs::File::create(&tmp).map_err(|source| StoreError::Io {
            path: tmp.display().to_string(),
            source,
        })?;
        Ok(PacedFile {
            path: path.to_path_buf(),
            tmp,
            file,
            pace,
            started: std::time::Instant::now(),
            written: 0,
            piece: Vec::with_capacity(pace.sync_bytes),
            reap_replaced: false,
        })
    }

    /// Writes the held piece (see `write_out`).
    fn write_piece(&mut self) -> std::io::Result<()> {
        let piece = std::mem::take(&mut self.piece);
        let result = self.write_out(&piece);
        self.piece = piece;
        self.piece.clear();
        result
    }

    /// Writes `data` (one piece) after flushing the one before and waiting for the pace.
    fn write_out(&mut self, data: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        if data.is_empty() {
            return Ok(());
        }
        if self.written > 0 {
            self.file.sync_data()?;
            let elapsed_us = self.started.elapsed().as_micros() as u64;
            let wait_us = self.pace.wait_us(self.written, elapsed_us);
            if wait_us > 0 {
                std::thread::sleep(std::time::Duration::from_micros(wait_us));
            }
        }
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Writes what is held, then `header` (if any) over the file's first bytes, fsyncs the
    /// file, renames it over `path` and fsyncs the directory. Returns the file's length.
    pub(crate) fn finish(mut self, header: Option<&[u8]>) -> Result<u64, StoreError> {
        use std::os::unix::fs::FileExt;
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        self.write_piece().map_err(io(&self.tmp))?;
        if let Some(header) = header {
            if (header.len() as u64) > self.written {
                return Err(StoreError::Encode(format!(
                    "a {}-byte header over a {}-byte file",
                    header.len(),
                    self.written
                )));
            }
            self.file.write_all_at(header, 0).map_err(io(&self.tmp))?;
        }
        self.file.sync_all().map_err(io(&self.tmp))?;
        // The file being replaced, held open so the rename frees none of its blocks: the
        // reaper frees them a piece at a time (see `free_replaced_gradually`).
        let replaced = if self.reap_replaced {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&self.path)
                .ok()
        } else {
            None
        };
        std::fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        if let Some(old) = replaced {
            reaper::free_gradually(std::sync::Arc::new(old), self.path.clone());
        }
        Ok(self.written)
    }
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.piece.is_empty() && buf.len() >= self.pace.sync_bytes {
            // A whole piece from the caller's buffer: written from there, not copied.
            self.write_out(&buf[..self.pace.sync_bytes])?;
            return Ok(self.pace.sync_bytes);
        }
        let room = self.pace.sync_bytes - self.piece.len();
        let n = buf.len().min(room);
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() == self.pace.sync_bytes {
            self.write_piece()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // pieces are written as they fill; `finish` writes the rest
    }
}

/// Makes `body` the node's checkpoint: replaces the stored ledger with its movements,
/// durably (`ledger::Store::replace`), and points `a/checkpoint` at it. The caller has already
/// written `body` durably as the snapshot file (the state lives there, not in the engine).
/// Interrupted by a crash, the `a/installing` marker has the next start finish it.
pub(crate) async fn rewrite_state<E: Engine>(
    engine: &E,
    ledger: &ledger::Store,
    body: &SnapshotBody,
) -> Result<(), StoreError> {
    if body.refers_to_local_files() {
        // Callers check this; a hand-made archive must still not panic a restore.
        return Err(StoreError::Corrupt {
            key: "snapshot".into(),
            reason: "refers to a node's ledger or idempotency files instead of carrying \
                     them; nothing written"
                .into(),
        });
    }
    let mut marker = Batch::default();
    marker.put(INSTALLING.to_vec(), frame::encode(&body.last_applied)?);
    engine.write(marker)?;
    engine.flush().await?;
    // State records exist only in directories of an earlier release.
    engine.delete_range(keys::STATE_START, keys::STATE_END)?;
    ledger.replace(&body.movements)?;
    let mut last = Batch::default();
    last.put(
        keys::CHECKPOINT.to_vec(),
        frame::encode(&body.last_applied)?,
    );
    last.delete(keys::APPLIED.to_vec());
    last.delete(INSTALLING.to_vec());
    engine.write(last)?;
    engine.flush().await
}

fn snapshot_meta(body: &SnapshotBody) -> SnapshotMeta<NodeId, super::NodeInfo> {
    snapshot_meta_of(body.last_applied, &body.membership)
}

fn snapshot_meta_of(
    last_applied: Option<LogId>,
    membership: &Membership,
) -> SnapshotMeta<NodeId, super::NodeInfo> {
    let snapshot_id = match &last_applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
        None => "empty".to_string(),
    };
    SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership.clone(),
        snapshot_id,
    }
}

/// The state copied under the state lock for a snapshot; `into_body` builds the snapshot
/// body from it afterwards, off the lock (and, for a checkpoint, off the runtime threads).
struct Captured {
    last_applied: Option<LogId>,
    membership: Membership,
    state: crate::inventory::StateCopy,
    ledger_end: Option<(u64, u32)>,
}

impl Captured {
    /// Writes the binary snapshot file of this copy to `file` as it is encoded, referring
    /// to the ledger through `ledger_end` and to the idempotency records older than
    /// `files.before_ms` through `files`; the records are encoded from the copy where
    /// they lie, none cloned. Returns the file's header, for `PacedFile::finish`.
    fn encode_checkpoint_to(
        &self,
        file: &mut PacedFile,
        files: &FilesRef,
    ) -> Result<snapshot::Header, String> {
        let head = snapshot::BinaryHead {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            ledger_through: self.ledger_end,
            idempotency_files: Some(files.clone()),
        };
        let count = self
            .state
            .record_count()
            .checked_sub(files.live_count)
            .ok_or("the idempotency files name more records than the state holds")?;
        snapshot::encode_binary_to(
            file,
            &head,
            count,
            self.state.records_ref_from(files.before_ms),
            &[],
        )
    }

    fn meta(&self) -> SnapshotMeta<NodeId, super::NodeInfo> {
        snapshot_meta_of(self.last_applied, &self.membership)
    }

    /// A body that refers to the ledger through `ledger_end` (no movements copied).
    fn into_body(self) -> SnapshotBody {
        SnapshotBody {
            last_applied: self.last_applied,
            membership: self.membership,
            records: self.state.into_records().collect(),
            movements: Vec::new(),
            ledger_through: self.ledger_end,
            idempotency_files: None,
        }
    }
}

impl<E: Engine> RaftSnapshotBuilder<TypeConfig> for StateMachine<E> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let started = std::time::Instant::now();
        let _io = self.shared.snapshot_io.lock().await;
        let captured = self.capture(true).map_err(write_err)?;
        let copied_ms = started.elapsed().as_millis() as u64;
        // The ledger the file refers to must be durable before the file (and before the log
        // behind it may be purged). An fdatasync: off the runtime's worker threads.
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.ledger.sync())
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        let flushed_ms = started.elapsed().as_millis() as u64;
        // Materialising, encoding and writing take tens of milliseconds per 10 MB: on a
        // thread of its own, so no runtime worker (one per core) stalls the requests
        // queued on it, and at a lower CPU priority, so that on a busy machine requests go
        // first (the build is what made the write p99 at half of peak, measured).
        let path = self.snapshot_path();
        let pace = WritePace::paced(
            self.shared
                .snapshot_write_mb_per_s
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let current = self.idempotency_ref().clone();
        let shared = self.shared.clone();
        let (done, built) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("snapshot-build".into())
            .spawn(move || {
                lower_thread_priority();
                let result = (|| {
                    // The idempotency records made since the last build go to their own
                    // files first (synced), at the file's pace; the snapshot file then
                    // names them rather than rewriting the whole table.
                    let size_before = shared.idempotency.size_bytes();
                    let state = &captured.state;
                    let before_ms = state.clock_ms();
                    let (count, oldest) = state.idempotency_older_than(before_ms);
                    let older = idempotency_files::Older {
                        before_ms,
                        count,
                        oldest,
                    };
                    let from_ms = idempotency_files::appended_from_ms(current.as_ref());
                    let new = state.idempotency_made_between(from_ms, before_ms);
                    let files =
                        shared
                            .idempotency
                            .append_before(current.as_ref(), new, older, pace)?;
                    let appended_bytes =
                        shared.idempotency.size_bytes().saturating_sub(size_before);
                    let mut file = PacedFile::create(&path, pace)?.free_replaced_gradually();
                    let header = captured
                        .encode_checkpoint_to(&mut file, &files)
                        .map_err(StoreError::Encode)?;
                    let file_bytes = file.finish(Some(&header))?;
                    // Only the meta goes back: the copy (its share of the idempotency
                    // table, a hundred thousand records and more) is freed here, not on
                    // a runtime worker.
                    let meta = captured.meta();
                    drop(captured);
                    // And its pages go back to the OS now, not on jemalloc's timer, so a
                    // build that follows soon does not stack on them.
                    crate::memory::return_freed_pages();
                    Ok::<_, StoreError>((meta, files, file_bytes, appended_bytes, thread_cpu_ms()))
                })();
                let _ = done.send(result);
            })
            .map_err(write_err)?;
        let (meta, files, file_bytes, idempotency_bytes, build_cpu_ms) = built
            .await
            .map_err(|_| write_err("the snapshot-build thread ended without a result (panicked)"))?
            .map_err(write_err)?;
        let written_ms = started.elapsed().as_millis() as u64;
        // The new file is in place: what it names is what the next build must keep (a
        // start adopts it even if the checkpoint below fails).
        *self.idempotency_ref() = Some(files.clone());

        // The file is now the checkpoint a start loads; durable before openraft may purge
        // the log behind it.
        set_checkpoint(self.shared.engine.as_ref(), meta.last_log_id)
            .await
            .map_err(write_err)?;
        // Chunks only the replaced file needed go once the new one is the checkpoint.
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.idempotency.drop_dead(&files))
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        self.record_snapshot(SnapshotEvent::Built, started);
        tracing::info!(
            last_applied = ?meta.last_log_id,
            bytes = file_bytes,
            idempotency_appended_bytes = idempotency_bytes,
            copied_ms,
            flushed_ms,
            written_ms,
            build_cpu_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "built snapshot"
        );
        // No data: openraft 0.9 keeps only the meta of a snapshot it had built
        // (`core/sm/worker.rs`, `storage/helper.rs`), and a peer is sent the snapshot that
        // `get_current_snapshot` makes from the file. Reading the file back to fill it
        // cost every node tens of MB at once for nothing.
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl<E: Engine> RaftStateMachine<TypeConfig> for StateMachine<E> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        let st = self.read();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut fresh: Vec<Movement> = Vec::new();
        {
            let mut st = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            for entry in entries {
                assert!(
                    st.last_applied
                        .map(|l| l.index < entry.log_id.index)
                        .unwrap_or(true),
                    "entries apply in log order, once"
                );
                st.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Response::None),
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m);
                        responses.push(Response::None);
                    }
                    EntryPayload::Normal(req) => {
                        let ops: usize = req.commands().map(|(c, _)| c.ops.len()).sum();
                        self.shared
                            .ops_since_snapshot
                            .fetch_add(ops as u64, std::sync::atomic::Ordering::Relaxed);
                        let mut results = Vec::with_capacity(1 + req.batched.len());
                        for (position, (command, idempotency)) in req.commands().enumerate() {
                            if position as u64 >= super::REVISIONS_PER_ENTRY {
                                // Only a broken or hostile leader sends this; refuse the
                                // excess (the same on every replica) instead of panicking.
                                results.push(Err(DomainError::TooLarge {
                                    what: "commands in one log entry".into(),
                                    len: 1 + req.batched.len() as u64,
                                    limit: super::REVISIONS_PER_ENTRY,
                                }));
                                continue;
                            }
                            let revision = if req.numbered {
                                super::revision(entry.log_id.index, position)
                            } else {
                                entry.log_id.index
                            };
                            let ctx = ApplyCtx {
                                revision,
                                time_ms: req.time_ms,
                                idempotency: idempotency.clone(),
                            };
                            let mut applied = st.inventory.apply(command, &ctx);
                            if let (Some((revision, count)), Ok(out)) =
                                (applied.replay_movements, &mut applied.result)
                            {
                                out.movements = self
                                    .replayed_movements(&fresh, &st.ledger_tail, revision, count)
                                    .map_err(read_err)?;
                            }
                            if let Ok(out) = &applied.result {
                                if !out.replayed {
                                    if let Some(m) = out.movements.last() {
                                        st.ledger_end = Some((m.revision, m.seq));
                                    }
                                    fresh.extend(out.movements.iter().cloned());
                                }
                            }
                            results.push(applied.result);
                        }
                        responses.push(Response::Applied(results));
                    }
                }
            }
            // No state record and no applied id: the state is durable as the last snapshot
            // plus the log after it. The new movements join the ledger's tail, stored a
            // chunk at a time; a reader's view (taken under the lock) covers both.
            // Movements re-applied after a restart may be stored already: the ledger is a
            // dense prefix, so those are exactly the ones up to `ledger_stored`.
            let stored = st.ledger_stored;
            let unstored = fresh.partition_point(|m| Some((m.revision, m.seq)) <= stored);
            st.ledger_tail.extend(&fresh[unstored..]);
            if st.ledger_tail.is_full() {
                st.store_tail(&self.shared.ledger).map_err(write_err)?;
            }
            debug_assert!(
                st.ledger_tail.last().is_none() || st.ledger_tail.last() == st.ledger_end,
                "the tail ends at the ledger's end"
            );
            debug_assert!(
                st.ledger_tail.first().is_none() || st.ledger_tail.first() > st.ledger_stored,
                "the tail continues the stored ledger"
            );
        }
        if !fresh.is_empty() {
            // No receivers is fine: nobody is watching.
            let _ = self
                .shared
                .events
                .send(WatchEvent::Movements(Arc::new(fresh)));
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, super::NodeInfo>,
        data: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = std::time::Instant::now();
        let _io = self.shared.snapshot_io.lock().await;
        let bytes = data.into_inner();
        let sig = Some(meta.signature());
        let mut body = snapshot::decode(&bytes)
            .map_err(|e| sto_err(ErrorSubject::Snapshot(sig.clone()), ErrorVerb::Read, e))?;
        if body.refers_to_local_files() {
            return Err(sto_err(
                ErrorSubject::Snapshot(sig),
                ErrorVerb::Read,
                "a snapshot from a peer must carry its ledger and idempotency records, not \
                 refer to a node's files",
            ));
        }
        if body.last_applied != meta.last_log_id {
            return Err(sto_err(
                ErrorSubject::Snapshot(sig),
                ErrorVerb::Read,
                format!(
                    "snapshot body is at {:?} but its meta says {:?}",
                    body.last_applied, meta.last_log_id
                ),
            ));
        }
        // The records and the bytes move on rather than being copied: at a million stock
        // levels each copy is another 100 MB or more while the install runs. Nothing below
        // reads `body.records`.
        let inventory =
            Inventory::from_records(std::mem::take(&mut body.records)).map_err(read_err)?;
        let path = self.snapshot_path();
        tokio::task::spawn_blocking(move || write_snapshot_file(&path, &bytes))
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        {
            // Hold no lock across the rewrite's awaits; apply cannot run concurrently with
            // install (openraft serializes state machine calls), readers see the old state.
            rewrite_state(self.shared.engine.as_ref(), &self.shared.ledger, &body)
                .await
                .map_err(write_err)?;
            // The received file carries every record; the files' chunks are the replaced
            // state's, cut by the next build (or start).
            *self.idempotency_ref() = None;
            let mut st = self.shared.state.write().unwrap_or_else(|p| p.into_inner());
            st.inventory = inventory;
            st.last_applied = body.last_applied;
            st.ledger_end = body.movements.last().map(|m| (m.revision, m.seq));
            st.ledger_stored = st.ledger_end;
            st.ledger_tail.clear();
            st.membership = body.membership.clone();
            self.shared
                .ops_since_snapshot
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.shared.events.send(WatchEvent::Reset);
        self.record_snapshot(SnapshotEvent::Installed, started);
        tracing::info!(last_applied = ?body.last_applied, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // openraft 0.9's start (`StorageHelper::get_initial_state`, inside `Raft::new`,
        // before anything else can call here) asks for the current snapshot and keeps only
        // its meta. Building the real one there read the whole ledger back and re-encoded
        // it: measured 7.2 s and 465 MiB resident for a start at a million stock levels.
        // So the first call answers the meta of the file the state was loaded from, with
        // no data; every later call (a snapshot for a follower) gets the real thing. Were
        // the empty one ever sent, the receiver refuses it as undecodable.
        let startup = self
            .shared
            .startup_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(meta) = startup {
            return Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }));
        }
        let _io = self.shared.snapshot_io.lock().await;
        let path = self.snapshot_path();
        let Some(mut bytes) = read_file(&path).map_err(read_err)? else {
            return Ok(None);
        };
        let mut body =
            snapshot::decode(&bytes).map_err(|e| read_err(format!("{}: {e}", path.display())))?;
        // Leaving the node (to a follower): carry the ledger itself, as the JSON every
        // release reads. A file this node built is binary even when it refers to no ledger
        // (nothing had moved yet), so the format is checked too, not only the reference.
        if body.refers_to_local_files() || !bytes.starts_with(snapshot::MAGIC) {
            self.fill_ledger(&mut body).map_err(read_err)?;
            self.fill_idempotency(&mut body).map_err(read_err)?;
            bytes = snapshot::encode(&body).map_err(read_err)?;
        }
        Ok(Some(Snapshot {
            meta: snapshot_meta(&body),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Item;
    use crate::storage::SledEngine;

    #[test]
    fn a_file_written_in_flushed_pieces_reads_back_whole_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.snap");
        std::fs::write(&path, b"old").unwrap();
        for len in [
            0,
            5,
            DURABLE_WRITE_SYNC_BYTES,
            2 * DURABLE_WRITE_SYNC_BYTES + 17,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            write_file_durably(&path, &bytes).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{len} bytes");
            assert!(!path.with_extension("tmp").exists());
        }
    }

    /// Bytes written in writes of any size land in order across piece boundaries; the
    /// header given to `finish` replaces the first bytes; one longer than the file is
    /// refused and leaves the old file in place.
    #[test]
    fn a_paced_file_streams_its_writes_and_puts_the_header_last() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.snap");
        let pace = WritePace {
            sync_bytes: 7,
            bytes_per_s: None,
        };
        let bytes: Vec<u8> = (0..100u32).map(|i| (i % 251) as u8 + 1).collect();
        let mut file = PacedFile::create(&path, pace).unwrap();
        let mut at = 0;
        for n in [0, 1, 3, 7, 9, 20, 60] {
            file.write_all(&bytes[at..at + n]).unwrap();
            at += n;
        }
        assert_eq!(at, bytes.len());
        assert_eq!(file.finish(Some(&[0xAA; 5])).unwrap(), 100);
        let mut want = bytes.clone();
        want[..5].fill(0xAA);
        assert_eq!(std::fs::read(&path).unwrap(), want);
        assert!(!path.with_extension("tmp").exists());

        let mut file = PacedFile::create(&path, pace).unwrap();
        file.write_all(b"abc").unwrap();
        let err = file.finish(Some(&[0; 4])).unwrap_err();
        assert!(err.to_string().contains("header"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), want, "the old file stays");
    }

    /// The snapshot file a snapshot write replaces is freed in the background, read
    /// through a handle opened before (which sees it cut); a plain durable write leaves
    /// the replaced file whole for such a handle, as a rename does.
    #[test]
    fn a_snapshot_write_frees_the_replaced_file_and_a_plain_write_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.snap");
        let old_len = 3 * crate::storage::reaper::STEP_BYTES;
        let new: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();

        std::fs::write(&path, vec![1u8; old_len as usize]).unwrap();
        let old = std::fs::File::open(&path).unwrap();
        write_file_durably(&path, &new).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(
            old.metadata().unwrap().len(),
            old_len,
            "a rename leaves it whole"
        );

        std::fs::write(&path, vec![1u8; old_len as usize]).unwrap();
        let old = std::fs::File::open(&path).unwrap();
        write_snapshot_file(&path, &new).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
        assert!(!path.with_extension("tmp").exists());
        for _ in 0..500 {
            if old.metadata().unwrap().len() == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!(
            "the replaced file still holds {} bytes after 5 s",
            old.metadata().unwrap().len()
        );
    }

    #[test]
    fn a_paced_write_reads_back_whole_and_takes_at_least_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.snap");
        let pace = WritePace::paced(20);
        let bytes: Vec<u8> = (0..8 * PACED_WRITE_SYNC_BYTES + 3)
            .map(|i| (i % 251) as u8)
            .collect();
        let started = std::time::Instant::now();
        write_file_durably_paced(&path, &bytes, pace).unwrap();
        let took_us = started.elapsed().as_micros() as u64;
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert!(!path.with_extension("tmp").exists());
        // The last piece is written once the 8 before it are due: 8 x 256 KiB at 20 MB/s.
        let due_us = (8 * PACED_WRITE_SYNC_BYTES as u64) * 1_000_000 / 20_000_000;
        assert!(
            took_us >= due_us,
            "took {took_us} us, the pace needs {due_us} us"
        );
    }

    fn item(i: usize) -> Record {
        Record::Item(Item {
            id: format!("sku-{i:05}"),
            name: "n".into(),
            unit: "each".into(),
            attributes: Default::default(),
            low_stock_threshold: 0,
            revision: 1,
        })
    }

    fn put(engine: &SledEngine, records: impl Iterator<Item = Record>) {
        let mut batch = Batch::default();
        for r in records {
            batch.put(keys::state(&r.key()), frame::encode(&r).unwrap());
        }
        engine.write(batch).unwrap();
    }

    /// A data directory of an earlier release: state records under `s`, the applied id
    /// at `a/applied`. A corrupt record is refused with nothing converted; an intact one is
    /// read whole (across read chunks), moved into the snapshot file, and the next start
    /// loads the same state from that file.
    #[tokio::test]
    async fn an_earlier_releases_state_is_read_whole_then_moved_into_the_snapshot_file() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(SledEngine::open(&dir.path().join("db")).unwrap());
        // More records than one read chunk, so the streaming crosses chunk boundaries.
        let n = REWRITE_CHUNK * 2 + 7;
        put(&engine, (0..n).map(item));
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 40));
        let mut batch = Batch::default();
        batch.put(
            keys::APPLIED.to_vec(),
            frame::encode(&(applied, Membership::default())).unwrap(),
        );
        engine.write(batch).unwrap();

        // One flipped byte in the last chunk: refused with the key, nothing converted.
        let victim = keys::state(&item(n - 3).key());
        let good = engine.get(&victim).unwrap().unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let mut batch = Batch::default();
        batch.put(victim.clone(), bad);
        engine.write(batch).unwrap();
        let err = StateMachine::open(engine.clone(), dir.path(), Arc::new(Metrics::new()))
            .await
            .err()
            .expect("a corrupt record must be refused");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(engine.get(keys::CHECKPOINT).unwrap().is_none());
        assert!(engine.get(keys::APPLIED).unwrap().is_some());

        let mut batch = Batch::default();
        batch.put(victim.clone(), good);
        engine.write(batch).unwrap();
        let sm = StateMachine::open(engine.clone(), dir.path(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        let genesis = Inventory::genesis().records().count();
        assert_eq!(
            sm.read().inventory.records().count(),
            genesis + n,
            "every stored record loaded, once"
        );
        let before = sm.digest();
        assert_eq!(before.0, applied);
        drop(sm);
        assert!(engine.get(keys::APPLIED).unwrap().is_none());
        assert!(
            engine.get(&victim).unwrap().is_none(),
            "old records removed"
        );
        assert!(engine.get(keys::CHECKPOINT).unwrap().is_some());

        let sm = StateMachine::open(engine, dir.path(), Arc::new(Metrics::new()))
            .await
            .unwrap();
        assert_eq!(
            sm.digest(),
            before,
            "the same state, from the snapshot file"
        );
    }

    fn entry(index: u64, request: super::super::Request) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(request),
        }
    }

    async fn fresh(dir: &tempfile::TempDir) -> StateMachine<SledEngine> {
        let engine = Arc::new(SledEngine::open(&dir.path().join("db")).unwrap());
        StateMachine::open(engine, dir.path(), Arc::new(Metrics::new()))
            .await
            .unwrap()
    }

    /// An entry of one command, as the proposer writes them.
    fn single(op: crate::inventory::Op, time_ms: u64) -> super::super::Request {
        super::super::Request {
            command: crate::inventory::Command::single(op),
            time_ms,
            idempotency: None,
            batched: Default::default(),
            numbered: true,
        }
    }

    fn one(op: crate::inventory::Op) -> super::super::Proposal {
        super::super::Proposal {
            command: crate::inventory::Command::single(op),
            idempotency: None,
        }
    }

    /// Writes batched into one entry each get their own revision (so an ETag names one
    /// version), a refused one in the middle changes nothing, and an entry from before
    /// batching keeps the revision the cluster gave it then: its log index.
    #[tokio::test]
    async fn commands_in_one_entry_get_their_own_revisions_and_old_entries_keep_theirs() {
        use crate::inventory::{LocationKind, Op};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let create = |id: &str| Op::CreateItem {
            id: id.into(),
            name: id.into(),
            unit: "each".into(),
            attributes: Default::default(),
            low_stock_threshold: 0,
        };
        let old = super::super::Request {
            command: crate::inventory::Command::single(Op::CreateLocation {
                id: "w".into(),
                name: "w".into(),
                kind: LocationKind::Warehouse,
            }),
            time_ms: 1,
            idempotency: None,
            batched: Default::default(),
            numbered: false,
        };
        let head = one(create("a"));
        let batch = super::super::Request {
            command: head.command,
            idempotency: None,
            time_ms: 2,
            batched: vec![one(create("a")), one(create("b"))].into(),
            numbered: true,
        };
        let out = sm.apply([entry(1, old), entry(2, batch)]).await.unwrap();
        let Response::Applied(old) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            old[0].as_ref().unwrap().revision,
            1,
            "an old entry: the log index"
        );
        let Response::Applied(results) = &out[1] else {
            panic!("{out:?}")
        };
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].as_ref().unwrap().revision, 2048);
        assert!(
            matches!(results[1], Err(DomainError::ItemExists(_))),
            "{results:?}"
        );
        assert_eq!(results[2].as_ref().unwrap().revision, 2050);
        {
            let st = sm.read();
            assert_eq!(st.inventory.item("a").unwrap().revision, 2048);
            assert_eq!(st.inventory.item("b").unwrap().revision, 2050);
        }
        assert_eq!(super::super::log_index_of(2050), 2);

        // More commands than an entry can number (only a broken leader sends that): the
        // excess is refused on every replica alike, nothing panics.
        let n = super::super::REVISIONS_PER_ENTRY as usize + 10;
        let big = super::super::Request {
            command: crate::inventory::Command::single(create("c-head")),
            idempotency: None,
            time_ms: 3,
            batched: (1..n)
                .map(|i| one(create(&format!("c{i}"))))
                .collect::<Vec<_>>()
                .into(),
            numbered: true,
        };
        let out = sm.apply([entry(3, big)]).await.unwrap();
        let Response::Applied(results) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(results.len(), n);
        assert!(results[..1024].iter().all(|r| r.is_ok()));
        assert!(results[1024..]
            .iter()
            .all(|r| matches!(r, Err(DomainError::TooLarge { .. }))));
        assert!(sm.read().inventory.item("c1030").is_none());
    }

    /// A snapshot built for log compaction refers to the node's ledger instead of copying
    /// it (constant work per build, not the whole history), and the one that leaves the
    /// node carries the ledger as of the build, not movements applied after it.
    #[tokio::test]
    async fn a_built_snapshot_refers_to_the_ledger_and_the_one_sent_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let log = item_warehouse_and_receipts(&[5, 7, 1]);
        sm.apply(log[..4].to_vec()).await.unwrap();
        let whole = sm.snapshot_body().await.unwrap();
        assert_eq!(whole.movements.len(), 2);
        assert_eq!(whole.ledger_through, None);

        let mut builder = sm.get_snapshot_builder().await;
        let built = builder.build_snapshot().await.unwrap();
        assert!(built.snapshot.into_inner().is_empty(), "the file holds it");
        let built = std::fs::read(sm.snapshot_path()).unwrap();
        // The node's own file is binary; what leaves the node is the JSON every release
        // reads (a follower may still run one that reads nothing else).
        assert_eq!(&built[..8], snapshot::MAGIC_BINARY);
        let local = snapshot::decode(&built).unwrap();
        assert!(local.movements.is_empty(), "the build copies no ledger");
        assert_eq!(local.ledger_through, Some((4 * 1024, 0)));
        assert_eq!(local.records, whole.records);

        // Applied after the build: not part of that snapshot.
        sm.apply(log[4..].to_vec()).await.unwrap();
        let sent = sm.get_current_snapshot().await.unwrap().unwrap();
        let sent = sent.snapshot.into_inner();
        assert_eq!(&sent[..8], snapshot::MAGIC);
        let sent = snapshot::decode(&sent).unwrap();
        assert_eq!(sent.ledger_through, None);
        assert_eq!(
            sent, whole,
            "the sent snapshot is the state and ledger at the build"
        );
    }

    /// Keyed writes' idempotency records leave the snapshot file for the node's own files:
    /// each build appends only those made since the last one (those at the clock stay in
    /// the file), a restart loads them back, the snapshot sent carries them all in the
    /// order a body from memory has, and files that lost records are refused at start.
    #[tokio::test]
    async fn idempotency_records_go_to_their_files_once_and_come_back_whole() {
        use crate::inventory::{IdempotencyKey, Op};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let keyed = |n: u64, time_ms: u64| {
            let mut request = single(
                Op::CreateItem {
                    id: format!("i{n}"),
                    name: "x".into(),
                    unit: "each".into(),
                    attributes: Default::default(),
                    low_stock_threshold: 0,
                },
                time_ms,
            );
            request.idempotency = Some(IdempotencyKey {
                key: format!("k{n}"),
                fingerprint: n,
            });
            entry(n, request)
        };
        let idempotency_keys = |body: &SnapshotBody| -> Vec<String> {
            body.records
                .iter()
                .filter_map(|r| match r {
                    Record::Idempotency { key, .. } => Some(key.clone()),
                    _ => None,
                })
                .collect()
        };
        let build = |sm: &StateMachine<SledEngine>| {
            let mut sm = sm.clone();
            async move {
                sm.get_snapshot_builder()
                    .await
                    .build_snapshot()
                    .await
                    .unwrap();
                snapshot::decode(&std::fs::read(sm.snapshot_path()).unwrap()).unwrap()
            }
        };

        sm.apply([keyed(1, 10), keyed(2, 20)]).await.unwrap();
        let first = build(&sm).await;
        assert_eq!(idempotency_keys(&first), ["k2"], "k2 is at the clock");
        let files = first.idempotency_files.clone().unwrap();
        assert_eq!((files.before_ms, files.live_count), (20, 1));
        let size_first = sm.shared.idempotency.size_bytes();
        assert!(size_first > 0);

        sm.apply([keyed(3, 30)]).await.unwrap();
        let second = build(&sm).await;
        assert_eq!(idempotency_keys(&second), ["k3"]);
        let files = second.idempotency_files.clone().unwrap();
        assert_eq!((files.before_ms, files.live_count), (30, 2));
        let mut in_files = Vec::new();
        sm.shared
            .idempotency
            .load(&files, &mut |key, _| in_files.push(key))
            .unwrap();
        in_files.sort();
        assert_eq!(in_files, ["k1", "k2"]);
        let appended = sm.shared.idempotency.size_bytes() - size_first;
        assert!(
            appended < size_first * 2,
            "only k2 was appended: {appended} bytes after {size_first}"
        );

        let whole = sm.snapshot_body().await.unwrap();
        assert_eq!(idempotency_keys(&whole), ["k1", "k2", "k3"]);
        let sent = sm.get_current_snapshot().await.unwrap().unwrap();
        let sent = snapshot::decode(&sent.snapshot.into_inner()).unwrap();
        assert_eq!(
            sent, whole,
            "the sent snapshot is the state, records in order"
        );
        let digest = sm.digest();
        drop(sm);

        let sm = fresh(&dir).await;
        assert_eq!(sm.digest(), digest, "a start loads the records back");
        assert_eq!(sm.read().inventory.idempotency_len(), 3);
        drop(sm);

        let engine = Arc::new(SledEngine::open(&dir.path().join("db")).unwrap());
        std::fs::remove_dir_all(dir.path().join(idempotency_files::DIR)).unwrap();
        refused_open(engine, dir.path(), "holds 0 live idempotency records").await;
    }

    /// Opens the state machine in `dir`, which must be refused as corrupt for a reason
    /// that mentions `why`.
    async fn refused_open(engine: Arc<SledEngine>, dir: &Path, why: &str) {
        let err = StateMachine::open(engine, dir, Arc::new(Metrics::new()))
            .await
            .err()
            .unwrap_or_else(|| panic!("a start must be refused ({why})"));
        assert!(
            matches!(&err, StoreError::Corrupt { reason, .. } if reason.contains(why)),
            "{err}"
        );
    }

    /// A log of single-command entries from index 1: item `a`, warehouse `w`, then one
    /// receipt of `a` at `w` per quantity (one movement each).
    /// A node's own file built before anything moved refers to no ledger, and is binary;
    /// the snapshot sent from it is still JSON, whole, and installs on a fresh node.
    #[tokio::test]
    async fn a_snapshot_built_before_any_movement_still_leaves_the_node_as_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let log = item_warehouse_and_receipts(&[]);
        sm.apply(log).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        builder.build_snapshot().await.unwrap();
        let built_bytes = std::fs::read(sm.snapshot_path()).unwrap();
        assert_eq!(&built_bytes[..8], snapshot::MAGIC_BINARY);
        assert_eq!(snapshot::decode(&built_bytes).unwrap().ledger_through, None);

        let sent = sm.get_current_snapshot().await.unwrap().unwrap();
        let sent_bytes = sent.snapshot.into_inner();
        assert_eq!(&sent_bytes[..8], snapshot::MAGIC, "peers get JSON");
        let body = snapshot::decode(&sent_bytes).unwrap();
        assert_eq!(body.records, sm.snapshot_body().await.unwrap().records);

        let other = tempfile::tempdir().unwrap();
        let mut receiver = fresh(&other).await;
        receiver
            .install_snapshot(&sent.meta, Box::new(Cursor::new(sent_bytes)))
            .await
            .unwrap();
        assert!(receiver.read().inventory.item("a").is_some());
    }

    fn item_warehouse_and_receipts(quantities: &[i64]) -> Vec<Entry<TypeConfig>> {
        use crate::inventory::{LocationKind, Op};
        let mut ops = vec![
            Op::CreateItem {
                id: "a".into(),
                name: "a".into(),
                unit: "each".into(),
                attributes: Default::default(),
                low_stock_threshold: 0,
            },
            Op::CreateLocation {
                id: "w".into(),
                name: "w".into(),
                kind: LocationKind::Warehouse,
            },
        ];
        ops.extend(quantities.iter().map(|&quantity| Op::Receive {
            item: "a".into(),
            location: "w".into(),
            quantity,
            from: String::new(),
            reason: String::new(),
            reference: String::new(),
        }));
        ops.into_iter()
            .enumerate()
            .map(|(i, op)| entry(i as u64 + 1, single(op, 1)))
            .collect()
    }

    /// The state is durable as the last snapshot plus the log: a start loads the snapshot,
    /// shows no ledger past it (though the engine holds movements applied since, stored
    /// by a backup), and re-applying the log after it gives the same state and the same
    /// ledger, each movement once. A checkpoint whose file is gone is refused, not started
    /// from empty.
    #[tokio::test]
    async fn a_restart_loads_the_snapshot_and_reapplying_the_log_restores_state_and_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let log = item_warehouse_and_receipts(&[5, 7, 11]);
        sm.apply(log[..3].to_vec()).await.unwrap();
        let at_snapshot = sm.digest();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        sm.apply(log[3..].to_vec()).await.unwrap();
        let after = sm.digest();
        let ledger = sm.movements((0, 0), "", "", 100, 1000).unwrap().0;
        assert_eq!(ledger.len(), 3);
        // A backup stores the ledger's tail: the files are now ahead of the checkpoint.
        sm.snapshot_body().await.unwrap();
        drop(sm);

        let mut sm = fresh(&dir).await;
        assert_eq!(sm.digest(), at_snapshot, "started from the snapshot");
        // openraft's start asks for the current snapshot only for its meta: answered from
        // the loaded file without reading the ledger; the next ask gets the whole thing.
        let first = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(first.meta.last_log_id, at_snapshot.0);
        assert!(first.snapshot.into_inner().is_empty());
        let second = sm.get_current_snapshot().await.unwrap().unwrap();
        let sent = snapshot::decode(&second.snapshot.into_inner()).unwrap();
        assert_eq!(sent.last_applied, at_snapshot.0);
        assert_eq!(sent.movements, ledger[..1].to_vec(), "carries its ledger");
        assert_eq!(
            sm.movements((0, 0), "", "", 100, 1000).unwrap(),
            (ledger[..1].to_vec(), None),
            "no movement past the applied state is shown"
        );
        assert_eq!(sm.recent_movements(10).unwrap(), ledger[..1].to_vec());
        sm.apply(log[3..].to_vec()).await.unwrap();
        assert_eq!(
            sm.digest(),
            after,
            "the log re-applied gives the same state"
        );
        assert_eq!(sm.movements((0, 0), "", "", 100, 1000).unwrap().0, ledger);
        let files = &sm.shared.ledger;
        let stored = files.read((0, 0), files.last(), 100).unwrap();
        assert_eq!(stored, ledger, "each movement stored once");
        drop(sm);

        std::fs::remove_file(dir.path().join("snapshot").join("current.snap")).unwrap();
        let engine = Arc::new(SledEngine::open(&dir.path().join("db")).unwrap());
        refused_open(engine, dir.path(), "missing").await;
    }

    /// A crash between writing the snapshot file and naming it in `a/checkpoint` leaves the
    /// file newer: a start adopts it (a local build: the marker only; a snapshot from a
    /// peer: the install is finished, its ledger written). A file older than the
    /// checkpoint is refused. Found by the inventory campaign with `--snapshot-logs 200`:
    /// a node killed in that window refused to start.
    #[tokio::test]
    async fn a_snapshot_file_newer_than_the_checkpoint_is_adopted_an_older_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let log = item_warehouse_and_receipts(&[5, 7]);
        sm.apply(log[..3].to_vec()).await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let old_marker = sm.engine().get(keys::CHECKPOINT).unwrap().unwrap();
        sm.apply(log[3..].to_vec()).await.unwrap();
        let whole = sm.snapshot_body().await.unwrap();
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        let at_4 = sm.digest();
        let set_marker = |engine: &SledEngine, value: &[u8]| {
            let mut b = Batch::default();
            b.put(keys::CHECKPOINT.to_vec(), value.to_vec());
            engine.write(b).unwrap();
        };
        // The build at 4 wrote its file; the marker still names 3.
        set_marker(sm.engine(), &old_marker);
        drop(sm);
        let sm = fresh(&dir).await;
        assert_eq!(sm.digest(), at_4, "the newer local file is the state");
        assert_eq!(
            sm.engine().get(keys::CHECKPOINT).unwrap().unwrap(),
            frame::encode(&at_4.0).unwrap()
        );

        // A peer's snapshot (carrying its ledger) written, the install not begun.
        let path = dir.path().join("snapshot").join("current.snap");
        write_file_durably(&path, &snapshot::encode(&whole).unwrap()).unwrap();
        set_marker(sm.engine(), &old_marker);
        // The ledger lacks the last movement.
        let short = &whole.movements[..whole.movements.len() - 1];
        sm.shared.ledger.replace(short).unwrap();
        drop(sm);
        let sm = fresh(&dir).await;
        assert_eq!(sm.digest(), at_4);
        assert_eq!(
            sm.movements((0, 0), "", "", 10, 100).unwrap().0,
            whole.movements,
            "the install was finished: the ledger is the snapshot's"
        );

        // A file older than the checkpoint: refused.
        let mut older = whole.clone();
        older.last_applied = log[2].log_id.into();
        write_file_durably(&path, &snapshot::encode(&older).unwrap()).unwrap();
        let engine = sm.engine().clone();
        drop(sm);
        refused_open(engine, dir.path(), "older").await;
    }

    /// The operation count behind `--snapshot-ops` counts every operation applied, is
    /// reset by a snapshot build (the new checkpoint) and not by a backup (which moves no
    /// checkpoint: a start would still re-apply everything since the last build).
    #[tokio::test]
    async fn only_a_checkpoint_build_resets_the_operations_since_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let log = item_warehouse_and_receipts(&[5, 7]);
        sm.apply(log.clone()).await.unwrap();
        assert_eq!(sm.ops_since_snapshot(), log.len() as u64);
        sm.snapshot_body().await.unwrap();
        assert_eq!(
            sm.ops_since_snapshot(),
            log.len() as u64,
            "a backup is no checkpoint"
        );
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(sm.ops_since_snapshot(), 0);
    }

    /// A body that refers to a ledger or to idempotency files cannot be installed or
    /// restored: refused before anything is written (a hand-made archive must not panic a
    /// restore).
    #[tokio::test]
    async fn a_rewrite_from_a_body_without_its_ledger_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = SledEngine::open(&dir.path().join("db")).unwrap();
        let files = ledger::Store::open(&dir.path().join(ledger::DIR), &engine)
            .await
            .unwrap();
        let body = SnapshotBody {
            last_applied: None,
            membership: Membership::default(),
            records: vec![],
            movements: vec![],
            ledger_through: Some((1024, 0)),
            idempotency_files: None,
        };
        let without_records = SnapshotBody {
            ledger_through: None,
            idempotency_files: Some(FilesRef {
                start: 0,
                end: 1,
                before_ms: 10,
                live_from: None,
                live_count: 0,
            }),
            ..body.clone()
        };
        for body in [body, without_records] {
            let err = rewrite_state(&engine, &files, &body).await.unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
            assert!(engine.get(INSTALLING).unwrap().is_none());
            assert!(engine.get(keys::CHECKPOINT).unwrap().is_none());
        }
    }

    /// A replayed key's outcome carries the movements of its first application, read back
    /// from the ledger (another apply call) or from the same entry (batched together).
    #[tokio::test]
    async fn a_replayed_key_gets_its_movements_back_from_the_ledger() {
        use crate::inventory::{IdempotencyKey, LocationKind, Op};
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let plain = |op: Op| single(op, 1);
        let receive = crate::inventory::Command::single(Op::Receive {
            item: "a".into(),
            location: "w".into(),
            quantity: 3,
            from: String::new(),
            reason: String::new(),
            reference: String::new(),
        });
        let key = |k: &str| {
            Some(IdempotencyKey {
                key: k.into(),
                fingerprint: 9,
            })
        };
        let keyed = |k: &str| super::super::Proposal {
            command: receive.clone(),
            idempotency: key(k),
        };
        sm.apply([
            entry(
                1,
                plain(Op::CreateItem {
                    id: "a".into(),
                    name: "a".into(),
                    unit: "each".into(),
                    attributes: Default::default(),
                    low_stock_threshold: 0,
                }),
            ),
            entry(
                2,
                plain(Op::CreateLocation {
                    id: "w".into(),
                    name: "w".into(),
                    kind: LocationKind::Warehouse,
                }),
            ),
        ])
        .await
        .unwrap();
        let twice_in_one = super::super::Request {
            command: receive.clone(),
            idempotency: key("k1"),
            time_ms: 2,
            batched: vec![keyed("k1")].into(),
            numbered: true,
        };
        let out = sm.apply([entry(3, twice_in_one)]).await.unwrap();
        let Response::Applied(r) = &out[0] else {
            panic!("{out:?}")
        };
        let first = r[0].clone().unwrap();
        let same_entry = r[1].clone().unwrap();
        assert_eq!(first.movements.len(), 1);
        assert!(same_entry.replayed);
        assert_eq!(same_entry.movements, first.movements);

        let out = sm
            .apply([entry(4, later_request(&receive, key("k1")))])
            .await
            .unwrap();
        let Response::Applied(r) = &out[0] else {
            panic!("{out:?}")
        };
        let replay = r[0].clone().unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.revision, first.revision);
        assert_eq!(
            replay.movements, first.movements,
            "read back from the ledger's tail"
        );
        // Once the tail is stored (a backup stores it), from the engine.
        sm.snapshot_body().await.unwrap();
        assert!(sm.read().ledger_tail.last().is_none());
        let again = super::super::Request {
            time_ms: 4,
            ..later_request(&receive, key("k1"))
        };
        let out = sm.apply([entry(5, again)]).await.unwrap();
        let Response::Applied(r) = &out[0] else {
            panic!("{out:?}")
        };
        let replay = r[0].clone().unwrap();
        assert!(replay.replayed);
        assert_eq!(
            replay.movements, first.movements,
            "read back from the engine"
        );
        assert_eq!(
            sm.read().inventory.stock("a", "w").on_hand,
            3,
            "applied once"
        );
    }

    fn later_request(
        command: &crate::inventory::Command,
        idempotency: Option<crate::inventory::IdempotencyKey>,
    ) -> super::super::Request {
        super::super::Request {
            command: command.clone(),
            idempotency,
            time_ms: 3,
            batched: Default::default(),
            numbered: true,
        }
    }

    /// The ledger reaches its files a chunk at a time; until then its newest movements
    /// are in the tail. Reads cross that boundary in both directions and page through it
    /// as through a plain list; the files hold a dense prefix; a snapshot build stores
    /// the tail first, since the file refers to the stored ledger.
    #[tokio::test]
    async fn ledger_reads_cross_from_the_files_into_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = fresh(&dir).await;
        let receipts = ledger::CHUNK_MOVEMENTS + 190;
        let log = item_warehouse_and_receipts(&vec![1; receipts]);
        let mut all = Vec::new();
        for part in log.chunks(100) {
            for r in sm.apply(part.to_vec()).await.unwrap() {
                if let Response::Applied(results) = r {
                    for out in results {
                        all.extend(out.unwrap().movements);
                    }
                }
            }
        }
        assert_eq!(all.len(), receipts);
        let at = |m: &Movement| (m.revision, m.seq);
        let files = &sm.shared.ledger;
        let stored = files.last();
        {
            let st = sm.read();
            let tail_first = st.ledger_tail.first().expect("the newest movements wait");
            assert!(stored.is_some() && stored < Some(tail_first));
            assert_eq!(st.ledger_tail.last(), Some(at(all.last().unwrap())));
        }
        let in_files = files.read((0, 0), stored, usize::MAX).unwrap();
        assert_eq!(in_files[..], all[..in_files.len()], "a dense prefix");

        for (limit, budget) in [(7, 1000), (100, 33), (1000, 1000)] {
            let mut got = Vec::new();
            let mut cursor = Some((0, 0));
            let mut pages = 0;
            while let Some(from) = cursor {
                let (page, next) = sm.movements(from, "", "", limit, budget).unwrap();
                got.extend(page);
                cursor = next;
                pages += 1;
                assert!(pages <= 2 * receipts, "paging ends");
            }
            assert_eq!(got, all, "pages of {limit}, scanning {budget}");
        }
        let boundary = in_files.len();
        let from = at(&all[boundary - 3]);
        let (page, _) = sm.movements(from, "", "", 6, 1000).unwrap();
        assert_eq!(page, all[boundary - 3..boundary + 3].to_vec());
        for n in [1, 5, all.len() - boundary + 4, all.len() + 10] {
            let want: Vec<_> = all.iter().rev().take(n).cloned().collect();
            assert_eq!(sm.recent_movements(n).unwrap(), want, "newest {n}");
        }

        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert!(
            sm.read().ledger_tail.last().is_none(),
            "stored by the build"
        );
        assert_eq!(
            sm.shared
                .ledger
                .read((0, 0), Some((u64::MAX, 0)), usize::MAX)
                .unwrap(),
            all
        );
    }
}
