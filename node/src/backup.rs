//! Backups to a directory (the NAS mount) and restore into a new cluster.
//!
//! Archive (`*.llbackup`): `"LLBACKUP" | manifest length (u32 LE) | manifest CRC-32 (u32 LE) |
//! manifest (JSON) | snapshot (the `raft::snapshot` format, itself CRC-checked)`. The manifest names the
//! cluster, the last applied log id, the membership, the snapshot's length and SHA-256, the
//! state digest and the time. A backup is written to a temporary name, fsynced, renamed,
//! then read back and verified before it counts; older ones beyond the retention are
//! deleted.
//!
//! Restore seeds an empty data directory so a new cluster starts where the backup ends:
//! the state and ledger are written as applied at the backup's last log id, the log is
//! marked purged up to it (revisions continue from there, never reused), and the *new*
//! cluster's membership is stored as the applied membership. Every node of the new cluster
//! is restored from the same archive with the same members; they then elect a leader.

use crate::inventory::Inventory;
use crate::raft::ledger;
use crate::raft::log_store::{self, LogMeta};
use crate::raft::snapshot::{self, SnapshotBody};
use crate::raft::state_machine::{digest_records, rewrite_state, write_file_durably};
use crate::raft::{LogId, Membership, NodeId, NodeInfo};
use crate::storage::SledEngine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"LLBACKUP";
pub const EXTENSION: &str = "llbackup";
/// A manifest larger than this is not ours.
const MAX_MANIFEST_BYTES: u32 = 1024 * 1024;
pub const FORMAT_VERSION: u32 = 1;
/// Magic, manifest length, manifest CRC-32.
const HEADER: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub cluster_name: String,
    pub taken_by_node: NodeId,
    pub last_applied: Option<LogId>,
    pub last_index: u64,
    pub last_term: u64,
    pub membership: Membership,
    pub snapshot_bytes: u64,
    pub sha256: String,
    pub state_digest: u64,
    pub movements: u64,
    pub created_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a Laundry List backup (bad magic)")]
    BadMagic { path: String },
    #[error("{path}: truncated ({detail})")]
    Truncated { path: String, detail: String },
    #[error("{path}: manifest unreadable: {detail}")]
    Manifest { path: String, detail: String },
    #[error("{path}: snapshot checksum mismatch (sha256 {actual}, manifest says {expected})")]
    Checksum {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: snapshot invalid: {detail}")]
    Snapshot { path: String, detail: String },
    #[error("refusing to restore into {path}: it exists and is not empty")]
    NotEmpty { path: String },
    #[error("backup holds no applied entries; start a new cluster instead")]
    Empty,
    #[error("storage: {0}")]
    Store(#[from] crate::storage::StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn encode(manifest: &Manifest, snapshot: &[u8]) -> Vec<u8> {
    let m = serde_json::to_vec(manifest).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + m.len() + snapshot.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(m.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&m).to_le_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(snapshot);
    out
}

/// Checks everything: magic, lengths, SHA-256, the snapshot's own checksum, that its state
/// obeys the inventory rules, and that it matches the manifest's log id and digest.
pub fn verify(path: &Path, bytes: &[u8]) -> Result<(Manifest, SnapshotBody), BackupError> {
    let p = || path.display().to_string();
    if bytes.len() < HEADER {
        return Err(BackupError::Truncated {
            path: p(),
            detail: format!("{} bytes", bytes.len()),
        });
    }
    if &bytes[..8] != MAGIC {
        return Err(BackupError::BadMagic { path: p() });
    }
    let mlen = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if mlen > MAX_MANIFEST_BYTES {
        return Err(BackupError::Manifest {
            path: p(),
            detail: format!("length {mlen} is implausible"),
        });
    }
    let mcrc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    let end = HEADER + mlen as usize;
    let mbytes = bytes
        .get(HEADER..end)
        .ok_or_else(|| BackupError::Truncated {
            path: p(),
            detail: "inside the manifest".into(),
        })?;
    if crc32fast::hash(mbytes) != mcrc {
        return Err(BackupError::Manifest {
            path: p(),
            detail: "manifest checksum mismatch".into(),
        });
    }
    let manifest: Manifest = serde_json::from_slice(mbytes).map_err(|e| BackupError::Manifest {
        path: p(),
        detail: e.to_string(),
    })?;
    if manifest.format != FORMAT_VERSION {
        return Err(BackupError::Manifest {
            path: p(),
            detail: format!("format {} unsupported", manifest.format),
        });
    }
    let snap = &bytes[end..];
    if snap.len() as u64 != manifest.snapshot_bytes {
        return Err(BackupError::Truncated {
            path: p(),
            detail: format!(
                "snapshot is {} bytes, manifest says {}",
                snap.len(),
                manifest.snapshot_bytes
            ),
        });
    }
    let actual = sha256_hex(snap);
    if actual != manifest.sha256 {
        return Err(BackupError::Checksum {
            path: p(),
            expected: manifest.sha256.clone(),
            actual,
        });
    }
    let body = snapshot::decode(snap).map_err(|e| BackupError::Snapshot {
        path: p(),
        detail: e.to_string(),
    })?;
    if body.refers_to_local_files() {
        return Err(BackupError::Snapshot {
            path: p(),
            detail: "refers to a node's ledger or idempotency files instead of carrying them"
                .into(),
        });
    }
    Inventory::from_records(body.records.clone()).map_err(|e| BackupError::Snapshot {
        path: p(),
        detail: e,
    })?;
    if body.last_applied != manifest.last_applied
        || digest_records(&body.records) != manifest.state_digest
    {
        return Err(BackupError::Snapshot {
            path: p(),
            detail: "contents do not match the manifest".into(),
        });
    }
    Ok((manifest, body))
}

/// Writes a verified archive of `body` into `dir` and prunes to the newest `retain`.
pub fn write(
    dir: &Path,
    cluster_name: &str,
    node_id: NodeId,
    body: &SnapshotBody,
    now_ms: u64,
    retain: usize,
) -> Result<(PathBuf, Manifest), BackupError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let snap = snapshot::encode(body).map_err(|e| BackupError::Snapshot {
        path: dir.display().to_string(),
        detail: e,
    })?;
    let last = body.last_applied;
    let manifest = Manifest {
        format: FORMAT_VERSION,
        cluster_name: cluster_name.to_string(),
        taken_by_node: node_id,
        last_applied: last,
        last_index: last.map(|l| l.index).unwrap_or(0),
        last_term: last.map(|l| l.leader_id.term).unwrap_or(0),
        membership: body.membership.clone(),
        snapshot_bytes: snap.len() as u64,
        sha256: sha256_hex(&snap),
        state_digest: digest_records(&body.records),
        movements: body.movements.len() as u64,
        created_ms: now_ms,
    };
    let name = format!(
        "laundry-{cluster_name}-{:020}-{now_ms}.{EXTENSION}",
        manifest.last_index
    );
    let path = dir.join(&name);
    write_file_durably(&path, &encode(&manifest, &snap))?;
    let back = std::fs::read(&path).map_err(io(&path))?;
    verify(&path, &back)?;
    prune(dir, retain)?;
    Ok((path, manifest))
}

/// Archives in `dir`, oldest first (names sort by last index, then time).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
        .collect();
    out.sort();
    Ok(out)
}

/// Reads just the manifest of an archive (for listings).
pub fn read_manifest(path: &Path) -> Result<Manifest, BackupError> {
    use std::io::Read;
    let p = || path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut head = [0u8; HEADER];
    f.read_exact(&mut head)
        .map_err(|_| BackupError::Truncated {
            path: p(),
            detail: "header".into(),
        })?;
    if &head[..8] != MAGIC {
        return Err(BackupError::BadMagic { path: p() });
    }
    let mlen = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")).min(MAX_MANIFEST_BYTES);
    let mcrc = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
    let mut m = vec![0u8; mlen as usize];
    f.read_exact(&mut m).map_err(|_| BackupError::Truncated {
        path: p(),
        detail: "inside the manifest".into(),
    })?;
    if crc32fast::hash(&m) != mcrc {
        return Err(BackupError::Manifest {
            path: p(),
            detail: "manifest checksum mismatch".into(),
        });
    }
    serde_json::from_slice(&m).map_err(|e| BackupError::Manifest {
        path: p(),
        detail: e.to_string(),
    })
}

fn prune(dir: &Path, retain: usize) -> Result<(), BackupError> {
    let all = list(dir)?;
    let excess = all.len().saturating_sub(retain.max(1));
    for old in &all[..excess] {
        std::fs::remove_file(old).map_err(io(old))?;
        tracing::info!(path = %old.display(), "pruned old backup");
    }
    Ok(())
}

/// Seeds `data_dir` from the archive at `from` for a new cluster of `members`. Writes
/// nothing unless the archive verifies and `data_dir` is absent or empty; removes what it
/// wrote if a step fails.
pub async fn restore(
    from: &Path,
    data_dir: &Path,
    members: &BTreeMap<NodeId, NodeInfo>,
) -> Result<Manifest, BackupError> {
    let bytes = std::fs::read(from).map_err(io(from))?;
    let (manifest, mut body) = verify(from, &bytes)?;
    let last = body.last_applied.ok_or(BackupError::Empty)?;
    if members.is_empty() {
        return Err(BackupError::Manifest {
            path: from.display().to_string(),
            detail: "no members given for the new cluster".into(),
        });
    }
    let existed = data_dir.exists();
    if existed
        && std::fs::read_dir(data_dir)
            .map_err(io(data_dir))?
            .next()
            .is_some()
    {
        return Err(BackupError::NotEmpty {
            path: data_dir.display().to_string(),
        });
    }
    let voters: BTreeSet<NodeId> = members.keys().copied().collect();
    body.membership = Membership::new(
        Some(last),
        openraft::Membership::new(vec![voters], members.clone()),
    );
    let result = seed(data_dir, &body, last).await;
    if result.is_err() {
        // Leave nothing half-written behind.
        if existed {
            if let Ok(entries) = std::fs::read_dir(data_dir) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir_all(e.path())
                        .or_else(|_| std::fs::remove_file(e.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(data_dir);
        }
    }
    result.map(|()| manifest)
}

async fn seed(data_dir: &Path, body: &SnapshotBody, last: LogId) -> Result<(), BackupError> {
    let snapshot_dir = data_dir.join("snapshot");
    std::fs::create_dir_all(&snapshot_dir).map_err(io(&snapshot_dir))?;
    // The file first: it is the state; `rewrite_state` writes the ledger and points the
    // engine's checkpoint at it.
    let snap = snapshot::encode(body).map_err(|e| BackupError::Snapshot {
        path: data_dir.display().to_string(),
        detail: e,
    })?;
    write_file_durably(&snapshot_dir.join("current.snap"), &snap)?;
    let engine = SledEngine::open(&data_dir.join("db"))?;
    let ledger = ledger::Store::open(&data_dir.join(ledger::DIR), &engine).await?;
    rewrite_state(&engine, &ledger, body).await?;
    // A vote in the backup's last term for no member: the new cluster's first election
    // runs in a later term, so its log terms never go backwards.
    let meta = LogMeta {
        vote: Some(openraft::Vote::<NodeId>::new(last.leader_id.term, 0)),
        purged: Some(last),
    };
    log_store::seed(data_dir, &meta, Some(last))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> SnapshotBody {
        SnapshotBody {
            ledger_through: None,
            idempotency_files: None,
            last_applied: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(3, 1),
                42,
            )),
            membership: Membership::default(),
            records: Inventory::genesis().records().collect(),
            movements: vec![],
        }
    }

    #[test]
    fn written_backups_verify_and_retention_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for t in 0..4 {
            write(dir.path(), "c", 1, &body(), 1_000 + t, 2).unwrap();
        }
        let all = list(dir.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert!(
            all[1].to_string_lossy().ends_with("-1003.llbackup"),
            "{all:?}"
        );
        let m = read_manifest(&all[1]).unwrap();
        assert_eq!((m.last_index, m.last_term), (42, 3));
    }

    #[test]
    fn every_truncation_and_any_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write(dir.path(), "c", 1, &body(), 1, 5).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 11, 12, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                verify(&path, &bytes[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(verify(&path, &bad).is_err(), "flip at byte {i} accepted");
        }
        assert!(verify(&path, &bytes).is_ok());
    }
}
