//! The Raft log on the storage engine: entries under `l<index>`, the vote, the committed
//! log id and the last purged log id under `m/…`. `append` and `save_vote` return only
//! after an fsync, so an acknowledged entry and a granted vote survive `kill -9`.

// openraft's StorageError is large, and it is the error type these trait methods must return.
#![allow(clippy::result_large_err)]

use super::{sto_err, LogId, NodeId, StorageError, TypeConfig};
use crate::metrics::Metrics;
use crate::storage::{frame, keys, Batch, Engine};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogState, RaftLogReader, Vote};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Most entries returned by one read, so a far-behind follower is caught up in pieces.
const MAX_ENTRIES_PER_READ: usize = 4096;

pub struct LogStore<E: Engine> {
    engine: Arc<E>,
    metrics: Arc<Metrics>,
}

impl<E: Engine> Clone for LogStore<E> {
    fn clone(&self) -> Self {
        LogStore {
            engine: self.engine.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<E: Engine> LogStore<E> {
    pub fn new(engine: Arc<E>, metrics: Arc<Metrics>) -> Self {
        LogStore { engine, metrics }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .engine
            .get(key)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
        raw.map(|b| frame::decode(key, &b))
            .transpose()
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        batch.put(
            key.to_vec(),
            frame::encode(value).map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))?,
        );
        self.engine
            .write(batch)
            .map_err(|e| sto_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.engine
            .flush()
            .await
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

impl<E: Engine> RaftLogReader<TypeConfig> for LogStore<E> {
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
            Bound::Included(i) => keys::log(i.saturating_add(1)),
            Bound::Excluded(i) => keys::log(*i),
            Bound::Unbounded => keys::LOG_END.to_vec(),
        };
        let rows = self
            .engine
            .range(&keys::log(start), &end, MAX_ENTRIES_PER_READ)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let entry: Entry<TypeConfig> = frame::decode(&k, &v)
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            // The key and the entry must agree, or the log is corrupt.
            if keys::log_index(&k) != Some(entry.log_id.index) {
                return Err(sto_err(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    format!(
                        "entry {} stored under key {}",
                        entry.log_id,
                        keys::display(&k)
                    ),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl<E: Engine> RaftLogStorage<TypeConfig> for LogStore<E> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(keys::PURGED)?;
        let last = self
            .engine
            .last_in(keys::LOG_START, keys::LOG_END)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        let last_log_id = match last {
            Some((k, v)) => {
                let entry: Entry<TypeConfig> = frame::decode(&k, &v)
                    .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
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
        self.write_meta(keys::VOTE, vote)?;
        self.engine
            .flush()
            .await
            .map_err(|e| sto_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.read_meta(keys::VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsynced: after a crash the committed index is re-learned from the leader.
        self.write_meta(keys::COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.read_meta::<Option<LogId>>(keys::COMMITTED)?.flatten())
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
        // One batch and one fsync for everything openraft hands us at once: group commit.
        let mut batch = Batch::default();
        for entry in entries {
            let value = frame::encode(&entry)
                .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put(keys::log(entry.log_id.index), value);
        }
        self.engine
            .write(batch)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let started = std::time::Instant::now();
        let flushed = self.engine.flush().await;
        self.metrics
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        callback.log_io_completed(flushed.map_err(|e| std::io::Error::other(e.to_string())));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.engine
            .delete_range(&keys::log(log_id.index), keys::LOG_END)
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.sync().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash between the two leaves extra entries below
        // it, which are ignored, never a gap above it.
        self.write_meta(keys::PURGED, &log_id)?;
        self.sync().await?;
        self.engine
            .delete_range(keys::LOG_START, &keys::log(log_id.index.saturating_add(1)))
            .map_err(|e| sto_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}
