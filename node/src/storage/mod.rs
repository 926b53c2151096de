//! The storage seam: a small ordered key-value engine trait that the Raft log store and the
//! state machine write through, so the engine (sled today) can be swapped.
//!
//! One keyspace, partitioned by prefix (see `keys`); it holds only small markers now (the
//! Raft log and the ledger have segment files of their own, `wal`), and an earlier
//! release's records until their first start moves them. Values are framed with a CRC-32
//! by `frame`, so corruption on disk is detected and reported, never used.

pub mod frame;
pub mod keys;
pub mod reaper;
mod sled_engine;
pub mod spare_segment;
pub mod wal;
pub mod write_pace;

pub use sled_engine::SledEngine;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
    #[error("corrupt value at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("encode: {0}")]
    Encode(String),
    #[error("io at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One stored key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// Writes applied atomically by [`Engine::write`]: all or none survive a crash.
#[derive(Debug, Default)]
pub struct Batch {
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered byte-key store. Reads see every completed `write`; `flush` makes every
/// completed write durable (fsync) before it returns.
pub trait Engine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Pairs with `start <= key < end`, in key order, at most `limit`.
    fn range(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KvPair>, StoreError>;
    /// Pairs with `start <= key < end`, in descending key order, at most `limit`.
    fn range_rev(&self, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<KvPair>, StoreError>;
    /// The greatest pair with `start <= key < end`.
    fn last_in(&self, start: &[u8], end: &[u8]) -> Result<Option<KvPair>, StoreError>;
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Deletes every key in `[start, end)`, in bounded batches.
    fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<(), StoreError> {
        const CHUNK: usize = 4096;
        loop {
            let found = self.range(start, end, CHUNK)?;
            if found.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::default();
            for (k, _) in found {
                batch.delete(k);
            }
            self.write(batch)?;
        }
    }
    fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send;
    /// Bytes the engine occupies on disk.
    fn size_on_disk(&self) -> u64;
}
